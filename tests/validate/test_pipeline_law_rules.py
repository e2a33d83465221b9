"""The pipeline's learning-rate rule comparison, on run folders with a known answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stalesim.validate.pipeline.law_rules import NO_CORRECTION, evaluate, main, scores_of

ETA0 = 5e-4
STEPS, WINDOW = 40, 10


def _run(
    root: Path, name: str, *, rule: dict, lr: float, seed: int, bound: int, reward: float
) -> None:
    """A run folder: every version generates 8 samples of reward ``reward``; the
    consumed lags cycle 0 .. bound."""
    out = root / name
    out.mkdir(parents=True)
    config = {
        "lr": lr,
        "seed": seed,
        "algorithm": {"mode": "async", "max_staleness": bound},
        "train": {"smoothing_window": WINDOW, "warmup_steps": 5, "lr_rule": rule},
    }
    (out / "config.json").write_text(json.dumps(config))
    versions = np.repeat(np.arange(STEPS), 8)
    lags = np.arange(versions.size) % (bound + 1)
    pl.DataFrame(
        {
            "behaviour_version_min": versions,
            "behaviour_version_max": versions,
            "reward": np.full(versions.size, reward),
            "consumed_step": versions,
            "staleness_max": lags,
        }
    ).write_parquet(out / "samples.parquet")
    pl.DataFrame(
        {
            "step": np.arange(STEPS),
            "lr": np.full(STEPS, lr * (0.5 if rule["kind"] == "law" else 1.0)),
            "collapse_reason": pl.Series([None] * STEPS, dtype=pl.String),
        }
    ).write_parquet(out / "steps.parquet")


def _law(summary: str) -> dict:
    return {"kind": "law", "summary": summary, "eta0": ETA0, "s_c": 40.0, "k": 1.0, "alpha": 5.0}


def _sweep(root: Path, *, max_effect: float, seeds: int = 6) -> None:
    """law-max ahead of law-mean by ``max_effect`` in every seed (plus a per-seed shift shared by
    every rule, as a shared warm start gives); constants below both."""
    for seed in range(seeds):
        shift = 0.02 * np.sin(seed)
        wobble = 0.001 * np.cos(3 * seed)
        for summary, effect in (("max", max_effect), ("mean", 0.0)):
            _run(
                root,
                f"law-{summary}/seed{seed}",
                rule=_law(summary),
                lr=ETA0,
                seed=seed,
                bound=4,
                reward=0.5 + shift + effect + wobble * (summary == "max"),
            )
        for lr, below in ((ETA0, 0.05), (ETA0 / 2, 0.03)):
            _run(
                root,
                f"constant/lr{lr}/seed{seed}",
                rule={"kind": "constant"},
                lr=lr,
                seed=seed,
                bound=4,
                reward=0.5 + shift - below,
            )


def test_scores_of_a_constant_and_a_ramp_curve_are_exact() -> None:
    flat = pl.DataFrame({"version": np.arange(30), "reward": np.full(30, 0.7)})
    assert scores_of(flat, 30, 10) == pytest.approx(
        {"reward_auc": 0.7, "final_reward": 0.7, "best_smoothed_reward": 0.7}
    )
    ramp = pl.DataFrame({"version": np.arange(30), "reward": np.arange(30) / 100})
    got = scores_of(ramp, 20, 10)  # versions 20+ are past the run's steps and not scored
    assert got["reward_auc"] == pytest.approx(0.095)
    assert got["final_reward"] == pytest.approx(0.145)
    assert got["best_smoothed_reward"] == pytest.approx(0.145)


def test_rules_are_grouped_by_config_and_compared_paired_by_seed(tmp_path: Path) -> None:
    _sweep(tmp_path, max_effect=0.03)
    summary = evaluate(tmp_path)
    assert summary["references"] == ["law-max", "law-mean"]
    rows = {(r["rule"], r["lr"]): r for r in summary["rows"]}
    assert set(rows) == {
        ("law-max", ETA0),
        ("law-mean", ETA0),
        ("constant", ETA0),
        ("constant", ETA0 / 2),
        (NO_CORRECTION, ETA0),
    }
    shift = float(np.mean(0.02 * np.sin(np.arange(6))))
    assert rows[("law-mean", ETA0)]["reward_auc"] == pytest.approx(0.5 + shift)
    assert rows[("constant", ETA0)]["reward_auc"] == pytest.approx(0.45 + shift)
    assert rows[("law-max", ETA0)]["lag_mean"] == pytest.approx(2.0)
    assert rows[("law-max", ETA0)]["lag_max"] == 4
    assert rows[("law-max", ETA0)]["applied_lr_mean"] == pytest.approx(ETA0 / 2)
    verdicts = {(v["reference"], v["rule"]): v for v in summary["verdicts"]}
    # 0.03 ahead in every seed with a tiny spread: ahead under every score
    assert verdicts[("law-max", "law-mean")]["verdict"] == "ahead"
    # the mirror image: behind by a Bonferroni interval wholly below 0
    assert verdicts[("law-mean", "law-max")]["verdict"] == "behind"
    # the shared per-seed shift cancels in the paired difference: 0.03 and 0.05 ahead exactly
    assert verdicts[("law-mean", "constant")]["verdict"] == "ahead"
    assert verdicts[("law-mean", NO_CORRECTION)]["verdict"] == "ahead"
    diffs = [
        c["difference"]
        for c in summary["comparisons"]
        if c["reference"] == "law-mean" and c["rule"] == "constant" and c["score"] == "reward_auc"
    ]
    assert sorted(diffs) == pytest.approx([0.03, 0.05])


def test_equal_rules_are_not_behind_each_other(tmp_path: Path) -> None:
    _sweep(tmp_path, max_effect=0.0)
    verdicts = {(v["reference"], v["rule"]): v for v in evaluate(tmp_path)["verdicts"]}
    # differences of +-0.001 per seed, well inside the 0.01 band
    assert verdicts[("law-max", "law-mean")]["verdict"] == "not behind"
    assert verdicts[("law-mean", "law-max")]["verdict"] == "not behind"


def test_the_command_writes_the_summary_and_refuses_an_empty_folder(tmp_path: Path, capsys) -> None:
    _sweep(tmp_path / "runs", max_effect=0.03, seeds=3)
    assert main([str(tmp_path / "runs")]) == 0
    written = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert len(written["runs"]) == 3 * 4 + 3  # four folders a seed, plus the relabelled constant
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "empty")])
    assert stop.value.code == 2
    assert "no pipeline runs" in capsys.readouterr().err
