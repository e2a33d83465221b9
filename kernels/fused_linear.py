"""Log-probs fused with the output projection:
``logp[i] = log_softmax((hidden[i] @ weight.T + bias) / T)[targets[i]]``.

The Triton path never holds the ``[N, V]`` logits: the forward reduces each logit tile into a
per-row log-sum-exp as soon as it is computed, and the backward recomputes the tiles one row
chunk and one vocabulary slab at a time (see ``_fused_triton`` for why a slab), so its memory
beyond the gradients it returns is a chunk's float32 dHidden plus one slab.

Predicted cost at N=16,384, H=2,048, V=248,320 in bf16 (analytic, not measured):

* FLOPs: forward 2NHV; backward 6NHV (logit recompute, dHidden, dWeight), all on tensor cores
  (Triton ``tl.dot`` for the logit tiles, cuBLAS for both gradient products). 8NHV executed
  for 6NHV of model FLOPs; the bench credits the 6NHV.
* Memory beyond the inputs: dHidden + dWeight (``(N + V) H`` bf16 = 1,084 MB) plus a
  2,048-row float32 dHidden chunk (16.8 MB) and a 2,048 x 5,248 bf16 slab (21.5 MB): 1.035x the
  gradient buffers (target 1.05x), in 8 even row chunks of 48 even slabs; see
  :func:`backward_plan`.

The slab loop is not captured in a CUDA graph, by choice. At the target shape it issues 1,168
launches (3 per slab, 2 per chunk) for about 88 ms of GPU work (measured on the H200,
2026-11-27), about 230 us per slab against tens of microseconds of host time per slab, so the
host stays ahead and a graph would save only the gaps between queued kernels (about 1-2 us
each, ~1-2 ms in all, predicted). Keeping a captured graph across calls would fix the
addresses of its outputs, so the 1 GB dWeight would be overwritten by the next call (wrong
under gradient accumulation) unless copied out, which costs its size again in memory and breaks
the 1.05x target; capturing inside each call saves nothing. The bench's CUDA-graph replay of
the whole case (``graph_median_s``) measures the most a graph could gain.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from types import ModuleType

import torch
from stalesim.kernels._buffers import new_buffer
from stalesim.kernels._logprob_device import launch_on
from stalesim.kernels.backend import load_triton_module, resolve_backend
from stalesim.kernels.checks import (
    KERNEL_FLOAT_DTYPES,
    check_fused_linear_inputs,
    require_tensor,
    value_checks_enabled,
)

EXTRA_FRACTION = 0.04
"""The backward's working memory (one row chunk's float32 dHidden plus one slab of logit
gradients), as a fraction of the gradient buffers it fills (``(N + V) * H`` elements of the
input dtype). At N=16,384, H=2,048, V=248,320 in bf16 that allows 43 MB and the plan uses 38 MB,
so the backward's peak is about 1.035x its gradient buffers (see :func:`backward_plan`)."""

MIN_CHUNK_ROWS = 128
"""Rows per chunk are a multiple of this (one tensor-core tile), and at least this many."""

OUTPUT_TILE = 128
"""The output tile edge the wave count of the dHidden GEMM assumes (cuBLAS's usual tile)."""

DEFAULT_SMS = 132
"""SMs assumed off CUDA (an H100 or H200), so the plan is the same on every machine."""

WAVE_GAIN = 0.02
"""A plan with more row chunks is taken only when it fills the GPU's waves this much better."""


@dataclass(frozen=True)
class BackwardPlan:
    """How the backward walks the ``[N, V]`` logit gradients: ``n_chunks`` even row chunks of
    at most ``chunk_rows`` rows, each in ``n_slabs`` even slabs of at most ``slab_columns``
    vocabulary columns (chunks and slabs are whole tiles and differ by at most one)."""

    chunk_rows: int
    slab_columns: int
    n_chunks: int = 1
    n_slabs: int = 1

    def extra_bytes(self, n_hidden: int, element_bytes: int) -> int:
        """Working memory beyond the gradient buffers: the chunk's float32 dHidden and one
        slab (the float32 bias gradient, ``4 V`` bytes, comes on top when a bias is trained)."""
        return self.chunk_rows * (4 * n_hidden + element_bytes * self.slab_columns)

    def row_bounds(self, n_rows: int) -> list[tuple[int, int]]:
        """``(first, end)`` row of each chunk."""
        return even_bounds(n_rows, MIN_CHUNK_ROWS, self.n_chunks)

    def slab_bounds(self, n_vocab: int, tile: int) -> list[tuple[int, int]]:
        """``(first, end)`` vocabulary column of each slab."""
        return even_bounds(n_vocab, tile, self.n_slabs)


def even_bounds(total: int, unit: int, parts: int) -> list[tuple[int, int]]:
    """``[0, total)`` in ``parts`` runs of whole ``unit``s, as even as units allow (the last
    unit may be partial); empty runs are dropped."""
    units = math.ceil(total / unit)
    edges = [min(total, i * units // parts * unit) for i in range(parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def wave_efficiency(tiles: int, sms: int) -> float:
    """Busy fraction of the SMs over the waves ``tiles`` output tiles take on ``sms`` SMs."""
    return tiles / (math.ceil(tiles / sms) * sms) if tiles else 1.0


def gradient_bytes(n_rows: int, n_hidden: int, n_vocab: int, element_bytes: int) -> int:
    """Bytes of the dHidden and dWeight buffers the backward must return."""
    return (n_rows + n_vocab) * n_hidden * element_bytes


def backward_plan(
    n_rows: int,
    n_hidden: int,
    n_vocab: int,
    element_bytes: int,
    tile: int,
    sms: int = DEFAULT_SMS,
) -> BackwardPlan:
    """Row chunks and slabs that keep the working memory within :data:`EXTRA_FRACTION` of the
    gradient buffers (half of it for the chunk's float32 dHidden, half for the slab), with
    chunks split evenly and their count chosen so the dHidden GEMM of a chunk
    (``chunk_rows / 128 x H / 128`` output tiles) fills whole waves of the ``sms`` SMs: from
    the fewest chunks that fit, up to four more are tried and one is taken only when it is
    :data:`WAVE_GAIN` better. At N=16,384, H=2,048 on 132 SMs, 7 chunks of 2,432 rows would run
    304 tiles in 3 waves (77% busy); 8 chunks of 2,048 rows run 256 tiles in 2 (97%).

    At least :data:`MIN_CHUNK_ROWS` rows (or all of them) and one ``tile`` of columns are used,
    so very small problems may exceed the fraction by a few tiles' worth.
    """
    half = EXTRA_FRACTION * gradient_bytes(n_rows, n_hidden, n_vocab, element_bytes) / 2
    most_tiles = max(1, int(half // (4 * n_hidden)) // MIN_CHUNK_ROWS)
    row_tiles = max(1, math.ceil(n_rows / MIN_CHUNK_ROWS))
    fewest = math.ceil(row_tiles / most_tiles)
    h_tiles = math.ceil(n_hidden / OUTPUT_TILE)
    n_chunks, best = fewest, -1.0
    for parts in range(fewest, min(row_tiles, fewest + 4) + 1):
        efficiency = wave_efficiency(math.ceil(row_tiles / parts) * h_tiles, sms)
        if efficiency > best + WAVE_GAIN:
            n_chunks, best = parts, efficiency
    rows = max(1, min(n_rows, math.ceil(row_tiles / n_chunks) * MIN_CHUNK_ROWS))
    columns = int(half // max(1, rows * element_bytes)) // tile * tile
    columns = min(n_vocab, max(tile, columns))
    n_slabs = max(1, math.ceil(n_vocab / columns))
    widest = min(n_vocab, math.ceil(math.ceil(n_vocab / tile) / n_slabs) * tile)
    return BackwardPlan(rows, max(1, widest), n_chunks, n_slabs)


def _dense_columns(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _accumulate_float32(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``acc += a @ b`` with ``acc`` float32: one cuBLAS GEMM with a float32 output for 16-bit
    operands on CUDA (tensor cores, no float32 copies of ``a`` or ``b``)."""
    if a.dtype == torch.float32:
        acc.addmm_(a, b)
    elif acc.device.type == "cuda":
        torch.addmm(acc, a, b, out_dtype=torch.float32, out=acc)
    else:  # CPU has no mixed-dtype GEMM; tests only
        acc.addmm_(a.float(), b.float())


class _FusedLinearLogprobs(torch.autograd.Function):
    """Autograd wrapper around the fused Triton kernels."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        temperature: float,
        bias: torch.Tensor | None,
        kernels: ModuleType,
    ) -> torch.Tensor:
        hidden, weight = _dense_columns(hidden), _dense_columns(weight)
        bias = bias.contiguous() if bias is not None else None
        targets = targets.contiguous()
        n_rows = hidden.shape[0]
        logp = new_buffer((n_rows,), torch.float32, hidden.device)
        lse = new_buffer((n_rows,), torch.float32, hidden.device)
        with launch_on(hidden.device):
            kernels.fused_forward(hidden, weight, bias, targets, temperature, logp, lse)
        ctx.save_for_backward(hidden, weight, targets, lse, bias)
        ctx.temperature = temperature
        ctx.kernels = kernels
        return logp

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_logp: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        """Row chunk by row chunk, vocabulary slab by slab: the Triton kernel recomputes the
        slab's logits and writes their gradients ``D``; cuBLAS then adds ``D @ W[slab]`` to
        the chunk's float32 dHidden and ``D.T @ hidden[chunk]`` to ``dWeight[slab]`` (written
        by the first chunk, accumulated in place by the others: one rounding to the weight
        dtype per row chunk, the products themselves accumulate in float32)."""
        hidden, weight, targets, lse, bias = ctx.saved_tensors
        kernels = ctx.kernels
        want_hidden, want_weight, _, _, want_bias, _ = ctx.needs_input_grad
        want_bias = want_bias and bias is not None
        n_rows, n_hidden = hidden.shape
        n_vocab = weight.shape[0]
        device, dtype = hidden.device, hidden.dtype
        grad_logp = grad_logp.to(torch.float32).contiguous()

        grad_hidden = new_buffer((n_rows, n_hidden), dtype, device) if want_hidden else None
        grad_weight = new_buffer((n_vocab, n_hidden), dtype, device) if want_weight else None
        grad_bias32 = new_buffer((n_vocab,), torch.float32, device) if want_bias else None
        tile = kernels.launch_config(dtype, device).block_v
        sms = (
            torch.cuda.get_device_properties(device).multi_processor_count
            if device.type == "cuda"
            else DEFAULT_SMS
        )
        plan = backward_plan(n_rows, n_hidden, n_vocab, hidden.element_size(), tile, sms)
        slab_full = new_buffer((plan.chunk_rows, plan.slab_columns), dtype, device)
        chunk_hidden32 = (
            new_buffer((plan.chunk_rows, n_hidden), torch.float32, device) if want_hidden else None
        )
        slabs = plan.slab_bounds(n_vocab, tile)
        for r0, r1 in plan.row_bounds(n_rows):
            first_chunk = r0 == 0
            if want_hidden:
                acc = chunk_hidden32[: r1 - r0]
                acc.zero_()
            for v0, v1 in slabs:
                slab = slab_full[: r1 - r0, : v1 - v0]
                with launch_on(device):
                    kernels.fused_grad_logits(
                        hidden[r0:r1], weight, bias, targets[r0:r1], lse[r0:r1],
                        grad_logp[r0:r1], ctx.temperature, v0, slab,
                    )  # fmt: skip
                if want_hidden:
                    _accumulate_float32(acc, slab, weight[v0:v1])
                if want_weight:
                    rows_of_weight = grad_weight[v0:v1]
                    if first_chunk:
                        torch.mm(slab.T, hidden[r0:r1], out=rows_of_weight)
                    else:
                        rows_of_weight.addmm_(slab.T, hidden[r0:r1])
                if want_bias:
                    column_sums = torch.sum(slab, dim=0, dtype=torch.float32)
                    if first_chunk:
                        grad_bias32[v0:v1] = column_sums
                    else:
                        grad_bias32[v0:v1] += column_sums
            if want_hidden:
                grad_hidden[r0:r1] = acc
        if n_rows == 0:  # no chunk ran: the gradients of an empty batch are zero
            for grad in (grad_hidden, grad_weight, grad_bias32):
                if grad is not None:
                    grad.zero_()
        grad_bias = grad_bias32.to(bias.dtype) if want_bias else None
        return grad_hidden, grad_weight, None, None, grad_bias, None


def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Log-probability of each row's target under ``softmax((hidden @ weight.T + bias) / T)``,
    without materialising the ``[N, V]`` logits on the Triton path.

    Args:
        hidden: ``[N, H]`` float32, bfloat16 or float16 (float64 too with the reference).
        weight: ``[V, H]``, the same dtype as ``hidden``.
        targets: ``[N]`` int64 or int32 indices in ``[0, V)``.
        temperature: finite and > 0.
        bias: optional ``[V]``.
        backend: ``"auto"`` (Triton on CUDA, the reference on CPU), ``"triton"`` (on CPU: the
            interpreter) or ``"reference"``.

    Returns:
        ``[N]`` float32 log-probs (float64 when the reference is given float64 inputs);
        differentiable with respect to ``hidden``, ``weight`` and ``bias``. The backward's
        working memory is a row chunk's float32 dHidden plus one slab of logit gradients,
        about :data:`EXTRA_FRACTION` of the gradient buffers (never ``N * V``).

    Non-finite values (the same on every backend): a ``-inf`` bias entry removes that token
    (probability 0); NaN or ``inf`` in a row of ``hidden``, or anywhere in ``weight`` or
    ``bias`` where it reaches a logit as NaN or ``+inf``, makes the affected rows' log-probs and
    gradients NaN. Nothing is rejected for its values except the targets.

    Raises:
        ValueError: mismatched shapes, dtypes or devices, a temperature that is not finite and
            > 0, an unsupported dtype or backend, targets outside ``[0, V)`` (always for CPU
            tensors and the reference; on CUDA the Triton path gives a NaN log-prob for such a
            target instead of synchronising to check, unless ``STALESIM_KERNEL_DEBUG=1``).
    """
    chosen = resolve_backend(backend, require_tensor("hidden", hidden).device)
    if chosen == "reference":  # the reference checks its own inputs
        from stalesim.kernels.reference import fused_linear_logprobs_ref

        logp = fused_linear_logprobs_ref(
            hidden, weight, targets, temperature=temperature, bias=bias
        )
        return logp if hidden.dtype == torch.float64 else logp.to(torch.float32)
    temperature = check_fused_linear_inputs(
        hidden,
        weight,
        targets,
        temperature,
        bias=bias,
        allowed=KERNEL_FLOAT_DTYPES,
        check_values=value_checks_enabled(hidden.device),
    )
    kernels = load_triton_module("_fused_triton")
    return _FusedLinearLogprobs.apply(hidden, weight, targets, temperature, bias, kernels)
