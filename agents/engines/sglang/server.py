"""Start, watch and stop SGLang servers (and an ``sglang-router`` over several) for SGLangBackend.

    cfg = ServerConfig(model_path="runs/pair/policy")          # device="auto": CPU flags if no GPU
    with SGLangServer(cfg, run_dir="runs/sglang") as server:   # waits for /health, logs to a file
        backend = SGLangBackend(server)                        # or SGLangBackend(server.url)
        ...
    # leaving the block (normally, on an exception or on Ctrl-C) kills the whole process group

    SGLangServer.connect("http://127.0.0.1:30000")             # a server someone else runs

Workers behind a data-parallel router (cache-aware routing; docs/design.md, "Engines"):

    with SGLangServer(cfg, run_dir=d, name="w0") as w0, SGLangServer(cfg, run_dir=d, name="w1") as w1:
        with SGLangRouter([w0.url, w1.url], run_dir=d) as router:
            backend = SGLangBackend(router.url)

Launch servers from a long-lived thread (e.g. the main one): a server is stopped when the
thread that started it exits (a parent-death signal, so a crashed caller leaves none behind).

On a CPU-only machine the server needs the runtime that ``make sglang-cpu`` installs
(``runtime.py`` says what is missing and sets up the processes' environment).
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ttsearch.agents.engines.sglang.runtime import (
    CPU_DEFAULTS,
    SETUP_HINT,
    resolve_device,
    runtime_env,
    runtime_problem,
)
from ttsearch.envs.errors import BackendError, ConfigError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How to launch one ``sglang.launch_server``. ``None`` fields take the device default."""

    model_path: str | Path
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int | None = None  # None: a free port
    dtype: str | None = None  # CPU default float32 (exact log-probs)
    attention_backend: str | None = None  # CPU default torch_native (no AMX kernels needed)
    max_total_tokens: int | None = None  # CPU default 16384 (else it sizes the KV pool to RAM)
    random_seed: int = 0
    lora_paths: Mapping[str, str] = field(default_factory=dict)  # adapter name -> folder
    max_lora_rank: int | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 600.0

    def launch_args(self, port: int) -> list[str]:
        device = resolve_device(self.device)
        defaults = CPU_DEFAULTS if device == "cpu" else {}
        args = ["--model-path", str(self.model_path), "--host", self.host, "--port", str(port)]
        args += ["--device", device, "--random-seed", str(self.random_seed)]
        for flag, value in (
            ("--attention-backend", self.attention_backend or defaults.get("attention_backend")),
            ("--dtype", self.dtype or defaults.get("dtype")),
            ("--max-total-tokens", self.max_total_tokens or defaults.get("max_total_tokens")),
            ("--max-lora-rank", self.max_lora_rank),
        ):
            if value is not None:
                args += [flag, str(value)]
        if self.lora_paths:
            args += ["--enable-lora", "--lora-paths"]
            args += [f"{name}={path}" for name, path in self.lora_paths.items()]
        return args + list(self.extra_args)


_LIVE: weakref.WeakSet[ServerHandle] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # a crashed caller must not leave 2 GB servers behind
    for proc in list(_LIVE):
        proc.stop()


def _parent_death_signal() -> None:  # runs in the child before exec (Linux only)
    # Linux sends the signal when the *thread* that forked the child exits, not the process:
    # launch servers from a long-lived thread (the main one), never from a short-lived pool.
    try:

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class ServerHandle:
    """A server process in its own process group, logging to ``run_dir/<name>.log``."""

    kind = "process"

    def __init__(self, name: str, run_dir: str | Path | None, startup_timeout_s: float):
        self.name = name
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.log_path: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.startup_s: float | None = None
        self.stopped = False

    def _spawn(self, argv: list[str], env: Mapping[str, str], url: str) -> None:
        if self.run_dir is None:
            raise ConfigError(
                f"{self.name}: run_dir is required to launch a server (logs go there)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.run_dir / f"{self.name}.log"
        self.url = url
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== ttsearch launch: {' '.join(argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(  # noqa: S603 - argv built from a typed config
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env),
                start_new_session=True,  # its own process group: stop() kills all its workers
                preexec_fn=_parent_death_signal if sys.platform == "linux" else None,
            )
        _LIVE.add(self)
        try:
            self._wait_ready(started)
        except BaseException:  # includes KeyboardInterrupt during the long start-up
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise BackendError(
                    f"{self.name}: the {self.kind} exited with code {self.proc.returncode} during "
                    f"start-up; read {self.log_path}; {SETUP_HINT} if a module is missing"
                    + self.log_tail_block()
                )
            if self._ready():
                return
            time.sleep(0.5)
        raise BackendError(
            f"{self.name}: not healthy after {self.startup_timeout_s:.0f} s at {self.url}; raise "
            f"startup_timeout_s or read {self.log_path}" + self.log_tail_block()
        )

    def _ready(self) -> bool:
        return http_status(self.url + "/health", timeout_s=5.0) == 200

    def alive(self) -> bool:
        """For a launched process: still running. For a connected URL: /health answers 200."""
        if self.proc is not None:
            return self.proc.poll() is None
        return http_status(self.url + "/health", timeout_s=5.0) == 200

    def dead_reason(self) -> str | None:
        """None while serving, else one line + log tail saying it died and what to do."""
        if self.proc is None:
            if self.alive():
                return None
            return f"{self.name}: no healthy SGLang server at {self.url}; start one or fix the URL"
        if self.proc.poll() is None:
            return None
        if self.stopped:
            return f"{self.name}: the SGLang {self.kind} was stopped; start a new one"
        return (
            f"{self.name}: the SGLang {self.kind} died (exit code {self.proc.returncode}); "
            f"read {self.log_path} and start a new one" + self.log_tail_block()
        )

    def log_tail(self, lines: int = 20) -> list[str]:
        if self.log_path is None or not self.log_path.exists():
            return []
        with open(self.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
            text = f.read().decode(errors="replace")
        return text.splitlines()[-lines:]

    def log_tail_block(self, lines: int = 20) -> str:
        tail = self.log_tail(lines)
        return ("\nlog tail:\n" + "\n".join(tail)) if tail else ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process group, wait ``timeout_s``, then SIGKILL whatever is left in it."""
        proc = self.proc
        if proc is None or self.stopped:
            return
        self.stopped = True
        _LIVE.discard(self)
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)  # the group id is the leader's pid (start_new_session)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def rss_bytes(self) -> int:
        """Resident memory of the whole process group (leader and workers), from /proc."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        total = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) != self.proc.pid:  # field 5 of stat: process group id
                    continue
                pages = int((entry / "statm").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
            total += pages * os.sysconf("SC_PAGE_SIZE")
        return total

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.url!r}, alive={self.alive()})"


class SGLangServer(ServerHandle):
    """One ``python -m sglang.launch_server`` (started in ``__init__``), or a connected URL."""

    kind = "server"

    def __init__(
        self,
        config: ServerConfig,
        *,
        run_dir: str | Path,
        name: str = "sglang",
        python: str = sys.executable,
    ):
        super().__init__(name, run_dir, config.startup_timeout_s)
        self.config = config
        self.device = resolve_device(config.device)
        problem = runtime_problem() if python == sys.executable else None
        if problem:
            raise BackendError(problem)
        port = config.port or free_port(config.host)
        argv = [python, "-m", "sglang.launch_server", *config.launch_args(port)]
        env = runtime_env(self.device, {**os.environ, **config.env})
        self._spawn(argv, env, f"http://{config.host}:{port}")

    @classmethod
    def connect(cls, url: str, *, name: str = "sglang") -> ServerHandle:
        """Use a server started elsewhere; ``stop()`` does nothing, health is checked now."""
        handle = ServerHandle(name, None, 0.0)
        handle.url = url.rstrip("/")
        if not handle.alive():
            raise BackendError(
                f"{name}: no healthy SGLang server at {handle.url}/health; start one or fix the URL"
            )
        return handle


class SGLangRouter(ServerHandle):
    """``python -m sglang_router.launch_router`` over worker URLs (data parallel, cache-aware)."""

    kind = "router"

    def __init__(
        self,
        worker_urls: Sequence[str],
        *,
        run_dir: str | Path,
        name: str = "router",
        host: str = "127.0.0.1",
        port: int | None = None,
        policy: str = "cache_aware",
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        startup_timeout_s: float = 120.0,
    ):

        super().__init__(name, run_dir, startup_timeout_s)
        if not worker_urls:
            raise ConfigError("SGLangRouter needs at least one worker URL")
        if python == sys.executable and importlib.util.find_spec("sglang_router") is None:
            raise BackendError("sglang-router is not installed; pip install sglang-router")
        self.worker_urls = tuple(worker_urls)
        port = port or free_port(host)
        argv = [python, "-m", "sglang_router.launch_router", "--host", host, "--port", str(port)]
        argv += ["--policy", policy, "--worker-urls", *worker_urls, *extra_args]
        self._spawn(argv, os.environ, f"http://{host}:{port}")

    def _ready(self) -> bool:
        # /health answers before the workers are registered (in the background): wait for all
        if http_status(self.url + "/health", timeout_s=5.0) != 200:
            return False
        try:
            workers = get_json(self.url + "/workers", timeout_s=5.0).get("workers", [])
        except (OSError, ValueError):
            return False
        return sum(bool(w.get("is_healthy")) for w in workers) >= len(self.worker_urls)


def http_status(url: str, *, timeout_s: float) -> int | None:
    """HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our URL
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def get_json(url: str, *, timeout_s: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - our URL
        return json.loads(resp.read())
