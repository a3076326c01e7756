"""Property tests (hypothesis): random budgets × random small environments × every controller.

Invariants: no token/call/env-step limit is ever exceeded; the usage ledger equals the sum of
the engines' per-call stats deltas (logged independently by the fake proposer); a fixed seed
reproduces a search exactly; snapshot and replay branching give the same search.
"""

from __future__ import annotations

import hashlib
import math
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import CONTROLLERS, Budget, make_controller
from ttsearch.search.testing import Choice, FakeProposer

SCORERS = {name: make_scorer(name) for name in ("progress_advantage", "policy_logprob", "self_certainty")}


def _h(*parts) -> float:
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class RandomTreeEnv(Env):
    """A random stochastic tree MDP: actions slip to a random other action with prob ``slip``
    (drawn from the env's own RNG, seeded by reset), episodes end at ``depth`` or at random
    hash-chosen nodes, and some end nodes pay reward 1."""

    deterministic = True
    system_prompt = "random tree"

    def __init__(self, world: int = 0, branching: int = 2, depth: int = 3, slip: float = 0.0):
        self.world, self.branching, self.depth, self.slip = world, branching, depth, slip
        self.actions = tuple(f"a{i}" for i in range(branching))
        self.rng = random.Random(0)
        self.path: tuple[str, ...] = ()
        self.done = False

    def _obs(self, prefix: str = "") -> Observation:
        return Observation(prefix + "at " + "/".join(self.path), self.actions)

    def reset(self, *, seed=None):
        self.rng, self.path, self.done = random.Random(seed), (), False
        return self._obs()

    def step(self, action):
        assert not self.done, "stepped a finished episode"
        if action not in self.actions:
            self.path += ("?",)
            prefix = "invalid action. "
        else:
            if self.rng.random() < self.slip:
                action = self.rng.choice(self.actions)
            self.path += (action,)
            prefix = ""
        end = len(self.path) >= self.depth or _h(self.world, self.path, "end") < 0.15
        reward = 1.0 if end and _h(self.world, self.path, "r") < 0.4 else 0.0
        self.done = end
        return StepResult(self._obs(prefix), reward, end, False)

    def snapshot(self):
        return (self.path, self.done, self.rng.getstate())

    def restore(self, snapshot):
        self.path, self.done, state = snapshot
        self.rng.setstate(state)


class RandomTreeReplay(RandomTreeEnv):
    snapshot = Env.snapshot
    restore = Env.restore


def random_table(world: int):
    def table(state):
        text = state.observation.text
        actions = state.observation.admissible_actions
        logits = [3 * _h(world, text, a, "lp") for a in actions]
        norm = math.log(sum(math.exp(v) for v in logits))
        return [Choice(a, v - norm, 4 * _h(world, text, a, "adv") - 2) for a, v in zip(actions, logits)]
    return table


CONTROLLER_KWARGS = {
    "greedy": st.fixed_dictionaries({"score_steps": st.booleans()}),
    "trajectory_best_of_n": st.fixed_dictionaries({"n": st.integers(1, 5), "early_stop": st.sampled_from(
        [None, "adaptive", {"name": "deepconf", "warmup": 2, "percentile": 50}])}),
    "step_best_of_n": st.fixed_dictionaries({"k": st.integers(1, 5), "early_stop": st.sampled_from(
        [None, {"name": "adaptive", "wave": 2, "min_samples": 2, "patience": 1}, {"name": "gate", "threshold": 0.6}])}),
    "beam": st.fixed_dictionaries({"width": st.integers(1, 3), "expand": st.integers(1, 3), "early_stop": st.sampled_from(
        [None, "gate", {"name": "deepconf", "threshold": -1.0}])}),
    "best_first": st.fixed_dictionaries({"expand": st.integers(1, 3), "batch": st.integers(1, 3)}),
    "mcts": st.fixed_dictionaries({"simulations": st.integers(1, 6), "expand": st.integers(1, 3),
                                   "batch": st.integers(1, 3), "use_env_reward": st.booleans(),
                                   "commit": st.sampled_from(["value", "visits"])}),
}


@st.composite
def scenarios(draw):
    name = draw(st.sampled_from(sorted(CONTROLLERS)))
    kwargs = draw(CONTROLLER_KWARGS[name])
    kwargs["seed"] = draw(st.integers(0, 3))
    if name in ("step_best_of_n", "beam", "best_first", "mcts"):
        kwargs["horizon"] = draw(st.none() | st.integers(1, 6))
    env = dict(world=draw(st.integers(0, 10_000)), branching=draw(st.integers(1, 3)),
               depth=draw(st.integers(1, 5)), slip=draw(st.sampled_from([0.0, 0.3])))
    limit = st.none() | st.integers(0, 120)
    budget = dict(tokens=draw(st.none() | st.integers(0, 200)), generated_tokens=draw(limit), scored_tokens=draw(limit),
                  model_calls=draw(st.none() | st.integers(0, 30)), env_steps=draw(st.none() | st.integers(0, 25)))
    env["replay"] = draw(st.booleans())  # branch by replay instead of snapshot
    return name, kwargs, env, budget, draw(st.integers(1, 4)), draw(st.sampled_from(sorted(SCORERS)))


def _run(name, kwargs, env_kwargs, budget, max_new, scorer, env_cls=None):
    env_kwargs = dict(env_kwargs)
    replay = env_kwargs.pop("replay", False)
    env_cls = env_cls or (RandomTreeReplay if replay else RandomTreeEnv)
    agent = FakeProposer(random_table(env_kwargs["world"]), max_new_tokens=max_new)
    task = Task(env="random-tree", id=f"w{env_kwargs['world']}", seed=7)
    result = make_controller(name, **kwargs).run(task, lambda: env_cls(**env_kwargs), agent, SCORERS[scorer], budget)
    return result, agent


def _feasible(name, kwargs, budget, max_new, scorer):
    scores = name != "greedy" or kwargs.get("score_steps")
    needs_ref = scores and scorer == "progress_advantage"
    return not ((budget.tokens is not None and budget.tokens < max_new * (2 if needs_ref else 1))
                or (budget.generated_tokens is not None and budget.generated_tokens < max_new)
                or (needs_ref and budget.scored_tokens is not None and budget.scored_tokens < max_new)
                or (budget.model_calls is not None and budget.model_calls < (2 if needs_ref else 1))
                or (budget.env_steps is not None and budget.env_steps < 1))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_limit_is_ever_exceeded_and_the_ledger_is_exact(scenario):
    name, kwargs, env_kwargs, budget_kwargs, max_new, scorer = scenario
    budget = Budget(**budget_kwargs)
    if not _feasible(name, kwargs, budget, max_new, scorer):
        try:
            _run(name, kwargs, env_kwargs, budget, max_new, scorer)
        except ConfigError as err:
            assert "impossible budget" in str(err)
            return
        raise AssertionError("an impossible budget was accepted")
    result, agent = _run(name, kwargs, env_kwargs, budget, max_new, scorer)
    usage = result.usage
    assert usage.exceeded(budget) == [], (usage, budget)
    total = agent.total()
    assert (usage.generated_tokens, usage.scored_tokens, usage.model_calls, usage.prompt_tokens) == (
        total.generated_tokens, total.scored_tokens, total.calls, total.prompt_tokens)
    assert usage.proposals == len(agent.calls)
    # every step of the returned trajectory was executed and recorded
    assert len(result.trajectory.steps) == sum(1 for _, s in result.tree.graph.nodes(data="status") if s == "chosen")
    assert result.trajectory.done or result.stop_reason != "done"
    if result.stop_reason.startswith("budget:"):
        assert result.stop_reason.split(":")[1] in ("tokens", "generated_tokens", "scored_tokens", "model_calls", "env_steps")


@settings(max_examples=40, deadline=None)
@given(scenarios())
def test_a_fixed_seed_reproduces_the_search(scenario):
    name, kwargs, env_kwargs, budget_kwargs, max_new, scorer = scenario
    budget = Budget(**budget_kwargs)
    if not _feasible(name, kwargs, budget, max_new, scorer):
        return
    a, _ = _run(name, kwargs, env_kwargs, budget, max_new, scorer)
    b, _ = _run(name, kwargs, env_kwargs, budget, max_new, scorer)
    assert a.trajectory == b.trajectory and a.tree.to_dict() == b.tree.to_dict()
    assert (a.usage.tokens, a.usage.env_steps, a.stop_reason) == (b.usage.tokens, b.usage.env_steps, b.stop_reason)


@settings(max_examples=40, deadline=None)
@given(scenarios().filter(lambda s: s[0] in ("beam", "best_first", "mcts")))
def test_snapshot_and_replay_give_the_same_search(scenario):
    name, kwargs, env_kwargs, budget_kwargs, max_new, scorer = scenario
    budget = Budget(**{**budget_kwargs, "env_steps": None})  # replay spends extra env steps
    if not _feasible(name, kwargs, budget, max_new, scorer):
        return
    snap, _ = _run(name, kwargs, env_kwargs, budget, max_new, scorer, env_cls=RandomTreeEnv)
    replay, _ = _run(name, kwargs, env_kwargs, budget, max_new, scorer, env_cls=RandomTreeReplay)
    assert (snap.branching, replay.branching) == ("snapshot", "replay")
    assert snap.trajectory == replay.trajectory and snap.tree.to_dict() == replay.tree.to_dict()
    assert replay.usage.env_steps - replay.usage.replayed_steps == snap.usage.env_steps
