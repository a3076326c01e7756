"""reasoning-gym tasks (countdown, maze, gsm_symbolic, ...) as multi-step environments.

    env = make("reasoning_gym", dataset="countdown")
    obs = env.reset(seed=5)          # seed = which generated item: create_dataset(name, seed=5, size=1)[0]
    env.step("36 + 29")              # an intermediate step (see below)
    env.step("answer: 15 - 4 + 95 + 36 - 32 + 29")   # the final answer ends the episode
    env.gold_actions()               # derived from the dataset's own answer

What a step is, per dataset (every dataset also takes the final ``answer: <text>``):
- **countdown**: combine two numbers still available, ``"A op B"`` (op one of + - * /,
  ``= C`` optional). Both are replaced by the result, which remembers its expression; the
  observation lists what is left. Gold: the dataset's expression, evaluated one operation at
  a time in Python's order, then ``answer: <expression>``.
- **maze**: ``move up|down|left|right`` walks through the dataset's grid; the observation
  gives the position, the open directions and the moves so far. Gold: a shortest path (BFS),
  then ``answer: <dataset answer>``.
- **gsm_symbolic**: ``calc: <arithmetic>`` is a calculator (+ - * / // % ** and brackets).
  Gold: the calculations in the dataset's worked solution (``answer_cot``), then
  ``answer: <dataset answer>``.
- **any other dataset**: only ``answer: <text>``.

Reward: 0 for intermediate steps; the final answer gets the dataset's own
``score_answer(answer, entry)`` (1.0 = correct; some datasets give partial credit, e.g.
countdown 0.05 for a well-formed wrong expression). ``terminated`` after the answer;
``max_steps`` truncates. Branching: deepcopy of the small episode state (``snapshot``).
"""

from __future__ import annotations

import ast
import copy
import operator
import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

from ttsearch.envs.adapters.base import AdapterEnv, Outcome, normalize_command
from ttsearch.envs.base import Task
from ttsearch.envs.errors import ConfigError, EnvError

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
_ANSWER = re.compile(r"^\s*(?:final\s+)?answer\s*[:=]\s*(.*)$", re.IGNORECASE | re.DOTALL)
DEFAULT_MAX_STEPS = {"countdown": 20, "maze": 60, "gsm_symbolic": 20}


def evaluate(expr: str) -> Fraction:
    """Exact value of an arithmetic expression (numbers, + - * / // % **, brackets)."""
    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return Fraction(str(node.value))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            value = ev(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (right.denominator != 1 or abs(right) > 64):
                raise ValueError("exponent must be a small integer")
            return Fraction(_OPS[type(node.op)](left, right))
        raise ValueError(f"unsupported syntax: {ast.dump(node)[:40]}")
    text = expr.replace("×", "*").replace("÷", "/").replace(",", "").strip()
    return ev(ast.parse(text, mode="eval"))


def fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


class ReasoningGymEnv(AdapterEnv):
    """A reasoning-gym dataset; ``reset(seed=k)`` plays its item generated with seed k."""

    has_final_answer = True  # the episode ends with ``answer: <text>``: best-of-N may vote on it

    def __init__(self, *, dataset: str = "countdown", config: Mapping[str, Any] | None = None,
                 max_steps: int | None = None, step_timeout_s: float | None = 30.0):
        super().__init__(max_steps=max_steps or DEFAULT_MAX_STEPS.get(dataset, 5), step_timeout_s=step_timeout_s)
        try:
            # optional benchmark dependency (make benchmarks): imported when the adapter is used
            import reasoning_gym
        except ModuleNotFoundError as err:
            raise EnvError(f"{err}; install it with: pip install 'ttsearch[benchmarks]'") from err
        self.dataset, self.config = dataset, dict(config or {})
        try:
            reasoning_gym.create_dataset(dataset, seed=0, size=1, **self.config)
        except Exception as err:  # unknown names raise ValueError, bad configs assorted errors
            raise ConfigError(f"reasoning-gym dataset {dataset!r} with config {self.config}: {err}") from err
        self._ds: Any = None
        self.entry: dict[str, Any] = {}
        self._state: dict[str, Any] = {}
        self.system_prompt = (
            f"Solve the {dataset} problem step by step, one step per turn. Finish with "
            "'answer: <your final answer>'."
        )

    # ---- episode -----------------------------------------------------------------------
    def _start(self, seed: int) -> Outcome:
        # optional benchmark dependency (make benchmarks): imported when the adapter is used
        import reasoning_gym

        self._ds = reasoning_gym.create_dataset(self.dataset, seed=seed, size=1, **self.config)
        self.entry = self._ds[0]
        meta = self.entry["metadata"]
        if self.dataset == "countdown":
            self._state = {"pool": [(Fraction(n), str(n)) for n in meta["numbers"]]}
        elif self.dataset == "maze":
            grid = meta["grid"]
            start = next((r, c) for r, row in enumerate(grid) for c, ch in enumerate(row) if ch == meta["start"])
            self._state = {"pos": start, "moves": 0}
        else:
            self._state = {}
        return Outcome(f"{self.entry['question']}\n\n{self._how_to()}", info={"dataset": self.dataset})

    def _how_to(self) -> str:
        if self.dataset == "countdown":
            return ("Steps: combine two available numbers with 'A op B' (op: + - * /). "
                    "Finish with 'answer: <expression>'. " + self._pool_text())
        if self.dataset == "maze":
            return "Steps: 'move up|down|left|right' to walk the maze. Finish with 'answer: <number>'. " + self._maze_text()
        if self.dataset == "gsm_symbolic":
            return "Steps: 'calc: <arithmetic>' to compute. Finish with 'answer: <number>'."
        return "Finish with 'answer: <your answer>'."

    def _act(self, action: str) -> Outcome:
        match = _ANSWER.match(action.strip())
        if match:
            answer = match.group(1).strip()
            score = float(self._ds.score_answer(answer, self.entry))
            return Outcome(f"Your answer: {answer}. Score: {score:g}.", reward=score, terminated=True,
                           info={"score": score, "success": score >= 1.0, "answer": answer})
        handler = {"countdown": self._countdown, "maze": self._maze, "gsm_symbolic": self._calc}.get(self.dataset)
        if handler is None:
            return Outcome("Give your final answer as 'answer: <your answer>'.", invalid=True)
        return handler(action)

    def _pool_text(self) -> str:
        return "Numbers available: " + ", ".join(f"{fmt(v)} (= {e})" if e != fmt(v) else fmt(v)
                                                 for v, e in self._state["pool"]) + "."

    def _countdown(self, action: str) -> Outcome:
        text = action.split("=")[0].strip()
        m = re.fullmatch(r"\s*(-?\d+(?:/\d+)?)\s*([-+*/×÷])\s*(-?\d+(?:/\d+)?)\s*", text)
        if not m:
            return Outcome(f"Could not read {action!r}: write 'A op B' with two available numbers. "
                           + self._pool_text(), invalid=True)
        a, op, b = Fraction(m.group(1)), m.group(2).replace("×", "*").replace("÷", "/"), Fraction(m.group(3))
        pool = list(self._state["pool"])
        picked = []
        for value in (a, b):
            idx = next((i for i, (v, _) in enumerate(pool) if v == value), None)
            if idx is None:
                return Outcome(f"{fmt(value)} is not available. " + self._pool_text(), invalid=True)
            picked.append(pool.pop(idx))
        if op == "/" and b == 0:
            return Outcome("Division by zero is not allowed. " + self._pool_text(), invalid=True)
        result = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else Fraction(0)}[op]
        expr = f"({picked[0][1]} {op} {picked[1][1]})"
        pool.append((result, expr))
        self._state["pool"] = pool
        target = Fraction(self.entry["metadata"]["target"])
        hit = " That is the target." if result == target else ""
        return Outcome(f"{fmt(a)} {op} {fmt(b)} = {fmt(result)}.{hit} " + self._pool_text())

    def _maze_text(self) -> str:
        meta = self.entry["metadata"]
        grid, (r, c) = meta["grid"], self._state["pos"]
        open_dirs = [d for d, (dr, dc) in _MOVES.items() if grid[r + dr][c + dc] != meta["wall"]]
        where = " (the goal)" if grid[r][c] == meta["goal"] else (" (the start)" if grid[r][c] == meta["start"] else "")
        return (f"You are at row {r}, column {c}{where}; moves so far: {self._state['moves']}; "
                f"open directions: {', '.join(open_dirs) or 'none'}.")

    def _maze(self, action: str) -> Outcome:
        words = normalize_command(action).split()
        direction = words[-1] if words and (len(words) == 1 or words[0] in ("move", "go")) else ""
        if direction not in _MOVES:
            return Outcome(f"Could not read {action!r}: write 'move up|down|left|right'. " + self._maze_text(), invalid=True)
        meta = self.entry["metadata"]
        (r, c), (dr, dc) = self._state["pos"], _MOVES[direction]
        if meta["grid"][r + dr][c + dc] == meta["wall"]:
            return Outcome(f"A wall blocks the way {direction}. " + self._maze_text(), invalid=True)
        self._state["pos"] = (r + dr, c + dc)
        self._state["moves"] += 1
        return Outcome(f"You move {direction}. " + self._maze_text())

    def _calc(self, action: str) -> Outcome:
        m = re.fullmatch(r"\s*(?:calc|compute|calculate)\s*[:]?\s*(.+?)\s*", action, re.IGNORECASE | re.DOTALL)
        if not m:
            return Outcome("Write 'calc: <arithmetic>' or 'answer: <number>'.", invalid=True)
        try:
            value = evaluate(m.group(1).split("=")[0])
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError) as err:
            return Outcome(f"Cannot compute {m.group(1)!r}: {err}.", invalid=True)
        shown = fmt(value) if value.denominator == 1 else f"{fmt(value)} ≈ {float(value):.6g}"
        return Outcome(f"{m.group(1).split('=')[0].strip()} = {shown}")

    # ---- branching and gold ------------------------------------------------------------
    def snapshot(self) -> Any:
        return (copy.deepcopy(self._state), self._ds, self.entry, self._bookkeeping())

    def restore(self, snapshot: Any) -> None:
        state, ds, entry, book = snapshot
        self._state, self._ds, self.entry = copy.deepcopy(state), ds, entry
        self._restore_bookkeeping(book)

    def gold_actions(self) -> Sequence[str] | None:
        if not self.entry:
            return None
        answer, meta = str(self.entry["answer"]), self.entry["metadata"]
        steps: list[str] = []
        if self.dataset == "countdown":
            steps = _countdown_steps(answer)
        elif self.dataset == "maze":
            steps = [f"move {d}" for d in _maze_path(meta)]
        elif self.dataset == "gsm_symbolic":
            steps = _cot_calcs(str(meta.get("answer_cot", "")))
        return [*steps, f"answer: {answer}"]


def _countdown_steps(expression: str) -> list[str]:
    """The binary operations of the expression in evaluation order, as 'A op B' steps."""
    steps: list[str] = []

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _SYMBOL:
            left, right = walk(node.left), walk(node.right)
            steps.append(f"{fmt(left)} {_SYMBOL[type(node.op)]} {fmt(right)}")
            return Fraction(_OPS[type(node.op)](left, right))
        raise ValueError("unsupported countdown expression")
    try:
        walk(ast.parse(expression, mode="eval").body)
    except (ValueError, SyntaxError, ZeroDivisionError):
        return []
    return steps


def _maze_path(meta: Mapping[str, Any]) -> list[str]:
    grid = meta["grid"]
    cells = {(r, c): ch for r, row in enumerate(grid) for c, ch in enumerate(row)}
    start = next(p for p, ch in cells.items() if ch == meta["start"])
    prev: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        pos = queue.popleft()
        if cells[pos] == meta["goal"]:
            path = []
            while prev[pos] is not None:
                pos, d = prev[pos]  # type: ignore[misc]
                path.append(d)
            return path[::-1]
        for d, (dr, dc) in _MOVES.items():
            nxt = (pos[0] + dr, pos[1] + dc)
            if cells.get(nxt, meta["wall"]) != meta["wall"] and nxt not in prev:
                prev[nxt] = (pos, d)
                queue.append(nxt)
    return []


def _cot_calcs(cot: str) -> list[str]:
    """'calc:' steps for the checked equations 'lhs = rhs' of a worked solution."""
    steps = []
    for lhs, rhs in re.findall(r"([\d\.\s\+\-\*/x×÷\(\)]*\d[\d\.\s\+\-\*/x×÷\(\)]*)=\s*\$?(-?[\d,]*\.?\d+)", cot):
        expr = re.sub(r"(?<=[\d\)\s])x(?=[\s\d\(])", "*", lhs).strip()
        if not re.search(r"[-+*/×÷]", expr):
            continue
        try:
            if evaluate(expr) == Fraction(rhs.replace(",", "")):
                steps.append(f"calc: {expr}")
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError):
            continue
    return steps


def reasoning_gym_tasks(*, split: str = "test", dataset: str = "countdown", n: int = 20,
                        config: Mapping[str, Any] | None = None, **env_kwargs: Any) -> Iterator[Task]:
    """Item seeds per split: train 0.., valid 100000.., test 200000.."""
    base = {"train": 0, "valid": 100_000, "test": 200_000}.get(split)
    if base is None:
        raise ConfigError(f"unknown split {split!r}; choose one of: test, train, valid")
    kwargs = {"dataset": dataset, "config": dict(config or {}), **env_kwargs}
    for seed in range(base, base + n):
        yield Task(env="reasoning_gym", id=f"{dataset}/seed{seed}", seed=seed, kwargs=kwargs, split=split)
