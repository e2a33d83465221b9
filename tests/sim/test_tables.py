"""The one reader of tables and JSON: a damaged file, a wrong type, a NaN or a value out of
range is a ValueError of one line naming the file and the column; a good file reads back
exactly. Generated cases (hypothesis) are derandomised and few, so the file runs in seconds."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stalesim.common.output_dir import MARKER, output_folder, require_complete
from stalesim.common.tables import Column, check_frame, read_json_object, read_table

SETTINGS = settings(
    derandomize=True,
    database=None,
    max_examples=40,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SCHEMA = {
    "step": Column("int", min=0),
    "seconds": Column("float", above=0.0),
    "share": Column("float", min=0.0, max=1.0),
    "name": Column("str"),
}


def _good() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "step": [0, 1, 2],
            "seconds": [0.5, 1.0, 2.0],
            "share": [0.0, 0.5, 1.0],
            "name": list("abc"),
        }
    )


def _refusal(path: Path, schema=SCHEMA) -> str:
    with pytest.raises(ValueError) as caught:
        read_table(path, schema)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


def test_a_good_table_reads_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _good().write_parquet(path)
    assert read_table(path, SCHEMA).equals(_good())


@pytest.mark.parametrize(
    ("column", "value", "expect"),
    [
        ("seconds", float("nan"), "column seconds: nan at row 1 (must be finite)"),
        ("seconds", float("inf"), "column seconds: inf at row 1 (must be finite)"),
        ("seconds", 0.0, "column seconds: 0 at row 1 (must be > 0)"),
        ("share", 1.5, "column share: 1.5 at row 1 (must be <= 1)"),
        ("step", -3, "column step: -3 at row 1 (must be >= 0)"),
        ("step", 1.5, "column step: 1.5 at row 1 (must be a whole number)"),
        ("name", None, "column name: empty at row 1"),
        ("seconds", "x", "column seconds holds String, expected numbers"),
    ],
)
def test_a_bad_value_is_named_by_file_column_and_row(
    tmp_path: Path, column: str, value, expect: str
) -> None:
    frame = _good()
    values = frame[column].to_list()
    values[1] = value
    frame = frame.with_columns(pl.Series(column, values, strict=False))
    path = tmp_path / "t.parquet"
    frame.write_parquet(path)
    assert _refusal(path) == f"{path}: {expect}"


def test_damaged_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    _good().write_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "not a readable Parquet file" in _refusal(path)
    path.write_bytes(os.urandom(1000))
    assert "not a readable Parquet file" in _refusal(path)
    _good().drop("share").write_parquet(path)
    assert _refusal(path) == f"{path}: missing column(s) share"
    assert "no such file" in _refusal(tmp_path / "absent.parquet")


@SETTINGS
@given(
    data=st.binary(min_size=0, max_size=400),
    cut=st.integers(min_value=0, max_value=10_000),
)
def test_any_bytes_or_any_truncation_is_one_line(tmp_path: Path, data: bytes, cut: int) -> None:
    path = tmp_path / "t.parquet"
    _good().write_parquet(path)
    whole = path.read_bytes()
    for content in (data, whole[: cut % len(whole)]):
        path.write_bytes(content)
        _refusal(path)
        json_path = tmp_path / "t.json"
        json_path.write_bytes(content)
        with pytest.raises(ValueError) as caught:
            read_json_object(json_path)
        assert "\n" not in str(caught.value) and str(json_path) in str(caught.value)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@SETTINGS
@given(
    seconds=st.lists(
        st.one_of(finite, st.just(math.nan), st.just(math.inf), st.just(-math.inf)),
        min_size=1,
        max_size=8,
    )
)
def test_a_float_column_is_accepted_exactly_when_finite_and_in_range(seconds: list[float]) -> None:
    frame = pl.DataFrame({"seconds": seconds}, schema={"seconds": pl.Float64})
    schema = {"seconds": Column("float", above=0.0)}
    ok = all(math.isfinite(v) and v > 0 for v in seconds)
    if ok:
        assert check_frame(frame, schema, "f")["seconds"].to_list() == seconds
    else:
        with pytest.raises(ValueError, match=r"^f: column seconds: "):
            check_frame(frame, schema, "f")


@SETTINGS
@given(
    value=st.one_of(
        st.integers(min_value=-(2**40), max_value=2**40),
        st.floats(width=64),
    )
)
def test_an_int_column_takes_whole_non_negative_numbers_only(value) -> None:
    frame = pl.DataFrame({"staleness": [value]})
    schema = {"staleness": Column("int", min=0)}
    ok = math.isfinite(value) and value == math.floor(value) and 0 <= value <= 2**53
    if ok:
        assert check_frame(frame, schema, "f")["staleness"].to_list() == [int(value)]
    else:
        with pytest.raises(ValueError, match=r"^f: column staleness: "):
            check_frame(frame, schema, "f")


@pytest.mark.parametrize(
    "text",
    ['{"a": NaN}', '{"a": Infinity}', "[1, 2]", '"x"', "", "{", "\xff\xfe", "[" * 100_000],
)
def test_json_that_is_not_an_object_of_finite_values_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError) as caught:
        read_json_object(path)
    assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)


def test_json_reads_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    payload = {"a": 1, "b": [0.5, None], "c": {"d": "e"}}
    path.write_text(json.dumps(payload))
    assert read_json_object(path) == payload


MALFORMED_MARKERS = [
    [],
    {"kind": 3, "files": {}},
    {"kind": "simulate"},
    {"kind": "simulate", "files": ["a.json"]},
    {"kind": "simulate", "files": {"a.json": "deadbeef"}},
    {"kind": "simulate", "files": {"a.json": {"bytes": "2", "sha256": "x"}}},
]


@pytest.mark.parametrize("marker", MALFORMED_MARKERS, ids=range(len(MALFORMED_MARKERS)))
def test_a_malformed_marker_is_one_line_naming_it(tmp_path: Path, marker) -> None:
    with output_folder(tmp_path / "out", kind="simulate") as stage:
        (stage / "a.json").write_text("{}")
    require_complete(tmp_path / "out", "simulate", ["a.json"])
    (tmp_path / "out" / MARKER).write_text(json.dumps(marker))
    with pytest.raises(ValueError) as caught:
        require_complete(tmp_path / "out", "simulate", ["a.json"])
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "out" / MARKER)) and "damaged" in message
    # a later run publishes over the damaged marker
    with output_folder(tmp_path / "out", kind="simulate") as stage:
        (stage / "a.json").write_text("{}")
    require_complete(tmp_path / "out", "simulate", ["a.json"])
