"""fused_linear_grpo_loss (Triton, under the interpreter on CPU) against the float64 reference.

The interpreter multiplies bfloat16 ``tl.dot`` operands wrongly, so the kernels are tested in
float32 and float16 here; bfloat16 runs on GPUs only.
"""

from __future__ import annotations

import math

import pytest
import torch
from stalesim.kernels import _buffers
from stalesim.kernels import fused_linear_grpo as op
from stalesim.kernels.fused_linear_grpo import fused_linear_grpo_loss
from stalesim.kernels.reference import fused_linear_logprobs_ref

# Odd sizes: with the interpreter's 16-row, 32-column logit tiles, 3 x 6 = 18 positions (two
# row blocks, the second partial), 389 vocabulary columns (13 tiles, the last partial) and 24
# hidden units (a full and a partial 16-wide block).
R, P, L, H, V = 3, 6, 5, 24, 389

# Float32 logits are exact products (ieee dot); float16 rounds E and D to 11 bits.
GRAD_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every buffer the op allocates starts as NaN, so unwritten elements are caught."""
    monkeypatch.setattr(_buffers, "POISON_VALUE", float("nan"))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().double() - want).norm() / want.norm())


def make_inputs(seed: int, dtype: torch.dtype, rows: int = R, positions: int = P):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, positions, H, generator=gen).to(dtype).requires_grad_()
    weight = (0.5 * torch.randn(V, H, generator=gen)).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (rows, L), generator=gen)
    mask = torch.rand(rows, L, generator=gen) > 0.25
    mask[0, 0] = True
    # Behaviour log-probs near the current ones, so that some ratios clip and most do not.
    exact = fused_linear_logprobs_ref(
        hidden.detach()[:, :L].reshape(-1, H).double(), weight.detach().double(),
        targets.reshape(-1),
    ).view(rows, L)  # fmt: skip
    behaviour = (exact + 0.3 * torch.randn(rows, L, generator=gen, dtype=torch.float64)).float()
    advantages = torch.randn(rows, generator=gen)
    return hidden, weight, targets, behaviour, advantages, mask


def reference(hidden, weight, targets, behaviour, advantages, mask, **kwargs):
    """Loss, statistics and float64 gradients of the reference chain."""
    h64 = hidden.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_()
    loss, stats = fused_linear_grpo_loss(
        h64, w64, targets, behaviour.double(), advantages.double(), mask,
        backend="reference", **kwargs,
    )  # fmt: skip
    loss.backward()
    return loss.detach(), stats, h64.grad, w64.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(
    ("temperature", "aggregation", "gemms"),
    [(1.0, "token_mean", "triton"), (0.7, "seq_mean_token_mean", "triton"),
     (0.7, "constant", "torch")],
)  # fmt: skip
def test_loss_statistics_and_gradients_match_reference(
    dtype: torch.dtype, temperature: float, aggregation: str, gemms: str
) -> None:
    inputs = make_inputs(int(10 * temperature) + dtype.itemsize, dtype)
    hidden, weight = inputs[:2]
    options = {"temperature": temperature, "aggregation": aggregation, "eps_high": 0.28}
    loss, stats = fused_linear_grpo_loss(*inputs, backend="triton", gradient_gemms=gemms, **options)
    loss.backward()
    want_loss, want_stats, want_hidden, want_weight = reference(*inputs, **options)

    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    assert set(stats) == set(want_stats)
    for name, value in stats.items():
        assert value.item() == pytest.approx(want_stats[name].item(), rel=1e-4, abs=1e-6), name
    assert 0 < want_stats["clip_frac_low"] + want_stats["clip_frac_high"] < 1
    assert hidden.grad.dtype == dtype and weight.grad.dtype == dtype
    assert relative_error(hidden.grad, want_hidden) < GRAD_TOLERANCE[dtype]
    assert relative_error(weight.grad, want_weight) < GRAD_TOLERANCE[dtype]


@pytest.mark.parametrize(("dtype", "gemms"), [(torch.float32, "triton"),
                                              (torch.float16, "triton"),
                                              (torch.float16, "torch")])  # fmt: skip
def test_many_even_chunks(dtype: torch.dtype, gemms: str) -> None:
    """A budget of two row tiles: 7 x 10 = 70 positions (5 row tiles) walk in 3 chunks of
    16, 32 and 22 rows, dWeight written by the first and accumulated by the others."""
    inputs = make_inputs(20 + dtype.itemsize, dtype, rows=7, positions=10)
    hidden, weight = inputs[:2]
    cfg = op.launch_config(dtype, torch.device("cpu"))
    per_row = V * dtype.itemsize + 12 * math.ceil(V / cfg.tile_v) + 16
    budget = 2 * cfg.block_n * per_row + 5
    plan = op.chunk_plan(70, V, dtype.itemsize, cfg.block_n, cfg.tile_v, budget)
    assert (plan.chunk_rows, plan.n_chunks) == (32, 3)
    assert plan.bounds() == [(0, 16), (16, 48), (48, 70)]
    loss, _ = fused_linear_grpo_loss(
        *inputs, memory_budget=budget, gradient_gemms=gemms, backend="triton"
    )
    loss.backward()
    want_loss, _, want_hidden, want_weight = reference(*inputs)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    assert relative_error(hidden.grad, want_hidden) < GRAD_TOLERANCE[dtype]
    assert relative_error(weight.grad, want_weight) < GRAD_TOLERANCE[dtype]


def test_even_chunks_and_extra_memory_at_the_target_shape() -> None:
    """N=16,384, V=248,320 in bf16 with 128 x 256 GPU tiles and the 1 GiB default: 8 chunks
    of 2,048 rows (never 7 full and a ragged tail); by hand, a row's working memory is
    248,320 * 2 + 12 * 970 + 16 = 508,296 bytes, so 2,112 rows fit 1 GiB, rounded down to
    2,048; the extra memory is 2,048 * 508,296 + 24 * 16,384 = 1,041,383,424 bytes."""
    cfg = op.launch_config(torch.bfloat16, torch.device("cuda"))
    assert (cfg.block_n, cfg.tile_v) == (128, 256)
    plan = op.chunk_plan(16_384, 248_320, 2, 128, 256, op.DEFAULT_MEMORY_BUDGET)
    assert (plan.chunk_rows, plan.n_chunks, plan.n_tiles) == (2048, 8, 970)
    assert plan.extra_bytes(2) == 1_041_383_424
    grads = op.gradient_bytes(16_384, 2048, 248_320, 2)
    assert plan.extra_bytes(2) / grads == pytest.approx(0.9605, abs=1e-4)
    # 10,000 rows are 79 row tiles; 16 tiles fit 1 GiB: 5 chunks of 15 or 16 tiles (never
    # 4 x 16 tiles and a 15-tile tail chosen by accident: the split is by tiles, evenly).
    even = op.chunk_plan(10_000, 248_320, 2, 128, 256, op.DEFAULT_MEMORY_BUDGET)
    assert (even.n_chunks, even.chunk_rows) == (5, 2048)
    assert [b - a for a, b in even.bounds()] == [1920, 2048, 2048, 2048, 1936]
    # 8 tiles fit 512 MiB: 10 chunks of 7 or 8 tiles.
    half = op.chunk_plan(10_000, 248_320, 2, 128, 256, 2**29)
    assert (half.n_chunks, half.chunk_rows) == (10, 1024)
    sizes = [b - a for a, b in half.bounds()]
    assert sum(sizes) == 10_000 and max(sizes) - min(sizes) <= 128


@pytest.mark.parametrize("gemms", ["triton", "torch"])
def test_masked_positions_are_never_read(gemms: str) -> None:
    """NaN hidden states and out-of-range targets at masked and unused positions change
    nothing; their gradient rows are exact zeros."""
    hidden, weight, targets, behaviour, advantages, mask = make_inputs(31, torch.float32)
    with torch.no_grad():
        hidden[:, L:] = float("nan")  # the unused positions
        hidden[:, :L][~mask] = float("nan")
    targets = torch.where(mask, targets, -100)
    loss, _ = fused_linear_grpo_loss(
        hidden, weight, targets, behaviour, advantages, mask, gradient_gemms=gemms,
        backend="triton",
    )  # fmt: skip
    loss.backward()
    want_loss, _, want_hidden, want_weight = reference(
        hidden, weight, targets, behaviour, advantages, mask
    )
    assert torch.isfinite(loss) and loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    assert (hidden.grad[:, L:] == 0).all() and (hidden.grad[:, :L][~mask] == 0).all()
    assert relative_error(hidden.grad, torch.nan_to_num(want_hidden)) < 1e-5
    assert relative_error(weight.grad, want_weight) < 1e-5


def test_fully_masked_row_block_and_batch() -> None:
    """A batch with no kept position: loss 0, every gradient exactly 0."""
    hidden, weight, targets, behaviour, advantages, mask = make_inputs(32, torch.float32)
    mask = torch.zeros_like(mask)
    loss, stats = fused_linear_grpo_loss(
        hidden, weight, targets, behaviour, advantages, mask, backend="triton"
    )
    loss.backward()
    assert loss.item() == 0.0 and stats["ratio_mean"].item() == 1.0
    assert (hidden.grad == 0).all() and (weight.grad == 0).all()


def test_non_finite_kept_row_propagates_as_in_the_reference() -> None:
    """NaN in one kept row's hidden state: the loss is NaN, that row's gradient is NaN, the
    other rows' hidden gradients stay finite (as in the float64 reference)."""
    hidden, weight, targets, behaviour, advantages, mask = make_inputs(33, torch.float32)
    with torch.no_grad():
        hidden[0, 0, 3] = float("nan")
    loss, _ = fused_linear_grpo_loss(
        hidden, weight, targets, behaviour, advantages, mask, backend="triton"
    )
    loss.backward()
    want_loss, _, want_hidden, want_weight = reference(
        hidden, weight, targets, behaviour, advantages, mask
    )
    assert torch.isnan(loss) and torch.isnan(want_loss)
    assert torch.equal(torch.isnan(hidden.grad), torch.isnan(want_hidden))
    assert torch.equal(torch.isnan(weight.grad), torch.isnan(want_weight))
    assert torch.isfinite(hidden.grad[1:]).all()


def test_upstream_gradient_scales_and_frozen_weight() -> None:
    hidden, weight, targets, behaviour, advantages, mask = make_inputs(34, torch.float32)
    frozen = weight.detach()
    loss, _ = fused_linear_grpo_loss(
        hidden, frozen, targets, behaviour, advantages, mask, backend="triton"
    )
    (3.0 * loss).backward()
    _, _, want_hidden, _ = reference(hidden, frozen, targets, behaviour, advantages, mask)
    assert frozen.grad is None
    assert relative_error(hidden.grad, 3.0 * want_hidden) < 1e-5


def test_gpu_tiles_under_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU's float32 tiles (128 x 256 logit tiles, 32-deep, 128-wide gradient blocks)
    on 130 positions: every tile partial."""
    import dataclasses

    gpu = op.launch_config(torch.float32, torch.device("cuda"))
    tiles = dataclasses.replace(gpu, num_warps=1, num_stages=1)
    monkeypatch.setattr(op, "launch_config", lambda dtype, device: tiles)
    inputs = make_inputs(35, torch.float32, rows=13, positions=10)
    hidden, weight = inputs[:2]
    loss, _ = fused_linear_grpo_loss(*inputs, backend="triton")
    loss.backward()
    want_loss, _, want_hidden, want_weight = reference(*inputs)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    assert relative_error(hidden.grad, want_hidden) < 1e-5
    assert relative_error(weight.grad, want_weight) < 1e-5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio_level": "sequence"}, "ratio_level"),
        ({"is_cap": 2.0}, "is_cap"),
        ({"memory_budget": 0}, "memory_budget"),
        ({"memory_budget": 1000}, "memory_budget"),
        ({"temperature": 0.0}, "temperature"),
        ({"gradient_gemms": "cublas"}, "gradient_gemms"),
    ],
)
def test_bad_options_raise(kwargs: dict, message: str) -> None:
    inputs = make_inputs(36, torch.float32)
    with pytest.raises(ValueError, match=message):
        fused_linear_grpo_loss(*inputs, backend="triton", **kwargs)


def test_bad_inputs_raise() -> None:
    hidden, weight, targets, behaviour, advantages, mask = make_inputs(37, torch.float32)
    with pytest.raises(ValueError, match="hidden"):
        fused_linear_grpo_loss(hidden[:, :3], weight, targets, behaviour, advantages, mask)
    with pytest.raises(ValueError, match="outside"):
        bad = torch.where(mask, V, targets)
        fused_linear_grpo_loss(hidden, weight, bad, behaviour, advantages, mask, backend="triton")
    with pytest.raises(ValueError, match="dtype"):
        fused_linear_grpo_loss(
            hidden, weight.half(), targets, behaviour, advantages, mask, backend="triton"
        )


def test_grouped_logit_tiles_over_many_row_blocks() -> None:
    """7 x 25 = 175 positions are 11 row blocks of 16 in one chunk: a full group of 8 row
    blocks walking the weight tiles side by side, and a partial group of 3."""
    inputs = make_inputs(38, torch.float32, rows=7, positions=25)
    hidden, weight = inputs[:2]
    loss, _ = fused_linear_grpo_loss(*inputs, backend="triton")
    loss.backward()
    want_loss, _, want_hidden, want_weight = reference(*inputs)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    assert relative_error(hidden.grad, want_hidden) < 1e-5
    assert relative_error(weight.grad, want_weight) < 1e-5
