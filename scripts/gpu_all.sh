#!/usr/bin/env bash
# Everything a GPU machine is for, in one command that ends within 8 minutes on one H100 or H200:
#   bash scripts/gpu_all.sh        # from anywhere; PYTHON=... picks the interpreter (default python3)
# Needs only Python with torch and numpy (no Ray, no network). Each stage runs under a hard time limit
# (SIGTERM, then SIGKILL 5 s later, to the stage's whole process group) and prints as it goes, so a stage
# that is cut off still leaves its lines; every stage that finishes appends its table to benchmarks/RESULTS.md.
#   1. gpu_check --quick (limit 110 s): every net trains with isolation and exact counts, resume, bf16 vs fp32
#      (the full `python -m benchmarks.gpu_check` takes longer; its sweep row needs Ray)
#   2. throughput, trimmed (limit 100 s): dense vs DST + isolation vs the DataLoader path, both nets, batch
#      64 and 128, density 0.2, random and momentum growth
#   3. fusion (limit 240 s; no cell starts after 180 s): K = 1, 4, 16, 48 trials fused and packed as
#      processes (benchmarks.packing's measurement, so packing is not run on its own), both nets, batch 64
#      and 128, and the projected GPU-hours of the paper grid at the best option
# Worst case: 450 s of limits plus 15 s of kill grace = 465 s. Exit status 1 if any stage failed or was cut off.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0

stage() {  # stage LIMIT_S MODULE ARGS...
    local limit=$1
    shift
    echo "=== $(date -u +%H:%M:%S) python -m $* (limit ${limit} s)"
    timeout --kill-after=5 "$limit" "$PYTHON" -m "$@"
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        status=1
        if [ "$rc" -eq 124 ]; then echo "=== $1: cut off at its ${limit} s limit"; else echo "=== $1: exit $rc"; fi
    fi
}

stage 110 benchmarks.gpu_check --device cuda --quick
stage 100 benchmarks.throughput --device cuda --densities 0.2 --growths random momentum --warmup 10 --steps 60 \
    --update-repeats 3
stage 240 benchmarks.fusion --device cuda --budget-s 180
echo "=== $(date -u +%H:%M:%S) done, exit $status"
exit "$status"
