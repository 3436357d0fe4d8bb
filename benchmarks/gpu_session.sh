#!/usr/bin/env bash
# One GPU session: build the extension against the machine's torch, run the CUDA/Triton tests for real, run the
# GPU benchmarks, and copy every result to $OUT (default benchmarks/results/gpu_run). Usage: bash benchmarks/gpu_session.sh
set -uo pipefail
OUT="${OUT:-benchmarks/results/gpu_run}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
PY="${PY:-python3}"
# Running from the source tree: pycam_fast.kernels is the top-level kernels/ folder (setup.py maps it when installed)
[ -e pycam_fast/kernels ] || ln -s ../kernels pycam_fast/kernels
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__)"
  nvcc --version | tail -2
} > "$OUT/gpu_env.txt" 2>&1
cat "$OUT/gpu_env.txt"
( time $PY setup.py build_ext --inplace ) > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
tail -3 "$OUT/build.log"
$PY -c "import pycam_fast, pprint; from pycam_fast.ops import compiled; pprint.pprint(pycam_fast.backends()); print(compiled.build_info())" 2>&1 | tee "$OUT/backends.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: > "$OUT/gpu_tests.txt"
for t in tests/ops tests/test_backends_e2e.py; do
  echo "== $t" >> "$OUT/gpu_tests.txt"
  # a crash names its test in the faulthandler stack: keep those lines, drop pytest's own frames
  timeout 240 $PY -m pytest -q -p no:cacheprovider "$t" -rs 2>&1 | grep -v -E '^  File ".*(_pytest|pluggy|runpy)' \
    | tail -30 >> "$OUT/gpu_tests.txt"
done
cat "$OUT/gpu_tests.txt"
[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
[ "${BENCH_OPS:-1}" = 1 ] && timeout 200 $PY benchmarks/bench_ops.py --device cuda --out "$OUT/ops_cuda.md" 2>&1 | tail -40
timeout 200 $PY benchmarks/bench_triton.py 2>&1 | tail -40
cp benchmarks/results/triton_gpu.md pycam_fast/ops/auto_table.json "$OUT/" 2>/dev/null
ls -la "$OUT"
