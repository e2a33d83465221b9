"""The staleness-aware scheduler sets the law's learning rate for the batch's staleness, and the
optimizer option changes the update the way each optimizer's rule says."""

from __future__ import annotations

import math

import pytest
import torch
from stalesim.sim.law.model import Law
from stalesim.validate.train.optimizers import OptimizerConfig, build_optimizer
from stalesim.validate.train.presets import RunConfig, TrainConfig
from stalesim.validate.train.staleness_lr import LRRuleConfig, StalenessLR, summarise_lags
from stalesim.validate.train.trainer import train_run

CURVE = {"eta0": 1e-3, "s_c": 4.0, "k": 1.0, "alpha": 1.0}  # eta(S) = 1e-3 / (1 + S/4)


def _optimizer(lr: float = 2e-3) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=lr)


def test_scheduler_sets_the_law_learning_rate_for_the_batch_staleness() -> None:
    law = Law.model_validate({"eta_opt": CURVE, "staleness_summary": "mean"})
    optimizer = _optimizer(2e-3)
    scheduler = StalenessLR(optimizer, law)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)  # S = 0 until told
    scheduler.step(staleness=[4, 4, 4])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # 2e-3 * eta(4)/eta(0)
    scheduler.step(staleness=[0, 8])  # mean 4
    assert scheduler.get_last_lr() == pytest.approx([1e-3])
    scheduler.step(staleness=12)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 / 4)


def test_scheduler_summaries_absolute_mode_and_warmup() -> None:
    optimizer = _optimizer(2e-3)
    by_max = StalenessLR(optimizer, Law.model_validate({"eta_opt": CURVE}).eta_opt, summary="max")
    by_max.step(staleness=[0, 8])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 / 3)
    token = StalenessLR(_optimizer(2e-3), lambda s: 1e-3 / (1 + s / 4), summary="token_mean")
    token.step(staleness=[0, 12], tokens=[3, 1])  # token-weighted lag 3
    assert token.get_last_lr() == pytest.approx([2e-3 / 1.75])
    absolute = StalenessLR(_optimizer(5.0), lambda s: 1e-3 / (1 + s / 4), absolute=True)
    absolute.step(staleness=[4])
    assert absolute.get_last_lr() == pytest.approx([5e-4])
    warm = StalenessLR(_optimizer(2e-3), lambda s: 1e-3, warmup_steps=4)
    assert warm.get_last_lr() == pytest.approx([5e-4])
    warm.step(staleness=[1])
    assert warm.get_last_lr() == pytest.approx([5e-4])  # the first update: 1/4
    warm.step(staleness=[1])
    assert warm.get_last_lr() == pytest.approx([1e-3])


def test_scheduler_drives_the_optimizer_update() -> None:
    weight = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = StalenessLR(optimizer, lambda s: 1.0 / (1 + s))
    weight.grad = torch.tensor([1.0, -2.0])
    scheduler.step(staleness=[3])  # lr 0.1 / 4
    optimizer.step()
    assert weight.detach().tolist() == pytest.approx([1 - 0.025, 1 + 0.05])


def test_lag_summaries_and_bad_input() -> None:
    assert summarise_lags([1, 2, 3, 10], summary="max") == 10
    assert summarise_lags(torch.tensor([1, 3]), [1, 3], "token_mean") == pytest.approx(2.5)
    with pytest.raises(ValueError, match="empty"):
        summarise_lags([])
    with pytest.raises(ValueError, match=">= 0"):
        summarise_lags([-1])
    with pytest.raises(ValueError, match="needs eta0, s_c, k, alpha"):
        LRRuleConfig(kind="law")


def _grads(optimizer_config: OptimizerConfig, lr: float, grads: list[list[float]]) -> list:
    weight = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer = build_optimizer([weight], optimizer_config, lr, weight_decay=0.0)
    trail = []
    for g in grads:
        weight.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        trail.append(weight.detach().clone().tolist())
    return trail


def test_optimizer_option_changes_the_update_as_each_rule_says() -> None:
    g1, g2 = [1.0, -4.0], [3.0, 2.0]
    sgd = _grads(OptimizerConfig(name="sgd"), 0.1, [g1, g2])
    assert sgd[0] == pytest.approx([-0.1, 0.4])
    assert sgd[1] == pytest.approx([-0.1 - 0.3, 0.4 - 0.2])
    heavy = _grads(OptimizerConfig(name="sgd", momentum=0.9), 0.1, [g1, g2])
    # buffer = 0.9 g1 + g2 on the second step
    assert heavy[1] == pytest.approx([-0.1 - 0.1 * (0.9 + 3.0), 0.4 - 0.1 * (-3.6 + 2.0)])
    lr, b2 = 0.01, 0.999
    for beta1 in (0.0, 0.9):
        adam = _grads(OptimizerConfig(name="adamw", beta1=beta1, eps=1e-12), lr, [g1, g2])
        assert adam[0] == pytest.approx([-lr, lr])  # the first step is lr * sign(g)
        for i in range(2):
            m = (1 - beta1) * (beta1 * g1[i] + g2[i]) if beta1 else g2[i]
            m_hat = m / (1 - beta1**2) if beta1 else m
            v_hat = (b2 * (1 - b2) * g1[i] ** 2 + (1 - b2) * g2[i] ** 2) / (1 - b2**2)
            assert adam[1][i] == pytest.approx(adam[0][i] - lr * m_hat / math.sqrt(v_hat))
    assert OptimizerConfig(name="sgd", momentum=0.9).label == "sgd(m=0.9)"


def test_trainer_follows_the_law_rule_at_the_realised_lag(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STALESIM_CACHE_DIR", str(tmp_path))
    torch.set_num_threads(1)
    train = TrainConfig.model_validate(
        {
            "task": {"n_digits": 4, "base": 6},
            "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
            "warm_start": {"steps": 10, "batch_size": 32},
            "steps": 6,
            "prompts_per_step": 4,
            "samples_per_prompt": 4,
            "warmup_steps": 1,
            "eval_prompts": 8,
            "lr_rule": {"kind": "law", **CURVE},
        }
    )
    result = train_run(RunConfig(preset="t", train=train, lr=2e-3, staleness="3", seed=0))
    # lag min(step, 3): lr = 2e-3 / (1 + lag / 4)
    expected = [2e-3 / (1 + min(t, 3) / 4) for t in range(6)]
    assert [row["lr"] for row in result.steps] == pytest.approx(expected)
    assert result.run["lr_rule"] == "law"
    assert 0 <= result.run["warm_reward"] <= 1
