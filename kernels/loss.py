"""The GRPO loss as one fused Triton pass forward and one backward, behind autograd.

``grpo_loss`` computes exactly what :func:`stalesim.kernels.reference.grpo_loss_ref`
specifies (read that docstring for the math, the options and the statistics). The forward
kernel reads each per-token tensor once and writes the per-token derivative ``∂ℓ/∂θ`` (before
the aggregation weight) plus per-(row, tile) partial sums; one more single-program kernel
combines the partials of the ``R * T`` programs into the loss, the statistics and the row
aggregation weights. A forward is thus two launches (three at sequence level, whose ratio needs
per-row sums first) and never synchronises with the host. The backward kernel scales the saved
derivative by the upstream gradient and the row's aggregation weight. Only ``logp`` receives a gradient, so the loss composes through autograd with
``token_logprobs`` and ``fused_linear_logprobs``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from stalesim.kernels._buffers import new_buffer
from stalesim.kernels.backend import Backend, load_triton_module, resolve_backend
from stalesim.kernels.checks import (
    KERNEL_FLOAT_DTYPES,
    REFERENCE_FLOAT_DTYPES,
    check_grpo_loss_inputs,
)
from stalesim.kernels.options import GRPOOptions, resolve_options
from stalesim.kernels.reference import grpo_loss_ref

MAX_BLOCK = 512
"""Tokens per program: a tile of one row."""

FINALIZE_BLOCK = 1024
"""Partials the single finalize program reads per step."""

STAT_NAMES = (
    "clip_frac_low",
    "clip_frac_high",
    "ratio_mean",
    "ratio_max",
    "is_trunc_frac",
    "ess",
    "approx_kl",
    "ref_kl",
)


def grpo_loss(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    proximal_logp: torch.Tensor | None = None,
    options: GRPOOptions | None = None,
    backend: Backend = "auto",
    **overrides: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO loss and off-policy statistics; the math is :func:`reference.grpo_loss_ref`'s.

    The options are one :class:`~stalesim.kernels.options.GRPOOptions` (``options=``), or
    keywords naming its fields (``eps_low=0.2, eps_high=0.28, aggregation="token_mean"``),
    which override the fields of ``options`` when both are given.

    ``backend="auto"`` runs the Triton kernels on CUDA (the reference for float64 inputs, which
    the kernels do not read) and the reference on CPU; ``"triton"`` forces the kernels (under
    the Triton interpreter on CPU); ``"reference"`` forces plain torch.

    Returns the scalar loss (float32 from the kernels) and a dict of detached 0-dim float32
    tensors on the inputs' device with the statistics the reference documents (``ref_kl``
    only when ``ref_logp`` is given). Reading them as Python floats synchronises the device.
    NaN or ``inf`` in a real (masked-in) token gives a NaN loss on every backend; padding may
    hold anything.
    """
    opts = resolve_options(options, overrides)
    if not isinstance(logp, torch.Tensor):
        raise ValueError(f"logp: expected a torch.Tensor, got {type(logp).__name__}")
    chosen = resolve_backend(backend, logp.device)
    if chosen == "triton" and backend == "auto" and logp.dtype == torch.float64:
        chosen = "reference"
    tensors = {"ref_logp": ref_logp, "proximal_logp": proximal_logp}
    if chosen == "reference":
        return grpo_loss_ref(logp, behaviour_logp, advantages, mask, **tensors, options=opts)

    if logp.dtype in REFERENCE_FLOAT_DTYPES and logp.dtype not in KERNEL_FLOAT_DTYPES:
        raise ValueError(
            f"logp: backend='triton' reads float32, float16 or bfloat16, got "
            f"{str(logp.dtype).removeprefix('torch.')}; use backend='reference' for float64"
        )
    check_grpo_loss_inputs(logp, behaviour_logp, advantages, mask, **tensors, options=opts)
    # Without CUDA, load_triton_module switches the interpreter on; with CUDA it must already be.
    interpreted = os.environ.get("TRITON_INTERPRET") == "1" or not torch.cuda.is_available()
    if logp.device.type == "cpu" and not interpreted:
        raise ValueError(
            "backend='triton' with CPU tensors needs the Triton interpreter "
            "(set TRITON_INTERPRET=1 before importing triton)"
        )
    if mask.dtype == torch.bool:
        # Triton reads bytes; a bool tensor is reinterpreted without a copy.
        mask = mask.view(torch.uint8)
    loss, stats = _GRPOLoss.apply(
        logp, behaviour_logp, advantages, mask, proximal_logp, ref_logp, opts
    )
    names = STAT_NAMES if ref_logp is not None else STAT_NAMES[:-1]
    return loss, dict(zip(names, stats.unbind(0), strict=False))


class _GRPOLoss(torch.autograd.Function):
    """Autograd over the fused kernels; gradient w.r.t. ``logp`` only."""

    @staticmethod
    def forward(
        ctx,
        logp: torch.Tensor,
        behaviour_logp: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        proximal_logp: torch.Tensor | None,
        ref_logp: torch.Tensor | None,
        options: GRPOOptions,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, stats, dloss, row_weight = _forward(
            logp, behaviour_logp, advantages, mask, proximal_logp, ref_logp, options
        )
        ctx.save_for_backward(dloss, row_weight)
        ctx.logp_dtype = logp.dtype
        ctx.mark_non_differentiable(stats)
        return loss, stats

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_stats: torch.Tensor):
        dloss, row_weight = ctx.saved_tensors
        kernels = load_triton_module("_grpo_loss_triton")
        rows, length = dloss.shape
        block, tiles = _tiling(length)
        grad = new_buffer((rows, length), ctx.logp_dtype, dloss.device)
        if rows * length > 0:
            kernels.grpo_backward_kernel[(rows * tiles,)](
                dloss,
                row_weight,
                grad_loss.reshape(1).to(torch.float32),
                grad,
                length,
                tiles,
                BLOCK=block,
            )
        return grad, None, None, None, None, None, None


def _tiling(length: int) -> tuple[int, int]:
    """Tile width (a power of two, at most MAX_BLOCK) and tiles per row for rows of ``length``."""
    block = min(max(16, 1 << max(length - 1, 0).bit_length()), MAX_BLOCK)
    return block, max(1, -(-length // block))


def _forward(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    proximal_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    options: GRPOOptions,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, stacked statistics, per-token ∂ℓ/∂θ and per-row aggregation weights."""
    kernels = load_triton_module("_grpo_loss_triton")
    device = logp.device
    rows, length = logp.shape
    block, tiles = _tiling(length)
    programs = rows * tiles
    logp, behaviour_logp, advantages, mask = (
        t.contiguous() for t in (logp, behaviour_logp, advantages, mask)
    )
    if proximal_logp is not None:
        prox_mode = int(kernels.PROX_TENSOR)
        proximal_logp = proximal_logp.contiguous()
    elif options.is_cap is not None:
        prox_mode = int(kernels.PROX_CURRENT)
    else:
        prox_mode = int(kernels.PROX_BEHAVIOUR)
    if ref_logp is not None:
        ref_logp = ref_logp.contiguous()
    # Unused pointer arguments still need a tensor; the constexpr flags keep them unread.
    prox_arg = proximal_logp if proximal_logp is not None else logp
    ref_arg = ref_logp if ref_logp is not None else logp

    dloss = new_buffer((rows, length), torch.float32, device)
    partial = new_buffer((int(kernels.NUM_STATS), programs), torch.float32, device)
    sequence_sums = dloss  # a placeholder unless the ratio is per sequence
    tiles_block = 1 << max(tiles - 1, 0).bit_length()
    if programs > 0 and (options.ratio_level == "sequence"):
        sequence_sums = new_buffer((3, programs), torch.float32, device)
        kernels.grpo_sequence_sums_kernel[(programs,)](
            logp, behaviour_logp, prox_arg, mask, sequence_sums, length, tiles, programs,
            PROX_MODE=prox_mode, BLOCK=block,
        )  # fmt: skip
    if programs > 0:
        kernels.grpo_forward_kernel[(programs,)](
            logp, behaviour_logp, prox_arg, ref_arg, advantages, mask,
            sequence_sums, dloss, partial,
            length, tiles, programs,
            options.eps_low, options.eps_high,
            options.is_cap if options.is_cap is not None else 0.0, options.beta,
            PROX_MODE=prox_mode,
            SEQUENCE=(options.ratio_level == "sequence"),
            HAS_CAP=options.is_cap is not None,
            HAS_REF=ref_logp is not None,
            USE_KL=ref_logp is not None and options.beta > 0,
            KL_ESTIMATOR=int(options.kl_estimator[1]),
            BLOCK=block,
            TILES_BLOCK=tiles_block,
        )  # fmt: skip

    loss = new_buffer((1,), torch.float32, device)
    stats = new_buffer((len(STAT_NAMES),), torch.float32, device)
    row_weight = new_buffer((rows,), torch.float32, device)
    aggregation = {
        "token_mean": kernels.AGG_TOKEN_MEAN,
        "seq_mean_token_mean": kernels.AGG_SEQ_MEAN_TOKEN_MEAN,
        "constant": kernels.AGG_CONSTANT,
    }[options.aggregation]
    kernels.grpo_finalize_kernel[(1,)](
        partial, loss, stats, row_weight, rows, tiles, programs,
        1.0 / max(rows * (options.max_tokens or length), 1),
        AGGREGATION=int(aggregation),
        BLOCK=FINALIZE_BLOCK,
        ROWS_BLOCK=max(1, FINALIZE_BLOCK // tiles_block),
        TILES_BLOCK=tiles_block,
    )  # fmt: skip
    return loss.view(()), stats, dloss, row_weight
