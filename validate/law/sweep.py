"""A resumable, parallel sweep of training runs over learning rate x staleness x seed.

Layout of a runs directory::

    config.json                  the preset, its train config, and every grid run into the folder
    shards/<run_id>.steps.parquet  one row per step of a finished run
    shards/<run_id>.run.json       the run's summary row, written last: it marks the run done
    runs.parquet, steps.parquet  the merged tables of every finished run in the folder
    stalesim-complete.json       written last by each merge: the tables above belong together

A run whose ``.run.json`` exists is never redone, so a sweep that is stopped and started again
picks up where it left off. Several grids (say, fixed staleness over a wide LR range, then
staleness distributions over a narrower one) may share a folder as long as they share the train
config; the tables then hold the union of their runs. Runs execute in separate processes (one torch thread each); the
merged tables are republished together after every finished run
(:func:`stalesim.common.output_dir.output_folder`), so a reader never pairs a ``runs.parquet`` with
the ``steps.parquet`` of another merge. One sweep at a time may write a folder; a sweep that
was killed leaves temporary files that the next one removes, and its unfinished runs are the
only work redone.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import polars as pl
from stalesim.common.config_file import ConfigError
from stalesim.common.files import pid_alive, write_json, write_parquet
from stalesim.common.output_dir import locked, output_folder, remove_stale_temporaries
from stalesim.common.tables import read_json_object
from stalesim.validate.train.presets import RunConfig, SweepConfig, TrainConfig
from stalesim.validate.train.trainer import run_id

RUN_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String,
    "preset": pl.String,
    "lr": pl.Float64,
    "staleness": pl.Int64,
    "staleness_kind": pl.String,
    "staleness_spec": pl.String,
    "staleness_mean": pl.Float64,
    "staleness_max": pl.Int64,
    "staleness_token_mean": pl.Float64,
    "staleness_mean_filled": pl.Float64,
    "seed": pl.Int64,
    "final_reward": pl.Float64,
    "reward_auc": pl.Float64,
    "steps_to_target": pl.Float64,
    "best_smoothed_reward": pl.Float64,
    "warm_reward": pl.Float64,
    "drift_kl_max": pl.Float64,
    "optimizer": pl.String,
    "objective": pl.String,
    "lr_rule": pl.String,
    "prompts_per_step": pl.Int64,
    "target_reward": pl.Float64,
    "collapsed": pl.Boolean,
    "collapse_step": pl.Int64,
    "collapse_reason": pl.String,
    "steps": pl.Int64,
    "steps_done": pl.Int64,
    "minibatches_per_step": pl.Int64,
    "wall_s": pl.Float64,
}


def _shard_paths(out: Path, rid: str) -> tuple[Path, Path]:
    return out / "shards" / f"{rid}.steps.parquet", out / "shards" / f"{rid}.run.json"


def _tabled_run_ids(out: Path) -> set[str]:
    """Runs already in ``runs.parquet`` (a committed folder may hold the tables, no shards), by
    run id and by grid point (see :func:`is_done`)."""
    path = out / "runs.parquet"
    if not path.exists():
        return set()
    table = pl.read_parquet(path, columns=["run_id", "lr", "staleness_spec", "seed"])
    points = {_grid_point(*row) for row in table.select("lr", "staleness_spec", "seed").rows()}
    return set(table["run_id"]) | points


def _grid_point(lr: float, staleness_spec: str, seed: int) -> str:
    return f"lr={lr!r} staleness={staleness_spec} seed={seed}"


def is_done(out: Path, run: RunConfig, tabled: set[str] | None = None) -> bool:
    """Whether ``run`` is finished in ``out``: by its id, or, in the tables, by its grid point.
    A folder holds one train config (``record_grid`` refuses another), so (lr, staleness,
    seed) names a run there even when a field added since, at a default that keeps the old
    behaviour, has changed the run ids."""
    from stalesim.validate.train.staleness import parse_staleness

    rid = run_id(run)
    tabled = _tabled_run_ids(out) if tabled is None else tabled
    point = _grid_point(run.lr, parse_staleness(run.staleness).text, run.seed)
    return rid in tabled or point in tabled or _shard_paths(out, rid)[1].exists()


SWEEP_KIND = "validate sweep"


def die_with_sweep(sweep_pid: int) -> None:
    """In a worker: kill this process as soon as the sweep's main process is gone.

    Workers are forked by a fork server, not by the sweep, and nothing else tells them that a
    killed sweep is gone: they would train on and write shards into a folder that a restarted
    sweep now owns (and keep the fork server, and any pipe they hold, alive).
    """

    def watch() -> None:
        while pid_alive(sweep_pid):
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-sweep", daemon=True).start()


def execute_run(run_json: str, out: str) -> str:
    """Train one run (in a worker process) and write its shards; returns the run id."""
    import torch

    torch.set_num_threads(1)
    from stalesim.validate.train.trainer import train_run

    run = RunConfig.model_validate_json(run_json)
    result = train_run(run)
    steps_path, run_path = _shard_paths(Path(out), result.run["run_id"])
    write_parquet(steps_path, pl.DataFrame(result.steps))
    write_json(run_path, result.run)
    return result.run["run_id"]


def merge(out: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Build ``runs.parquet`` and ``steps.parquet`` from every finished shard in ``out``, keeping
    the rows of runs that are already in the tables but have no shard."""
    rows, step_tables = [], []
    for run_path in sorted((out / "shards").glob("*.run.json")):
        row = json.loads(run_path.read_text())
        rows.append(row)
        step_tables.append(pl.read_parquet(_shard_paths(out, row["run_id"])[0]))
    sharded = [row["run_id"] for row in rows]
    runs_table = pl.DataFrame(
        [{k: row.get(k) for k in RUN_SCHEMA} for row in rows], schema=RUN_SCHEMA, orient="row"
    )
    if (out / "runs.parquet").exists():
        old_runs = pl.read_parquet(out / "runs.parquet").filter(~pl.col("run_id").is_in(sharded))
        runs_table = pl.concat(
            [runs_table, old_runs.select(list(RUN_SCHEMA))], how="vertical_relaxed"
        )
        if (out / "steps.parquet").exists() and old_runs.height:
            old_steps = pl.read_parquet(out / "steps.parquet")
            step_tables.append(
                old_steps.filter(pl.col("run_id").is_in(old_runs["run_id"].to_list()))
            )
    runs_table = runs_table.sort(
        "staleness_kind",
        "staleness",
        "staleness_spec",
        "lr",
        "seed",
        descending=[True, False, False, False, False],
    )
    steps_table = (
        pl.concat(step_tables, how="diagonal_relaxed").sort("run_id", "step")
        if step_tables
        else pl.DataFrame()
    )
    with output_folder(out, kind=SWEEP_KIND) as stage:
        write_parquet(stage / "runs.parquet", runs_table)
        write_parquet(stage / "steps.parquet", steps_table)
    return runs_table, steps_table


def record_grid(out: Path, config: SweepConfig) -> None:
    """Add these grids to ``config.json``; refuse a folder made with another train config."""
    path = out / "config.json"
    grids: list[dict] = []
    if path.exists():
        previous = read_json_object(path)
        if _as_current(previous.get("train")) != config.train.model_dump(mode="json"):
            raise ConfigError(
                f"--out {out}: holds runs of another train config (preset "
                f"{previous.get('preset')!r}); use a new --out folder"
            )
        grids = previous.get("grids", [])
    for grid in config.model_dump(mode="json")["grids"]:
        if grid not in grids:
            grids.append(grid)
    write_json(
        path,
        {"preset": config.preset, "train": config.train.model_dump(mode="json"), "grids": grids},
    )


def _as_current(train: Any) -> Any:
    """A recorded train config read through today's model: a field added since, with a default
    that keeps the old behaviour, does not make the folder's runs 'another config'."""
    try:
        return TrainConfig.model_validate(train).model_dump(mode="json")
    except (ValueError, TypeError):
        return train


def prepare_warm_start(config: SweepConfig) -> None:
    """Train (or find cached) the warm start of every seed once, before workers need them."""
    from stalesim.validate.train.trainer import resolve_device
    from stalesim.validate.train.warm_start import warm_start_state

    train = config.train
    device = resolve_device(train.device)
    for seed in sorted({run.seed for run in config.runs()}):
        warm_start_state(train.policy, train.task, train.warm_start.for_run(seed), device)


def run_sweep(
    config: SweepConfig,
    out: str | Path,
    *,
    workers: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Run every unfinished run of the grid; return the merged run and step tables.

    ``on_progress(done, total)`` is called at the start and after each finished run.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with locked(out, wait=False, what=" (another sweep?)"):
        for folder in (out, out / "shards"):
            remove_stale_temporaries(folder)
        return _run_sweep(config, out, workers, on_progress)


def _run_sweep(
    config: SweepConfig,
    out: Path,
    workers: int,
    on_progress: Callable[[int, int], None] | None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    record_grid(out, config)
    runs = config.runs()
    tabled = _tabled_run_ids(out)
    todo = [run for run in runs if not is_done(out, run, tabled)]
    done = len(runs) - len(todo)
    report = on_progress or (lambda done, total: None)
    report(done, len(runs))
    if todo:
        prepare_warm_start(config)
    if workers <= 1:
        for run in todo:
            execute_run(run.model_dump_json(), str(out))
            done += 1
            merge(out)
            report(done, len(runs))
    elif todo:
        # Workers fork from a fresh server process that has imported torch but never run a
        # parallel region: starting one is cheap, and no OpenMP state crosses a fork.
        context = get_context("forkserver")
        context.set_forkserver_preload(["torch", "stalesim.validate.train.trainer"])
        # execute_run sets one torch thread in each worker before it trains.
        with ProcessPoolExecutor(
            max_workers=min(workers, len(todo)),
            mp_context=context,
            initializer=die_with_sweep,
            initargs=(os.getpid(),),
        ) as pool:
            pending = {pool.submit(execute_run, run.model_dump_json(), str(out)) for run in todo}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    done += 1
                merge(out)
                report(done, len(runs))
    return merge(out)


def describe(config: SweepConfig) -> dict[str, Any]:
    """The sweep's size, for messages."""
    runs = config.runs()
    return {
        "runs": len(runs),
        "lrs": len({r.lr for r in runs}),
        "staleness": len({r.staleness for r in runs}),
        "seeds": len({r.seed for r in runs}),
    }
