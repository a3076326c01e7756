"""A pair trained elsewhere on a tool-calling benchmark (issue 16): the env's system prompt (the
one with the tool schemas) reaches the model and the run records that text, and the env's own
parser reads whole messages where the config leaves ``parser: plain``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ttsearch.agents import PlainActionParser, PromptConfig, ToolCallParser
from ttsearch.benchmarks.run.config import parse_config
from ttsearch.benchmarks.run.setup import build_parser, probe_env, prompt_for
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError

pytest.importorskip("bfcl_eval", reason="BFCL (bfcl-eval) is not installed")

PAIR_PROMPT = "Solve the arithmetic problem. Reply with the resulting number."
CALL = '<tool_call>\n{"name": "cd", "arguments": {"folder": "document"}}\n</tool_call>'


def _pair(trained_on: str) -> SimpleNamespace:
    return SimpleNamespace(manifest=SimpleNamespace(env=trained_on), prompt=PromptConfig(system_prompt=PAIR_PROMPT))


def _config(**extra) -> object:
    return parse_config({"pair": "default:smollm2-chain-sum", "tasks": {"env": "bfcl", "limit": 1},
                         "arms": [{"name": "greedy", "controller": "greedy"}],
                         "scorers": [{"name": "policy_logprob"}], **extra})


@pytest.fixture(scope="module")
def bfcl_probe():
    return probe_env([Task(env="bfcl", id="multi_turn_base_0", kwargs={"task": "multi_turn_base_0"})])


def test_elsewhere_the_env_prompt_reaches_the_model_and_is_recorded(bfcl_probe):
    env_prompt, answers, env_parser = bfcl_probe
    # the truth: BFCL's entry lists the GorillaFileSystem functions, `cd` among them
    assert '"name": "cd"' in env_prompt and "<tools>" in env_prompt and not answers
    config, record = prompt_for(_pair("reasoning_gym"), "bfcl", env_prompt)
    assert config.system_prompt is None  # the renderer then uses the trajectory's (the env's)
    assert record["system_prompt"] == env_prompt and PAIR_PROMPT not in record["system_prompt"]
    assert record["source"] == "env (the pair was trained on 'reasoning_gym')"
    # asked for explicitly, the pair's prompt is used and recorded as such
    config, record = prompt_for(_pair("reasoning_gym"), "bfcl", env_prompt, "pair")
    assert config.system_prompt == PAIR_PROMPT == record["system_prompt"] and record["source"] == "pair"


def test_on_its_own_env_the_pair_prompt_is_used_and_recorded():
    config, record = prompt_for(_pair("reasoning_gym"), "reasoning_gym", "the env's prompt")
    assert record["system_prompt"] == PAIR_PROMPT == config.system_prompt and record["source"] == "pair"
    _, record = prompt_for(_pair("reasoning_gym"), "reasoning_gym", "the env's prompt", "env")
    assert record["system_prompt"] == "the env's prompt"


def test_a_tool_env_gets_the_tool_call_parser_where_the_config_says_plain(bfcl_probe):
    env_parser = bfcl_probe[2]
    parser = build_parser(_config(), env_parser)
    assert isinstance(parser, ToolCallParser)
    assert parser.parse(CALL) == CALL  # the whole message; plain would keep only "<tool_call>"
    assert PlainActionParser().parse(CALL) == "<tool_call>"
    # an explicit parser spec wins over the env's
    chosen = build_parser(_config(parser="ttsearch.agents.parsing:AdmissibleMatchParser"), env_parser)
    assert type(chosen).__name__ == "AdmissibleMatchParser"
    assert isinstance(build_parser(_config(), None), PlainActionParser)


def test_the_engine_cache_size_is_deployment_only():
    base = _config()
    sized = _config(engine={"kind": "transformers", "cache_mb": 2048})
    assert sized.engine.cache_mb == 2048 and sized.config_hash() == base.config_hash()
    with pytest.raises(ConfigError, match="cache_mb"):
        _config(engine={"kind": "sglang", "cache_mb": 2048})
    with pytest.raises(ConfigError, match="cache_mb"):
        _config(engine={"kind": "transformers", "cache_mb": -1})
