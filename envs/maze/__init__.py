"""The slippery maze: a stochastic grid MDP small enough for exact value iteration.

    from ttsearch.envs.maze import SlipperyMaze, maze_tasks, solve
    env = SlipperyMaze(layout_seed=7)
    solution = solve(env.layout, slip=0.1, gamma=0.95)      # V*, Q*, optimal moves

- ``env.py``: layouts, the environment, held-out splits by content hash.
- ``solver.py``: value iteration and the KL-regularised soft Q*/V*/A* (Proposition 1's truth).
- ``attribution.py``: finite-horizon values and the true decisive mistake of a failed episode.
"""

from ttsearch.envs.maze.env import SlipperyMaze, maze_tasks
from ttsearch.envs.maze.layout import ACTIONS, Layout, generate_layout
from ttsearch.envs.maze.solver import soft_solve, solve

__all__ = ["ACTIONS", "Layout", "SlipperyMaze", "generate_layout", "maze_tasks", "soft_solve", "solve"]
