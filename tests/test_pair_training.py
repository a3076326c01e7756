"""The checkpoint-pair recipe trains: a shortened run, judged against the exact maze solution."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ttsearch.benchmarks.cli import main as cli_main
from ttsearch.envs import ConfigError
from ttsearch.training.maze_recipe import (
    PAIR_CONFIG_FILE,
    MazeRecipeConfig,
    demonstrator,
    train_maze_pair,
)


@pytest.fixture(scope="module")
def quick_pair(tmp_path_factory):
    out = tmp_path_factory.mktemp("pair")
    report = train_maze_pair(MazeRecipeConfig.quick(), out, progress=False)
    return out, report


def test_quick_recipe_writes_loadable_pair(quick_pair):
    from ttsearch.agents import ModelPair

    out, report = quick_pair
    manifest = json.loads((out / PAIR_CONFIG_FILE).read_text())
    assert manifest["beta"] == report["beta"] > 0 and manifest["env"] == "maze"
    pair = ModelPair.load_dir(out)  # both folders load and share one tokenizer
    assert pair.beta == manifest["beta"]
    assert report["rl_final"]["kl"] > 0  # RL moved the policy away from the reference


def test_reference_imitates_the_demonstrator_and_rl_moves_toward_the_soft_optimum(quick_pair):
    """SFT: π_ref's favourite move is the noisy expert's favourite far above chance (1/4).
    RL: on training layouts, β·log π_θ/π_ref rank-correlates with the exact soft advantage A*
    (the correlation is undefined — zero signal — before RL, when π_θ = π_ref)."""
    import itertools

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttsearch.benchmarks.perf.prop1 import measure
    from ttsearch.envs.maze.env import maze_tasks
    from ttsearch.envs.maze.layout import describe, generate_layout
    from ttsearch.training.maze_recipe import SYSTEM_PROMPT, _move_tokens
    from ttsearch.training.move_logprobs import chat_prompt_ids, next_token_logprobs

    out, _ = quick_pair
    config = MazeRecipeConfig.quick()
    result = measure(out, layouts=8, split="train")
    assert result["pa"]["spearman"] > 0.3, result["pa"]

    tokenizer = AutoTokenizer.from_pretrained(out / "reference")
    reference = AutoModelForCausalLM.from_pretrained(out / "reference").eval()
    agreement = []
    for task in itertools.islice(maze_tasks(split="train", start=10), 5):
        layout = generate_layout(task.kwargs["layout_seed"])
        expert = demonstrator(layout, slip=config.slip, gamma=config.gamma, mix=config.demo_mix)
        prompts = [chat_prompt_ids(tokenizer, SYSTEM_PROMPT, describe(layout, c)) for c in layout.free_cells]
        with torch.no_grad():
            logp = next_token_logprobs(reference, prompts, _move_tokens(tokenizer), pad_id=tokenizer.pad_token_id)
        agreement.extend(logp.argmax(dim=1).numpy() == expert.argmax(axis=1))
    assert np.mean(agreement) > 0.4, np.mean(agreement)


def test_pair_train_cli_rejects_bad_input(capsys):
    assert cli_main(["pair", "train", "--env", "nope", "--out", "/tmp/x"]) == 2
    assert "choose one of: maze" in capsys.readouterr().err
    assert cli_main(["pair", "train", "--env", "maze", "--out", "/tmp/x", "--set", "betta=1"]) == 2
    assert "unknown recipe field 'betta'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="demo_mix"):
        MazeRecipeConfig(demo_mix=(0.5, 0.5, 0.5))
