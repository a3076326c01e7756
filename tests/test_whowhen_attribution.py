"""Who&When failure attribution: message scores equal a plain full forward; metrics by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ttsearch.agents import ModelPair
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.benchmarks.report.whowhen_attribution import (
    attribution_summary,
    render_pieces,
    score_log,
)
from ttsearch.envs.errors import ConfigError
from ttsearch.envs.whowhen import FailureLog, Message, load_whowhen

from tolerances import EXACT, model_tol

DATA = Path(__file__).parent / "data" / "whowhen"


@pytest.fixture(scope="module")
def pair() -> ModelPair:
    return ModelPair.load_dir(default_pair_dir("maze"))


def _full_forward_logprobs(model, ids: list[int]) -> tuple[torch.Tensor, float]:
    """log p(ids[t] | ids[:t]) for t >= 1 from one plain forward pass (no cache, no packing), and
    how far another correct computation of them may be (tests/tolerances.py)."""
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return lp, model_tol(model, logits)


def test_transcript_pieces_concatenate_to_the_documented_format(pair):
    log = load_whowhen(DATA, subset="Hand-Crafted")[0]
    pieces = render_pieces(pair.tokenizer, log)
    assert len(pieces) == len(log.history)
    ids = [t for head, content in pieces for t in (*head, *content)]
    expected = f"Task: {log.question}\n\n" + "\n\n".join(
        f"[{log.agent_at(i)}]\n{m.content}" for i, m in enumerate(log.history))
    assert pair.tokenizer.decode(ids) == expected


def test_message_logprobs_equal_a_plain_full_forward(pair):
    log = load_whowhen(DATA, subset="Hand-Crafted")[0]
    scored = score_log(pair, log, max_message_tokens=100)  # the whole log fits the model
    pieces = render_pieces(pair.tokenizer, log)
    assert not any(span.truncated for span in scored.spans)
    ids: list[int] = []
    starts = []
    for head, content in pieces:
        ids.extend(head)
        starts.append((len(ids), len(content)))
        ids.extend(content)
    for which, backend in (("policy", pair.policy), ("reference", pair.reference)):
        assert len(ids) <= backend.max_positions  # no context was cut
        full, tol = _full_forward_logprobs(backend.model, ids)
        for span, (start, n) in zip(scored.spans, starts, strict=True):
            got = span.policy_logprobs if which == "policy" else span.reference_logprobs
            assert len(got) == n
            assert torch.allclose(torch.tensor(got), full[start - 1:start - 1 + n], rtol=0, atol=tol)


def test_caps_keep_the_first_tokens_and_the_latest_context(pair):
    log = load_whowhen(DATA, subset="Algorithm-Generated")[0]
    scored = score_log(pair, log, max_message_tokens=3, max_context_tokens=12)
    pieces = render_pieces(pair.tokenizer, log)
    transcript: list[int] = []
    for span, (head, content) in zip(scored.spans, pieces, strict=True):
        transcript.extend(head)
        assert span.token_ids == content[:3]
        assert span.truncated == (len(content) > 3)
        context = transcript[-(12 - len(span.token_ids)):]
        full, tol = _full_forward_logprobs(pair.policy.model, context + list(span.token_ids))
        assert torch.allclose(torch.tensor(span.policy_logprobs), full[len(context) - 1:], rtol=0, atol=tol)
        transcript.extend(content)
    with pytest.raises(ConfigError, match="max-message-tokens"):
        score_log(pair, log, max_message_tokens=12, max_context_tokens=12)


def _log(n: int, mistake: int) -> FailureLog:
    history = tuple(Message(f"m{i}", "A" if i % 2 == 0 else "B") for i in range(n))
    return FailureLog(id=f"x{n}", subset="Hand-Crafted", question="q", ground_truth="", history=history,
                      mistake_agent="A" if mistake % 2 == 0 else "B", mistake_step=mistake)


def test_summary_matches_hand_computation():
    logs = [_log(4, 2), _log(3, 1)]
    # log 0: cumulative [1, 0, -2, -1] -> step 2 (correct); sharpest drop argmin [1,-1,-2,1] -> 2;
    #        abs drop: drops [2, 1, -3] -> step 1 (wrong, agent B wrong, |1-2| = 1)
    # log 1: cumulative [-1, -0.5, -0.7] -> step 0 (wrong, agent A vs B wrong, error 1);
    #        sharpest drop -> 0; abs drop: drops [-0.5, 0.7] -> step 2 (wrong agent A, error 1)
    scores = [{"s": [1.0, -1.0, -2.0, 1.0]}, {"s": [-1.0, 0.5, -0.2]}]
    out = attribution_summary(logs, scores)["scorers"]["s"]
    assert out["min_cumulative"] == {"agent_accuracy": 0.5, "step_accuracy": 0.5, "step_mae": 0.5}
    assert out["sharpest_drop"] == {"agent_accuracy": 0.5, "step_accuracy": 0.5, "step_mae": 0.5}
    assert out["sharpest_abs_drop"] == {"agent_accuracy": 0.0, "step_accuracy": 0.0, "step_mae": 1.0}
    base = attribution_summary(logs, scores)["baselines"]
    assert base["random_step_expected_accuracy"] == pytest.approx((1 / 4 + 1 / 3) / 2, abs=EXACT)
    assert base["last_step"]["step_accuracy"] == 0.0 and base["first_step"]["step_mae"] == 1.5


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ttsearch.benchmarks.cli", "attribute", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_cli_appends_one_line_per_log_and_resumes(tmp_path):
    out = tmp_path / "ww.jsonl"
    first = _cli(str(DATA), "--out", str(out), "--json")
    assert first.returncode == 0, first.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["log"] for r in rows) == sorted(log.id for log in load_whowhen(DATA))
    # A crash cut the last line: the rerun rescoring only that log gives the same summary.
    text = out.read_text()
    out.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:25])
    second = _cli(str(DATA), "--out", str(out), "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)
    again = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole
    assert sorted(r["log"] for r in again) == sorted(r["log"] for r in rows)
    bad = _cli(str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "no Who&When data" in bad.stderr and "Traceback" not in bad.stderr
