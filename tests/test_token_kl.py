"""Per-token KL(π_θ ‖ π_ref) against an independent truth: two plain full forwards of a tiny pair.

For every span token j the truth is ``Σ_v p_j(v)(log p_j(v) − log q_j(v))`` with p, q the
log-softmax rows of each model's own full forward over prompt + span (eager attention, no cache,
float64 sum). The engine's rows are float32 log-softmax values (|error| ~ 1e-6 per entry); a KL
sums p-weighted differences, so its error stays at that scale: ATOL 1e-5, as for the log-probs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttsearch.agents import (
    Agent,
    ModelPair,
    PairManifest,
    SamplingParams,
    ScoreRequest,
    step_from_candidate,
)
from ttsearch.agents.engines.batching import BatchingBackend
from ttsearch.agents.token_kl import exact_token_kl
from ttsearch.envs.base import Observation, StepResult, Task, Trajectory
from ttsearch.envs.errors import BackendError
from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer

CORPUS = ["You are in a maze. There is a wall to the north.", "Valid actions: north, south, east, west.",
          "Action: north", "Action: east", "Action: south", "Action: west"] * 20
MOVES = ("north", "south", "east", "west")
ATOL = 1e-5


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    tok = train_tokenizer(CORPUS, vocab_size=400)
    root = tmp_path_factory.mktemp("klpair")
    save_pair_folder(make_model(tok, init_std=0.1, seed=1), tok, root / "policy")
    save_pair_folder(make_model(tok, init_std=0.1, seed=2), tok, root / "reference")
    PairManifest(beta=0.5, env="maze").write(root)
    return root


@pytest.fixture(scope="module")
def truth(pair_dir):
    from transformers import AutoModelForCausalLM

    models = {role: AutoModelForCausalLM.from_pretrained(pair_dir / role, attn_implementation="eager").eval()
              for role in ("policy", "reference")}

    def rows(role, prompt, tokens):
        with torch.no_grad():
            logits = models[role](torch.tensor([list(prompt) + list(tokens)])).logits[0]
        return logits.double().log_softmax(-1)[len(prompt) - 1: len(prompt) - 1 + len(tokens)]

    def kl(prompt, tokens):
        p, q = rows("policy", prompt, tokens), rows("reference", prompt, tokens)
        return (p.exp() * (p - q)).sum(-1).tolist()

    return kl, rows


def _state() -> Trajectory:
    return Trajectory(Task("maze", "t0"), Observation("You are in a maze. Step 1 of 20.", MOVES),
                      system_prompt="Move: north, south, east or west.")


def test_exact_token_kl_is_the_textbook_sum():
    with np.errstate(divide="ignore"):
        p = np.log(np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]))
    q = np.log(np.array([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]]))
    assert exact_token_kl(p, q) == pytest.approx([np.log(2.0), 0.0], abs=1e-15)  # 0·log 0 terms are 0
    with pytest.raises(BackendError, match="one shape"):
        exact_token_kl(p, q[:, :2])
    assert exact_token_kl(np.zeros((0, 3)), np.zeros((0, 0))) == ()  # an empty span: no tokens, no KL


def test_sampled_and_scored_rows_are_the_models_distributions(pair_dir, truth):
    pair = ModelPair.load_dir(pair_dir)
    prompt = pair.renderer().render(_state())
    sample = pair.policy.sample([prompt], n=3, params=SamplingParams(max_new_tokens=5, seed=0, full_logprobs=True))[0]
    _, rows = truth
    for s in sample:
        want = rows("policy", prompt, s.token_ids).numpy()
        assert s.full_logprobs.shape == want.shape
        assert np.abs(s.full_logprobs - want).max() < ATOL
        scored = pair.reference.score([ScoreRequest(prompt, s.token_ids, full_logprobs=True)])[0]
        assert np.abs(scored.full_logprobs - rows("reference", prompt, s.token_ids).numpy()).max() < ATOL
        assert scored.logprobs == pytest.approx([scored.full_logprobs[i, t] for i, t in enumerate(s.token_ids)],
                                                abs=ATOL)
    empty = pair.reference.score([ScoreRequest(prompt, (), full_logprobs=True)])[0]
    assert empty.logprobs == () and empty.full_logprobs.shape == (0, pair.reference.vocab_size)


def test_propose_and_rescore_record_the_exact_per_token_kl(pair_dir, truth):
    kl_truth, _ = truth
    pair = ModelPair.load_dir(pair_dir)
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=5))
    prompt = agent.renderer.render(_state())
    candidates = agent.propose([_state()], k=4, seed=3, token_kl=True)[0]
    for cand in candidates:
        assert cand.token_kl is not None and len(cand.token_kl) == len(cand.action_token_ids)
        assert cand.token_kl == pytest.approx(kl_truth(prompt, cand.action_token_ids), abs=ATOL)
        assert all(v >= -ATOL for v in cand.token_kl)  # a KL is never negative
    plain = agent.propose([_state()], k=4, seed=3)[0]  # without the option: same samples, no KL
    assert [c.action_token_ids for c in plain] == [c.action_token_ids for c in candidates]
    assert all(c.token_kl is None for c in plain)


def test_rescore_gives_the_same_kl_through_a_batching_engine(pair_dir, truth):
    kl_truth, _ = truth
    pair = ModelPair.load_dir(pair_dir)
    batched = pair.with_backends(BatchingBackend(pair.policy), BatchingBackend(pair.reference))
    agent = Agent(batched, sampling=SamplingParams(max_new_tokens=5))
    try:
        state = _state()
        cand = agent.propose([state], k=1, seed=0)[0][0]
        traj = state.extended(step_from_candidate(state.observation, cand,
                                                  StepResult(state.observation, 0.0, False, False)))
        rescored = agent.rescore([traj], token_kl=True)[0]
        prompt = agent.renderer.render(state)
        assert rescored.steps[0].token_kl == pytest.approx(kl_truth(prompt, cand.action_token_ids), abs=ATOL)
    finally:
        batched.policy.close()
        batched.reference.close()


def test_engines_without_whole_rows_are_refused_in_one_line(pair_dir):
    pair = ModelPair.load_dir(pair_dir)

    class TopKOnly:  # what an SGLang backend declares
        name, supports_full_logprobs = "sglang-policy", False

        def __getattr__(self, item):
            return getattr(pair.policy, item)

    agent = Agent(pair.with_backends(TopKOnly(), pair.reference), sampling=SamplingParams(max_new_tokens=3))
    with pytest.raises(BackendError) as err:
        agent.propose([_state()], k=2, seed=0, token_kl=True)
    assert "\n" not in str(err.value) and "sglang-policy" in str(err.value) and "transformers" in str(err.value)
