"""The linear value probe RM: features = what the head reads, saved head = the sklearn probe."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sklearn")

from sklearn.metrics import roc_auc_score  # noqa: E402

from ttsearch.envs.base import Observation, Step, StepResult  # noqa: E402
from ttsearch.envs.errors import ConfigError  # noqa: E402
from ttsearch.scorers import make_scorer  # noqa: E402
from ttsearch.training.reward_model_training import RM_ENVS, RMRecipe, train_reward_model  # noqa: E402
from ttsearch.training.rm_probe import fit_probe, head_features, load_probe_base, set_head  # noqa: E402
from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer  # noqa: E402

from tolerances import EXACT, logprob_tol  # noqa: E402

SYSTEM = "Solve the problem."
PROBLEMS = [(a, b) for a in range(1, 5) for b in range(1, 4)]


def _episode(a: int, b: int, answer: int) -> tuple[Step, ...]:
    """A one-turn arithmetic episode (the chain_sum shape); reward 1 iff the answer is right."""
    reward = 1.0 if answer == a + b else 0.0
    result = StepResult(Observation("Correct" if reward else "Wrong"), reward, True, False)
    return (Step(observation=Observation(f"What is {a} + {b}?"), action_text=str(answer), action=str(answer),
                 result=result),)


@pytest.fixture(scope="module")
def tok():
    corpus = [f"What is {a} + {b}? {a + b}" for a, b in PROBLEMS] + [SYSTEM, "Correct", "Wrong"]
    return train_tokenizer(corpus * 4, vocab_size=300)


@pytest.fixture(scope="module")
def reference(tok, tmp_path_factory):
    """A tiny causal Llama saved as a 'reference' folder (as a pair holds it)."""
    model = make_model(tok, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, arch="llama",
                       seed=5, init_std=0.2)
    return save_pair_folder(model, tok, tmp_path_factory.mktemp("pair") / "reference")


@pytest.fixture(scope="module")
def episodes():
    rng = random.Random(0)
    out = []
    for a, b in PROBLEMS:
        out += [_episode(a, b, a + b), _episode(a, b, a + b + rng.choice([-2, -1, 1, 2]))]
    return out


def _plain_ids(tok, steps, system=SYSTEM):
    """Independent rendering: the chat template over hand-built messages, tokenised plainly."""
    messages = [{"role": "system", "content": system},
                {"role": "user", "content": steps[-1].observation.text},
                {"role": "assistant", "content": steps[-1].action_text}]
    return tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]


def _plain_features(reference, ids_list):
    """The base model's final-norm hidden state at the last token, one unpadded text at a time."""
    base = transformers.AutoModelForCausalLM.from_pretrained(reference).eval()
    with torch.no_grad():
        return np.array([base.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1].double().numpy()
                         for ids in ids_list])


def test_head_features_are_the_last_token_hidden_state(tok, reference, episodes):
    model = load_probe_base(reference)
    ids = [_plain_ids(tok, steps, system=" ".join([SYSTEM] * (1 + i % 3))) for i, steps in enumerate(episodes[:6])]
    assert len({len(x) for x in ids}) > 1  # differing lengths: batches really pad
    got = head_features(model, ids, pad_token_id=model.config.pad_token_id, batch_size=4)
    expected = _plain_features(reference, ids)
    # batched + padded vs one text alone: two float32 forwards (tests/tolerances.py), M = |feature|
    tol = logprob_tol(torch.float32, np.abs(expected).max(), model.config.num_hidden_layers)
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
    assert np.abs(expected[0] - expected[1]).max() > 1e-3  # not a comparison of constants
    assert isinstance(model.score, torch.nn.Linear)  # the head is restored afterwards


def test_saved_probe_scores_equal_decision_function_minus_intercept(tok, reference, episodes, tmp_path):
    labels = [float(steps[-1].result.reward >= 1) for steps in episodes]
    x = _plain_features(reference, [_plain_ids(tok, steps) for steps in episodes])
    fit = fit_probe(x[:16], labels[:16], None, x[16:], labels[16:], cs=(0.01, 1.0))
    model = load_probe_base(reference)
    set_head(model, fit.weight)
    out = save_pair_folder(model, tok, tmp_path / "rm")
    (out / "ttsearch_rm.json").write_text(json.dumps({"render": {"system_prompt": SYSTEM, "history": 0,
                                                                 "max_length": 64}}))
    scorer = make_scorer("reward_model", path=str(out), kind="outcome")
    scores = [scorer.score_trajectory(steps) for steps in episodes]
    # independent truth: sklearn's own decision function; its value at x=0 is the raw-space intercept
    decision = fit.pipeline.decision_function(x)
    intercept = fit.pipeline.decision_function(np.zeros((1, x.shape[1])))[0]
    # the head is w·x in float32 over float32 features; sklearn's is float64 over the same
    # features: the rule with M = Σ|w_i|·max|x| (each term's rounding and each feature's noise)
    tol = logprob_tol(torch.float32, np.abs(fit.weight).sum() * np.abs(x).max(), model.config.num_hidden_layers)
    assert scores == pytest.approx((decision - intercept).tolist(), abs=tol)
    assert fit.intercept == pytest.approx(intercept, abs=EXACT)  # float64 on both sides
    assert np.ptp(scores) > 1e-2  # the scores vary across texts


def test_fractional_targets_equal_duplicated_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    # merged rows: targets 2/3 with count 3, 0 with count 1, ... vs the rows spelled out
    targets, counts = [2 / 3, 0.0, 1.0, 0.5, 1.0, 0.0], [3, 1, 2, 2, 1, 1]
    rows_x, rows_y = [], []
    for xi, t, c in zip(x, targets, counts, strict=True):
        ones = round(t * c)
        rows_x += [xi] * c
        rows_y += [1.0] * ones + [0.0] * (c - ones)
    val_x, val_y = rng.normal(size=(4, 3)), [1.0, 0.0, 1.0, 0.0]
    merged = fit_probe(x, targets, counts, val_x, val_y, cs=(0.5,))
    spelled = fit_probe(np.array(rows_x), rows_y, None, val_x, val_y, cs=(0.5,))
    # two lbfgs runs on equal objectives agree to the solver's stopping tolerance, not to rounding
    np.testing.assert_allclose(merged.weight, spelled.weight, rtol=1e-4, atol=1e-6)
    assert merged.intercept == pytest.approx(spelled.intercept, abs=1e-5)


def test_c_is_chosen_by_validation_auroc():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 5))
    y = (x[:, 0] + 0.8 * rng.normal(size=80) > 0).astype(float)
    fit = fit_probe(x[:50], y[:50], None, x[50:], y[50:], cs=(1e-4, 1e-2, 1.0))
    aucs = {row["C"]: row["val_auroc"] for row in fit.history}
    assert aucs[fit.c] == max(aucs.values())
    assert fit.val_auroc == pytest.approx(roc_auc_score(y[50:], fit.pipeline.decision_function(x[50:])), abs=EXACT)
    with pytest.raises(ConfigError, match="all successes or all failures"):
        fit_probe(x, np.zeros(80), None, x, y, cs=(1.0,))
    with pytest.raises(ConfigError, match="probe_cs"):
        fit_probe(x, y, None, x, y, cs=())


def test_recipe_env_and_method_checks(tmp_path):
    assert RMRecipe(env="reasoning_gym", method="probe").method == "probe"
    with pytest.raises(ConfigError, match="reward-model method"):
        RMRecipe(method="lora")
    with pytest.raises(ConfigError, match="env must be 'maze' or 'reasoning_gym'"):
        RMRecipe(env="sokoban")
    with pytest.raises(ConfigError, match="pass the pair folder"):
        train_reward_model(RMRecipe(env="reasoning_gym", method="probe"), tmp_path / "rm")


def test_reasoning_gym_rollouts_replay_the_task_item():
    # every rollout of a reasoning_gym task must play the same item (reset seed = item seed)
    from ttsearch.envs import list_tasks

    pytest.importorskip("reasoning_gym")
    env_kwargs = {"dataset": "chain_sum", "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                                     "max_digits": 1}, "max_steps": 1}
    rm_env = RM_ENVS["reasoning_gym"]
    tasks = list_tasks("reasoning_gym", split="train", limit=2, **rm_env.task_kwargs(2, 0), **env_kwargs)
    assert [t.seed for t in tasks] == [0, 1]
    for task in tasks:
        texts = {task.make().reset(seed=rm_env.reset_seed(task, r)).text for r in range(3)}
        assert len(texts) == 1
    assert tasks[0].make().reset(seed=0).text != tasks[1].make().reset(seed=1).text
