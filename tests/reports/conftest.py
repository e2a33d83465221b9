"""A simulate output folder built from explicit, hand-chosen intervals.

It obeys the simulator's file contract (column and key names) so the renderer can be tested
on its own; the schedule is spelled out below, and the summary's numbers are the ones the
tests compare the page against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stalesim.common.output_dir import seal

#: Two rollout engines and one learner over four learner steps of 10 s each. Engine 0 decodes
#: [0, 8) of every 10 s, engine 1 decodes [2, 10); the learner trains [6, 10) of every 10 s
#: after the first; weight sync takes [9.5, 10) on both engines.
STEPS = 4
PERIOD_S = 10.0


def hand_made_busy() -> pl.DataFrame:
    rows = []
    for k in range(STEPS):
        t0 = k * PERIOD_S
        rows += [
            ("rollout", 0, "decode", t0 + 0.0, t0 + 8.0),
            ("rollout", 1, "decode", t0 + 2.0, t0 + 9.5),
            ("rollout", 0, "weight_sync", t0 + 9.5, t0 + 10.0),
            ("rollout", 1, "weight_sync", t0 + 9.5, t0 + 10.0),
        ]
        if k > 0:
            rows.append(("learner", 0, "train", t0 + 6.0, t0 + 10.0))
    return pl.DataFrame(
        rows,
        schema={
            "pool": pl.String,
            "unit": pl.Int64,
            "kind": pl.String,
            "start_s": pl.Float64,
            "end_s": pl.Float64,
        },
        orient="row",
    )


def hand_made_steps() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "step": list(range(STEPS - 1)),
            "start_s": [PERIOD_S * k + 6.0 for k in range(1, STEPS)],
            "end_s": [PERIOD_S * k + 10.0 for k in range(1, STEPS)],
            "idle_before_s": [16.0, 6.0, 6.0],
            "version_start": list(range(STEPS - 1)),
            "version_end": list(range(1, STEPS)),
        }
    )


def hand_made_queue() -> pl.DataFrame:
    # One group completes at 8 s and 9.5 s of each period; the learner takes both at 6 s of the next.
    times, waiting = [], []
    for k in range(STEPS):
        t0 = k * PERIOD_S
        if k > 0:
            times.append(t0 + 6.0)
            waiting.append(0)
        times += [t0 + 8.0, t0 + 9.5]
        waiting += [1, 2]
    return pl.DataFrame({"time_s": times, "groups_waiting": waiting})


def hand_made_samples() -> pl.DataFrame:
    n = 8
    return pl.DataFrame(
        {
            "sample_id": list(range(n)),
            "group_id": [i // 2 for i in range(n)],
            "engine": [i % 2 for i in range(n)],
            "start_s": [0.0, 2.0] * 4,
            "finish_s": [8.0, 9.5] * 4,
            "prompt_tokens": [100] * n,
            "response_tokens": [200, 400] * 4,
            "behaviour_version_min": [0] * n,
            "behaviour_version_max": [0] * n,
            "consumed_step": [0, 0, 0, 0, 1, 1, None, None],
            "consumed_version": [0, 0, 0, 0, 1, 1, None, None],
            "staleness_max": [0, 0, 0, 0, 1, 1, None, None],
            "staleness_min": [0, 0, 0, 0, 1, 1, None, None],
            "staleness_mean_tokens": [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, None, None],
            "dropped_reason": [None] * 6 + ["in_flight", "in_flight"],
        }
    )


def hand_made_summary() -> dict:
    return {
        "scenario": {
            "hardware": {"gpu": "H100", "price_per_gpu_hour": 2.5},
            "model": {"preset": "qwen2.5-1.5b"},
            "workload": {"prompts_per_step": 2, "group_size": 2, "max_response_tokens": 4096},
            "cluster": {"rollout_engines": 2, "rollout_tp": 1, "learner_gpus": 1},
            "algorithm": {"mode": "async", "max_staleness": 2, "minibatches_per_step": 1},
            "tags": ["a", "b"],
        },
        "steps": 3,
        "seed": 7,
        "warmup_steps": 1,
        "warmup_s": 10.0,
        "measured_window_s": 30.0,
        "simulated_s": 40.0,
        "throughput": {"samples_per_s": 0.4, "tokens_per_s": 123.456789, "steps_per_h": 360.0},
        "step_time_s": {"mean": 4.0, "p50": 4.0, "p99": 4.25},
        "utilisation": {"rollout": 0.825, "learner": 0.4},
        "mean_queue_groups": 1.1666666666666667,
        "staleness": {
            "histogram": [
                {"staleness": 0, "samples": 4, "tokens": 1200},
                {"staleness": 1, "samples": 2, "tokens": 600},
                {"staleness": 2, "samples": 0, "tokens": 0},
            ],
            "sample_quantiles": {
                "mean": 0.3333333333333333,
                "p50": 0.0,
                "p90": 1.0,
                "p99": 1.0,
                "max": 1,
            },
            "token_quantiles": {
                "mean": 0.3333333333333333,
                "p50": 0.0,
                "p90": 1.0,
                "p99": 1.0,
                "max": 1,
            },
        },
        "dropped": {"in_flight": 2, "stale": 0},
        "unconsumed_at_end": {},
        "samples_generated": 8,
        "prefill_s": 0.0,
        "kv_recompute_s": 0.0,
        "gpu_hours": 0.03333333333333333,
        "cost_usd": 0.08333333333333333,
        "wall_s": 0.012,
    }


def write_sim_output(
    out_dir: Path,
    busy: pl.DataFrame | None = None,
    queue: pl.DataFrame | None = None,
    engines: int = 2,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = hand_made_summary()
    summary["scenario"]["cluster"]["rollout_engines"] = engines
    (busy if busy is not None else hand_made_busy()).write_parquet(out_dir / "busy.parquet")
    (queue if queue is not None else hand_made_queue()).write_parquet(out_dir / "queue.parquet")
    hand_made_steps().write_parquet(out_dir / "steps.parquet")
    hand_made_samples().write_parquet(out_dir / "samples.parquet")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    names = ("busy.parquet", "queue.parquet", "steps.parquet", "samples.parquet", "summary.json")
    seal(out_dir, "simulate", names)  # as a finished `stalesim simulate` leaves it
    return out_dir


def long_busy(engines: int, intervals_per_engine: int) -> pl.DataFrame:
    """A regular long trace: engine u is busy for 0.8 s of every second, from 0.2 u / engines s
    into it, so the last interval ends just before ``intervals_per_engine`` seconds."""
    unit = np.repeat(np.arange(engines), intervals_per_engine)
    start = np.tile(np.arange(intervals_per_engine, dtype=float), engines) + 0.2 * unit / engines
    return pl.DataFrame(
        {
            "pool": ["rollout"] * unit.size,
            "unit": unit,
            "kind": ["decode"] * unit.size,
            "start_s": start,
            "end_s": start + 0.8,
        }
    )


def long_queue(changes: int) -> pl.DataFrame:
    """A saw-tooth queue: 0, 1, ..., 9, 0, 1, ... changing every 0.1 s."""
    index = np.arange(changes)
    return pl.DataFrame({"time_s": index / 10, "groups_waiting": index % 10})


@pytest.fixture
def sim_out(tmp_path: Path) -> Path:
    return write_sim_output(tmp_path / "run")


@pytest.fixture
def long_sim_out(tmp_path: Path) -> Path:
    """About a million busy intervals (64 engines x 15,000 s) and 150,000 queue changes; the
    last queue change is at 15,000 s, so the run spans exactly [0, 15000) s."""
    return write_sim_output(
        tmp_path / "long", busy=long_busy(64, 15_000), queue=long_queue(150_001), engines=64
    )


@pytest.fixture(scope="session")
def real_sim_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``stalesim simulate`` output: the default scenario, 12 learner steps."""
    from click.testing import CliRunner
    from stalesim.cli import main

    out_dir = tmp_path_factory.mktemp("real") / "run"
    args = ["simulate", "--steps", "12", "--seed", "3", "--out", str(out_dir), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out_dir
