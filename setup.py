"""Builds slipstream's native decode kernel (``slipstream.decode._kernel``).

Everything else about the package is in pyproject.toml. The kernel is C99 and links the
system's libjpeg (libjpeg-turbo >= 1.5 for region decoding). A missing compiler or
``jpeglib.h`` stops the build with one message naming what to install.

Environment:
  SLIPSTREAM_SANITIZE=1   build with AddressSanitizer + UBSan (``nox -s sanitize``)
  CONDA_PREFIX            its include/ and lib/ are searched (conda's libjpeg-turbo)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

INSTALL_HINT = (
    "slipstream's decode kernel needs a C compiler and libjpeg-turbo's headers (jpeglib.h). "
    "Install them, then install slipstream again: Debian 12 `sudo apt-get install gcc "
    "libjpeg62-turbo-dev`; Ubuntu `sudo apt-get install gcc libjpeg-turbo8-dev`; Fedora "
    "`sudo dnf install gcc libjpeg-turbo-devel`; conda `conda install -c conda-forge "
    "c-compiler libjpeg-turbo`; or run scripts/setup.sh, which installs them."
)


def _prefix_dirs() -> tuple[list[str], list[str]]:
    prefix = os.environ.get("CONDA_PREFIX")
    if prefix:
        return [os.path.join(prefix, "include")], [os.path.join(prefix, "lib")]
    return [], []


def _sanitize() -> bool:
    return os.environ.get("SLIPSTREAM_SANITIZE") == "1"


class BuildKernel(build_ext):
    """``build_ext`` that first checks for the compiler and jpeglib.h, quietly."""

    def run(self) -> None:
        self._preflight()
        super().run()

    def _preflight(self) -> None:
        cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
        if not cc or shutil.which(cc[0]) is None:
            sys.exit(f"error: no C compiler ({cc[0] if cc else 'cc'} not found). {INSTALL_HINT}")
        includes, _ = _prefix_dirs()
        flags = [f"-I{d}" for d in includes] + os.environ.get("CPPFLAGS", "").split()
        with tempfile.TemporaryDirectory() as tmp:
            probe = os.path.join(tmp, "probe.c")
            with open(probe, "w") as f:
                f.write("#include <stdio.h>\n#include <jpeglib.h>\n"
                        "#if JPEG_LIB_VERSION < 62\n#error too old\n#endif\n")
            result = subprocess.run([*cc, *flags, "-E", probe], capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"error: jpeglib.h was not found by {' '.join(cc)}. {INSTALL_HINT}")


def _extension() -> Extension:
    includes, libdirs = _prefix_dirs()
    # no FMA contraction: the crop planner must round as numpy does (_plan.c)
    compile_args = ["-std=c99", "-O3", "-ffp-contract=off", "-Wall", "-Wno-unused-function"]
    link_args: list[str] = []
    if _sanitize():
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g",
               "-fno-sanitize-recover=undefined"]
        compile_args = ["-std=c99", "-O1", "-ffp-contract=off", *san]
        link_args = san
    return Extension(
        "slipstream.decode._kernel",
        sources=["slipstream/decode/_kernel.c", "slipstream/decode/_plan.c",
                 "slipstream/decode/_heap.c"],
        depends=["slipstream/decode/_batch.h"],
        include_dirs=includes,
        library_dirs=libdirs,
        runtime_library_dirs=libdirs,
        libraries=["jpeg", "m"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )


setup(ext_modules=[_extension()], cmdclass={"build_ext": BuildKernel})
