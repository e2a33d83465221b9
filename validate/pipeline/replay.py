"""Replay a pipeline run in the simulator and compare what each says happened.

The scenario is built from the run alone: its decode, prefill and learner coefficients and their
dispersions are fitted to the rows of the run's own timing tables that fall in the steady-state
window the comparison reads (:func:`steady_calibration`), its response lengths are the
run's measured ones (an empirical distribution read from its ``samples.parquet``), the weight
sync's three costs (the learner's publish, the transfer, each engine's load) are the measured
means (:func:`weight_sync_costs`), and the mode, batch, group size, bound and engines are the
run's. The simulator then runs as many learner steps as the run finished, with several seeds
(its dispersions make each run one draw; the comparison reads their mean,
:func:`pool_metrics`), and both traces (which have the same columns) are reduced by the same
summary, :func:`stalesim.sim.metrics.measure` (read by :func:`replay_metrics`):

* throughput: samples and learner steps per second over the steady-state window (the
  simulator's warm-up rule, :func:`stalesim.sim.metrics.warmup_steps`);
* staleness of the samples consumed in that window: mean, and the full distribution, by sample
  (each sample's max lag) and by token (each sample's token-mean lag weighted by its tokens);
* the learner's idle fraction (time waiting for a batch over the window) and the mean number of
  complete groups waiting in the buffer.

Errors: relative for throughput, absolute (versions) for mean staleness, Kolmogorov–Smirnov
distance (largest gap between the two cumulative distributions) for the distributions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from stalesim.common.config_file import ConfigError, validate_config
from stalesim.common.files import write_json, write_parquet
from stalesim.common.output_dir import output_folder
from stalesim.common.tables import Column, read_json_object, read_table, require_finished
from stalesim.sim.calibrate import timings as cal_mod
from stalesim.sim.calibrate.timings import Calibration, calibrate_tables
from stalesim.sim.metrics import consumed_samples, measure, staleness_section, warmup_steps
from stalesim.sim.run import simulate
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import Trace
from stalesim.validate.pipeline.config import PipelineConfig
from stalesim.validate.pipeline.replay_stages import stage_metrics, throughput_standard_error
from stalesim.validate.pipeline.run import ENDED, PIPELINE_KIND, RUN_FILES

#: Targets of the replay on the CPU presets.
TARGETS = {"throughput_rel": 0.03, "staleness_mean_abs": 0.1, "ks": 0.1}


#: the columns the replay reads of each table of a run, with what they must hold
RUN_TABLES: dict[str, dict[str, Column]] = {
    "samples": {
        "finish_s": Column("float", min=0, nullable=True),
        "response_tokens": Column("int", min=0),
        "consumed_step": Column("int", min=0, nullable=True),
        "staleness_max": Column("int", min=0, nullable=True),
        "staleness_mean_tokens": Column("float", min=0, nullable=True),
        "dropped_reason": Column("str", nullable=True),
        "group_launch_s": Column("float", min=0, nullable=True),
        "group_complete_s": Column("float", min=0, nullable=True),
    },
    "steps": {
        "step": Column("int", min=0),
        "start_s": Column("float", min=0),
        "end_s": Column("float", min=0),
        "idle_before_s": Column("float", min=0),
        "version_end": Column("int", min=0),
        "tokens": Column("int", min=0),
        "publish_s": Column("float", min=0),
    },
    "queue": {"time_s": Column("float", min=0), "groups_waiting": Column("int", min=0)},
    "busy": {
        "pool": Column("str"),
        "kind": Column("str"),
        "start_s": Column("float", min=0),
        "end_s": Column("float", min=0),
    },
    "weights": {
        "version": Column("int", min=0),
        "seen_s": Column("float", min=0),
        "start_s": Column("float", min=0),
        "end_s": Column("float", min=0),
        "ready_s": Column("float", min=0),
    },
}
#: the timing tables the replay's calibration reads
TIMING_TABLES = ("decode_timings", "prefill_timings", "learner_timings")


def load_run(run_dir: Path) -> tuple[PipelineConfig, dict[str, pl.DataFrame]]:
    """The run's config and tables, after checking that the folder holds one finished run
    (its completion marker covers every file read, its summary says it ended) and that each
    table has the columns and values the replay reads; one-line errors otherwise."""
    names = [*RUN_FILES, *(f"{t}.parquet" for t in (*RUN_TABLES, *TIMING_TABLES))]
    if not run_dir.is_dir():
        raise ConfigError(
            f"{run_dir}: no such folder; give the folder `stalesim {PIPELINE_KIND}` wrote"
        )
    require_finished(run_dir, PIPELINE_KIND, names)
    summary = read_json_object(run_dir / "summary.json")
    status = summary.get("status")
    if status not in ENDED:
        raise ConfigError(
            f"{run_dir / 'summary.json'}: status {status!r}; only a run that ended "
            f"({' or '.join(ENDED)}) is replayed"
        )
    data = read_json_object(run_dir / "config.json")
    absent = [key for key in ("train", "algorithm") if key not in data]
    if absent:
        raise ConfigError(
            f"{run_dir / 'config.json'}: no {' or '.join(absent)} section; not a pipeline config"
        )
    config = validate_config(PipelineConfig, data, source=str(run_dir / "config.json"))
    tables = {
        name: read_table(run_dir / f"{name}.parquet", columns)
        for name, columns in RUN_TABLES.items()
    }
    if tables["steps"].height < 2:
        raise ConfigError(f"{run_dir}: {tables['steps'].height} learner steps; need at least 2")
    return config, tables


def weight_sync_costs(tables: dict[str, pl.DataFrame], inflight: bool) -> dict[str, float]:
    """The run's three weight-sync costs, as the simulator's ``weight_sync`` keys:

    * ``publish_s``: the learner's publish after each step (state copy, ``ray.put``, the
      coordinator's call: the learner's ``publish_s`` column); the learner waits for it;
    * ``latency_s``: the transfer, so that the simulated time from the end of a step until an
      engine hears of its version (``publish_s + latency_s``) is the measured mean of
      ``weights.parquet`` ``seen_s`` minus the step's ``end_s``. An engine often hears before
      the learner's call returns, so the latency is the difference of the means (0 when that
      is negative), not the mean of per-load differences clipped at 0, which would add time;
    * ``load_s``: the engine's stall, the mean over its loads: fetching and loading the weights
      (``start_s`` to ``end_s``) and, for an engine that loads between batches, the report that
      gets it new work (to ``ready_s``); an engine updated in flight decodes again right after
      loading. The load of the last version is left out: no work follows it, so its
      ``ready_s`` is the run's stop, not a cost.

    The learner does not wait for the engines, so the replay uses ``overlapped``.
    """
    steps, loads = tables["steps"], tables["weights"]
    has_publish = "publish_s" in steps.columns
    publish_s = float(steps["publish_s"].mean()) if has_publish else 0.0
    if loads.is_empty():
        return {"publish_s": publish_s, "latency_s": 0.0, "load_s": 0.0}
    ended = steps.select(pl.col("version_end").alias("version"), "end_s")
    joined = loads.join(ended, on="version", suffix="_step")
    heard = float(joined.select((pl.col("seen_s") - pl.col("end_s_step")).mean()).item() or 0.0)
    latency = max(0.0, heard - publish_s) if joined.height else 0.0
    last = int(steps["version_end"].max())
    kept = loads.filter(pl.col("version") < last)
    if kept.is_empty():
        kept = loads
    done = pl.col("end_s") if inflight else pl.col("ready_s")
    load = float(kept.select((done - pl.col("start_s")).mean()).item())
    return {"publish_s": publish_s, "latency_s": latency, "load_s": load}


def steady_calibration(run_dir: Path, steps: pl.DataFrame) -> Calibration:
    """The run's coefficients and dispersions fitted to the rows of its steady-state window
    only (the steps the comparison reads: after :func:`warmup_steps`), so that the slower
    warm-up (first batches, first weight loads) does not enter the timings the replay is
    compared on. Decode and prefill rows are selected by their ``time_s``, learner rows by
    ``step``."""
    ends = steps.sort("step")["end_s"].to_numpy()
    w = warmup_steps(len(ends))
    start = float(ends[w - 1]) if w else 0.0
    decode = cal_mod.read_table(
        run_dir / "decode_timings.parquet", {**cal_mod.DECODE_COLUMNS, "time_s": pl.Float64}
    )
    prefill = cal_mod.read_table(
        run_dir / "prefill_timings.parquet", {**cal_mod.PREFILL_COLUMNS, "time_s": pl.Float64}
    )
    learner = cal_mod.read_table(
        run_dir / "learner_timings.parquet", {**cal_mod.LEARNER_COLUMNS, "step": pl.Int64}
    )
    decode_w = decode.filter(pl.col("time_s") > start)
    prefill_w = prefill.filter(pl.col("time_s") > start)
    learner_w = learner.filter(pl.col("step") >= w)
    if decode_w.height < 3 or learner_w.filter(pl.col("phase") == "train").is_empty():
        # too short a run for a window of its own: every row
        decode_w, prefill_w, learner_w = decode, prefill, learner
    return calibrate_tables(
        decode_w.drop("time_s"),
        prefill_w.drop("time_s"),
        learner_w.drop("step"),
        source=run_dir / "decode_timings.parquet",
    )


def steady_tables(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    """The steps after the warm-up and the weight loads of the versions they published."""
    steps = tables["steps"]
    w = warmup_steps(steps.height)
    window = steps.filter(pl.col("step") >= w)
    loads = tables["weights"].filter(pl.col("version").is_in(window["version_end"].implode()))
    return {**tables, "steps": window, "weights": loads}


def replay_scenario(
    run_dir: Path, config: PipelineConfig, tables: dict[str, pl.DataFrame]
) -> tuple[Scenario, Calibration]:
    """The simulator's scenario of this run, calibrated from its own measurements over the
    steady-state window the comparison reads."""
    cal = steady_calibration(run_dir, tables["steps"])
    if cal.learner is None:
        raise ConfigError(f"{run_dir}: no learner_timings.parquet")
    train = config.train
    prompt = train.task.prompt_len
    n_embd, n_head, n_layer = train.policy.n_embd, train.policy.n_head, train.policy.n_layer
    vocab = train.task.vocab
    block = prompt + train.task.response_len
    params = vocab * n_embd + block * n_embd + n_layer * 12 * n_embd * n_embd
    sync = weight_sync_costs(steady_tables(tables), config.algorithm.inflight_updates)
    learner = dict(cal.learner)
    # the learner's overhead rows include its publish, which the simulator charges separately
    learner["step_overhead_s"] = max(0.0, learner["step_overhead_s"] - sync["publish_s"])
    data = {
        "name": f"replay of {run_dir.name}",
        "model": {
            "preset": "qwen2.5-1.5b",
            "params": float(params),
            "active_params": float(params),
            "layers": n_layer,
            "kv_heads": n_head,
            "head_dim": n_embd // n_head,
            "dtype_bytes": 4,
        },
        "workload": {
            "prompts_per_step": train.prompts_per_step,
            "group_size": train.samples_per_prompt,
            "prompt_tokens": {"kind": "fixed", "value": prompt},
            "response_tokens": {
                "kind": "empirical",
                "path": str(run_dir / "samples.parquet"),
                "column": "response_tokens",
            },
            "max_prompt_tokens": prompt,
            "max_response_tokens": train.task.response_len,
            "group_correlation": 0.0,
        },
        "cluster": {
            "rollout_engines": config.rollout_workers,
            "rollout_tp": 1,
            "learner_gpus": 1,
            "max_num_seqs": config.max_num_seqs,
            # the pipeline's engine prefills every sequence's prompt (no shared prefix)
            "prefix_caching": False,
            "decode_coefficients": cal.decode,
            "learner_coefficients": learner,
            # the run's own scatter around those fits: overlapped stages run at the mean of
            # their maximum, not the maximum of their means
            "decode_iteration_cv": cal.decode_cv or 0.0,
            "learner_step_cv": cal.learner_cv or 0.0,
        },
        "algorithm": config.algorithm.model_dump(mode="json"),
        "weight_sync": {
            "bandwidth_bytes_per_s": 1e18,
            "pause_policy": "overlapped",
            **sync,
        },
    }
    return Scenario.model_validate(data), cal


def _distribution(values: np.ndarray, weights: np.ndarray) -> dict[float, float]:
    out: dict[float, float] = {}
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        out[v] = out.get(v, 0.0) + w
    total = sum(out.values())
    return {k: w / total for k, w in sorted(out.items())} if total > 0 else {}


def ks_distance(a: dict[float, float], b: dict[float, float]) -> float:
    """Largest gap between the cumulative distributions of two weighted discrete laws."""
    if not a or not b:
        return float("nan")
    ca = cb = gap = 0.0
    for x in sorted(set(a) | set(b)):
        ca += a.get(x, 0.0)
        cb += b.get(x, 0.0)
        gap = max(gap, abs(ca - cb))
    return gap


def run_trace(tables: dict[str, pl.DataFrame]) -> Trace:
    """A pipeline run's tables as a trace (the simulator's frames), ending at its last step."""
    steps = tables["steps"]
    return Trace(
        samples=tables["samples"],
        steps=steps,
        busy=tables["busy"],
        queue=tables["queue"],
        end_s=float(steps["end_s"].max()),
    )


def replay_metrics(trace: Trace) -> dict[str, Any]:
    """What the replay compares of one trace (real or simulated), read from its run summary
    (:func:`stalesim.sim.metrics.measure`), so both sides have one definition. Staleness is the
    summary's own reduction (:func:`stalesim.sim.metrics.staleness_section`) over the samples
    consumed in the steady-state window, where throughput is read too: the warm-up's fill
    (lags still growing to their steady level) is left out of both."""
    summary = measure(trace)
    w = summary.warmup_steps
    used = consumed_samples(trace).filter(pl.col("consumed_step") >= w)
    staleness = staleness_section(used)
    by_sample = staleness.sample_quantiles
    lag = used["staleness_max"].to_numpy().astype(np.float64)
    token_lag = np.round(used["staleness_mean_tokens"].to_numpy(), 3)
    tokens = used["response_tokens"].to_numpy().astype(np.float64)
    window = summary.measured_window_s
    idle = float(trace.steps.filter(pl.col("step") >= w)["idle_before_s"].sum())
    steps_per_h = summary.throughput.steps_per_h
    return {
        "steps": summary.steps,
        "warmup_steps": w,
        "window_s": window,
        "samples_per_s": summary.throughput.samples_per_s,
        "steps_per_s": None if steps_per_h is None else steps_per_h / 3600.0,
        "staleness_mean": by_sample.mean,
        "staleness_token_mean": staleness.token_quantiles.mean,
        "staleness_max": by_sample.max,
        "staleness_hist": _distribution(lag, np.ones_like(lag)),
        "staleness_token_hist": _distribution(token_lag, tokens),
        "learner_idle_fraction": idle / window if window > 0 else None,
        "queue_mean_groups": summary.mean_queue_groups,
        "dropped_samples": summary.dropped_samples,
    }


def _rel(sim: float | None, real: float | None) -> float | None:
    if sim is None or real is None or real == 0:
        return None
    return (sim - real) / real


def compare(real: dict[str, Any], sim: dict[str, Any]) -> dict[str, Any]:
    """The errors of the simulator against the run, with the targets they are held to."""
    errors = {
        "samples_per_s_rel": _rel(sim["samples_per_s"], real["samples_per_s"]),
        "steps_per_s_rel": _rel(sim["steps_per_s"], real["steps_per_s"]),
        "staleness_mean_abs": abs(sim["staleness_mean"] - real["staleness_mean"]),
        "staleness_token_mean_abs": abs(sim["staleness_token_mean"] - real["staleness_token_mean"]),
        "ks_samples": ks_distance(real["staleness_hist"], sim["staleness_hist"]),
        "ks_tokens": ks_distance(real["staleness_token_hist"], sim["staleness_token_hist"]),
        "learner_idle_fraction_abs": abs(
            sim["learner_idle_fraction"] - real["learner_idle_fraction"]
        ),
        "queue_mean_groups_abs": abs(sim["queue_mean_groups"] - real["queue_mean_groups"]),
    }
    met = {
        "throughput": all(
            v is not None and abs(v) <= TARGETS["throughput_rel"]
            for v in (errors["samples_per_s_rel"], errors["steps_per_s_rel"])
        ),
        "staleness_mean": errors["staleness_mean_abs"] <= TARGETS["staleness_mean_abs"]
        and errors["staleness_token_mean_abs"] <= TARGETS["staleness_mean_abs"],
        "ks": errors["ks_samples"] <= TARGETS["ks"] and errors["ks_tokens"] <= TARGETS["ks"],
    }
    return {"errors": errors, "targets": TARGETS, "met": met}


def pool_metrics(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The simulator's figures over several seeds: each number is the mean over the seeds,
    each distribution the mixture of theirs (equal weights), so that a comparison reads the
    model's expectation rather than one draw of its dispersion."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [run[key] for run in runs]
        if isinstance(first, dict):
            mixed: dict[Any, float] = {}
            for dist in values:
                for x, share in dist.items():
                    mixed[x] = mixed.get(x, 0.0) + share / len(values)
            out[key] = dict(sorted(mixed.items()))
        elif any(v is None for v in values):
            out[key] = None
        else:
            out[key] = float(np.mean(values))
    return out


def replay(
    run_dir: str | Path,
    *,
    seed: int | None = None,
    seeds: int = 5,
    out: str | Path | None = None,
) -> dict:
    """Calibrate, simulate ``seeds`` times (seeds ``seed``, ``seed + 1``, ...) and compare the
    run with the simulator's mean over them; writes the first seed's simulated trace and
    ``replay.json`` (pooled figures, each seed's errors, the stage figures of both traces and
    the run's own throughput standard error)."""
    if seeds < 1:
        raise ConfigError(f"seeds={seeds}: need at least 1 simulator run")
    run_dir = Path(run_dir)
    config, tables = load_run(run_dir)
    scenario, cal = replay_scenario(run_dir, config, tables)
    n_steps = tables["steps"].height
    first_seed = config.seed if seed is None else seed
    real = replay_metrics(run_trace(tables))
    runs, stages, per_seed, trace = [], [], [], None
    for i in range(seeds):
        simulated = simulate(scenario, n_steps, first_seed + i)
        trace = trace or simulated
        metrics = replay_metrics(simulated)
        runs.append(metrics)
        stages.append(stage_metrics(simulated.samples, simulated.steps, simulated.busy))
        one = compare(real, metrics)
        per_seed.append({"seed": first_seed + i, **one["errors"], "met": one["met"]})
    assert trace is not None
    sim = pool_metrics(runs)
    out_dir = Path(out) if out is not None else run_dir / "replay"
    result = {
        "run": str(run_dir),
        "mode": config.algorithm.mode,
        "max_staleness": config.algorithm.max_staleness,
        "inflight_updates": config.algorithm.inflight_updates,
        "steps": n_steps,
        "seeds": [first_seed + i for i in range(seeds)],
        "scenario": scenario.model_dump(mode="json"),
        "calibration": {**cal.fragment(), "fit": cal.fit_report()},
        "real": real,
        "sim": sim,
        "per_seed": per_seed,
        "stages": {
            "real": stage_metrics(tables["samples"], tables["steps"], tables["busy"]),
            "sim": pool_metrics(stages),
        },
        "real_throughput_standard_error": throughput_standard_error(tables["steps"]),
        **compare(real, sim),
    }
    # the trace and replay.json are published together, so a killed replay never leaves a
    # new trace beside an old replay.json
    with output_folder(out_dir, kind="validate replay") as stage:
        for name in ("samples", "steps", "busy", "queue"):
            write_parquet(stage / f"{name}.parquet", getattr(trace, name))
        write_json(stage / "replay.json", result)
    return result
