"""GRPOOptions: one frozen object that the reference, the checks and the Triton wrapper take."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from stalesim.kernels.loss import grpo_loss
from stalesim.kernels.options import GRPOOptions, option_names, resolve_options
from stalesim.kernels.reference import grpo_loss_ref


def inputs() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(3)
    logp = -torch.rand(4, 11, generator=gen, dtype=torch.float64)
    behaviour = logp + 0.4 * torch.randn(4, 11, generator=gen, dtype=torch.float64)
    ref = logp + 0.2 * torch.randn(4, 11, generator=gen, dtype=torch.float64)
    advantages = torch.randn(4, generator=gen, dtype=torch.float64)
    mask = torch.rand(4, 11, generator=gen) < 0.8
    return logp, behaviour, advantages, mask, ref


def test_object_and_keywords_give_the_same_loss() -> None:
    logp, behaviour, advantages, mask, ref = inputs()
    opts = GRPOOptions(eps_high=0.28, ratio_level="sequence", beta=0.05, kl_estimator="k2")
    by_object, stats_a = grpo_loss_ref(
        logp, behaviour, advantages, mask, ref_logp=ref, options=opts
    )
    by_keywords, stats_b = grpo_loss_ref(
        logp, behaviour, advantages, mask, ref_logp=ref,
        eps_high=0.28, ratio_level="sequence", beta=0.05, kl_estimator="k2",
    )  # fmt: skip
    assert float(by_object) == float(by_keywords)
    assert {k: float(v) for k, v in stats_a.items()} == {k: float(v) for k, v in stats_b.items()}
    # A keyword overrides the object's field.
    plain, _ = grpo_loss_ref(logp, behaviour, advantages, mask, eps_high=0.2)
    overridden, _ = grpo_loss_ref(
        logp, behaviour, advantages, mask, options=GRPOOptions(eps_high=0.9), eps_high=0.2
    )
    assert float(plain) == float(overridden)
    # The Triton path takes the same object.
    triton_loss, _ = grpo_loss(
        logp.float(), behaviour.float(), advantages.float(), mask, ref_logp=ref.float(),
        options=opts, backend="triton",
    )  # fmt: skip
    assert float(triton_loss) == pytest.approx(float(by_object), rel=1e-5)


def test_options_are_frozen_checked_and_normalised() -> None:
    opts = GRPOOptions(eps_low=0, is_cap=2)
    assert isinstance(opts.eps_low, float) and opts.is_cap == 2.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.eps_low = 0.3  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"eps_low=1.5: must be <= 1.0"):
        GRPOOptions(eps_low=1.5)
    with pytest.raises(ValueError, match=r"kl_estimator='k4': expected one of 'k1', 'k2', 'k3'"):
        GRPOOptions(kl_estimator="k4")
    with pytest.raises(ValueError, match="max_tokens=5: only used by aggregation='constant'"):
        GRPOOptions(max_tokens=5)
    with pytest.raises(ValueError, match="eps_hihg: not a GRPO option"):
        resolve_options(None, {"eps_hihg": 0.3})
    with pytest.raises(ValueError, match="options: expected a GRPOOptions, got dict"):
        resolve_options({"eps_low": 0.1}, {})  # type: ignore[arg-type]
    assert option_names() == (
        "eps_low", "eps_high", "is_cap", "ratio_level", "kl_estimator", "beta", "aggregation",
        "max_tokens",
    )  # fmt: skip
