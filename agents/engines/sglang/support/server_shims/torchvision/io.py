"""``torchvision.io`` stand-in: names import, nothing works."""

from ._stub import stub_getattr

__getattr__ = stub_getattr(__name__)
