#!/usr/bin/env bash
# Install everything slipstream needs into ./.venv on Debian/Ubuntu: with apt, gcc and
# libjpeg-turbo's headers (the native decode kernel is compiled at install), the TurboJPEG
# library, and Python's headers where the interpreter lacks them; then the Python
# packages (pip).
# Usage: scripts/setup.sh [EXTRA ...]    e.g. scripts/setup.sh test
# Re-running is cheap: packages are reinstalled only when a pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=("$@")
apt_packages=()
# (no grep -q: with pipefail, grep quitting early would fail ldconfig with SIGPIPE)
if ! ldconfig -p 2>/dev/null | grep 'libturbojpeg\.so' >/dev/null; then
  apt_packages+=(libturbojpeg0)
fi
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  apt_packages+=(python3-venv python3-pip)
fi
if ! command -v gcc >/dev/null; then
  apt_packages+=(gcc)
fi
# jpeglib.h: Debian names its libjpeg-turbo headers libjpeg62-turbo-dev, Ubuntu libjpeg-turbo8-dev
if ! printf '#include <stdio.h>\n#include <jpeglib.h>\n' | gcc -E -x c - >/dev/null 2>&1; then
  if grep -qs '^ID=ubuntu' /etc/os-release; then
    apt_packages+=(libjpeg-turbo8-dev)
  else
    apt_packages+=(libjpeg62-turbo-dev)
  fi
fi
if ! python3 -c 'import os, sysconfig
raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    2>/dev/null; then
  apt_packages+=(python3-dev)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing system packages: ${apt_packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi

spec=".[$(IFS=,; echo "${extras[*]:-}")]"
[ "$spec" = ".[]" ] && spec="."
stamp=".venv/.slipstream-setup"
# the kernel's source too: an editable install compiles it only when pip runs
want=$(cat pyproject.toml setup.py slipstream/decode/_*.[ch] plugins/*/pyproject.toml \
         scripts/setup.sh | sha256sum | cut -d' ' -f1)-"$spec"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages ($spec) into .venv"
  pip() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" \
            2> >(grep -v "is ignored" >&2); }
  # torch first, pinned: an unpinned torch would pull a multi-GB CUDA build here.
  pip "torch==${SLIPSTREAM_TORCH_VERSION:-2.13.0}"
  pip -e "$spec"
  # The LitData tests write datasets with litdata itself, which requires torchvision
  # (never installed here): litdata alone, --no-deps; the test extra lists the rest.
  for extra in "${extras[@]}"; do
    if [ "$extra" = test ] || [ "$extra" = dev ]; then
      pip --no-deps "litdata==0.2.76"
      break
    fi
  done
  for plugin in plugins/*/; do
    pip -e "$plugin"
  done
  .venv/bin/python -c "import slipstream, torch
from slipstream.decode.kernel import load; load()
from slipstream.decode.libturbojpeg import library; library()" || {
    echo "setup: the install did not complete (see pip's messages above)" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
