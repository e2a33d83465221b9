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
  2,560-row float32 dHidden chunk (21.0 MB) and a 2,560 x 4,224 bf16 slab (21.6 MB): 1.039x the
  gradient buffers (target 1.05x); see :func:`backward_plan`.
"""

from __future__ import annotations

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
input dtype). At N=16,384, H=2,048, V=248,320 in bf16 that is 43 MB, so the backward's peak is
about 1.04x its gradient buffers (see :func:`backward_plan`)."""

MIN_CHUNK_ROWS = 128
"""Rows per chunk are a multiple of this (one tensor-core tile), and at least this many."""


@dataclass(frozen=True)
class BackwardPlan:
    """How the backward walks the ``[N, V]`` logit gradients: ``chunk_rows`` rows at a time,
    each row chunk in slabs of ``slab_columns`` vocabulary columns."""

    chunk_rows: int
    slab_columns: int

    def extra_bytes(self, n_hidden: int, element_bytes: int) -> int:
        """Working memory beyond the gradient buffers: the chunk's float32 dHidden and one
        slab (the float32 bias gradient, ``4 V`` bytes, comes on top when a bias is trained)."""
        return self.chunk_rows * (4 * n_hidden + element_bytes * self.slab_columns)


def gradient_bytes(n_rows: int, n_hidden: int, n_vocab: int, element_bytes: int) -> int:
    """Bytes of the dHidden and dWeight buffers the backward must return."""
    return (n_rows + n_vocab) * n_hidden * element_bytes


def backward_plan(
    n_rows: int, n_hidden: int, n_vocab: int, element_bytes: int, tile: int
) -> BackwardPlan:
    """Row chunk and slab width that keep the working memory within :data:`EXTRA_FRACTION` of
    the gradient buffers: half of it for the chunk's float32 dHidden, half for the slab.

    At least :data:`MIN_CHUNK_ROWS` rows (or all of them) and one ``tile`` of columns are used,
    so very small problems may exceed the fraction by a few tiles' worth.
    """
    half = EXTRA_FRACTION * gradient_bytes(n_rows, n_hidden, n_vocab, element_bytes) / 2
    rows = int(half // (4 * n_hidden)) // MIN_CHUNK_ROWS * MIN_CHUNK_ROWS
    rows = min(n_rows, max(MIN_CHUNK_ROWS, rows))
    columns = int(half // max(1, rows * element_bytes)) // tile * tile
    return BackwardPlan(max(1, rows), min(n_vocab, max(tile, columns)))


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
        plan = backward_plan(n_rows, n_hidden, n_vocab, hidden.element_size(), tile)
        slab_full = new_buffer((plan.chunk_rows, plan.slab_columns), dtype, device)
        chunk_hidden32 = (
            new_buffer((plan.chunk_rows, n_hidden), torch.float32, device) if want_hidden else None
        )
        for r0 in range(0, n_rows, plan.chunk_rows):
            r1 = min(n_rows, r0 + plan.chunk_rows)
            first_chunk = r0 == 0
            if want_hidden:
                acc = chunk_hidden32[: r1 - r0]
                acc.zero_()
            for v0 in range(0, n_vocab, plan.slab_columns):
                v1 = min(n_vocab, v0 + plan.slab_columns)
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
