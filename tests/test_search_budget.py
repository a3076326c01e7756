"""Budget validation and parsing, the Usage arithmetic, and Ledger.afford's shrinking by hand."""

from __future__ import annotations

import pytest

from ttsearch.envs.base import Env, Observation, StepResult, Task, Trajectory
from ttsearch.envs.errors import BudgetExhausted, ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import Allowance, Budget, Ledger, Usage
from ttsearch.search.base import Controller
from ttsearch.search.testing import Choice, FakeProposer


def test_parse_and_validate():
    assert Budget.parse("tokens=240, env_steps=50,wall_seconds=1.5") == Budget(tokens=240, env_steps=50, wall_seconds=1.5)
    assert Budget.parse("") == Budget()
    for text, match in [("tokenz=3", "unknown budget limit 'tokenz'; choose one of"),
                        ("tokens", "must look like name=value"), ("tokens=abc", "must be a number")]:
        with pytest.raises(ConfigError, match=match):
            Budget.parse(text)
    for bad in (dict(tokens=-1), dict(model_calls=1.5), dict(env_steps=True), dict(wall_seconds=0)):
        with pytest.raises(ConfigError, match="budget"):
            Budget(**bad)


def test_usage_exceeded_and_sum():
    u = Usage(generated_tokens=10, scored_tokens=5, model_calls=2, env_steps=3, wall_seconds=9.0)
    assert u.tokens == 15
    assert u.exceeded(Budget(tokens=14, model_calls=2, wall_seconds=1.0)) == ["tokens"]
    assert u.exceeded(Budget(wall_seconds=1.0), include_wall=True) == ["wall_seconds"]
    assert (u + u).tokens == 30 and (u + u).env_steps == 6


def ledger(budget, scores_reference=True, max_new=4):
    agent = FakeProposer(lambda s: [Choice("go", 0.0)], max_new_tokens=max_new)
    return Ledger(agent, budget, scores_reference=scores_reference), agent


def test_afford_shrinks_k_first_then_states():
    # worst case per candidate: 4 generated + 4 scored = 8 tokens
    led, _ = ledger(Budget(tokens=8 * 6))
    assert led.afford(2, 3) == Allowance(2, 3)
    assert led.afford(2, 4) == Allowance(2, 3, "tokens")  # 8 candidates do not fit, 6 do
    assert led.afford(7, 4) == Allowance(6, 1, "tokens")  # not even one each: fewer states
    assert led.afford(3, 5, greedy=True) == Allowance(3, 1)
    led, _ = ledger(Budget(tokens=8 * 6), scores_reference=False)
    assert led.afford(3, 4) == Allowance(3, 4)  # without the reference a candidate costs 4


def test_afford_plans_env_steps_and_calls():
    led, _ = ledger(Budget(env_steps=5))
    assert led.afford(2, 3, env_per_candidate=1) == Allowance(2, 2, "env_steps")
    assert led.afford(2, 3, env_per_state=1, env_per_candidate=1) == Allowance(2, 1, "env_steps")  # 2 + 2 <= 5
    assert led.afford(1, 1, env_per_candidate=2, env_reserved=4) == Allowance(0, 0, "env_steps")
    led, _ = ledger(Budget(model_calls=1))
    assert led.afford(1, 1) == Allowance(0, 0, "model_calls")  # sampling + scoring are two calls


def test_ledger_reads_engine_deltas_only_from_its_start():
    budget = Budget(generated_tokens=100)
    led, agent = ledger(budget)
    state = Trajectory(Task("x", "x"), Observation("o", ("go",)))
    agent.propose([state], k=2, seed=0)  # before a second ledger starts: not its usage
    later = Ledger(agent, budget, scores_reference=True)
    agent.propose([state], k=3, seed=1)
    total = agent.total()
    assert led.usage().generated_tokens == total.generated_tokens
    assert later.usage().generated_tokens == agent.calls[1].generated_tokens
    assert later.remaining("generated_tokens") == 100 - agent.calls[1].generated_tokens


def test_reserve_keeps_budget_to_finish_then_allows_one_candidate():
    # 8 tokens per candidate (4 generated + 4 scored), 2 calls per turn
    led, _ = ledger(Budget(tokens=8 * 10))
    assert led.afford(1, 8, reserve_steps=4) == Allowance(1, 6, "tokens")  # 10 - 4 reserved
    assert led.afford(1, 8, reserve_steps=9) == Allowance(1, 1, "tokens")  # inside the reserve: one
    assert led.afford(1, 8, reserve_steps=0) == Allowance(1, 8)



class Corridor(Env):
    """Ten "go" steps to the end; rewarded only there."""

    deterministic = True
    system_prompt = "Walk to the end."

    def reset(self, *, seed=None):
        self.position = 0
        return Observation("at 0", ("go",))

    def step(self, action):
        self.position += 1
        done = self.position >= 10
        return StepResult(Observation(f"at {self.position}", ("go",)), float(done), done, False)


class Careless(Controller):
    """Proposes without checking the allowance: the budget, not the controller, stops it."""

    name = "careless"

    def _run(self, ctx):
        env = ctx.make_env()
        obs = env.reset(seed=ctx.task.seed)
        ctx.start_tree(obs, env.system_prompt)
        node, trajectory = 0, Trajectory(ctx.task, obs, (), env.system_prompt)
        while not trajectory.done:
            allowance = ctx.afford(1, 1, greedy=True, env_per_state=1)
            cand = ctx.propose([trajectory], allowance, key=("careless", node), greedy=True)[0][0]
            result = env.step(cand.action)
            ctx.ledger.charge_env(1)
            node = ctx.record(node, trajectory.observation, cand, ctx.score(cand), result)
            trajectory = trajectory.extended(ctx.tree.step(node))
        return ctx.finish(trajectory, "done", node=node)


def test_a_controller_that_lets_budget_exhausted_propagate_returns_its_deepest_path():
    """Proposing with an empty allowance raises BudgetExhausted; run() turns it into the deepest
    executed path, with the limit that ended it as the stop reason."""
    agent = FakeProposer(lambda state: [Choice("go", -0.1)], max_new_tokens=2)
    task = Task(env="corridor", id="corridor-0", seed=0)
    result = Careless().run(task, Corridor, agent, make_scorer("policy_logprob"), Budget(model_calls=3))
    assert result.stop_reason == "budget:model_calls"
    assert [s.action for s in result.trajectory.steps] == ["go"] * 3
    assert result.usage.model_calls == 3 and not result.success
    unbounded = Careless().run(task, Corridor, agent, make_scorer("policy_logprob"), Budget())
    assert unbounded.stop_reason == "done" and len(unbounded.trajectory.steps) == 10


def test_proposing_with_an_empty_allowance_names_the_limit():
    agent = FakeProposer(lambda state: [Choice("go", -0.1)])
    ctx_result = {}

    class Probe(Careless):
        def _run(self, ctx):
            env = ctx.make_env()
            obs = env.reset(seed=0)
            with pytest.raises(BudgetExhausted, match="scored_tokens"):
                ctx.propose([Trajectory(ctx.task, obs, (), "")], Allowance(0, 0, "scored_tokens"), key=(0,))
            ctx_result["raised"] = True
            return ctx.finish(Trajectory(ctx.task, obs, (), ""), "done")

    Probe().run(Task(env="corridor", id="c", seed=0), Corridor, agent, make_scorer("policy_logprob"), Budget())
    assert ctx_result == {"raised": True}
