"""stalesim calibrate: least squares recovers known coefficients from synthetic timings."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import yaml
from stalesim.common.config_file import ConfigError
from stalesim.sim.calibrate.timings import calibrate, fit_decode
from stalesim.sim.scenario import DecodeCoefficients

A, BETA, GAMMA, PREFILL = 4e-3, 2e-7, 5e-5, 3e-5
TRAIN, FORWARD, OVERHEAD = 2e-4, 6e-5, 0.05


def _write_timings(folder, rng: np.random.Generator, noise: float = 0.02) -> None:
    n = 4000
    live = rng.integers(1, 257, n)
    context = live * rng.integers(100, 4000, n)
    seconds = A + BETA * context + GAMMA * live
    pl.DataFrame(
        {
            "engine": rng.integers(0, 4, n),
            "live_seqs": live,
            "context_tokens": context,
            "seconds": seconds * (1 + noise * rng.standard_normal(n)),
        }
    ).write_parquet(folder / "decode_timings.parquet")
    tokens = rng.integers(500, 20000, 300)
    pl.DataFrame(
        {
            "engine": np.zeros(300, dtype=np.int64),
            "tokens": tokens,
            "seconds": PREFILL * tokens * (1 + noise * rng.standard_normal(300)),
        }
    ).write_parquet(folder / "prefill_timings.parquet")
    steps = 200
    gpus = rng.choice([1, 2, 4, 8], steps)
    step_tokens = rng.integers(10_000, 200_000, steps)
    rows = []
    for g, t in zip(gpus.tolist(), step_tokens.tolist(), strict=True):
        jitter = 1 + noise * rng.standard_normal(3)
        rows += [
            ("train", t, g, TRAIN * t / g * jitter[0]),
            ("forward", t, g, FORWARD * t / g * jitter[1]),
            ("overhead", t, g, OVERHEAD * jitter[2]),
        ]
    pl.DataFrame(rows, schema=["phase", "tokens", "gpus", "seconds"], orient="row").write_parquet(
        folder / "learner_timings.parquet"
    )


@pytest.mark.parametrize("noise", [0.02, 0.2])
def test_calibrate_measures_the_dispersion_around_the_model(tmp_path, noise: float) -> None:
    """Timings drawn with a known multiplicative noise: the decode iterations' and training
    passes' CV around the fitted model is that noise (4,000 and 200 rows)."""
    _write_timings(tmp_path, np.random.default_rng(3), noise=noise)
    cal = calibrate(tmp_path)
    assert cal.decode_cv == pytest.approx(noise, rel=0.05)
    assert cal.learner_cv == pytest.approx(noise, rel=0.15)
    assert cal.fragment()["cluster"]["learner_step_cv"] == cal.learner_cv


def test_calibrate_recovers_a_known_linear_model_from_noisy_timings(tmp_path) -> None:
    _write_timings(tmp_path, np.random.default_rng(7))
    cal = calibrate(tmp_path)
    d = cal.decode
    assert d["a_s"] == pytest.approx(A, rel=0.05)
    assert d["beta_s_per_token"] == pytest.approx(BETA, rel=0.03)
    assert d["gamma_s_per_seq"] == pytest.approx(GAMMA, rel=0.05)
    assert d["prefill_s_per_token"] == pytest.approx(PREFILL, rel=0.01)
    assert cal.learner["train_gpu_s_per_token"] == pytest.approx(TRAIN, rel=0.01)
    assert cal.learner["forward_gpu_s_per_token"] == pytest.approx(FORWARD, rel=0.01)
    assert cal.learner["step_overhead_s"] == pytest.approx(OVERHEAD, rel=0.01)
    # 2% multiplicative noise: the fit explains nearly everything and its error is ~2%
    assert cal.decode_quality.r2 > 0.99
    assert 0.01 < cal.decode_quality.relative_rms < 0.03
    DecodeCoefficients.model_validate(cal.fragment()["cluster"]["decode_coefficients"])


def test_exact_timings_are_fitted_exactly() -> None:
    live = np.array([1, 5, 9, 20, 40, 64])
    context = np.array([10, 300, 200, 5000, 8000, 20000])
    frame = pl.DataFrame(
        {"engine": [0] * 6, "live_seqs": live, "context_tokens": context,
         "seconds": 1e-3 + 1e-7 * context + 2e-5 * live}
    )  # fmt: skip
    coef, quality = fit_decode(frame)
    assert coef["a_s"] == pytest.approx(1e-3, rel=1e-6)
    assert coef["beta_s_per_token"] == pytest.approx(1e-7, rel=1e-6)
    assert coef["gamma_s_per_seq"] == pytest.approx(2e-5, rel=1e-6)
    assert quality.r2 == pytest.approx(1.0)


def test_a_table_without_its_columns_is_a_one_line_error(tmp_path) -> None:
    pl.DataFrame({"engine": [0], "seconds": [1.0]}).write_parquet(
        tmp_path / "decode_timings.parquet"
    )
    with pytest.raises(ConfigError, match="missing column"):
        calibrate(tmp_path)
    with pytest.raises(ConfigError, match="not a directory of timing tables"):
        calibrate(tmp_path / "nowhere")


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = (
        f"import sys; from stalesim.cli import main; sys.argv=['stalesim', *{list(args)!r}]; main()"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_calibrate_command_runs_without_arguments_and_writes_a_fragment(tmp_path) -> None:
    result = _cli("calibrate")
    assert result.returncode == 0, result.stderr
    fragment = yaml.safe_load(result.stdout)
    assert set(fragment["cluster"]) == {
        "decode_coefficients",
        "learner_coefficients",
        "decode_iteration_cv",
        "learner_step_cv",
    }
    _write_timings(tmp_path, np.random.default_rng(1))
    out = tmp_path / "fragment.yaml"
    result = _cli("calibrate", str(tmp_path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    written = yaml.safe_load(out.read_text())["cluster"]
    assert written["learner_coefficients"]["train_gpu_s_per_token"] == pytest.approx(
        TRAIN, rel=0.01
    )
    bad = _cli("calibrate", str(tmp_path / "missing"))
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1
