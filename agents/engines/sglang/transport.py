"""How SGLangBackend talks to SGLang: HTTP ``/generate`` or an in-process ``sglang.Engine``.

Both transports take the same payload (the ``/generate`` JSON body is ``Engine.generate``'s
keyword arguments) and return SGLang's answers unchanged. The HTTP one bounds every call by a
timeout, retries connection failures a bounded number of times, and turns a dead server into a
:class:`BackendError` carrying its log tail. Behind ``sglang-router`` (which takes one prompt per
call, with a scalar ``logprob_start_len``) batches are split and sent concurrently, which is
also how the router balances them over its workers.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ttsearch.agents.engines.sglang.runtime import (
    CPU_DEFAULTS,
    SERVER_SHIMS,
    needs_torchvision_shim,
    resolve_device,
    runtime_env,
    runtime_problem,
)
from ttsearch.agents.engines.sglang.server import ServerHandle, get_json
from ttsearch.envs.errors import BackendError


class HTTPTransport:
    """POST /generate with a bounded timeout and bounded retries on connection failures."""

    def __init__(self, handle: ServerHandle, timeout_s: float, retries: int):
        self.handle, self.timeout_s, self.retries = handle, timeout_s, retries
        # sglang-router takes one request per call (scalar logprob_start_len) and balances
        # calls over its workers: batches are split and sent concurrently.
        self.split = _is_router(handle.url)

    def generate(self, payload: dict) -> Any:
        if not self.split or not isinstance(payload["input_ids"][0], list):
            return self._post(payload)
        parts = _split(payload)
        with ThreadPoolExecutor(max_workers=min(len(parts), 16)) as pool:
            answers = list(pool.map(self._post, parts))
        return [
            item
            for answer in answers
            for item in (answer if isinstance(answer, list) else [answer])
        ]

    def _post(self, payload: dict) -> Any:
        data = json.dumps(payload).encode()
        last = ""
        for attempt in range(self.retries + 1):
            dead = self.handle.dead_reason() if self.handle.proc is not None else None
            if dead:
                raise BackendError(dead)
            request = urllib.request.Request(
                self.handle.url + "/generate",
                data=data,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                    return json.loads(resp.read())
            except urllib.error.HTTPError as err:  # the server answered: retrying won't help
                raise BackendError(
                    f"{self.handle.name}: SGLang rejected the request (HTTP {err.code}): "
                    f"{_error_message(err.read())}"
                ) from err
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                # refused, reset, timed out, or the answer cut short (a server killed mid-reply)
                dead = self.handle.dead_reason()
                if dead:
                    raise BackendError(dead) from err
                if isinstance(err, TimeoutError) or isinstance(
                    getattr(err, "reason", None), TimeoutError
                ):
                    # the server is alive but slow: re-sending would only add to its queue
                    raise BackendError(
                        f"{self.handle.name}: no answer from {self.handle.url}/generate within "
                        f"{self.timeout_s:.0f} s; the server may be overloaded: raise timeout_s "
                        "or send smaller batches"
                    ) from err
                last = str(getattr(err, "reason", err))
                time.sleep(min(2.0**attempt, 8.0))
        raise BackendError(
            f"{self.handle.name}: no answer from {self.handle.url}/generate after "
            f"{self.retries + 1} tries ({last}); check that the server is up, or raise retries"
        )

    def server_info(self) -> dict:
        return get_json(self.handle.url + "/get_server_info")

    def flush_cache(self) -> None:
        request = urllib.request.Request(self.handle.url + "/flush_cache", data=b"", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):  # noqa: S310
                pass
        except (urllib.error.URLError, OSError) as err:
            raise BackendError(f"{self.handle.name}: could not flush the prefix cache at "
                               f"{self.handle.url} ({getattr(err, 'reason', err)})") from err

    def model_path(self) -> str:
        return str(get_json(self.handle.url + "/get_model_info").get("model_path", ""))

    def close(self) -> None:
        self.handle.stop()  # no-op for a connected URL


class EngineTransport:
    """The same payload handed to an in-process ``sglang.Engine``."""

    def __init__(self, engine: Any, model_path: str):
        self.engine, self._model_path = engine, model_path

    @classmethod
    def start(cls, model_path: str | Path, **engine_args: Any) -> EngineTransport:
        """Start an ``sglang.Engine`` with the server's launch defaults (CPU flags without a GPU)."""
        problem = runtime_problem()
        if problem:
            raise BackendError(problem)
        device = resolve_device(engine_args.pop("device", "auto"))
        # The engine's scheduler runs in spawned subprocesses: they read os.environ at start.
        # PYTHONPATH (the torchvision stand-in) is restored once they run, so this process's
        # later subprocesses do not see it; the SGLANG_* switches stay for sglang itself.
        saved_pythonpath = os.environ.get("PYTHONPATH")
        os.environ.update(runtime_env(device))
        if device == "cpu" and needs_torchvision_shim():
            # transformers caches "is torchvision available?" on first use: settle it (False)
            # before the import-only stand-in becomes visible, so transformers never uses it.
            from transformers.utils import import_utils

            import_utils.is_torchvision_available()
            if str(SERVER_SHIMS) not in sys.path:
                sys.path.insert(0, str(SERVER_SHIMS))
        defaults = dict(CPU_DEFAULTS) if device == "cpu" else {}
        args = {**defaults, "random_seed": 0, "device": device, **engine_args}
        # sglang: only the in-process engine needs it (servers run in their own processes)
        import sglang

        try:
            engine = sglang.Engine(model_path=str(model_path), **args)
        finally:
            if saved_pythonpath is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved_pythonpath
        return cls(engine, str(model_path))

    def generate(self, payload: dict) -> Any:
        try:
            return self.engine.generate(**payload)
        except (ValueError, RuntimeError) as err:
            raise BackendError(
                f"sglang.Engine rejected the request: {err}".splitlines()[0]
            ) from err

    def server_info(self) -> dict:
        return {
            "enable_deterministic_inference": bool(
                getattr(self.engine.server_args, "enable_deterministic_inference", False)
            )
        }

    def model_path(self) -> str:
        return self._model_path

    def flush_cache(self) -> None:
        self.engine.flush_cache()

    def close(self) -> None:
        self.engine.shutdown()


def _is_router(url: str) -> bool:
    try:
        return isinstance(get_json(url + "/workers", timeout_s=5.0).get("workers"), list)
    except (OSError, ValueError, AttributeError):
        return False


def _split(payload: dict) -> list[dict]:
    """One payload per prompt: list-valued fields are indexed, scalars are shared."""
    per_request = ("sampling_params", "logprob_start_len", "top_logprobs_num", "lora_path")
    parts = []
    for i, ids in enumerate(payload["input_ids"]):
        part = {**payload, "input_ids": ids}
        for key in per_request:
            if isinstance(payload.get(key), list):
                part[key] = payload[key][i]
        parts.append(part)
    return parts


def _error_message(body: bytes) -> str:
    try:
        data = json.loads(body)
        err = data.get("error", data) if isinstance(data, dict) else data
        return str(err.get("message", err) if isinstance(err, dict) else err)[:500]
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:500]


def read_eos_token_ids(model_path: str | Path) -> tuple[int, ...]:
    """EOS ids of a local model folder: generation config, model config, then tokenizer."""
    # transformers: only to read a model folder's config
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    found: list[int] = []
    sources: list[Any] = []
    try:
        sources.append(GenerationConfig.from_pretrained(model_path).eos_token_id)
    except OSError:
        pass
    sources.append(AutoConfig.from_pretrained(model_path).eos_token_id)
    try:
        sources.append(AutoTokenizer.from_pretrained(model_path).eos_token_id)
    except (OSError, ValueError):
        pass
    for source in sources:
        for tid in [source] if isinstance(source, int) else (source or ()):
            if tid is not None and int(tid) not in found:
                found.append(int(tid))
    return tuple(found)


def read_vocab_size(model_path: str | Path) -> int | None:
    # transformers: only to read a model folder's config
    from transformers import AutoConfig

    size = getattr(AutoConfig.from_pretrained(model_path), "vocab_size", None)
    return int(size) if size else None


def check_ids(name: str, seqs: Sequence[Sequence[int]], vocab_size: int | None) -> None:
    if vocab_size is None:
        return
    for seq in seqs:
        bad = [t for t in seq if not 0 <= t < vocab_size]
        if bad:
            raise BackendError(
                f"{name}: token ids {bad[:5]} are outside the vocabulary [0, {vocab_size}); "
                "render prompts with this model's tokenizer"
            )
