"""Where slipstream finds libjpeg-turbo's TurboJPEG library, and what to say when it can't."""

from __future__ import annotations

__all__ = ["TURBOJPEG_LIB_ENV"]

#: Set to the full path of libturbojpeg.so to use a particular build.
TURBOJPEG_LIB_ENV = "SLIPSTREAM_TURBOJPEG_LIB"

_INSTALL_HINT = (
    "slipstream decodes JPEG with libjpeg-turbo's TurboJPEG library, which was not found. "
    "Install it: Debian/Ubuntu `sudo apt-get install libturbojpeg0`; Fedora "
    "`sudo dnf install turbojpeg`; macOS `brew install jpeg-turbo`; conda "
    "`conda install -c conda-forge libjpeg-turbo`; or point "
    f"{TURBOJPEG_LIB_ENV} at libturbojpeg.so."
)
