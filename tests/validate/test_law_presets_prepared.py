"""The prepared law experiments: batch size on the non-saturating task and the learning-rate
rules where the batch's lag alternates. Each preset asks its question (grid, batch, rule) and
trains on a tiny config as it would at full size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from stalesim.common.config_file import ConfigError, validate_config
from stalesim.sim.law.model import law_curve
from stalesim.validate.law.sweep import run_sweep
from stalesim.validate.train.presets import (
    CONSERVATIVE_LAW,
    RunConfig,
    SweepConfig,
    TrainConfig,
    preset_sweep,
)
from stalesim.validate.train.staleness import parse_staleness
from stalesim.validate.train.trainer import train_run

TINY = {
    "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
    "task": {"n_digits": 3, "base": 6},
    "warm_start": {"steps": 5, "batch_size": 16, "per_run_seed": True},
    "steps": 10,
    "smoothing_window": 2,
    "eval_prompts": 8,
    "warmup_steps": 0,
}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALESIM_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def test_alternating_lags_by_learner_step() -> None:
    spec = parse_staleness("alternating:0-8")
    assert spec.text == "alternating:0-8" and spec.max_lag == 8 and spec.family == "distribution"
    rng = np.random.default_rng(0)
    assert [int(spec.draw(3, rng, step)[0]) for step in range(4)] == [0, 8, 0, 8]
    assert spec.draw(5, rng, 3).tolist() == [8] * 5
    assert parse_staleness(" alternating:2-2 ").draw(2, rng, 1).tolist() == [2, 2]
    with pytest.raises(ValueError, match="alternating needs A <= B"):
        parse_staleness("alternating:8-0")
    with pytest.raises(ValueError, match="alternating:A-B"):
        parse_staleness("alternating:0")


def test_batch_presets_differ_from_the_base_in_the_batch_alone() -> None:
    base = preset_sweep("law-batch-ns-16")
    assert (base.train.task.n_digits, base.train.task.base, base.train.steps) == (12, 16, 300)
    for name, prompts, minibatches in [("law-batch-ns-64", 64, 1), ("law-batch-ns-64-mb4", 64, 4)]:
        config = preset_sweep(name)
        assert (config.train.prompts_per_step, config.train.minibatches_per_step) == (
            prompts,
            minibatches,
        )
        same = config.train.model_copy(update={"prompts_per_step": 16, "minibatches_per_step": 1})
        assert same == base.train
        runs = config.runs()
        assert {r.staleness for r in runs} == {f"fixed:{s}" for s in (0, 2, 4, 8, 16)}
        assert len({r.seed for r in runs}) == 4 and len(runs) == 120
    # the 64 x 8 grid is the 16 x 8 one moved 2x up, the mini-batched one 2x down
    lrs = {
        n: sorted({r.lr for r in preset_sweep(f"law-batch-ns-{n}").runs()})
        for n in ("16", "64", "64-mb4")
    }
    assert np.allclose(np.array(lrs["64"]) / np.array(lrs["16"]), 2.0)
    assert np.allclose(np.array(lrs["64-mb4"]) / np.array(lrs["16"]), 0.5)


def test_the_mini_batched_preset_shrunk_trains_with_lag_growing_per_mini_batch(
    tmp_path: Path,
) -> None:
    data = preset_sweep("law-batch-ns-64-mb4").model_dump(mode="json")
    data["train"] |= TINY | {"prompts_per_step": 8, "samples_per_prompt": 2}
    data["grids"] = [{"lrs": [1e-3], "staleness": ["0", "2"], "seeds": [0]}]
    small = validate_config(SweepConfig, data)
    runs, steps = run_sweep(small, tmp_path / "runs", workers=1)
    assert runs.height == 2 and (runs["minibatches_per_step"] == 4).all()
    late = steps.filter(steps["step"] >= 2).join(runs.select("run_id", "staleness"), on="run_id")
    # four versions per learner step: mini-batch m trains on data m + S versions old
    assert (late["staleness_max"] == late["staleness"] + 3).all()
    assert np.allclose(late["staleness_mean"], late["staleness"] + 1.5)
    assert (late["version"] == (late["step"] + 1) * 4).all()


def test_scheduler_presets_rules_and_grids() -> None:
    eta = lambda s: float(law_curve(s, **CONSERVATIVE_LAW))  # noqa: E731
    names = [
        "law-sched-alt-eta0",
        "law-sched-alt-constant",
        "law-sched-alt-law",
        "law-sched-alt-ess",
    ]
    configs = {n: preset_sweep(n) for n in names}
    for config in configs.values():
        runs = config.runs()
        assert {r.staleness for r in runs} == {"alternating:0-8"}
        assert len({r.seed for r in runs}) >= 6
        assert (config.train.task.n_digits, config.train.steps) == (12, 300)
    rules = {n: c.train.lr_rule.kind for n, c in configs.items()}
    assert rules == {
        "law-sched-alt-eta0": "constant",
        "law-sched-alt-constant": "constant",
        "law-sched-alt-law": "law",
        "law-sched-alt-ess": "ess",
    }
    assert {r.lr for r in configs["law-sched-alt-eta0"].runs()} == {eta(0)}
    assert {r.lr for r in configs["law-sched-alt-law"].runs()} == {eta(0)}
    tuned = sorted({r.lr for r in configs["law-sched-alt-constant"].runs()})
    assert tuned[0] < eta(4) < tuned[-1]  # the grid brackets eta at the mean lag
    # the pinned curve is the fit the conservative reading was copied from
    source = Path(__file__).resolve().parents[2] / "reports/results/law-horizon/non-saturating"
    fitted = json.loads((source / "law.json").read_text())["eta_opt"]
    assert {name: fitted[name] for name in CONSERVATIVE_LAW} == CONSERVATIVE_LAW


def test_the_law_rule_moves_the_rate_with_the_alternating_lag() -> None:
    data = preset_sweep("law-sched-alt-law").train.model_dump(mode="json") | TINY
    data["prompts_per_step"], data["samples_per_prompt"] = 4, 2
    train = validate_config(TrainConfig, data)
    lr = CONSERVATIVE_LAW["eta0"]
    result = train_run(
        RunConfig(preset="t", train=train, lr=lr, staleness="alternating:0-8", seed=0)
    )
    lags = [row["staleness_mean"] for row in result.steps]
    # even steps fresh, odd steps 8 versions old (fewer while the run has fewer versions)
    assert lags == [0 if t % 2 == 0 else min(8, t) for t in range(10)]
    eta = lambda s: float(law_curve(s, **CONSERVATIVE_LAW))  # noqa: E731
    assert [row["lr"] for row in result.steps] == pytest.approx(
        [lr * eta(lag) / eta(0) for lag in lags]
    )
    assert result.run["staleness_spec"] == "alternating:0-8"
    assert result.run["staleness_kind"] == "distribution"


def test_a_bad_staleness_spec_on_the_command_line_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"alternating:9-1.*alternating needs A <= B"):
        validate_config(
            SweepConfig,
            {
                "preset": "x",
                "train": {},
                "grids": [{"lrs": [1e-3], "staleness": ["alternating:9-1"], "seeds": [0]}],
            },
        )
