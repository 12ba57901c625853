#!/usr/bin/env bash
# One command from a fresh clone: install everything, then make a sample dataset,
# cache it, load it and print the throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/slipstream demo "$@"
