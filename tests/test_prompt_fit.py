"""Prompts longer than the model's context are fitted, not refused (issue 16: real tool-calling
runs overflow SmolLM2's 8192 positions): oldest steps after the task go first, then the middle of
the latest observation; the truth is the tokenizer's own chat template over the kept messages."""

from __future__ import annotations

import pytest

from ttsearch.agents import Agent, SamplingParams
from ttsearch.agents.engines.batching import BatchingBackend
from ttsearch.agents.prompting import PromptRenderer
from ttsearch.envs.base import Observation, Step, StepResult, Task, Trajectory
from ttsearch.envs.errors import ConfigError
from ttsearch.training.tiny_model import train_tokenizer

CORPUS = ["You called a tool. The tool returned a long list of files and numbers 0123456789.",
          "<tool_call>{\"name\": \"ls\", \"arguments\": {}}</tool_call> Sure, here it is."] * 20
SYSTEM = "You have tools. Call them as JSON."
OBS = ["List my files.", "file_a file_b file_c " * 3, "done with the list " * 3, "one more turn " * 3,
       "and the last observation " * 3]
ACTIONS = ['<tool_call>{"name": "ls", "arguments": {}}</tool_call>', "Sure.", "Here it is.", "All done."]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400)


def _trajectory(tok, steps: int, obs: list[str] = OBS, system: str = SYSTEM) -> Trajectory:
    end = tok.convert_tokens_to_ids("<|im_end|>")
    traj = Trajectory(Task("bfcl", "t0"), Observation(obs[0]), system_prompt=system)
    for i in range(steps):
        ids = tuple(tok.encode(ACTIONS[i], add_special_tokens=False)) + (end,)
        result = StepResult(Observation(obs[i + 1]), 0.0, False, False)
        traj = traj.extended(Step(traj.observation, ACTIONS[i], ACTIONS[i], result, generated_token_ids=ids))
    return traj


def _template_ids(tok, messages) -> tuple[int, ...]:
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return tuple(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _kept(tok, dropped: int, steps: int) -> tuple[int, ...]:
    """The chat template over system, the task, then the steps after the ``dropped`` oldest."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": OBS[0]}]
    for i in range(dropped, steps):
        messages += [{"role": "assistant", "content": ACTIONS[i]}, {"role": "user", "content": OBS[i + 1]}]
    return _template_ids(tok, messages)


def test_a_prompt_that_fits_is_untouched(tok):
    traj = _trajectory(tok, 4)
    full = PromptRenderer(tok).render(traj)
    assert full == _kept(tok, 0, 4)
    assert PromptRenderer(tok, max_prompt_tokens=len(full)).render(traj) == full


@pytest.mark.parametrize("dropped", [1, 2, 3])
def test_the_oldest_steps_after_the_task_go_first(tok, dropped):
    traj = _trajectory(tok, 4)
    limit = len(_kept(tok, dropped, 4))  # exactly room for the prompt without `dropped` steps
    got = PromptRenderer(tok, max_prompt_tokens=limit).render(traj)
    assert got == _kept(tok, dropped, 4)
    assert len(got) <= limit
    # one token less forces one more step out
    if dropped < 3:
        assert PromptRenderer(tok, max_prompt_tokens=limit - 1).render(traj) == _kept(tok, dropped + 1, 4)


def test_then_the_middle_of_the_latest_observation_is_cut(tok):
    long_obs = "START " + "file_a file_b file_c " * 60 + "END"
    traj = _trajectory(tok, 1, obs=[OBS[0], long_obs])
    floor = len(_kept(tok, 0, 0)) + 40
    renderer = PromptRenderer(tok, max_prompt_tokens=floor + 60)
    got = renderer.render(traj)
    assert len(got) <= floor + 60
    text = tok.decode(list(got))
    assert "tokens cut ...]" in text and "START" in text and "END" in text
    assert OBS[0] in text and SYSTEM in text and ACTIONS[0] in text


def test_a_system_prompt_longer_than_the_context_is_a_config_error(tok):
    with pytest.raises(ConfigError, match="system prompt alone"):
        PromptRenderer(tok, max_prompt_tokens=5).render(_trajectory(tok, 0))
    with pytest.raises(ConfigError, match="max_prompt_tokens"):
        PromptRenderer(tok, max_prompt_tokens=0)


class _Engine:
    eos_token_ids = (0,)
    supports_top_logprobs = True
    has_prefix_cache = False
    max_positions = 100
    name = "fake"

    def sample_batch(self, calls):  # never called: only the context length is read
        raise AssertionError("not called")

    score_batch = sample_batch

    def request_checker(self):
        return None

    def close(self) -> None:
        pass


class _Pair:
    def __init__(self, tok, policy):
        self.policy = self.reference = policy
        self.tokenizer = tok

    def renderer(self) -> PromptRenderer:
        return PromptRenderer(self.tokenizer)


def test_the_agent_leaves_room_for_max_new_tokens_in_the_policys_context(tok):
    agent = Agent(_Pair(tok, _Engine()), sampling=SamplingParams(max_new_tokens=30))
    assert agent.renderer.max_prompt_tokens == 70
    assert agent.fork().renderer.max_prompt_tokens == 70
    batched = BatchingBackend(_Engine())
    try:
        assert batched.max_positions == 100
        assert Agent(_Pair(tok, batched), sampling=SamplingParams(max_new_tokens=10)).renderer.max_prompt_tokens == 90
    finally:
        batched.close()
    unknown = _Engine()
    unknown.max_positions = 0
    assert Agent(_Pair(tok, unknown), sampling=SamplingParams(max_new_tokens=10)).renderer.max_prompt_tokens is None
