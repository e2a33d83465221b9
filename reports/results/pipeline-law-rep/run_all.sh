#!/usr/bin/env bash
# The commands that made reports/results/pipeline-law-rep (run from the repository root): a
# replication of pipeline-law's one positive reading (at max_staleness 8, the law read at each
# mini-batch's mean lag ahead of the law read at its max lag) on six new seeds, 6-11. Same preset
# (cpu-ns), same law curve and base rate, same bound; the law at the max and at the mean lag,
# and the constant at the base rate (no correction). One run at a time (the lag emerges from the
# timing, so runs must not share the cores). The timing tables the replay reads are removed
# after each run (the comparison does not read them). A finished run is skipped; a run is
# retried once when a loaded machine makes Ray's local start time out.
set -uo pipefail
R=${R:-reports/results/pipeline-law-rep}
ETA0=0.0005575160119787951  # CONSERVATIVE_LAW in validate/train/presets.py
LAW="--set train.lr_rule.kind=law --set train.lr_rule.eta0=$ETA0 --set train.lr_rule.s_c=40.345237564315894 --set train.lr_rule.k=1.0 --set train.lr_rule.alpha=4.999999999999999 --set train.lr_rule.source=sim/data/laws/conservative.json"
run() { "$@" || { echo "retrying: $*"; "$@"; }; }
for seed in 6 7 8 9 10 11; do
  S="stalesim validate pipeline --preset cpu-ns --quiet --max-staleness 8 --seed $seed"
  for rule in law-max law-mean; do
    out=$R/ms8/$rule/seed$seed
    [ -f "$out/stalesim-complete.json" ] || run $S --lr $ETA0 $LAW --set train.lr_rule.summary=${rule#law-} --out "$out"
  done
  out=$R/ms8/constant/lr$ETA0/seed$seed
  [ -f "$out/stalesim-complete.json" ] || run $S --lr $ETA0 --out "$out"
  find "$R/ms8" -path "*seed$seed*" -name "*_timings.parquet" -delete
done
python -m stalesim.validate.pipeline.law_rules "$R"
