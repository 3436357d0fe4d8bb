#!/usr/bin/env bash
# One GPU session: build the extension against the machine's torch, run the CUDA/Triton tests for real, run the
# GPU benchmarks, and copy every result to $OUT (default benchmarks/results/gpu_run). Usage:
#   BENCH_TRITON=0 bash benchmarks/gpu_session.sh      # issue 16: v1 vs v2 CUDA kernels, ~6-8 min on an H100/H200
# Steps, most important first; each has its own timeout, and the optional ones are skipped once DEADLINE seconds
# (default 420) have passed, so the whole run ends within ~8 minutes (a 10-minute command limit):
#   1. build (setup.py build_ext --inplace)                                      -> build.log, backends.txt
#   2. the switch tests, then the CUDA-backend cases of tests/ops + tests/ops/test_cuda_v2.py with
#      PYCAM_FAST_CUDA_KERNELS=v2, one process per op group (a crash in one v2 kernel poisons only its group)
#                                                                                -> v2_tests_<group>.txt
#   3. bench_ops.py --cuda-kernels v1 v2: both generations side by side in one process, GB/s vs a measured copy
#                                                                                -> ops_cuda_v1_v2.{md,json}
#   4. cuda_v2_verdict.py: which v2 kernels pass and are faster, % of copy       -> verdict.md, verdict.json
#   5. tests/ops and test_backends_e2e.py with the default (v1) kernels          -> v1_tests_*.txt, gpu_tests.txt
#   6. (BENCH_TRITON=1, the default) the Triton benchmark                         -> triton_gpu.md, auto_table.json
set -uo pipefail
OUT="${OUT:-benchmarks/results/gpu_run}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
PY="${PY:-python3}"
DEADLINE="${DEADLINE:-420}"
unset PYCAM_FAST_CUDA_KERNELS  # the default kernels unless a step sets it
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
$PY -c "import pycam_fast, pprint; from pycam_fast.ops import compiled; pprint.pprint(pycam_fast.backends()); print(compiled.build_info()); from pycam_fast import _C; print('cuda kernels:', _C.cuda_kernels())" 2>&1 | tee "$OUT/backends.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

left() { echo $(( DEADLINE - SECONDS )); }
cap() {  # cap N: N seconds, or what is left before DEADLINE + 60 if that is less (at least 10)
  local rest=$(( DEADLINE + 60 - SECONDS )); [ "$rest" -lt "$1" ] && echo $(( rest > 10 ? rest : 10 )) || echo "$1"
}
# pytest -q with the failures listed; a crash names its test in the faulthandler stack: keep those lines, drop
# pytest's own frames
run_tests() {  # run_tests LOG TIMEOUT ARGS...
  local log="$1" limit; limit=$(cap "$2"); shift 2
  timeout "$limit" $PY -m pytest -q -p no:cacheprovider -rfE "$@" 2>&1 | grep -v -E '^  File ".*(_pytest|pluggy|runpy)' > "$log"
  echo "== [${SECONDS}s] $* -> $(tail -1 "$log")"
}
# 2. the switch, then the v2 kernels per op group
run_tests "$OUT/v2_tests_switch.txt" 60 tests/ops/test_cuda_v2.py -k "switch or really_run or host_plan"
(
  export PYCAM_FAST_CUDA_KERNELS=v2
  run_tests "$OUT/v2_tests_cam_step.txt" "${T_V2:-120}" tests/ops/test_cam_step.py tests/ops/test_cuda_v2.py \
    -k "cuda-cuda or cam_step_v2"
  run_tests "$OUT/v2_tests_weights.txt" "${T_V2:-120}" tests/ops/test_grad_weights.py tests/ops/test_cuda_v2.py \
    -k "cuda-cuda or weights_v2"
  run_tests "$OUT/v2_tests_masked.txt" "${T_V2:-120}" tests/ops/test_masked_inputs.py tests/ops/test_cuda_v2.py \
    -k "cuda-cuda or masked_inputs_v2"
)
[ "${SKIP_BENCH:-0}" = 1 ] || [ "${BENCH_OPS:-1}" != 1 ] || {
  # 3. v1 and v2 side by side (no torch.compile column: minutes per op; issue 16's compile comparison is separate)
  timeout "$(cap "${T_BENCH:-150}")" $PY benchmarks/bench_ops.py --device cuda --no-compile --cuda-kernels v1 v2 \
    --out "$OUT/ops_cuda_v1_v2.md" --json "$OUT/ops_cuda_v1_v2.json" 2>&1 | tail -60
}
# 4. the verdict (from whatever steps 2-3 left)
$PY benchmarks/cuda_v2_verdict.py --dir "$OUT" 2>&1 | tail -40
# 5. the default (v1) kernels: the whole op suite and the end-to-end backends, while time is left
for t in tests/ops tests/test_backends_e2e.py; do
  name=$(basename "$t" .py)
  if [ "$(left)" -gt 30 ]; then
    run_tests "$OUT/v1_tests_${name}.txt" "${T_V1:-200}" "$t"
  else
    echo "skipped: no time left before DEADLINE=${DEADLINE}s" > "$OUT/v1_tests_${name}.txt"
  fi
done
{ for f in "$OUT"/v1_tests_*.txt; do echo "== $f"; tail -30 "$f"; done; } > "$OUT/gpu_tests.txt"
# the verdict again, now with the v1 baseline line
$PY benchmarks/cuda_v2_verdict.py --dir "$OUT" > /dev/null 2>&1
# 6. Triton
if [ "${BENCH_TRITON:-1}" = 1 ] && [ "${SKIP_BENCH:-0}" != 1 ] && [ "$(left)" -gt 60 ]; then
  timeout "$(cap 200)" $PY benchmarks/bench_triton.py 2>&1 | tail -40
  cp benchmarks/results/triton_gpu.md pycam_fast/ops/auto_table.json "$OUT/" 2>/dev/null
fi
echo "total ${SECONDS}s"
ls -la "$OUT"
