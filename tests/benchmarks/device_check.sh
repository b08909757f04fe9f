#!/bin/sh
# The GPU checks of the performance work in one run (issue 18): the CUDA-only exactness tests (the FPS kernel
# against the loop, FP8 torch._scaled_mm against its emulation, the FP8 activation-quantisation kernel against torch,
# merged routes in 16 bits), then `mcub bench` at Vicuna-7B shapes with every section (factored and merged routes at
# batch 1 and 8, MUSIC-AVQA reuse, FP8 against bf16, encoders, FPS, end to end with merged routes and a profile).
# About 6-8 minutes on one H200 once mcub's dependencies import. Usage: sh tests/benchmarks/device_check.sh OUTDIR
set -eu
out=${1:?usage: sh tests/benchmarks/device_check.sh OUTDIR}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/device.csv"
python -m pytest -q -rs tests/test_fps_kernel.py tests/test_fp8.py tests/test_fp8_kernel.py tests/test_merged_routes.py 2>&1 | tee "$out/cuda-tests.txt"
PYTHONUNBUFFERED=1 python -m mcub.bench --shape 7b --json "$out/bench.json" --profile "$out/profile.txt" \
  --end-to-end-route-weights merged 2>&1 | tee "$out/bench.txt"
