"""Reward-model inputs: trajectory prefixes -> text -> token ids -> one score per text.

Shared by the reward-model scorer (``ttsearch.scorers.reward_model``) and the reward-model
trainer (``ttsearch.training.reward_model_training``), so a model is always trained and scored on
exactly the same rendering.

    texts = prefix_texts(tokenizer, trajectory.steps, system_prompt="", history="all")
    ids = [encode(tokenizer, text, max_length=1024) for text in texts]
    scores = forward_scores(model, ids, pad_token_id=model.config.pad_token_id, batch_size=16)

Rendering (deterministic): the prefix ending after step ``t`` is the conversation
``[system?] user: observation_0, assistant: action_text_0, ..., user: observation_t,
assistant: action_text_t``. The observation that answers the last action is never included
(for a finished episode it would announce the outcome). ``history`` keeps the whole
conversation ("all") or only the last ``k`` earlier (observation, action) pairs before the
current one (``0``: the current observation and action only, enough for Markov environments
such as the maze). With a tokenizer chat template the messages go through
``apply_chat_template``; otherwise the plain format is::

    System: <system prompt>          (only when non-empty)

    Observation: <observation text>
    Action: <action text>

with one blank line between blocks. Encoding truncates from the *left* (the latest turns
matter most) to ``max_length`` tokens; a tokenizer's own special tokens (BERT's [CLS]/[SEP])
are added for the plain format and kept inside the limit.

Scores: ``num_labels == 1`` -> the raw logit (a scalar reward); ``num_labels == 2`` -> the
softmax probability of label 1 ("success"). Batches are right-padded with the model's pad id
(sequence-classification heads pool the last non-pad token, so padding changes nothing);
without a pad id every text runs alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttsearch.envs.errors import ConfigError

RM_MANIFEST = "ttsearch_rm.json"
"""The file ``ttsearch rm train`` writes next to a reward model (recipe, metrics, render settings)."""


def check_history(history: int | str) -> int | None:
    """``"all"`` -> None (whole conversation); an int ``k >= 0`` -> k; else ConfigError."""
    if history == "all":
        return None
    if isinstance(history, int) and not isinstance(history, bool) and history >= 0:
        return history
    raise ConfigError(f"history must be 'all' or an integer >= 0 (earlier turns kept), got {history!r}")


def prefix_messages(steps: Sequence[Any], t: int, *, system_prompt: str = "",
                    history: int | str = "all") -> list[dict[str, str]]:
    """The chat messages of the prefix ending after step ``t`` (0-based)."""
    keep = check_history(history)
    first = 0 if keep is None else max(0, t - keep)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for step in steps[first: t + 1]:
        messages.append({"role": "user", "content": step.observation.text})
        messages.append({"role": "assistant", "content": step.action_text})
    return messages


def render_messages(tokenizer: Any, messages: Sequence[dict[str, str]]) -> str:
    """Messages -> text: the tokenizer's chat template if it has one, else the plain format."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=False)
    names = {"system": "System", "user": "Observation", "assistant": "Action"}
    blocks: list[str] = []
    for message in messages:
        line = f"{names[message['role']]}: {message['content']}"
        if message["role"] == "assistant" and blocks:
            blocks[-1] += "\n" + line  # an action sits right under its observation
        else:
            blocks.append(line)
    return "\n\n".join(blocks)


def prefix_texts(tokenizer: Any, steps: Sequence[Any], *, system_prompt: str = "",
                 history: int | str = "all") -> list[str]:
    """One text per step: the rendered prefix ending after that step."""
    return [render_messages(tokenizer, prefix_messages(steps, t, system_prompt=system_prompt, history=history))
            for t in range(len(steps))]


def encode(tokenizer: Any, text: str, *, max_length: int) -> list[int]:
    """Token ids of ``text``, truncated from the left to ``max_length`` (special tokens kept)."""
    if max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    if getattr(tokenizer, "chat_template", None):
        # The template already wrote any BOS/special tokens into the text.
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])[-max_length:]
    full = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if len(full) <= max_length:
        return full
    body = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    # full == head + body + tail (e.g. [CLS] body [SEP]): cut the body, keep the specials.
    for i in range(len(full) - len(body) + 1):
        if full[i: i + len(body)] == body:
            head, tail = full[:i], full[i + len(body):]
            room = max_length - len(head) - len(tail)
            if room < 1:
                raise ConfigError(f"max_length {max_length} leaves no room beside "
                                  f"{len(head) + len(tail)} special tokens")
            return head + body[-room:] + tail
    return full[-max_length:]


def scores_from_logits(logits: Any) -> list[float]:
    """(batch, 1) logits -> the logit; (batch, 2) -> P(label 1) by softmax."""
    # torch: imported when a reward model scores
    import torch

    if logits.shape[-1] == 1:
        return [float(v) for v in logits[:, 0]]
    if logits.shape[-1] == 2:
        return [float(v) for v in torch.softmax(logits.float(), dim=-1)[:, 1]]
    raise ConfigError(f"a reward model needs num_labels 1 (scalar reward) or 2 (P(success)), "
                      f"got {logits.shape[-1]} labels")


def forward_logits(model: Any, batch: Sequence[Sequence[int]], *, pad_token_id: int | None) -> Any:
    """Logits of one right-padded batch (gradients flow; the trainer uses this too)."""
    # torch: imported when a reward model scores
    import torch

    if pad_token_id is None and len(batch) > 1:
        raise ConfigError("batching needs a pad token id; set model.config.pad_token_id or use batch size 1")
    width = max(len(ids) for ids in batch)
    pad = 0 if pad_token_id is None else pad_token_id
    device = next(model.parameters()).device
    input_ids = torch.tensor([list(ids) + [pad] * (width - len(ids)) for ids in batch], device=device)
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch], device=device)
    return model(input_ids=input_ids, attention_mask=mask).logits


def forward_scores(model: Any, ids: Sequence[Sequence[int]], *, pad_token_id: int | None,
                   batch_size: int = 16) -> list[float]:
    """One score per id list; length-sorted batches (less padding), results in input order."""
    # torch: imported when a reward model scores
    import torch

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if any(len(x) == 0 for x in ids):
        raise ConfigError("a reward-model input rendered to zero tokens; give the steps some text")
    size = batch_size if pad_token_id is not None else 1
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[float] = [0.0] * len(ids)
    with torch.inference_mode():
        for start in range(0, len(order), size):
            chunk = order[start: start + size]
            logits = forward_logits(model, [ids[i] for i in chunk], pad_token_id=pad_token_id)
            for i, value in zip(chunk, scores_from_logits(logits), strict=True):
                out[i] = value
    return out
