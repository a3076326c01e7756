"""``torchvision.transforms.functional`` stand-in."""

from torchvision._stub import stub_getattr

from . import InterpolationMode  # noqa: F401

__getattr__ = stub_getattr(__name__)
