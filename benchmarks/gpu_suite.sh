#!/usr/bin/env bash
# Every GPU figure in one prepared run (issue 21): the CUDA tests, fused vs unfused vs 0.25-GPU trials on the
# paper's CLEAR grid at Baby scale, and every built-in backbone's s/epoch and peak memory at Baby. At most 8 minutes
# on one H100/H200 (limits 120 + 180 + 180 s): each part has its own limit, so one slow part cannot eat the rest.
# It runs with the Python on PATH ($PY to change it), which must already have a CUDA torch and the project
# installed (the GPU machine reaches no package index).
#
#   benchmarks/gpu_suite.sh                      # on the GPU machine, from the repository root
#   OUT=/tmp/gpu benchmarks/gpu_suite.sh         # logs and JSON go to $OUT (default: gpu-suite-out/)
#   GPU_SUITE_DEVICE=cpu benchmarks/gpu_suite.sh # a check of this script on a CPU (tiny sizes, figures mean nothing)
#
# The Baby graph is read from $BABY_INTER, else ../shared/data/amazon/baby/baby.inter, else .device-data/baby.inter
# (the device tool sends only the checkout: copy baby.inter into .device-data/, which .gitignore excludes, and
# name that folder in `carry`). Figures go to BENCHMARKS.md with the device named (the first lines of the log).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-suite-out}
DEVICE=${GPU_SUITE_DEVICE:-cuda}
PY=${PY:-python}
mkdir -p "$OUT"
LOG="$OUT/gpu_suite.log"
: > "$LOG"

BABY=""
for candidate in "${BABY_INTER:-}" ../shared/data/amazon/baby/baby.inter .device-data/baby.inter; do
    if [ -n "$candidate" ] && [ -f "$candidate" ]; then BABY=$candidate; break; fi
done
if [ -z "$BABY" ]; then
    echo "error: no Baby graph (baby.inter): set BABY_INTER, or copy it to .device-data/baby.inter and carry .device-data" >&2
    exit 2
fi

failed=0
step() {  # step NAME LIMIT_S COMMAND...: run one part under its own limit, log it, remember a failure
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
    [ "$rc" -eq 0 ] || failed=1
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi (device $DEVICE)"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
    echo "baby: $BABY"
} 2>&1 | tee -a "$LOG"

if [ "$DEVICE" = cuda ]; then
    step cuda-tests 120 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py
    step backbones 180 $PY benchmarks/bench_gpu.py --only backbones --inter "$BABY" --epochs 2 --json "$OUT/backbones.json"
    step fused-grid 180 $PY benchmarks/bench_fused.py grid --scale baby --inter "$BABY" --device cuda \
        --gpu-fractions 1 0.25 --grid-epochs 3 --concurrent 4
else  # the same parts at toy sizes on the CPU: the script's own check
    step cuda-tests 300 env CLEAR_TUNE_GPU_TEST_DEVICE=cpu $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py -x
    step backbones 300 $PY benchmarks/bench_gpu.py --only backbones --inter "$BABY" --epochs 1 --no-amp \
        --backbones bpr clear --device cpu --json "$OUT/backbones.json"
    step fused-grid 300 $PY benchmarks/bench_fused.py grid --scale synthetic --grid-epochs 1
fi
echo "gpu suite: $([ $failed -eq 0 ] && echo all parts passed || echo SOME PARTS FAILED) (log: $LOG)" | tee -a "$LOG"
exit $failed
