"""ttsearch.agents.engines: the model engines behind the :class:`~ttsearch.agents.Backend` protocol.

- ``transformers/``: the embedded engine (CPU or GPU, in-process) with its radix prefix cache.
- ``sglang/``: SGLang servers (or an in-process ``sglang.Engine``) over the native ``/generate``
  API, their launcher, and the CPU runtime's support files.

Each subpackage is imported on use: the transformers engine pulls in torch, the SGLang one
nothing heavier than ``requests``.
"""
