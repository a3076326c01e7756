"""MiniGrid / BabyAI as a text game: the agent's own egocentric partial view, in words.

    env = make("minigrid", env_id="BabyAI-GoToRedBallGrey-v0")
    obs = env.reset(seed=4)              # seed = MiniGrid's reset seed (the layout)
    env.step("turn left"); env.step("go forward")
    snap = env.snapshot(); ...; env.restore(snap)     # deepcopy of the whole env (incl. its RNG)
    env.gold_actions()                   # BabyAI's bot (BabyAI levels) or a BFS planner (others)

Observation text (built from exactly what MiniGrid gives the agent: the ``view x view`` encoded
image after occlusion, the compass direction, the mission string, and what it carries):

    Mission: go to the red ball
    You are facing east. You are carrying nothing.
    In front of you: a grey wall.
    You see:
    - a red ball 2 steps forward, 1 step left
    - a closed yellow door 3 steps forward, 2 steps right
    - walls: 3 steps forward, 1 step left, 2 steps right

Positions are relative to the agent: "forward" along its heading, "left"/"right" across it;
walls are summarised by the nearest wall straight ahead and on each side. A line of feedback
says what the last action did ("You pick up the red key.", "You can't move: a wall is in
the way.").

Actions: "turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done"
(a few aliases are accepted; anything else is answered with feedback and
``info["invalid_action"] = True`` without spending a MiniGrid step).

Reward: MiniGrid pays ``1 - 0.9 * steps / max_steps`` on success. ttsearch counts success as
reward >= 1, so the step reward is 1.0 on success (MiniGrid's and BabyAI's success criterion:
a positive reward) and MiniGrid's own reward is kept in ``info["native_reward"]``.
``terminated``/``truncated`` are MiniGrid's (its ``max_steps``).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from ttsearch.envs.adapters.base import AdapterEnv, Outcome, normalize_command
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, EnvError

ACTIONS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle", "done")
ALIASES = {"left": "turn left", "right": "turn right", "forward": "go forward", "move forward": "go forward",
           "pickup": "pick up", "pick": "pick up", "open": "toggle", "use": "toggle"}
DIRECTIONS = ("east", "south", "west", "north")
OBJECTS = ("unseen", "empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava", "agent")
COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
DOOR_STATES = ("open", "closed", "locked")

PRESETS = ("BabyAI-GoToRedBallGrey-v0", "BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0",
           "BabyAI-OpenDoor-v0", "MiniGrid-DoorKey-5x5-v0", "MiniGrid-Empty-6x6-v0")


def _steps(n: int, word: str) -> str:
    return f"{n} step{'s' if n != 1 else ''} {word}"


def _where(forward: int, lateral: int) -> str:
    parts = []
    if forward:
        parts.append(_steps(forward, "forward"))
    if lateral:
        parts.append(_steps(abs(lateral), "right" if lateral > 0 else "left"))
    return ", ".join(parts) or "here"


def describe_cell(obj: int, color: int, state: int) -> str:
    name = OBJECTS[obj]
    if name == "door":
        return f"a {DOOR_STATES[state]} {COLORS[color]} door"
    if name in ("key", "ball", "box"):
        return f"a {COLORS[color]} {name}"
    if name == "goal":
        return "the green goal square"
    if name == "lava":
        return "lava"
    if name == "wall":
        return f"a {COLORS[color]} wall"
    return name


def describe_object(obj: Any) -> str:
    if obj is None:
        return "nothing"
    if obj.type == "door":
        state = "open" if obj.is_open else ("locked" if obj.is_locked else "closed")
        return f"the {state} {obj.color} door"
    if obj.type in ("key", "ball", "box"):
        return f"the {obj.color} {obj.type}"
    color = COLORS.index(obj.color) if obj.color in COLORS else COLORS.index("grey")
    return describe_cell(OBJECTS.index(obj.type), color, 0)


def render_view(image: Any, direction: int, mission: str, carrying: Any) -> str:
    """The agent's view as text (see the module docstring)."""
    view = image.shape[0]
    cx, cy = view // 2, view - 1  # where the agent stands in its own view, facing "up"
    seen, walls = [], {}
    for j in range(view):
        for i in range(view):
            obj, color, state = (int(v) for v in image[i, j])
            forward, lateral = cy - j, i - cx
            if (forward, lateral) == (0, 0) or OBJECTS[obj] in ("unseen", "empty", "floor"):
                continue
            if OBJECTS[obj] == "wall":
                # nearest wall straight ahead, and on each side in the agent's row
                for key, hit in (("forward", lateral == 0), ("left", forward == 0 and lateral < 0),
                                 ("right", forward == 0 and lateral > 0)):
                    dist = forward if key == "forward" else abs(lateral)
                    if hit and (key not in walls or dist < walls[key]):
                        walls[key] = dist
                continue
            seen.append((forward + abs(lateral), forward, lateral, describe_cell(obj, color, state)))
    front = image[cx, cy - 1]
    front_obj = OBJECTS[int(front[0])]
    front_text = "nothing (empty floor)" if front_obj in ("empty", "floor") else describe_cell(*(int(v) for v in front))
    lines = [f"Mission: {mission}",
             f"You are facing {DIRECTIONS[direction]}. You are carrying {describe_object(carrying).replace('the ', 'a ', 1) if carrying else 'nothing'}.",
             f"In front of you: {front_text}."]
    items = [f"- {text} {_where(f, lat)}" for _, f, lat, text in sorted(seen)]
    if walls:
        items.append("- walls: " + ", ".join(_steps(walls[k], k) for k in ("forward", "left", "right") if k in walls))
    lines.append("You see:" if items else "You see nothing else.")
    lines += items
    return "\n".join(lines)


class MiniGridEnv(AdapterEnv):
    """A MiniGrid/BabyAI environment id; ``reset(seed=k)`` = MiniGrid's ``reset(seed=k)``."""

    def __init__(self, *, env_id: str = "BabyAI-GoToRedBallGrey-v0", max_steps: int | None = None,
                 step_timeout_s: float | None = 30.0, bfs_limit: int = 50_000, **env_kwargs: Any):
        try:
            # optional benchmark dependency (make benchmarks): imported when the adapter is used
            import gymnasium
            import minigrid  # noqa: F401  (registers the MiniGrid/BabyAI ids)
        except ModuleNotFoundError as err:
            raise EnvError(f"{err}; install it with: pip install 'ttsearch[benchmarks]'") from err
        try:
            self._env = gymnasium.make(env_id, **env_kwargs).unwrapped
        except gymnasium.error.Error as err:
            raise ConfigError(f"unknown MiniGrid env id {env_id!r} ({err}); e.g. {', '.join(PRESETS)}") from err
        # Agent turns (invalid ones too) are capped at twice MiniGrid's own step limit (BabyAI
        # levels only know theirs after reset).
        super().__init__(max_steps=max_steps or 10**9, step_timeout_s=step_timeout_s)
        self._auto_limit = max_steps is None
        self.env_id, self.bfs_limit = env_id, bfs_limit
        self._obs: Any = None
        self._gold: list[str] | None = None
        self.system_prompt = (
            "You are an agent in a grid world, seeing only a small area in front of you. Complete "
            "the mission. Reply with exactly one action per turn: turn left, turn right, go forward, "
            "pick up, drop, toggle (open/close/unlock the door in front of you, open a box), done."
        )

    def _start(self, seed: int) -> Outcome:
        self._obs, _ = self._env.reset(seed=seed)
        self._gold = None
        if self._auto_limit:
            self.max_steps = 2 * max(int(self._env.max_steps), 1)
        return Outcome(self._text(), admissible=ACTIONS, info={"mission": self._env.mission})

    def _text(self, feedback: str = "") -> str:
        env = self._env
        view = render_view(self._obs["image"], int(self._obs["direction"]), self._obs["mission"], env.carrying)
        return f"{feedback}\n{view}" if feedback else view

    def _act(self, action: str) -> Outcome:
        name = normalize_command(action)
        name = ALIASES.get(name, name)
        if name not in ACTIONS:
            fb = f"Unknown action {action!r}. Valid actions: {', '.join(ACTIONS)}."
            return Outcome(self._text(fb), invalid=True, admissible=ACTIONS)
        env = self._env
        before = (tuple(env.agent_pos), env.agent_dir, env.carrying, describe_object(env.grid.get(*env.front_pos)))
        obs, native, terminated, truncated, _ = env.step(ACTIONS.index(name))
        self._obs = obs
        success = bool(terminated and native > 0)
        info = {"native_reward": float(native), "success": success, "minigrid_truncated": bool(truncated)}
        out_text = self._text(self._feedback(name, before))
        # MiniGrid's own time limit truncates; our max_steps also counts invalid turns.
        return Outcome(out_text, reward=1.0 if success else 0.0, terminated=bool(terminated),
                       truncated=bool(truncated), admissible=ACTIONS, info=info)

    def _feedback(self, name: str, before: tuple[Any, ...]) -> str:
        env = self._env
        pos, direction, carrying, front_before = before
        if name in ("turn left", "turn right"):
            return f"You turn {name.split()[1]}."
        if name == "go forward":
            return "You move forward." if tuple(env.agent_pos) != pos else f"You can't move: {front_before} is in the way."
        if name == "pick up":
            if env.carrying is not carrying:
                return f"You pick up {describe_object(env.carrying)}."
            return "You can't pick anything up here." if carrying is None else f"You are already carrying {describe_object(carrying)}."
        if name == "drop":
            return f"You drop {describe_object(carrying)}." if carrying is not None and env.carrying is None else "You can't drop anything here."
        if name == "toggle":
            after = describe_object(env.grid.get(*env.front_pos))
            return f"Nothing happens ({front_before})." if after == front_before else f"{front_before.capitalize()} is now {after.removeprefix('the ')}."
        return "You declare that you are done."

    # ---- branching and gold ------------------------------------------------------------
    def snapshot(self) -> Any:
        return copy.deepcopy((self._env, self._obs, self._gold, self._bookkeeping()))

    def restore(self, snapshot: Any) -> None:
        env, obs, gold, book = copy.deepcopy(snapshot)
        self._env, self._obs, self._gold = env, obs, gold
        self._restore_bookkeeping(book)

    def gold_actions(self) -> Sequence[str] | None:
        """From ``reset(seed)``: BabyAI's bot on BabyAI levels, else breadth-first search."""
        if self._gold is None:
            fresh = copy.deepcopy(self._env)
            fresh.reset(seed=self._seed)
            plan = _bot_plan(fresh) if hasattr(fresh, "instrs") else None
            if plan is None:
                fresh.reset(seed=self._seed)
                plan = _bfs_plan(fresh, self.bfs_limit)
            self._gold = plan
        return None if self._gold is None else list(self._gold)


def _bot_plan(env: Any) -> list[str] | None:
    # optional benchmark dependency (make benchmarks): imported when the adapter is used
    from minigrid.utils.baby_ai_bot import BabyAIBot

    bot, plan = BabyAIBot(env), []
    try:
        for _ in range(env.max_steps):
            action = int(bot.replan())
            plan.append(ACTIONS[action])
            _, reward, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                return plan if terminated and reward > 0 else None
    except Exception:  # the bot fails on a few levels (its docstring lists them): fall back to BFS
        return None
    return None


def _state_key(env: Any) -> tuple[Any, ...]:
    carrying = None if env.carrying is None else env.carrying.encode()
    return (tuple(env.agent_pos), env.agent_dir, carrying, env.grid.encode().tobytes())


def _bfs_plan(env: Any, limit: int) -> list[str] | None:
    """Shortest action sequence to success, searching over deep copies of the env."""
    start = copy.deepcopy(env)
    seen = {_state_key(start)}
    queue: deque[tuple[Any, list[str]]] = deque([(start, [])])
    while queue and len(seen) < limit:
        node, path = queue.popleft()
        for action in range(6):  # "done" never changes the state in MiniGrid
            child = copy.deepcopy(node)
            _, reward, terminated, truncated, _ = child.step(action)
            if terminated:
                if reward > 0:
                    return [*path, ACTIONS[action]]
                continue
            if truncated:
                continue
            key = _state_key(child)
            if key not in seen:
                seen.add(key)
                queue.append((child, [*path, ACTIONS[action]]))
    return None


def minigrid_tasks(*, split: str = "test", env_id: str = PRESETS[0], n: int = 20, **env_kwargs: Any) -> Iterator[Task]:
    """Seeds per split: train 0.., valid 100000.., test 200000.. (MiniGrid layouts are seed-generated)."""
    base = {"train": 0, "valid": 100_000, "test": 200_000}.get(split)
    if base is None:
        raise ConfigError(f"unknown split {split!r}; choose one of: test, train, valid")
    for seed in range(base, base + n):
        yield Task(env="minigrid", id=f"{env_id}/seed{seed}", seed=seed, kwargs={"env_id": env_id, **env_kwargs},
                   split=split)
