"""``ttsearch serve``: SGLang servers for a pair's policy and reference, until Ctrl-C.

    ttsearch serve                                   # the shipped maze pair, logs in runs/sglang
    ttsearch serve --pair runs/my_pair --run-dir runs/sglang-mine

Prints one JSON line with both URLs once the servers answer /health; point runs at them with
``engine: {kind: sglang, policy_url: ..., reference_url: ...}`` in a ``ttsearch run`` config, or
``SGLangBackend(url)`` in code. Ctrl-C, SIGTERM or the end of this process stops both process groups.
On a CPU-only machine the runtime comes from ``make sglang-cpu``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from ttsearch.agents.checkpoints.lora import servable_folder
from ttsearch.agents.checkpoints.model_pair import PairManifest
from ttsearch.agents.checkpoints.shipped import resolve_pair_dir
from ttsearch.agents.engines.sglang.runtime import runtime_problem
from ttsearch.agents.engines.sglang.server import ServerConfig, SGLangServer
from ttsearch.envs.errors import BackendError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pair", default="default:maze",
                        help="pair folder, or default:NAME for a shipped pair (default default:maze)")
    parser.add_argument("--run-dir", default="runs/sglang", help="server logs go here (default runs/sglang)")
    parser.add_argument("--device", default="auto", help="auto (CPU flags without a GPU), cpu or cuda")


def main(args: argparse.Namespace) -> int:
    # Stop cleanly on SIGTERM too, and on Ctrl-C even when started in the background (where
    # SIGINT arrives ignored): both unwind the `with` blocks below, which stop the servers.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    problem = runtime_problem()
    if problem is not None:
        raise BackendError(f"cannot serve: {problem}")
    pair_dir = resolve_pair_dir(args.pair)
    if not pair_dir.is_dir():
        raise BackendError(f"pair folder {pair_dir} does not exist; pass --pair DIR or default:maze")
    manifest = PairManifest.read(pair_dir)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # A LoRA policy is served merged (written once under --run-dir): SGLang's LoRA path does not
    # start on a CPU, and merged weights serve the same distribution.
    policy_dir = servable_folder(manifest.policy_dir(pair_dir), run_dir)
    with SGLangServer(ServerConfig(model_path=policy_dir, device=args.device),
                      run_dir=run_dir, name="policy") as policy, \
         SGLangServer(ServerConfig(model_path=manifest.reference_dir(pair_dir), device=args.device),
                      run_dir=run_dir, name="reference") as reference:
        print(json.dumps({"policy_url": policy.url, "reference_url": reference.url, "logs": str(run_dir)}),
              flush=True)
        try:
            while policy.alive() and reference.alive():
                time.sleep(1.0)
        except KeyboardInterrupt:
            return 0
        dead = policy if not policy.alive() else reference
        raise BackendError(dead.dead_reason() or f"{dead.name} stopped")
