"""fused_linear_logprobs (Triton, under the interpreter on CPU) against the float64 reference.

The interpreter multiplies bfloat16 ``tl.dot`` operands wrongly, so the fused matmul kernels are
tested in float32 and float16 here; bfloat16 runs on GPUs only.
"""

from __future__ import annotations

import pytest
import torch
from stalesim.kernels import _buffers, fused_linear
from stalesim.kernels.fused_linear import fused_linear_logprobs
from stalesim.kernels.loss import grpo_loss
from stalesim.kernels.reference import fused_linear_logprobs_ref, grpo_loss_ref

# Odd sizes: with 16x32x16 interpreter tiles, 13 rows, 389 vocabulary columns (13 tiles, the
# last partial) and 24 hidden units (a full and a partial tile).
N, V, H = 13, 389, 24

# The logits are float32-exact products of the inputs (ieee dot), so forward values are
# float32-accurate in both dtypes; the logit gradients pass through the input dtype.
GRAD_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every output, gradient and slab buffer starts as NaN, so unwritten elements are caught."""
    monkeypatch.setattr(_buffers, "POISON_VALUE", float("nan"))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().double() - want).norm() / want.norm())


def make_inputs(
    seed: int, dtype: torch.dtype, with_bias: bool, rows: int = N, vocab: int = V
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, H, generator=gen).to(dtype).requires_grad_()
    weight = (0.5 * torch.randn(vocab, H, generator=gen)).to(dtype).requires_grad_()
    bias = torch.randn(vocab, generator=gen).to(dtype).requires_grad_() if with_bias else None
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    upstream = torch.randn(rows, generator=gen)
    return hidden, weight, bias, targets, upstream


def reference_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    upstream: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().double().requires_grad_() for t in (hidden, weight)]
    exact_bias = bias.detach().double().requires_grad_() if bias is not None else None
    logp = fused_linear_logprobs_ref(*leaves, targets, temperature=temperature, bias=exact_bias)
    logp.backward(upstream.double())
    grads = [t.grad for t in leaves] + ([exact_bias.grad] if exact_bias is not None else [])
    return logp.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("with_bias", "temperature"), [(False, 1.0), (True, 0.7)])
def test_forward_and_backward_match_reference(
    dtype: torch.dtype, with_bias: bool, temperature: float
) -> None:
    hidden, weight, bias, targets, upstream = make_inputs(
        int(10 * temperature) + dtype.itemsize, dtype, with_bias
    )
    logp = fused_linear_logprobs(
        hidden, weight, targets, temperature=temperature, bias=bias, backend="triton"
    )
    logp.backward(upstream)
    want, want_grads = reference_grads(hidden, weight, bias, targets, upstream, temperature)

    assert logp.dtype == torch.float32 and logp.shape == (N,)
    assert relative_error(logp, want) < 1e-6
    got_grads = [hidden.grad, weight.grad] + ([bias.grad] if bias is not None else [])
    for got, wanted in zip(got_grads, want_grads, strict=True):
        assert got.dtype == dtype
        assert relative_error(got, wanted) < GRAD_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_backward_over_row_chunks_and_slabs(
    monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    """Chunks of 16 rows (40 rows: 3 chunks, the last partial) and slabs of one 32-column
    tile (389 columns: 13 slabs, the last partial): every gradient is summed across both."""
    rows, tile = 40, 32
    monkeypatch.setattr(fused_linear, "MIN_CHUNK_ROWS", 16)
    monkeypatch.setattr(fused_linear, "EXTRA_FRACTION", 1e-9)
    plan = fused_linear.backward_plan(rows, H, V, dtype.itemsize, tile)
    assert plan == fused_linear.BackwardPlan(
        chunk_rows=16, slab_columns=tile, n_chunks=3, n_slabs=13
    )
    assert plan.row_bounds(rows) == [(0, 16), (16, 32), (32, 40)]
    hidden, weight, bias, targets, upstream = make_inputs(5, dtype, True, rows=rows)
    logp = fused_linear_logprobs(hidden, weight, targets, bias=bias, backend="triton")
    logp.backward(upstream)
    want, want_grads = reference_grads(hidden, weight, bias, targets, upstream, 1.0)
    assert relative_error(logp, want) < 1e-6
    for got, wanted in zip((hidden.grad, weight.grad, bias.grad), want_grads, strict=True):
        assert relative_error(got, wanted) < GRAD_TOLERANCE[dtype]


def test_backward_memory_at_the_target_shape() -> None:
    """At N=16,384, H=2,048, V=248,320 in bf16 the backward's working memory is a 2,048-row
    float32 dHidden chunk and a 2,048 x 5,248 bf16 slab: 1.035x the gradient buffers (the
    target is 1.05x), computed by hand: (16,384 + 248,320) * 2,048 * 2 = 1,084,227,584 bytes of
    gradients; 2,048 * (2,048 * 4 + 5,248 * 2) = 38,273,024 bytes of working memory."""
    n, h, v = 16_384, 2048, 248_320
    plan = fused_linear.backward_plan(n, h, v, 2, 128)
    assert plan == fused_linear.BackwardPlan(
        chunk_rows=2048, slab_columns=5248, n_chunks=8, n_slabs=48
    )
    grads = fused_linear.gradient_bytes(n, h, v, 2)
    assert grads == 1_084_227_584
    assert plan.extra_bytes(h, 2) == 38_273_024
    assert 1 + plan.extra_bytes(h, 2) / grads == pytest.approx(1.0353, abs=1e-4)
    # The old design (a float32 [N, H] dHidden beside a 64 MiB slab) was 1.186x.
    assert 1 + (n * h * 4 + 64 * 2**20) / grads > 1.18


def test_backward_chunks_are_even_and_fill_waves() -> None:
    """The memory allows 20 row tiles (2,560 rows): 7 chunks would be 19 tiles each, 304
    dHidden output tiles in 3 waves of 132 SMs (77% busy); 8 chunks of 16 tiles run 256 in 2
    waves (97%), so 8 are taken, every chunk 2,048 rows (not 6 x 2,560 + 1,024). Slabs are
    40 or 41 tiles of 128 columns."""
    n, h, v = 16_384, 2048, 248_320
    assert fused_linear.wave_efficiency(304, 132) == pytest.approx(304 / 396)
    assert fused_linear.wave_efficiency(256, 132) == pytest.approx(256 / 264)
    plan = fused_linear.backward_plan(n, h, v, 2, 128)
    assert [b - a for a, b in plan.row_bounds(n)] == [2048] * 8
    widths = [b - a for a, b in plan.slab_bounds(v, 128)]
    assert sum(widths) == v and set(widths) == {40 * 128, 41 * 128}
    # On a GPU with 114 SMs (an H100 PCIe) the same shape takes another count.
    other = fused_linear.backward_plan(n, h, v, 2, 128, sms=114)
    tiles = -(-128 // other.n_chunks) * 16
    assert fused_linear.wave_efficiency(tiles, 114) >= 0.9
    assert other.extra_bytes(h, 2) <= 0.04 * 1_084_227_584 * 1.001


def test_only_requested_gradients_are_computed() -> None:
    hidden, weight, _, targets, upstream = make_inputs(6, torch.float32, False)
    frozen = weight.detach()
    logp = fused_linear_logprobs(hidden, frozen, targets, backend="triton")
    logp.backward(upstream)
    _, (want_hidden, _) = reference_grads(hidden, frozen, None, targets, upstream, 1.0)
    assert frozen.grad is None
    assert relative_error(hidden.grad, want_hidden) < 1e-5


def test_extreme_logits_and_masked_vocabulary() -> None:
    """Logits in the thousands, and a bias of -inf that removes part of the vocabulary."""
    hidden, weight, bias, targets, upstream = make_inputs(7, torch.float32, True)
    with torch.no_grad():
        hidden.mul_(300.0)  # logits of order 1e3 to 1e4
        bias[::3] = float("-inf")
        bias[:170] = float("-inf")  # the whole first vocabulary split of the forward
    targets = 170 + targets % (V - 170)
    targets = torch.where(targets % 3 == 0, targets + 1, targets)
    logp = fused_linear_logprobs(
        hidden, weight, targets, temperature=1.3, bias=bias, backend="triton"
    )
    logp.backward(upstream)
    want, (want_hidden, want_weight, _) = reference_grads(
        hidden, weight, bias, targets, upstream, 1.3
    )
    assert want.abs().max() > 1e3
    assert torch.isfinite(logp).all()
    assert torch.isfinite(hidden.grad).all() and torch.isfinite(weight.grad).all()
    assert torch.allclose(logp.double(), want, rtol=1e-5, atol=1e-2)
    assert relative_error(hidden.grad, want_hidden) < 1e-4
    assert relative_error(weight.grad, want_weight) < 1e-4
    assert (weight.grad[::3] == 0).all() and (weight.grad[:170] == 0).all()


def test_gpu_tile_sizes_under_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 128x128x32 float32 tiles a GPU uses, on shapes that leave every tile partial."""
    kernels = load_fused_kernels()
    gpu_tiles = kernels.launch_config(torch.float32, torch.device("cuda"))
    assert (gpu_tiles.block_n, gpu_tiles.block_v, gpu_tiles.dot_precision) == (128, 128, "ieee")
    monkeypatch.setattr(kernels, "launch_config", lambda dtype, device: gpu_tiles)
    hidden, weight, bias, targets, upstream = make_inputs(8, torch.float32, True, rows=130)
    logp = fused_linear_logprobs(hidden, weight, targets, bias=bias, backend="triton")
    logp.backward(upstream)
    want, want_grads = reference_grads(hidden, weight, bias, targets, upstream, 1.0)
    assert relative_error(logp, want) < 1e-6
    for got, wanted in zip((hidden.grad, weight.grad, bias.grad), want_grads, strict=True):
        assert relative_error(got, wanted) < 1e-5


def load_fused_kernels():
    from stalesim.kernels.backend import load_triton_module

    return load_triton_module("_fused_triton")


def test_composes_with_grpo_loss() -> None:
    """hidden -> fused log-probs -> GRPO loss has the reference chain's gradients."""
    rows, length = 3, 5
    hidden, weight, _, targets, _ = make_inputs(9, torch.float32, False, rows=rows * length)
    gen = torch.Generator().manual_seed(10)
    behaviour = fused_linear_logprobs_ref(hidden.detach(), weight.detach(), targets).view(
        rows, length
    ) + 0.3 * torch.randn(rows, length, generator=gen)
    advantages = torch.randn(rows, generator=gen)
    mask = torch.ones(rows, length, dtype=torch.bool)
    mask[1, 3:] = False
    options = {"eps_low": 0.2, "eps_high": 0.28, "aggregation": "seq_mean_token_mean"}

    logp = fused_linear_logprobs(hidden, weight, targets, backend="triton").view(rows, length)
    loss, _ = grpo_loss(logp, behaviour, advantages, mask, backend="triton", **options)
    loss.backward()

    exact_hidden = hidden.detach().double().requires_grad_()
    exact_weight = weight.detach().double().requires_grad_()
    exact_logp = fused_linear_logprobs_ref(exact_hidden, exact_weight, targets).view(rows, length)
    want_loss, _ = grpo_loss_ref(
        exact_logp, behaviour.double(), advantages.double(), mask, **options
    )
    want_loss.backward()

    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5, abs=1e-7)
    assert relative_error(hidden.grad, exact_hidden.grad) < 1e-5
    assert relative_error(weight.grad, exact_weight.grad) < 1e-5


def test_auto_on_cpu_is_the_reference() -> None:
    hidden, weight, bias, targets, _ = make_inputs(11, torch.float32, True)
    got = fused_linear_logprobs(hidden, weight, targets, bias=bias)
    assert torch.equal(got, fused_linear_logprobs_ref(hidden, weight, targets, bias=bias))


def _good() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(4, 8), torch.randn(10, 8), torch.tensor([0, 3, 9, 1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h, w, t: (h, w, torch.tensor([0, 3, 10, 1])), "outside"),
        (lambda h, w, t: (h, w[:, :7], t), "weight"),
        (lambda h, w, t: (h, w, t[:2]), "targets"),
        (lambda h, w, t: (h, w.half(), t), "dtype"),
        (lambda h, w, t: (h.double(), w.double(), t), "dtype"),
        (lambda h, w, t: (h, w.to("meta"), t), "device"),
    ],
)
def test_bad_inputs_raise_value_error(change, message: str) -> None:
    hidden, weight, targets = change(*_good())
    with pytest.raises(ValueError, match=message):
        fused_linear_logprobs(hidden, weight, targets, backend="triton")


def test_bad_bias_and_temperature_raise() -> None:
    with pytest.raises(ValueError, match="bias"):
        fused_linear_logprobs(*_good(), bias=torch.zeros(9), backend="triton")
    with pytest.raises(ValueError, match="temperature"):
        fused_linear_logprobs(*_good(), temperature=0.0, backend="triton")


@pytest.mark.parametrize(("rows", "vocab"), [(1, 1), (5, 20), (17, 33)])
def test_small_vocabularies(rows: int, vocab: int) -> None:
    """One tile (a single vocabulary split) and just over one tile."""
    hidden, weight, bias, targets, upstream = make_inputs(
        rows + vocab, torch.float32, True, rows=rows, vocab=vocab
    )
    logp = fused_linear_logprobs(hidden, weight, targets, bias=bias, backend="triton")
    logp.backward(upstream)
    want, want_grads = reference_grads(hidden, weight, bias, targets, upstream, 1.0)
    assert torch.allclose(logp.double(), want, atol=1e-6)
    for got, wanted in zip((hidden.grad, weight.grad, bias.grad), want_grads, strict=True):
        assert torch.allclose(got.double(), wanted, atol=1e-6)


def test_grouped_tile_order_over_many_row_blocks() -> None:
    """150 rows are 10 row blocks of 16 under the interpreter: one full group of GROUP_ROWS=8
    and a partial group of 2, each over 3 vocabulary splits; every row is computed once."""
    kernels = load_fused_kernels()
    assert kernels.GROUP_ROWS == 8
    hidden, weight, bias, targets, upstream = make_inputs(11, torch.float32, True, rows=150)
    with torch.no_grad():
        logp = fused_linear_logprobs(hidden, weight, targets, bias=bias, backend="triton")
    want, _ = reference_grads(hidden, weight, bias, targets, upstream, 1.0)
    assert relative_error(logp, want) < 1e-6


@pytest.mark.parametrize("tile", range(4))
def test_every_autotuned_forward_tile(monkeypatch: pytest.MonkeyPatch, tile: int) -> None:
    """Each tile shape the GPU forward autotunes over, run under the interpreter in float32
    (ieee products), gives the reference's log-probs on shapes that leave every tile partial."""
    import dataclasses

    kernels = load_fused_kernels()
    config = dataclasses.replace(kernels.FORWARD_CONFIGS[tile], num_warps=1, num_stages=1)
    monkeypatch.setattr(kernels, "launch_config", lambda dtype, device: config)
    hidden, weight, bias, targets, upstream = make_inputs(12 + tile, torch.float32, True, 200)
    with torch.no_grad():
        logp = fused_linear_logprobs(hidden, weight, targets, bias=bias, backend="triton")
    want, _ = reference_grads(hidden, weight, bias, targets, upstream, 1.0)
    assert relative_error(logp, want) < 1e-6


def test_vocabulary_splits_fill_the_gpu() -> None:
    """Hand-computed for an H100 (132 SMs) with 128 x 128 tiles: about four waves."""
    kernels = load_fused_kernels()
    tiles = -(-248_320 // 128)  # 1,940
    assert kernels.splits_for(16_384 // 128, tiles, 132) == 5  # 640 programs
    assert kernels.splits_for(2048 // 128, tiles, 132) == 33  # 528 programs = 4 waves
    assert kernels.splits_for(1, 20, 132) == 1  # at least 16 tiles per split
    assert kernels.splits_for(4096, tiles, 132) == 1


def test_autotune_key_buckets_the_rows() -> None:
    """The forward's autotune key holds N as a power-of-two bucket of 128-row blocks."""
    kernels = load_fused_kernels()
    assert [kernels.row_bucket(n) for n in (1, 128, 129, 2048, 9000, 16_384)] == [
        1, 1, 2, 16, 128, 128,
    ]  # fmt: skip
    assert kernels._autotuned(kernels._fused_forward_kernel).keys == [
        "row_bucket", "n_hidden", "n_vocab",
    ]  # fmt: skip
