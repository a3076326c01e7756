"""Who&When loader on small failure logs we wrote in its format (tests/data/whowhen)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ttsearch.envs import ConfigError, EnvError
from ttsearch.envs.whowhen import (
    FailureLog,
    attribution_accuracy,
    attribution_correct,
    load_whowhen,
)

from tolerances import EXACT

DATA = Path(__file__).parent / "data" / "whowhen"


def test_loads_both_subsets_in_numeric_file_order():
    logs = load_whowhen(DATA)
    assert [log.id for log in logs] == ["Hand-Crafted/1", "Hand-Crafted/2", "Algorithm-Generated/1",
                                        "Algorithm-Generated/2", "Algorithm-Generated/10"]
    assert all(isinstance(log, FailureLog) for log in logs)
    with pytest.raises(AttributeError):
        logs[0].mistake_step = 0  # frozen


def test_fields_and_agents_follow_the_format():
    hand = load_whowhen(DATA, subset="Hand-Crafted")
    first = hand[0]
    assert first.mistake_step == 3 and isinstance(first.mistake_step, int)
    assert first.ground_truth == "4" and first.mistake_agent == "Orchestrator"
    assert first.agent_at(2) == "WebSurfer"  # hand-crafted: the agent is in `role`
    assert first.extra["question_ID"] == "hc-0001" and "history" not in first.extra
    algo = load_whowhen(DATA, subset="Algorithm-Generated")
    case = algo[1]  # 2.json
    assert case.agent_at(case.mistake_step) == case.mistake_agent == "Math_Expert"  # `name` wins over role
    assert case.history[1].role == "user" and case.agents == ("Planner", "Math_Expert", "Verifier")


def test_scoring_is_exact_match_of_agent_and_step():
    logs = load_whowhen(DATA)
    assert attribution_correct(logs[0], agent="Orchestrator", step=3) == (True, True)
    assert attribution_correct(logs[0], agent="WebSurfer", step=2) == (False, False)
    preds = [(log.mistake_agent, log.mistake_step) for log in logs]
    preds[0] = ("Orchestrator", 1)  # agent right, step off by 2
    preds[1] = (None, None)
    acc = attribution_accuracy(logs, preds)
    assert acc["agent_accuracy"] == pytest.approx(4 / 5, abs=EXACT) and acc["step_accuracy"] == pytest.approx(3 / 5, abs=EXACT)
    assert acc["step_mae"] == pytest.approx(2 / 4, abs=EXACT)  # errors 2,0,0,0 over the 4 predicted steps


def test_bad_files_give_errors_that_name_the_case(tmp_path):
    case = json.loads((DATA / "Hand-Crafted" / "2.json").read_text())
    (tmp_path / "Hand-Crafted").mkdir()
    for bad, message in [({**case, "mistake_step": "seven"}, "not a 0-based index"),
                         ({**case, "mistake_step": "9"}, "outside history"),
                         ({k: v for k, v in case.items() if k != "history"}, "missing field")]:
        (tmp_path / "Hand-Crafted" / "1.json").write_text(json.dumps(bad))
        with pytest.raises(EnvError, match=message):
            load_whowhen(tmp_path)
    with pytest.raises(EnvError, match="no Who&When data"):
        load_whowhen(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="subset"):
        load_whowhen(DATA, subset="Handcrafted")
