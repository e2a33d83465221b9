"""The knee interval's coverage check: on synthetic sweeps with almost no noise the fit recovers
the true knee and its interval holds it; the committed fits' own designs are measured by the
command that writes ``knee_coverage.json``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from stalesim.sim.law.model import load_law
from stalesim.validate.law import coverage
from stalesim.validate.law.knee_coverage import knee_coverage, main

from tests.evidence import RESULTS

LAW = RESULTS / "law-knee" / "confirm" / "law.json"


def _design(sigma: float) -> coverage.Design:
    axis = (0.0, 2.0, 4.0, 6.0, 8.0, 16.0)
    grid = tuple(float(x) for x in np.exp(np.linspace(np.log(3e-5), np.log(3e-3), 9)))
    return coverage.Design(
        staleness=(0, 2, 4, 6, 8, 16), axis=axis, lrs=tuple(grid for _ in axis),
        truth=tuple(0.0 for _ in axis), n_seeds=6, curvature=0.05, sigma=sigma,
    )  # fmt: skip


def test_with_almost_no_noise_the_fit_recovers_the_true_knee(tmp_path: Path, monkeypatch) -> None:
    shutil.copy(LAW, tmp_path / "law.json")
    monkeypatch.setattr(coverage, "sweep_design", lambda path: _design(1e-5))
    result = knee_coverage(tmp_path, n_sim=20, seed=1)
    truth = load_law(LAW).eta_opt.s_c
    assert result["true_curve"]["s_c"] == truth
    assert result["median_fitted_s_c"] == pytest.approx(truth, rel=0.01)
    assert result["reported_share"] == 1.0 and result["coverage"] >= 0.9


def test_the_command_refuses_a_folder_without_a_fit(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not a fitted sweep folder" in capsys.readouterr().err


def test_a_noisy_knee_interval_is_calibrated_to_its_level_on_fresh_sweeps(
    tmp_path: Path, monkeypatch
) -> None:
    shutil.copy(LAW, tmp_path / "law.json")
    monkeypatch.setattr(coverage, "sweep_design", lambda path: _design(0.02))
    result = knee_coverage(tmp_path, n_sim=60, seed=2)
    calibration = result["calibration"]
    # at this noise the plain jackknife interval misses the true knee far too often ...
    assert result["coverage"] < 0.85, result
    # ... and the widened one, counted on 60 fresh sweeps, holds it near its level
    assert calibration["factor"] > 1.5
    assert calibration["coverage"] >= 0.88, calibration
    assert calibration["held_out_seed"] == 3
