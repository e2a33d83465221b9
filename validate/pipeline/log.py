"""The CPU pipeline's runs as a trainer logs them, and the counterfactual checked on them.

:func:`verl_rows` writes a ``stalesim validate pipeline`` run's per-step record in verl's metric
names, only what verl's trainer would log (phase seconds, response and prompt lengths, tokens),
none of the run's per-decode-iteration timing tables. :func:`counterfactual` calibrates the
simulator from a synchronous run's rows alone (``stalesim calibrate --from verl``), predicts
other runs of the same setup in other modes, and compares their throughput and staleness with
what those runs measured, as the replay does (:func:`stalesim.validate.pipeline.replay.replay_metrics`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
from stalesim.common.config_file import ConfigError
from stalesim.sim.calibrate.logs import calibrate_log, with_fragment
from stalesim.sim.calibrate.trainer_logs import log_from_rows
from stalesim.sim.modes import MODES
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import simulate
from stalesim.validate.pipeline.replay import TARGETS, load_run, replay_metrics, run_trace


def verl_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """One ``{"step", "data"}`` row per learner step, as verl's file logger writes them:
    ``timing_s/gen`` (the learner's wait for its batch), ``timing_s/update_actor`` (batch
    preparation, the training call and its overhead), ``timing_s/update_weights`` (the
    publish), ``timing_s/step`` (step end to step end), ``response_length/mean|max|clip_ratio``,
    ``prompt_length/mean`` and ``perf/total_num_tokens``."""
    run_dir = Path(run_dir)
    config, tables = load_run(run_dir)
    steps = tables["steps"].sort("step")
    samples = tables["samples"].filter(pl.col("consumed_step").is_not_null())
    cap = config.train.task.response_len
    rows = []
    previous = 0.0
    for step in steps.iter_rows(named=True):
        used = samples.filter(pl.col("consumed_step") == step["step"])
        lengths = used["response_tokens"]
        update = step["train_s"] + step.get("prep_s", 0.0) + step.get("call_overhead_s", 0.0)
        data = {
            "timing_s/gen": float(step["idle_before_s"]),
            "timing_s/update_actor": float(update),
            "timing_s/update_weights": float(step.get("publish_s") or 0.0),
            "timing_s/step": float(step["end_s"] - previous),
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "response_length/clip_ratio": float((lengths >= cap).mean()),
            "prompt_length/mean": float(used["prompt_tokens"].mean()),
            "perf/total_num_tokens": int(step["tokens"]),
        }
        previous = float(step["end_s"])
        rows.append({"step": int(step["step"]) + 1, "data": data})
    return rows


def _as_run(run_dir: Path) -> tuple[Any, dict[str, pl.DataFrame]]:
    config, tables = load_run(run_dir)
    if "staleness_max" not in tables["samples"].columns:
        raise ConfigError(f"{run_dir}: samples.parquet has no staleness columns")
    return config, tables


def counterfactual(
    sync_run: str | Path, targets: dict[str, str | Path], scenario_file: str | Path, seed: int = 0
) -> dict[str, Any]:
    """Calibrate from ``sync_run``'s trainer-form rows alone, then predict each target run
    (name -> run folder) by simulating ``scenario_file`` in the target's mode with the
    fragment laid over; compare throughput and staleness with the target's measurement."""
    sync_run = Path(sync_run)
    config, _ = _as_run(sync_run)
    if not MODES[config.algorithm.mode].on_policy:
        raise ConfigError(f"{sync_run}: mode {config.algorithm.mode}; give a synchronous run")
    rows = verl_rows(sync_run)
    log = log_from_rows(rows, "verl", f"{sync_run} (as verl logs it)")
    base = load_scenario(str(scenario_file))
    # a CPU-sized scenario simulates in a blink: fit the generation rate on every logged step
    calibration = calibrate_log(
        log, base, scenario_from=str(scenario_file), sim_steps=len(rows), seed=seed
    )
    fragment = calibration.fragment()
    results: dict[str, Any] = {}
    for name, run_dir in {"sync (the calibration run)": sync_run, **targets}.items():
        run_dir = Path(run_dir)
        target_config, tables = _as_run(run_dir)
        algo = target_config.algorithm
        modes = {
            k: v
            for k, v in algo.model_dump(mode="json").items()
            if k in ("mode", "max_staleness", "inflight_updates", "old_logprob_pass")
        }
        scenario = with_fragment(base, {**fragment, "algorithm": modes})
        steps = tables["steps"].height
        trace = simulate(scenario, steps, seed)
        real = replay_metrics(run_trace(tables))
        sim = replay_metrics(trace)
        throughput = sim["samples_per_s"] / real["samples_per_s"] - 1.0
        staleness = abs(sim["staleness_mean"] - real["staleness_mean"])
        results[name] = {
            "run": str(run_dir),
            "mode": algo.mode,
            "max_staleness": algo.max_staleness,
            "real_samples_per_s": real["samples_per_s"],
            "sim_samples_per_s": sim["samples_per_s"],
            "samples_per_s_rel": throughput,
            "real_staleness_mean": real["staleness_mean"],
            "sim_staleness_mean": sim["staleness_mean"],
            "staleness_mean_abs": staleness,
            "real_learner_idle": real["learner_idle_fraction"],
            "sim_learner_idle": sim["learner_idle_fraction"],
            "met": {
                "throughput": abs(throughput) <= TARGETS["throughput_rel"],
                "staleness_mean": staleness <= TARGETS["staleness_mean_abs"],
            },
        }
    return {
        "sync_run": str(sync_run),
        "scenario": str(scenario_file),
        "seed": seed,
        "targets": TARGETS,
        "calibration": {**calibration.fit_report(), **fragment},
        "runs": results,
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m stalesim.validate.pipeline.log SYNC_RUN SCENARIO OUT.json NAME=RUN ...``"""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3:
        raise SystemExit(__doc__)
    sync_run, scenario, out, *pairs = args
    targets = dict(p.split("=", 1) for p in pairs)
    result = counterfactual(sync_run, targets, scenario)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    for name, r in result["runs"].items():
        print(
            f"{name}: samples/s real {r['real_samples_per_s']:.0f} sim "
            f"{r['sim_samples_per_s']:.0f} ({r['samples_per_s_rel']:+.1%}); staleness mean "
            f"real {r['real_staleness_mean']:.3f} sim {r['sim_staleness_mean']:.3f}"
        )


if __name__ == "__main__":
    main()
