"""Triton kernels for log-probs fused with the output projection (``logits = hidden @ weight.T``).

Import this module through ``stalesim.kernels.backend.load_triton_module("_fused_triton")``, so
that on a machine without CUDA the interpreter is switched on before the kernels are decorated.

Forward: one program per block of rows (and, when there are too few row blocks to fill the GPU,
per slice of the vocabulary) walks the vocabulary in tiles; each logit tile is a ``tl.dot`` of
the rows' hidden states with a tile of the weight, reduced into a running max / sum-exp per row
and gathered at the targets, then dropped. The slices' partial sums are combined per row, and
only ``N`` log-sum-exps stay.

Backward: why a slab and not atomics or per-tile accumulators. Both gradients reduce over a
dimension the logits tile does not own (dHidden over V, dWeight over N) and are H wide. A
program that owns a row block cannot keep its ``[BLOCK_N, H]`` accumulator in registers for H in
the thousands, and splitting H across programs recomputes every logit tile ``H / BLOCK_H``
times. Accumulating per tile with atomics costs ``N * V * H * (1/BLOCK_N + 1/BLOCK_V)`` float32
atomic adds: about 1.3e11 at N=16k, V=248k, H=2k with 128x128 tiles, which at the L2's atomic
rate takes several times longer than the matmuls themselves. So the backward recomputes the
logit tiles in Triton, turns them into logit gradients
``D = g * (onehot - softmax) / T`` for one slab of ``V_chunk`` vocabulary columns at a time
(``[N, V_chunk]``, sized by a byte budget, so extra memory is bounded and never ``N * V``), and
feeds each slab to two dense tensor-core GEMMs: ``dHidden += D @ W[chunk]`` (a Triton kernel
that accumulates into a float32 buffer in place) and ``dWeight[chunk] = D.T @ hidden`` (written
once, straight into its rows of the output). Every FLOP is then done at matmul efficiency and
the total is the minimum of 8·N·V·H (forward, recompute, two gradient products).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from stalesim.kernels._buffers import new_buffer


@dataclass(frozen=True)
class FusedLaunch:
    """Tile sizes and warps of the fused kernels.

    GPU tiles are the usual 128x128 (64-deep) tensor-core matmul tiles; under the interpreter
    they are the smallest ``tl.dot`` allows, so test shapes still span several tiles.
    """

    block_n: int
    block_v: int
    block_h: int
    num_warps: int
    num_stages: int
    dot_precision: str


def launch_config(dtype: torch.dtype, device: torch.device) -> FusedLaunch:
    """Tiles for ``dtype`` operands on ``device``."""
    if device.type != "cuda":
        # The interpreter computes ieee float32 products, which keeps exact parity.
        return FusedLaunch(16, 32, 16, num_warps=1, num_stages=1, dot_precision="ieee")
    # float32 operands follow torch's own matmul precision setting ("highest" by default), so
    # results match torch.matmul's.
    tf32 = dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest"
    block_h = 32 if dtype == torch.float32 else 64
    return FusedLaunch(
        128, 128, block_h, num_warps=8, num_stages=3, dot_precision="tf32" if tf32 else "ieee"
    )


@triton.jit
def _logit_tile(
    hidden_ptr,
    weight_ptr,
    bias_ptr,
    rows,
    cols,
    n_rows,
    n_vocab,
    n_hidden,
    stride_hidden,
    stride_weight,
    inv_temperature,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """``(hidden[rows] @ weight[cols].T + bias[cols]) / T`` as a float32 [BLOCK_N, BLOCK_V]
    tile, with -inf in the columns past the vocabulary."""
    row_ok = rows < n_rows
    col_ok = cols < n_vocab
    hidden_rows = hidden_ptr + rows.to(tl.int64)[:, None] * stride_hidden
    weight_cols = weight_ptr + cols.to(tl.int64)[None, :] * stride_weight
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for h0 in range(0, n_hidden, BLOCK_H):
        hk = h0 + tl.arange(0, BLOCK_H)
        h_ok = hk < n_hidden
        a = tl.load(hidden_rows + hk[None, :], mask=row_ok[:, None] & h_ok[None, :], other=0.0)
        b = tl.load(weight_cols + hk[:, None], mask=h_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return tl.where(col_ok[None, :], acc * inv_temperature, float("-inf"))


@triton.jit
def _fused_forward_kernel(
    hidden_ptr,
    weight_ptr,
    bias_ptr,
    targets_ptr,
    partial_max_ptr,
    partial_sum_ptr,
    partial_target_ptr,
    n_rows,
    n_vocab,
    n_hidden,
    n_splits,
    split_width,
    stride_hidden,
    stride_weight,
    inv_temperature,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Program (row block, vocabulary split): the running max, sum-exp and target logit of its
    # rows over columns [split * split_width, (split + 1) * split_width), a whole number of
    # tiles. Consecutive programs share a row block.
    pid = tl.program_id(0)
    split = pid % n_splits
    rows = (pid // n_splits) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1).to(tl.int32)
    v_begin = split * split_width
    v_end = tl.minimum(v_begin + split_width, n_vocab)

    running_max = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_N,), tl.float32)
    target_logit = tl.zeros((BLOCK_N,), tl.float32)
    for v0 in range(v_begin, v_end, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        z = _logit_tile(
            hidden_ptr, weight_ptr, bias_ptr, rows, cols, n_rows, n_vocab, n_hidden,
            stride_hidden, stride_weight, inv_temperature,
            HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H, DOT_PRECISION,
        )  # fmt: skip
        target_logit += tl.sum(tl.where(cols[None, :] == targets[:, None], z, 0.0), axis=1)
        new_max = tl.maximum(running_max, tl.max(z, axis=1))
        # -inf - -inf would be NaN while a row has seen only -inf logits; shift by 0 then.
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(
            tl.exp(z - shift[:, None]), axis=1
        )
        running_max = new_max

    out = split.to(tl.int64) * n_rows + rows
    tl.store(partial_max_ptr + out, running_max, mask=row_ok)
    tl.store(partial_sum_ptr + out, running_sum, mask=row_ok)
    tl.store(partial_target_ptr + out, target_logit, mask=row_ok)


@triton.jit
def _fused_grad_logits_kernel(
    hidden_ptr,
    weight_ptr,
    bias_ptr,
    targets_ptr,
    lse_ptr,
    grad_logp_ptr,
    slab_ptr,
    n_rows,
    n_vocab,
    n_hidden,
    chunk_start,
    chunk_width,
    stride_hidden,
    stride_weight,
    stride_slab,
    inv_temperature,
    HAS_BIAS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    # Consecutive programs share a row block, so its hidden rows stay in L2 across the chunk.
    blocks_v = tl.cdiv(chunk_width, BLOCK_V)
    pid = tl.program_id(0)
    rows = (pid // blocks_v) * BLOCK_N + tl.arange(0, BLOCK_N)
    local_cols = (pid % blocks_v) * BLOCK_V + tl.arange(0, BLOCK_V)
    cols = chunk_start + local_cols
    row_ok = rows < n_rows

    z = _logit_tile(
        hidden_ptr, weight_ptr, bias_ptr, rows, cols, n_rows, n_vocab, n_hidden,
        stride_hidden, stride_weight, inv_temperature,
        HAS_BIAS, BLOCK_N, BLOCK_V, BLOCK_H, DOT_PRECISION,
    )  # fmt: skip
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1).to(tl.int32)
    scale = tl.load(grad_logp_ptr + rows, mask=row_ok, other=0.0) * inv_temperature
    onehot = tl.where(cols[None, :] == targets[:, None], 1.0, 0.0)
    grad = scale[:, None] * (onehot - tl.exp(z - lse[:, None]))
    out = slab_ptr + rows.to(tl.int64)[:, None] * stride_slab + local_cols[None, :]
    keep = row_ok[:, None] & (local_cols < chunk_width)[None, :]
    tl.store(out, grad.to(slab_ptr.dtype.element_ty), mask=keep)


@triton.jit
def _matmul_accumulate_kernel(
    acc_ptr,
    a_ptr,
    b_ptr,
    size_m,
    size_n,
    size_k,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_acc,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    blocks_n = tl.cdiv(size_n, BLOCK_N)
    pid = tl.program_id(0)
    rm = (pid // blocks_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = (pid % blocks_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < size_m
    n_ok = rn < size_n
    acc_tile = acc_ptr + rm.to(tl.int64)[:, None] * stride_acc + rn[None, :]
    acc = tl.load(acc_tile, mask=m_ok[:, None] & n_ok[None, :], other=0.0)
    a_rows = a_ptr + rm.to(tl.int64)[:, None] * stride_am
    b_cols = b_ptr + rn.to(tl.int64)[None, :] * stride_bn
    for k0 in range(0, size_k, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < size_k
        a = tl.load(a_rows + rk[None, :] * stride_ak, mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_cols + rk[:, None] * stride_bk, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    tl.store(acc_tile, acc, mask=m_ok[:, None] & n_ok[None, :])


def vocabulary_splits(n_rows: int, n_vocab: int, cfg: FusedLaunch, device: torch.device) -> int:
    """How many programs share one row block's vocabulary in the forward.

    With fewer row blocks than SMs, one program per row block would leave most of the GPU idle
    (N=2,048 is 16 blocks on 132 SMs), so the vocabulary is split until the row blocks fill
    whole waves. Under the interpreter it is split in three, so tests cover the combine.
    """
    tiles = triton.cdiv(n_vocab, cfg.block_v)
    if device.type != "cuda":
        return min(3, tiles)
    row_blocks = triton.cdiv(n_rows, cfg.block_n)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(tiles, sms // row_blocks))


def fused_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    temperature: float,
    logp: torch.Tensor,
    lse: torch.Tensor,
) -> None:
    """Fill ``logp[N]`` and ``lse[N]`` (float32); ``hidden`` and ``weight`` have unit column
    stride."""
    n_rows, n_hidden = hidden.shape
    n_vocab = weight.shape[0]
    if n_rows == 0:
        return
    cfg = launch_config(hidden.dtype, hidden.device)
    splits = vocabulary_splits(n_rows, n_vocab, cfg, hidden.device)
    split_width = triton.cdiv(triton.cdiv(n_vocab, cfg.block_v), splits) * cfg.block_v
    splits = triton.cdiv(n_vocab, split_width)
    # [3, splits, N] float32: the per-split running max, sum-exp and target logit.
    partial = new_buffer((3, splits, n_rows), torch.float32, hidden.device)
    _fused_forward_kernel[(triton.cdiv(n_rows, cfg.block_n) * splits,)](
        hidden,
        weight,
        bias if bias is not None else weight,
        targets,
        partial[0],
        partial[1],
        partial[2],
        n_rows,
        n_vocab,
        n_hidden,
        splits,
        split_width,
        hidden.stride(0),
        weight.stride(0),
        1.0 / temperature,
        HAS_BIAS=bias is not None,
        BLOCK_N=cfg.block_n,
        BLOCK_V=cfg.block_v,
        BLOCK_H=cfg.block_h,
        DOT_PRECISION=cfg.dot_precision,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
    split_max, split_sum, split_target = partial
    row_max = split_max.amax(dim=0)
    # As in the kernel: a row whose every logit is -inf is shifted by 0, never by -inf.
    shift = torch.where(row_max == float("-inf"), 0.0, row_max)
    log_sum = torch.log((split_sum * torch.exp(split_max - shift)).sum(dim=0))
    torch.add(shift, log_sum, out=lse)
    # The max is subtracted before the sum so large logits keep float32 precision.
    torch.sub(split_target.sum(dim=0) - shift, log_sum, out=logp)


def fused_grad_logits(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    lse: torch.Tensor,
    grad_logp: torch.Tensor,
    temperature: float,
    chunk_start: int,
    slab: torch.Tensor,
) -> None:
    """Write the logit gradients of vocabulary columns ``[chunk_start, chunk_start + W)`` into
    ``slab[N, W]`` (unit column stride), recomputing the logits tile by tile."""
    n_rows, n_hidden = hidden.shape
    chunk_width = slab.shape[1]
    if n_rows == 0 or chunk_width == 0:
        return
    cfg = launch_config(hidden.dtype, hidden.device)
    grid = (triton.cdiv(n_rows, cfg.block_n) * triton.cdiv(chunk_width, cfg.block_v),)
    _fused_grad_logits_kernel[grid](
        hidden,
        weight,
        bias if bias is not None else weight,
        targets,
        lse,
        grad_logp,
        slab,
        n_rows,
        weight.shape[0],
        n_hidden,
        chunk_start,
        chunk_width,
        hidden.stride(0),
        weight.stride(0),
        slab.stride(0),
        1.0 / temperature,
        HAS_BIAS=bias is not None,
        BLOCK_N=cfg.block_n,
        BLOCK_V=cfg.block_v,
        BLOCK_H=cfg.block_h,
        DOT_PRECISION=cfg.dot_precision,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )


def matmul_accumulate(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` in place, with ``acc`` float32 ``[M, N]`` of unit column stride."""
    size_m, size_k = a.shape
    size_n = b.shape[1]
    if size_m == 0 or size_n == 0 or size_k == 0:
        return
    cfg = launch_config(a.dtype, a.device)
    block_m, block_n = cfg.block_n, cfg.block_v
    grid = (triton.cdiv(size_m, block_m) * triton.cdiv(size_n, block_n),)
    _matmul_accumulate_kernel[grid](
        acc,
        a,
        b,
        size_m,
        size_n,
        size_k,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        acc.stride(0),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=cfg.block_h,
        DOT_PRECISION=cfg.dot_precision,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )
