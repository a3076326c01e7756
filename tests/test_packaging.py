"""Packaging: the wheel holds one import namespace and everything read at run time, and works
installed (not editable) in a fresh environment with no checkout on the path.

The wheel is built from a copy of the sources (setuptools writes ``build/`` and ``*.egg-info``
next to what it builds: the checkout stays clean). The fresh venv gets the wheel and nothing
else; to avoid downloading torch & co. again it sees the dependencies already installed for this
interpreter through a ``.pth`` file naming their site-packages folders. Python adds those folders
to ``sys.path`` but does not execute the ``.pth`` files inside them, so neither the editable
install of this checkout nor its ``sgl_kernel`` stand-in comes along; the tests check that
``ttsearch`` is imported from the fresh venv and that no path of the checkout is on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "runs", "*.egg-info", "__pycache__",
                                     ".pytest_cache", ".ruff_cache", ".hypothesis", ".whl", ".gl")


def _is_site(path: str) -> bool:
    return path.endswith(("site-packages", "dist-packages"))


def _run(*args: str | Path, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


BUILT: dict[str, bool] = {}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    BUILT["build_before"] = (ROOT / "build").exists()
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "--disable-pip-version-check", "-w", root / "dist", src, cwd=root)
    return next((root / "dist").glob("ttsearch-*.whl"))


def test_wheel_holds_only_the_ttsearch_namespace_and_everything_read_at_run_time(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"ttsearch", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for package in ("envs", "agents", "scorers", "search", "benchmarks", "training"):
        assert f"ttsearch/{package}/__init__.py" in names
    support = "ttsearch/agents/engines/sglang/support/"
    for path in (
        "ttsearch/agents/checkpoints/pairs/maze/ttsearch_pair.json",
        "ttsearch/agents/checkpoints/pairs/maze/policy/config.json",
        "ttsearch/agents/checkpoints/pairs/maze/policy/tokenizer.json",
        "ttsearch/agents/checkpoints/pairs/maze/reference/model.safetensors",
        "ttsearch/agents/checkpoints/pairs/maze/rm/model.safetensors",  # the task reward model
        "ttsearch/agents/checkpoints/pairs/maze/rm/ttsearch_rm.json",
        "ttsearch/agents/checkpoints/pairs/smollm2-chain-sum/ttsearch_pair.json",
        "ttsearch/agents/checkpoints/pairs/smollm2-chain-sum/policy/adapter_model.safetensors",  # real LoRA
        "ttsearch/benchmarks/configs/paper-maze.yaml",
        "ttsearch/benchmarks/configs/smoke-maze.yaml",
        support + "setup_cpu.sh",
        support + "requirements-cpu.txt",
        support + "sgl_kernel_cpu/sgl_kernel/__init__.py",
        support + "server_shims/torchvision/__init__.py",
        support + "server_shims/torchvision/transforms/v2/functional.py",
        "ttsearch/agents/engines/sglang/setup_cpu.py",
    ):
        assert path in names, path
    assert "ttsearch/__main__.py" in names and "ttsearch/__init__.py" not in names  # python -m ttsearch; still a namespace
    # every data file of the shipped pairs, configs and SGLang support in the sources is in the wheel
    for folder, package in (("agents/checkpoints/pairs", "agents/checkpoints/pairs"),
                            ("agents/engines/sglang/support", "agents/engines/sglang/support"),
                            ("benchmarks/configs", "benchmarks/configs")):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                assert f"ttsearch/{package}/{path.relative_to(ROOT / folder).as_posix()}" in names, path
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ttsearch = ttsearch.benchmarks.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_building_leaves_the_checkout_clean(wheel):
    assert (ROOT / "build").exists() == BUILT["build_before"]  # no build/ folder appeared in the source tree


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed (not editable); its python, bin and a clean env."""
    root = tmp_path_factory.mktemp("venv")
    home = root / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", home, cwd=root)
    python = home / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root).stdout.strip())
    # this interpreter's site-packages folders, where torch & co. are (a venv inside the checkout
    # included: what matters is that no source folder of the checkout is on the path)
    deps = [p for p in sys.path if _is_site(p) and Path(p).is_dir()]
    assert deps and sysconfig.get_paths()["purelib"] in deps
    (site / "zz_ttsearch_test_deps.pth").write_text("\n".join(deps) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", COLUMNS="1000",
               PATH=f"{home / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    # pip itself comes from the dependencies' folders; it installs into this venv's prefix
    _run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--disable-pip-version-check", wheel,
         cwd=root, env=env)
    return {"root": root, "home": home, "python": python, "bin": home / "bin", "site": site, "env": env}


def test_installed_package_comes_from_the_venv_and_no_checkout_is_on_the_path(venv):
    probe = ("import json, sys, ttsearch.envs, ttsearch.agents.checkpoints.shipped as s; "
             "print(json.dumps({'file': ttsearch.envs.__file__, 'pairs': str(s.PAIRS_ROOT), 'path': sys.path}))")
    out = json.loads(_run(venv["python"], "-c", probe, cwd=venv["root"], env=venv["env"]).stdout)
    assert Path(out["file"]).is_relative_to(venv["site"]) and Path(out["pairs"]).is_relative_to(venv["site"])
    sources = [p for p in out["path"] if p and not _is_site(p) and Path(p).resolve().is_relative_to(ROOT.resolve())]
    assert not sources, out["path"]


@pytest.mark.slow
def test_installed_wheel_lists_envs_and_runs_the_demo(venv):
    listed = json.loads(_run(venv["bin"] / "ttsearch", "envs", "--json", cwd=venv["root"], env=venv["env"]).stdout)
    assert "maze" in {row["name"] for row in listed}
    out = venv["root"] / "demo"
    done = _run(venv["bin"] / "ttsearch", "demo", "--episodes", "3", "--out", out, cwd=venv["root"], env=venv["env"])
    said = "".join((done.stdout + done.stderr).split())  # rich wraps long paths
    assert "".join(str(venv["site"]).split()) in said  # the shipped pair of the installed package
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 9  # 3 layouts x 3 arms


@pytest.mark.slow
@pytest.mark.sglang  # reuses the SGLang CPU runtime installed here (skipped without it): tests/conftest.py
def test_installed_wheel_sets_up_the_sglang_cpu_runtime_from_its_own_files(venv):
    def problem() -> str:
        code = "from ttsearch.agents.engines.sglang.runtime import runtime_problem; print(runtime_problem())"
        return _run(venv["python"], "-c", code, cwd=venv["root"], env=venv["env"]).stdout.strip()

    before = problem()  # the checkout's sgl_kernel stand-in is not visible here: its .pth is not run
    assert "sgl_kernel" in before and "python -m ttsearch.agents.engines.sglang.setup_cpu" in before
    done = _run(venv["python"], "-m", "ttsearch.agents.engines.sglang.setup_cpu", cwd=venv["root"], env=venv["env"])
    assert "ok: sglang" in done.stdout
    pth = (venv["site"] / "ttsearch_sgl_kernel_cpu.pth").read_text().strip()
    assert Path(pth) == venv["site"] / "ttsearch" / "agents" / "engines" / "sglang" / "support" / "sgl_kernel_cpu"
    assert problem() == "None"
