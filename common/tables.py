"""One reader for the tables and JSON files a command consumes.

Commands read files other commands (or other programs) wrote; a missing, damaged or
half-written file is the user's input problem. Everything here raises :class:`ValueError` with
one line that names the file, the column and what is wrong (the CLI prints it with exit code 2):

* :func:`read_json_object`: a JSON file whose top level is an object;
* :func:`read_table`: a Parquet file checked against a schema of :class:`Column` s: the columns
  are there, their types are the kind asked for (integers, numbers, strings, booleans), numbers
  are finite and inside their ranges, and nulls appear only where allowed;
* :func:`check_frame`: the same checks on a frame already in memory (a CSV, a log);
* :func:`require_finished`: the folder's completion marker
  (:func:`stalesim.common.output_dir.require_complete`) covers the files about to be read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

Kind = Literal["int", "float", "str", "bool"]


@dataclass(frozen=True)
class Column:
    """What a column must hold: ``kind`` (``int``: integers; ``float``: any numbers, read as
    float64; ``str``; ``bool``), inclusive bounds, and whether nulls are allowed. A
    ``float`` column must be finite (no NaN, no infinity) unless ``finite=False``; ``above``
    is a strict lower bound."""

    kind: Kind = "float"
    min: float | None = None
    #: a strict lower bound (a learning rate, a duration that must pass)
    above: float | None = None
    max: float | None = None
    nullable: bool = False
    finite: bool = True


#: the largest whole number a float64 holds exactly (larger floats are not read as integers)
_WHOLE_FLOAT = 2.0**53
_POLARS = {"int": pl.Int64, "float": pl.Float64, "str": pl.String, "bool": pl.Boolean}


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file whose top level is an object (NaN and infinities are refused: JSON has
    none, and a writer that produced them was broken)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({_first_line(exc)})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"not valid JSON ({name} is not a JSON number)")


def read_table(
    path: str | Path,
    columns: Mapping[str, Column],
    *,
    keep_all: bool = True,
    required: Sequence[str] = (),
) -> pl.DataFrame:
    """A Parquet file holding ``columns`` (checked, and cast to their kind) and ``required``
    (present, any type); with ``keep_all`` the other columns are returned too, otherwise only
    these."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several exception types for a damaged file
        raise ValueError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    wanted = list(dict.fromkeys([*columns, *required]))
    missing = [name for name in wanted if name not in schema]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        frame = pl.read_parquet(path, columns=None if keep_all else wanted)
    except Exception as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    return check_frame(frame, columns, str(path))


def check_frame(frame: pl.DataFrame, columns: Mapping[str, Column], source: str) -> pl.DataFrame:
    """``frame`` with ``columns`` checked and cast to their kinds; ValueError naming
    ``source`` and the column otherwise."""
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}")
    cast = []
    for name, spec in columns.items():
        series = frame[name]
        where = f"{source}: column {name}"
        if not _kind_matches(series.dtype, spec.kind):
            raise ValueError(f"{where} holds {series.dtype}, expected {_describe(spec.kind)}")
        if spec.kind in ("int", "float"):
            values = series.cast(pl.Float64)
            if spec.kind == "int" and series.dtype.is_float():
                # whole numbers stored as floats (a CSV round trip) are integers
                fractional = values.is_not_null() & (
                    values.is_nan()
                    | values.is_infinite()
                    | (values != values.floor())
                    | (values.abs() > _WHOLE_FLOAT)
                )
                if fractional.any():
                    row = int(fractional.arg_true()[0])
                    raise ValueError(
                        f"{where}: {values[row]} at row {row} (must be a whole number)"
                    )
            if spec.kind == "float" and spec.finite:
                bad = values.is_nan() | values.is_infinite()
                if bad.any():
                    row = int(bad.arg_true()[0])
                    raise ValueError(f"{where}: {values[row]} at row {row} (must be finite)")
            for side, bound in ((">=", spec.min), (">", spec.above), ("<=", spec.max)):
                if bound is None:
                    continue
                beyond = {">=": values < bound, ">": values <= bound, "<=": values > bound}[side]
                if beyond.any():
                    row = int(beyond.arg_true()[0])
                    raise ValueError(
                        f"{where}: {values[row]:g} at row {row} (must be {side} {bound:g})"
                    )
        if not spec.nullable and series.null_count():
            row = int(series.is_null().arg_true()[0])
            raise ValueError(f"{where}: empty at row {row}")
        cast.append(pl.col(name).cast(_POLARS[spec.kind]))
    return frame.with_columns(cast)


def records_frame(
    records: Any, columns: Mapping[str, Column], source: str, *, optional: Iterable[str] = ()
) -> pl.DataFrame:
    """JSON records (a list of objects) as a frame checked like :func:`check_frame`, after
    checking each field's own JSON type: a string, a boolean or a list where a number belongs is
    refused (a frame would turn ``true`` into 1.0). Columns named in ``optional`` may be
    absent from every record."""
    if not isinstance(records, list) or not records:
        raise ValueError(f"{source}: expected a non-empty list of objects")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{source}: item {index} is {type(record).__name__}, not an object")
        for name, spec in columns.items():
            value = record.get(name)
            if value is not None and not _json_kind_matches(value, spec.kind):
                raise ValueError(
                    f"{source}: column {name}: {value!r} at row {index} "
                    f"(expected {_describe(spec.kind)})"
                )
    try:
        frame = pl.DataFrame(records, infer_schema_length=None)
    except Exception as exc:  # polars raises several types for fields it cannot combine
        raise ValueError(f"{source}: fields of mixed types ({_first_line(exc)})") from None
    skip = set(optional)
    wanted = {n: c for n, c in columns.items() if n in frame.columns or n not in skip}
    return check_frame(frame, wanted, source)


def _json_kind_matches(value: Any, kind: Kind) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind == "float" or isinstance(value, int) or float(value).is_integer()


def require_finished(
    folder: str | Path, kind: str, files: Iterable[str], *, legacy_ok: bool = False
) -> dict[str, Any] | None:
    """The folder's completion marker, after checking that it covers ``files`` (see
    :func:`stalesim.common.output_dir.require_complete`)."""
    from stalesim.common.output_dir import require_complete

    return require_complete(folder, kind, list(files), legacy_ok=legacy_ok)


def finite_number(value: Any, where: str, *, min: float | None = None) -> float:
    """``value`` as a float if it is a finite number (not a bool, not a string) at least
    ``min``; ValueError naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where}: {value!r} is not finite")
    if min is not None and number < min:
        raise ValueError(f"{where}: {value!r} must be >= {min:g}")
    return number


def _kind_matches(dtype: pl.DataType, kind: Kind) -> bool:
    if dtype == pl.Null:
        return True  # an all-empty column; the null check decides
    if kind == "int":
        return dtype.is_integer() or dtype.is_float()
    if kind == "float":
        return dtype.is_numeric()
    if kind == "str":
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    return dtype == pl.Boolean


def _describe(kind: Kind) -> str:
    return {"int": "integers", "float": "numbers", "str": "strings", "bool": "booleans"}[kind]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
