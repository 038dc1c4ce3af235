#!/usr/bin/env bash
# The GPU check, on one CUDA device, in under 8 minutes: the CUDA tests (tests/test_cuda.py),
# then benchmarks/gpu_check.py (the reference model trained in 32-true, bf16-mixed and
# 16-mixed; test decoding greedy and beam 5; the CPU's greedy output against the GPU's).
#   bash benchmarks/gpu_check.sh [gpu_check.py options]       PYTHON=... picks the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device here: nothing to check (gpu_check.py --device cpu runs its CPU parts)")
print(torch.__version__, torch.cuda.get_device_name(), flush=True)'
"$PYTHON" -m pytest -q tests/test_cuda.py
"$PYTHON" benchmarks/gpu_check.py "$@"
