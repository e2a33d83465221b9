"""The law's measurement: the failure rule, a drift KL that does not grow with the
staleness, the seed bootstrap's coverage, slopes, horizon truncation and regime warnings."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from stalesim.sim.law.intervals import Spread
from stalesim.sim.law.model import Law, law_curve, regime_warnings
from stalesim.sim.scenario import Scenario
from stalesim.validate.law.failure import backfill_from_steps, mark_failures
from stalesim.validate.law.group_estimates import Cells, estimate_optimum
from stalesim.validate.law.horizon import truncate_runs
from stalesim.validate.law.slopes import (
    FLAT_BAND,
    ONE_OVER_S_BAND,
    local_slopes,
    range_slope,
    ratio_verdict,
    regime_verdict,
)
from stalesim.validate.train.collapse import CollapseConfig, CollapseDetector
from stalesim.validate.train.policy import PolicyConfig
from stalesim.validate.train.presets import TrainConfig
from stalesim.validate.train.tasks import SortTask, SortTaskConfig
from stalesim.validate.train.trainer import drift_kl, sequence_logprobs
from stalesim.validate.train.warm_start import WarmStartConfig, build_policy


def _runs(rows: list[dict]) -> pl.DataFrame:
    base = {"staleness_kind": "fixed", "collapse_step": None}
    return pl.DataFrame([{**base, **r} for r in rows])


def test_failure_rule_on_constructed_runs() -> None:
    # warm 0.6; S=0 best mean final reward 0.9 (lr 1e-3); bar = 0.6 + 0.5 * 0.3 = 0.75
    rows = [
        dict(
            run_id="a",
            staleness=0,
            lr=1e-3,
            seed=0,
            collapsed=False,
            final_reward=0.9,
            best_smoothed_reward=0.92,
            warm_reward=0.6,
        ),
        dict(
            run_id="b",
            staleness=0,
            lr=4e-3,
            seed=0,
            collapsed=False,
            final_reward=0.58,
            best_smoothed_reward=0.85,
            warm_reward=0.6,
        ),  # below its warm start
        dict(
            run_id="c",
            staleness=8,
            lr=1e-4,
            seed=0,
            collapsed=False,
            final_reward=0.7,
            best_smoothed_reward=0.72,
            warm_reward=0.6,
        ),  # never got half the gain
        dict(
            run_id="d",
            staleness=8,
            lr=8e-3,
            seed=0,
            collapsed=True,
            final_reward=0.2,
            best_smoothed_reward=0.8,
            warm_reward=0.6,
        ),
        dict(
            run_id="e",
            staleness=8,
            lr=1e-3,
            seed=1,
            collapsed=False,
            final_reward=0.8,
            best_smoothed_reward=0.76,
            warm_reward=0.7,
        ),  # its own warm start is 0.7: bar 0.8
    ]
    marked = mark_failures(_runs(rows), reach_fraction=0.5)
    assert marked["failed"].to_list() == [False, True, True, True, True]
    assert marked["failure"].to_list() == [
        None,
        "below warm start",
        "never reached 0.5 of the gain",
        "collapsed",
        "never reached 0.5 of the gain",
    ]


def test_old_sweeps_without_warm_reward_are_backfilled_from_step_zero() -> None:
    runs = _runs(
        [
            dict(run_id=r, staleness=0, lr=1e-3, seed=0, collapsed=False, final_reward=f)
            for r, f in (("a", 0.9), ("b", 0.5))
        ]
    )
    steps = pl.DataFrame(
        {
            "run_id": ["a"] * 12 + ["b"] * 12,
            "step": list(range(12)) * 2,
            "reward_mean": [0.6] + [0.9] * 11 + [0.62] + [0.5] * 11,
        }
    )
    filled = backfill_from_steps(runs, steps)
    assert filled["warm_reward"].to_list() == pytest.approx([0.61, 0.61])
    # best trailing 10-step mean: a = 0.9 from step 10 on; b = (0.62 + 9 * 0.5) / 10
    assert filled["best_smoothed_reward"].to_list() == pytest.approx([0.9, 0.512])
    assert mark_failures(filled)["failed"].to_list() == [False, True]


def test_drift_kl_does_not_grow_with_staleness_while_behaviour_kl_does() -> None:
    torch.manual_seed(0)
    task = SortTask(SortTaskConfig(n_digits=4, base=6))
    cfg = TrainConfig.model_validate(
        {"task": {"n_digits": 4, "base": 6}, "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16}}
    )
    learner = build_policy(cfg.policy, task, 0)
    step = {k: 0.05 * torch.randn_like(v) for k, v in learner.state_dict().items()}

    def moved(policy, times: float):
        other = build_policy(cfg.policy, task, 0)
        other.load_state_dict({k: v + times * step[k] for k, v in policy.state_dict().items()})
        return other

    generator = torch.Generator().manual_seed(1)
    digits = task.sample_digits(64, generator)
    prompts = task.prompts(digits)
    own = learner.sample(
        prompts,
        task.max_response_len,
        temperature=1.0,
        generator=generator,
        eos_id=task.eos_id,
        pad_id=task.pad_id,
    )
    updated = moved(learner, 1.0)  # one update of fixed size
    behaviour_kls, drifts = [], []
    for staleness in (1, 4, 8):
        # the behaviour policy lags the learner by S updates of the same size
        behaviour = moved(learner, -float(staleness))
        stale = behaviour.sample(
            prompts,
            task.max_response_len,
            temperature=1.0,
            generator=torch.Generator().manual_seed(2),
            eos_id=task.eos_id,
            pad_id=task.pad_id,
        )
        with torch.no_grad():
            logp, _ = sequence_logprobs(learner, task, prompts, stale.tokens, cfg)
        log_ratio = (logp - stale.logp) * stale.mask
        behaviour_kls.append(
            float(((log_ratio.exp() - 1 - log_ratio) * stale.mask).sum() / stale.mask.sum())
        )
        drifts.append(drift_kl(updated, task, cfg, prompts, own))
    assert behaviour_kls[0] < behaviour_kls[1] < behaviour_kls[2]
    assert behaviour_kls[2] > 10 * behaviour_kls[0]
    assert drifts[0] == drifts[1] == drifts[2] > 0
    # the drift rule judges the same update the same way at every S; the old rule did not
    for kl, drift in zip(behaviour_kls, drifts, strict=True):
        detector = CollapseDetector(CollapseConfig(drift_kl_max=2 * drifts[0]))
        assert detector.update(reward=0.5, loss=0.0, grad_norm=1.0, kl=kl, drift_kl=drift) is None
    old = CollapseDetector(CollapseConfig(drift_kl_max=None, kl_max=2 * behaviour_kls[0]))
    assert old.update(reward=0.5, loss=0.0, grad_norm=1.0, kl=behaviour_kls[2]) is not None


def _cells_for_seed_effect(rng: np.random.Generator, seeds: int, truth: float) -> Cells:
    """Objective = 1 - (ln lr - ln eta_s)^2 with each seed's optimum ln eta_s = ln truth +
    N(0, 0.3) (a warm-start effect shared by the seed's runs) plus run noise N(0, 0.02)."""
    lrs = truth * np.exp(np.linspace(-1.5, 1.5, 7))
    optima = np.log(truth) + rng.normal(0, 0.3, seeds)
    values, seeds_col = [], []
    for lr in lrs:
        values.append(1 - (np.log(lr) - optima) ** 2 + rng.normal(0, 0.02, seeds))
        seeds_col.append(np.arange(seeds))
    n = len(lrs)
    return Cells(
        lrs=lrs,
        values=tuple(values),
        failed=tuple(np.zeros(seeds, bool) for _ in range(n)),
        steps=tuple(np.full(seeds, np.inf) for _ in range(n)),
        seeds=tuple(seeds_col),
    )


def test_seed_bootstrap_interval_covers_the_population_optimum() -> None:
    rng = np.random.default_rng(0)
    truth, seeds, datasets, replicates = 1e-3, 10, 60, 80
    covered = 0
    for _ in range(datasets):
        cells = _cells_for_seed_effect(rng, seeds, truth)
        window = 3  # the quadratic's true width: use every LR
        boot = [
            estimate_optimum(cells.for_seeds(rng.choice(seeds, seeds)), window).eta
            for _ in range(replicates)
        ]
        lo, hi = np.percentile(boot, [5, 95])
        covered += lo <= truth <= hi
    coverage = covered / datasets
    # nominal 90%; a percentile bootstrap over 10 seeds covers a little less
    assert 0.75 <= coverage <= 0.99, coverage


def test_seed_draws_keep_a_seed_together_across_learning_rates() -> None:
    cells = _cells_for_seed_effect(np.random.default_rng(3), 4, 1e-3)
    drawn = cells.for_seeds(np.array([2, 2, 0, 0]))
    for seeds in drawn.seeds:
        assert seeds.tolist() == [2, 2, 0, 0]


def test_slopes_read_one_over_s_and_flat() -> None:
    s = np.array([0.0, 2.0, 8.0, 32.0])
    usable = np.ones(4, bool)
    rng = np.random.default_rng(0)
    percentile = Spread("percentile", 0.95)
    inverse = 1e-3 / np.maximum(s, 1.0)
    boot = inverse * np.exp(rng.normal(0, 0.05, (200, 4)))
    late = range_slope(s, inverse, boot, usable, 2.0, 32.0, percentile)
    assert late["slope"] == pytest.approx(-1.0)
    assert late["verdict"] == "one_over_s"
    flat = np.full(4, 1e-3)
    boot_flat = flat * np.exp(rng.normal(0, 0.05, (200, 4)))
    pairs = local_slopes(s, flat, boot_flat, usable, percentile)
    assert [(p["from"], p["to"]) for p in pairs] == [(2.0, 8.0), (8.0, 32.0)]
    assert all(p["verdict"] == "flat" for p in pairs)


def test_verdicts_are_equivalence_tests_against_the_bands() -> None:
    # containing -1 is not enough: the whole interval must lie inside the band
    assert regime_verdict(-1.2, -0.8) == "one_over_s"
    assert regime_verdict(-1.88, 0.25) == "inconclusive"
    assert regime_verdict(-1.5, -0.8) == "falls"
    assert regime_verdict(-0.2, 0.25) == "flat"
    assert regime_verdict(-0.4, 0.1) == "inconclusive"
    assert regime_verdict(-0.6, -0.35) == "falls_slower"
    assert regime_verdict(-2.0, -1.4) == "steeper"
    assert regime_verdict(0.35, 0.9) == "rises"
    assert regime_verdict(-0.5, -0.5) == "degenerate"
    assert ONE_OVER_S_BAND == (-1.3, -0.7) and FLAT_BAND == (-0.3, 0.3)
    assert ratio_verdict(0.85, 1.2) == "flat"
    assert ratio_verdict(0.5, 1.2) == "inconclusive"
    assert ratio_verdict(0.3, 0.7) == "falls"


def test_jackknife_interval_of_a_mean_is_the_t_interval() -> None:
    # for a mean over seeds the leave-one-out standard error is exactly s / sqrt(n)
    values = np.array([1.0, 2.0, 4.5])
    loo = np.array([np.delete(values, i).mean() for i in range(3)])
    lo, hi = Spread("jackknife", 0.95, n_loo=3).interval(values.mean(), loo)
    half = 4.302653 * values.std(ddof=1) / np.sqrt(3)
    assert (lo, hi) == pytest.approx((values.mean() - half, values.mean() + half), rel=1e-5)


def test_horizon_truncation_recomputes_the_metrics_of_the_first_steps() -> None:
    curve = [0.5] * 10 + [1.0] * 10 + [0.0] * 20
    runs = pl.DataFrame(
        [
            dict(
                run_id="a",
                steps=40,
                collapsed=False,
                collapse_step=None,
                target_reward=0.9,
                final_reward=0.0,
                reward_auc=0.375,
                steps_to_target=19.0,
                best_smoothed_reward=1.0,
                staleness_mean=3.0,
            ),
            dict(
                run_id="b",
                steps=40,
                collapsed=True,
                collapse_step=25,
                target_reward=0.9,
                final_reward=0.0,
                reward_auc=0.0,
                steps_to_target=None,
                best_smoothed_reward=1.0,
                staleness_mean=3.0,
            ),
        ]
    )
    steps = pl.DataFrame(
        {
            "run_id": ["a"] * 40 + ["b"] * 26,
            "step": list(range(40)) + list(range(26)),
            "reward_mean": curve + curve[:26],
            "staleness_mean": [float(min(i, 4)) for i in range(40)]
            + [float(min(i, 4)) for i in range(26)],
        }
    )
    short = truncate_runs(runs, steps, 20)
    a, b = short.to_dicts()
    assert a["reward_auc"] == pytest.approx(0.75) and a["final_reward"] == pytest.approx(1.0)
    # trailing 10-step mean at step 17: (2 x 0.5 + 8 x 1) / 10 = 0.9
    assert a["steps_to_target"] == 17.0 and a["steps"] == 20
    assert not b["collapsed"] and b["collapse_step"] is None  # it collapsed after step 20
    assert a["staleness_mean"] == pytest.approx((0 + 1 + 2 + 3 + 4 * 16) / 20)


def _law(**regime) -> Law:
    curve = {"eta0": 1e-3, "s_c": 4.0, "k": 1.0, "alpha": 1.0}
    return Law.model_validate({"eta_opt": curve, "regime": regime or None})


def test_regime_warnings_name_what_lies_outside_the_measured_regime() -> None:
    law = _law(
        prompts_per_step=16,
        samples_per_prompt=8,
        minibatches_per_step=1,
        staleness_range=(0, 32),
        model_params=100_000,
        model="2-layer 64-wide decoder",
    )
    inside = Scenario.model_validate(
        {
            "workload": {"prompts_per_step": 16, "group_size": 8},
            "algorithm": {"max_staleness": 8},
            "model": {"params": 5e5},
        }
    )
    assert law.regime_warnings(inside) == []
    outside = Scenario.model_validate(
        {
            "workload": {"prompts_per_step": 64, "group_size": 16},
            "algorithm": {"max_staleness": 40},
            "model": {"params": 7e9},
        }
    )
    warnings = regime_warnings(outside, law)
    assert len(warnings) == 1
    assert "40 versions" in warnings[0] and "S <= 32" in warnings[0]
    # the distance every scenario has from a small CPU law is stated once, not warned about
    distance = law.regime_distance(outside)
    assert "1,024 samples per step (8x the measured 128)" in distance
    assert "model 7e+09 parameters (70,000x the measured 1e+05)" in distance
    assert "no regime" in _law().regime_warnings(inside)[0]
    assert _law().regime_distance(inside) is None


def test_law_curve_helper_is_the_family() -> None:
    assert float(law_curve(4.0, 1e-3, 4.0, 1.0, 1.0)) == pytest.approx(5e-4)


def test_per_run_seed_gives_each_seed_its_own_warm_start() -> None:
    config = WarmStartConfig(seed=10)
    assert config.for_run(3).seed == 13 and config.for_run(0).seed == 10
    shared = WarmStartConfig(seed=10, per_run_seed=False)
    assert shared.for_run(3).seed == 10
    assert PolicyConfig().n_layer == 2


def _rule_runs(
    lrs: dict[float, list[float]],
    spec: str = "uniform:0-32",
    steps: list[float | None] | None = None,
) -> pl.DataFrame:
    """A rule folder's runs: one row per rate and seed, the reward AUC given per seed."""
    out = []
    for lr, aucs in lrs.items():
        for seed, auc in enumerate(aucs):
            reached = None if steps is None else steps[seed]
            out.append(
                dict(
                    run_id=f"{lr}-{seed}",
                    lr=lr,
                    staleness=32,
                    seed=seed,
                    staleness_kind="distribution",
                    staleness_spec=spec,
                    collapsed=False,
                    final_reward=auc + 0.1,
                    best_smoothed_reward=auc + 0.12,
                    warm_reward=0.6,
                    reward_auc=auc,
                    steps_to_target=reached,
                    target_reward=0.85,
                    steps=100,
                )
            )
    return pl.DataFrame(out)


def test_scheduler_evaluation_compares_the_law_with_every_rate_paired_by_seed(tmp_path) -> None:
    from stalesim.validate.law.scheduler_eval import evaluate_rules

    law = [0.80, 0.82, 0.78, 0.81]
    tables = {
        # 5e-4 is the law's equal (+-0.002 per seed), 1e-3 is 0.05 behind on every seed
        "constant": _rule_runs(
            {
                5e-4: [v + d for v, d in zip(law, [0.002, -0.002, 0.001, -0.001], strict=True)],
                1e-3: [v - 0.05 for v in law],
            },
            steps=[60.0, 70.0, None, 80.0],
        ),
        "eta0": _rule_runs(
            {7e-4: [v - 0.03 + d for v, d in zip(law, [0.01, -0.01, 0.0, 0.0], strict=True)]}
        ),
        "law": _rule_runs({7e-4: law}, steps=[55.0, 65.0, 60.0, None]),
    }
    for rule, table in tables.items():
        (tmp_path / rule).mkdir()
        table.write_parquet(tmp_path / rule / "runs.parquet")
    summary = evaluate_rules(tmp_path, best_reward=0.95)
    rows = {r["rule"]: r for r in summary["rows"]}
    assert rows["constant"]["best_lr"] == 5e-4 and rows["constant"]["lrs_tried"] == [5e-4, 1e-3]
    # the median counts a seed that never reached the target as never: (60, 70, 80, inf) -> 75
    assert rows["constant"]["steps_to_target"]["0.85"] == {"median": 75.0, "reached": 3}
    assert rows["law"]["steps_to_target"]["0.85"] == {"median": 62.5, "reached": 3}
    pairs = {(c["rule"], c["lr"], c["score"]): c for c in summary["comparisons"]}
    equal = pairs[("constant", 5e-4, "reward_auc")]
    assert equal["difference"] == pytest.approx(0.0, abs=1e-12)
    # Student t, 3 degrees of freedom, on the differences (-0.002, 0.002, -0.001, 0.001)
    half = 3.182446 * np.std([-0.002, 0.002, -0.001, 0.001], ddof=1) / 2
    assert equal["hi"] == pytest.approx(half, rel=1e-5) and equal["lo"] == pytest.approx(-half)
    assert pairs[("constant", 1e-3, "reward_auc")]["difference"] == pytest.approx(0.05)
    verdicts = {v["rule"]: v for v in summary["verdicts"]}
    # within 0.01 of the equal rate and far ahead of the other: not behind any rate
    assert verdicts["constant"]["verdict"] == "not behind"
    assert verdicts["eta0"]["verdict"] == "ahead"


def test_scheduler_verdicts_need_every_rate_and_every_score() -> None:
    from stalesim.validate.law.scheduler_eval import agreed_verdict, rule_verdict

    ahead, equal = np.array([0.05, 0.06, 0.04, 0.05]), np.array([0.001, -0.001, 0.0, 0.0005])
    behind, noisy = -ahead, np.array([0.05, -0.05, 0.04, -0.03])
    assert rule_verdict({1.0: ahead}) == "ahead"
    assert rule_verdict({1.0: ahead, 2.0: equal}) == "not behind"
    assert rule_verdict({1.0: ahead, 2.0: behind}) == "behind"
    assert rule_verdict({1.0: equal, 2.0: noisy}) == "inconclusive"
    assert agreed_verdict(["ahead", "not behind", "ahead"]) == "not behind"
    assert agreed_verdict(["ahead", "inconclusive"]) == "scores disagree"


def test_scheduler_intervals_cover_at_their_stated_level_on_synthetic_sweeps() -> None:
    """The per-rate paired t interval covers the known difference 95% of the time with 6 seeds
    and a shared per-seed warm-start effect; and "not behind" is claimed at most 5% of the
    time where the law's rule is really 0.01 (the band) behind the best of five rates."""
    from stalesim.validate.law.scheduler_eval import BAND, paired_interval, rule_verdict

    rng = np.random.default_rng(7)
    means = np.array([0.74, 0.76, 0.76 + BAND, 0.75, 0.70])
    law_mean, reps, n, hits, wrong = 0.76, 2000, 6, 0, 0
    for _ in range(reps):
        seed_effect = rng.normal(0.0, 0.03, n)
        law = law_mean + seed_effect + rng.normal(0.0, 0.01, n)
        rates = means[:, None] + seed_effect + rng.normal(0.0, 0.01, (len(means), n))
        differences = {float(i): law - rates[i] for i in range(len(means))}
        _, lo, hi = paired_interval(differences[1.0])
        hits += lo <= law_mean - means[1] <= hi
        wrong += rule_verdict(differences) in ("not behind", "ahead")
    assert 0.935 <= hits / reps <= 0.965
    assert wrong / reps <= 0.05
