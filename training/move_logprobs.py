"""Log-probabilities of a small, fixed set of actions in many states: one batched forward.

Training recipes and exact-solver benchmarks need log π(a|s) of *every* valid action in every
state, not of sampled ones. With ChatML the prompt of a state ends with the assistant header
and an action turn is ``action tokens + <|im_end|>``; this module scores those turns.

    prompts = [chat_prompt_ids(tok, system, obs) for obs in observations]
    table = action_logprobs(model, prompts, action_ids)    # [n_states, n_actions], whole-turn log-probs

Rows are right-padded, so one forward serves all (state, action) pairs; gradients flow when
called under ``torch.enable_grad()`` (used by the RL recipe).

Whole turns over the full vocabulary (what KL-regularised RL on every token needs):

    first, second = branch_logprobs(model, prompts, move_ids)   # [n, V], [n, n_moves, V]
    # first: log p(· | prompt); second[:, j]: log p(· | prompt, move_ids[j]) — one row per prompt,
    # the moves as sibling branches under a tree attention mask (no prompt recomputed per move)
    table = position_logprobs(model, prompts, turns)            # [n, max_len, V]: each turn token's
    # next-token distribution, for sampled turns of any length
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def chat_prompt_ids(tokenizer, system_prompt: str, observation: str) -> list[int]:
    """Token ids of the prompt for the next assistant turn (system, if any, + one user message)."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": observation})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def action_turn_ids(tokenizer, actions: Sequence[str]) -> list[list[int]]:
    """The token ids of each action's whole assistant turn: its text, then the stop token."""
    stop = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    return [tokenizer(action, add_special_tokens=False)["input_ids"] + [stop] for action in actions]


def continuation_logprobs(model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                          *, pad_id: int = 0, batch_rows: int = 4096) -> torch.Tensor:
    """``out[i] = log p(continuations[i] | prompts[i])`` summed over the continuation's tokens."""
    results = []
    for start in range(0, len(prompts), batch_rows):
        chunk = [list(p) + list(c) for p, c in zip(prompts[start:start + batch_rows], continuations[start:start + batch_rows])]
        spans = [(len(p), len(c)) for p, c in zip(prompts[start:start + batch_rows], continuations[start:start + batch_rows])]
        ids, mask = _right_padded(chunk, pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        positions = torch.arange(ids.shape[1] - 1)[None, :]
        starts = torch.tensor([s - 1 for s, _ in spans])[:, None]
        lengths = torch.tensor([n for _, n in spans])[:, None]
        in_span = (positions >= starts) & (positions < starts + lengths)
        results.append((logp * in_span).sum(dim=1))
    return torch.cat(results)


def action_logprobs(model, prompts: Sequence[Sequence[int]], actions: Sequence[Sequence[int]],
                    *, pad_id: int = 0, batch_rows: int = 4096) -> torch.Tensor:
    """``out[i, j] = log p(actions[j] | prompts[i])`` summed over the action's tokens."""
    rows = [prompt for prompt in prompts for _ in actions]
    conts = [action for _ in prompts for action in actions]
    return continuation_logprobs(model, rows, conts, pad_id=pad_id, batch_rows=batch_rows).view(len(prompts), len(actions))


def next_token_logprobs(model, prompts: Sequence[Sequence[int]], token_ids: Sequence[int],
                        *, pad_id: int = 0) -> torch.Tensor:
    """``out[i, j] = log p(token_ids[j] | prompts[i])``: one row per prompt (single-token actions)."""
    ids, mask = _right_padded([list(p) for p in prompts], pad_id)
    last = torch.tensor([len(p) - 1 for p in prompts])
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[torch.arange(len(prompts)), last], dim=-1)
    return logp[:, list(token_ids)]


def next_token_and_stop_logprobs(model, prompts: Sequence[Sequence[int]], token_ids: Sequence[int],
                                 chosen: Sequence[int], stop_id: int, *, pad_id: int = 0
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward over ``prompt + token_ids[chosen[i]] + stop`` rows, returning both
    ``[N, len(token_ids)]`` next-token log-probs at the prompt's end (causal masking makes them
    independent of the appended tokens) and ``[N]`` log p(stop | prompt, chosen token)."""
    rows = [list(p) + [token_ids[c], stop_id] for p, c in zip(prompts, chosen)]
    ids, mask = _right_padded(rows, pad_id)
    ends = torch.tensor([len(p) - 1 for p in prompts])
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    index = torch.arange(len(prompts))
    first = torch.log_softmax(logits[index, ends], dim=-1)[:, list(token_ids)]
    stop = torch.log_softmax(logits[index, ends + 1], dim=-1)[:, stop_id]
    return first, stop


def branch_logprobs(model, prompts: Sequence[Sequence[int]], branch_ids: Sequence[int],
                    *, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-vocabulary log-probs at the end of each prompt and after each one-token branch.

    Returns ``first [n, V]`` = log p(· | prompt) and ``second [n, B, V]`` with
    ``second[i, j]`` = log p(· | prompt_i, branch_ids[j]). One row per prompt holds the prompt
    followed by all B branch tokens; a tree attention mask lets each branch token see the prompt
    and itself only, at the same position id, so every branch is exactly the plain forward of
    ``prompt + [branch]`` (the prompt is computed once instead of B times). Rows are left-padded
    so the B + 1 scored positions line up at the end and only they go through the LM head.
    """
    n, b = len(prompts), len(branch_ids)
    lengths = [len(p) for p in prompts]
    longest = max(lengths)
    width = longest + b
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    allowed = torch.zeros((n, width, width), dtype=torch.bool)
    causal = torch.tril(torch.ones((longest, longest), dtype=torch.bool))
    branches = torch.tensor(list(branch_ids), dtype=torch.long)
    for i, (prompt, length) in enumerate(zip(prompts, lengths)):
        start = longest - length
        ids[i, start:longest] = torch.tensor(list(prompt))
        ids[i, longest:] = branches
        positions[i, start:longest] = torch.arange(length)
        positions[i, longest:] = length
        allowed[i, start:longest, start:longest] = causal[:length, :length]
        allowed[i, longest:, start:longest] = True
    allowed |= torch.eye(width, dtype=torch.bool)  # branch tokens see themselves; padding rows stay finite
    mask = torch.zeros((n, 1, width, width)).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=b + 1).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    return logp[:, 0], logp[:, 1:]


def position_logprobs(model, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                      *, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``out[i, j]`` = log p(· | prompts[i], continuations[i][:j]) over the full vocabulary.

    Returns ``(logp [n, max_len, V], valid [n, max_len])``; ``valid`` marks real positions
    (``j < len(continuations[i])``), so padded ones can be masked out of losses.
    """
    rows = [list(p) + list(c) for p, c in zip(prompts, continuations)]
    ids, mask = _right_padded(rows, pad_id)
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    longest = max(len(c) for c in continuations)
    offsets = torch.arange(longest)[None, :]
    starts = torch.tensor([len(p) - 1 for p in prompts])[:, None]
    valid = offsets < torch.tensor([len(c) for c in continuations])[:, None]
    at = (starts + offsets).clamp(max=ids.shape[1] - 1)
    return logp[torch.arange(len(rows))[:, None], at], valid


def _right_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask
