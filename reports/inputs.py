"""Reading result files as data, with one-line errors that name the file.

Pages are rendered from files other commands wrote; a missing or damaged file is the user's
input problem, so every failure here is a ValueError whose message names the path and says what
is wrong (the CLI prints it as one line with exit code 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from stalesim.common.tables import read_json_object, read_table

__all__ = ["read_csv_table", "read_json_object", "read_parquet_columns", "read_parquet_table"]


def read_parquet_columns(path: Path, columns: Sequence[str]) -> pl.DataFrame:
    """The named columns of a Parquet file (other columns are ignored, so writers may add some)."""
    return read_parquet_table(path, required=columns, keep_all=False)


def read_parquet_table(
    path: Path, required: Sequence[str], *, keep_all: bool = True
) -> pl.DataFrame:
    """A Parquet file that must hold the ``required`` columns; with ``keep_all`` every column
    is returned, otherwise just the required ones (:func:`stalesim.common.tables.read_table`)."""
    return read_table(path, {}, keep_all=keep_all, required=required)


def read_csv_table(path: Path, types: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """A CSV file that must hold the columns of ``types``, read with those types (so an
    all-empty numeric column stays numeric); other columns are kept with inferred types."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    header = _csv(path, n_rows=0, infer_schema=False).columns
    missing = [name for name in types if name not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    return _csv(path, schema_overrides=dict(types), infer_schema_length=None)


def _csv(path: Path, **options: Any) -> pl.DataFrame:
    try:
        return pl.read_csv(path, **options)
    except Exception as exc:  # polars raises several exception types for a damaged file
        raise ValueError(f"{path}: not a readable CSV file ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
