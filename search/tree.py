"""SearchTree: every node a search proposed or expanded, as a networkx DiGraph, with export.

    tree = result.tree
    tree.graph.nodes[3]            # {'depth': 1, 'action': 'north', 'step_score': 0.7, 'cumulative': 0.7,
                                   #  'status': 'executed', 'reward': 0.0, 'terminated': False, ...}
    tree.trajectory(3)             # the Trajectory from the root to node 3
    tree.write_json("tree.json")   # node-link JSON (networkx.node_link_data)
    tree.write_graphml("tree.graphml")   # non-scalar attributes stringified as JSON
    tree.draw("tree.png")          # matplotlib picture of a small tree (no graphviz needed)

Node 0 is the root (the first observation). Every other node is one candidate action from its
parent: its tokens (``tokens``: every generated id; ``span``: the scored action ids), both
models' log-probs, its step score and the cumulative score along the path, and — when it was
executed in the environment — the env result (``reward``, ``terminated``, ``truncated``,
``observation``). ``status`` says what the search did with it: ``candidate`` (proposed, not
executed), ``executed``, ``chosen`` (on the returned trajectory), ``pruned`` (cut by an
early-stopping rule), ``cut`` (abandoned for lack of budget).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx

from ttsearch.envs.base import Observation, Step, Trajectory
from ttsearch.envs.errors import ConfigError

STATUSES = ("root", "candidate", "executed", "chosen", "pruned", "cut")
_COLOURS = {"root": "#888888", "candidate": "#d0d0d0", "executed": "#9ecae1", "chosen": "#31a354",
            "pruned": "#fdae6b", "cut": "#de2d26"}


class SearchTree:
    """A rooted tree of search nodes (see the module docstring)."""

    def __init__(self, task_id: str, initial_observation: Observation, *, system_prompt: str = "",
                 task: Any = None):
        self.graph = nx.DiGraph(task=task_id)
        self.task = task
        self.initial_observation = initial_observation
        self.system_prompt = system_prompt
        self._steps: dict[int, Step] = {}
        self.graph.add_node(0, depth=0, status="root", cumulative=0.0, observation=initial_observation.text)

    # -- building -------------------------------------------------------------------------
    def add(self, parent: int, step: Step, *, score: float | None, executed: bool, **attrs: Any) -> int:
        """Add a child of ``parent`` for ``step`` (its result is ignored unless ``executed``)."""
        node = self.graph.number_of_nodes()
        parent_cum = self.graph.nodes[parent].get("cumulative", 0.0)
        data: dict[str, Any] = {
            "depth": self.graph.nodes[parent]["depth"] + 1,
            "action": step.action,
            "action_text": step.action_text,
            "step_score": score,
            "cumulative": None if score is None or parent_cum is None else parent_cum + score,
            "tokens": list(step.generated_token_ids),
            "span": list(step.action_token_ids),
            "policy_logprobs": list(step.policy_logprobs),
            "reference_logprobs": None if step.reference_logprobs is None else list(step.reference_logprobs),
            "parse_error": step.parse_error,
            "status": "executed" if executed else "candidate",
        }
        if executed:
            result = step.result
            data.update(reward=float(result.reward), terminated=bool(result.terminated),
                        truncated=bool(result.truncated), observation=result.observation.text)
            self._steps[node] = step
        data.update(attrs)
        self.graph.add_node(node, **data)
        self.graph.add_edge(parent, node)
        return node

    def set(self, node: int, **attrs: Any) -> None:
        self.graph.nodes[node].update(attrs)

    def mark_path(self, node: int, status: str = "chosen") -> None:
        for n in self.path(node):
            self.graph.nodes[n]["status"] = status

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def parent(self, node: int) -> int | None:
        preds = list(self.graph.predecessors(node))
        return preds[0] if preds else None

    def path(self, node: int) -> list[int]:
        """Node ids from the root's child down to ``node`` (empty for the root)."""
        out = []
        while node != 0:
            out.append(node)
            node = self.parent(node)
        return out[::-1]

    def step(self, node: int) -> Step:
        if node not in self._steps:
            raise KeyError(f"node {node} was not executed in the environment")
        return self._steps[node]

    def executed(self) -> list[int]:
        """Every node whose step was executed in the environment."""
        return list(self._steps)

    def trajectory(self, node: int) -> Trajectory:
        """The trajectory from the root to ``node`` (every node on the path was executed)."""
        steps = tuple(self.step(n) for n in self.path(node))
        return Trajectory(self.task, self.initial_observation, steps, self.system_prompt)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for _, status in self.graph.nodes(data="status"):
            out[status] = out.get(status, 0) + 1
        return out

    # -- export ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Node-link JSON data (``networkx.node_link_data``)."""
        return nx.node_link_data(self.graph, edges="edges")

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    def write_graphml(self, path: str | Path) -> Path:
        """GraphML needs scalar attributes: lists/dicts become JSON strings, None is dropped."""
        graph = nx.DiGraph()
        graph.graph.update({k: str(v) for k, v in self.graph.graph.items()})
        for node, data in self.graph.nodes(data=True):
            graph.add_node(node, **{k: _scalar(v) for k, v in data.items() if v is not None})
        graph.add_edges_from(self.graph.edges())
        path = Path(path)
        nx.write_graphml(graph, path)
        return path

    def layout(self) -> dict[int, tuple[float, float]]:
        """Layered positions: y = -depth; leaves spread left to right, parents centred above."""
        pos: dict[int, tuple[float, float]] = {}
        next_x = [0.0]

        def place(node: int) -> float:
            children = sorted(self.graph.successors(node))
            if not children:
                x = next_x[0]
                next_x[0] += 1.0
            else:
                xs = [place(c) for c in children]
                x = (xs[0] + xs[-1]) / 2
            pos[node] = (x, -float(self.graph.nodes[node]["depth"]))
            return x

        place(0)
        return pos

    def draw(self, path: str | Path, *, max_nodes: int = 200, title: str | None = None) -> Path:
        """A PNG picture (matplotlib, Agg); refuses trees over ``max_nodes`` (unreadable)."""
        if len(self) > max_nodes:
            raise ConfigError(f"the tree has {len(self)} nodes, more than max_nodes={max_nodes} for a picture; "
                              "raise max_nodes or export it with write_graphml/write_json instead")
        # matplotlib: only for drawing
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # after selecting the Agg backend

        pos = self.layout()
        width = max(4.0, min(40.0, 0.6 * (1 + max(x for x, _ in pos.values()))))
        height = max(3.0, min(30.0, 1.2 * (1 + max(-y for _, y in pos.values()))))
        fig, ax = plt.subplots(figsize=(width, height))
        for a, b in self.graph.edges():
            ax.plot([pos[a][0], pos[b][0]], [pos[a][1], pos[b][1]], color="#999999", lw=0.8, zorder=1)
        for node, data in self.graph.nodes(data=True):
            colour = _COLOURS.get(data.get("status", ""), "#ffffff")
            ax.scatter([pos[node][0]], [pos[node][1]], s=120, c=colour, edgecolors="black", zorder=2)
            if node:
                score = data.get("step_score")
                label = str(data.get("action", ""))[:10] + ("" if score is None else f"\n{score:+.2f}")
                if data.get("terminated"):
                    label += f"\nR={data.get('reward', 0):g}"
                ax.annotate(label, pos[node], textcoords="offset points", xytext=(0, -16), ha="center",
                            va="top", fontsize=6)
        handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=s) for s, c in _COLOURS.items()]
        ax.legend(handles=handles, loc="upper right", fontsize=6)
        ax.set_title(title or f"search tree: {self.graph.graph.get('task', '')} ({len(self)} nodes)", fontsize=8)
        ax.axis("off")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _scalar(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)
