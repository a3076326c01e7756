"""The rooms of docs/architecture.md hold: layers enforced by import-linter, small modules and
functions, imports at module top unless a comment says why, every command in benchmarks/cli/."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "agents", "scorers", "search", "training", "benchmarks")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                  if "support" not in p.relative_to(ROOT).parts)


def lint_imports(cwd: Path, config: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache", "--no-logo"], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def test_the_layers_contract_is_kept():
    done = lint_imports(ROOT, ROOT / "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_the_layers_contract_breaks_on_a_planted_upward_import(tmp_path):
    """The same sources and the same contract under another root name, plus one import from
    agents up into search: import-linter must name it."""
    plant = tmp_path / "ttsplant"
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            target = plant / package / source.relative_to(ROOT / package)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source.read_text().replace("ttsearch.", "ttsplant."))
    (plant / "__init__.py").write_text("")
    contract = (ROOT / "pyproject.toml").read_text().split("[tool.importlinter]", 1)[1]
    config = tmp_path / "pyproject.toml"
    # a regular package is one root for grimp (ttsearch, a namespace package, lists its portions)
    contract = "\n".join('root_packages = ["ttsplant"]' if line.startswith("root_packages") else line
                         for line in contract.replace("ttsearch.", "ttsplant.").splitlines())
    config.write_text("[tool.importlinter]" + contract)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    assert lint_imports(tmp_path, config, env).returncode == 0
    parsing = plant / "agents" / "parsing.py"
    parsing.write_text(parsing.read_text() + "\nfrom ttsplant.search.budget import Budget  # planted\n")
    broken = lint_imports(tmp_path, config, env)
    assert broken.returncode != 0
    assert "ttsplant.agents is not allowed to import ttsplant.search" in broken.stdout
    assert "ttsplant.agents.parsing -> ttsplant.search.budget" in broken.stdout


def test_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for path in sources():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(ROOT)} ({len(text.splitlines())} lines)")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                body = "\n".join(lines[node.lineno - 1:node.end_lineno])
                if size > MAX_FUNCTION_LINES and "# long because" not in body:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({size} lines)")
    assert not long_modules, long_modules
    assert not long_functions, long_functions


def _explained(lines: list[str], node: ast.stmt) -> bool:
    if any("#" in line for line in lines[node.lineno - 1:node.end_lineno]):
        return True
    i = node.lineno - 2  # walk up over the import block this import belongs to
    while i >= 0 and lines[i].strip().startswith(("import ", "from ")) and "#" not in lines[i]:
        i -= 1
    return i >= 0 and (lines[i].strip().startswith("#") or lines[i].strip().startswith(("import ", "from ")))


def test_imports_inside_functions_say_why():
    silent = []
    for path in sources():
        text = path.read_text()
        lines = text.splitlines()
        for function in ast.walk(ast.parse(text)):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and not _explained(lines, node):
                        silent.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not silent, f"imports inside functions without a comment saying why: {silent}"


def test_agents_top_level_is_the_agent_loop_and_commands_live_in_cli():
    top = sorted(p.name for p in (ROOT / "agents").glob("*.py"))
    assert len(top) <= 8, top
    commands = [p for package in PACKAGES for p in (ROOT / package).rglob("*_cmd.py")]
    assert commands and all(p.parent == ROOT / "benchmarks" / "cli" for p in commands), commands
    from ttsearch.benchmarks.cli import COMMANDS

    assert all(module.startswith("ttsearch.benchmarks.cli.") for module, _ in COMMANDS.values())


@pytest.mark.parametrize("snippet, silent", [("def f():\n    import torch\n", True),
                                             ("def f():\n    # why: heavy\n    import torch\n", False),
                                             ("def f():\n    import torch  # heavy\n", False)])
def test_the_import_rule_itself(snippet, silent):
    tree = ast.parse(textwrap.dedent(snippet))
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.Import))
    assert _explained(snippet.splitlines(), node) is not silent


def test_lint_imports_is_installed():
    assert shutil.which(str(LINT_IMPORTS)), "install the test extras: pip install -e '.[test]'"
