"""ModelPair loading (tokenizer checks, pair folders) and Agent.propose end to end."""

from __future__ import annotations

import json

import pytest
import torch

from ttsearch.agents import (
    Agent,
    ModelPair,
    PairManifest,
    PlainActionParser,
    Proposer,
    SamplingParams,
)
from ttsearch.envs.base import Observation, Step, StepResult, Task, Trajectory
from ttsearch.envs.errors import BackendError
from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer

from tolerances import folder_tol, model_tol

CORPUS = [
    "You are in a maze. There is a wall to the north and a pit to the east. Step 3 of 20.",
    "Valid actions: north, south, east, west. You moved south.",
    "Action: north",
    "Action: east",
    "Action: south",
    "Action: west",
] * 20
MOVES = ("north", "south", "east", "west")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("pair")
    save_pair_folder(make_model(tok, init_std=0.1, seed=1), tok, root / "policy")
    save_pair_folder(make_model(tok, init_std=0.1, seed=2), tok, root / "reference")
    PairManifest(beta=0.5, env="maze", extra={"note": "test"}).write(root)
    return root


@pytest.fixture(scope="module")
def truth(pair_dir):
    from transformers import AutoModelForCausalLM

    models = {
        role: AutoModelForCausalLM.from_pretrained(
            pair_dir / role, attn_implementation="eager"
        ).eval()
        for role in ("policy", "reference")
    }

    def logprobs(role, prompt, tokens):
        """Per-token log-probs of ``tokens`` after ``prompt``, the full log-softmax rows, and how
        far another correct computation may be from them (tests/tolerances.py)."""
        with torch.no_grad():
            logits = models[role](torch.tensor([list(prompt) + list(tokens)])).logits[0]
        full = logits.log_softmax(-1)
        rows = full[len(prompt) - 1 : len(prompt) - 1 + len(tokens)]
        return [rows[i, t].item() for i, t in enumerate(tokens)], rows, model_tol(models[role], logits)

    return logprobs


def test_tiny_model_folder_reloads_the_same_tokenizer(pair_dir, tok):
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(pair_dir / "policy")
    text = "Action: go  north.\n\nThought: é 漢字 42 <|im_start|>user\nx<|im_end|>"
    assert loaded.encode(text, add_special_tokens=False) == tok.encode(
        text, add_special_tokens=False
    )
    assert loaded.eos_token == "<|im_end|>" and loaded.chat_template == tok.chat_template
    # frequent words and every digit are single tokens
    assert len(tok.encode(" north", add_special_tokens=False)) == 1
    assert tok.encode("2026", add_special_tokens=False) == [
        tok.convert_tokens_to_ids(d) for d in "2026"
    ]


def test_load_dir_reads_manifest(pair_dir):
    pair = ModelPair.load_dir(pair_dir)
    assert (
        pair.beta == 0.5 and pair.manifest.env == "maze" and pair.manifest.extra == {"note": "test"}
    )
    assert pair.policy.name == "policy" and pair.reference.name == "reference"


def test_manifest_reads_flat_trainer_records(tmp_path):
    record = {
        "env": "maze",
        "beta": 0.1,
        "max_history_turns": 0,
        "recipe": {"lr": 1e-3},
        "policy": "policy",
    }
    (tmp_path / "ttsearch_pair.json").write_text(json.dumps(record))
    manifest = PairManifest.read(tmp_path)
    assert manifest.beta == 0.1 and manifest.prompt.max_history_turns == 0
    assert manifest.extra == {"recipe": {"lr": 1e-3}}
    assert PairManifest.from_dict(manifest.to_dict()) == manifest


def test_mismatched_tokenizers_are_refused(tmp_path, pair_dir):
    other = train_tokenizer(["completely different words here"] * 10 + CORPUS[:3], vocab_size=330)
    save_pair_folder(make_model(other), other, tmp_path / "other")
    with pytest.raises(BackendError) as err:
        ModelPair.load(pair_dir / "policy", tmp_path / "other")
    message = str(err.value)
    assert "\n" not in message
    assert str(pair_dir / "policy") in message and str(tmp_path / "other") in message
    assert "vocab" in message and "share one tokenizer" in message


def test_missing_folders_are_clear_errors(tmp_path, pair_dir):
    with pytest.raises(BackendError, match="no pair folder at .*ttsearch pair train"):
        ModelPair.load_dir(tmp_path / "absent")
    with pytest.raises(
        BackendError, match=r"no model at .*reference: expected a Hugging Face folder"
    ):
        ModelPair.load(pair_dir / "policy", tmp_path / "reference")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text(
        (pair_dir / "policy" / "config.json").read_text()
    )
    with pytest.raises(BackendError, match="no tokenizer in"):
        ModelPair.load(pair_dir / "policy", tmp_path / "bare")


def _state(step: int) -> Trajectory:
    traj = Trajectory(
        Task("maze", "t0"),
        Observation("You are in a maze. Step 1 of 20.", MOVES),
        system_prompt="Move: north, south, east or west.",
    )
    for i in range(step):
        result = StepResult(
            Observation(f"You moved south. Step {i + 2} of 20.", MOVES), 0.0, False, False
        )
        traj = traj.extended(Step(traj.observation, "south", "south", result))
    return traj


def test_agent_proposes_scored_candidates(pair_dir, truth):
    pair = ModelPair.load_dir(pair_dir)
    stop = tuple(range(60, 160))
    agent = Agent(
        pair,
        sampling=SamplingParams(max_new_tokens=6, stop_token_ids=stop),
        parser=PlainActionParser(match_admissible=True),
    )
    assert isinstance(agent, Proposer)
    states = [_state(0), _state(2)]
    p0, r0 = pair.policy.stats.snapshot(), pair.reference.stats.snapshot()
    out = agent.propose(states, k=3, seed=7, top_logprobs=4)
    assert pair.policy.stats.minus(p0).calls == 1 and pair.reference.stats.minus(r0).calls == 1
    ends = set(stop) | set(pair.policy.eos_token_ids)
    renderer = pair.renderer()
    saw_stop = False
    for state, group in zip(states, out, strict=True):
        prompt = renderer.render(state)
        assert len(group) == 3
        for c in group:
            gen = c.generated_token_ids
            stopped = c.extra["finish_reason"] == "stop"
            saw_stop |= stopped
            assert c.action_token_ids == (gen[:-1] if stopped else gen)
            assert not stopped or gen[-1] in ends
            n = len(c.action_token_ids)
            assert len(c.policy_logprobs) == len(c.reference_logprobs) == len(c.top_logprobs) == n
            for role, got in (("policy", c.policy_logprobs), ("reference", c.reference_logprobs)):
                want, _, tol = truth(role, prompt, c.action_token_ids)
                assert torch.allclose(torch.tensor(got), torch.tensor(want), rtol=0, atol=tol)
            assert c.action_text == pair.tokenizer.decode(
                list(c.action_token_ids), skip_special_tokens=True
            )
            # random weights: the text is rarely a move, so it is kept raw with the reason recorded
            assert (c.parse_error is None) == (c.action in MOVES)
            if c.parse_error:
                assert c.action == c.action_text
    assert saw_stop
    again = agent.propose(states, k=3, seed=7, top_logprobs=4)  # deterministic per seed
    assert [[(c.generated_token_ids, c.action) for c in g] for g in again] == \
        [[(c.generated_token_ids, c.action) for c in g] for g in out]
    tol = max(folder_tol(pair_dir / side) for side in ("policy", "reference"))  # cached vs computed
    for c, d in zip((c for g in again for c in g), (d for g in out for d in g)):  # now from the cache
        assert torch.allclose(torch.tensor(c.policy_logprobs), torch.tensor(d.policy_logprobs), atol=tol)
        assert torch.allclose(torch.tensor(c.reference_logprobs), torch.tensor(d.reference_logprobs), atol=tol)


def test_agent_greedy_and_policy_only(pair_dir, truth):
    pair = ModelPair.load_dir(pair_dir)
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=5, temperature=1.0))
    state = _state(1)
    before = pair.reference.stats.snapshot()
    out = agent.propose([state], k=4, seed=0, greedy=True, score_reference=False)
    assert len(out[0]) == 1
    c = out[0][0]
    assert c.reference_logprobs is None and c.top_logprobs is None
    assert pair.reference.stats.minus(before).calls == 0
    prompt = pair.renderer().render(state)
    _, rows, _ = truth("policy", prompt, c.generated_token_ids)
    assert list(c.generated_token_ids) == rows.argmax(-1).tolist()  # argmax of the plain forward
