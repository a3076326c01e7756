"""Placeholders: importable names that raise when used (text-only SGLang never calls them)."""

from __future__ import annotations


class Unavailable:
    """Stands for ``qualname``; any call or attribute access raises."""

    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def _fail(self, *args, **kwargs):
        raise RuntimeError(
            f"{self._qualname} is not available: ttsearch's torchvision stand-in "
            "(agents/engines/sglang/support/server_shims) only serves text-only models on the CPU "
            "SGLang path; image models need a real torchvision build matching torch"
        )

    __call__ = _fail

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return Unavailable(f"{self._qualname}.{name}")

    def __repr__(self) -> str:
        return f"<unavailable {self._qualname}>"


def stub_getattr(module_name: str):
    """A module ``__getattr__`` that returns an :class:`Unavailable` for any public name."""

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        return Unavailable(f"{module_name}.{name}")

    return __getattr__
