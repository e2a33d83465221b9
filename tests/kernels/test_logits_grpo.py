"""Row skipping and the in-place gradient of token_logprobs, and the logits -> GRPO loss path,
under the Triton interpreter in float32 against the float64 reference."""

from __future__ import annotations

import pytest
import torch
from stalesim.kernels import _buffers
from stalesim.kernels.logits_loss import logits_grpo_loss
from stalesim.kernels.logprobs import token_logprobs
from stalesim.kernels.reference import grpo_loss_ref, token_logprobs_ref

N, V = 9, 150  # three 64-wide interpreter tiles, the last one partial


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """New buffers start as NaN: a skipped row the kernels forgot to write shows up."""
    monkeypatch.setattr(_buffers, "POISON_VALUE", float("nan"))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().double() - want.detach()).norm() / want.detach().norm())


def test_skipped_rows_cost_nothing_and_get_exact_zero_gradient() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(N, V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen)
    keep = torch.zeros(N, dtype=torch.bool)
    keep[[1, 6]] = True  # most rows masked
    # What a skipped row holds must not matter: NaN logits and an out-of-range target.
    logits[~keep] = float("nan")
    targets[~keep] = -100
    upstream = torch.randn(N, generator=gen)
    upstream[0] = float("nan")  # a skipped row's upstream gradient is not read either

    live = logits.clone().requires_grad_()
    logp, entropy = token_logprobs(
        live, targets, 0.7, backend="triton", mask=keep, return_entropy=True
    )
    torch.autograd.backward((logp, entropy), (upstream, torch.ones(N)))

    exact = logits[keep].double().requires_grad_()
    want_logp, want_entropy = token_logprobs_ref(
        exact, targets[keep], temperature=0.7, return_entropy=True
    )
    torch.autograd.backward((want_logp, want_entropy), (upstream[keep].double(), torch.ones(2)))

    assert relative_error(logp[keep], want_logp) < 1e-6
    assert relative_error(entropy[keep], want_entropy) < 1e-6
    assert relative_error(live.grad[keep], exact.grad) < 1e-5
    assert torch.equal(logp[~keep], torch.zeros(N - 2))
    assert torch.equal(entropy[~keep], torch.zeros(N - 2))
    assert torch.equal(live.grad[~keep], torch.zeros(N - 2, V))


def test_mask_all_ones_changes_nothing() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(N, V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen)
    plain = token_logprobs(logits, targets, backend="triton")
    masked = token_logprobs(
        logits, targets, backend="triton", mask=torch.ones(N, dtype=torch.int32)
    )
    assert torch.equal(plain, masked)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.ones(N - 1, dtype=torch.bool), r"mask: .*\[N\]"),
        (torch.ones(N), "mask: .*float32"),
    ],
)
def test_bad_mask_is_refused(mask: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        token_logprobs(torch.zeros(N, V), torch.zeros(N, dtype=torch.long), mask=mask)


def test_inplace_gradient_equals_out_of_place_and_reuses_the_logits() -> None:
    gen = torch.Generator().manual_seed(5)
    base = 2 * torch.randn(N, V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen)
    upstream = torch.randn(N, generator=gen)
    keep = torch.arange(N) % 3 != 0

    grads = {}
    for inplace in (False, True):
        leaf = base.clone().requires_grad_()
        logits = leaf * 1.0  # a non-leaf, as a model's output is
        seen: list[torch.Tensor] = []
        logits.register_hook(seen.append)  # the gradient exactly as the backward returns it
        token_logprobs(
            logits, targets, 1.3, backend="triton", mask=keep, inplace_grad=inplace
        ).backward(upstream)
        grads[inplace] = seen[0]
        if inplace:
            assert seen[0].data_ptr() == logits.data_ptr()
        else:
            assert seen[0].data_ptr() != logits.data_ptr()
            assert torch.equal(logits.detach(), base)  # the logits are left as they were
        assert torch.equal(leaf.grad, seen[0])  # and the gradient reaches the model
    assert torch.equal(grads[True], grads[False])


def test_inplace_gradient_refuses_a_second_backward() -> None:
    logits = torch.randn(3, V).requires_grad_()
    logp = token_logprobs(
        logits * 1.0, torch.tensor([0, 5, 7]), backend="triton", inplace_grad=True
    )
    logp.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        logp.sum().backward()


def test_logits_grpo_loss_matches_reference_with_most_rows_masked() -> None:
    gen = torch.Generator().manual_seed(6)
    rows, length, vocab = 3, 7, 70
    logits = 2 * torch.randn(rows, length + 1, vocab, generator=gen)  # one unused position
    targets = torch.randint(0, vocab, (rows, length), generator=gen)
    mask = torch.rand(rows, length, generator=gen) < 0.25
    mask[0, 0] = True
    mask[2] = False  # a fully masked row
    targets[~mask] = 10**6  # padding ids the kernels must never read
    behaviour = -torch.rand(rows, length, generator=gen) * 3
    advantages = torch.randn(rows, generator=gen)
    options = {"eps_low": 0.2, "eps_high": 0.28, "aggregation": "seq_mean_token_mean"}

    live = logits.clone().requires_grad_()
    loss, stats = logits_grpo_loss(
        live, targets, behaviour, advantages, mask, temperature=0.9, backend="triton", **options
    )
    loss.backward()

    exact = logits.double().requires_grad_()
    safe_targets = torch.where(mask, targets, 0)
    logp = token_logprobs_ref(
        exact[:, :length].reshape(-1, vocab), safe_targets.reshape(-1), temperature=0.9
    ).view(rows, length)
    want, want_stats = grpo_loss_ref(logp, behaviour.double(), advantages.double(), mask, **options)
    want.backward()

    assert abs(loss.item() - want.item()) <= 1e-6 * max(abs(want.item()), 1e-3)
    assert abs(stats["ratio_mean"].item() - want_stats["ratio_mean"].item()) < 1e-6
    assert relative_error(live.grad, exact.grad) < 1e-5
    used = torch.nn.functional.pad(mask, (0, 1))
    assert torch.equal(live.grad[~used], torch.zeros(int((~used).sum()), vocab))


def _grpo_batch(seed: int, rows: int = 3, length: int = 6, vocab: int = 70):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(rows, length + 1, vocab, generator=gen)
    targets = torch.randint(0, vocab, (rows, length), generator=gen)
    mask = torch.rand(rows, length, generator=gen) < 0.3
    mask[0, :2] = True
    mask[1] = False
    logp = torch.log_softmax(logits[:, :length] / 0.9, -1).gather(-1, targets[..., None])[..., 0]
    # behaviour near the current policy, with some ratios outside the clip range
    behaviour = logp + 0.3 * torch.randn(rows, length, generator=gen)
    return logits, targets, behaviour, torch.randn(rows, generator=gen), mask


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "constant"])
def test_one_pass_matches_reference_and_two_pass(aggregation: str) -> None:
    logits, targets, behaviour, advantages, mask = _grpo_batch(7)
    options = {"eps_low": 0.2, "eps_high": 0.28, "aggregation": aggregation}
    grads, losses = {}, {}
    for one_pass in (True, False):
        live = logits.clone().requires_grad_()
        loss, _ = logits_grpo_loss(
            live, targets, behaviour, advantages, mask, temperature=0.9, backend="triton",
            one_pass=one_pass, **options,
        )  # fmt: skip
        loss.backward()
        grads[one_pass], losses[one_pass] = live.grad, loss

    exact = logits.double().requires_grad_()
    want, _ = logits_grpo_loss(
        exact, targets, behaviour.double(), advantages.double(), mask, temperature=0.9,
        backend="reference", **options,
    )  # fmt: skip
    want.backward()
    assert abs(losses[True].item() - want.item()) <= 1e-6 * max(abs(want.item()), 1e-3)
    assert relative_error(grads[True], exact.grad) < 1e-5
    assert torch.allclose(grads[True], grads[False], rtol=1e-5, atol=1e-8)
    assert losses[True].item() == pytest.approx(losses[False].item(), rel=1e-6)
    used = torch.nn.functional.pad(mask, (0, 1))
    assert torch.equal(grads[True][~used], torch.zeros(int((~used).sum()), logits.shape[-1]))


def test_one_pass_scales_by_the_upstream_gradient_and_can_work_in_place() -> None:
    logits, targets, behaviour, advantages, mask = _grpo_batch(8)
    args = (targets, behaviour, advantages, mask)

    plain = logits.clone().requires_grad_()
    logits_grpo_loss(plain, *args, backend="triton", one_pass=True)[0].backward()
    scaled = logits.clone().requires_grad_()
    (2.5 * logits_grpo_loss(scaled, *args, backend="triton", one_pass=True)[0]).backward()
    assert torch.allclose(scaled.grad, 2.5 * plain.grad, rtol=1e-6, atol=0)

    leaf = logits.clone().requires_grad_()
    model_out = leaf * 1.0
    loss, _ = logits_grpo_loss(model_out, *args, backend="triton", one_pass=True, inplace_grad=True)
    # The forward already wrote the gradient (for an upstream 1) over the model's logits.
    assert torch.equal(model_out.detach(), plain.grad)
    loss.backward(retain_graph=True)
    assert torch.equal(leaf.grad, plain.grad)
    with pytest.raises(RuntimeError, match="already used"):
        loss.backward()


def test_one_pass_refuses_options_it_does_not_fuse() -> None:
    logits, targets, behaviour, advantages, mask = _grpo_batch(9)
    with pytest.raises(ValueError, match=r"^one_pass: .*ratio_level='sequence', is_cap=2.0"):
        logits_grpo_loss(
            logits, targets, behaviour, advantages, mask, backend="triton", one_pass=True,
            ratio_level="sequence", is_cap=2.0,
        )  # fmt: skip


def test_one_pass_skipped_rows_hold_anything() -> None:
    logits, targets, behaviour, advantages, mask = _grpo_batch(10)
    logits[1] = float("nan")  # row 1 is fully masked
    logits[:, -1] = float("nan")  # the unused last position
    targets[~mask] = -7
    behaviour[~mask] = float("nan")
    live = logits.clone().requires_grad_()
    loss, _ = logits_grpo_loss(live, targets, behaviour, advantages, mask, backend="triton",
                               one_pass=True)  # fmt: skip
    loss.backward()
    used = torch.nn.functional.pad(mask, (0, 1))
    assert torch.isfinite(loss) and bool(torch.isfinite(live.grad).all())
    assert torch.equal(live.grad[~used], torch.zeros(int((~used).sum()), logits.shape[-1]))
    assert bool((live.grad[used] != 0).any())


def test_reference_backend_skips_the_same_rows() -> None:
    gen = torch.Generator().manual_seed(11)
    logits = torch.randn(N, V, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, V, (N,), generator=gen)
    keep = torch.arange(N) % 2 == 0
    targets[~keep] = V + 5  # never checked, never read
    live = logits.clone().requires_grad_()
    logp, entropy = token_logprobs(live, targets, backend="reference", mask=keep,
                                   return_entropy=True)  # fmt: skip
    (logp.sum() + entropy.sum()).backward()
    want, want_entropy = token_logprobs_ref(logits[keep], targets[keep], return_entropy=True)
    assert torch.allclose(logp[keep], want) and torch.allclose(entropy[keep], want_entropy)
    assert torch.equal(logp[~keep], torch.zeros(int((~keep).sum()), dtype=torch.float64))
    assert torch.equal(live.grad[~keep], torch.zeros(int((~keep).sum()), V, dtype=torch.float64))


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)]
)  # the bench's gradient tolerances (kernels._bench_cases.GRAD_TOLERANCE)
@pytest.mark.parametrize("one_pass", [True, False])
def test_16_bit_logits_match_the_float64_reference(
    dtype: torch.dtype, tolerance: float, one_pass: bool
) -> None:
    """In 16-bit logits, on an odd vocabulary (70) and lengths: the log-probs and loss are
    float32 work on the rounded logits, so they match the reference on those logits; the
    gradient is stored in the logits' dtype."""
    logits, targets, behaviour, advantages, mask = _grpo_batch(12, rows=3, length=5, vocab=70)
    rounded = logits.to(dtype)
    live = rounded.clone().requires_grad_()
    loss, _ = logits_grpo_loss(
        live, targets, behaviour, advantages, mask, temperature=0.9, backend="triton",
        one_pass=one_pass, eps_low=0.2, eps_high=0.28,
    )  # fmt: skip
    loss.backward()
    exact = rounded.double().requires_grad_()
    want, _ = logits_grpo_loss(
        exact, targets, behaviour.double(), advantages.double(), mask, temperature=0.9,
        backend="reference", eps_low=0.2, eps_high=0.28,
    )  # fmt: skip
    want.backward()
    assert live.grad.dtype == dtype
    assert abs(loss.item() - want.item()) <= 1e-5 * max(abs(want.item()), 1e-3)
    assert relative_error(live.grad, exact.grad) < tolerance


def _triton_and_reference(logits, targets, behaviour, advantages, mask, one_pass):
    """The loss and the logits' gradient on the Triton path and on the float64 reference."""
    live, exact = logits.clone().requires_grad_(), logits.double().requires_grad_()
    got, _ = logits_grpo_loss(live, targets, behaviour, advantages, mask, backend="triton",
                              one_pass=one_pass)  # fmt: skip
    want, _ = logits_grpo_loss(exact, targets, behaviour.double(), advantages.double(), mask,
                               backend="reference")  # fmt: skip
    got.backward()
    want.backward()
    return got, live.grad, want, exact.grad


@pytest.mark.parametrize("one_pass", [True, False])
def test_non_finite_kept_rows_follow_the_reference(one_pass: bool) -> None:
    """A NaN or +inf logit in a used position makes the loss NaN and that position's gradient
    row NaN; a -inf logit away from the target is probability 0 and changes nothing else."""
    logits, targets, behaviour, advantages, mask = _grpo_batch(13)
    used = mask.nonzero().tolist()
    (r0, t0), (r1, t1) = used[0], used[-1]
    away = (targets[r1, t1] + 5) % logits.shape[-1]
    logits[r1, t1, away] = float("-inf")
    batch = (targets, behaviour, advantages, mask, one_pass)
    loss, grad, want, want_grad = _triton_and_reference(logits, *batch)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert relative_error(grad, want_grad) < 1e-5
    assert grad[r1, t1, away] == 0

    for bad in (float("nan"), float("inf")):
        poisoned = logits.clone()
        poisoned[r0, t0, 3] = bad
        loss, grad, want, want_grad = _triton_and_reference(poisoned, *batch)
        assert loss.isnan() and want.isnan()
        assert torch.equal(grad.isnan(), want_grad.isnan())
        assert bool(grad[r0, t0].isnan().all())
