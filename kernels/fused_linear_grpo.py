"""The GRPO loss fused with the output projection, its gradient made in the forward.

``fused_linear_grpo_loss(hidden, weight, targets, ...)`` is the token-level clipped GRPO loss
of :func:`~stalesim.kernels.reference.grpo_loss_ref` on the log-probs
``θ = log_softmax(hidden @ weight.T / T)[targets]``, with the gradients with respect to
``hidden`` and ``weight`` computed in the forward, so that no logit is ever computed twice.

Why this works: at the token-level ratio (no proximal policy, no cap, no KL), the loss's
derivative per token ``∂ℓ/∂θ`` depends on that token's ``θ`` alone, and the logits' gradient of
row ``i`` is ``D[i, v] = c_i (onehot(y_i)[v] - exp(z[i, v] - lse_i))`` with
``c_i = a_i ∂ℓ/∂θ_i / T``. Row chunk by row chunk:

1. **Logit tiles** (``logits_exp_kernel``, a Triton matmul): each ``[BLOCK_N, TILE_V]`` tile of
   ``z = hidden @ weight.T / T`` keeps, in its epilogue, the scaled exponentials
   ``E = exp(z - m)`` with ``m`` the row's maximum within the tile (stored in the input dtype),
   the tile's ``m`` and ``Σ E`` per row, and the target's logit from the tile that holds it.
2. **A small pass** (plain torch over ``[rows, V / TILE_V]``) combines the partials into the
   row's log-sum-exp and ``θ``, evaluates ``c_i``, and turns each tile's partial into the
   per-(row, tile) gradient scale ``s = -c_i exp(m - lse_i)``, so ``D = s E + c_i onehot``.
3. **Two Triton matmuls apply those scales as they load** ``E``:
   ``dHidden[chunk] = D @ weight`` (``grad_hidden_kernel``, the whole vocabulary in its
   reduction, so each chunk's rows are written once) and ``dWeight += D.T @ hidden[chunk]``
   (``grad_weight_kernel``, written by the first chunk, accumulated by the others: one
   rounding to the weight dtype per chunk, the products themselves accumulate in float32).

FLOPs: ``6 N H V`` (one logit product, two gradient products), against the low-memory
path's ``8 N H V`` that recomputes the logits in the backward. HBM traffic beyond the matmuls'
operands: ``E`` written once and read twice (6 bytes per logit in bf16).

**Extra memory** (beyond the inputs and the two gradient buffers the op returns): one chunk's
``E`` plus its partials, ``chunk_rows * (V * e + 12 * ceil(V / TILE_V) + 16)`` bytes for
element size ``e``, plus ``24 N`` bytes of per-position vectors; :func:`chunk_plan` chooses
``chunk_rows`` from the ``memory_budget`` (the fewest chunks of whole row tiles that fit it,
split evenly) and :meth:`ChunkPlan.extra_bytes` states the total. At N=16,384, H=2,048,
V=248,320 in bf16 with the default 1 GiB budget: 8 chunks of 2,048 rows, 1,041,383,424 bytes
extra (0.96x the 1,084,227,584 bytes of gradient buffers; the peak is 1.96x them).

With ``gradient_gemms="torch"`` step 3 is instead one pass writing ``D`` over ``E``, then the
library's GEMMs (cuBLAS on a GPU); which is faster is for a GPU run to say.

Masked positions (mask 0, and the ``P - L`` unused positions) are never read: a row block of
the chunk with no kept row runs no matmul loop, and their gradient rows are exact zeros, so
their hidden states and targets may hold anything (NaN included).

Non-finite values of kept positions follow the reference: NaN or ``inf`` in a kept row of
``hidden``, or in ``weight`` where it reaches that row's logits, makes its ``θ``, the loss and
the gradients it touches NaN; on CUDA a kept target outside ``[0, V)`` gives a NaN ``θ`` instead
of a host synchronisation (CPU tensors are checked and refused).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl
from stalesim.kernels._buffers import new_buffer
from stalesim.kernels._grad_in_forward import require_token_level, row_weights
from stalesim.kernels._logprob_device import launch_on
from stalesim.kernels.backend import Backend, load_triton_module, resolve_backend
from stalesim.kernels.checks import (
    KERNEL_FLOAT_DTYPES,
    REFERENCE_FLOAT_DTYPES,
    check_fused_linear_inputs,
    check_grpo_loss_inputs,
    require_shape,
    require_targets_in_range,
    require_tensor,
    value_checks_enabled,
)
from stalesim.kernels.loss import STAT_NAMES, grpo_loss
from stalesim.kernels.options import GRPOOptions, resolve_options

DEFAULT_MEMORY_BUDGET = 2**30
"""Bytes a row chunk's scaled exponentials and partials may take (1 GiB)."""

SCALE_BLOCK = 4096
"""Elements per program of the backward's upstream scaling."""

SCALE_COLUMNS = 2048
"""Columns per program of the pass that writes ``D`` over ``E`` (``gradient_gemms="torch"``)."""

GRADIENT_GEMMS = ("triton", "torch")
"""How the two gradient products run: Triton kernels that apply the scales as they load ``E``
(the default), or a pass writing ``D`` over ``E`` then the library's GEMMs (cuBLAS on a GPU:
one more read and write of ``E``, for GEMMs at the library's speed, and a chunk's copy of its
hidden rows with the skipped ones zeroed, ``chunk_rows * H * e`` bytes more)."""


# --------------------------------------------------------------------------------------------
# Launch configuration and memory plan
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradInForwardLaunch:
    """Tiles of the three kernels. The logit tile is ``block_n x tile_v`` (``block_h`` deep);
    ``tile_v`` is the unit of the partials, and the gradient kernels' vocabulary blocks
    (``block_k`` of dHidden, ``block_v`` of dWeight) divide it, so that one block reads one
    scale per row. Both gradient kernels write ``grad_h``-wide blocks of their output."""

    block_n: int
    tile_v: int
    block_h: int
    grad_h: int
    block_k: int
    block_v: int
    block_r: int
    num_warps: int
    num_stages: int
    dot_precision: str


def launch_config(dtype: torch.dtype, device: torch.device) -> GradInForwardLaunch:
    """Tiles for ``dtype`` operands on ``device``: the usual 128-wide tensor-core tiles on a
    GPU (a 128 x 256 logit tile, the fused forward's fastest on the H200), the smallest
    ``tl.dot`` allows under the interpreter (so test shapes span several tiles)."""
    if device.type != "cuda":
        return GradInForwardLaunch(16, 32, 16, 16, 16, 16, 16, 1, 1, "ieee")
    tf32 = dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest"
    deep = 32 if dtype == torch.float32 else 64
    return GradInForwardLaunch(
        128, 256, deep, 128, deep, 128, deep, num_warps=8, num_stages=3,
        dot_precision="tf32" if tf32 else "ieee",
    )  # fmt: skip


@dataclass(frozen=True)
class ChunkPlan:
    """``n_rows`` walked in ``n_chunks`` chunks of whole row tiles, as even as tiles allow
    (chunks differ by at most one tile; see :meth:`bounds`), the largest ``chunk_rows`` rows,
    each row with ``n_tiles`` logit tiles."""

    n_rows: int
    n_vocab: int
    block_n: int
    chunk_rows: int
    n_chunks: int
    n_tiles: int

    def bounds(self) -> list[tuple[int, int]]:
        """``(first row, end row)`` of each non-empty chunk: chunk ``i`` holds row tiles
        ``[i T // n, (i + 1) T // n)`` of the ``T`` row tiles."""
        tiles = math.ceil(self.n_rows / self.block_n)
        edges = [min(self.n_rows, i * tiles // self.n_chunks * self.block_n)
                 for i in range(self.n_chunks + 1)]  # fmt: skip
        return [(a, b) for a, b in itertools.pairwise(edges) if b > a]

    def chunk_bytes(self, element_bytes: int) -> int:
        """The largest chunk's working memory: ``E`` in the input dtype, the per-(row, tile)
        max and scale (the tile sums share the scales' buffer) and the per-row target logit,
        log-sum-exp, coefficient and log-prob (float32)."""
        return self.chunk_rows * row_bytes(self.n_vocab, element_bytes, self.n_tiles)

    def extra_bytes(self, element_bytes: int) -> int:
        """Everything the op allocates beyond its two gradient buffers: a chunk's working
        memory plus six per-position float32 vectors (μ, advantage, row weight, θ, the
        coefficient and the gathered targets' validity)."""
        return self.chunk_bytes(element_bytes) + 24 * self.n_rows


def row_bytes(n_vocab: int, element_bytes: int, n_tiles: int) -> int:
    """Working memory per chunk row: ``E`` (``V e``), two float32 partials per tile, and a
    few float32 per row (the tile-sum buffer holds the scales, counted once more for the
    small pass's temporaries)."""
    return n_vocab * element_bytes + 12 * n_tiles + 16


def chunk_plan(
    n_rows: int, n_vocab: int, element_bytes: int, block_n: int, tile_v: int, budget: int
) -> ChunkPlan:
    """The fewest chunks of whole row tiles whose largest fits ``budget`` bytes, split evenly.

    Raises:
        ValueError: ``budget`` too small for one row tile.
    """
    n_tiles = max(1, math.ceil(n_vocab / tile_v))
    per_row = row_bytes(n_vocab, element_bytes, n_tiles)
    most_tiles = budget // per_row // block_n
    if most_tiles < 1:
        raise ValueError(
            f"memory_budget={budget}: one chunk of {block_n} rows needs "
            f"{block_n * per_row} bytes at V={n_vocab}"
        )
    row_tiles = math.ceil(n_rows / block_n)
    n_chunks = max(1, math.ceil(row_tiles / most_tiles))
    chunk_rows = min(n_rows, math.ceil(row_tiles / n_chunks) * block_n)
    return ChunkPlan(n_rows, n_vocab, block_n, max(1, chunk_rows), n_chunks, n_tiles)


def gradient_bytes(n_rows: int, n_hidden: int, n_vocab: int, element_bytes: int) -> int:
    """Bytes of the dHidden and dWeight buffers the op returns."""
    return (n_rows + n_vocab) * n_hidden * element_bytes


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@triton.jit
def logits_exp_kernel(
    hidden_ptr,  # [C, H] the chunk's rows
    weight_ptr,  # [V, H]
    targets_ptr,  # [C] int
    keep_ptr,  # [C] uint8: 0 skips the row
    exp_ptr,  # [C, V] out, input dtype: exp(z - m_tile)
    tile_max_ptr,  # [C, T] out float32
    tile_sum_ptr,  # [C, T] out float32
    target_logit_ptr,  # [C] out float32: z at the target (written by the tile holding it)
    n_rows,
    n_vocab,
    n_hidden,
    n_tiles,
    stride_hidden,
    stride_weight,
    stride_exp,
    inv_temperature,
    GROUP_ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    TILE_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """One ``[BLOCK_N, TILE_V]`` logit tile per program, grouped so that GROUP_ROWS row blocks
    walk the same weight tiles side by side (L2 reuse). HBM (predicted): ``E`` written once,
    ``8`` bytes per (row, tile) of partials."""
    pid = tl.program_id(0)
    row_blocks = (n_rows + BLOCK_N - 1) // BLOCK_N
    per_group = GROUP_ROWS * n_tiles
    first_block = (pid // per_group) * GROUP_ROWS
    group_rows = tl.minimum(row_blocks - first_block, GROUP_ROWS)
    local = pid % per_group
    row_block = first_block + local % group_rows
    tile = local // group_rows

    rows = row_block * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tile * TILE_V + tl.arange(0, TILE_V)
    row_ok = rows < n_rows
    col_ok = cols < n_vocab
    keep = tl.load(keep_ptr + rows, mask=row_ok, other=0) != 0
    # A block with no kept row runs no loop and stores nothing.
    k_end = tl.where(tl.max(keep.to(tl.int32), axis=0) > 0, n_hidden, 0)
    hidden_rows = hidden_ptr + rows.to(tl.int64)[:, None] * stride_hidden
    weight_cols = weight_ptr + cols.to(tl.int64)[None, :] * stride_weight
    acc = tl.zeros((BLOCK_N, TILE_V), dtype=tl.float32)
    for h0 in range(0, k_end, BLOCK_H):
        hk = h0 + tl.arange(0, BLOCK_H)
        h_ok = hk < n_hidden
        a = tl.load(hidden_rows + hk[None, :], mask=keep[:, None] & h_ok[None, :], other=0.0)
        b = tl.load(weight_cols + hk[:, None], mask=h_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    z = tl.where(col_ok[None, :], acc * inv_temperature, float("-inf"))
    tile_max = tl.max(z, axis=1)
    # A tile whose logits are all -inf keeps E = 0 (shift by 0, never by -inf).
    shift = tl.where(tile_max == float("-inf"), 0.0, tile_max)
    e = tl.exp(z - shift[:, None])
    out = exp_ptr + rows.to(tl.int64)[:, None] * stride_exp + cols[None, :]
    tl.store(out, e.to(exp_ptr.dtype.element_ty), mask=keep[:, None] & col_ok[None, :])
    part = rows.to(tl.int64) * n_tiles + tile
    tl.store(tile_max_ptr + part, tile_max, mask=keep)
    tl.store(tile_sum_ptr + part, tl.sum(e, axis=1), mask=keep)
    targets = tl.load(targets_ptr + rows, mask=row_ok, other=-1).to(tl.int32)
    z_target = tl.sum(tl.where(cols[None, :] == targets[:, None], z, 0.0), axis=1)
    here = keep & (targets >= tile * TILE_V) & (targets < tile * TILE_V + TILE_V)
    tl.store(target_logit_ptr + rows, z_target, mask=here)


@triton.jit
def grad_hidden_kernel(
    exp_ptr,  # [C, V] E
    scale_ptr,  # [C, T] float32: -c exp(m - lse)
    coef_ptr,  # [C] float32: c (0 for skipped rows)
    targets_ptr,
    keep_ptr,
    weight_ptr,  # [V, H]
    grad_hidden_ptr,  # [C, H] out
    n_rows,
    n_vocab,
    n_hidden,
    n_tiles,
    stride_exp,
    stride_weight,
    stride_grad,
    TILE_V: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """``dHidden[rows, h] = Σ_v D[rows, v] weight[v, h]``, ``D = s E + c onehot`` made as
    ``E`` is loaded. Programs that share a row block are adjacent (its ``E`` stays in L2)."""
    pid = tl.program_id(0)
    h_blocks = (n_hidden + BLOCK_H - 1) // BLOCK_H
    rows = (pid // h_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    hcols = (pid % h_blocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    row_ok = rows < n_rows
    h_ok = hcols < n_hidden
    keep = tl.load(keep_ptr + rows, mask=row_ok, other=0) != 0
    coef = tl.load(coef_ptr + rows, mask=keep, other=0.0)
    targets = tl.load(targets_ptr + rows, mask=keep, other=-1).to(tl.int32)
    k_end = tl.where(tl.max(keep.to(tl.int32), axis=0) > 0, n_vocab, 0)
    exp_rows = exp_ptr + rows.to(tl.int64)[:, None] * stride_exp
    scale_rows = scale_ptr + rows.to(tl.int64) * n_tiles
    acc = tl.zeros((BLOCK_N, BLOCK_H), dtype=tl.float32)
    for k0 in range(0, k_end, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < n_vocab
        live = keep[:, None] & col_ok[None, :]
        e = tl.load(exp_rows + cols[None, :], mask=live, other=0.0).to(tl.float32)
        s = tl.load(scale_rows + k0 // TILE_V, mask=keep, other=0.0)
        d = e * s[:, None] + tl.where(cols[None, :] == targets[:, None], coef[:, None], 0.0)
        d = tl.where(live, d, 0.0)
        w = tl.load(
            weight_ptr + cols.to(tl.int64)[:, None] * stride_weight + hcols[None, :],
            mask=col_ok[:, None] & h_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(d.to(w.dtype), w, acc, input_precision=DOT_PRECISION)
    out = grad_hidden_ptr + rows.to(tl.int64)[:, None] * stride_grad + hcols[None, :]
    tl.store(out, acc.to(grad_hidden_ptr.dtype.element_ty), mask=row_ok[:, None] & h_ok[None, :])


@triton.jit
def grad_weight_kernel(
    exp_ptr,
    scale_ptr,
    coef_ptr,
    targets_ptr,
    keep_ptr,
    hidden_ptr,  # [C, H]
    grad_weight_ptr,  # [V, H] in/out
    n_rows,
    n_vocab,
    n_hidden,
    n_tiles,
    stride_exp,
    stride_hidden,
    stride_grad,
    ACCUMULATE: tl.constexpr,
    TILE_V: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_R: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """``dWeight[v, h] (+)= Σ_rows D[rows, v] hidden[rows, h]`` over the chunk's rows; the
    vocabulary block lies in one logit tile, so a row's scale is one number per block."""
    pid = tl.program_id(0)
    h_blocks = (n_hidden + BLOCK_H - 1) // BLOCK_H
    v_block = pid // h_blocks
    vcols = v_block * BLOCK_V + tl.arange(0, BLOCK_V)
    hcols = (pid % h_blocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    v_ok = vcols < n_vocab
    h_ok = hcols < n_hidden
    tile = (v_block * BLOCK_V) // TILE_V
    acc = tl.zeros((BLOCK_V, BLOCK_H), dtype=tl.float32)
    for r0 in range(0, n_rows, BLOCK_R):
        rows = r0 + tl.arange(0, BLOCK_R)
        row_ok = rows < n_rows
        keep = tl.load(keep_ptr + rows, mask=row_ok, other=0) != 0
        coef = tl.load(coef_ptr + rows, mask=keep, other=0.0)
        targets = tl.load(targets_ptr + rows, mask=keep, other=-1).to(tl.int32)
        s = tl.load(scale_ptr + rows.to(tl.int64) * n_tiles + tile, mask=keep, other=0.0)
        live = v_ok[:, None] & keep[None, :]
        e = tl.load(
            exp_ptr + rows.to(tl.int64)[None, :] * stride_exp + vcols[:, None],
            mask=live,
            other=0.0,
        ).to(tl.float32)
        d = e * s[None, :] + tl.where(vcols[:, None] == targets[None, :], coef[None, :], 0.0)
        d = tl.where(live, d, 0.0)
        h = tl.load(
            hidden_ptr + rows.to(tl.int64)[:, None] * stride_hidden + hcols[None, :],
            mask=keep[:, None] & h_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(d.to(h.dtype), h, acc, input_precision=DOT_PRECISION)
    out = grad_weight_ptr + vcols.to(tl.int64)[:, None] * stride_grad + hcols[None, :]
    inside = v_ok[:, None] & h_ok[None, :]
    if ACCUMULATE:
        acc += tl.load(out, mask=inside, other=0.0).to(tl.float32)
    tl.store(out, acc.to(grad_weight_ptr.dtype.element_ty), mask=inside)


@triton.jit
def scale_exp_kernel(
    exp_ptr,  # [C, V] E in, D out (in place)
    scale_ptr,
    coef_ptr,
    targets_ptr,
    keep_ptr,
    n_vocab,
    n_tiles,
    stride_exp,
    TILE_V: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Program (row, block of columns): ``D = s E + c onehot`` written over ``E`` (exact
    zeros for a skipped row, whatever its ``E`` holds), for the library GEMMs of
    ``gradient_gemms="torch"``. HBM: ``E`` read once and ``D`` written once."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < n_vocab
    keep = tl.load(keep_ptr + row) != 0
    coef = tl.load(coef_ptr + row)
    target = tl.load(targets_ptr + row).to(tl.int32)
    live = cols < tl.where(keep, n_vocab, 0)  # a skipped row reads nothing
    s = tl.load(scale_ptr + row * n_tiles + cols // TILE_V, mask=live, other=0.0)
    e = tl.load(exp_ptr + row * stride_exp + cols, mask=live, other=0.0).to(tl.float32)
    d = tl.where(keep, e * s + tl.where(cols == target, coef, 0.0), 0.0)
    tl.store(exp_ptr + row * stride_exp + cols, d.to(exp_ptr.dtype.element_ty), mask=inside)


# --------------------------------------------------------------------------------------------
# The forward that makes the gradients
# --------------------------------------------------------------------------------------------


def _scales(
    tile_max: torch.Tensor,
    tile_sum: torch.Tensor,
    target_logit: torch.Tensor,
    targets: torch.Tensor,
    keep: torch.Tensor,
    mu: torch.Tensor,
    adv: torch.Tensor,
    weight: torch.Tensor,
    n_vocab: int,
    inv_temperature: float,
    eps_low: float,
    eps_high: float,
    theta_out: torch.Tensor,
    coef_out: torch.Tensor,
) -> None:
    """The small pass: ``θ`` and ``c`` per row, and the tile sums turned into the scales
    ``-c exp(m - lse)`` in place (skipped rows, whose partials were never written, get 0)."""
    row_max = torch.where(keep[:, None], tile_max, float("-inf")).amax(dim=1)
    shift = torch.where(row_max == float("-inf"), 0.0, row_max)
    rel = torch.where(keep[:, None], tile_max - shift[:, None], float("-inf"))
    log_sum = torch.log((torch.where(keep[:, None], tile_sum, 0.0) * torch.exp(rel)).sum(dim=1))
    in_vocab = (targets >= 0) & (targets < n_vocab)
    theta = torch.where(in_vocab, (target_logit - shift) - log_sum, float("nan"))
    theta = torch.where(keep, theta, 0.0)
    # The token-level clipped surrogate's derivative (reference.grpo_loss_ref, p = μ).
    ratio = torch.exp(theta - mu)
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    unclipped = (ratio * adv <= clipped * adv) | torch.isnan(ratio)
    dtheta = torch.where(unclipped, -adv * ratio, 0.0)
    coef = torch.where(keep, weight * dtheta * inv_temperature, 0.0)
    theta_out.copy_(theta)
    coef_out.copy_(coef)
    # exp(m - lse) = exp((m - shift) - log_sum)
    scale = -coef[:, None] * torch.exp(rel - log_sum[:, None])
    tile_sum.copy_(torch.where(keep[:, None], scale, 0.0))


def grad_in_forward(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    keep: torch.Tensor,
    mu: torch.Tensor,
    adv: torch.Tensor,
    row_weight: torch.Tensor,
    temperature: float,
    eps_low: float,
    eps_high: float,
    plan: ChunkPlan,
    cfg: GradInForwardLaunch,
    want_weight: bool,
    gradient_gemms: str = "triton",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``θ[N]`` (float32, 0 where skipped), ``dHidden[N, H]`` and ``dWeight[V, H]`` (or
    ``None``) for an upstream gradient of 1, chunk by chunk of ``plan``. The gradient products
    are the two Triton kernels that scale ``E`` as they load it, or (``"torch"``) one pass
    that writes ``D`` over ``E`` and the library's GEMMs (cuBLAS on a GPU)."""
    n_rows, n_hidden = hidden.shape
    n_vocab = weight.shape[0]
    device, dtype = hidden.device, hidden.dtype
    theta = new_buffer((n_rows,), torch.float32, device)
    coef = new_buffer((n_rows,), torch.float32, device)
    grad_hidden = new_buffer((n_rows, n_hidden), dtype, device)
    grad_weight = new_buffer((n_vocab, n_hidden), dtype, device) if want_weight else None
    rows = plan.chunk_rows
    exp_buf = new_buffer((rows, n_vocab), dtype, device)
    tile_max = new_buffer((rows, plan.n_tiles), torch.float32, device)
    tile_sum = new_buffer((rows, plan.n_tiles), torch.float32, device)
    target_logit = new_buffer((rows,), torch.float32, device)
    keep8 = keep.view(torch.uint8)
    inv_t = 1.0 / temperature
    h_blocks = triton.cdiv(n_hidden, cfg.grad_h)
    common = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    if n_rows == 0 and grad_weight is not None:
        grad_weight.zero_()
    for r0, r1 in plan.bounds():
        c = r1 - r0
        h, t, k = hidden[r0:r1], targets[r0:r1], keep8[r0:r1]
        e = exp_buf[:c]
        with launch_on(device):
            logits_exp_kernel[(triton.cdiv(c, cfg.block_n) * plan.n_tiles,)](
                h, weight, t, k, e, tile_max[:c], tile_sum[:c], target_logit[:c],
                c, n_vocab, n_hidden, plan.n_tiles, h.stride(0), weight.stride(0), e.stride(0),
                inv_t, GROUP_ROWS=8, BLOCK_N=cfg.block_n, TILE_V=cfg.tile_v,
                BLOCK_H=cfg.block_h, DOT_PRECISION=cfg.dot_precision, **common,
            )  # fmt: skip
        _scales(
            tile_max[:c], tile_sum[:c], target_logit[:c], t, keep[r0:r1], mu[r0:r1],
            adv[r0:r1], row_weight[r0:r1], n_vocab, inv_t, eps_low, eps_high,
            theta[r0:r1], coef[r0:r1],
        )  # fmt: skip
        scales = tile_sum[:c]
        if gradient_gemms == "torch":
            with launch_on(device):
                scale_exp_kernel[(c, triton.cdiv(n_vocab, SCALE_COLUMNS))](
                    e, scales, coef[r0:r1], t, k, n_vocab, plan.n_tiles, e.stride(0),
                    TILE_V=cfg.tile_v, BLOCK=SCALE_COLUMNS, num_warps=4,
                )  # fmt: skip
            torch.mm(e, weight, out=grad_hidden[r0:r1])
            if grad_weight is not None:
                # The GEMM reads every row of the chunk: a skipped row's hidden state (which
                # may be NaN) is replaced by zeros, as the Triton kernels never load it.
                kept = torch.where(keep[r0:r1, None], h, 0.0)
                if r0 == 0:
                    torch.mm(e.T, kept, out=grad_weight)
                else:
                    grad_weight.addmm_(e.T, kept)
            continue
        with launch_on(device):
            grad_hidden_kernel[(triton.cdiv(c, cfg.block_n) * h_blocks,)](
                e, scales, coef[r0:r1], t, k, weight, grad_hidden[r0:r1],
                c, n_vocab, n_hidden, plan.n_tiles, e.stride(0), weight.stride(0),
                grad_hidden.stride(0), TILE_V=cfg.tile_v, BLOCK_N=cfg.block_n,
                BLOCK_H=cfg.grad_h, BLOCK_K=cfg.block_k, DOT_PRECISION=cfg.dot_precision,
                **common,
            )  # fmt: skip
            if grad_weight is not None:
                grad_weight_kernel[(triton.cdiv(n_vocab, cfg.block_v) * h_blocks,)](
                    e, scales, coef[r0:r1], t, k, h, grad_weight,
                    c, n_vocab, n_hidden, plan.n_tiles, e.stride(0), h.stride(0),
                    grad_weight.stride(0), ACCUMULATE=r0 > 0, TILE_V=cfg.tile_v,
                    BLOCK_V=cfg.block_v, BLOCK_H=cfg.grad_h, BLOCK_R=cfg.block_r,
                    DOT_PRECISION=cfg.dot_precision, **common,
                )  # fmt: skip
    return theta, grad_hidden, grad_weight


# --------------------------------------------------------------------------------------------
# Autograd and the functional API
# --------------------------------------------------------------------------------------------


class _FusedLinearGRPO(torch.autograd.Function):
    """Loss and statistics from hidden states; both gradients are made in the forward and the
    backward only scales them by the upstream gradient (nothing at all when it is 1)."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        flat: torch.Tensor,
        targets: torch.Tensor,
        keep: torch.Tensor,
        grpo_inputs: tuple,
        opts: GRPOOptions,
        temperature: float,
        memory_budget: int,
        gradient_gemms: str,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        behaviour_logp, advantages, mask = grpo_inputs
        rows, positions, _ = hidden.shape
        length = mask.shape[1]
        m = mask != 0
        pad = (0, positions - length)
        mu = torch.nn.functional.pad(torch.where(m, behaviour_logp.float(), 0.0), pad)
        adv = advantages.float()[:, None].expand(rows, positions).reshape(-1)
        row_weight = row_weights(mask, opts)[:, None].expand(rows, positions).reshape(-1)
        cfg = launch_config(flat.dtype, flat.device)
        plan = chunk_plan(
            flat.shape[0], weight.shape[0], flat.element_size(), cfg.block_n, cfg.tile_v,
            memory_budget,
        )  # fmt: skip
        theta, grad_hidden, grad_weight = grad_in_forward(
            flat, weight, targets, keep, mu.reshape(-1), adv, row_weight, temperature,
            opts.eps_low, opts.eps_high, plan, cfg, want_weight=ctx.needs_input_grad[1],
            gradient_gemms=gradient_gemms,
        )  # fmt: skip
        with torch.no_grad():
            loss, stats = grpo_loss(
                theta.view(rows, positions)[:, :length],
                behaviour_logp,
                advantages,
                mask,
                options=opts,
                backend="triton",
            )
        ctx.grads = (grad_hidden, grad_weight)
        ctx.shape = hidden.shape
        stacked = torch.stack(list(stats.values()))
        ctx.mark_non_differentiable(stacked)
        return loss, stacked

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, _grad_stats: torch.Tensor):
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError(
                "fused_linear_grpo_loss: the gradients were already used by an earlier backward"
            )
        scale = load_triton_module("_logits_grpo_triton").scale_kernel
        upstream = grad_loss.reshape(1).to(torch.float32)
        for grad in grads:
            if grad is not None and grad.numel() > 0:
                with launch_on(grad.device):
                    scale[(triton.cdiv(grad.numel(), SCALE_BLOCK),)](
                        grad, upstream, grad.numel(), BLOCK=SCALE_BLOCK
                    )
        grad_hidden, grad_weight = grads
        return (grad_hidden.view(ctx.shape), grad_weight) + (None,) * 8


def _reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
    opts: GRPOOptions,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The same loss from the references: log-probs of the kept positions only, so skipped
    positions may hold anything, then :func:`reference.grpo_loss_ref`."""
    from stalesim.kernels.reference import fused_linear_logprobs_ref, grpo_loss_ref

    length = targets.shape[1]
    m = mask != 0
    kept = hidden[:, :length][m]
    logp_kept = fused_linear_logprobs_ref(kept, weight, targets[m], temperature=temperature)
    logp = torch.zeros(targets.shape, dtype=logp_kept.dtype, device=hidden.device)
    logp = logp.masked_scatter(m, logp_kept)
    return grpo_loss_ref(logp, behaviour_logp, advantages, mask, options=opts)


def fused_linear_grpo_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    options: GRPOOptions | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    gradient_gemms: str = "triton",
    backend: Backend = "auto",
    **overrides: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The token-level GRPO loss of ``log_softmax(hidden @ weight.T / T)`` at ``targets``,
    differentiable with respect to ``hidden`` and ``weight``, with both gradients made in the
    forward (6 N H V FLOPs, no logit recomputed) and never the ``[N, V]`` logits held.

    Args:
        hidden: ``[R, P, H]`` float32, bfloat16 or float16 (float64 with the reference), with
            ``P >= L``; position ``t`` predicts ``targets[:, t]``, positions ``t >= L`` are
            unused.
        weight: ``[V, H]``, the same dtype.
        targets: ``[R, L]`` token ids; never read where ``mask`` is 0.
        behaviour_logp, advantages, mask, options, overrides: as
            :func:`~stalesim.kernels.grpo_loss` takes them, restricted to the token-level
            ratio without ``is_cap`` or a KL penalty (``beta = 0``).
        temperature: finite and >= 1e-3.
        memory_budget: bytes one row chunk's scaled exponentials and partials may take (see
            :func:`chunk_plan`; the op's extra memory is :meth:`ChunkPlan.extra_bytes`).
        gradient_gemms: ``"triton"`` or ``"torch"`` (see :data:`GRADIENT_GEMMS`).
        backend: ``"auto"`` (Triton on CUDA, the reference on CPU), ``"triton"`` (on CPU: the
            interpreter) or ``"reference"``.

    Returns:
        The loss and the statistics dict, as :func:`~stalesim.kernels.grpo_loss` returns them
        (computed from the same log-probs). Gradient rows of skipped positions are exactly 0.

    Raises:
        ValueError: mismatched shapes, dtypes or devices, an unsupported option, a memory
            budget too small for one row tile, kept targets outside ``[0, V)`` (CPU tensors
            and the reference; on CUDA the kept row's log-prob is NaN instead).
    """
    for name, value in (("hidden", hidden), ("targets", targets), ("mask", mask)):
        require_tensor(name, value)
    require_shape("hidden", hidden, (None, None, None), "[R, P, H]")
    rows, positions, n_hidden = hidden.shape
    require_shape("targets", targets, (rows, None), "[R, L]")
    length = targets.shape[1]
    if positions < length:
        raise ValueError(
            f"hidden: {positions} positions per row, fewer than the {length} tokens of targets"
        )
    require_shape("mask", mask, (rows, length), "[R, L]")
    opts = resolve_options(options, overrides)
    require_token_level("fused_linear_grpo_loss", opts)
    if gradient_gemms not in GRADIENT_GEMMS:
        raise ValueError(
            f"gradient_gemms={gradient_gemms!r}: expected one of {', '.join(GRADIENT_GEMMS)}"
        )
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget <= 0:
        raise ValueError(f"memory_budget={memory_budget!r}: expected a positive number of bytes")
    keep = torch.nn.functional.pad(mask != 0, (0, positions - length)).reshape(-1)
    flat = hidden.reshape(rows * positions, n_hidden)
    flat_targets = torch.nn.functional.pad(targets, (0, positions - length)).reshape(-1)
    chosen = resolve_backend(backend, hidden.device)
    allowed = KERNEL_FLOAT_DTYPES if chosen == "triton" else REFERENCE_FLOAT_DTYPES
    temperature = check_fused_linear_inputs(
        flat, weight, flat_targets, temperature, allowed=allowed, check_values=False
    )
    if chosen == "reference" or value_checks_enabled(hidden.device):
        require_targets_in_range("targets", flat_targets[keep], weight.shape[0])
    check_grpo_loss_inputs(
        behaviour_logp, behaviour_logp, advantages, mask, ref_logp=None, proximal_logp=None,
        options=opts, allowed=allowed,
    )  # fmt: skip
    if chosen == "reference":
        return _reference(
            hidden, weight, targets, behaviour_logp, advantages, mask, temperature, opts
        )
    # The kernels walk rows and columns with unit column stride.
    flat = flat if flat.stride(-1) == 1 else flat.contiguous()
    weight = weight if weight.stride(-1) == 1 else weight.contiguous()
    loss, stats = _FusedLinearGRPO.apply(
        hidden, weight, flat, flat_targets.contiguous(), keep.contiguous(),
        (behaviour_logp, advantages, mask), opts, temperature, memory_budget, gradient_gemms,
    )  # fmt: skip
    return loss, dict(zip(STAT_NAMES[:-1], stats.unbind(0), strict=False))
