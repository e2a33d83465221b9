"""Fit the simulator's time-model coefficients to measured timings.

Reads the timing tables of the shared interface (written by ``stalesim validate pipeline``, or
by a user from an inference engine's and a trainer's logs):

* ``decode_timings.parquet``: one row per decode iteration, ``engine``, ``live_seqs``,
  ``context_tokens``, ``seconds``; fitted by non-negative least squares to
  ``seconds = a_s + beta_s_per_token * context_tokens + gamma_s_per_seq * live_seqs``;
* ``prefill_timings.parquet`` (optional): ``engine``, ``tokens``, ``seconds``; the prefill cost
  per token is the ratio of the sums, so that the total prefill time is preserved;
* ``learner_timings.parquet`` (optional): one row per learner phase of an optimizer step,
  ``phase`` (``train`` | ``forward`` | ``overhead``), ``tokens``, ``gpus``, ``seconds``; the
  per-GPU rates are GPU-seconds per token (``seconds * gpus / tokens``), fitted through the
  origin, and ``step_overhead_s`` is the mean ``overhead`` time per optimizer step.

Each fit reports R² and the relative RMS error (RMS residual over mean measured seconds) of the
rows it was fitted to. The result is a scenario fragment, ``cluster.decode_coefficients`` and
``cluster.learner_coefficients`` (field names of the shared interface).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from scipy.optimize import nnls
from stalesim.common import tables
from stalesim.common.config_file import ConfigError
from stalesim.common.tables import Column

DECODE_COLUMNS = {
    "engine": pl.Int64,
    "live_seqs": pl.Int64,
    "context_tokens": pl.Int64,
    "seconds": pl.Float64,
}
PREFILL_COLUMNS = {"engine": pl.Int64, "tokens": pl.Int64, "seconds": pl.Float64}
LEARNER_COLUMNS = {"phase": pl.Utf8, "tokens": pl.Int64, "gpus": pl.Int64, "seconds": pl.Float64}
LEARNER_PHASES = ("train", "forward", "overhead")
TABLES = {
    "decode_timings.parquet": DECODE_COLUMNS,
    "prefill_timings.parquet": PREFILL_COLUMNS,
    "learner_timings.parquet": LEARNER_COLUMNS,
}


@dataclass(frozen=True)
class FitQuality:
    """How well a fitted linear model reproduces the rows it was fitted to."""

    rows: int
    r2: float
    relative_rms: float

    def as_dict(self) -> dict[str, float | int]:
        return {"rows": self.rows, "r2": self.r2, "relative_rms": self.relative_rms}


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficients and their fit errors; ``None`` where a table was absent."""

    decode: dict[str, float] | None
    decode_quality: FitQuality | None
    prefill_quality: FitQuality | None
    learner: dict[str, float] | None
    learner_quality: dict[str, FitQuality]
    decode_cv: float | None = None
    learner_cv: float | None = None

    def fragment(self) -> dict[str, Any]:
        """The scenario fragment: ``{"cluster": {"decode_coefficients": ..., ...}}``, with the
        measured dispersions (``decode_iteration_cv``, ``learner_step_cv``) where known."""
        cluster: dict[str, Any] = {}
        if self.decode is not None:
            cluster["decode_coefficients"] = dict(self.decode)
        if self.learner is not None:
            cluster["learner_coefficients"] = dict(self.learner)
        if self.decode_cv is not None:
            cluster["decode_iteration_cv"] = self.decode_cv
        if self.learner_cv is not None:
            cluster["learner_step_cv"] = self.learner_cv
        return {"cluster": cluster}

    def fit_report(self) -> dict[str, Any]:
        return {
            "decode": self.decode_quality.as_dict() if self.decode_quality else None,
            "prefill": self.prefill_quality.as_dict() if self.prefill_quality else None,
            "learner": {k: v.as_dict() for k, v in self.learner_quality.items()},
        }


def _quality(measured: np.ndarray, predicted: np.ndarray) -> FitQuality:
    residual = measured - predicted
    total = float(np.sum((measured - measured.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual**2)) / total if total > 0 else float("nan")
    mean = float(measured.mean())
    rms = float(np.sqrt(np.mean(residual**2)))
    return FitQuality(
        rows=int(measured.size), r2=r2, relative_rms=rms / mean if mean > 0 else float("nan")
    )


def read_table(path: Path, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """A timing table with its columns cast to the interface's types (rows with an empty
    field dropped); one-line errors naming the file and column for a damaged file, a column
    of the wrong type, and a negative, NaN or infinite value."""
    kinds = {pl.Int64: "int", pl.Float64: "float", pl.Utf8: "str"}
    schema = {
        name: Column(kinds[dtype], min=None if dtype == pl.Utf8 else 0.0, nullable=True)
        for name, dtype in columns.items()
    }
    try:
        frame = tables.read_table(path, schema, keep_all=False)
    except ValueError as exc:
        raise ConfigError(f"{exc}; a timing table has {', '.join(columns)}") from None
    return frame.drop_nulls()


def fit_decode(frame: pl.DataFrame) -> tuple[dict[str, float], FitQuality]:
    """Non-negative least squares of ``seconds`` on ``[1, context_tokens, live_seqs]``."""
    if frame.height < 3:
        raise ConfigError(
            f"decode timings: {frame.height} rows; need at least 3 to fit a, beta, gamma"
        )
    y = frame["seconds"].to_numpy()
    design = np.column_stack(
        [
            np.ones(frame.height),
            frame["context_tokens"].to_numpy().astype(np.float64),
            frame["live_seqs"].to_numpy().astype(np.float64),
        ]
    )
    # Columns scaled to unit norm so that NNLS's tolerance does not favour the large ones.
    scale = np.linalg.norm(design, axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(design / scale, y)
    coef = coef / scale
    coefficients = {
        "a_s": float(coef[0]),
        "beta_s_per_token": float(coef[1]),
        "gamma_s_per_seq": float(coef[2]),
    }
    return coefficients, _quality(y, design @ coef)


def dispersion(measured: np.ndarray, predicted: np.ndarray) -> float | None:
    """Coefficient of variation of ``measured / predicted``: the rows' scatter around the
    fitted model, as a multiplicative noise of mean 1. Estimated robustly (1.4826 times the
    median absolute deviation over the median, the standard deviation for normal scatter) so
    that warm-up steps and other outliers, which are not run-long noise, do not set it;
    capped at the scenario's limit of 4; None with fewer than 2 usable rows."""
    keep = predicted > 0
    if int(keep.sum()) < 2:
        return None
    ratio = measured[keep] / predicted[keep]
    median = float(np.median(ratio))
    if median <= 0:
        return None
    mad = float(np.median(np.abs(ratio - median)))
    return round(min(1.4826 * mad / median, 4.0), 6)


def decode_dispersion(frame: pl.DataFrame, coefficients: dict[str, float]) -> float | None:
    """The decode iterations' CV around the fitted linear model."""
    predicted = (
        coefficients["a_s"]
        + coefficients["beta_s_per_token"] * frame["context_tokens"].to_numpy()
        + coefficients["gamma_s_per_seq"] * frame["live_seqs"].to_numpy()
    )
    return dispersion(frame["seconds"].to_numpy(), predicted)


def learner_dispersion(frame: pl.DataFrame, coefficients: dict[str, float]) -> float | None:
    """The training passes' CV around the fitted per-GPU rate."""
    rows = frame.filter(pl.col("phase") == "train")
    predicted = (
        coefficients["train_gpu_s_per_token"]
        * rows["tokens"].to_numpy().astype(np.float64)
        / rows["gpus"].to_numpy().astype(np.float64)
    )
    return dispersion(rows["seconds"].to_numpy(), predicted)


def fit_per_token(tokens: np.ndarray, seconds: np.ndarray) -> tuple[float, FitQuality]:
    """Seconds per token through the origin, as the ratio of sums (total time preserved)."""
    rate = float(seconds.sum() / tokens.sum()) if tokens.sum() > 0 else 0.0
    return rate, _quality(seconds, rate * tokens)


def fit_learner(frame: pl.DataFrame) -> tuple[dict[str, float], dict[str, FitQuality]]:
    """Per-GPU learner coefficients (shared interface 1) from per-phase rows."""
    unknown = sorted(set(frame["phase"].unique().to_list()) - set(LEARNER_PHASES))
    if unknown:
        raise ConfigError(
            f"learner timings: phase={unknown[0]!r} is not one of {', '.join(LEARNER_PHASES)}"
        )
    if (frame["gpus"] < 1).any():
        raise ConfigError("learner timings: gpus must be >= 1")
    out: dict[str, float] = {}
    quality: dict[str, FitQuality] = {}
    for phase, key in (("train", "train_gpu_s_per_token"), ("forward", "forward_gpu_s_per_token")):
        rows = frame.filter(pl.col("phase") == phase)
        if rows.is_empty():
            out[key] = 0.0
            continue
        gpus = rows["gpus"].to_numpy().astype(np.float64)
        tokens = rows["tokens"].to_numpy().astype(np.float64)
        seconds = rows["seconds"].to_numpy()
        # Fit GPU-seconds per token: seconds = x * tokens / gpus.
        rate, q = fit_per_token(tokens / gpus, seconds)
        out[key] = rate
        quality[phase] = q
    if "train" not in quality:
        raise ConfigError("learner timings: no 'train' rows; cannot fit train_gpu_s_per_token")
    overhead = frame.filter(pl.col("phase") == "overhead")["seconds"].to_numpy()
    out["step_overhead_s"] = float(overhead.mean()) if overhead.size else 0.0
    if overhead.size:
        quality["overhead"] = _quality(overhead, np.full(overhead.size, overhead.mean()))
    return out, quality


def calibrate(timings_dir: str | Path) -> Calibration:
    """Fit every table found in ``timings_dir`` (at least the decode table)."""
    root = Path(timings_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory of timing tables")
    decode_path = root / "decode_timings.parquet"
    if not decode_path.exists():
        raise ConfigError(f"{root}: no decode_timings.parquet (the one table calibrate needs)")
    decode_table = read_table(decode_path, DECODE_COLUMNS)
    prefill_path = root / "prefill_timings.parquet"
    prefill = read_table(prefill_path, PREFILL_COLUMNS) if prefill_path.exists() else None
    learner_path = root / "learner_timings.parquet"
    learner = read_table(learner_path, LEARNER_COLUMNS) if learner_path.exists() else None
    return calibrate_tables(decode_table, prefill, learner, source=decode_path)


def calibrate_tables(
    decode_table: pl.DataFrame,
    prefill: pl.DataFrame | None,
    learner_table: pl.DataFrame | None,
    *,
    source: str | Path = "decode timings",
) -> Calibration:
    """Fit tables already read (and checked) by :func:`read_table`; ``source`` names the
    decode table in errors."""
    try:
        decode, decode_q = fit_decode(decode_table)
    except (np.linalg.LinAlgError, RuntimeError) as exc:
        # the data passed the reader's checks; what remains is a design the solver cannot use
        raise ConfigError(
            f"{source}: the least-squares fit of seconds on context_tokens and live_seqs "
            f"failed ({exc}); check the table's values"
        ) from None
    decode_cv = decode_dispersion(decode_table, decode)
    prefill_q = None
    decode["prefill_s_per_token"] = 0.0
    if prefill is not None and prefill.height:
        rate, prefill_q = fit_per_token(
            prefill["tokens"].to_numpy().astype(np.float64), prefill["seconds"].to_numpy()
        )
        decode["prefill_s_per_token"] = rate
    learner, learner_q, learner_cv = None, {}, None
    if learner_table is not None:
        learner, learner_q = fit_learner(learner_table)
        learner_cv = learner_dispersion(learner_table, learner)
    return Calibration(decode, decode_q, prefill_q, learner, learner_q, decode_cv, learner_cv)


def fragment_yaml(calibration: Calibration) -> str:
    """The scenario fragment as YAML, ready to paste into (or merge with) a scenario file."""
    return yaml.safe_dump(calibration.fragment(), sort_keys=False)
