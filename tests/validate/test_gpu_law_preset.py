"""The GPU law preset is ready to run first time: its grid is the one its question needs, and the
same config, shrunk and moved to the CPU, trains through the sweep runner and fits."""

from __future__ import annotations

from pathlib import Path

import pytest
from stalesim.validate.law.fit import FitSettings, fit_sweep
from stalesim.validate.law.sweep import run_sweep
from stalesim.validate.train.presets import PRESETS, SweepConfig, preset_sweep


def test_the_preset_asks_its_question_in_one_device_call() -> None:
    config = preset_sweep("law-gpu-ns")
    assert config.train.device == "cuda"
    assert config.train.task.n_digits == 12 and config.train.task.base == 16
    runs = config.runs()
    assert len(runs) == 16  # S in {0, 8} x 4 rates x 2 seeds
    assert {r.staleness for r in runs} == {"fixed:0", "fixed:8"}
    assert config.train.steps >= 5 * 8  # every run at least 5 x its largest S


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALESIM_CACHE_DIR", str(tmp_path / "cache"))


def test_the_preset_shrunk_to_the_cpu_runs_and_fits(tmp_path: Path) -> None:
    data = dict(PRESETS["law-gpu-ns"])
    train = dict(data["train"])
    train |= {
        "device": "cpu",
        "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
        "task": {"n_digits": 3, "base": 16, "vocab_size": 64},
        "warm_start": {"steps": 5, "batch_size": 32, "per_run_seed": True},
        "steps": 10,
        "prompts_per_step": 4,
        "samples_per_prompt": 4,
        "smoothing_window": 2,
    }
    small = SweepConfig.model_validate(
        {"preset": "law-gpu-ns-cpu", "train": train, "grids": [
            {"lrs": [1e-3, 2e-3, 4e-3], "staleness": ["0", "2"], "seeds": [0, 1]}
        ]}
    )  # fmt: skip
    runs, steps = run_sweep(small, tmp_path / "runs", workers=1)
    assert runs.height == 12 and steps.height == 12 * 10
    assert runs["reward_auc"].is_finite().all()
    assert sorted(runs["staleness"].unique().to_list()) == [0, 2]
    # ten steps locate no optimum: the fit reads every S and says so in one line
    with pytest.raises(ValueError, match="edge of the learning-rate grid"):
        fit_sweep(runs, FitSettings(bootstrap=20), steps=steps)
