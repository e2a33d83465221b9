"""Replay a pipeline run in the simulator and compare what each says happened.

The scenario is built from the run alone: its decode, prefill and learner coefficients are fitted
to the run's own timing tables (:mod:`stalesim.sim.calibrate.timings`), its response lengths are the
run's measured ones (an empirical distribution read from its ``samples.parquet``), the weight
sync's three costs (the learner's publish, the transfer, each engine's load) are the measured
means (:func:`weight_sync_costs`), and the mode, batch, group size, bound and engines are the
run's. The simulator then runs as many learner steps as the run finished, and both traces (which
have the same columns) are measured by the simulator's own run summary,
:func:`stalesim.sim.metrics.measure`; :func:`replay_metrics` reads from it:

* throughput: samples and learner steps per second over the steady-state window (the
  summary's warm-up rule, :func:`stalesim.sim.metrics.warmup_steps`);
* staleness of every consumed sample: mean and distribution by sample (each sample's max lag)
  and by token (each sample's token-mean lag weighted by its tokens);
* the learner's idle fraction (time waiting for a batch over the summary's window) and the mean
  number of complete groups waiting in the buffer.

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
from stalesim.sim.calibrate.timings import Calibration, calibrate
from stalesim.sim.metrics import consumed_samples, measure
from stalesim.sim.run import simulate
from stalesim.sim.scenario import Scenario
from stalesim.sim.trace import Trace
from stalesim.validate.pipeline.config import PipelineConfig
from stalesim.validate.pipeline.run import ENDED, PIPELINE_KIND, RUN_FILES

#: Targets of the replay on the CPU presets.
TARGETS = {"throughput_rel": 0.03, "staleness_mean_abs": 0.1, "ks": 0.1}


#: the columns the replay reads of each table of a run, with what they must hold
RUN_TABLES: dict[str, dict[str, Column]] = {
    "samples": {
        "response_tokens": Column("int", min=0),
        "finish_s": Column("float", min=0, nullable=True),
        "consumed_step": Column("int", min=0, nullable=True),
        "staleness_max": Column("int", min=0, nullable=True),
        "staleness_mean_tokens": Column("float", min=0, nullable=True),
        "dropped_reason": Column("str", nullable=True),
    },
    "steps": {
        "step": Column("int", min=0),
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
    """The run's three weight-sync costs, as the simulator's ``weight_sync`` keys (means over
    every load an engine made):

    * ``publish_s``: the learner's publish after each step (state copy, ``ray.put``, the
      coordinator's call: the learner's ``publish_s`` column); the learner waits for it;
    * ``latency_s``: the transfer, from the end of that publish until the engine heard of the
      version (``weights.parquet`` ``seen_s``; 0 when the engine heard before the learner's
      call returned);
    * ``load_s``: the engine's stall: fetching and loading the weights (``start_s`` to
      ``end_s``) and, for an engine that loads between batches, the report that gets it new
      work (to ``ready_s``); an engine updated in flight decodes again right after loading.

    The learner does not wait for the engines, so the replay uses ``overlapped``.
    """
    steps, loads = tables["steps"], tables["weights"]
    publish_s = float(steps["publish_s"].mean()) if "publish_s" in steps.columns else 0.0
    if loads.is_empty():
        return {"publish_s": publish_s, "latency_s": 0.0, "load_s": 0.0}
    published = steps.select(
        pl.col("version_end").alias("version"),
        (pl.col("end_s") + (pl.col("publish_s") if "publish_s" in steps.columns else 0.0)).alias(
            "published_s"
        ),
    )
    joined = loads.join(published, on="version")
    arrival = (pl.col("seen_s") - pl.col("published_s")).clip(lower_bound=0.0)
    latency = float(joined.select(arrival.mean()).item()) if joined.height else 0.0
    done = pl.col("end_s") if inflight else pl.col("ready_s")
    load = float(loads.select((done - pl.col("start_s")).mean()).item())
    return {"publish_s": publish_s, "latency_s": latency, "load_s": load}


def replay_scenario(
    run_dir: Path, config: PipelineConfig, tables: dict[str, pl.DataFrame]
) -> tuple[Scenario, Calibration]:
    """The simulator's scenario of this run, calibrated from its own measurements."""
    cal = calibrate(run_dir)
    if cal.learner is None:
        raise ConfigError(f"{run_dir}: no learner_timings.parquet")
    train = config.train
    prompt = train.task.n_digits + 1
    n_embd, n_head, n_layer = train.policy.n_embd, train.policy.n_head, train.policy.n_layer
    vocab = train.task.base + 3
    block = prompt + train.task.n_digits + 1
    params = vocab * n_embd + block * n_embd + n_layer * 12 * n_embd * n_embd
    sync = weight_sync_costs(tables, config.algorithm.inflight_updates)
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
            "max_response_tokens": train.task.n_digits + 1,
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
    """What the replay compares of one trace (real or simulated), all read from its run
    summary (:func:`stalesim.sim.metrics.measure`), so both sides have one definition."""
    summary = measure(trace)
    by_sample = summary.staleness.sample_quantiles
    lags = np.array([float(b.staleness) for b in summary.staleness.histogram])
    counts = np.array([float(b.samples) for b in summary.staleness.histogram])
    # the distribution the summary's token quantiles are read from: each consumed sample's
    # token-mean lag, weighted by its tokens
    used = consumed_samples(trace)
    token_lag = np.round(used["staleness_mean_tokens"].to_numpy(), 3)
    tokens = used["response_tokens"].to_numpy().astype(np.float64)
    window = summary.measured_window_s
    idle = float(trace.steps.filter(pl.col("step") >= summary.warmup_steps)["idle_before_s"].sum())
    steps_per_h = summary.throughput.steps_per_h
    return {
        "steps": summary.steps,
        "warmup_steps": summary.warmup_steps,
        "window_s": window,
        "samples_per_s": summary.throughput.samples_per_s,
        "steps_per_s": None if steps_per_h is None else steps_per_h / 3600.0,
        "staleness_mean": by_sample.mean,
        "staleness_token_mean": summary.staleness.token_quantiles.mean,
        "staleness_max": by_sample.max,
        "staleness_hist": _distribution(lags, counts),
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


def replay(run_dir: str | Path, *, seed: int | None = None, out: str | Path | None = None) -> dict:
    """Calibrate, simulate and compare; writes the simulated trace and ``replay.json``."""
    run_dir = Path(run_dir)
    config, tables = load_run(run_dir)
    scenario, cal = replay_scenario(run_dir, config, tables)
    n_steps = tables["steps"].height
    trace = simulate(scenario, n_steps, config.seed if seed is None else seed)
    real = replay_metrics(run_trace(tables))
    sim = replay_metrics(trace)
    out_dir = Path(out) if out is not None else run_dir / "replay"
    result = {
        "run": str(run_dir),
        "mode": config.algorithm.mode,
        "max_staleness": config.algorithm.max_staleness,
        "inflight_updates": config.algorithm.inflight_updates,
        "steps": n_steps,
        "scenario": scenario.model_dump(mode="json"),
        "calibration": {**cal.fragment(), "fit": cal.fit_report()},
        "real": real,
        "sim": sim,
        **compare(real, sim),
    }
    # the trace and replay.json are published together, so a killed replay never leaves a
    # new trace beside an old replay.json
    with output_folder(out_dir, kind="validate replay") as stage:
        for name in ("samples", "steps", "busy", "queue"):
            write_parquet(stage / f"{name}.parquet", getattr(trace, name))
        write_json(stage / "replay.json", result)
    return result
