"""``torchvision.transforms.v2`` stand-in."""

from torchvision._stub import stub_getattr
from torchvision.transforms import InterpolationMode  # noqa: F401

from . import functional  # noqa: F401

__getattr__ = stub_getattr(__name__)
