"""The task-specific reward model: Monte-Carlo prefix labels, and a --quick run that learns."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from ttsearch.agents.checkpoints.shipped import default_pair_dir  # noqa: E402
from ttsearch.benchmarks.cli import main as cli_main  # noqa: E402
from ttsearch.envs import list_tasks  # noqa: E402
from ttsearch.envs.base import Observation, Step, StepResult, Task, Trajectory  # noqa: E402
from ttsearch.envs.errors import ConfigError  # noqa: E402
from ttsearch.scorers import make_scorer  # noqa: E402
from ttsearch.scorers.metrics import auroc  # noqa: E402
from ttsearch.training.reward_model_training import (  # noqa: E402
    Example,
    RMRecipe,
    load_agent,
    merge_duplicates,
    prefix_examples,
    roll_out,
)

from tolerances import EXACT  # noqa: E402


class ChatML:
    """A stand-in tokenizer that only renders (the labelling never tokenises)."""

    chat_template = "chatml"

    @staticmethod
    def apply_chat_template(messages, tokenize=False, add_generation_prompt=False):
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages)


def _episode(moves: list[tuple[str, str]], final_reward: float) -> Trajectory:
    steps = []
    for i, (obs, action) in enumerate(moves):
        last = i == len(moves) - 1
        result = StepResult(Observation("after " + action), final_reward if last else 0.0, last, False)
        steps.append(Step(observation=Observation(obs), action_text=action, action=action, result=result))
    return Trajectory(Task(env="maze", id="maze-x"), steps[0].observation, tuple(steps))


def test_prefixes_are_labelled_with_the_episode_outcome():
    won = _episode([("s0", "north"), ("s1", "east"), ("s2", "east")], 1.0)
    lost = _episode([("s0", "south"), ("s3", "west")], 0.0)
    examples = prefix_examples(ChatML(), [won, lost], history=0)
    assert [(e.text, e.label, e.episode) for e in examples] == [
        ("<user>s0</user><assistant>north</assistant>", 1.0, 0),
        ("<user>s1</user><assistant>east</assistant>", 1.0, 0),
        ("<user>s2</user><assistant>east</assistant>", 1.0, 0),
        ("<user>s0</user><assistant>south</assistant>", 0.0, 1),
        ("<user>s3</user><assistant>west</assistant>", 0.0, 1),
    ]
    full = prefix_examples(ChatML(), [lost], history="all", system_prompt="maze")
    assert [e.text for e in full] == [
        "<system>maze</system><user>s0</user><assistant>south</assistant>",
        "<system>maze</system><user>s0</user><assistant>south</assistant><user>s3</user><assistant>west</assistant>",
    ]
    # the observation answering the last action ("after west") is never part of a prefix
    assert all("after" not in e.text for e in examples + full)


def test_duplicate_prefixes_merge_into_mean_label_and_count():
    rows = [Example("a", 1.0, 0), Example("b", 0.0, 0), Example("a", 0.0, 1), Example("a", 1.0, 2)]
    texts, targets, counts = merge_duplicates(rows)
    assert texts == ["a", "b"]
    assert targets == pytest.approx([2 / 3, 0.0], abs=EXACT)
    assert counts == [3, 1]


def test_recipe_rejects_bad_values():
    with pytest.raises(ConfigError, match="val_fraction"):
        RMRecipe(val_fraction=1.5)
    with pytest.raises(ConfigError, match="epochs must be an integer >= 1"):
        RMRecipe(epochs=0)
    with pytest.raises(ConfigError, match="env must be 'maze'"):
        RMRecipe(env="sokoban")


@pytest.mark.slow
def test_quick_run_trains_a_model_the_scorer_loads_and_that_beats_chance(tmp_path, capsys):
    out = tmp_path / "rm"
    assert cli_main(["rm", "train", "--env", "maze", "--out", str(out), "--quick", "--eval-layouts", "0"]) == 0
    manifest = json.loads((out / "ttsearch_rm.json").read_text())
    recipe = RMRecipe.quick()
    assert manifest["recipe"] == json.loads(json.dumps(recipe.__dict__))
    assert manifest["render"] == {"system_prompt": "", "history": 0, "max_length": recipe.max_length}
    scorer = make_scorer("reward_model", path=str(out))
    assert (scorer.history, scorer.system_prompt, scorer.max_length) == (0, "", recipe.max_length)
    # Re-create the training episodes independently (same layouts, same seeds) and score them.
    assert manifest["pair"] == "default:maze"
    agent, _, env_kwargs = load_agent(default_pair_dir("maze"))
    tasks = list_tasks("maze", split="train", limit=recipe.train_layouts, episode_seed=recipe.seed, **env_kwargs)
    n_val = manifest["data"]["val_layouts"]
    episodes = roll_out(agent, tasks[n_val:], rollouts=recipe.rollouts_per_layout, seed=recipe.seed,
                        max_steps=recipe.max_steps)
    assert len(episodes) == manifest["data"]["train_episodes"]
    labels, scores = [], []
    for episode in episodes:
        for score in scorer.step_scores(episode.steps):
            labels.append(float(episode.success))
            scores.append(score)
    assert len(labels) == manifest["data"]["train_prefixes"]
    assert 0 < sum(labels) < len(labels)
    # ~300 correlated prefixes from ~30 episodes: demand a clear margin over chance (0.5)
    assert auroc(scores, labels) > 0.65
