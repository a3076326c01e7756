"""Maze layouts and their dynamics: the grid, the moves, exact transitions, the observation text.

    layout = generate_layout(7, size=5)             # reproducible from the seed; start reaches goal
    transitions(layout, layout.start, "north", slip=0.1)   # [(prob, next cell), ...]
    describe(layout, layout.start)                  # the text the agent sees

Shared by the environment (``env.py``) and the exact solvers (``solver.py``).
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ttsearch.envs.errors import EnvError

ACTIONS: tuple[str, ...] = ("north", "east", "south", "west")
MOVES: dict[str, tuple[int, int]] = {"north": (-1, 0), "east": (0, 1), "south": (1, 0), "west": (0, -1)}
PERPENDICULAR: dict[str, tuple[str, str]] = {
    "north": ("east", "west"), "south": ("east", "west"),
    "east": ("north", "south"), "west": ("north", "south"),
}
OPEN, WALL, PIT, GOAL = ".", "#", "O", "G"
SPLITS = ("train", "test")
TEST_FRACTION_PER_MILLE = 200  # 20% of all layouts (by content hash) are held out



@dataclass(frozen=True)  # no slots: cached_property needs __dict__
class Layout:
    """A maze layout: ``grid[r][c]`` in {'.', '#', 'O', 'G'}, and the start cell."""

    grid: tuple[str, ...]
    start: tuple[int, int]

    @property
    def size(self) -> int:
        return len(self.grid)

    def cell(self, pos: tuple[int, int]) -> str:
        r, c = pos
        if 0 <= r < self.size and 0 <= c < self.size:
            return self.grid[r][c]
        return WALL

    @cached_property
    def goal(self) -> tuple[int, int]:
        return next((r, c) for r, row in enumerate(self.grid) for c, ch in enumerate(row) if ch == GOAL)

    @cached_property
    def fingerprint(self) -> str:
        text = "\n".join(self.grid) + f"\n{self.start}"
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def split(self) -> str:
        return "test" if int(self.fingerprint[:8], 16) % 1000 < TEST_FRACTION_PER_MILLE else "train"

    @cached_property
    def free_cells(self) -> tuple[tuple[int, int], ...]:
        """Non-terminal cells the agent can stand on (open cells)."""
        return tuple((r, c) for r in range(self.size) for c in range(self.size) if self.grid[r][c] == OPEN)


def generate_layout(seed: int, *, size: int = 5, n_walls: int = 3, n_pits: int = 2) -> Layout:
    """A random solvable layout: the goal is reachable from the start without touching a pit."""
    if size < 3:
        raise EnvError(f"maze size must be >= 3, got {size}")
    if n_walls + n_pits + 2 > size * size:
        raise EnvError(f"{n_walls} walls + {n_pits} pits do not fit a {size}x{size} maze; lower them")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        cells = rng.permutation(size * size)
        start, goal = divmod(int(cells[0]), size), divmod(int(cells[1]), size)
        if abs(start[0] - goal[0]) + abs(start[1] - goal[1]) < size - 1:
            continue  # keep episodes long enough to need several decisions
        grid = [[OPEN] * size for _ in range(size)]
        grid[goal[0]][goal[1]] = GOAL
        for index in cells[2 : 2 + n_walls]:
            r, c = divmod(int(index), size)
            grid[r][c] = WALL
        for index in cells[2 + n_walls : 2 + n_walls + n_pits]:
            r, c = divmod(int(index), size)
            grid[r][c] = PIT
        layout = Layout(tuple("".join(row) for row in grid), start)
        if _reachable(layout, start, goal):
            return layout
    raise EnvError(f"could not generate a solvable maze for seed {seed}; use fewer walls/pits")


def _reachable(layout: Layout, start: tuple[int, int], goal: tuple[int, int]) -> bool:
    seen, queue = {start}, deque([start])
    while queue:
        pos = queue.popleft()
        if pos == goal:
            return True
        for dr, dc in MOVES.values():
            nxt = (pos[0] + dr, pos[1] + dc)
            if nxt not in seen and layout.cell(nxt) in (OPEN, GOAL):
                seen.add(nxt)
                queue.append(nxt)
    return False


def transitions(layout: Layout, pos: tuple[int, int], action: str, slip: float) -> list[tuple[float, tuple[int, int]]]:
    """Exact next-cell distribution ``[(prob, cell), ...]`` of ``action`` from ``pos``."""
    outcomes: dict[tuple[int, int], float] = {}
    side_a, side_b = PERPENDICULAR[action]
    for direction, prob in ((action, 1.0 - slip), (side_a, slip / 2), (side_b, slip / 2)):
        if prob <= 0:
            continue
        dr, dc = MOVES[direction]
        nxt = (pos[0] + dr, pos[1] + dc)
        if layout.cell(nxt) == WALL:
            nxt = pos
        outcomes[nxt] = outcomes.get(nxt, 0.0) + prob
    return [(prob, cell) for cell, prob in outcomes.items()]


def describe(layout: Layout, pos: tuple[int, int]) -> str:
    """The observation text: the map with the agent 'A', the goal offset, and the four neighbours."""
    rows = []
    for r, row in enumerate(layout.grid):
        cells = ["A" if (r, c) == pos else ch for c, ch in enumerate(row)]
        rows.append(" ".join(cells))
    dr, dc = layout.goal[0] - pos[0], layout.goal[1] - pos[1]
    offset = []
    if dr:
        offset.append(f"{abs(dr)} {'south' if dr > 0 else 'north'}")
    if dc:
        offset.append(f"{abs(dc)} {'east' if dc > 0 else 'west'}")
    names = {OPEN: "open", WALL: "wall", PIT: "pit", GOAL: "goal"}
    around = [f"{a} {names[layout.cell((pos[0] + MOVES[a][0], pos[1] + MOVES[a][1]))]}" for a in ACTIONS]
    return "\n".join(rows) + "\ngoal " + " ".join(offset) + "\n" + "\n".join(around)
