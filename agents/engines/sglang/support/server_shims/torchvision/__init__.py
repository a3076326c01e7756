"""Import-time stand-in for ``torchvision``, visible only to SGLang processes started by ttsearch.

Why: SGLang 0.5.23 imports ``torchvision.transforms`` at module level in its multimodal config
modules (InternVL, DeepSeek-OCR), even for text-only models, and once anything named
``torchvision`` is importable, ``transformers`` imports a few more names from it at module level.
PyPI's torchvision wheels are CUDA builds whose ``_C`` extension needs ``libtorch_cuda.so``: under
the CPU torch importing the real one crashes (and breaks ``transformers`` for everyone sharing the
venv). So this folder is put on the ``PYTHONPATH`` of CPU SGLang servers only (never installed
into the venv). Every attribute exists so imports succeed; calling anything raises a clear error.
``InterpolationMode`` is a real enum because it is used as a default value at import time.
"""

from ._stub import stub_getattr

__version__ = "0.0.0+ttsearch.stub"

from . import io, transforms  # noqa: E402,F401

__getattr__ = stub_getattr(__name__)
