#!/usr/bin/env bash
# `stalesim bench gpu` on a bare CUDA box that has torch and Triton but none of stalesim's other
# dependencies and no network (the `device` machines this project is lent): the wheels it lacks
# travel in .whl/ (see README.md beside this file for the list and how they were fetched).
# Everything it measures lands in $OUT: log.txt (a line per kernel row as it is measured, so a
# run cut short still shows what it did), nvidia-smi.txt, and bench-gpu.tgz (the --out folder
# without the warm-start cache). Usage, from the repository root: OUT=/some/dir bash THIS_FILE
set -uo pipefail
OUT=${OUT:-/tmp/stalesim-gpu-out}
# the wheels, the package mapping, the card, log() and stalesim()
source "$(dirname "$0")/box_setup.sh"

# The whole script fits 8 minutes: bench gpu (now also the fused GRPO op, the few-rows case and
# a CUDA-graph replay of every case) gets 450 s with 7 repeats per figure, the spread run below
# only what is left.
repeats=${BENCH_REPEATS:-7}
log "stalesim bench gpu --out /tmp/bench-gpu --repeats $repeats"
timeout "${BENCH_GPU_LIMIT_S:-450}" bash -c "$(declare -f stalesim); stalesim bench gpu --out /tmp/bench-gpu --repeats $repeats" 2>&1 | tee -a "$OUT/log.txt"
rc=${PIPESTATUS[0]}
log "bench gpu exit $rc"
tar czf "$OUT/bench-gpu.tgz" -C /tmp/bench-gpu --exclude=./cache . 2>>"$OUT/log.txt"

# Time left: the kernel bench once more, so that each figure's run-to-run spread is known.
left=$(( ${TOTAL_LIMIT_S:-480} - ($(date +%s) - started) ))
if [ "$left" -gt 150 ]; then
    log "stalesim bench kernels --out /tmp/bench-kernels-repeat (spread; ${left} s left)"
    timeout "$((left - 20))" bash -c "$(declare -f stalesim); stalesim bench kernels --out /tmp/bench-kernels-repeat --repeats 10" 2>&1 | tee "$OUT/log-repeat.txt" | tail -5
    tar czf "$OUT/bench-kernels-repeat.tgz" -C /tmp/bench-kernels-repeat . 2>/dev/null
fi
log "done"
exit "$rc"
