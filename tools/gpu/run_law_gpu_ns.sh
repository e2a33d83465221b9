#!/usr/bin/env bash
# The law's GPU question on a bare CUDA box (see box_setup.sh): the `law-gpu-ns` sweep
# (gpu-small's policy and 32,768-token vocabulary on the non-saturating 12-digit base-16 sort
# task, S in {0, 8} x 4 rates x 2 seeds, 60-step runs) through the Triton kernels, then
# `stalesim fit`. Sized for one call of at most 8 minutes: the sweep stops at
# $LAW_GPU_LIMIT_S (default 420 s) and what it finished still comes back (it is resumable and
# runs seed-major, so early runs cover every S and rate). Everything lands in $OUT: log.txt,
# nvidia-smi.txt, law-gpu-ns.tgz (the sweep folder: config, shards, tables, law.json, fit.txt).
# Usage, from the repository root: OUT=/some/dir bash THIS_FILE
# $LAW_GPU_ARGS is appended to the sweep's options (a test shrinks the sweep onto the CPU with
# it); $LAW_GPU_WORKERS (default 2) processes share the card.
set -uo pipefail
OUT=${OUT:-/tmp/stalesim-gpu-out}
RUNS=${LAW_GPU_RUNS:-/tmp/law-gpu-ns}
export STALESIM_CACHE_DIR=${STALESIM_CACHE_DIR:-/tmp/law-gpu-ns-cache}
# the wheels, the package mapping, the card, log() and stalesim()
source "$(dirname "$0")/box_setup.sh"

# shellcheck disable=SC2206  # the extra options are words on purpose
extra=(${LAW_GPU_ARGS:-})
sweep=(validate sweep --preset law-gpu-ns --out "$RUNS" --workers "${LAW_GPU_WORKERS:-2}" --quiet
    --set train.backend=triton "${extra[@]}")
log "stalesim ${sweep[*]}"
timeout "${LAW_GPU_LIMIT_S:-420}" bash -c "$(declare -f stalesim); stalesim \"\$@\"" _ "${sweep[@]}" 2>&1 | tee -a "$OUT/log.txt"
rc=${PIPESTATUS[0]}
log "sweep exit $rc"
if [ "$rc" -ne 0 ]; then
    # cut short: the runs that finished (their shards) become the tables the fit reads
    python3 -c 'import sys; from pathlib import Path; from stalesim.validate.law.sweep import merge; r, _ = merge(Path(sys.argv[1])); print(r.height, "finished runs merged")' "$RUNS" 2>&1 | tail -1 | tee -a "$OUT/log.txt"
fi

log "stalesim fit $RUNS"
timeout "${LAW_GPU_FIT_LIMIT_S:-45}" bash -c "$(declare -f stalesim); stalesim fit \"\$1\" --quiet" _ "$RUNS" >"$RUNS/fit.txt" 2>&1
log "fit exit $? (fit.txt: $(tail -1 "$RUNS/fit.txt" 2>/dev/null))"
tar czf "$OUT/law-gpu-ns.tgz" -C "$RUNS" . 2>>"$OUT/log.txt"
log "done"
exit "$rc"
