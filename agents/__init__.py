"""ttsearch.agents: the LLM side — the agent loop, model engines and checkpoint pairs.

    from ttsearch.agents import Agent, ModelPair, SamplingParams
    pair = ModelPair.load_dir("runs/maze_pair")
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=16))
    candidates = agent.propose([trajectory], k=8, seed=0)[0]

The package's top holds the agent loop: ``base.py`` (the ``Backend`` and ``Proposer``
contracts and their data), ``agent.py``, ``prompting.py`` (token-exact chat rendering),
``parsing.py`` (text -> env action, and the span that decides it) and ``token_kl.py`` (the exact
per-token KL(π_θ‖π_ref) from whole log-prob rows). ``engines/`` holds the model engines
(``engines.transformers.TransformersBackend``, ``engines.sglang.SGLangBackend``) and
``checkpoints/`` the pairs. Importing this package does not import torch: the embedded engine
loads it when a pair is loaded.
"""

from __future__ import annotations

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
from ttsearch.agents.parsing import (
    ActionParser,
    AdmissibleMatchParser,
    PlainActionParser,
    ToolCallParser,
    parse_candidate,
)
from ttsearch.agents.prompting import PromptConfig, PromptRenderer

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
    "AdmissibleMatchParser",
    "ToolCallParser",
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
]
