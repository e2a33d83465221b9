"""A plan's output folder, in one place: which files it holds and how they are written.

* ``candidates.parquet`` — every candidate, ranked (see ``stalesim plan --help``);
* ``plan.json`` — the recommendation, the frontier, the inputs and the counts;
* ``simulated.parquet`` — the simulations done so far, keyed by candidate id, steps and seed,
  with when each finished: rewritten atomically as each batch of simulations comes back, so a
  plan that was stopped (even by SIGKILL) resumes where it was and never redoes a finished
  simulation (a result is valid for any law and any plan that contains the same candidate, so
  plans sharing a folder share it);
* ``report.html`` — the page (rendered from the two files above).

The ranked table, the summary and the page are one result: they are staged and published
together with a completion marker (:mod:`stalesim.common.output_dir`, kind ``plan``), so a killed
plan leaves the previous plan's result readable as it was (or nothing readable), never a mix.
The whole run holds the folder's lock: a second plan writing to it is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from stalesim.common.config_file import ConfigError
from stalesim.common.files import write_json, write_parquet
from stalesim.common.output_dir import MARKER, output_folder
from stalesim.sim.plan.evaluate import FAILURE, SIM_COLUMNS

CANDIDATES = "candidates.parquet"
SUMMARY = "plan.json"
SIMULATED = "simulated.parquet"
REPORT = "report.html"
#: The files of a finished plan's result (the completion marker lists them).
RESULT_FILES = (CANDIDATES, SUMMARY)
#: When a simulation finished (Unix seconds): tells a resumed result from a redone one.
FINISHED_AT = "simulated_at"

_CACHE_SCHEMA = {
    "candidate_id": pl.String,
    "steps": pl.Int64,
    "seed": pl.Int64,
    **dict.fromkeys(SIM_COLUMNS, pl.Float64),
    FAILURE: pl.String,
    FINISHED_AT: pl.Float64,
}


def check_out_dir(out_dir: Path) -> None:
    """The folder can hold results (it is created when missing)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    if (out_dir / "summary.json").exists() and not (out_dir / SUMMARY).exists():
        # a simulate run's folder: its report.html would be replaced
        raise ConfigError(
            f"--out {out_dir}: holds a `stalesim simulate` run (summary.json); choose another folder"
        )
    kind = _marker_kind(out_dir)
    if kind not in (None, "plan"):
        raise ConfigError(
            f"--out {out_dir}: holds a `stalesim {kind}` output; choose another folder"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot create it ({exc.strerror})") from None


class SimulationStore:
    """Finished simulations of one output folder, for one number of steps and one seed."""

    def __init__(self, out_dir: Path, steps: int, seed: int) -> None:
        self.path = Path(out_dir) / SIMULATED
        self.steps, self.seed = steps, seed
        self._other = pl.DataFrame(schema=_CACHE_SCHEMA)
        self.results: dict[str, dict[str, float | None]] = {}
        if self.path.exists():
            try:
                frame = pl.read_parquet(self.path)
            except (OSError, pl.exceptions.PolarsError) as exc:
                raise ConfigError(
                    f"{self.path}: unreadable ({str(exc).splitlines()[0]}); "
                    "delete it to start the plan afresh"
                ) from None
            if FINISHED_AT not in frame.columns:  # caches written before it was recorded
                frame = frame.with_columns(pl.lit(None, pl.Float64).alias(FINISHED_AT))
            missing = set(_CACHE_SCHEMA) - set(frame.columns)
            if missing:
                raise ConfigError(
                    f"{self.path}: not a stalesim plan cache (no column {sorted(missing)[0]}); "
                    "choose another --out"
                )
            frame = frame.select(list(_CACHE_SCHEMA)).cast(_CACHE_SCHEMA)
            mine = (pl.col("steps") == steps) & (pl.col("seed") == seed)
            self._other = frame.filter(~mine)
            for row in frame.filter(mine).iter_rows(named=True):
                self.results[row["candidate_id"]] = {
                    k: row[k] for k in (*SIM_COLUMNS, FAILURE, FINISHED_AT)
                }
        self.resumed = len(self.results)

    def __contains__(self, candidate_id: str) -> bool:
        return candidate_id in self.results

    def add(self, candidate_id: str, metrics: dict[str, float | None]) -> None:
        self.results[candidate_id] = {**metrics, FINISHED_AT: time.time()}

    def flush(self) -> None:
        rows = [
            {"candidate_id": cid, "steps": self.steps, "seed": self.seed, **metrics}
            for cid, metrics in self.results.items()
        ]
        mine = pl.DataFrame(rows, schema=_CACHE_SCHEMA)
        write_parquet(self.path, pl.concat([self._other, mine]))


def write_results(
    out_dir: Path,
    table: pl.DataFrame,
    summary: dict[str, Any],
    render: Callable[[Path], Any] | None = None,
) -> None:
    """Publish the ranked table, the summary and (``render(folder)`` writes it from those two
    files) the page as one result with a completion marker."""
    with output_folder(out_dir, kind="plan") as stage:
        write_parquet(stage / CANDIDATES, table)
        write_json(stage / SUMMARY, summary)
        if render is not None:
            render(stage)


def _marker_kind(out_dir: Path) -> str | None:
    try:
        marker = json.loads((out_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker.get("kind") if isinstance(marker, dict) else None
