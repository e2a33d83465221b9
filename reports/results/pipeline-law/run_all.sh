#!/usr/bin/env bash
# The commands that made reports/results/pipeline-law (run from the repository root).
# Real asynchronous GRPO on Ray (`cpu-ns`: the non-saturating law task, 300 learner steps),
# async at max_staleness 4 and 8; per bound: StalenessLR on the conservative shipped law read at
# each mini-batch's max lag and at its mean lag (both from the law's eta_opt(0), untuned), and
# constants at eta_opt(0) (no correction) and at 1/sqrt(2), 1/2 and 1/(2 sqrt(2)) of it; seeds
# 0-5, one run at a time (the lag emerges from timing, so runs must not share the cores).
# A run is retried once when a loaded machine makes Ray's local start time out; a finished run
# (stalesim-complete.json) is skipped, so the script resumes.
set -uo pipefail
R=${R:-reports/results/pipeline-law}
ETA0=0.0005575160119787951  # CONSERVATIVE_LAW in validate/train/presets.py
LAW="--set train.lr_rule.kind=law --set train.lr_rule.eta0=$ETA0 --set train.lr_rule.s_c=40.345237564315894 --set train.lr_rule.k=1.0 --set train.lr_rule.alpha=4.999999999999999 --set train.lr_rule.source=sim/data/laws/conservative.json"
run() { "$@" || { echo "retrying: $*"; "$@"; }; }
for seed in 0 1 2 3 4 5; do
  for ms in 4 8; do
    S="stalesim validate pipeline --preset cpu-ns --quiet --max-staleness $ms --seed $seed"
    for rule in law-max law-mean; do
      out=$R/ms$ms/$rule/seed$seed
      [ -f "$out/stalesim-complete.json" ] || run $S --lr $ETA0 $LAW --set train.lr_rule.summary=${rule#law-} --out "$out"
    done
    for f in 1 0.7071067811865476 0.5 0.3535533905932738; do
      lr=$(python -c "print($ETA0 * $f)")
      out=$R/ms$ms/constant/lr$lr/seed$seed
      [ -f "$out/stalesim-complete.json" ] || run $S --lr "$lr" --out "$out"
    done
  done
done
