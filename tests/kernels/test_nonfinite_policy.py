"""Non-finite inputs: the Triton kernels (under the interpreter) and the reference agree on
which outputs become NaN or -inf, as the entry points' docstrings state; out-of-range targets
are refused on the host for CPU tensors and marked NaN on the device without a host sync."""

from __future__ import annotations

import pytest
import torch
from stalesim.kernels import checks
from stalesim.kernels.backend import load_triton_module
from stalesim.kernels.fused_linear import fused_linear_logprobs
from stalesim.kernels.logprobs import token_logprobs
from stalesim.kernels.loss import grpo_loss

N, V, H = 7, 150, 24


def both(fn, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    return fn(*args, **kwargs, backend="triton"), fn(*args, **kwargs, backend="reference")


def same_pattern(got: torch.Tensor, want: torch.Tensor) -> None:
    """Same NaN positions, same infinities, and the finite values agree."""
    got, want = got.detach().double(), want.detach().double()
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.isinf(), want.isinf())
    assert torch.equal(got[got.isinf()], want[want.isinf()])
    finite = got.isfinite()
    assert torch.allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


def test_token_logprobs_nan_and_inf_rows() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(N, V, generator=gen)
    targets = torch.randint(1, V, (N,), generator=gen)
    logits[1, 70] = float("nan")  # NaN anywhere in a row: NaN
    logits[2, 3] = float("inf")  # +inf anywhere in a row: NaN
    logits[3] = float("-inf")  # a row with no finite logit: NaN
    logits[4, targets[4]] = float("-inf")  # a -inf target: -inf, the rest exact
    logits[5, ::2] = float("-inf")  # -inf elsewhere: probability 0
    targets[5] = 1
    for leaf_grad in (True,):
        a = logits.clone().requires_grad_(leaf_grad)
        b = logits.clone().requires_grad_(leaf_grad)
        got = token_logprobs(a, targets, backend="triton")
        want = token_logprobs(b, targets, backend="reference")
        same_pattern(got, want)
        assert got[[1, 2, 3]].isnan().all() and got[4] == float("-inf")
        assert got[[0, 5, 6]].isfinite().all()
        got_h = token_logprobs(a, targets, backend="triton", return_entropy=True)[1]
        want_h = token_logprobs(b, targets, backend="reference", return_entropy=True)[1]
        same_pattern(got_h, want_h)
        rows = [0, 1, 2, 5, 6]  # the -inf rows' gradients are undefined in both
        got[rows].sum().backward()
        want[rows].sum().backward()
        same_pattern(a.grad[rows], b.grad[rows])


def test_fused_linear_nan_rows() -> None:
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(N, H, generator=gen)
    weight = torch.randn(V, H, generator=gen) / H**0.5
    bias = torch.randn(V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen)
    hidden[2, 5] = float("nan")
    hidden[4, 0] = float("inf")
    bias[::5] = float("-inf")
    targets = torch.where(targets % 5 == 0, targets + 1, targets)
    got, want = both(fused_linear_logprobs, hidden, weight, targets, bias=bias)
    same_pattern(got, want)
    assert got[2].isnan() and got[4].isnan()
    assert got[[0, 1, 3, 5, 6]].isfinite().all()


def test_grpo_loss_nan_propagates_and_padding_is_ignored() -> None:
    gen = torch.Generator().manual_seed(2)
    logp = -torch.rand(3, 9, generator=gen)
    behaviour = logp + 0.1 * torch.randn(3, 9, generator=gen)
    advantages = torch.randn(3, generator=gen)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    padded = logp.clone()
    padded[1, 7] = float("nan")  # padding may hold anything
    got, want = both(grpo_loss, padded, behaviour, advantages, mask)
    assert got[0].isfinite() and want[0].isfinite()
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5)
    broken = logp.clone()
    broken[0, 2] = float("nan")  # a NaN in a real token: a NaN loss on both paths
    got, want = both(grpo_loss, broken, behaviour, advantages, mask)
    assert got[0].isnan() and want[0].isnan()


def test_out_of_range_targets() -> None:
    logits = torch.randn(3, 40)
    bad = torch.tensor([0, 40, 2])
    for backend in ("triton", "reference"):  # CPU tensors are always checked on the host
        with pytest.raises(ValueError, match="targets: value 40 is outside"):
            token_logprobs(logits, bad, backend=backend)
    # The kernel itself (what runs on CUDA without the check) marks the row NaN, reading no
    # memory outside the row.
    kernels = load_triton_module("_logprob_triton")
    logp, lse = torch.empty(3), torch.empty(3)
    kernels.logprob_forward(logits, torch.tensor([0, 40, -1]), 1.0, logp, lse)
    assert logp[0].isfinite() and logp[1:].isnan().all()
    fused = load_triton_module("_fused_triton")
    hidden, weight = torch.randn(3, 16), torch.randn(40, 16)
    fused.fused_forward(hidden, weight, None, torch.tensor([5, 40, -3]), 1.0, logp, lse)
    assert logp[0].isfinite() and logp[1:].isnan().all()


def test_value_checks_run_on_cuda_only_in_debug_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(checks.DEBUG_CHECKS_ENV, raising=False)
    assert checks.value_checks_enabled(torch.device("cpu"))
    assert not checks.value_checks_enabled(torch.device("cuda"))
    monkeypatch.setenv(checks.DEBUG_CHECKS_ENV, "1")
    assert checks.value_checks_enabled(torch.device("cuda"))
