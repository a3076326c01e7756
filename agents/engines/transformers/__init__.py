"""The embedded engine: a Hugging Face causal LM served in-process, with a radix prefix KV cache.

    from ttsearch.agents.engines.transformers import TransformersBackend
    backend = TransformersBackend("runs/pair/policy", cache_bytes=512 << 20)

- ``backend.py``: :class:`TransformersBackend` (the ``Backend`` protocol: sample, score).
- ``packed_rows.py``: one call's KV rows, packed: prefix-cached forwards with explicit masks.
- ``radix_cache.py``: the radix tree over token ids holding KV slices, LRU eviction, locks.
- ``token_sampling.py``: counter-based sampling (draws independent of batch composition).
"""

from ttsearch.agents.engines.transformers.backend import (
    DEFAULT_CACHE_BYTES,
    TransformersBackend,
)
from ttsearch.agents.engines.transformers.radix_cache import RadixCache

__all__ = ["DEFAULT_CACHE_BYTES", "RadixCache", "TransformersBackend"]
