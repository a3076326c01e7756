"""The reward-model scorer against a plain, unbatched forward pass of a locally made model."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ttsearch.envs.base import Observation, Step, StepResult, Task, Trajectory  # noqa: E402
from ttsearch.envs.errors import ConfigError  # noqa: E402
from ttsearch.scorers import RewardModel, make_scorer  # noqa: E402
from ttsearch.scorers.reward_model_text import encode, prefix_texts  # noqa: E402
from ttsearch.training.tiny_model import make_model, save_pair_folder, train_tokenizer  # noqa: E402

from tolerances import EXACT, logprob_tol  # noqa: E402

CORPUS = ["you are in a room with a door", "open door", "the door opens onto a hall",
          "go north", "a long corridor stretches east and west", "go east", "you see a key"]


def _steps(*pairs: tuple[str, str]) -> tuple[Step, ...]:
    out = []
    for obs, action in pairs:
        result = StepResult(Observation("NEXT-OBS-SHOULD-NOT-APPEAR"), 0.0, False, False)
        out.append(Step(observation=Observation(obs), action_text=action, action=action, result=result))
    return tuple(out)


STEPS = _steps(("you are in a room with a door", "open door"),
               ("the door opens onto a hall", "go north"),
               ("a long corridor stretches east and west and a key lies on the floor", "go east"))


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=300)


def _seq_cls(tok, folder, *, num_labels: int, seed: int = 0):
    causal = make_model(tok, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, seed=seed)
    config = causal.config
    config.num_labels = num_labels
    torch.manual_seed(seed)
    model = transformers.Qwen2ForSequenceClassification(config).eval()
    with torch.no_grad():  # a head big enough that different texts give clearly different scores
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def rm1(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rm1")
    return folder, _seq_cls(tok, folder, num_labels=1)


@pytest.fixture(scope="module")
def rm2(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rm2")
    return folder, _seq_cls(tok, folder, num_labels=2, seed=1)


def _manual_ids(tok, steps, t, system=""):
    """Independent rendering: the chat template over hand-built messages, tokenised plainly."""
    messages = [{"role": "system", "content": system}] if system else []
    for step in steps[: t + 1]:
        messages += [{"role": "user", "content": step.observation.text},
                     {"role": "assistant", "content": step.action_text}]
    text = tok.apply_chat_template(messages, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def _plain_forward(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def _tol(model, id_lists):
    """How far two correct float32 computations of the head's outputs may differ (the rule of
    tests/tolerances.py), M being the head's accumulation Σ|w_i·h_i| at the last token: the output
    itself can be small by cancellation while its rounding follows the terms."""
    magnitude = 0.0
    with torch.no_grad():
        for ids in id_lists:
            h = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            magnitude = max(magnitude, float((model.score.weight.abs() @ h.abs()).max()))
    return logprob_tol(torch.float32, magnitude, model.config.num_hidden_layers)


def test_outcome_scores_equal_unbatched_forward(tok, rm1):
    folder, model = rm1
    scorer = make_scorer("reward_model", path=str(folder), kind="outcome", batch_size=2)
    lengths = [len(_manual_ids(tok, STEPS, t)) for t in range(3)]
    assert len(set(lengths)) == 3  # differing lengths: the batch of 2 really pads
    expected = [float(_plain_forward(model, _manual_ids(tok, STEPS, t))[0]) for t in range(3)]
    tol = _tol(model, [_manual_ids(tok, STEPS, t) for t in range(3)])
    assert scorer.step_scores(STEPS) == pytest.approx(expected, abs=tol)
    assert scorer.score_trajectory(STEPS) == pytest.approx(expected[-1], abs=tol)
    assert max(expected) - min(expected) > 1e-3  # the comparison is not between constants
    assert all("NEXT-OBS-SHOULD-NOT-APPEAR" not in text for text in scorer.texts(STEPS))
    assert scorer.score_trajectory(()) == 0.0 and scorer.step_scores(()) == ()


def test_process_kind_aggregates_step_scores(tok, rm1):
    folder, model = rm1
    orm = RewardModel(path=str(folder), kind="outcome")
    steps = orm.step_scores(STEPS)
    prm_min = RewardModel(path=str(folder), kind="process")
    prm_mean = RewardModel(path=str(folder), kind="process", step_agg="mean")
    # each call runs the model again: another float computation of the same numbers
    tol = _tol(model, [_manual_ids(tok, STEPS, t) for t in range(3)])
    assert prm_min.step_scores(STEPS) == pytest.approx(steps, abs=tol)
    assert prm_min.score_trajectory(STEPS) == pytest.approx(min(steps), abs=tol)
    assert prm_mean.score_trajectory(STEPS) == pytest.approx(sum(steps) / 3, abs=tol + EXACT)


def test_two_label_model_gives_success_probability(tok, rm2):
    folder, model = rm2
    scorer = RewardModel(path=str(folder), batch_size=3)
    logits = [_plain_forward(model, _manual_ids(tok, STEPS, t)) for t in range(3)]
    expected = [float(torch.softmax(row, -1)[1]) for row in logits]
    # d softmax / d logit <= 1/4 per logit, two logits
    tol = 0.5 * _tol(model, [_manual_ids(tok, STEPS, t) for t in range(3)])
    assert scorer.step_scores(STEPS) == pytest.approx(expected, abs=tol)
    assert all(0.0 < v < 1.0 for v in expected)


def test_left_truncation_keeps_the_latest_tokens(tok, rm1):
    folder, model = rm1
    scorer = RewardModel(path=str(folder), max_length=9, batch_size=3)
    expected = [float(_plain_forward(model, _manual_ids(tok, STEPS, t)[-9:])[0]) for t in range(3)]
    tol = _tol(model, [_manual_ids(tok, STEPS, t)[-9:] for t in range(3)])
    assert scorer.step_scores(STEPS) == pytest.approx(expected, abs=tol)
    default = RewardModel(path=str(folder))
    assert default.max_length == model.config.max_position_embeddings


def test_history_and_system_prompt_rendering(tok, rm1):
    folder, model = rm1
    last_only = RewardModel(path=str(folder), history=0)
    text = last_only.texts(STEPS)[2]
    assert "go east" in text and "open door" not in text and "go north" not in text
    traj = Trajectory(Task(env="x", id="x-0"), STEPS[0].observation, STEPS, system_prompt="be quick")
    scorer = RewardModel(path=str(folder))
    assert scorer.texts(traj)[0].startswith("<|im_start|>system\nbe quick<|im_end|>")
    ids = _manual_ids(tok, STEPS, 2, system="be quick")
    expected = float(_plain_forward(model, ids)[0])
    assert scorer.score_trajectory(traj) == pytest.approx(expected, abs=_tol(model, [ids]))
    # an explicit system prompt wins over the trajectory's
    assert RewardModel(path=str(folder), system_prompt="").texts(traj)[0].startswith("<|im_start|>user")


def test_results_are_cached_per_text(rm1):
    folder, _ = rm1
    scorer = RewardModel(path=str(folder))
    calls = []
    forward = scorer.model.forward
    scorer.model.forward = lambda *a, **k: (calls.append(k["input_ids"].shape[0]), forward(*a, **k))[1]
    first = scorer.step_scores(STEPS)
    assert sum(calls) == 3
    assert scorer.step_scores(STEPS) == first and scorer.score_trajectory(STEPS) == first[-1]
    assert sum(calls) == 3  # nothing recomputed


def test_manifest_render_settings_are_the_defaults(tok, rm1, tmp_path):
    folder, model = rm1
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    (tmp_path / "ttsearch_rm.json").write_text(json.dumps({"render": {"system_prompt": "sys", "history": 0}}))
    scorer = RewardModel(path=str(tmp_path))
    assert scorer.history == 0 and scorer.system_prompt == "sys"
    assert scorer.texts(STEPS)[1] == tok.apply_chat_template(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": STEPS[1].observation.text},
         {"role": "assistant", "content": "go north"}], tokenize=False)


def test_plain_format_without_chat_template():
    class NoTemplate:
        chat_template = None

    text = prefix_texts(NoTemplate(), STEPS[:2], system_prompt="S")[1]
    assert text == ("System: S\n\nObservation: you are in a room with a door\nAction: open door\n\n"
                    "Observation: the door opens onto a hall\nAction: go north")


def test_plain_encoding_truncates_inside_special_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, "a": 4, "b": 5, "c": 6}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    bert_like = transformers.PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]")
    assert encode(bert_like, "a b c a b", max_length=10) == [1, 4, 5, 6, 4, 5, 2]
    assert encode(bert_like, "a b c a b", max_length=4) == [1, 4, 5, 2]
    with pytest.raises(ConfigError, match="no room"):
        encode(bert_like, "a b c", max_length=2)


def test_bad_inputs_raise_one_line_config_errors(tok, rm1, tmp_path):
    folder, _ = rm1
    cases = [
        (dict(), "needs path="),
        (dict(path=str(tmp_path / "missing")), "not a model folder"),
        (dict(path="default:nope"), "unknown shipped reward model 'nope'"),
        (dict(path=str(folder), kind="judge"), "unknown reward-model kind 'judge'"),
        (dict(path=str(folder), step_agg="median"), "unknown step aggregation"),
        (dict(path=str(folder), history=-1), "history must be 'all' or an integer"),
        (dict(path=str(folder), batch_size=0), "batch_size must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            make_scorer("reward_model", **kwargs)
        assert "\n" not in str(err.value)
    lm = save_pair_folder(make_model(tok, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32),
                          tok, tmp_path / "lm")
    with pytest.raises(ConfigError, match="Qwen2ForCausalLM, not a sequence-classification reward model"):
        RewardModel(path=str(lm))
    three = tmp_path / "three"
    _seq_cls(tok, three, num_labels=3)
    with pytest.raises(ConfigError, match="num_labels=3"):
        RewardModel(path=str(three))
    scorer = RewardModel(path=str(folder))
    assert scorer.scores_candidates is False and scorer.requires == frozenset({"text"})
    with pytest.raises(ConfigError, match="trajectory_best_of_n"):
        scorer.score_step(STEPS[0])


def test_trajectory_best_of_n_picks_the_rollout_the_reward_model_ranks_first():
    from ttsearch.agents import Agent, ModelPair, PlainActionParser, SamplingParams
    from ttsearch.agents.checkpoints.shipped import default_pair_dir
    from ttsearch.envs import list_tasks
    from ttsearch.search import Budget, make_controller

    pair = ModelPair.load_dir(default_pair_dir("maze"))
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=4),
                  parser=PlainActionParser(match_admissible=True))
    task = list_tasks("maze", split="test", limit=1)[0]
    rm = make_scorer("reward_model", path="default:maze", kind="outcome")
    result = make_controller("trajectory_best_of_n", n=4, seed=3).run(task, task.make, agent, rm, Budget())
    scores = [rm.score_trajectory(r.steps) for r in result.rollouts]
    assert len(scores) == 4
    assert result.trajectory.steps == result.rollouts[scores.index(max(scores))].steps
    assert result.score == pytest.approx(max(scores), abs=EXACT)
    with pytest.raises(ConfigError, match="scores whole trajectories only"):
        make_controller("beam", width=2, expand=2).run(task, task.make, agent, rm, Budget())
