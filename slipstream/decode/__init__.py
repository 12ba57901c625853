"""Image decoding: JPEG through libjpeg-turbo, other formats through Pillow."""

from .turbo import load_turbojpeg

__all__ = ["load_turbojpeg"]
