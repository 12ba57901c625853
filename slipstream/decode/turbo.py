"""Loading libjpeg-turbo through PyTurboJPEG, with an error that says how to get it."""

from __future__ import annotations

import os
from typing import Any

from ..errors import MissingDependencyError

__all__ = ["load_turbojpeg", "TURBOJPEG_LIB_ENV"]

#: Set to the full path of libturbojpeg.so to use a particular build.
TURBOJPEG_LIB_ENV = "SLIPSTREAM_TURBOJPEG_LIB"

_INSTALL_HINT = (
    "slipstream decodes JPEG with libjpeg-turbo's TurboJPEG library, which was not found. "
    "Install it: Debian/Ubuntu `sudo apt-get install libturbojpeg0`; Fedora "
    "`sudo dnf install turbojpeg`; macOS `brew install jpeg-turbo`; conda "
    f"`conda install -c conda-forge libjpeg-turbo`. Or point {TURBOJPEG_LIB_ENV} at libturbojpeg.so."
)


def load_turbojpeg() -> Any:
    """A new ``turbojpeg.TurboJPEG`` handle (one per thread: handles are not thread-safe)."""
    try:
        import turbojpeg
    except ImportError as exc:
        raise MissingDependencyError(
            f"the PyTurboJPEG package is missing: pip install 'PyTurboJPEG>=1.7,<2' ({exc})"
        ) from exc
    lib_path = os.environ.get(TURBOJPEG_LIB_ENV) or None
    try:
        return turbojpeg.TurboJPEG(lib_path)
    except (OSError, RuntimeError) as exc:
        where = f" (tried {lib_path})" if lib_path else ""
        raise MissingDependencyError(f"{_INSTALL_HINT}{where} [{exc}]") from exc
