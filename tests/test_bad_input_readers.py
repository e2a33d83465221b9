"""The commands that read other commands' files, given damaged ones: `fit` on a damaged sweep
table, the old `calibrate TIMINGS_DIR` on NaN timings, `report published` on NaN, infinite and
string fields, `report plan` / `report simulate` on a malformed completion marker, and `check
published` into an earlier folder. Each is one line naming the file (and the column), exit 2."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stalesim.cli import main
from stalesim.common.output_dir import MARKER, output_folder

from tests.evidence import RESULTS

ROOT = Path(__file__).resolve().parents[1]
SWEEP = RESULTS / "law-horizon" / "non-saturating"
PIPELINE_RUN = RESULTS / "pipeline-cpu" / "lower-load" / "async"
PUBLISHED = RESULTS / "published-check"


def _one_line(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _sweep(tmp_path: Path) -> Path:
    folder = tmp_path / "sweep"
    folder.mkdir()
    shutil.copy2(SWEEP / "runs.parquet", folder / "runs.parquet")
    return folder


def _runs(folder: Path) -> pl.DataFrame:
    return pl.read_parquet(folder / "runs.parquet")


SWEEP_DAMAGE = {
    "random-bytes": (lambda f: (f / "runs.parquet").write_bytes(os.urandom(2000)), "Parquet"),
    "truncated": (
        lambda f: (f / "runs.parquet").write_bytes((f / "runs.parquet").read_bytes()[:700]),
        "Parquet",
    ),
    "wrong-type": (
        lambda f: (
            _runs(f).with_columns(pl.col("lr").cast(pl.String)).write_parquet(f / "runs.parquet")
        ),
        "column lr holds String",
    ),
    "missing-column": (
        lambda f: _runs(f).drop("collapsed").write_parquet(f / "runs.parquet"),
        "missing column(s) collapsed",
    ),
    "negative-staleness": (
        lambda f: (
            _runs(f)
            .with_columns(-pl.col("staleness"))
            .filter(pl.col("staleness") != 0)
            .write_parquet(f / "runs.parquet")
        ),
        "column staleness: -",
    ),
    "fractional-staleness": (
        lambda f: (
            _runs(f)
            .with_columns(pl.col("staleness").cast(pl.Float64) + 0.5)
            .write_parquet(f / "runs.parquet")
        ),
        "column staleness: 0.5 at row 0 (must be a whole number)",
    ),
    "nan-lr": (
        lambda f: (
            _runs(f)
            .with_columns(
                pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise("lr").alias("lr")
            )
            .write_parquet(f / "runs.parquet")
        ),
        "column lr: nan at row 3",
    ),
}


@pytest.mark.parametrize("damage", list(SWEEP_DAMAGE))
def test_fit_refuses_a_damaged_sweep_table(tmp_path: Path, damage: str) -> None:
    folder = _sweep(tmp_path)
    write, named = SWEEP_DAMAGE[damage]
    write(folder)
    line = _one_line(["fit", str(folder), "--bootstrap", "0", "--out", str(tmp_path / "law")])
    assert str(folder / "runs.parquet") in line and named in line
    assert not (tmp_path / "law").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--min-final-reward", "nan"), ("--min-final-reward", "inf"), ("--seed", "-1")],
)
def test_fit_refuses_nonsense_options_naming_them(tmp_path: Path, option: str, value: str) -> None:
    folder = _sweep(tmp_path)
    line = _one_line(["fit", str(folder), option, value, "--out", str(tmp_path / "law")])
    assert option in line


def _timings(tmp_path: Path) -> Path:
    folder = tmp_path / "timings"
    folder.mkdir()
    for name in ("decode_timings", "prefill_timings", "learner_timings"):
        shutil.copy2(PIPELINE_RUN / f"{name}.parquet", folder / f"{name}.parquet")
    return folder


@pytest.mark.parametrize(
    ("table", "column", "value", "named"),
    [
        ("decode_timings", "seconds", float("nan"), "column seconds: nan at row 4"),
        ("decode_timings", "seconds", float("inf"), "column seconds: inf at row 4"),
        ("decode_timings", "seconds", -1.0, "column seconds: -1 at row 4 (must be >= 0)"),
        ("prefill_timings", "tokens", -5, "column tokens: -5 at row 4"),
        ("learner_timings", "seconds", float("nan"), "column seconds: nan at row 4"),
    ],
)
def test_calibrate_from_a_timings_folder_names_the_file_and_column(
    tmp_path: Path, table: str, column: str, value: float, named: str
) -> None:
    folder = _timings(tmp_path)
    path = folder / f"{table}.parquet"
    frame = pl.read_parquet(path)
    values = frame[column].to_list()
    values[4] = value
    frame.with_columns(
        pl.Series(column, values, dtype=frame[column].dtype, strict=False)
    ).write_parquet(path)
    line = _one_line(["calibrate", str(folder), "--out", str(tmp_path / "fragment.yaml")])
    assert str(path) in line and named in line
    assert not (tmp_path / "fragment.yaml").exists()


def _published(tmp_path: Path) -> Path:
    folder = tmp_path / "published"
    shutil.copytree(PUBLISHED, folder)
    return folder


def _set_pair_field(folder: Path, field: str, value) -> None:
    path = folder / "published_check.json"
    result = json.loads(path.read_text())
    result["pairs"][1][field] = value
    path.write_text(json.dumps(result))  # NaN and Infinity as Python writes them
    (folder / MARKER).unlink()  # a hand-edited folder, read as one without a marker


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("predicted_speedup", float("nan"), "NaN"),
        ("measured_sync_step_s", float("inf"), "Infinity"),
        (
            "predicted_speedup",
            "1.5x",
            "column predicted_speedup: '1.5x' at row 1 (expected numbers)",
        ),
        ("gpus_sync", 0, "column gpus_sync: 0 at row 1"),
        ("predicted_async_learner_busy", 3.0, "column predicted_async_learner_busy: 3"),
    ],
)
def test_report_published_refuses_nan_inf_and_strings(
    tmp_path: Path, field: str, value, named: str
) -> None:
    folder = _published(tmp_path)
    _set_pair_field(folder, field, value)
    line = _one_line(["report", "published", str(folder)])
    assert "published_check.json" in line and named in line
    assert not (folder / "report.html").exists()


def test_report_published_checks_the_completion_marker(tmp_path: Path) -> None:
    folder = _published(tmp_path)
    result = json.loads((folder / "published_check.json").read_text())
    result["steps"] = 3  # changed after the run finished: no longer the run the marker records
    (folder / "published_check.json").write_text(json.dumps(result))
    assert "changed after the run" in _one_line(["report", "published", str(folder)])


def test_the_committed_published_check_renders(tmp_path: Path) -> None:
    folder = _published(tmp_path)
    result = CliRunner().invoke(main, ["report", "published", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "report.html").stat().st_size > 1000


def test_check_published_into_an_earlier_folder_leaves_no_stale_mechanisms(
    tmp_path: Path,
) -> None:
    folder = _published(tmp_path)
    (folder / MARKER).unlink()  # a folder from before completion markers, mechanisms and all
    assert (folder / "mechanisms.csv").exists()
    result = CliRunner().invoke(
        main,
        ["check", "published", "--steps", "3", "--no-mechanisms", "--quiet", "--out", str(folder)],
    )
    assert result.exit_code == 0, result.output
    assert not (folder / "mechanisms.csv").exists()
    assert "mechanisms.csv" not in result.output
    marker = json.loads((folder / MARKER).read_text())
    assert sorted(marker["files"]) == ["published_check.csv", "published_check.json", "report.html"]
    assert json.loads((folder / "published_check.json").read_text())["mechanisms"] == []


@pytest.mark.parametrize("kind", ["plan", "simulate"])
@pytest.mark.parametrize(
    "marker", [[], {"kind": None}, {"files": {}}, {"kind": "plan", "files": ["plan.json"]}]
)
def test_report_pages_refuse_a_malformed_marker_in_one_line(
    tmp_path: Path, kind: str, marker
) -> None:
    folder = tmp_path / "out"
    with output_folder(folder, kind=kind) as stage:
        (stage / "summary.json").write_text("{}")
    if isinstance(marker, dict) and marker.get("kind") == "plan":
        marker = {**marker, "kind": kind}
    (folder / MARKER).write_text(json.dumps(marker))
    line = _one_line(["report", kind, str(folder)])
    assert MARKER in line and "damaged completion marker" in line


@settings(
    derandomize=True,
    database=None,
    max_examples=15,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    field=st.sampled_from(["predicted_speedup", "measured_async_step_s", "speedup_rel_error"]),
    value=st.one_of(
        st.floats(),
        st.text(max_size=5),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
    ),
)
def test_report_published_renders_or_refuses_in_one_line(tmp_path: Path, field: str, value) -> None:
    folder = tmp_path / "published"
    shutil.rmtree(folder, ignore_errors=True)  # examples share the test's tmp_path
    shutil.copytree(PUBLISHED, folder)
    _set_pair_field(folder, field, value)
    result = CliRunner().invoke(main, ["report", "published", str(folder)])
    assert result.exit_code in (0, 2), result.exception
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1
    else:  # only a finite number in range renders
        assert isinstance(value, float) and value == value and abs(value) != float("inf")


def test_a_failed_least_squares_fit_names_the_table(tmp_path: Path, monkeypatch) -> None:
    import numpy as np
    from stalesim.sim.calibrate import timings as calibrate

    def diverging(*_args, **_kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(calibrate, "nnls", diverging)
    folder = _timings(tmp_path)
    line = _one_line(["calibrate", str(folder), "--out", str(tmp_path / "fragment.yaml")])
    assert str(folder / "decode_timings.parquet") in line and "least-squares fit" in line
    assert not (tmp_path / "fragment.yaml").exists()
