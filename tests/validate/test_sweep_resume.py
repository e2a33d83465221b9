"""The sweep: parallel runs, resumable without redoing finished work, identical results."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.validate.law.sweep import run_sweep
from stalesim.validate.train.presets import SweepConfig

TIMING = ["wall_s"]
STEP_TIMING = ["rollout_s", "learn_s"]


def tiny_sweep() -> SweepConfig:
    return SweepConfig.model_validate(
        {
            "preset": "test",
            "train": {
                "task": {"n_digits": 3, "base": 5},
                "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                "warm_start": {"steps": 10, "batch_size": 32},
                "steps": 5,
                "prompts_per_step": 4,
                "samples_per_prompt": 4,
                "smoothing_window": 2,
            },
            "grids": [{"lrs": [1e-3, 3e-3], "staleness": ["0", "uniform:0-2"], "seeds": [0]}],
        }
    )


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STALESIM_CACHE_DIR", str(tmp_path / "cache"))


def test_sweep_in_parallel_then_resumed_gives_identical_rows(tmp_path) -> None:
    config = tiny_sweep()
    out = tmp_path / "runs"
    runs, steps = run_sweep(config, out, workers=2)
    assert runs.height == 4
    assert steps.height == 4 * 5
    assert set(runs["staleness_kind"]) == {"fixed", "distribution"}
    assert runs.filter(pl.col("staleness_spec") == "fixed:0")["staleness_mean"].to_list() == [
        0.0,
        0.0,
    ]
    assert json.loads((out / "config.json").read_text())["grids"][0]["lrs"] == [1e-3, 3e-3]

    # Lose one finished run and the merged tables, as if the sweep was killed mid-way.
    lost = runs.sort("run_id")["run_id"][1]
    (out / "shards" / f"{lost}.run.json").unlink()
    (out / "runs.parquet").unlink()
    (out / "steps.parquet").unlink()
    progress = []
    resumed, resumed_steps = run_sweep(
        config, out, workers=1, on_progress=lambda done, total: progress.append((done, total))
    )
    assert progress == [(3, 4), (4, 4)]  # only the lost run was trained again

    before, after = runs.sort("run_id"), resumed.sort("run_id")
    assert before.drop(TIMING).equals(after.drop(TIMING))
    # Runs that were not redone kept their original wall time.
    kept = pl.col("run_id") != lost
    assert before.filter(kept)["wall_s"].to_list() == after.filter(kept)["wall_s"].to_list()
    order = ["run_id", "step"]
    assert steps.sort(order).drop(STEP_TIMING).equals(resumed_steps.sort(order).drop(STEP_TIMING))
    on_disk = pl.read_parquet(out / "runs.parquet").sort("run_id")
    assert on_disk.drop(TIMING).equals(after.drop(TIMING))

    # A folder that holds only the merged tables (as committed, without shards) is complete.
    for shard in (out / "shards").iterdir():
        shard.unlink()
    progress.clear()
    from_tables, tables_steps = run_sweep(
        config, out, workers=1, on_progress=lambda done, total: progress.append((done, total))
    )
    assert progress == [(4, 4)]
    assert from_tables.sort("run_id").equals(after)
    assert tables_steps.sort(order).equals(resumed_steps.sort(order))

    # A second grid with the same train config adds its runs; another train config is refused.
    wider = SweepConfig.model_validate(
        {
            **config.model_dump(),
            "grids": [{"lrs": [1e-3, 3e-3, 1e-2], "staleness": ["0"], "seeds": [0]}],
        }
    )
    union, _ = run_sweep(wider, out, workers=1)
    assert union.height == 5
    assert len(json.loads((out / "config.json").read_text())["grids"]) == 2
    other = config.model_copy(update={"train": config.train.model_copy(update={"steps": 4})})
    with pytest.raises(ValueError, match="another train config"):
        run_sweep(other, out, workers=1)


def test_cli_sweep_runs_and_reports_bad_input_in_one_line(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "validate",
        "sweep",
        "--preset",
        "cpu-tiny",
        "--lrs",
        "1e-3",
        "--staleness",
        "0,2",
        "--seeds",
        "0",
        "--workers",
        "1",
        "--out",
        str(out),
        "--quiet",
        "--set",
        "train.steps=3",
        "--set",
        "train.warm_start.steps=5",
        "--set",
        "train.prompts_per_step=4",
    ]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    runs = pl.read_parquet(out / "runs.parquet")
    assert sorted(runs["staleness"].to_list()) == [0, 2]
    assert runs["steps"].to_list() == [3, 3]

    bad = runner.invoke(main, ["validate", "sweep", "--staleness", "0,soon", "--out", str(out)])
    assert bad.exit_code == 2
    assert bad.output.strip().count("\n") == 0 and "staleness 'soon'" in bad.output
    bad_key = runner.invoke(
        main, ["validate", "sweep", "--set", "train.stepz=3", "--out", str(out)]
    )
    assert bad_key.exit_code == 2 and "train.stepz" in bad_key.output


def test_a_folder_from_before_a_new_default_field_resumes_without_redoing(tmp_path) -> None:
    """A field added to the train config since a folder was made (at a default that keeps the
    old behaviour) changes every run id; the folder's runs still count as done by grid point,
    and its recorded config is read through today's model."""

    def grid(staleness: list[str]) -> SweepConfig:
        return SweepConfig.model_validate(
            {
                **tiny_sweep().model_dump(),
                "grids": [{"lrs": [1e-3], "staleness": staleness, "seeds": [0]}],
            }
        )

    config = grid(["0", "2"])
    out = tmp_path / "runs"
    runs, _ = run_sweep(config, out, workers=1)
    assert runs.height == 2
    # As an older version wrote them: other run ids, and no "beta"/"kl_estimator" recorded.
    table = pl.read_parquet(out / "runs.parquet")
    table.with_columns(pl.col("run_id").str.reverse()).write_parquet(out / "runs.parquet")
    recorded = json.loads((out / "config.json").read_text())
    for key in ("beta", "kl_estimator"):
        recorded["train"]["grpo"].pop(key)
    (out / "config.json").write_text(json.dumps(recorded))
    for shard in (out / "shards").iterdir():
        shard.unlink()

    progress = []
    union, _ = run_sweep(
        grid(["0", "2", "4"]),
        out,
        workers=1,
        on_progress=lambda done, total: progress.append((done, total)),
    )
    assert progress == [(2, 3), (3, 3)]  # only S = 4 was trained
    assert union.height == 3
    assert sorted(union["staleness_spec"].to_list()) == ["fixed:0", "fixed:2", "fixed:4"]
