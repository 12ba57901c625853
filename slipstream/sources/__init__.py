"""Sources: a URL → numbered samples of raw values. One module per format."""

from .base import Detection, Source
from .open import detect_source, open_source

__all__ = ["Detection", "Source", "detect_source", "open_source"]
