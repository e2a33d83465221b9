#!/usr/bin/env bash
# The commands that made reports/results/pipeline-cpu (run from the repository root).
# A run is retried once when a loaded machine makes Ray's local start time out.
set -uo pipefail
R=${R:-reports/results/pipeline-cpu}  # lower-load/: the same with R=reports/results/pipeline-cpu/lower-load
S="stalesim validate pipeline --quiet"
run() { "$@" || { echo "retrying: $*"; "$@"; }; }
# every mode of the replay on the cpu preset (1 rollout worker + 1 learner, 1 torch thread each)
run $S --mode sync --out $R/sync
run $S --mode one_step --out $R/one_step
run $S --mode async --max-staleness 2 --out $R/async
run $S --mode async --max-staleness 2 --inflight --out $R/async-inflight
run $S --mode partial_rollout --out $R/partial_rollout
for r in sync one_step async async-inflight partial_rollout; do
  stalesim validate replay $R/$r > $R/$r/replay.txt
done
