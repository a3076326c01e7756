"""Install SGLang's CPU runtime into the environment of the Python that runs this module.

    python -m ttsearch.agents.engines.sglang.setup_cpu       # from an installed ttsearch wheel
    make sglang-cpu                                           # the same, from a checkout

Runs the package's own ``support/setup_cpu.sh`` (shipped as package data, with the
``sgl_kernel`` stand-in and the torchvision shim it refers to) for ``sys.executable``: sglang
without its CUDA dependencies, the CPU server's requirements at their pins (torch, transformers,
tokenizers and numpy held where they are), the stand-in put on the environment's path with a
``.pth`` file, and an import smoke test. Idempotent. Why each step: the script's header and
``docs/design.md``, "Engines".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from ttsearch.agents.engines.sglang.runtime import SUPPORT_DIR

SCRIPT = SUPPORT_DIR / "setup_cpu.sh"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the set-up script for this interpreter; its exit status (2: bash or the script missing)."""
    if argv:
        print(f"setup_cpu: takes no arguments (got {' '.join(argv)}); it installs into {sys.prefix}",
              file=sys.stderr)
        return 2
    bash = shutil.which("bash")
    if bash is None or not SCRIPT.is_file():
        print(f"setup_cpu: needs bash and {SCRIPT}; reinstall ttsearch if the script is missing",
              file=sys.stderr)
        return 2
    return subprocess.call([bash, str(SCRIPT)], env={**os.environ, "PYTHON": sys.executable})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
