"""`stalesim fit` on runs from any trainer: a step table (CSV/JSONL) and a folder of per-run
JSONL and TensorBoard logs, checked against the fit of the committed sweep they were made from,
against a synthetic sweep of known truth, and on bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.sim.law.model import law_curve
from stalesim.validate.law.external_runs import (
    Columns,
    LogMapping,
    Mapping,
    fit_external,
    to_sweep_tables,
)
from stalesim.validate.law.fit import FitSettings, fit_sweep
from stalesim.validate.law.probe_size import step_table
from stalesim.validate.law.sweep_runs import read_sweep

from tests.evidence import RESULTS

SWEEP = RESULTS / "law-horizon" / "non-saturating"
needs_sweep = pytest.mark.skipif(
    not (SWEEP / "runs.parquet").exists(), reason="needs the repository's results folder"
)
POINT_COLUMNS = (
    "staleness",
    "staleness_realised",
    "n_runs",
    "eta_opt",
    "eta_opt_lo",
    "eta_opt_hi",
    "eta_max",
    "eta_max_lo",
    "eta_max_hi",
    "steps_to_target",
)


def _assert_same_points(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got["staleness"].to_list() == want["staleness"].to_list()
    for name in POINT_COLUMNS:
        a = got[name].cast(pl.Float64).to_numpy()
        b = want[name].cast(pl.Float64).to_numpy()
        np.testing.assert_allclose(a, b, rtol=1e-9, equal_nan=True, err_msg=name)
    assert got["eta_opt_flag"].to_list() == want["eta_opt_flag"].to_list()


@needs_sweep
def test_csv_and_jsonl_tables_fit_to_the_sweep_folders_law(tmp_path):
    runs, steps = read_sweep(SWEEP)
    table = step_table(runs, steps, warm_reward=True).sort("run", "step")
    csv, jsonl = tmp_path / "probe.csv", tmp_path / "probe.jsonl"
    table.write_csv(csv)
    table.write_ndjson(jsonl)
    mapping = tmp_path / "map.yaml"
    mapping.write_text("columns: {lag: lag, warm_reward: warm_reward}\n")
    options = ["--bootstrap", "40", "--seed", "3", "--quiet"]
    runner = CliRunner()
    result = runner.invoke(
        main, ["fit", str(SWEEP), "--out", str(tmp_path / "sweep.json"), *options]
    )
    assert result.exit_code == 0, result.output
    want = json.loads((tmp_path / "sweep.json").read_text())
    target = ["--target-reward", str(runs["target_reward"][0])]
    for path in (csv, jsonl):
        result = runner.invoke(
            main, ["fit", str(path), "--mapping", str(mapping), *target, *options]
        )
        assert result.exit_code == 0, result.output
        got = json.loads(path.with_suffix(".law.json").read_text())
        _assert_same_points(pl.DataFrame(got["points"]), pl.DataFrame(want["points"]))
        for name in ("eta0", "s_c", "k", "alpha"):
            assert got["eta_opt"][name] == pytest.approx(want["eta_opt"][name], rel=1e-9)
        assert got["failures"] == want["failures"]
        assert got["source"]["format"] == "table"


def _write_jsonl_run(path: Path, frame: pl.DataFrame) -> None:
    # a wrapper object per line, as some trainers' file loggers write it
    with path.open("w") as fh:
        for row in frame.iter_rows(named=True):
            data = {"score/mean": row["reward"], "async/lag": row["lag"], "other": 1.0}
            fh.write(json.dumps({"step": row["step"] + 1, "data": data}) + "\n")
            fh.write(json.dumps({"step": row["step"] + 1, "timing_s/gen": 0.5}) + "\n")


def _write_tensorboard_run(folder: Path, frame: pl.DataFrame) -> None:
    tensorboard = pytest.importorskip("torch.utils.tensorboard")
    writer = tensorboard.SummaryWriter(log_dir=str(folder))
    for row in frame.iter_rows(named=True):
        writer.add_scalar("score/mean", row["reward"], global_step=row["step"] + 1)
        writer.add_scalar("async/lag", row["lag"], global_step=row["step"] + 1)
    writer.close()


@needs_sweep
def test_a_folder_of_jsonl_and_tensorboard_logs_fits_to_the_sweep_folders_law(tmp_path):
    pytest.importorskip("tbparse")
    horizon = 60
    runs, steps = read_sweep(SWEEP)
    runs = runs.filter(
        pl.col("staleness").is_in([0, 8])
        & pl.col("lr").is_in([1.25e-4, 2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3])
    )
    steps = steps.filter(pl.col("run_id").is_in(runs["run_id"].implode()))
    # the reference: the sweep's own fit at this horizon, with the start reward taken from the
    # first logged step as it is for logs (logs carry no separately scored warm start)
    settings = FitSettings(bootstrap=40, seed=5, horizon=horizon)
    want = fit_sweep(runs.drop("warm_reward"), settings, steps=steps)
    table = (
        step_table(runs, steps, warm_reward=True)
        .sort("run", "step")
        .filter(pl.col("step") < horizon)
    )
    folder = tmp_path / "logs"
    folder.mkdir()
    labels = {}
    for i, ((run,), frame) in enumerate(sorted(table.partition_by("run", as_dict=True).items())):
        first = frame.row(0, named=True)
        if i % 2:
            name = f"lr{first['lr']:g}_s{first['staleness']}_seed{first['seed']}"
            _write_jsonl_run(folder / f"{name}.jsonl", frame)
        else:
            _write_tensorboard_run(folder / run, frame)
            labels[run] = {k: first[k] for k in ("lr", "staleness", "seed")}
    mapping = Mapping(
        logs=LogMapping(
            reward="score/mean",
            lag="async/lag",
            runs=labels,
            pattern="lr{lr}_s{staleness}_seed{seed}",
        )
    )
    got, path = fit_external(
        folder,
        settings=FitSettings(bootstrap=40, seed=5),
        mapping=mapping,
        target_reward=float(runs["target_reward"][0]),
    )
    assert path == folder / "law.json" and path.exists()
    assert got.runs.height == runs.height
    _assert_same_points(got.points, want.points)
    assert got.law.regime.steps == horizon
    stopped = int(got.runs["collapsed"].sum())
    assert stopped == int(want.runs["collapsed"].sum()) > 0
    assert f"{stopped} run(s) stopped before the horizon" in " ".join(got.law.notes)


def _synthetic_table(truth, staleness, lrs, seeds, steps, rng) -> pl.DataFrame:
    """Reward curves that rise at a rate peaked (in ln lr) at eta_opt(S) = truth(S)."""
    rows = []
    for s in staleness:
        best = truth(s)
        for lr in lrs:
            for seed in range(seeds):
                # the best rate learns more slowly at higher S ("same distance, slower pace")
                speed = best / truth(0) * np.exp(-(np.log(lr / best) ** 2) / (2 * 0.8**2))
                speed *= np.exp(rng.normal(0, 0.03))
                t = np.arange(steps)
                reward = 0.9 - 0.5 * np.exp(-t * speed / 10) + rng.normal(0, 0.01, steps)
                for step, value in zip(t, reward, strict=True):
                    rows.append((f"s{s}-{lr:.3g}-{seed}", lr, s, seed, int(step), float(value)))
    return pl.DataFrame(
        rows, schema=["run", "lr", "staleness", "seed", "step", "reward"], orient="row"
    ).with_columns(pl.lit("synthetic").alias("origin"))


def test_runs_drawn_from_a_known_law_give_it_back():
    """eta_opt(S) = 1e-3 / (1 + S/2): the points within 6%, the fitted ratio
    eta(8)/eta(0) = 0.2 within 6%, and steps to target growing as the rate falls."""

    def truth(s):
        return float(law_curve(s, 1e-3, 2.0, 1.0, 1.0))

    staleness = (0, 1, 2, 4, 8)
    lrs = np.geomspace(5e-5, 4e-3, 13)
    table = _synthetic_table(truth, staleness, lrs, 3, 100, np.random.default_rng(0))
    ext = to_sweep_tables(table, target_reward=0.7)
    assert not ext.runs["collapsed"].any()
    fit = fit_sweep(ext.runs, FitSettings(bootstrap=40), steps=ext.steps)
    points = fit.points
    assert points["eta_opt_flag"].to_list() == ["ok"] * len(staleness)
    for s, eta in zip(points["staleness"], points["eta_opt"], strict=True):
        assert eta == pytest.approx(truth(s), rel=0.06), s
    curve = fit.law.eta_opt
    ratio = law_curve(8.0, curve.eta0, curve.s_c, curve.k, curve.alpha) / curve.eta0
    assert ratio == pytest.approx(0.2, rel=0.06)
    assert fit.law.lag_axis == "realised"  # without a lag column the axis is the bound itself
    np.testing.assert_allclose(points["staleness_realised"].to_numpy(), staleness)
    reached = points["steps_to_target"].to_numpy()
    assert np.all(np.diff(reached) > 0)


def _good_table() -> pl.DataFrame:
    rows = []
    for s in (0, 4):
        for lr in (1e-4, 2e-4, 4e-4):
            for seed in (0, 1, 2):
                for step in range(12):
                    rows.append((f"s{s}-{lr:g}-{seed}", lr, s, seed, step, 0.5 + 0.01 * step))
    return pl.DataFrame(
        rows, schema=["run", "lr", "staleness", "seed", "step", "reward"], orient="row"
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda t: t.drop("seed"), "no column 'seed'"),
        (
            lambda t: t.with_columns(
                pl.when(pl.col("step") == 3).then(float("nan")).otherwise(pl.col("lr")).alias("lr")
            ),
            "column 'lr'",
        ),
        (lambda t: t.with_columns(-pl.col("lr")), "column 'lr'"),
        (lambda t: t.with_columns(pl.col("staleness") + 0.5), "column 'staleness'"),
        (lambda t: t.with_columns(pl.col("staleness") - 4), "column 'staleness'"),
        (lambda t: t.filter(pl.col("staleness") == 0), "column 'staleness'"),
        (lambda t: pl.concat([t, t.head(1)]), "column 'step'"),
        (
            lambda t: t.with_columns(pl.col("step") * (1 + (pl.col("run") == "s4-0.0002-1"))),
            "column 'step'",
        ),
    ],
    ids=[
        "missing",
        "nan-lr",
        "negative-lr",
        "fractional-S",
        "negative-S",
        "one-S",
        "duplicate",
        "ragged-steps",
    ],
)
def test_bad_tables_are_one_line_errors_and_write_nothing(tmp_path, change, needle):
    path = tmp_path / "runs.csv"
    change(_good_table()).write_csv(path)
    result = CliRunner().invoke(main, ["fit", str(path), "--bootstrap", "5", "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.output
    assert needle in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]


def test_unreadable_inputs_are_one_line_errors(tmp_path):
    bad = tmp_path / "runs.csv"
    bad.write_bytes(b"run,lr\n\xff\xfe\x00,1\n" * 3)
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "a.jsonl").write_text("{not json\n")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("logs: {reward: r, pattern: 'x{lr}_{staleness}_{seed}'}\n")
    cases = [
        ([str(bad)], str(bad)),
        ([str(folder)], "needs --mapping"),
        ([str(folder), "--mapping", str(mapping)], "a.jsonl: line 1 is not JSON"),
        ([str(tmp_path / "runs.txt")], "no such runs directory"),
        ([str(tmp_path / "missing.csv")], "missing.csv: no such file"),
        ([str(SWEEP), "--mapping", str(mapping)], "not a sweep folder"),
        (
            [str(bad), "--mapping", str(tmp_path / "map-bad.yaml")],
            "map-bad.yaml: columns.learning_rate",
        ),
    ]
    (tmp_path / "map-bad.yaml").write_text("columns: {learning_rate: lr}\n")
    for args, needle in cases:
        result = CliRunner().invoke(main, ["fit", *args, "--quiet"])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and needle in result.output, args
    assert not list(tmp_path.rglob("*.json"))


def test_a_run_that_stops_early_counts_as_collapsed_at_its_last_step():
    table = _good_table().filter(~((pl.col("run") == "s4-0.0004-2") & (pl.col("step") > 7)))
    ext = to_sweep_tables(table, columns=Columns(), target_reward=0.55)
    row = ext.runs.filter(pl.col("run_id") == "s4-0.0004-2").row(0, named=True)
    assert row["collapsed"] and row["collapse_step"] == 7 and row["steps_done"] == 8
    # the remaining steps hold the last 10-point mean, as the trainer scores a stopped run
    held = np.mean([0.5 + 0.01 * s for s in range(8)])
    curve = np.concatenate([[0.5 + 0.01 * s for s in range(8)], [held] * 4])
    assert row["reward_auc"] == pytest.approx(curve.mean())
    assert (
        ext.horizon == 12
        and not ext.runs.filter(pl.col("run_id") != "s4-0.0004-2")["collapsed"].any()
    )


def test_tensorboard_logs_without_tbparse_say_which_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tbparse", None)  # as if the logs extra were not installed
    run = tmp_path / "logs" / "lr0.001_s0_seed0"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.1.host").write_bytes(b"")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("logs: {reward: r, pattern: 'lr{lr}_s{staleness}_seed{seed}'}\n")
    result = CliRunner().invoke(main, ["fit", str(run.parent), "--mapping", str(mapping)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {run}: reading TensorBoard event files needs tbparse: pip install -e '.[logs]'"
    )
