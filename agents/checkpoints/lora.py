"""Checkpoint folders: a Hugging Face model folder, or a LoRA adapter over its base model.

    ModelPair.load_dir("runs/smollm2-minigrid-pair")   # policy/ = adapter, reference/ = base
    model = load_adapter_model("runs/.../policy", dtype=torch.float32)   # base + adapter, merged

A folder with ``adapter_config.json`` (written by peft's ``save_pretrained``) is loaded as the
base model named by ``base_model_name_or_path`` plus the adapter, then merged
(``merge_and_unload``) so the engine runs one plain model. A relative base path is resolved
against the adapter folder first (``"../reference"`` keeps a pair folder self-contained);
``"import:NAME"`` names a model made by ``ttsearch pair import-gguf`` (shipped adapters).
Needs ``peft``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ttsearch.agents.checkpoints.model_spec import IMPORT_PREFIX, resolve_model_spec
from ttsearch.envs.errors import BackendError

ADAPTER_CONFIG = "adapter_config.json"


def check_model_folder(path: str | Path) -> Path:
    """Raise a BackendError naming the fix unless ``path`` is a Hugging Face model folder."""
    path = Path(path)
    if not (path / "config.json").is_file() and not is_adapter_folder(path):
        raise BackendError(
            f"no model at {path}: expected a Hugging Face folder with config.json; "
            "train one with `ttsearch pair train` or pass a folder written by save_pretrained"
        )
    return path


def is_adapter_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def tokenizer_dir(path: str | Path) -> Path:
    """Where a model folder's tokenizer is: a LoRA adapter folder without one uses its base's."""
    path = Path(path)
    has_own = (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file()
    return adapter_base_path(path) if is_adapter_folder(path) and not has_own else path


def adapter_base_path(path: str | Path) -> Path:
    """The base model folder an adapter folder points to."""
    path = Path(path)
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (KeyError, json.JSONDecodeError) as err:
        raise BackendError(f"{path / ADAPTER_CONFIG} has no readable base_model_name_or_path ({err})") from err

    if base.startswith(IMPORT_PREFIX):  # a model made by `ttsearch pair import-gguf`
        return resolve_model_spec(path, base)
    candidate = (path / base).resolve()
    resolved = candidate if candidate.is_dir() else Path(base).expanduser()
    if not (resolved / "config.json").is_file():
        raise BackendError(
            f"the base model {base!r} of adapter {path} is not a local model folder; set "
            f"base_model_name_or_path in {ADAPTER_CONFIG} to the reference folder (absolute or relative to {path})"
        )
    return resolved


def load_adapter_model(path: str | Path, *, dtype: Any) -> Any:
    """Base + LoRA adapter, merged into one plain transformers model (eval mode)."""
    try:
        # peft, torch, transformers: needed only for adapter folders
        from peft import PeftModel
    except ModuleNotFoundError as err:
        raise BackendError(f"{path} is a LoRA adapter; loading it needs peft (pip install peft)") from err
    # peft, torch, transformers: needed only for adapter folders
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(adapter_base_path(path), dtype=dtype, attn_implementation="sdpa")
    try:
        model = PeftModel.from_pretrained(base, str(path))
    except Exception as err:
        raise BackendError(f"could not load the LoRA adapter at {path}: {err}".splitlines()[0]) from err
    return model.merge_and_unload().eval()


def servable_folder(path: str | Path, cache_dir: str | Path) -> Path:
    """``path`` itself for a plain model folder; for a LoRA adapter, a merged full-model folder
    written once under ``cache_dir`` (engines without LoRA support, e.g. SGLang on a CPU,
    serve that). The merged folder is reused while it is newer than the adapter weights."""
    path = Path(path)
    if not is_adapter_folder(path):
        return path
    # peft, torch, transformers: needed only for adapter folders
    import torch
    from transformers import AutoTokenizer

    out = Path(cache_dir) / f"{path.resolve().parent.name}-{path.name}-merged"
    adapter_mtime = max(f.stat().st_mtime for f in path.iterdir() if f.is_file())
    done = out / "config.json"
    if done.is_file() and done.stat().st_mtime >= adapter_mtime:
        return out
    model = load_adapter_model(path, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir(path)).save_pretrained(out)
    done.touch()  # written last: a crash mid-save leaves the folder to be rebuilt
    return out
