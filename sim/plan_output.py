"""A plan's output folder, in one place: which files it holds and how they are written.

* ``candidates.parquet`` — every candidate, ranked (see ``stalesim plan --help``);
* ``plan.json`` — the recommendation, the frontier, the inputs and the counts;
* ``simulated.parquet`` — the simulations done so far, keyed by candidate id, steps and seed:
  rewritten after every round, so a plan that was stopped resumes where it was (a result is
  valid for any law and any plan that contains the same candidate);
* ``report.html`` — the page (written by the command, from the two files above).

Every file is written atomically (:mod:`stalesim.sim.files`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from stalesim.sim.config_file import ConfigError
from stalesim.sim.files import write_json, write_parquet
from stalesim.sim.plan_evaluate import FAILURE, SIM_COLUMNS

CANDIDATES = "candidates.parquet"
SUMMARY = "plan.json"
SIMULATED = "simulated.parquet"
REPORT = "report.html"

_CACHE_SCHEMA = {
    "candidate_id": pl.String,
    "steps": pl.Int64,
    "seed": pl.Int64,
    **dict.fromkeys(SIM_COLUMNS, pl.Float64),
    FAILURE: pl.String,
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
                self.results[row["candidate_id"]] = {k: row[k] for k in (*SIM_COLUMNS, FAILURE)}
        self.resumed = len(self.results)

    def __contains__(self, candidate_id: str) -> bool:
        return candidate_id in self.results

    def add(self, candidate_id: str, metrics: dict[str, float | None]) -> None:
        self.results[candidate_id] = metrics

    def flush(self) -> None:
        rows = [
            {"candidate_id": cid, "steps": self.steps, "seed": self.seed, **metrics}
            for cid, metrics in self.results.items()
        ]
        mine = pl.DataFrame(rows, schema=_CACHE_SCHEMA)
        write_parquet(self.path, pl.concat([self._other, mine]))


def write_results(out_dir: Path, table: pl.DataFrame, summary: dict[str, Any]) -> None:
    """The ranked table and the summary; the summary last, so a reader that finds it finds a
    table of the same run."""
    write_parquet(Path(out_dir) / CANDIDATES, table)
    write_json(Path(out_dir) / SUMMARY, summary)
