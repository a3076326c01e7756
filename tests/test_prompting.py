"""PromptRenderer: token-exact against the tokenizer's own chat template, and prefix-incremental."""

from __future__ import annotations

import copy

import pytest

from ttsearch.agents.prompting import PromptConfig, PromptRenderer
from ttsearch.envs.base import Observation, Step, StepResult, Task, Trajectory
from ttsearch.envs.errors import ConfigError
from ttsearch.training.tiny_model import train_tokenizer

CORPUS = [
    "You are in a maze. There is a wall to the north and a pit to the east. Step 3 of 20.",
    "Valid actions: north, south, east, west. You moved south.",
    "Action: north",
    "Action: east",
    "Thought: the pit is east, so I go north.",
] * 20
SYSTEM = "You navigate a maze. Answer with one move: north, south, east or west."
OBS = [
    "You are at (0, 0). A wall is to the north.",
    "You moved east. A pit is to the east!",
    "You moved south.  Two spaces,\ttab and 12 digits.",
    "You reached the exit.",
]
ACTIONS = ["Action: east", "Thought: the pit is east.\nAction: south", "  west  "]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=420)


def _trajectory(tok, steps: int, *, system=SYSTEM, generated=None, admissible=None) -> Trajectory:
    end = tok.convert_tokens_to_ids("<|im_end|>")
    traj = Trajectory(Task("maze", "t0"), Observation(OBS[0], admissible), system_prompt=system)
    for i in range(steps):
        ids = (
            generated[i]
            if generated
            else tuple(tok.encode(ACTIONS[i], add_special_tokens=False)) + (end,)
        )
        result = StepResult(Observation(OBS[i + 1], admissible), 0.0, False, False)
        traj = traj.extended(
            Step(traj.observation, ACTIONS[i], ACTIONS[i].strip(), result, generated_token_ids=ids)
        )
    return traj


def _template_ids(tok, messages):
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


@pytest.mark.parametrize("system", [SYSTEM, ""])
def test_render_equals_chat_template_and_extends_prefix(tok, system):
    renderer = PromptRenderer(tok)
    previous = None
    for t in range(4):
        traj = _trajectory(tok, t, system=system)
        ids = renderer.render(traj)
        messages = renderer.messages(traj)
        assert messages[0]["role"] == ("system" if system else "user")
        assert list(ids) == _template_ids(tok, messages)
        if previous is not None:  # step t's prompt = step t-1's prompt + its generated ids + more
            gen = traj.steps[-1].generated_token_ids
            assert ids[: len(previous)] == previous
            assert ids[len(previous) : len(previous) + len(gen)] == gen
        previous = ids


def test_generated_ids_are_inserted_verbatim(tok):
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # "east" spelled as single-character tokens: a valid but non-canonical tokenisation
    odd = tuple(tok.convert_tokens_to_ids(list("east"))) + (end,)
    assert odd[:-1] != tuple(tok.encode("east", add_special_tokens=False))
    traj = _trajectory(tok, 1, generated=[odd])
    ids = PromptRenderer(tok).render(traj)
    head = PromptRenderer(tok).render(_trajectory(tok, 0))
    assert ids[len(head) : len(head) + len(odd)] == odd
    assert tok.decode(list(ids)).count("<|im_end|>") == 4  # system, user, assistant, user


def test_truncated_turn_is_closed_with_end_token(tok):
    end = tok.convert_tokens_to_ids("<|im_end|>")
    cut = tuple(
        tok.encode("Thought: the pit", add_special_tokens=False)
    )  # no stop token: hit length
    traj = _trajectory(tok, 1, generated=[cut])
    ids = PromptRenderer(tok).render(traj)
    head = PromptRenderer(tok).render(_trajectory(tok, 0))
    assert ids[len(head) : len(head) + len(cut) + 1] == cut + (end,)


def test_history_window(tok):
    traj = _trajectory(tok, 3)
    one = PromptRenderer(tok, max_history_turns=1)
    messages = one.messages(traj)
    assert [m["content"] for m in messages] == [SYSTEM, OBS[2], ACTIONS[2], OBS[3]]
    assert list(one.render(traj)) == _template_ids(tok, messages)
    zero = PromptRenderer(tok, max_history_turns=0)
    assert [m["content"] for m in zero.messages(traj)] == [SYSTEM, OBS[3]]
    assert list(zero.render(traj)) == _template_ids(tok, zero.messages(traj))
    assert PromptRenderer(tok, max_history_turns=5).render(traj) == PromptRenderer(tok).render(traj)


def test_admissible_actions_and_system_override(tok):
    traj = _trajectory(tok, 1, admissible=("north", "south"))
    renderer = PromptRenderer.from_config(
        tok, PromptConfig(show_admissible_actions=True, system_prompt="Be brief.")
    )
    messages = renderer.messages(traj)
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["content"] == OBS[0] + "\n\nValid actions: north, south"
    assert list(renderer.render(traj)) == _template_ids(tok, messages)


def test_unusable_templates_are_refused(tok):
    bare = copy.deepcopy(tok)
    bare.chat_template = None
    with pytest.raises(ConfigError, match="no chat_template"):
        PromptRenderer(bare)
    last_only = copy.deepcopy(tok)  # renders only the latest message: not prefix-stable
    last_only.chat_template = (
        "{{ '<|im_start|>' + messages[-1]['role'] + '\\n' + messages[-1]['content'] + '<|im_end|>\\n' }}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    with pytest.raises(ConfigError, match="prefix-stable|verbatim"):
        PromptRenderer(last_only)
    stripping = copy.deepcopy(tok)  # rewrites contents: not verbatim
    stripping.chat_template = tok.chat_template.replace(
        "message['content']", "message['content'] | upper"
    )
    with pytest.raises(ConfigError, match="chat template"):
        PromptRenderer(stripping)


def test_prompt_config_round_trip_and_validation():
    config = PromptConfig(max_history_turns=2, show_admissible_actions=True)
    assert PromptConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown prompt setting"):
        PromptConfig.from_dict({"history": 3})
    with pytest.raises(ConfigError, match="max_history_turns"):
        PromptConfig(max_history_turns=-1)
