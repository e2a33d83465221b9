"""A finished sweep as tables: ``runs.parquet`` (required) and ``steps.parquet`` (optional),
split into runs at one fixed staleness and runs whose staleness was drawn from a distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from stalesim.common.output_dir import require_complete
from stalesim.common.tables import Column, read_table

#: the columns every fit reads, with what they must hold (the objective columns, which may be
#: empty or infinite for a collapsed run, are read by the fit itself)
RUN_SCHEMA = {
    "run_id": Column("str"),
    "lr": Column("float", above=0.0),
    "staleness": Column("int", min=0),
    "seed": Column("int", min=0),
    "collapsed": Column("bool"),
}
REQUIRED_RUN_COLUMNS = tuple(RUN_SCHEMA)


def read_sweep(runs_dir: str | Path) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """``runs.parquet`` (required) and ``steps.parquet`` (optional) of a sweep directory."""
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        raise ValueError(f"{runs_dir}: no such runs directory")
    if not runs_dir.is_dir():
        raise ValueError(f"{runs_dir}: not a directory (expected a sweep folder with runs.parquet)")
    runs_path = runs_dir / "runs.parquet"
    if not runs_path.exists():
        raise ValueError(f"{runs_dir}: no runs.parquet (run `stalesim validate sweep` first)")
    steps_path = runs_dir / "steps.parquet"
    # A sweep killed while publishing its tables is refused; folders from before completion
    # markers (committed results, hand-made tables) are read as they are.
    require_complete(
        runs_dir,
        "validate sweep",
        ["runs.parquet", *(["steps.parquet"] if steps_path.exists() else [])],
        legacy_ok=True,
    )
    runs = read_table(runs_path, RUN_SCHEMA)
    if runs.height == 0:
        raise ValueError(f"{runs_path}: no runs in it")
    steps = read_table(steps_path, {}) if steps_path.exists() else None
    return runs, steps


def fixed_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Runs at one fixed staleness (all runs when the sweep does not say)."""
    if "staleness_kind" not in runs.columns:
        return runs
    return runs.filter(pl.col("staleness_kind") == "fixed")


def distribution_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """Runs whose staleness was drawn from a distribution."""
    if "staleness_kind" not in runs.columns:
        return runs.clear()
    return runs.filter(pl.col("staleness_kind") == "distribution")


def distribution_groups(runs: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """The distribution runs, one frame per staleness spec, in spec order."""
    dist = distribution_runs(runs)
    if dist.height == 0:
        return {}
    key = "staleness_spec" if "staleness_spec" in dist.columns else "staleness"
    return {
        str(k[0]): frame
        for k, frame in sorted(
            dist.partition_by(key, as_dict=True).items(), key=lambda kv: str(kv[0])
        )
    }


def json_records(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """The rows of ``frame`` as dicts, NaN and inf as ``None`` (JSON has neither)."""
    return [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        for row in frame.to_dicts()
    ]
