"""Checkpoint pairs: the RL-trained policy and its reference, and where their weights come from.

    from ttsearch.agents.checkpoints import ModelPair, default_pair_dir
    pair = ModelPair.load_dir(default_pair_dir("maze"))       # shipped with the package
    pair = ModelPair.load("ckpt/policy", "ckpt/reference")    # any two HF folders, one tokenizer

- ``model_pair.py``: :class:`ModelPair`, :class:`PairManifest` (``ttsearch_pair.json``).
- ``shipped.py``: the pairs shipped as package data (``pairs/``).
- ``lora.py``: a policy saved as a LoRA adapter over its base model.
- ``model_spec.py``: ``import:NAME`` specs naming a model imported once per machine.
- ``merge.py``: merged references π_α = π_ref + α·(π_θ − π_ref) (linear, TIES, DARE), cached on disk.
"""

from ttsearch.agents.checkpoints.merge import MERGES, ReferenceMerge, merged_reference_dir
from ttsearch.agents.checkpoints.model_pair import (
    PAIR_MANIFEST,
    ModelPair,
    PairManifest,
    check_same_tokenizer,
)
from ttsearch.agents.checkpoints.shipped import SHIPPED_PAIRS, default_pair_dir

__all__ = [
    "PAIR_MANIFEST", "SHIPPED_PAIRS", "ModelPair", "PairManifest", "check_same_tokenizer",
    "default_pair_dir", "MERGES", "ReferenceMerge", "merged_reference_dir",
]
