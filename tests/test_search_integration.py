"""Search with the real Agent over tiny random models on the real maze (integration, not quality).

Truth: every executed step's log-probs (and hence its PA) are recomputed with a plain full
forward pass of each model over the exact prompt the agent rendered plus the step's tokens; the
ledger is compared with the engines' own counters.
"""

from __future__ import annotations

import pytest
import torch

from ttsearch.agents import Agent, ModelPair, PromptConfig, SamplingParams
from ttsearch.agents.engines.transformers.backend import TransformersBackend
from ttsearch.envs import list_tasks
from ttsearch.envs.maze.env import SYSTEM_PROMPT
from ttsearch.envs.maze.layout import ACTIONS, describe, generate_layout
from ttsearch.scorers import make_scorer
from ttsearch.search import CONTROLLERS, Budget, make_controller
from ttsearch.training.tiny_model import make_model, train_tokenizer

from tolerances import model_tol

SMALL = {
    "greedy": {}, "trajectory_best_of_n": {"n": 3}, "step_best_of_n": {"k": 3},
    "beam": {"width": 2, "expand": 2}, "best_first": {"expand": 2, "batch": 2},
    "mcts": {"simulations": 2, "expand": 2, "batch": 2},
}


@pytest.fixture(scope="module")
def pair():
    layout = generate_layout(0)
    corpus = [SYSTEM_PROMPT, *ACTIONS] * 5 + [describe(layout, cell) for cell in layout.free_cells]
    tok = train_tokenizer(corpus, vocab_size=400)
    policy = TransformersBackend(make_model(tok, init_std=0.1, seed=1), tokenizer=tok, name="policy")
    reference = TransformersBackend(make_model(tok, init_std=0.1, seed=2), tokenizer=tok, name="reference")
    return ModelPair(policy, reference, tok, beta=0.5, prompt=PromptConfig(max_history_turns=0))


@pytest.fixture(scope="module")
def task():
    return list_tasks("maze", split="test", limit=1)[0]


def full_forward_logprobs(model, prompt, tokens):
    """The plain forward's log-probs of ``tokens`` and how far another correct computation of
    them may be (tests/tolerances.py)."""
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt) + list(tokens)])).logits[0]
    lp = logits.log_softmax(-1)
    return [lp[len(prompt) - 1 + i, t].item() for i, t in enumerate(tokens)], model_tol(model, logits)


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_controllers_run_the_real_agent_within_budget(pair, task, name):
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=3, temperature=1.0))
    scorer = make_scorer("progress_advantage", beta=pair.beta)
    budget = Budget(generated_tokens=60, scored_tokens=60, model_calls=30, env_steps=40)
    before = (pair.policy.stats.snapshot(), pair.reference.stats.snapshot())
    result = make_controller(name, seed=1, max_steps=3, **SMALL[name]).run(task, task.make, agent, scorer, budget)
    used = [pair.policy.stats.minus(before[0]), pair.reference.stats.minus(before[1])]
    assert result.usage.exceeded(budget) == []
    assert result.usage.generated_tokens == used[0].generated_tokens + used[1].generated_tokens
    assert result.usage.scored_tokens == used[1].scored_tokens
    assert result.usage.model_calls == used[0].calls + used[1].calls
    renderer = pair.renderer()
    traj = result.trajectory
    assert traj.steps and len(traj.steps) <= 3
    for t, step in enumerate(traj.steps):
        prefix = type(traj)(traj.task, traj.initial_observation, traj.steps[:t], traj.system_prompt)
        prompt = renderer.render(prefix)
        span = step.action_token_ids
        if not span:
            continue
        pol, pol_tol = full_forward_logprobs(pair.policy.model, prompt, span)
        ref, ref_tol = full_forward_logprobs(pair.reference.model, prompt, span)
        assert step.policy_logprobs == pytest.approx(pol, abs=pol_tol)
        if name != "greedy":  # greedy does not score (no reference call)
            assert step.reference_logprobs == pytest.approx(ref, abs=ref_tol)
            expected = pair.beta * (sum(pol) / len(pol) - sum(ref) / len(ref))
            # PA = β·(mean − mean): a mean's error is at most its largest term's
            assert step.scores["progress_advantage"] == pytest.approx(expected, abs=pair.beta * (pol_tol + ref_tol))


def test_same_seed_same_search_with_the_real_agent(pair, task):
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=3, temperature=1.0))
    scorer = make_scorer("progress_advantage", beta=pair.beta)
    runs = [make_controller("beam", width=2, expand=2, seed=5, max_steps=2).run(task, task.make, agent, scorer, Budget())
            for _ in range(2)]
    # Same decisions and same numbers; only float32 noise (CPU kernels are not bitwise
    # reproducible across calls, e.g. the first call of a shape) may differ in the log-probs.
    # Its bound for a PA step score, β·(tol_pol + tol_ref), with M taken over the chosen path.
    prompt = pair.renderer().render(runs[0].trajectory)
    tol = pair.beta * sum(full_forward_logprobs(m, prompt[:-1], prompt[-1:])[1]
                          for m in (pair.policy.model, pair.reference.model))
    assert runs[0].trajectory.actions == runs[1].trajectory.actions
    a, b = (dict(r.tree.graph.nodes(data=True)) for r in runs)
    assert a.keys() == b.keys()
    for node in a:
        assert {k: v for k, v in a[node].items() if not isinstance(v, (float, list))} == \
               {k: v for k, v in b[node].items() if not isinstance(v, (float, list))}
        assert (a[node].get("step_score") or 0.0) == pytest.approx(b[node].get("step_score") or 0.0, abs=tol)
