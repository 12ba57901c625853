#!/usr/bin/env bash
# The GPU checks, for a machine with CUDA and no network (a lent accelerator box):
# the CUDA tests and a GPU throughput run. Uses the machine's own python3/torch.
# Expects, carried in .gpu/: libturbojpeg.so.0 (e.g. the turbo3 wheel's libjpeg-turbo 3,
# copied from .venv/lib/python3*/site-packages/turbojpeg.libs/).
# Results go to ${OUT:-.bench}/.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.bench}
mkdir -p "$out"
export SLIPSTREAM_TURBOJPEG_LIB=$PWD/.gpu/libturbojpeg.so.0
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$out/pip.log" 2>&1 \
  || { echo "editable install failed"; tail -20 "$out/pip.log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, cv2, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cv2', cv2.__version__, 'numpy', numpy.__version__)" | tee -a "$out/gpu.txt"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/loader/test_gpu.py tests/transforms/test_augment.py \
  -W ignore::DeprecationWarning 2>&1 | tee "$out/gpu-tests.txt" | tail -25
python3 benchmarks/bench_presets.py --device cuda --images 3000 --measure 3000 --batch-size 256 --json "$out/bench_presets_cuda.json" 2>&1 | tee "$out/bench-presets-cuda.txt"
