"""Train a task-specific reward model (a Monte-Carlo value model) from the policy's own rollouts.

    from ttsearch.training.reward_model_training import RMRecipe, train_reward_model
    manifest = train_reward_model(RMRecipe(), "runs/maze-rm")         # ~2-3 CPU minutes on one core
    scorer = make_scorer("reward_model", path="runs/maze-rm")         # then rank trajectories with it
    # any pair from `ttsearch pair grpo` (reasoning_gym): a linear probe, no fine-tuning
    train_reward_model(RMRecipe(env="reasoning_gym", method="probe"), "runs/rg-rm", pair_dir="runs/rg-pair")

The paper's strongest baseline, rebuilt here without any hub:
1. roll out the pair's policy (temperature 1, ``rollouts_per_layout`` per layout) on
   TRAINING-split layouts only; ``val_fraction`` of those layouts are held out for validation;
2. label every prefix (observation/action turns up to step ``t``, rendered exactly as the
   scorer renders it, see ``ttsearch.scorers.reward_model_text``) with the episode's final success:
   a Monte-Carlo target for the value of that prefix;
3. ``method="finetune"``: fine-tune a sequence-classification model initialised from the pair's
   REFERENCE weights (same architecture, fresh scalar head) with binary cross-entropy on the
   prefixes, keeping the epoch with the best validation AUROC (early stopping with ``patience``);
   ``method="probe"``: freeze the reference, fit an L2 logistic regression on the features its
   scalar head reads and write the coefficients into that head (``ttsearch.training.rm_probe``;
   C chosen on validation AUROC from ``probe_cs``), minutes cheaper for a 100M+ model;
4. ``save_pretrained`` the model and tokenizer and write ``ttsearch_rm.json`` (recipe, data
   sizes, validation AUROC, render settings the scorer reads back).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from ttsearch.agents import Agent, ModelPair, PairManifest, PlainActionParser, SamplingParams
from ttsearch.agents.checkpoints.shipped import default_pair_dir
from ttsearch.envs import list_tasks
from ttsearch.envs.base import Trajectory
from ttsearch.envs.errors import ConfigError, unknown_choice
from ttsearch.scorers import make_scorer
from ttsearch.scorers.metrics import auroc
from ttsearch.scorers.reward_model_text import (
    RM_MANIFEST,
    encode,
    forward_logits,
    forward_scores,
    prefix_texts,
)
from ttsearch.training.grpo_recipe import PRESETS, make_agent
from ttsearch.training.rm_probe import fit_probe, head_features, load_probe_base, set_head
from ttsearch.training.rollouts import play_lockstep

SELECT = ("best_val", "last")
METHODS = ("finetune", "probe")


@dataclass(frozen=True)
class RMEnv:
    """How the recipe lists one environment's training tasks and seeds its rollouts."""

    task_kwargs: Callable[[int, int], dict]
    """(limit, recipe seed) -> extra keyword arguments of ``list_tasks``."""
    reset_seed: Callable[[Any, int], int]
    """(task, rollout index) -> ``env.reset`` seed."""
    shipped_pair: bool
    """Whether ``ttsearch.agents.checkpoints.shipped`` ships a pair for it (else ``pair_dir`` is required)."""


RM_ENVS: dict[str, RMEnv] = {
    # maze: the layout comes from the task; distinct reset seeds give distinct slip streams
    "maze": RMEnv(lambda limit, seed: {"episode_seed": seed}, lambda task, r: task.seed * 1000 + r, True),
    # reasoning_gym: the reset seed IS the item, so every rollout replays it; samples differ by
    # the agent's sampling seed (one stream per row)
    "reasoning_gym": RMEnv(lambda limit, seed: {"n": limit}, lambda task, r: task.seed, False),
}


@dataclass(frozen=True)
class RMRecipe:
    """Every knob of :func:`train_reward_model` (written into the manifest)."""

    env: str = "maze"
    method: str = "finetune"
    """"finetune" (the whole reference network + head) or "probe" (a linear head on frozen features)."""
    seed: int = 0
    train_layouts: int = 240
    """Training-split layouts rolled out (validation ones included)."""
    val_fraction: float = 0.2
    rollouts_per_layout: int = 8
    max_steps: int = 20
    history: int | str = 0
    """Earlier (observation, action) pairs kept in each prefix: 0 suits the fully observed maze."""
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 3
    max_length: int = 256
    select: str = "best_val"
    """Which epoch's weights to keep: "best_val" (early stopping) or "last" (when the validation
    set is too small to choose by, as in the quick run)."""
    probe_cs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
    """method="probe": inverse L2 strengths tried on standardised features (best validation AUROC)."""

    def __post_init__(self) -> None:
        if self.env not in RM_ENVS:
            raise ConfigError(f"reward-model recipe env must be 'maze' or 'reasoning_gym' (a pair from "
                              f"`ttsearch pair grpo`), got {self.env!r}")
        if self.method not in METHODS:
            raise ConfigError(unknown_choice("reward-model method", self.method, METHODS))
        for name in ("train_layouts", "rollouts_per_layout", "max_steps", "epochs", "batch_size", "max_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.select not in SELECT:
            raise ConfigError(unknown_choice("epoch selection", self.select, SELECT))
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")

    @classmethod
    def quick(cls, **overrides: Any) -> RMRecipe:
        """A tiny run (well under a minute) that proves the pipeline trains."""
        return replace(cls(train_layouts=12, rollouts_per_layout=4, epochs=6, batch_size=32, lr=3e-3,
                           val_fraction=0.25, select="last"), **overrides)


@dataclass(frozen=True)
class Example:
    """One training row: a rendered prefix and its Monte-Carlo label (the episode's success)."""

    text: str
    label: float
    episode: int


def prefix_examples(tokenizer: Any, trajectories: Sequence[Trajectory], *, system_prompt: str = "",
                    history: int | str = 0) -> list[Example]:
    """Every prefix of every trajectory, labelled 1.0 if its episode succeeded else 0.0."""
    out = []
    for index, trajectory in enumerate(trajectories):
        label = 1.0 if trajectory.success else 0.0
        for text in prefix_texts(tokenizer, trajectory.steps, system_prompt=system_prompt, history=history):
            out.append(Example(text, label, index))
    return out


def roll_out(agent: Any, tasks: Sequence[Any], *, rollouts: int, seed: int, max_steps: int,
             score_reference: bool = False,
             reset_seed: Callable[[Any, int], int] = RM_ENVS["maze"].reset_seed) -> list[Trajectory]:
    """``rollouts`` sampled episodes per task, played in lockstep (``training.rollouts``);
    episode ``r`` of a task starts from ``env.reset(seed=reset_seed(task, r))``."""
    starts = [(task, reset_seed(task, r)) for task in tasks for r in range(rollouts)]
    return play_lockstep(agent, starts, seed=seed, max_steps=max_steps, score_reference=score_reference)


def load_agent(pair_dir: str | Path) -> tuple[Any, Any, dict]:
    """(agent, pair, env kwargs) at temperature 1: a pair from `ttsearch pair grpo` samples with
    its preset's parser and token limit (as it was trained and evaluated); the maze pair exactly
    as the demo does."""

    pair = ModelPair.load_dir(pair_dir)
    env_kwargs = dict(pair.manifest.env_kwargs) if pair.manifest else {}
    preset = (pair.manifest.extra.get("recipe") or {}).get("preset") if pair.manifest else None
    if preset in PRESETS:
        return make_agent(pair, pair.tokenizer, PRESETS[preset], temperature=1.0), pair, env_kwargs
    env_kwargs.pop("gamma", None)  # a solver setting, not needed to play
    agent = Agent(pair, sampling=SamplingParams(max_new_tokens=4, temperature=1.0),
                  parser=PlainActionParser(match_admissible=True))
    return agent, pair, env_kwargs


def merge_duplicates(examples: Sequence[Example]) -> tuple[list[str], list[float], list[int]]:
    """Identical prefixes -> one row: (texts, mean label, count). Weighting the BCE by the count
    gives exactly the loss over the duplicated rows, with one forward pass per distinct text."""
    sums: dict[str, list[float]] = {}
    for e in examples:
        entry = sums.setdefault(e.text, [0.0, 0])
        entry[0] += e.label
        entry[1] += 1
    texts = list(sums)
    return texts, [sums[t][0] / sums[t][1] for t in texts], [int(sums[t][1]) for t in texts]


def _fit(model: Any, train: tuple[list[list[int]], list[float], list[int]], val_ids: list[list[int]],
         val_examples: Sequence[Example], val_index: list[int], recipe: RMRecipe, pad: int,
         log: Callable[[str], None]) -> tuple[list[dict], int]:
    """Weighted BCE; with ``select="best_val"`` early stopping on validation prefix AUROC
    restores the best epoch's weights, with ``"last"`` every epoch runs and the last is kept."""

    ids, targets, weights = train
    torch.manual_seed(recipe.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    rng = np.random.default_rng(recipe.seed)
    val_y = [e.label for e in val_examples]
    history, best, best_state, best_epoch, stale = [], -math.inf, None, 0, 0
    for epoch in range(recipe.epochs):
        model.train()
        order = rng.permutation(len(ids))
        total, seen = 0.0, 0
        for start in range(0, len(order), recipe.batch_size):
            chunk = order[start: start + recipe.batch_size]
            logits = forward_logits(model, [ids[i] for i in chunk], pad_token_id=pad)[:, 0]
            target = torch.tensor([targets[i] for i in chunk], dtype=logits.dtype)
            weight = torch.tensor([weights[i] for i in chunk], dtype=logits.dtype)
            rows = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
            loss = (rows * weight).sum() / weight.sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * float(weight.sum())
            seen += int(weight.sum())
        model.eval()
        unique_scores = forward_scores(model, val_ids, pad_token_id=pad, batch_size=128)
        val_scores = [unique_scores[i] for i in val_index]
        val_auc = auroc(val_scores, val_y)
        val_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(
            torch.tensor(val_scores), torch.tensor(val_y)))
        row = {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss, "val_auroc": val_auc}
        history.append(row)
        log(json.dumps(row))
        metric = val_auc if val_auc is not None else -val_loss
        if recipe.select == "last":
            continue
        if metric > best:
            best, best_epoch, stale = metric, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= recipe.patience:
                break
    if recipe.select == "last":
        return history, len(history) - 1
    model.load_state_dict(best_state)
    return history, best_epoch


def _recipe_pair(recipe: RMRecipe, pair_dir: str | Path | None) -> tuple[Path, Any, Any, dict]:
    """(pair folder, agent, pair, env kwargs) of the policy whose rollouts label the RM's data."""
    if pair_dir is None and not RM_ENVS[recipe.env].shipped_pair:
        raise ConfigError(f"no pair is shipped for env {recipe.env!r}: pass the pair folder "
                          "(`ttsearch rm train --pair DIR`, e.g. one made by `ttsearch pair grpo`)")
    pair_dir = Path(pair_dir) if pair_dir is not None else default_pair_dir(recipe.env)
    agent, pair, env_kwargs = load_agent(pair_dir)
    pair_env = pair.manifest.env if pair.manifest else None
    if pair_env not in (None, recipe.env):
        raise ConfigError(f"--env {recipe.env!r} does not match the pair's env {pair_env!r} "
                          f"({pair_dir}/ttsearch_pair.json); pass --env {pair_env}")
    return pair_dir, agent, pair, env_kwargs


def _rollouts(recipe: RMRecipe, agent: Any, env_kwargs: dict) -> tuple[list, list, list, list]:
    """Training and validation layouts (disjoint) and the policy's rollouts of each."""
    rm_env = RM_ENVS[recipe.env]
    tasks = list_tasks(recipe.env, split="train", limit=recipe.train_layouts,
                       **rm_env.task_kwargs(recipe.train_layouts, recipe.seed), **env_kwargs)
    n_val = max(1, round(len(tasks) * recipe.val_fraction))
    val_tasks, train_tasks = tasks[:n_val], tasks[n_val:]  # split by layout: no layout in both
    if not train_tasks:
        raise ConfigError(f"train_layouts={recipe.train_layouts} leaves no training layouts after validation")
    with torch.inference_mode():
        train_traj = roll_out(agent, train_tasks, rollouts=recipe.rollouts_per_layout, seed=recipe.seed,
                              max_steps=recipe.max_steps, reset_seed=rm_env.reset_seed)
        val_traj = roll_out(agent, val_tasks, rollouts=recipe.rollouts_per_layout, seed=recipe.seed + 1,
                            max_steps=recipe.max_steps, reset_seed=rm_env.reset_seed)
    return train_tasks, val_tasks, train_traj, val_traj


def train_reward_model(recipe: RMRecipe, out: str | Path, *, pair_dir: str | Path | None = None,
                       log: Callable[[str], None] = print) -> dict:
    """Roll out, label, train, save; returns the manifest written to ``out/ttsearch_rm.json``."""

    started, cpu_started = time.perf_counter(), time.process_time()
    pair_label = str(pair_dir) if pair_dir is not None else f"default:{recipe.env}"
    pair_dir, agent, pair, env_kwargs = _recipe_pair(recipe, pair_dir)
    train_tasks, val_tasks, train_traj, val_traj = _rollouts(recipe, agent, env_kwargs)
    rollout_s = time.perf_counter() - started
    # Render with the system prompt the policy saw: the pair's override, else the task's own.
    override = pair.manifest.prompt.system_prompt if pair.manifest else None
    system_prompt = override if override is not None else train_traj[0].system_prompt
    log(f"rolled out {len(train_traj)} train + {len(val_traj)} val episodes in {rollout_s:.1f}s")
    tokenizer = pair.tokenizer
    train_ex = prefix_examples(tokenizer, train_traj, system_prompt=system_prompt, history=recipe.history)
    val_ex = prefix_examples(tokenizer, val_traj, system_prompt=system_prompt, history=recipe.history)
    train_texts, train_targets, train_counts = merge_duplicates(train_ex)
    val_texts = list(dict.fromkeys(e.text for e in val_ex))
    position = {t: i for i, t in enumerate(val_texts)}
    val_index = [position[e.text] for e in val_ex]
    train_ids = [encode(tokenizer, t, max_length=recipe.max_length) for t in train_texts]
    val_ids = [encode(tokenizer, t, max_length=recipe.max_length) for t in val_texts]
    log(f"{len(train_ex)} train prefixes ({len(train_texts)} distinct), {len(val_ex)} val prefixes")
    train = (train_ids, train_targets, train_counts)
    if recipe.method == "probe":
        model, val_scores, details = _probe(pair_dir, train, val_ids, val_ex, val_index, recipe, log)
    else:
        model, val_scores, details = _finetune(pair_dir, train, val_ids, val_ex, val_index, recipe, log)
    last = {}  # the trajectory (outcome) score is the score of the episode's last prefix
    for example, score in zip(val_ex, val_scores, strict=True):
        last[example.episode] = score
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = {
        "env": recipe.env,
        "env_kwargs": env_kwargs,
        "pair": pair_label,
        **details,
        "render": {"system_prompt": system_prompt, "history": recipe.history, "max_length": recipe.max_length},
        "recipe": asdict(recipe),
        "data": {
            "train_layouts": len(train_tasks), "val_layouts": len(val_tasks),
            "train_episodes": len(train_traj), "val_episodes": len(val_traj),
            "train_prefixes": len(train_ex), "train_distinct_prefixes": len(train_texts),
            "val_prefixes": len(val_ex),
            "train_success_rate": sum(t.success for t in train_traj) / len(train_traj),
            "val_success_rate": sum(t.success for t in val_traj) / len(val_traj),
        },
        "val_prefix_auroc": auroc(val_scores, [e.label for e in val_ex]),
        "val_trajectory_auroc": auroc([last[i] for i in range(len(val_traj))], [float(t.success) for t in val_traj]),
        "rollout_seconds": round(rollout_s, 1),
        "train_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }
    (out / RM_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _finetune(pair_dir: Path, train: tuple, val_ids: list[list[int]], val_ex: Sequence[Example],
              val_index: list[int], recipe: RMRecipe, log: Callable[[str], None]) -> tuple[Any, list[float], dict]:
    """method="finetune": (model, validation example scores, manifest entries)."""

    with torch.random.fork_rng(devices=[]):  # the fresh head's init must not depend on sampling state
        torch.manual_seed(recipe.seed)
        model = AutoModelForSequenceClassification.from_pretrained(PairManifest.read(pair_dir).reference_dir(pair_dir), num_labels=1)
    pad = model.config.pad_token_id
    history, best_epoch = _fit(model, train, val_ids, val_ex, val_index, recipe, pad, log)
    model.eval()
    unique_scores = forward_scores(model, val_ids, pad_token_id=pad, batch_size=128)
    details = {"kind": "outcome value model (Monte-Carlo success targets on prefixes)",
               "init": "pair reference weights + fresh scalar head (num_labels=1; score = logit of P(success))",
               "history": history, "best_epoch": best_epoch}
    return model, [unique_scores[i] for i in val_index], details


def _probe(pair_dir: Path, train: tuple, val_ids: list[list[int]], val_ex: Sequence[Example],
           val_index: list[int], recipe: RMRecipe, log: Callable[[str], None]) -> tuple[Any, list[float], dict]:
    """method="probe": (model, validation example scores, manifest entries); see rm_probe."""

    train_ids, train_targets, train_counts = train
    # the manifest names the reference: a sub-folder, or an imported model (shipped LoRA pairs)
    model = load_probe_base(PairManifest.read(pair_dir).reference_dir(pair_dir))
    pad = model.config.pad_token_id
    x_train = head_features(model, train_ids, pad_token_id=pad)
    x_val = head_features(model, val_ids, pad_token_id=pad)[val_index]  # one row per validation example
    fit = fit_probe(x_train, train_targets, train_counts, x_val, [e.label for e in val_ex],
                    cs=recipe.probe_cs, seed=recipe.seed)
    for row in fit.history:
        log(json.dumps(row))
    set_head(model, fit.weight)
    val_scores = (x_val @ fit.weight).tolist()  # = decision_function - intercept (the saved head's score)
    details = {"kind": "outcome value probe (Monte-Carlo success targets on prefixes)",
               "init": "pair reference weights, frozen; scalar head (num_labels=1) = L2 logistic-regression "
                       "coefficients on the features the head reads (last non-pad token, final norm)",
               "probe": {"C": fit.c, "val_auroc_by_C": list(fit.history), "feature_dim": int(x_train.shape[1]),
                         "dropped_intercept": fit.intercept,
                         "note": "score = logit P(success) - dropped_intercept: the head has no bias; rankings, "
                                 "AUROC, Spearman and rank/min-max-mapped ECE are invariant to the constant"}}
    return model, val_scores, details


def evaluate_reward_model(out: str | Path, pair_dir: str | Path | None, *, layouts: int, rollouts: int,
                          seed: int, env: str = "maze", max_steps: int = 20) -> dict:
    """Trajectory-level AUROC of the saved RM, progress advantage and policy log-prob on the same
    held-out episodes (the uncertainty-quantification application)."""
    import torch  # heavy: imported on use

    rm_env = RM_ENVS[env]
    agent, pair, env_kwargs = load_agent(Path(pair_dir) if pair_dir is not None else default_pair_dir(env))
    tasks = list_tasks(env, split="test", limit=layouts, **rm_env.task_kwargs(layouts, seed), **env_kwargs)
    with torch.inference_mode():
        episodes = roll_out(agent, tasks, rollouts=rollouts, seed=seed + 7, max_steps=max_steps,
                            score_reference=True, reset_seed=rm_env.reset_seed)
    labels = [float(t.success) for t in episodes]
    scorers = {"reward_model": make_scorer("reward_model", path=str(out)),
               "reward_model_process_min": make_scorer("reward_model", path=str(out), kind="process"),
               "progress_advantage": make_scorer("progress_advantage", beta=pair.beta),
               "policy_logprob": make_scorer("policy_logprob")}
    result = {"layouts": len(tasks), "episodes": len(episodes), "success_rate": sum(labels) / len(labels)}
    for label, scorer in scorers.items():
        result[f"auroc_{label}"] = auroc([scorer.score_trajectory(t.steps) for t in episodes], labels)
    return result
