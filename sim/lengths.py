"""Token-length distributions for prompts and responses, sampled a whole chunk at a time.

A distribution is a quantile function of a standard normal score ``z``; the lengths of one
group share part of that score (a per-prompt difficulty) so that responses to one prompt can be
correlated: ``z = sqrt(rho) * z_prompt + sqrt(1 - rho) * z_sample``.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import polars as pl
from pydantic import Field, model_validator
from scipy.special import ndtr
from stalesim.common.config_file import ConfigError, StrictModel


class Fixed(StrictModel):
    """Every length is ``value``."""

    kind: Literal["fixed"] = "fixed"
    value: int = Field(ge=1, le=10_000_000)

    def quantile(self, z: np.ndarray) -> np.ndarray:
        return np.full(z.shape, float(self.value))

    def upper(self) -> float:
        return float(self.value)


class Uniform(StrictModel):
    """Integer lengths uniform on ``[low, high]``."""

    kind: Literal["uniform"] = "uniform"
    low: int = Field(ge=1, le=10_000_000)
    high: int = Field(ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError(f"high={self.high} is below low={self.low}")
        return self

    def quantile(self, z: np.ndarray) -> np.ndarray:
        u = ndtr(z)
        return np.minimum(np.floor(self.low + u * (self.high - self.low + 1)), self.high)

    def upper(self) -> float:
        return float(self.high)


class LogNormal(StrictModel):
    """Lognormal lengths with arithmetic mean ``mean`` and log-scale spread ``sigma``."""

    kind: Literal["lognormal"] = "lognormal"
    mean: float = Field(ge=1, le=10_000_000)
    sigma: float = Field(ge=0, le=5)

    def quantile(self, z: np.ndarray) -> np.ndarray:
        mu = math.log(self.mean) - 0.5 * self.sigma**2
        return np.exp(mu + self.sigma * z)

    def upper(self) -> float:
        return math.inf


class Empirical(StrictModel):
    """Lengths resampled from a column of a CSV or Parquet file (inverse empirical CDF)."""

    kind: Literal["empirical"] = "empirical"
    path: Path = Field(strict=False)
    column: str

    @cached_property
    def values(self) -> np.ndarray:
        path = Path(self.path)
        try:
            if path.suffix.lower() == ".parquet":
                frame = pl.read_parquet(path, columns=[self.column])
            else:
                frame = pl.read_csv(path, columns=[self.column])
        except (OSError, pl.exceptions.PolarsError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"empirical lengths: cannot read column {self.column!r} of {path}: {first}"
            ) from None
        data = frame.get_column(self.column).drop_nulls().cast(pl.Float64, strict=False)
        data = data.drop_nulls().to_numpy()
        bad = np.flatnonzero(~np.isfinite(data))
        if bad.size:
            raise ConfigError(
                f"empirical lengths: column {self.column!r} of {path} has {bad.size} NaN or "
                f"infinite value(s) (the first at value {bad[0] + 1}); lengths are token counts"
            )
        data = data[data >= 1]
        if data.size == 0:
            raise ConfigError(
                f"empirical lengths: column {self.column!r} of {path} has no value >= 1"
            )
        return np.sort(data)

    def quantile(self, z: np.ndarray) -> np.ndarray:
        values = self.values
        index = np.ceil(ndtr(z) * values.size).astype(np.int64) - 1
        return values[np.clip(index, 0, values.size - 1)]

    def upper(self) -> float:
        return float(self.values[-1])


LengthDistribution = Annotated[Fixed | Uniform | LogNormal | Empirical, Field(discriminator="kind")]


def sample_group_lengths(
    dist: Fixed | Uniform | LogNormal | Empirical,
    rng: np.random.Generator,
    groups: int,
    group_size: int,
    correlation: float,
    max_tokens: int,
) -> np.ndarray:
    """Integer lengths, shape ``[groups, group_size]``, in ``[1, max_tokens]``."""
    z_prompt = rng.standard_normal((groups, 1))
    z_sample = rng.standard_normal((groups, group_size))
    z = math.sqrt(correlation) * z_prompt + math.sqrt(1.0 - correlation) * z_sample
    lengths = np.rint(dist.quantile(z))
    return np.clip(lengths, 1, max_tokens).astype(np.int64)
