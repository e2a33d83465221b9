"""Runs from any trainer, as the tables :func:`stalesim.validate.law.fit.fit_sweep` fits.

Two forms are read:

* **a table** (CSV, or JSON lines) with one row per logged step of each run: the run's name,
  its learning rate, its staleness bound, its seed, the step and the reward at that step;
  optionally the measured lag of that step's batch and the reward of the run's starting policy.
  Column names are configurable (:class:`Columns`);
* **a folder of per-run logs**: one JSONL file (``RUN.jsonl``, one JSON object per logged step)
  or one TensorBoard event folder (``RUN/``) per run, with a small mapping (:class:`LogMapping`)
  naming the reward metric, the step and the lag metric, and giving each run's learning rate,
  staleness bound and seed (by name, or by a pattern over the run names).

Both become the same ``runs`` and ``steps`` tables a sweep folder holds, with the run metrics
(``reward_auc``, ``final_reward``, ``best_smoothed_reward``, ``steps_to_target``) computed from
each reward curve by :func:`stalesim.validate.law.horizon.run_summary`, the function the trainer
itself scores its runs with. So the fit, its failure rule and its seed bootstrap are those of
``stalesim fit`` on a sweep folder; a sweep converted to either form fits to the same law.

The rules that turn logs into run metrics (they are stated in ``stalesim fit --help``):

* every run must log at the same steps; a run whose log stops before the longest run's (or before
  ``horizon``) stopped early, and counts as collapsed at its last logged step, as the trainer
  counts a run it stopped; a non-finite reward ends the run at the step before it;
* steps are counted in logged points: the n-th logged step of a run is step n - 1;
* the reward is smoothed over ``SMOOTHING_WINDOW`` logged points;
* the target reward is ``target_reward`` when given, else the start reward plus
  ``TARGET_FRACTION`` of the gain from it to the best on-policy reward (the best per-learning-rate
  mean final reward of the lowest-staleness runs);
* the start reward is the ``warm_reward`` column when given, else the mean reward at the first
  logged step over all runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError
from stalesim.common.config_file import ConfigError, read_yaml_mapping
from stalesim.common.files import write_json
from stalesim.validate.law.horizon import run_summary

#: Logged points the reward is smoothed over (the trainer's default ``smoothing_window``).
SMOOTHING_WINDOW = 10
#: Without a target reward, the target is this fraction of the way from the start reward to the
#: best on-policy reward.
TARGET_FRACTION = 0.8
#: Suffixes of the table files read as a table.
TABLE_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Columns(_Strict):
    """Which column of a table holds what; ``lag`` and ``warm_reward`` are optional."""

    run: str = "run"
    lr: str = "lr"
    staleness: str = "staleness"
    seed: str = "seed"
    step: str = "step"
    reward: str = "reward"
    #: the measured mean lag (in versions) of each step's batch: the fit's realised lag axis
    lag: str | None = None
    #: the reward of the run's starting policy, for the failure rule's "below the start"
    warm_reward: str | None = None


class RunLabel(_Strict):
    """One run's learning rate, staleness bound and seed."""

    lr: float
    staleness: int
    seed: int


class LogMapping(_Strict):
    """What a folder of per-run logs means."""

    #: the metric that is the reward (a JSONL key, nested keys joined by "/", or a TensorBoard tag)
    reward: str
    #: the JSONL key of the step (TensorBoard event files carry their own step)
    step: str = "step"
    #: the metric holding each step's measured mean lag, if the trainer logs one
    lag: str | None = None
    #: run name (file stem or folder name) -> its lr, staleness and seed
    runs: dict[str, RunLabel] = {}
    #: a run-name pattern with the fields {lr}, {staleness} and {seed}, e.g. "lr{lr}_s{staleness}_seed{seed}"
    pattern: str | None = None


class Mapping(_Strict):
    """The ``--mapping`` YAML file: ``columns`` for a table, ``logs`` for a log folder."""

    columns: Columns = Columns()
    logs: LogMapping | None = None


def read_mapping(path: str | Path | None) -> Mapping:
    """The mapping in ``path`` (the defaults without one); a bad key is a one-line error."""
    if path is None:
        return Mapping()
    data = read_yaml_mapping(path)
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


def is_sweep_folder(path: str | Path) -> bool:
    """Whether ``path`` is a sweep folder (it holds ``runs.parquet``)."""
    return Path(path).is_dir() and (Path(path) / "runs.parquet").exists()


# --- reading -------------------------------------------------------------------------------


def read_table(path: str | Path, columns: Columns | None = None) -> pl.DataFrame:
    """A CSV or JSONL table of logged steps as the long form (see :func:`long_form`)."""
    path = Path(path)
    columns = columns or Columns()
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"{path}: not a table (expected a .csv or .jsonl file, a sweep folder with "
            "runs.parquet, or a folder of per-run logs)"
        )
    try:
        frame = pl.read_csv(path) if kind == "csv" else pl.read_ndjson(path)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as exc:  # polars raises several unrelated types for a bad file
        raise ValueError(
            f"{path}: not a readable {kind.upper()} file ({type(exc).__name__})"
        ) from None
    return long_form(frame, columns, str(path))


def long_form(frame: pl.DataFrame, columns: Columns, origin: str) -> pl.DataFrame:
    """The table's columns renamed to ``run, lr, staleness, seed, step, reward`` (plus ``lag``,
    ``warm_reward`` when mapped) and ``origin`` (where each row came from, for errors)."""
    wanted = {key: name for key, name in columns.model_dump().items() if name is not None}
    missing = [f"{name!r} ({key})" for key, name in wanted.items() if name not in frame.columns]
    if missing:
        raise ValueError(
            f"{origin}: no column {', '.join(missing)} (have: {', '.join(frame.columns)}); "
            "name the columns in --mapping under 'columns:'"
        )
    return frame.select(
        *(pl.col(name).alias(key) for key, name in wanted.items()),
        pl.lit(origin).alias("origin"),
    )


def read_log_folder(folder: str | Path, mapping: LogMapping | None) -> pl.DataFrame:
    """A folder of per-run logs (``RUN.jsonl`` files, ``RUN/`` TensorBoard event folders) as
    the long form (see :func:`long_form`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    jsonl = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".jsonl")
    event_dirs = sorted(
        p for p in folder.iterdir() if p.is_dir() and any(p.glob("events.out.tfevents.*"))
    )
    if not jsonl and not event_dirs:
        raise ValueError(
            f"{folder}: no runs.parquet (a sweep folder) and no per-run logs (RUN.jsonl "
            "files or RUN/ folders with TensorBoard event files)"
        )
    if mapping is None:
        raise ValueError(
            f"{folder}: a folder of per-run logs needs --mapping with a 'logs:' section (the "
            "reward metric and each run's lr, staleness and seed)"
        )
    frames = []
    for path in jsonl:
        frames.append(_labelled(_read_jsonl_run(path, mapping), path.stem, path, mapping))
    for path in event_dirs:
        frames.append(_labelled(_read_tensorboard_run(path, mapping), path.name, path, mapping))
    return pl.concat(frames, how="diagonal_relaxed")


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, name + "/")
        else:
            out[name] = value
    return out


def _find_key(keys: list[str], name: str) -> str | None:
    """``name`` itself, or the one key that ends with ``/name`` (a metric nested under a
    wrapper such as ``{"step": 3, "data": {...}}``)."""
    if name in keys:
        return name
    nested = [k for k in keys if k.endswith("/" + name)]
    return nested[0] if len(nested) == 1 else None


def _read_jsonl_run(path: Path, mapping: LogMapping) -> pl.DataFrame:
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({type(exc).__name__})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        rows.append(_flatten(record))
    keys = sorted({k for row in rows for k in row})
    picked = {"step": mapping.step, "reward": mapping.reward}
    if mapping.lag:
        picked["lag"] = mapping.lag
    found = {}
    for role, name in picked.items():
        key = _find_key(keys, name)
        if key is None:
            raise ValueError(
                f"{path}: no metric {name!r} ({role}) in it (have: {', '.join(keys[:12])}"
                f"{', ...' if len(keys) > 12 else ''})"
            )
        found[role] = key
    # a line without the reward (a trainer logs other metrics at other moments) is not a step
    records = [
        {role: row.get(key) for role, key in found.items()}
        for row in rows
        if row.get(found["reward"]) is not None
    ]
    return pl.DataFrame(
        records,
        schema={"step": pl.Float64, "reward": pl.Float64}
        | ({"lag": pl.Float64} if "lag" in found else {}),
        strict=False,
    )


def _read_tensorboard_run(path: Path, mapping: LogMapping) -> pl.DataFrame:
    try:
        from tbparse import SummaryReader
    except ImportError:
        raise ValueError(
            f"{path}: reading TensorBoard event files needs tbparse: pip install -e '.[logs]'"
        ) from None
    try:
        scalars = SummaryReader(str(path), pivot=False).scalars
    except Exception as exc:  # tensorboard's reader raises several types for a bad file
        raise ValueError(
            f"{path}: unreadable TensorBoard event files ({type(exc).__name__})"
        ) from None
    # built from numpy columns: polars reads pandas frames through pyarrow otherwise
    table = (
        pl.DataFrame(
            {
                "step": scalars["step"].to_numpy(dtype=float),
                "tag": [str(t) for t in scalars["tag"]],
                "value": scalars["value"].to_numpy(dtype=float),
            }
        )
        if len(scalars)
        else None
    )
    tags = sorted(table["tag"].unique().to_list()) if table is not None else []
    roles = {"reward": mapping.reward} | ({"lag": mapping.lag} if mapping.lag else {})
    series = []
    for role, tag in roles.items():
        if tag not in tags:
            raise ValueError(
                f"{path}: no scalar tag {tag!r} ({role}) in it (have: {', '.join(tags[:12]) or 'none'})"
            )
        series.append(
            table.filter(pl.col("tag") == tag).select(
                pl.col("step").cast(pl.Float64), pl.col("value").cast(pl.Float64).alias(role)
            )
        )
    out = series[0]
    for extra in series[1:]:
        out = out.join(extra, on="step", how="left")
    return out


def _labelled(frame: pl.DataFrame, name: str, path: Path, mapping: LogMapping) -> pl.DataFrame:
    label = mapping.runs.get(name) or _from_pattern(name, mapping.pattern)
    if label is None:
        raise ValueError(
            f"{path}: run {name!r} has no lr, staleness and seed: list it under logs.runs "
            "in --mapping, or give logs.pattern (e.g. 'lr{lr}_s{staleness}_seed{seed}')"
        )
    return frame.with_columns(
        pl.lit(name).alias("run"),
        pl.lit(label.lr).alias("lr"),
        pl.lit(label.staleness).alias("staleness"),
        pl.lit(label.seed).alias("seed"),
        pl.lit(str(path)).alias("origin"),
    )


def _from_pattern(name: str, pattern: str | None) -> RunLabel | None:
    if pattern is None:
        return None
    fields = ("lr", "staleness", "seed")
    parts = re.split(r"\{(lr|staleness|seed)\}", pattern)
    regex = "".join(
        f"(?P<{part}>.+?)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    if sorted(parts[1::2]) != sorted(fields):
        raise ConfigError(
            f"logs.pattern {pattern!r}: needs each of {{lr}}, {{staleness}} and {{seed}} once"
        )
    match = re.fullmatch(regex, name)
    if match is None:
        return None
    try:
        return RunLabel(
            lr=float(match["lr"]), staleness=int(match["staleness"]), seed=int(match["seed"])
        )
    except (ValueError, ValidationError):
        raise ValueError(
            f"run {name!r}: pattern {pattern!r} reads lr={match['lr']!r}, "
            f"staleness={match['staleness']!r}, seed={match['seed']!r}: not numbers"
        ) from None


def read_external(path: str | Path, mapping: Mapping | None = None) -> pl.DataFrame:
    """The long form of a table file or a log folder (see the module docstring)."""
    path = Path(path)
    mapping = mapping or Mapping()
    if path.is_dir():
        return read_log_folder(path, mapping.logs)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    return read_table(path, mapping.columns)


# --- checking and converting ---------------------------------------------------------------


@dataclass(frozen=True)
class ExternalRuns:
    """User runs as a sweep: the fit's ``runs`` and ``steps`` tables and the rules applied."""

    runs: pl.DataFrame
    steps: pl.DataFrame
    horizon: int
    target_reward: float
    target_rule: str
    warm_rule: str
    step_grid: list[float]


def _numeric(frame: pl.DataFrame, key: str, columns: Columns) -> pl.DataFrame:
    """``key`` as Float64; a non-number is an error naming the file and column."""
    cast = frame.with_columns(pl.col(key).cast(pl.Float64, strict=False).alias("_cast"))
    bad = cast.filter(pl.col("_cast").is_null() & pl.col(key).is_not_null())
    null = frame.filter(pl.col(key).is_null())
    # a missing reward ends the run there (see to_sweep_tables); a missing lag is filled in
    for rows, what in ((bad, "not a number"), (null, "empty")):
        if rows.height and (what != "empty" or key not in ("reward", "lag")):
            _fail(
                rows, key, columns, f"{what} (value {rows[key][0]!r})" if what != "empty" else what
            )
    return cast.with_columns(pl.col("_cast").alias(key)).drop("_cast")


def _fail(rows: pl.DataFrame, key: str, columns: Columns, what: str) -> None:
    name = getattr(columns, key, None) or key
    run = rows["run"][0] if "run" in rows.columns else None
    where = f", run {run!r}" if run is not None else ""
    raise ValueError(f"{rows['origin'][0]}: column {name!r}{where}: {what}")


def check_long_form(frame: pl.DataFrame, columns: Columns | None = None) -> pl.DataFrame:
    """The long form with numeric columns, or a one-line error naming the file and column for
    missing values, a non-positive or non-finite learning rate, a fractional or negative
    staleness or seed, a run whose lr, staleness or seed changes, a step logged twice, two runs
    at one (lr, staleness, seed), or fewer than 2 staleness values."""
    columns = columns or Columns()
    if frame.height == 0:
        raise ValueError("no logged steps to fit")
    if "origin" not in frame.columns:
        frame = frame.with_columns(pl.lit("the table").alias("origin"))
    frame = frame.with_columns(pl.col("run").cast(pl.String))
    _check(frame, pl.col("run").is_null(), "run", columns, "empty")
    for key in ("lr", "staleness", "seed", "step", "reward", "lag", "warm_reward"):
        if key in frame.columns:
            frame = _numeric(frame, key, columns)
    lr = pl.col("lr")
    _check(
        frame, ~lr.is_finite() | (lr <= 0), "lr", columns, "learning rate must be finite and > 0"
    )
    for key in ("staleness", "seed", "step"):
        col = pl.col(key)
        _check(frame, ~col.is_finite(), key, columns, "must be finite")
        _check(frame, col < 0, key, columns, "must be >= 0")
        hint = (
            " (the staleness bound is an integer number of versions; map a measured mean lag "
            "as columns.lag)"
            if key == "staleness"
            else ""
        )
        _check(frame, col != col.round(0), key, columns, "must be a whole number" + hint)
    if "lag" in frame.columns:
        lag = pl.col("lag")
        _check(
            frame,
            lag.is_not_null() & (~lag.is_finite() | (lag < 0)),
            "lag",
            columns,
            "must be finite and >= 0",
        )
    frame = frame.with_columns(pl.col("staleness", "seed", "step").cast(pl.Int64))
    for key in ("lr", "staleness", "seed") + (
        ("warm_reward",) if "warm_reward" in frame.columns else ()
    ):
        varying = frame.group_by("run").agg(pl.col(key).n_unique().alias("n"), pl.first("origin"))
        varying = varying.filter(pl.col("n") > 1)
        if varying.height:
            what = "changes within the run (one value per run" + (
                ": the run's base learning rate, not a per-step schedule)" if key == "lr" else ")"
            )
            _fail(varying, key, columns, what)
    twice = frame.filter(pl.struct("run", "step").is_duplicated())
    if twice.height:
        _fail(twice, "step", columns, f"step {twice['step'][0]} logged twice")
    labels = frame.group_by("run").agg(pl.first("lr", "staleness", "seed", "origin"))
    clash = labels.filter(pl.struct("lr", "staleness", "seed").is_duplicated()).sort("run")
    if clash.height:
        row = clash.row(0, named=True)
        others = clash.filter(
            (pl.col("lr") == row["lr"])
            & (pl.col("staleness") == row["staleness"])
            & (pl.col("seed") == row["seed"])
        )["run"].to_list()
        raise ValueError(
            f"{row['origin']}: runs {', '.join(map(repr, others))} share lr {row['lr']:g}, "
            f"staleness {row['staleness']} and seed {row['seed']}: keep one, or give each its "
            "own seed"
        )
    values = sorted(frame["staleness"].unique().to_list())
    if len(values) < 2:
        name = columns.staleness
        raise ValueError(
            f"{frame['origin'][0]}: column {name!r} has {len(values)} staleness value "
            f"({values}); the law needs runs at 2 or more (on-policy S=0 and a bound)"
        )
    return frame


def _check(frame: pl.DataFrame, bad: pl.Expr, key: str, columns: Columns, what: str) -> None:
    rows = frame.filter(bad.fill_null(False))
    if rows.height:
        _fail(rows, key, columns, f"{what} (value {rows[key][0]!r})")


def to_sweep_tables(
    frame: pl.DataFrame,
    *,
    columns: Columns | None = None,
    horizon: int | None = None,
    target_reward: float | None = None,
) -> ExternalRuns:
    """Checked long-form steps as the sweep tables the fit reads (see the module docstring)."""
    frame = check_long_form(frame, columns)
    frame = frame.sort("run", "step")
    per_run = {str(k[0]): f for k, f in frame.partition_by("run", as_dict=True).items()}
    grid = max((f["step"].to_list() for f in per_run.values()), key=len)
    for run, f in per_run.items():
        logged = f["step"].to_list()
        if logged != grid[: len(logged)]:
            at = next(i for i, (a, b) in enumerate(zip(logged, grid, strict=False)) if a != b)
            raise ValueError(
                f"{f['origin'][0]}: column {(columns or Columns()).step!r}, run {run!r}: logs "
                f"step {logged[at]} where the longest run logs step {grid[at]}; every run must "
                "log at the same steps"
            )
    length = len(grid)
    if horizon is not None and horizon > length:
        raise ValueError(f"horizon {horizon}: longer than the longest run ({length} logged steps)")
    horizon = horizon or length
    if horizon < SMOOTHING_WINDOW:
        raise ValueError(
            f"the runs log {horizon} steps; the fit needs at least {SMOOTHING_WINDOW} (the "
            "smoothing window)"
        )
    curves, lags, stops = {}, {}, {}
    for run, f in per_run.items():
        reward = f["reward"].cast(pl.Float64).fill_null(np.nan).to_numpy()[:horizon]
        finite = np.isfinite(reward)
        end = len(reward) if finite.all() else int(np.argmin(finite))
        if end == 0:
            raise ValueError(
                f"{f['origin'][0]}: column {(columns or Columns()).reward!r}, run {run!r}: no "
                "finite reward at its first step"
            )
        curves[run] = reward[:end]
        stops[run] = end - 1 if end < horizon else None
        lag = f["lag"].to_numpy()[:end] if "lag" in f.columns else None
        lags[run] = lag
    if "warm_reward" in frame.columns:
        warm_of = {run: float(f["warm_reward"][0]) for run, f in per_run.items()}
        warm_rule = "the warm_reward column"
    else:
        warm = float(np.mean([c[0] for c in curves.values()]))
        warm_of = {run: None for run in per_run}
        warm_rule = "mean reward at the first logged step over all runs"
    labels = {run: f.row(0, named=True) for run, f in per_run.items()}
    provisional = {
        run: run_summary(curves[run], horizon, SMOOTHING_WINDOW, stops[run], math.inf)
        for run in per_run
    }
    if target_reward is None:
        lowest = min(int(labels[r]["staleness"]) for r in per_run)
        finals: dict[float, list[float]] = {}
        for run in per_run:
            if int(labels[run]["staleness"]) == lowest:
                finals.setdefault(float(labels[run]["lr"]), []).append(
                    provisional[run]["final_reward"]
                )
        best = max(float(np.mean(v)) for v in finals.values())
        start = (
            float(np.mean([w for w in warm_of.values() if w is not None]))
            if "warm_reward" in frame.columns
            else warm
        )
        target_reward = start + TARGET_FRACTION * (best - start)
        target_rule = (
            f"start reward {start:.4g} + {TARGET_FRACTION:g} x (best S={lowest} per-lr mean "
            f"final reward {best:.4g} - start)"
        )
    else:
        target_rule = "given (--target-reward)"
    run_rows, step_frames = [], []
    for run in per_run:
        label = labels[run]
        summary = run_summary(curves[run], horizon, SMOOTHING_WINDOW, stops[run], target_reward)
        lag = lags[run]
        # steps without a logged lag take the run's mean logged lag, or the bound if none
        known = lag[np.isfinite(lag)] if lag is not None else np.array([])
        fill = float(np.mean(known)) if known.size else float(label["staleness"])
        lag_curve = (
            np.where(np.isfinite(lag), lag, fill)
            if lag is not None
            else np.full(len(curves[run]), fill)
        )
        run_rows.append(
            {
                "run_id": run,
                "lr": float(label["lr"]),
                "staleness": int(label["staleness"]),
                "staleness_kind": "fixed",
                "staleness_mean": float(np.mean(lag_curve)),
                "seed": int(label["seed"]),
                **summary,
                "target_reward": float(target_reward),
                "collapsed": stops[run] is not None,
                "collapse_step": stops[run],
                "steps": horizon,
                "steps_done": len(curves[run]),
            }
            | ({"warm_reward": warm_of[run]} if "warm_reward" in frame.columns else {})
        )
        step_frames.append(
            pl.DataFrame(
                {
                    "run_id": [run] * len(curves[run]),
                    "step": np.arange(len(curves[run]), dtype=np.int64),
                    "reward_mean": curves[run],
                    "staleness_mean": lag_curve,
                }
            )
        )
    runs = pl.DataFrame(
        run_rows, schema_overrides={"collapse_step": pl.Int64, "steps_to_target": pl.Float64}
    )
    return ExternalRuns(
        runs=runs,
        steps=pl.concat(step_frames),
        horizon=horizon,
        target_reward=float(target_reward),
        target_rule=target_rule,
        warm_rule=warm_rule,
        step_grid=[float(g) for g in grid[:horizon]],
    )


def describe_external(path: Path, ext: ExternalRuns, kind: str) -> dict[str, Any]:
    """What the user's law was measured on, as law.json's ``regime``."""
    runs = ext.runs
    return {
        "steps": ext.horizon,
        "staleness_range": [int(runs["staleness"].min()), int(runs["staleness"].max())],
        "realised_lag_range": [
            float(runs["staleness_mean"].min()),
            float(runs["staleness_mean"].max()),
        ],
        "task": f"user runs ({kind} {path.name})",
    }


def _notes(ext: ExternalRuns) -> list[str]:
    """What the user's law rests on, for law.json's notes."""
    notes = [
        f"user runs: target reward {ext.target_reward:.4g} ({ext.target_rule}); start reward: "
        f"{ext.warm_rule}"
    ]
    spacing = np.unique(np.diff(ext.step_grid)) if len(ext.step_grid) > 1 else np.array([1.0])
    if not np.array_equal(spacing, [1.0]):
        notes.append(
            "steps (steps to target, the horizon, the 10-point smoothing) count logged points; "
            f"the runs logged every {', '.join(f'{g:g}' for g in spacing)} trainer steps"
        )
    stopped = int(ext.runs["collapsed"].sum())
    if stopped:
        notes.append(
            f"{stopped} run(s) stopped before the horizon ({ext.horizon} logged steps) and count "
            "as collapsed at their last step"
        )
    return notes


def fit_external(
    path: str | Path,
    out: str | Path | None = None,
    settings: Any = None,
    *,
    mapping: Mapping | None = None,
    target_reward: float | None = None,
    command: str = "stalesim fit",
    progress: Callable[[int], None] | None = None,
) -> tuple[Any, Path]:
    """Fit the law to a table file or a log folder and write ``law.json`` (default: next to the
    table as ``NAME.law.json``, or inside the log folder)."""
    from stalesim.validate.law.fit import FitSettings, describe_source, fit_sweep

    path = Path(path)
    mapping = mapping or Mapping()
    settings = settings or FitSettings()
    kind = "log folder" if path.is_dir() else "table"
    ext = to_sweep_tables(
        read_external(path, mapping),
        columns=mapping.columns if kind == "table" else None,
        horizon=settings.horizon,
        target_reward=target_reward,
    )
    source = describe_source(path, ext.runs, command) | {
        "format": kind,
        "mapping": mapping.model_dump(mode="json", exclude_none=True),
        "target_reward": ext.target_reward,
        "target_rule": ext.target_rule,
        "start_reward_rule": ext.warm_rule,
        "horizon_logged_steps": ext.horizon,
        "step_grid": {
            "first": ext.step_grid[0],
            "last": ext.step_grid[-1],
            "n": len(ext.step_grid),
        },
    }
    result = fit_sweep(
        ext.runs,
        settings,
        source=source,
        progress=progress,
        steps=ext.steps,
        regime=describe_external(path, ext, kind),
    )
    law = result.law.model_copy(update={"notes": _notes(ext) + list(result.law.notes)})
    result = dataclasses.replace(result, law=law)
    if out is None:
        out = path / "law.json" if path.is_dir() else path.with_suffix(".law.json")
    out = Path(out)
    write_json(out, result.law.to_json_dict())
    return result, out


__all__ = [
    "Columns",
    "ExternalRuns",
    "LogMapping",
    "Mapping",
    "RunLabel",
    "check_long_form",
    "fit_external",
    "is_sweep_folder",
    "read_external",
    "read_log_folder",
    "read_mapping",
    "read_table",
    "to_sweep_tables",
]
