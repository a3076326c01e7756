"""Merged references: π_α = π_ref + α·(π_θ − π_ref) in weight space, written once and reused.

    merge = ReferenceMerge(merge="linear", alpha=0.5)               # or "ties" / "dare"
    folder = merged_reference_dir(policy_dir, reference_dir, merge)   # ~/.cache/ttsearch/merged-references/...
    pair = ModelPair.load_dir("runs/pair", reference=merge)          # PA against π_α instead of π_ref

The paper's reference code sweeps α: PA against π_α measures the policy's advantage over a
reference part of the way to it (α = 0 is π_ref itself, α = 1 is π_θ, where PA is 0). The task
vector is τ = θ − θ_ref over every floating parameter the two models share; a LoRA policy is
merged into its base first, so τ is the adapter's dense delta ``B·A·scale`` (zero elsewhere).

- ``linear``: θ_α = θ_ref + α·τ.
- ``ties`` (Yadav et al. 2023, TIES-Merging): trim τ to its top-``density`` fraction of entries
  by magnitude (default 0.2, the paper's k = 20%), globally over all the entries the policy
  changed (τ ≠ 0: a LoRA delta's modules, or every parameter of a full fine-tune) as the
  paper's reference code does; elect signs and take the disjoint mean — with one task vector
  both keep every trimmed entry as it is; then θ_ref + α·τ_trimmed.
- ``dare`` (Yu et al. 2024, DARE): drop each entry of τ with probability 1 − ``density``
  (default density 0.1, the paper's drop rate p = 0.9) and rescale the kept ones by
  1/density; θ_ref + α·τ_dare. The mask is drawn from ``seed`` and the parameter's name, so
  a merge is reproducible.

The merged model is written once under ``cache_dir`` (default ``$TTSEARCH_MERGE_DIR`` or
``~/.cache/ttsearch/merged-references``) in a folder named by a hash of the inputs (both
checkpoints' file contents and the merge settings) and reused while that folder is complete.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ttsearch.agents.checkpoints.lora import (
    adapter_base_path,
    check_model_folder,
    is_adapter_folder,
)
from ttsearch.envs.errors import ConfigError, unknown_choice

MERGES = ("linear", "ties", "dare")
DEFAULT_DENSITY = {"ties": 0.2, "dare": 0.1}
MARKER = "ttsearch_merge.json"
"""Written last into a merged folder: its inputs (a folder without it is rebuilt)."""
CACHE_ENV = "TTSEARCH_MERGE_DIR"


@dataclass(frozen=True, slots=True)
class ReferenceMerge:
    """How to build π_α from a pair (module docstring); ``density`` None takes the method's default."""

    merge: str = "linear"
    alpha: float = 0.5
    density: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.merge not in MERGES:
            raise ConfigError(unknown_choice("reference merge", self.merge, MERGES))
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ConfigError(f"reference merge alpha must be a number in [0, 1] (0: π_ref, 1: π_θ), got {self.alpha!r}")
        if self.density is not None:
            if self.merge == "linear":
                raise ConfigError("density applies to ties and dare merges only")
            if not isinstance(self.density, (int, float)) or not 0 < self.density <= 1:
                raise ConfigError(f"merge density must be in (0, 1], got {self.density!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"merge seed must be an int, got {self.seed!r}")

    @property
    def kept(self) -> float:
        """The density in use: the given one, or the method's default (1 for linear)."""
        return float(self.density) if self.density is not None else DEFAULT_DENSITY.get(self.merge, 1.0)

    @property
    def label(self) -> str:
        """A short name for tables and scorer labels: ``linear-0.5``, ``ties-0.5-d0.2``, ``dare-0.5-d0.1-s0``."""
        text = f"{self.merge}-{self.alpha:g}"
        if self.merge != "linear":
            text += f"-d{self.kept:g}"
        return text + (f"-s{self.seed}" if self.merge == "dare" else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "density": self.kept if self.merge != "linear" else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceMerge:
        unknown = sorted(set(data) - {"merge", "alpha", "density", "seed"})
        if unknown:
            raise ConfigError(f"reference merge has no option(s) {', '.join(unknown)}; valid: merge, alpha, density, seed")
        return cls(**dict(data))


def merge_weights(reference: Mapping[str, Any], policy: Mapping[str, Any], merge: ReferenceMerge) -> dict[str, Any]:
    """θ_α for every floating tensor of ``reference`` (torch tensors by name; ``policy`` must hold
    the same names and shapes). Others are returned unchanged."""
    import torch  # the merge runs torch on the weights: imported with them

    names = [n for n, t in reference.items() if t.is_floating_point()]
    for name in names:
        if name not in policy or policy[name].shape != reference[name].shape:
            raise ConfigError(f"cannot merge: parameter {name!r} differs in shape or is missing in the policy; "
                              "the two checkpoints must share one architecture")
    tau = {n: policy[n].double() - reference[n].double() for n in names}
    if merge.merge == "ties":
        changed = [t[t != 0].abs() for t in tau.values()]
        pool = torch.cat(changed) if changed else torch.zeros(0, dtype=torch.float64)
        keep = math.ceil(merge.kept * pool.numel())
        if 0 < keep < pool.numel():
            threshold = pool.kthvalue(pool.numel() - keep + 1).values  # the keep-th largest magnitude
            tau = {n: torch.where(t.abs() >= threshold, t, torch.zeros_like(t)) for n, t in tau.items()}
    elif merge.merge == "dare":
        for n, t in tau.items():
            generator = torch.Generator().manual_seed(_name_seed(merge.seed, n))
            mask = torch.rand(t.shape, generator=generator, dtype=torch.float64) < merge.kept
            tau[n] = torch.where(mask, t / merge.kept, torch.zeros_like(t))
    out = dict(reference)
    for n in names:
        out[n] = (reference[n].double() + merge.alpha * tau[n]).to(reference[n].dtype)
    return out


def _name_seed(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}|{name}".encode(), digest_size=8).digest(), "little") >> 1


def _folder_digest(path: Path, digest: Any) -> None:
    for file in sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".json")):
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)


def merge_key(policy_dir: Path, reference_dir: Path, merge: ReferenceMerge) -> str:
    """A hash of the inputs: both folders' weight and config files, the adapter's base, the merge."""
    digest = hashlib.sha256(json.dumps(merge.to_dict(), sort_keys=True).encode())
    folders = [policy_dir, reference_dir] + ([adapter_base_path(policy_dir)] if is_adapter_folder(policy_dir) else [])
    for folder in folders:
        _folder_digest(folder, digest)
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/ttsearch/merged-references").expanduser()


def merged_reference_dir(policy_dir: str | Path, reference_dir: str | Path, merge: ReferenceMerge, *,
                         cache_dir: str | Path | None = None) -> Path:
    """The folder of π_α (module docstring), built on first use."""
    policy_dir, reference_dir = check_model_folder(policy_dir), check_model_folder(reference_dir)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = root / f"{merge.label}-{merge_key(policy_dir, reference_dir, merge)}"
    if (out / MARKER).is_file():
        return out
    _build(policy_dir, reference_dir, merge, out)
    return out


def _build(policy_dir: Path, reference_dir: Path, merge: ReferenceMerge, out: Path) -> None:
    # torch, transformers, peft: the merge loads both checkpoints
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # peft, through the adapter loader: only when the policy is a LoRA folder
    from ttsearch.agents.checkpoints.lora import load_adapter_model

    reference = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32)
    policy = (load_adapter_model(policy_dir, dtype=torch.float32) if is_adapter_folder(policy_dir)
              else AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32))
    params = dict(reference.named_parameters())
    merged = merge_weights({n: p.data for n, p in params.items()},
                           {n: p.data for n, p in policy.named_parameters()}, merge)
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(merged[name])
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    reference.save_pretrained(partial)
    AutoTokenizer.from_pretrained(reference_dir).save_pretrained(partial)
    (partial / MARKER).write_text(json.dumps({"merge": merge.to_dict(), "policy": str(policy_dir),
                                              "reference": str(reference_dir)}, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)  # complete folders only: a crash leaves a .partial to be rebuilt
