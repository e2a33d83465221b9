"""The vocabulary-split log-prob forward (few rows: several programs per row, their partial
log-sum-exps combined) against the float64 reference, under the interpreter on CPU."""

from __future__ import annotations

import pytest
import torch
from stalesim.kernels import _buffers
from stalesim.kernels.backend import load_triton_module
from stalesim.kernels.logprobs import token_logprobs
from stalesim.kernels.reference import token_logprobs_ref

# 389 columns are 6 full 64-wide interpreter tiles and a partial one.
N, V = 5, 389


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_buffers, "POISON_VALUE", float("nan"))


def kernels():
    return load_triton_module("_logprob_triton")


def run_forward(logits, targets, temperature, splits, keep=None, with_entropy=True):
    n = logits.shape[0]
    logp, lse = torch.full((n,), float("nan")), torch.full((n,), float("nan"))
    entropy = torch.full((n,), float("nan")) if with_entropy else None
    keep_bytes = keep.to(torch.uint8) if keep is not None else None
    kernels().logprob_forward(logits, targets, temperature, logp, lse, entropy, keep_bytes, splits)
    return logp, lse, entropy


@pytest.mark.parametrize("splits", [1, 2, 3, 7, 50])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_split_count_matches_the_reference(splits: int, dtype: torch.dtype) -> None:
    """1 is the one-program path; 7 splits are one tile each; 50 asks for more splits than
    there are tiles (7 are used)."""
    gen = torch.Generator().manual_seed(splits)
    logits = (4 * torch.randn(N, V, generator=gen)).to(dtype)
    targets = torch.randint(0, V, (N,), generator=gen)
    logp, lse, entropy = run_forward(logits, targets, 0.7, splits)
    want, want_entropy = token_logprobs_ref(
        logits.double(), targets, temperature=0.7, return_entropy=True
    )
    want_lse = torch.logsumexp(logits.double() / 0.7, dim=-1)
    assert torch.allclose(logp.double(), want, rtol=1e-6, atol=1e-5)
    assert torch.allclose(lse.double(), want_lse, rtol=1e-6, atol=1e-5)
    assert torch.allclose(entropy.double(), want_entropy, rtol=1e-5, atol=1e-5)


def test_skipped_rows_infinities_nan_and_bad_targets() -> None:
    """Split 0 of row 0 sees only -inf logits; row 1 is skipped (NaN logits, any target);
    row 2 holds a NaN; row 3's target is outside the vocabulary; row 4 holds +inf."""
    gen = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(N, V, generator=gen)
    targets = torch.randint(200, V, (N,), generator=gen)
    logits[0, :128] = float("-inf")
    logits[1] = float("nan")
    targets[1] = -7
    logits[2, 300] = float("nan")
    targets[3] = V + 4
    logits[4, 10] = float("inf")
    keep = torch.tensor([True, False, True, True, True])
    logp, lse, entropy = run_forward(logits, targets, 1.0, 3, keep=keep)
    one_logp, one_lse, one_entropy = run_forward(logits, targets, 1.0, 1, keep=keep)
    # The split path gives exactly the one-program path's NaN pattern.
    for got, want in ((logp, one_logp), (lse, one_lse), (entropy, one_entropy)):
        assert torch.equal(torch.isnan(got), torch.isnan(want))
    want, want_entropy = token_logprobs_ref(logits[:1].double(), targets[:1], return_entropy=True)
    assert logp[0].item() == pytest.approx(want.item(), abs=1e-5)
    assert entropy[0].item() == pytest.approx(want_entropy.item(), abs=1e-5)
    assert logp[1].item() == 0.0 and lse[1].item() == 0.0 and entropy[1].item() == 0.0
    assert torch.isnan(logp[2]) and torch.isnan(logp[3]) and torch.isnan(logp[4])
    assert torch.isfinite(lse[3])


def test_few_rows_take_the_split_path_through_autograd() -> None:
    """Off CUDA one SM is assumed: 5 rows split (fewer than PROGRAMS_PER_SM), and the public
    op's values and gradients match the reference."""
    k = kernels()
    assert k.forward_splits(N, V, 64, 1) == 2
    assert k.forward_splits(k.PROGRAMS_PER_SM, V, 64, 1) == 1
    gen = torch.Generator().manual_seed(4)
    logits = (4 * torch.randn(N, V, generator=gen)).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=gen)
    upstream = torch.randn(N, generator=gen)
    logp, entropy = token_logprobs(logits, targets, backend="triton", return_entropy=True)
    (logp * upstream).sum().add(entropy.sum()).backward()
    exact = logits.detach().double().requires_grad_()
    want, want_entropy = token_logprobs_ref(exact, targets, return_entropy=True)
    (want * upstream.double()).sum().add(want_entropy.sum()).backward()
    assert torch.allclose(logp.double(), want.detach(), atol=1e-5)
    assert torch.allclose(entropy.double(), want_entropy.detach(), atol=1e-5)
    assert torch.allclose(logits.grad.double(), exact.grad, atol=1e-5)


def test_split_choice_fills_the_gpu() -> None:
    """By hand for V=151,936 in 2,048-wide tiles (75 tiles) on 132 SMs: up to 8 x 132 = 1,056
    programs, in one wave."""
    k = kernels()
    assert k.forward_splits(256, 151_936, 2048, 132) == 4  # 1,024 programs
    assert k.forward_splits(600, 151_936, 2048, 132) == 2  # at least 2 below 1,056 rows
    assert k.forward_splits(1, 151_936, 2048, 132) == 75  # one per tile at most
    assert k.forward_splits(8192, 151_936, 2048, 132) == 1
    assert k.forward_splits(1056, 151_936, 2048, 132) == 1
    assert k.forward_splits(3, 100, 64, 132) == 2  # a 2-tile vocabulary
