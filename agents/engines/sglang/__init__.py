"""The SGLang engine: servers (or an in-process Engine) behind the ``Backend`` protocol.

    from ttsearch.agents.engines.sglang import SGLangBackend
    backend = SGLangBackend("http://127.0.0.1:30000", name="policy")       # a running server
    backend = SGLangBackend.launch("runs/pair/policy", run_dir="runs/x")     # start one for us

- ``backend.py``: :class:`SGLangBackend` (token ids in, token ids and log-probs out).
- ``transport.py``: HTTP and in-process transports, request splitting, id checks.
- ``server.py``: launching and stopping servers and ``sglang-router`` (process groups, health).
- ``runtime.py``: where SGLang can run (device, process environment, what is missing).
- ``support/``: package data for SGLang's CPU runtime (``setup_cpu.sh``, the ``sgl_kernel``
  stand-in, the torchvision shim for server processes); ``setup_cpu.py`` runs the script for
  the current interpreter (``python -m ttsearch.agents.engines.sglang.setup_cpu``).
"""

from ttsearch.agents.engines.sglang.backend import SGLangBackend
from ttsearch.agents.engines.sglang.runtime import runtime_problem
from ttsearch.agents.engines.sglang.server import SGLangRouter, SGLangServer

__all__ = ["SGLangBackend", "SGLangRouter", "SGLangServer", "runtime_problem"]
