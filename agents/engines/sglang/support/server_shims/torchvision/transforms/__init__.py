"""``torchvision.transforms`` stand-in: a real ``InterpolationMode``, placeholders otherwise."""

from enum import Enum

from torchvision._stub import stub_getattr


class InterpolationMode(Enum):
    """Same members and values as torchvision's enum."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


from . import functional, v2  # noqa: E402,F401

__getattr__ = stub_getattr(__name__)
