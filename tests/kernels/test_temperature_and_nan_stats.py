"""The smallest temperature the log-prob ops accept, and NaN in the GRPO loss's statistics:
the Triton kernels (under the interpreter without a GPU) and the reference, which is the
specification, behave the same."""

from __future__ import annotations

import pytest
import torch
from stalesim.kernels.checks import MIN_TEMPERATURE
from stalesim.kernels.fused_linear import fused_linear_logprobs
from stalesim.kernels.logprobs import token_logprobs
from stalesim.kernels.loss import grpo_loss

N, V, H = 5, 64, 16
BACKENDS = ("triton", "reference")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("temperature", [1e-45, 1e-30, MIN_TEMPERATURE / 2])
def test_a_temperature_below_the_floor_is_refused_in_one_line(
    backend: str, temperature: float
) -> None:
    logits = torch.randn(N, V)
    targets = torch.randint(0, V, (N,))
    with pytest.raises(ValueError, match=r"^temperature=.*below the smallest supported"):
        token_logprobs(logits, targets, temperature=temperature, backend=backend)
    hidden, weight = torch.randn(N, H), torch.randn(V, H)
    with pytest.raises(ValueError, match=r"^temperature=.*below the smallest supported"):
        fused_linear_logprobs(hidden, weight, targets, temperature=temperature, backend=backend)


def test_at_the_floor_both_backends_give_finite_equal_log_probs() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = 3 * torch.randn(N, V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen)
    got = token_logprobs(logits, targets, temperature=MIN_TEMPERATURE, backend="triton")
    want = token_logprobs(logits, targets, temperature=MIN_TEMPERATURE, backend="reference")
    assert got.isfinite().all() and want.isfinite().all()
    # analytic: log-softmax(z / T) at the target, in float64
    exact = torch.log_softmax(logits.double() / MIN_TEMPERATURE, -1).gather(1, targets[:, None])
    scale = float(logits.abs().max()) / MIN_TEMPERATURE
    tolerance = 8 * scale * torch.finfo(torch.float32).eps  # float32 spacing at z/T
    for value in (got, want):
        assert torch.allclose(value.double(), exact[:, 0], atol=tolerance, rtol=0)
    assert tolerance < 0.02  # logits of about ten keep their log-probs to a hundredth


def _loss_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    logp = -torch.rand(3, 9, generator=gen)
    behaviour = logp + 0.1 * torch.randn(3, 9, generator=gen)
    advantages = torch.randn(3, generator=gen)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    return logp, behaviour, advantages, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_nan_log_prob_makes_ratio_max_nan_on_both_backends(seed: int) -> None:
    logp, behaviour, advantages, mask = _loss_inputs(seed)
    logp[seed % 3 if seed % 3 != 1 else 0, 2] = float("nan")
    stats = {b: grpo_loss(logp, behaviour, advantages, mask, backend=b)[1] for b in BACKENDS}
    assert stats["reference"]["ratio_max"].isnan()
    for name, want in stats["reference"].items():
        got = stats["triton"][name]
        assert bool(got.isnan()) == bool(want.isnan()), name
        if not want.isnan():
            assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-6), name


def test_nan_in_padding_leaves_ratio_max_finite_and_equal() -> None:
    logp, behaviour, advantages, mask = _loss_inputs(3)
    logp[1, 7] = float("nan")  # masked out
    triton = grpo_loss(logp, behaviour, advantages, mask, backend="triton")[1]["ratio_max"]
    reference = grpo_loss(logp, behaviour, advantages, mask, backend="reference")[1]["ratio_max"]
    assert triton.isfinite() and float(triton) == pytest.approx(float(reference), rel=1e-6)
    ratio = torch.exp(logp - behaviour)[mask]
    assert float(reference) == pytest.approx(float(ratio.max()), rel=1e-6)
