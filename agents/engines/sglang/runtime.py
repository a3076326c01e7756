"""Where SGLang can run, and how its processes are started: device, environment, CPU support files.

    problem = runtime_problem()          # None, or one line naming what is missing and the fix
    env = runtime_env(resolve_device("auto"))   # the environment a server process gets

On a CPU-only machine SGLang needs the runtime that ``make sglang-cpu`` or, from an installed
wheel, ``python -m ttsearch.agents.engines.sglang.setup_cpu``
(``agents/engines/sglang/support/setup_cpu.sh``) installs: the sglang wheel without its CUDA
dependencies, and our pure-torch stand-in for the two ``sgl_kernel`` ops its CPU path calls. Server
processes also get a torchvision stand-in on their path (text-only models never use it). The
measured CPU launch settings are :data:`CPU_DEFAULTS` (``docs/design.md``, "Engines").
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

from ttsearch.envs.errors import ConfigError, unknown_choice

SUPPORT_DIR = Path(__file__).resolve().parent / "support"
SERVER_SHIMS = SUPPORT_DIR / "server_shims"  # torchvision stand-in: SGLang processes only
SGL_KERNEL_STANDIN = SUPPORT_DIR / "sgl_kernel_cpu"
SETUP_HINT = ("install the CPU runtime with `python -m ttsearch.agents.engines.sglang.setup_cpu` "
              "(`make sglang-cpu` in a checkout; both run agents/engines/sglang/support/setup_cpu.sh)")
DEVICES = ("auto", "cpu", "cuda")
CPU_DEFAULTS = {"attention_backend": "torch_native", "dtype": "float32", "max_total_tokens": 16384}


def runtime_problem() -> str | None:
    """None when this interpreter can run SGLang, else one line saying what is missing and the fix."""

    missing = [m for m in ("sglang", "sgl_kernel", "triton") if importlib.util.find_spec(m) is None]
    if missing:
        return f"SGLang runtime incomplete (missing: {', '.join(missing)}); {SETUP_HINT}"
    return None


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ConfigError(unknown_choice("device", device, DEVICES))
    if device != "auto":
        return device
    # torch: imported only to ask for the device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def runtime_env(device: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for an SGLang process on ``device`` (``base`` defaults to ``os.environ``).

    Always: ``SGLANG_RETURN_ORIGINAL_LOGPROB=1``, so returned log-probs are the model's own
    (temperature 1) whatever the sampling temperature (SGLang's default scales them; docs/design.md, "Engines").
    CPU: ``SGLANG_USE_CPU_ENGINE=1`` and the torchvision stand-in on ``PYTHONPATH``.
    """
    env = dict(os.environ if base is None else base)
    env["SGLANG_RETURN_ORIGINAL_LOGPROB"] = "1"
    if device == "cpu":

        env["SGLANG_USE_CPU_ENGINE"] = "1"
        paths = [str(SERVER_SHIMS)] if needs_torchvision_shim() else []
        if importlib.util.find_spec("sgl_kernel") is None:  # not installed: use it in place
            paths.append(str(SGL_KERNEL_STANDIN))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def needs_torchvision_shim() -> bool:
    """True when no real torchvision is installed (a real one, if present, is left alone).

    Our own stand-in does not count: an in-process Engine puts it on this process's path, and
    servers launched afterwards still need it on theirs."""

    spec = importlib.util.find_spec("torchvision")
    return spec is None or Path(spec.origin or "").resolve().is_relative_to(SERVER_SHIMS.resolve())
