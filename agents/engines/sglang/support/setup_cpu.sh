#!/usr/bin/env bash
# Install SGLang's CPU runtime into a venv, reproducibly (docs/design.md, "Engines"; `make sglang-cpu` runs this).
#
#   PYTHON=.venv/bin/python bash agents/engines/sglang/support/setup_cpu.sh
#   python -m ttsearch.agents.engines.sglang.setup_cpu      # the same, from an installed wheel
#
# What it does, and why:
#  1. sglang==0.5.23 with --no-deps: its METADATA pins torch==2.14.1 (+CUDA wheels, flashinfer,
#     sglang-kernel...) which would replace our CPU torch. We keep torch/transformers/tokenizers/
#     numpy exactly as installed (a pip constraint built from the venv itself).
#  2. requirements-cpu.txt: the modules the CPU server path imports, pinned: SGLang-specific ones
#     ([enforce]) at exactly their pin, general libraries ([if-missing]) at their pin only when
#     absent, so this never moves a version another part of the project installed.
#  3. sgl_kernel_cpu/: our pure-torch stand-in for the `sgl_kernel` module (the AMX-only C++
#     kernels of the real wheel), put on the venv's path with a .pth file. Skipped when a real
#     sgl_kernel is importable (GPU installs).
#  4. An import smoke test of the server modules under the CPU environment; fails loudly.
# server_shims/ (the torchvision stand-in) is NOT installed: agents/engines/sglang/server.py puts it on the
# PYTHONPATH of SGLang processes only. Idempotent: a stamp in <venv>/.sglang-cpu/ skips pip when nothing
# changed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
SGLANG_VERSION="0.5.23"
[ -x "$(command -v "$PY")" ] || { echo "setup_cpu.sh: no python at $PY; create the venv first or set PYTHON=" >&2; exit 2; }
# Install state (constraints, stamp) lives in the target environment, so a checkout and an
# installed wheel both work.
STATE="$("$PY" -c 'import sys; print(sys.prefix)')/.sglang-cpu"
mkdir -p "$STATE"

# pip, failing loudly; its notes that sglang's own pins (torch==2.14.1, ...) are unmet are the
# point of this script, so only those (and index-location noise) are hidden.
pip_install() {
  local log
  log="$(mktemp)"
  if ! "$PY" -m pip install --quiet --disable-pip-version-check "$@" > "$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "setup_cpu.sh: pip install $* failed" >&2
    exit 1
  fi
  grep -v -E "^sglang $SGLANG_VERSION requires|dependency resolver does not currently|^WARNING: Location" "$log" || true
  rm -f "$log"
}


# The packages we never let pip move, at the versions this venv has now.
"$PY" - > "$STATE/constraints.txt" <<'EOF'
import importlib.metadata as md
for dist in ("torch", "transformers", "tokenizers", "numpy"):
    try:
        print(f"{dist}=={md.version(dist)}")
    except md.PackageNotFoundError:
        pass
EOF
grep -q '^torch==' "$STATE/constraints.txt" || { echo "setup_cpu.sh: torch is not installed in $PY's env" >&2; exit 2; }

STAMP_WANT="$(cat "$HERE/setup_cpu.sh" "$HERE/requirements-cpu.txt" "$STATE/constraints.txt" | sha256sum | cut -d' ' -f1) $SGLANG_VERSION $PY"
if [ "$(cat "$STATE/stamp" 2>/dev/null || true)" != "$STAMP_WANT" ] \
   || ! "$PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('sglang') != '$SGLANG_VERSION')" 2>/dev/null; then
  echo "== sglang==$SGLANG_VERSION (--no-deps)"
  pip_install --no-deps "sglang==$SGLANG_VERSION"
  echo "== CPU runtime requirements (torch etc. held at: $(tr '\n' ' ' < "$STATE/constraints.txt"))"
  # [enforce] lines always; [if-missing] lines only for distributions not installed yet.
  "$PY" - "$HERE/requirements-cpu.txt" > "$STATE/requirements.txt" <<'PYEOF'
import importlib.metadata as md
import re
import sys

section = None
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("# ["):
        section = line[3:].split("]")[0]
    if not line or line.startswith("#"):
        continue
    name = re.split(r"[=<>!~ ;]", line, maxsplit=1)[0]
    if section == "if-missing":
        try:
            md.version(name)
            continue
        except md.PackageNotFoundError:
            pass
    print(line)
PYEOF
  pip_install -c "$STATE/constraints.txt" -r "$STATE/requirements.txt"
else
  echo "== sglang $SGLANG_VERSION CPU runtime already installed (stamp matches)"
fi

SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
PTH="$SITE/ttsearch_sgl_kernel_cpu.pth"
rm -f "$PTH"  # so the probe below sees only a real sgl_kernel
if "$PY" -c "import sgl_kernel" 2>/dev/null; then
  echo "== a real sgl_kernel is installed; not adding the CPU stand-in"
else
  echo "$HERE/sgl_kernel_cpu" > "$PTH"
  echo "== sgl_kernel stand-in: $PTH -> $HERE/sgl_kernel_cpu"
fi

echo "== import smoke test (CPU environment)"
PYTHONPATH="$HERE/server_shims${PYTHONPATH:+:$PYTHONPATH}" SGLANG_USE_CPU_ENGINE=1 "$PY" - <<'EOF'
import importlib, warnings
warnings.filterwarnings("ignore")
for module in (
    "sgl_kernel",
    "sglang.launch_server",
    "sglang.srt.entrypoints.http_server",
    "sglang.srt.managers.tokenizer_manager",
    "sglang.srt.managers.detokenizer_manager",
    "sglang.srt.managers.scheduler",
    "sglang.srt.models.qwen2",
    "sglang.srt.models.llama",
):
    importlib.import_module(module)
from sgl_kernel import assign_req_to_token_pool_cpu, copy_all_layer_kv_cache_cpu  # noqa: F401
import sglang, torch
print(f"ok: sglang {sglang.__version__} on torch {torch.__version__}")
EOF
echo "$STAMP_WANT" > "$STATE/stamp"
