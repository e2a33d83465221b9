#!/usr/bin/env bash
# The counterfactual on the CPU pipeline (run from the repository root; ~15 s, no new pipeline
# run): the committed synchronous run, written as verl logs it, calibrates the simulator alone;
# the committed one_step and async runs of the same setup are predicted and compared.
set -euo pipefail
P=reports/results/pipeline-cpu
python -c "from stalesim.validate.pipeline.log import verl_rows; from stalesim.sim.calibrate.trainer_logs import write_verl_jsonl; write_verl_jsonl(verl_rows('$P/sync'), '$P/counterfactual/sync-as-verl.jsonl')"
stalesim calibrate --from verl $P/counterfactual/sync-as-verl.jsonl --scenario $P/counterfactual/scenario-sync.yaml --sim-steps 120 --out $P/counterfactual/calibrated.yaml > $P/counterfactual/calibrate.txt
python -m stalesim.validate.pipeline.log $P/sync $P/counterfactual/scenario-sync.yaml $P/counterfactual/counterfactual.json one_step=$P/one_step async=$P/async > $P/counterfactual/counterfactual.txt
