"""`ttsearch run` configs: the shipped configs load; bad ones fail with one line naming field and fix.

Errors are checked through the CLI (exit status 2, one line on stderr); no model is loaded
for any of them (config validation happens before the pair is read).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ttsearch.benchmarks import cli
from ttsearch.benchmarks.run.config import load_config, parse_config
from ttsearch.envs.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
SMOKE = CONFIGS / "smoke-maze.yaml"


def smoke() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def test_shipped_configs_load():
    paper = load_config(CONFIGS / "paper-maze.yaml")
    assert [a.name for a in paper.arms] == ["greedy", "bon16-pa", "step-bo2-pa", "step-bo4-pa", "step-bo8-pa",
                                            "step-bo8-plp", "beam-pa-240", "beam-pa-480", "beam-pa-960",
                                            "best-first-pa-480", "mcts-pa-480", "bon16-pa-adaptive",
                                            "bon16-pa-deepconf"]
    lookahead = [paper.arm_budget(a) for a in paper.arms if a.name.endswith("-480")]
    assert lookahead == [{"tokens": 480}] * 3  # one equal token budget for beam, best-first, MCTS
    assert set(paper.scorer_labels()) >= {"progress_advantage", "pa-centred", "pa-decisive", "policy_logprob",
                                          "reference_logprob", "self-certainty-deepconf", "self-certainty-paper",
                                          "deepconf-tail-deepconf", "deepconf-tail-paper",
                                          "deepconf-bottom10-deepconf", "deepconf-bottom10-paper",
                                          "entropy", "random", "task-orm", "task-prm",
                                          "progress_advantage@linear-0.5", "pa-centred@ties-0.5-d0.2"}
    assert paper.validation is not None and paper.validation.split == "train"
    assert paper.applications.uq_fa_arms == ["bon16-pa"]
    config = load_config(SMOKE)
    assert config.scorer_labels()[0] == "pa" and config.arms[1].scorer == "pa"


def test_hash_covers_values_not_spelling():
    base = parse_config(smoke())
    explicit = smoke()
    explicit["top_logprobs"] = 20  # the default, written out
    explicit["budget"] = {}
    assert parse_config(explicit).config_hash() == base.config_hash()
    edited = smoke()
    edited["seeds"] = [1]
    assert parse_config(edited).config_hash() != base.config_hash()
    edited = smoke()
    edited["arms"][1]["kwargs"]["n"] = 5
    assert parse_config(edited).config_hash() != base.config_hash()


def _edit(path, value):
    data = smoke()
    *parents, last = path
    node = data
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node, dict) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()

BAD = [
    # (id, edit path, new value, substrings the one-line error must contain)
    ("unknown top field", ("colour",), "red", ["colour", "valid fields here", "arms", "scorers"]),
    ("unknown arm field", ("arms", 1, "scorer_name"), "pa", ["arms[1]", "scorer_name", "controller", "kwargs"]),
    ("unknown controller", ("arms", 0, "controller"), "gready", ["arms[0].controller", "gready", "greedy", "mcts"]),
    ("bad controller option", ("arms", 1, "kwargs"), {"n": 0}, ["arms[1]", "n must be an int >= 1"]),
    ("unknown controller option", ("arms", 1, "kwargs"), {"m": 3}, ["arms[1]", "m", "valid options", "n"]),
    ("bad budget value", ("arms", 3, "budget"), {"tokens": -5}, ["arms[3].budget", "tokens", "int >= 0"]),
    ("unknown budget limit", ("budget",), {"tokenz": 5}, ["budget", "tokenz", "generated_tokens"]),
    ("missing pair folder", ("pair",), "/nonexistent/pair", ["pair", "/nonexistent/pair", "ttsearch pair train"]),
    ("unknown shipped pair", ("pair",), "default:sokoban", ["pair", "sokoban", "maze"]),
    ("unknown scorer", ("scorers", 1, "name"), "policy_lp", ["scorers[1].name", "policy_lp", "policy_logprob"]),
    ("unknown scorer option", ("scorers", 3, "kwargs"), {"kk": 3}, ["scorers[3]", "kk", "valid options"]),
    ("arm scorer not evaluated", ("arms", 1, "scorer"), "nope", ["arms[1].scorer", "nope", "pa"]),
    ("unknown env", ("tasks", "env"), "mazee", ["tasks.env", "mazee", "maze"]),
    ("bad task limit", ("tasks", "limit"), 0, ["tasks.limit", "greater than or equal to 1"]),
    ("missing tasks", ("tasks",), _DELETE, ["tasks", "missing"]),
    ("uq arm unknown", ("applications", "uq_fa_arms"), ["bon9"], ["uq_fa_arms", "bon9", "bon4-pa"]),
    ("duplicate arm", ("arms", 2, "name"), "greedy", ["duplicate arm name", "greedy"]),
    ("bad horizon", ("horizon",), "never", ["horizon"]),
    ("bad parser", ("parser",), "numbers", ["parser", "'plain'", "package.module:Class"]),
    ("missing parser class", ("parser",), "ttsearch.agents.parsing:Nope", ["parser", "Nope"]),
    ("unknown engine", ("engine", "kind"), "vllm", ["engine.kind", "sglang", "transformers"]),
    ("half the server urls", ("engine",), {"kind": "sglang", "policy_url": "http://127.0.0.1:1"},
     ["engine", "reference_url"]),
]


@pytest.mark.parametrize("edit_path, value, needles", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_one_line_error_via_cli(tmp_path, capsys, edit_path, value, needles):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_edit(edit_path, value)))
    code = cli.main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ttsearch: error: ") and str(path) in lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_not_a_file_and_not_yaml(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("pair: [unclosed\n")
    assert cli.main(["run", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="YAML mapping"):
        parse_config(["a", "list"])


def test_default_name_means_a_shipped_pair_on_every_command(tmp_path, capsys):
    from ttsearch.agents.checkpoints.shipped import default_pair_dir, resolve_pair_dir

    assert resolve_pair_dir("default:maze") == default_pair_dir("maze")
    assert resolve_pair_dir(tmp_path / "p") == (tmp_path / "p").resolve()
    # `rm train` reads default:NAME like `run` does: an unknown name is one line listing the shipped ones
    assert cli.main(["rm", "train", "--env", "maze", "--pair", "default:sokoban", "--out", str(tmp_path / "rm")]) == 2
    err = capsys.readouterr().err
    assert "sokoban" in err and "maze" in err and "Traceback" not in err
