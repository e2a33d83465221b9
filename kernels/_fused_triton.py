"""Triton kernels for log-probs fused with the output projection (``logits = hidden @ weight.T``).

Import this module through ``stalesim.kernels.backend.load_triton_module("_fused_triton")``, so
that on a machine without CUDA the interpreter is switched on before the kernels are decorated.

Forward: one program per (block of rows, slice of the vocabulary) walks its slice in tiles;
each logit tile is a ``tl.dot`` of the rows' hidden states with a tile of the weight, reduced
into a running max / sum-exp per row and gathered at the targets, then dropped. The slices'
partial sums are combined per row, and only ``N`` log-sum-exps stay. Programs are numbered in
groups of :data:`GROUP_ROWS` row blocks that walk the same vocabulary slice side by side, so a
weight tile read from HBM serves the whole group from L2; the vocabulary is split until there
are several waves of programs (at N=16,384 too, where 128 row blocks alone would leave an H100's
132 SMs one ragged wave). On a GPU the tile shape and pipeline depth are autotuned over
:data:`FORWARD_CONFIGS` once per (H, V, dtype); under the interpreter one fixed tile is used.

Predicted HBM traffic of the forward at N=16,384, H=2,048, V=248,320, bf16 (analytic, not
measured): the weight (1.02 GB) once per group of 8 row blocks that share it in L2 while it
streams, i.e. N / (8 * 128) = 16 passes = 16 GB in the worst case that L2 holds nothing across
groups, against 16.7 TFLOP of tensor-core work: at ~3.3 TB/s the traffic takes 5 ms and the
matmuls ~17 ms at 990 TFLOP/s, so the forward is compute-bound; ``hidden`` (67 MB) is read once
per vocabulary slice from HBM (5 slices) and per tile from L2.

Backward: why a slab and not atomics or per-tile accumulators. Both gradients reduce over a
dimension the logits tile does not own (dHidden over V, dWeight over N) and are H wide. A
program that owns a row block cannot keep its ``[BLOCK_N, H]`` accumulator in registers for H in
the thousands, and splitting H across programs recomputes every logit tile ``H / BLOCK_H``
times. Accumulating per tile with atomics costs ``N * V * H * (1/BLOCK_N + 1/BLOCK_V)`` float32
atomic adds: about 1.3e11 at N=16k, V=248k, H=2k with 128x128 tiles, which at the L2's atomic
rate takes several times longer than the matmuls themselves. So the backward recomputes the
logit tiles in Triton, turns them into logit gradients ``D = g * (onehot - softmax) / T`` for
one ``[rows, V_chunk]`` slab at a time, and the wrapper (``fused_linear``) feeds each slab to
two cuBLAS GEMMs with float32 accumulation: ``dHidden[chunk] += D @ W[slab]`` into a float32
chunk buffer and ``dWeight[slab] += D.T @ hidden[chunk]``. Predicted HBM traffic of the
backward (analytic): every slab is written once and read twice, 6 bytes per logit in bf16
(24 GB at the target shape, ~7 ms at 3.3 TB/s, under the ~50 ms that its 50 TFLOP of matmuls
take at 990 TFLOP/s); the weight slab and hidden chunk are re-read per tile from L2, and
dWeight is read and written once per row chunk (7 chunks: about 13 GB).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from stalesim.kernels._buffers import new_buffer

GROUP_ROWS = 8
"""Row blocks that walk the same vocabulary slice side by side in the forward (L2 reuse)."""

FORWARD_WAVES = 4
"""The forward splits the vocabulary until there are about this many waves of programs."""

MIN_SPLIT_TILES = 16
"""A vocabulary slice keeps at least this many tiles (its partials cost 12 bytes per row)."""


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

    def launch_args(self) -> dict[str, Any]:
        """The tile constants and launch options a fused kernel takes from this config."""
        return {
            "BLOCK_N": self.block_n,
            "BLOCK_V": self.block_v,
            "BLOCK_H": self.block_h,
            "DOT_PRECISION": self.dot_precision,
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
        }


def launch_config(dtype: torch.dtype, device: torch.device) -> FusedLaunch:
    """Tiles for ``dtype`` operands on ``device`` (the forward autotunes around them on a GPU)."""
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


FORWARD_CONFIGS: tuple[FusedLaunch, ...] = (
    FusedLaunch(128, 256, 64, num_warps=8, num_stages=3, dot_precision="ieee"),
    FusedLaunch(128, 256, 64, num_warps=8, num_stages=4, dot_precision="ieee"),
    FusedLaunch(128, 128, 64, num_warps=8, num_stages=3, dot_precision="ieee"),
    FusedLaunch(128, 128, 64, num_warps=8, num_stages=4, dot_precision="ieee"),
)
"""Tile shapes and pipeline depths the forward autotunes over for 16-bit operands on a GPU
(``dot_precision`` is unused there: 16-bit products are exact). Each compiles for sm_90 without
spills (``tests/kernels/test_fused_linear_gpu_compile.py``). On an H200 at N=16,384, H=2,048,
V=248,320 (``reports/results/gpu/h200-2026-11-27/tune``) the 128x256 tiles ran in 30.9-31.2 ms
(69% of the measured bf16 matmul rate), the 128x128 ones in 36.3-36.8 ms; the 128x64 and 64x128
tiles autotuned over before took 53.7 and 46.2 ms and are no longer candidates."""


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
    stride_hidden,
    stride_weight,
    inv_temperature,
    row_bucket,  # unused by the body: the autotuner's key for N (see row_bucket())
    HAS_BIAS: tl.constexpr,
    GROUP_ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Program (row block, vocabulary split). HBM (predicted): the weight streams once per
    group of GROUP_ROWS row blocks (N / (GROUP_ROWS * BLOCK_N) passes over ``weight``; 16 at
    the target shape), ``hidden`` once per split; 12 bytes per row and split written."""
    # Program (row block, vocabulary split): the running max, sum-exp and target logit of its
    # rows over one split, a whole number of tiles. Programs are numbered so that GROUP_ROWS
    # consecutive ones hold different row blocks of the same split: they stream the same
    # weight tiles at the same time, which L2 then serves to all of them.
    pid = tl.program_id(0)
    # (a + b - 1) // b rather than tl.cdiv: a library @jit helper breaks under the interpreter
    # when triton was imported before TRITON_INTERPRET was set.
    row_blocks = (n_rows + BLOCK_N - 1) // BLOCK_N
    per_group = GROUP_ROWS * n_splits
    first_block = (pid // per_group) * GROUP_ROWS
    group_rows = tl.minimum(row_blocks - first_block, GROUP_ROWS)
    local = pid % per_group
    row_block = first_block + local % group_rows
    split = local // group_rows
    rows = row_block * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1).to(tl.int32)
    split_tiles = ((n_vocab + BLOCK_V - 1) // BLOCK_V + n_splits - 1) // n_splits
    v_begin = split * split_tiles * BLOCK_V
    v_end = tl.minimum(v_begin + split_tiles * BLOCK_V, n_vocab)

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


def _autotuned(kernel):
    configs = [
        triton.Config(
            {"BLOCK_N": c.block_n, "BLOCK_V": c.block_v, "BLOCK_H": c.block_h},
            num_warps=c.num_warps,
            num_stages=c.num_stages,
        )
        for c in FORWARD_CONFIGS
    ]
    # N enters the key as a power-of-two bucket of row blocks: the best tile changes with the
    # number of waves N makes, but a training run that varies N every step must not re-tune
    # every step.
    return triton.autotune(configs=configs, key=["row_bucket", "n_hidden", "n_vocab"])(kernel)


def row_bucket(n_rows: int) -> int:
    """The autotune key's N: the number of 128-row blocks rounded up to a power of two
    (N=16,384 and N=9,000 both tune as 128 blocks; N=2,048 as 16)."""
    blocks = max(1, -(-n_rows // 128))
    return 1 << (blocks - 1).bit_length()


# The interpreter would run every candidate; it gets the one fixed tile of launch_config.
_fused_forward_tuned = (
    None if os.environ.get("TRITON_INTERPRET") == "1" else _autotuned(_fused_forward_kernel)
)


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
    """Program (row block, tile) of one slab. HBM: the slab written once (one pass over the
    slab's logits in the input dtype); the row chunk's hidden states and the slab's weight rows
    (10.5 + 17.3 MB at the target shape) are re-read per tile from L2, not HBM."""
    # Consecutive programs share a row block, so its hidden rows stay in L2 across the chunk.
    blocks_v = (chunk_width + BLOCK_V - 1) // BLOCK_V
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


def vocabulary_splits(n_rows: int, n_vocab: int, cfg: FusedLaunch, device: torch.device) -> int:
    """How many programs share one row block's vocabulary in the forward on ``device``
    (:func:`splits_for` with the GPU's SM count). Under the interpreter it is split in three,
    so tests cover the combine."""
    tiles = triton.cdiv(n_vocab, cfg.block_v)
    if device.type != "cuda":
        return min(3, tiles)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return splits_for(triton.cdiv(n_rows, cfg.block_n), tiles, sms)


def splits_for(row_blocks: int, tiles: int, sms: int) -> int:
    """Vocabulary splits for about :data:`FORWARD_WAVES` waves of programs on ``sms`` SMs
    (N=2,048 is 16 row blocks of 128 on 132 SMs: 33 splits; N=16,384 is 128 row blocks: 5
    splits, where one split would leave one ragged wave), each split keeping at least
    :data:`MIN_SPLIT_TILES` tiles."""
    wanted = triton.cdiv(FORWARD_WAVES * sms, row_blocks)
    return max(1, min(wanted, tiles // MIN_SPLIT_TILES))


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
    # [3, splits, N] float32: the per-split running max, sum-exp and target logit.
    partial = new_buffer((3, splits, n_rows), torch.float32, hidden.device)
    args = (
        hidden, weight, bias if bias is not None else weight, targets,
        partial[0], partial[1], partial[2],
        n_rows, n_vocab, n_hidden, splits, hidden.stride(0), weight.stride(0), 1.0 / temperature,
        row_bucket(n_rows),
    )  # fmt: skip
    flags = {"HAS_BIAS": bias is not None, "GROUP_ROWS": GROUP_ROWS}
    if _fused_forward_tuned is not None and hidden.dtype != torch.float32:
        _fused_forward_tuned[lambda meta: (triton.cdiv(n_rows, meta["BLOCK_N"]) * splits,)](
            *args, **flags, DOT_PRECISION=cfg.dot_precision
        )
    else:
        _fused_forward_kernel[(triton.cdiv(n_rows, cfg.block_n) * splits,)](
            *args, **flags, **cfg.launch_args()
        )
    split_max, split_sum, split_target = partial
    row_max = split_max.amax(dim=0)
    # As in the kernel: a row whose every logit is -inf is shifted by 0, never by -inf.
    shift = torch.where(row_max == float("-inf"), 0.0, row_max)
    log_sum = torch.log((split_sum * torch.exp(split_max - shift)).sum(dim=0))
    torch.add(shift, log_sum, out=lse)
    # The max is subtracted before the sum so large logits keep float32 precision.
    torch.sub(split_target.sum(dim=0) - shift, log_sum, out=logp)
    # A target outside [0, V) matched no column; it is marked on the device, never on the host.
    in_vocab = (targets >= 0) & (targets < n_vocab)
    logp.masked_fill_(~in_vocab, float("nan"))


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
        **cfg.launch_args(),
    )
