"""Radix-cache accounting for SGLang servers, from the responses and from the server's own log.

    tally = ResponseTally.attach(backend)        # every response's meta_info from now on
    ... run a workload ...
    tally.hit_frac                               # sum cached_tokens / sum prompt_tokens

    mark = log_offset(server.log_path)
    ... run a workload ...
    prefill_tally(server.log_path, mark)         # {"new_tokens", "cached_tokens", "hit_frac"}

Two views of one cache, because they differ:
- Responses (``meta_info.prompt_tokens`` / ``cached_tokens`` of every request the backend sent,
  its prefix warm-ups included). A request can reuse at most ``len - 1`` prompt tokens when
  sampling and at most ``logprob_start_len`` when scoring: the boundary token before the first
  scored/sampled position is always recomputed and counts here as a miss. But parallel
  sampling (``n > 1``) first runs a hidden prefill of the prompt that no response reports, so
  the n copies each report ``len - 1`` cached tokens even for a prompt never seen before.
- The server log (SGLang's ``Prefill batch, #new-token: N, #cached-token: C`` lines, one per
  prefill batch, hidden prefills included): ``C / (N + C)`` is the fraction of all prefilled
  positions served from the radix cache. Only for servers we launched (we have their log).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PREFILL = re.compile(r"Prefill batch.*?#new-token: (\d+), #cached-token: (\d+)")


@dataclass(slots=True)
class ResponseTally:
    """Sums ``meta_info`` over every response of one SGLangBackend (wraps its transport)."""

    inner: Any
    requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @classmethod
    def attach(cls, backend: Any) -> ResponseTally:
        tally = cls(backend._transport)
        backend._transport = tally  # the backend's one request path: every response passes here
        return tally

    def generate(self, payload: dict) -> Any:
        out = self.inner.generate(payload)
        for item in out if isinstance(out, list) else [out]:
            meta = item.get("meta_info", {})
            self.requests += 1
            self.prompt_tokens += int(meta.get("prompt_tokens", 0))
            self.cached_tokens += int(meta.get("cached_tokens", 0))
        return out

    def __getattr__(self, name: str) -> Any:  # server_info, model_path, close, handle
        return getattr(self.inner, name)

    def snapshot(self) -> tuple[int, int, int]:
        return self.requests, self.prompt_tokens, self.cached_tokens

    def since(self, mark: tuple[int, int, int]) -> dict[str, Any]:
        requests, prompt, cached = (a - b for a, b in zip(self.snapshot(), mark, strict=True))
        return {"requests": requests, "prompt_tokens": prompt, "cached_tokens": cached,
                "hit_frac": cached / prompt if prompt else None}


def log_offset(path: str | Path | None) -> int:
    """The current end of a server log (0 when there is none)."""
    return Path(path).stat().st_size if path and Path(path).exists() else 0


def prefill_tally(path: str | Path | None, offset: int = 0) -> dict[str, Any] | None:
    """Prefill tokens computed vs served from the radix cache in the log after ``offset``."""
    if not path or not Path(path).exists():
        return None
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    new = cached = batches = 0
    for match in _PREFILL.finditer(text):
        new, cached, batches = new + int(match[1]), cached + int(match[2]), batches + 1
    total = new + cached
    return {"prefill_batches": batches, "new_tokens": new, "cached_tokens": cached,
            "hit_frac": cached / total if total else None}
