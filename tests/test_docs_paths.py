"""The project documents itself: every repository path that README.md, docs/ and the code's
docstrings and comments cite exists, and nothing points outside the repository.

- Repo paths: any token starting with one of the top-level folders (docs, agents, envs, scorers,
  search, training, benchmarks, tests, .ci) followed by a slash, in README.md, docs/*.md,
  pyproject.toml, the Makefile and every .py/.sh/.yaml/.txt file of the packages and tests.
  Placeholders stop a path where they start (``benchmarks/cli/<name>_cmd.py`` checks
  ``benchmarks/cli/``).
- Section citations: ``docs/<file>.md, "Title"`` name a heading that exists in that file.
- Markdown links in README.md and docs/*.md resolve relative to the file that holds them.
- No link into a sibling folder of the checkout, no citation of a design note outside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ("docs", "agents", "envs", "scorers", "search", "training", "benchmarks", "tests", ".ci")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(re.escape(t) for t in TOP) + r")/[\w./-]*)")
SECTION = re.compile(r"(docs/[\w./-]+\.md), \"([^\"]+)\"")
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE = re.compile("\\.\\./" + "shared|DESIGN" + " §")  # spelled apart so this file does not match


def _sources() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))]
    for top in TOP[1:]:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in {".py", ".sh", ".yaml", ".txt", ".md"} and "__pycache__" not in path.parts \
                    and "data" not in path.relative_to(ROOT).parts[:2]:
                files.append(path)
    return [f for f in files if f.is_file()]


SOURCES = _sources()


def _headings(doc: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in doc.read_text().splitlines() if line.startswith("#")}


def test_the_sources_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in SOURCES}
    assert {"README.md", "docs/design.md", "docs/architecture.md", "docs/custom_envs.md", "docs/run_schema.md",
            "agents/base.py", "agents/engines/sglang/support/setup_cpu.sh"} <= names


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_cited_paths_exist(source):
    text = source.read_text()
    missing = []
    for match in PATH.finditer(text):
        cited = match.group(1).rstrip(".,;:")
        if not (ROOT / cited).exists():
            missing.append(cited)
    for doc, title in SECTION.findall(text):
        if (ROOT / doc).is_file() and title not in _headings(ROOT / doc):
            missing.append(f'{doc}, "{title}" (no such heading)')
    if source.suffix == ".md":
        for target in LINK.findall(text):
            if "://" in target or target.startswith("#"):
                continue
            if not (source.parent / target.split("#")[0]).exists():
                missing.append(f"link {target}")
    assert not missing, f"{source.relative_to(ROOT)} cites what the repository does not have: {missing}"
    assert not OUTSIDE.search(text), f"{source.relative_to(ROOT)} points outside the repository"
