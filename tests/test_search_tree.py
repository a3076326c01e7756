"""SearchTree: structure, trajectories, JSON / GraphML export and the PNG picture."""

from __future__ import annotations

import json
import math

import networkx as nx
import pytest

from ttsearch.envs.base import Env, Observation, StepResult, Task
from ttsearch.envs.errors import ConfigError
from ttsearch.scorers import make_scorer
from ttsearch.search import Budget, make_controller
from ttsearch.search.testing import Choice, FakeProposer

from tolerances import EXACT


class Grid(Env):
    """Walk left/right three times; the observation is the position."""

    deterministic = True

    def reset(self, *, seed=None):
        self.pos, self.t = 0, 0
        return Observation("pos 0", ("left", "right"))

    def step(self, action):
        self.pos += 1 if action == "right" else -1
        self.t += 1
        done = self.t >= 3
        return StepResult(Observation(f"pos {self.pos}", ("left", "right")), float(done and self.pos == 3), done, False)

    def snapshot(self):
        return (self.pos, self.t)

    def restore(self, snapshot):
        self.pos, self.t = snapshot


def table(state):
    return [Choice("left", math.log(0.5), -0.5), Choice("right", math.log(0.5), 0.7)]


@pytest.fixture(scope="module")
def result():
    agent = FakeProposer(table)
    return make_controller("beam", width=2, expand=4).run(Task("grid", "g0"), Grid, agent,
                                                         make_scorer("progress_advantage"), Budget())


def test_nodes_hold_scores_tokens_and_env_results(result):
    g = result.tree.graph
    assert g.nodes[0]["status"] == "root" and g.nodes[0]["observation"] == "pos 0"
    for node in g.nodes:
        if node == 0:
            continue
        data = g.nodes[node]
        parent = result.tree.parent(node)
        assert data["depth"] == g.nodes[parent]["depth"] + 1
        assert data["step_score"] == pytest.approx(0.7 if data["action"] == "right" else -0.5, abs=EXACT)
        assert data["cumulative"] == pytest.approx(g.nodes[parent]["cumulative"] + data["step_score"], abs=EXACT)
        assert data["tokens"][: len(data["span"])] == data["span"] and data["observation"].startswith("pos")
    assert result.trajectory.actions == ("right",) * 3 and result.success
    # the trajectory rebuilt from the tree is the returned one
    last = max(n for n, s in g.nodes(data="status") if s == "chosen")
    assert result.tree.trajectory(last) == result.trajectory


def test_json_round_trip(result, tmp_path):
    path = result.tree.write_json(tmp_path / "tree.json")
    data = json.loads(path.read_text())
    back = nx.node_link_graph(data, edges="edges")
    assert nx.utils.graphs_equal(back, result.tree.graph)


def test_graphml_stringifies_lists(result, tmp_path):
    path = result.tree.write_graphml(tmp_path / "tree.graphml")
    back = nx.read_graphml(path)
    assert back.number_of_nodes() == len(result.tree) and back.number_of_edges() == len(result.tree) - 1
    node = back.nodes["1"]
    assert json.loads(node["tokens"]) == result.tree.graph.nodes[1]["tokens"]
    assert node["step_score"] == pytest.approx(result.tree.graph.nodes[1]["step_score"], abs=EXACT)


def test_png_picture(result, tmp_path):
    import matplotlib.image as mpimg

    path = result.tree.draw(tmp_path / "tree.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    with pytest.raises(ConfigError, match="max_nodes=3.*write_graphml"):
        result.tree.draw(tmp_path / "big.png", max_nodes=3)


def test_layout_places_children_below_parents(result):
    pos = result.tree.layout()
    for a, b in result.tree.graph.edges():
        assert pos[b][1] == pos[a][1] - 1
