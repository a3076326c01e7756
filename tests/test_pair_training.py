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

from tolerances import float_tol, model_tol


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
    assert report["rl_final"]["kl_turn"] > 0  # RL moved the policy away from the reference (whole-turn KL)


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
    from ttsearch.training.maze_recipe import SYSTEM_PROMPT
    from ttsearch.training.maze_rl import move_tokens_of
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
            logp = next_token_logprobs(reference, prompts, move_tokens_of(tokenizer), pad_id=tokenizer.pad_token_id)
        agreement.extend(logp.argmax(dim=1).numpy() == expert.argmax(axis=1))
    assert np.mean(agreement) > 0.4, np.mean(agreement)


def test_pair_train_cli_rejects_bad_input(capsys):
    assert cli_main(["pair", "train", "--env", "nope", "--out", "/tmp/x"]) == 2
    assert "choose one of: maze" in capsys.readouterr().err
    assert cli_main(["pair", "train", "--env", "maze", "--out", "/tmp/x", "--set", "betta=1"]) == 2
    assert "unknown recipe field 'betta'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="demo_mix"):
        MazeRecipeConfig(demo_mix=(0.5, 0.5, 0.5))


# -- whole-turn RL pieces, each against an independent computation ---------------------------

def _tiny_tokenizer_and_model(seed: int = 0):
    from ttsearch.envs.maze.env import describe, generate_layout
    from ttsearch.training.maze_recipe import _layout_states
    from ttsearch.training.tiny_model import make_model, train_tokenizer

    texts = ["north", "east", "south", "west"] + _layout_states(generate_layout(1), rng=np.random.default_rng(0))
    tokenizer = train_tokenizer(texts + [describe(generate_layout(2), (0, 0))], vocab_size=330)
    return tokenizer, make_model(tokenizer, hidden_size=32, num_layers=2, init_std=0.2, seed=seed)


def test_branch_logprobs_equal_plain_forwards_of_each_branch():
    """The tree-masked row gives, for every branch, exactly the forward of prompt + [branch]."""
    import torch

    from ttsearch.envs.maze.env import describe, generate_layout
    from ttsearch.training.maze_rl import move_tokens_of
    from ttsearch.training.move_logprobs import _right_padded, branch_logprobs, chat_prompt_ids

    tokenizer, model = _tiny_tokenizer_and_model()
    layout = generate_layout(3)
    prompts = [chat_prompt_ids(tokenizer, "", describe(layout, c)) for c in layout.free_cells[:5]]
    prompts[1] = prompts[1][:-7] + prompts[1][-3:]  # different lengths: right padding is exercised
    moves = move_tokens_of(tokenizer)
    with torch.no_grad():
        first, second = branch_logprobs(model, prompts, moves, pad_id=tokenizer.pad_token_id)
        for i, prompt in enumerate(prompts):
            ids, mask = _right_padded([list(prompt) + [m] for m in moves], tokenizer.pad_token_id)
            plain = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            tol = model_tol(model, plain)  # the same forward, another mask layout: tests/tolerances.py
            torch.testing.assert_close(first[i], plain[0, len(prompt) - 1], atol=tol, rtol=0)
            torch.testing.assert_close(second[i], plain[:, len(prompt)], atol=tol, rtol=0)


def test_turn_classes_partition_all_turns_and_token_targets_are_the_kl_improvement():
    """Independent truth by enumeration over a small vocabulary: the improved whole-turn
    distribution π_ref(y)·exp((Q(c(y)) − V)/β) with V = β·log Σ_c π_ref(c)·e^{Q_c/β}."""
    import torch

    from ttsearch.training.maze_rl import token_targets, turn_classes

    rng = np.random.default_rng(0)
    vocab, stop, moves, beta = 9, 8, [2, 3, 5, 6], 0.1
    ref_first = torch.log_softmax(torch.tensor(rng.normal(size=(3, vocab))), dim=-1)
    ref_second = torch.log_softmax(torch.tensor(rng.normal(size=(3, 4, vocab)) + 3.0 * (np.arange(vocab) == stop)), dim=-1)
    q = torch.tensor(rng.uniform(-1, 1, size=(3, 5)))
    classes = turn_classes(ref_first, ref_second, moves, stop)
    # float64 sums and exps over a 9-token vocabulary, in another order than the enumeration
    ops = 2 * vocab
    np.testing.assert_allclose(torch.logsumexp(classes, dim=1).numpy(), 0.0, atol=float_tol("float64", 1.0, ops))
    p1, p2 = ref_first.exp().numpy(), ref_second.exp().numpy()
    for s in range(3):
        move_mass = [p1[s, m] * p2[s, j, stop] for j, m in enumerate(moves)]
        np.testing.assert_allclose(classes[s, :4].exp().numpy(), move_mass, atol=float_tol("float64", 1.0, ops))
        np.testing.assert_allclose(classes[s, 4].exp().item(), 1 - sum(move_mass), atol=float_tol("float64", 1.0, ops))

    t_first, t_second = token_targets(ref_first, ref_second, q, beta=beta, move_tokens=moves, stop_id=stop)
    t1, t2 = t_first.exp().numpy(), t_second.exp().numpy()
    np.testing.assert_allclose(t1.sum(-1), 1.0, atol=float_tol("float64", 1.0, ops))
    np.testing.assert_allclose(t2.sum(-1), 1.0, atol=float_tol("float64", 1.0, ops))
    qn = q.numpy()
    for s in range(3):
        weights = classes[s].exp().numpy() * np.exp(qn[s] / beta)
        improved = weights / weights.sum()  # class distribution of the improved policy
        whole_moves = [t1[s, m] * t2[s, j, stop] for j, m in enumerate(moves)]
        # e^{Q/β} enters: magnitudes up to e^{2/β} relative to the smallest weights
        big = float_tol("float64", float(np.exp(2 / beta)), ops)
        np.testing.assert_allclose(whole_moves, improved[:4], atol=big)
        # every no-op turn keeps π_ref's shape: its ratio to π_ref is the no-op class's ratio
        ratio_noop = improved[4] / classes[s, 4].exp().item()
        np.testing.assert_allclose(t1[s, 0] / p1[s, 0], ratio_noop, atol=big)           # other first token
        np.testing.assert_allclose(t1[s, 2] * t2[s, 0, 1] / (p1[s, 2] * p2[s, 0, 1]), ratio_noop, atol=big)


@pytest.mark.parametrize("estimator", ["rollout", "expected"])
def test_rollout_values_match_exact_soft_policy_evaluation_with_invalid_variants(estimator):
    """Monte-Carlo Q̂ of a fixed policy on the doubled (plain + after-invalid) state space vs
    the exact linear solve of its KL-regularised Bellman equations; tolerance: 5 standard
    errors of the Monte-Carlo mean (returns lie in [−KL bound, 1])."""
    from ttsearch.envs.maze.env import Layout
    from ttsearch.training.maze_rl import (
        expected_step_values,
        outcome_matrix,
        soft_rollout_values,
        with_invalid_variants,
    )

    layout = Layout(grid=("..G", ".O.", "..."), start=(2, 0))
    slip, gamma, beta, rollouts = 0.2, 0.9, 0.1, 4000
    outcomes, noop_next = with_invalid_variants(outcome_matrix(layout, slip))
    n = outcomes.shape[0]
    rng = np.random.default_rng(1)
    pol = np.log(rng.dirichlet(np.ones(5) * 2, size=n))
    ref = np.log(rng.dirichlet(np.ones(5) * 2, size=n))
    estimate = expected_step_values if estimator == "expected" else soft_rollout_values
    q_hat = estimate(outcomes, pol, ref, noop_next, beta=beta, gamma=gamma, rollouts=rollouts,
                     horizon=200, rng=np.random.default_rng(2))
    # exact: V = r_π − β·KL_π + γ·P_π V; Q(s, c) = R(s, c) + γ·Σ P(s'|s, c)·V(s')
    p = np.exp(pol)
    step = np.zeros((n, 5, n))
    step[:, :4, :] = outcomes[:, :, :n]
    step[np.arange(n), 4, noop_next] = 1.0
    reward = np.zeros((n, 5))
    reward[:, :4] = outcomes[:, :, n]
    r_pi = (p * reward).sum(1) - beta * (p * (pol - ref)).sum(1)
    v = np.linalg.solve(np.eye(n) - gamma * np.einsum("sc,sct->st", p, step), r_pi)
    q = reward + gamma * step @ v
    bound = 1.0 + beta * np.abs(pol - ref).max() / (1 - gamma)
    assert np.all(np.abs(q_hat - q) < 5 * bound / np.sqrt(rollouts)), np.abs(q_hat - q).max()
    assert np.abs(q_hat - q).mean() < 0.01


def test_invalid_observation_is_the_envs_feedback_at_that_cell():
    from ttsearch.envs.maze.env import SlipperyMaze, describe, generate_layout
    from ttsearch.training.maze_recipe import garbled_text, invalid_observation

    layout = generate_layout(4)
    env = SlipperyMaze(layout_seed=4)
    env.reset(seed=0)
    first = env.step("southnorth")
    assert first.info.get("invalid_action") and env.position == layout.start
    assert invalid_observation(layout, layout.start, "southnorth", slip=0.1) == first.observation.text
    cell = layout.free_cells[-1]
    assert invalid_observation(layout, cell, "4north", slip=0.1).endswith(describe(layout, cell))
    rng = np.random.default_rng(0)
    assert all(garbled_text(rng).strip().lower() not in ("north", "east", "south", "west") for _ in range(200))


def test_prop1_scores_whole_turns_and_reports_sampled_turn_log_ratios(quick_pair):
    """prop1's move log-probs are whole turns (move token + stop token), checked against a plain
    forward of each turn; the sampled-turn report partitions every turn into parseable /
    unparseable and its exact per-token KL is non-negative."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttsearch.benchmarks.perf import prop1, prop1_turns
    from ttsearch.envs.maze.env import ACTIONS, describe, generate_layout, maze_tasks
    from ttsearch.training.maze_recipe import SYSTEM_PROMPT
    from ttsearch.training.move_logprobs import action_logprobs, action_turn_ids, chat_prompt_ids

    out, _ = quick_pair
    assert "whole turns" in prop1.measure(out, layouts=1, split="test")["measures"]
    tokenizer = AutoTokenizer.from_pretrained(out / "reference")
    policy = AutoModelForCausalLM.from_pretrained(out / "policy").eval()
    layout = generate_layout(next(maze_tasks(split="test")).kwargs["layout_seed"])
    text = tokenizer.apply_chat_template([{"role": "user", "content": describe(layout, layout.free_cells[0])}],
                                         add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert chat_prompt_ids(tokenizer, SYSTEM_PROMPT, describe(layout, layout.free_cells[0])) == prompt
    plain = []
    with torch.no_grad():
        for action in ACTIONS:
            turn = tokenizer(action + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            assert turn[-1] == tokenizer.eos_token_id and len(turn) == 2
            logp = torch.log_softmax(policy(input_ids=torch.tensor([prompt + turn])).logits[0].double(), dim=-1)
            plain.append(sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(turn)))
        used = action_logprobs(policy, [prompt], action_turn_ids(tokenizer, ACTIONS))[0].double().numpy()
    # two float32 forwards (batched/padded vs alone) summed over the 2-token turn
    np.testing.assert_allclose(used, plain, atol=2 * model_tol(policy, logp.float()))

    turns = prop1_turns.sampled_turns(out, layouts=2, rollouts=2, seed=0)
    n_parse, n_garbled = (turns[k]["pa_whole_turn"]["n"] for k in ("parseable", "unparseable"))
    assert n_parse + n_garbled == turns["turns"] > 0
    # an exact KL (≥ 0), summed in float32 over the vocabulary at each generated position
    assert turns["kl_per_token"] >= -float_tol("float32", 1.0, len(tokenizer))
