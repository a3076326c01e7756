"""Search controllers against designed environments with a fake proposer (no model).

The environments are defined here, to show the controllers run on any Env meeting the protocol.
Truth comes from the designs: in TrapEnv the best-looking first move is a dead end, so only a
search that looks ahead (beam, best-first, MCTS) finds the one rewarding path.
"""

from __future__ import annotations

import json
import math

import networkx as nx
import pytest

from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError, EnvError, TtsearchError
from ttsearch.scorers import make_scorer
from ttsearch.search import CONTROLLERS, Budget, make_controller
from ttsearch.search.testing import Choice, FakeProposer

from tolerances import EXACT

PA = make_scorer("progress_advantage")
TASK = Task(env="trap", id="trap-0", seed=0)


class TrapEnv(Env):
    """Two moves. First: 'a' (looks better) or 'b'. Then 'x' or 'y'. Only b, x is rewarded."""

    deterministic = True
    system_prompt = "Reach the treasure."

    def __init__(self):
        self.prefix: tuple[str, ...] = ()

    def reset(self, *, seed=None):
        self.prefix = ()
        return Observation("start", ("a", "b"))

    def step(self, action):
        self.prefix = (*self.prefix, action)
        done = len(self.prefix) >= 2
        reward = 1.0 if done and self.prefix == ("b", "x") else 0.0
        return StepResult(Observation("at " + "/".join(self.prefix), ("x", "y")), reward, done, False)

    def snapshot(self):
        return self.prefix

    def restore(self, snapshot):
        self.prefix = snapshot


class TrapNoSnapshot(TrapEnv):
    """Same MDP, branching only by replay."""

    snapshot = Env.snapshot
    restore = Env.restore


class TrapNonDeterministic(TrapNoSnapshot):
    deterministic = False


def trap_table(state):
    """Greedy picks 'a' (p=.6) and PA likes it (+1) — but after 'a' everything scores -3."""
    if not state.steps:
        return [Choice("a", math.log(0.6), 1.0), Choice("b", math.log(0.4), 0.0)]
    if state.actions == ("a",):
        return [Choice("x", math.log(0.5), -3.0), Choice("y", math.log(0.5), -3.0)]
    return [Choice("x", math.log(0.9), 3.0), Choice("y", math.log(0.1), -1.0)]


def run(name, env=TrapEnv, scorer=PA, budget=None, table=trap_table, **kwargs):
    agent = FakeProposer(table)
    return make_controller(name, **kwargs).run(TASK, env, agent, scorer, budget or Budget()), agent


LOOKAHEAD = {"beam": dict(width=2, expand=8), "best_first": dict(expand=8),
             "mcts": dict(expand=8, simulations=8)}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", sorted(LOOKAHEAD))
def test_lookahead_search_finds_the_path_greedy_misses(name, seed):
    result, _ = run(name, seed=seed, **LOOKAHEAD[name])
    assert result.trajectory.actions == ("b", "x") and result.success
    assert result.stop_reason == "done" and result.score == pytest.approx(1.5, abs=EXACT)  # mean of (0, 3)
    greedy, _ = run("greedy", seed=seed)
    step, _ = run("step_best_of_n", seed=seed, k=8)
    assert greedy.trajectory.actions[0] == "a" and not greedy.success
    assert step.trajectory.actions[0] == "a" and not step.success  # myopic: +1 beats 0


def test_trajectory_best_of_n_picks_by_trajectory_score():
    result, _ = run("trajectory_best_of_n", n=16)
    rollouts = [n for n, d in result.tree.graph.nodes(data=True) if d.get("depth") == 2]
    assert len(rollouts) == 16 and result.info["finished"] == 16
    # Independent truth: recompute every finished rollout's mean PA from the tree.
    best = max(rollouts, key=lambda n: (sum(result.tree.graph.nodes[p]["step_score"]
                                            for p in result.tree.path(n)) / 2, -n))
    assert result.trajectory.actions == tuple(result.tree.graph.nodes[p]["action"] for p in result.tree.path(best))
    assert result.success


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_every_controller_keeps_the_contract(name):
    budget = Budget(tokens=600, generated_tokens=400, scored_tokens=400, model_calls=80, env_steps=200)
    result, agent = run(name, budget=budget)
    usage = result.usage
    assert usage.exceeded(budget) == []
    total = agent.total()
    assert (usage.generated_tokens, usage.scored_tokens, usage.model_calls) == (
        total.generated_tokens, total.scored_tokens, total.calls)
    assert result.controller == name and result.budget == budget
    assert result.trajectory.task == TASK and result.trajectory.done
    assert result.selection_uses_env_reward is False
    # the returned trajectory is a chosen path in the tree, node by node
    chosen = [n for n, s in result.tree.graph.nodes(data="status") if s == "chosen"]
    assert len(chosen) == len(result.trajectory.steps)
    assert [result.tree.graph.nodes[n]["action"] for n in sorted(chosen)] == list(result.trajectory.actions)
    assert nx.is_arborescence(result.tree.graph)
    json.dumps(result.to_dict())  # JSON-ready


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_fixed_seed_reproduces_exactly(name):
    a, _ = run(name, seed=3)
    b, _ = run(name, seed=3)
    assert a.trajectory == b.trajectory and a.tree.to_dict() == b.tree.to_dict()
    assert a.usage.tokens == b.usage.tokens and a.usage.model_calls == b.usage.model_calls


@pytest.mark.parametrize("name", ["beam", "best_first", "mcts"])
def test_snapshot_and_replay_branching_agree(name):
    snap, _ = run(name, env=TrapEnv, seed=1, **LOOKAHEAD[name])
    replay, _ = run(name, env=TrapNoSnapshot, seed=1, **LOOKAHEAD[name])
    assert (snap.branching, replay.branching) == ("snapshot", "replay")
    assert snap.trajectory == replay.trajectory and snap.tree.to_dict() == replay.tree.to_dict()
    assert replay.usage.replayed_steps > 0 == snap.usage.replayed_steps
    assert replay.usage.env_steps == snap.usage.env_steps + replay.usage.replayed_steps


@pytest.mark.parametrize("name", ["beam", "best_first", "mcts"])
def test_branching_controller_on_unbranchable_env_is_one_line_error(name):
    with pytest.raises(EnvError) as err:
        run(name, env=TrapNonDeterministic)
    msg = str(err.value)
    assert "\n" not in msg and name in msg and "greedy" in msg and "step_best_of_n" in msg
    assert "snapshot" in msg


@pytest.mark.parametrize("name", ["greedy", "step_best_of_n", "trajectory_best_of_n"])
def test_no_branching_controllers_run_on_unbranchable_env(name):
    result, _ = run(name, env=TrapNonDeterministic)
    assert result.trajectory.done and result.branching in ("none", "independent")


def test_forcing_snapshot_on_env_without_it_names_the_fix():
    with pytest.raises(EnvError, match="branching='snapshot'.*replay"):
        run("beam", env=TrapNoSnapshot, branching="snapshot")


def test_replay_divergence_is_detected():
    class Liar(TrapNoSnapshot):
        count = 0

        def reset(self, *, seed=None):
            Liar.count += 1
            self.prefix = ()
            return Observation(f"start {Liar.count}", ("a", "b"))

    with pytest.raises(EnvError, match="claims deterministic=True"):
        run("beam", env=Liar, width=2, expand=8)


@pytest.mark.parametrize(("budget", "field"), [
    (Budget(tokens=7), "tokens=7"),
    (Budget(generated_tokens=3), "generated_tokens=3"),
    (Budget(scored_tokens=2), "scored_tokens=2"),
    (Budget(model_calls=1), "model_calls=1"),
    (Budget(env_steps=0), "env_steps=0"),
])
def test_impossible_budget_is_one_line_error(budget, field):
    with pytest.raises(ConfigError) as err:
        run("beam", budget=budget)
    msg = str(err.value)
    assert "\n" not in msg and field in msg and "impossible budget" in msg and "raise it" in msg


def test_budget_without_reference_needs_no_scored_tokens():
    result, _ = run("step_best_of_n", scorer=make_scorer("policy_logprob"), budget=Budget(scored_tokens=0))
    assert result.usage.scored_tokens == 0 and result.trajectory.done


def test_unknown_controller_and_options_list_the_choices():
    with pytest.raises(ConfigError, match="unknown controller 'bean'; choose one of: beam, best_first"):
        make_controller("bean")
    with pytest.raises(ConfigError, match="unknown option.*widht.*valid options: width"):
        make_controller("beam", widht=3)
    with pytest.raises(ConfigError, match="does not support early_stop='deepconf'.*adaptive, gate"):
        make_controller("step_best_of_n", early_stop="deepconf")
    with pytest.raises(ConfigError, match="unknown early-stopping rule 'fast'"):
        make_controller("step_best_of_n", early_stop="fast")
    for bad in (dict(k=0), dict(k=True)):
        with pytest.raises(ConfigError, match="k must be an int >= 1"):
            make_controller("step_best_of_n", **bad)
    assert all(isinstance(e, TtsearchError) for e in (ConfigError("x"), EnvError("y")))


def test_budget_shrinks_batches_then_stops_with_the_reason():
    # Each candidate may generate 4 tokens: 20 tokens afford 5 candidates in all.
    result, agent = run("step_best_of_n", k=8, budget=Budget(generated_tokens=20))
    assert result.usage.generated_tokens <= 20
    assert agent.calls[0].generated_tokens <= 5 * 4  # the first call was shrunk from 8 to 5
    assert result.info["budget_shrinks"]["generated_tokens"] >= 1
    if not result.trajectory.done:
        assert result.stop_reason == "budget:generated_tokens"


def test_shared_engine_is_counted_once():
    agent = FakeProposer(trap_table, shared_engine=True)
    result = make_controller("beam", width=2, expand=4).run(TASK, TrapEnv, agent, PA, Budget())
    assert result.usage.model_calls == agent.total().calls == agent.policy_stats.calls


def test_mcts_env_reward_is_opt_in_and_reported():
    plain, _ = run("mcts", expand=8)
    reward, _ = run("mcts", expand=8, use_env_reward=True)
    assert plain.selection_uses_env_reward is False and reward.selection_uses_env_reward is True
    assert reward.to_dict()["selection_uses_env_reward"] is True


def test_max_steps_ends_the_episode():
    result, _ = run("greedy", max_steps=1)
    assert len(result.trajectory.steps) == 1 and result.stop_reason == "max_steps"


@pytest.mark.parametrize("name", ["beam", "best_first", "mcts"])
@pytest.mark.parametrize("env_steps", [2, 3, 4, 6, 9])
def test_replay_steps_count_against_the_env_budget(name, env_steps):
    budget = Budget(env_steps=env_steps)
    result, _ = run(name, env=TrapNoSnapshot, budget=budget, **LOOKAHEAD[name])
    assert result.usage.env_steps <= env_steps
    unlimited, _ = run(name, env=TrapNoSnapshot, **LOOKAHEAD[name])
    if unlimited.usage.env_steps > env_steps:  # the limit really bound this search
        assert result.info["budget_shrinks"].get("env_steps") or result.stop_reason == "budget:env_steps"


@pytest.mark.parametrize("name", ["step_best_of_n", "beam", "best_first", "mcts"])
def test_horizon_reserve_finishes_the_episode_instead_of_starving(name):
    # max_new_tokens=1: every candidate costs exactly 1 generated + 1 scored token (worst case = actual)
    options = {"step_best_of_n": dict(k=8), "beam": dict(width=1, expand=8),
               "best_first": dict(expand=8), "mcts": dict(expand=8, simulations=1)}[name]
    budget = Budget(tokens=16)
    results = {}
    for horizon in (None, 2):
        agent = FakeProposer(trap_table, max_new_tokens=1)
        results[horizon] = make_controller(name, horizon=horizon, **options).run(TASK, TrapEnv, agent, PA, budget)
        assert results[horizon].usage.tokens <= 16
    assert not results[None].trajectory.done and results[None].stop_reason == "budget:tokens"
    assert results[2].trajectory.done and len(results[2].trajectory.steps) == 2
