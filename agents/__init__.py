"""ttsearch.agents: the LLM side — engines, checkpoint pairs, prompts, parsing, the agent.

    from ttsearch.agents import Agent, ModelPair, SamplingParams
    pair = ModelPair.load_dir("runs/maze_pair")
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=16))
    candidates = agent.propose([trajectory], k=8, seed=0)[0]

Importing this package does not import torch; ``TransformersBackend`` and the tiny-model
helpers are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from ttsearch.agents.agent import Agent
from ttsearch.agents.base import (
    Backend,
    Candidate,
    EngineStats,
    Proposer,
    Sample,
    SamplingParams,
    ScoreRequest,
    TokenScores,
    step_from_candidate,
)
from ttsearch.agents.checkpoints.model_pair import (
    PAIR_MANIFEST,
    ModelPair,
    PairManifest,
    check_same_tokenizer,
)
from ttsearch.agents.parsing import ActionParser, PlainActionParser, parse_candidate
from ttsearch.agents.prompting import PromptConfig, PromptRenderer

_LAZY = {
    "TransformersBackend": "ttsearch.agents.engines.transformers.backend",
    "train_tokenizer": "ttsearch.training.tiny_model",
    "make_model": "ttsearch.training.tiny_model",
    "save_pair_folder": "ttsearch.training.tiny_model",
}

__all__ = [
    "PAIR_MANIFEST",
    "ActionParser",
    "Agent",
    "Backend",
    "Candidate",
    "EngineStats",
    "ModelPair",
    "PairManifest",
    "PlainActionParser",
    "PromptConfig",
    "PromptRenderer",
    "Proposer",
    "Sample",
    "SamplingParams",
    "ScoreRequest",
    "TokenScores",
    "check_same_tokenizer",
    "parse_candidate",
    "step_from_candidate",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
