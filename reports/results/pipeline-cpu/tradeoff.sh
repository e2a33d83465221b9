#!/usr/bin/env bash
# The trade-off: async, max_staleness 8, at the S=0 optimum of the fitted law and at the LR the law
# recommends for the staleness the pipeline measured (its staleness summary, "max"), 3 seeds each.
set -euo pipefail
R=reports/results/pipeline-cpu/tradeoff
S="stalesim validate pipeline --quiet --mode async --max-staleness 8 --steps 150"
ETA0=$(python -c "from stalesim.sim.law.model import default_law; print(float(default_law().eta_opt_at(0)))")
$S --lr $ETA0 --seed 0 --out $R/s0opt-seed0
# the law's staleness summary of the measured run, and the law's LR for it
ETA_LAW=$(python -m stalesim.validate.pipeline.tradeoff law-lr $R/s0opt-seed0)
for seed in 0 1 2; do
  $S --lr $ETA_LAW --seed $seed --out $R/law-seed$seed
  [ $seed = 0 ] || $S --lr $ETA0 --seed $seed --out $R/s0opt-seed$seed
done
python -m stalesim.validate.pipeline.tradeoff summary $R
