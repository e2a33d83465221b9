"""Log-probs fused with the output projection:
``logp[i] = log_softmax((hidden[i] @ weight.T + bias) / T)[targets[i]]``.

The Triton path never holds the ``[N, V]`` logits: the forward reduces each logit tile into a
per-row log-sum-exp as soon as it is computed, and the backward recomputes the tiles, one
vocabulary slab of bounded size at a time (see ``_fused_triton`` for why a slab).
"""

from __future__ import annotations

from types import ModuleType

import torch
from stalesim.kernels._buffers import new_buffer
from stalesim.kernels._logprob_device import launch_on
from stalesim.kernels.backend import load_triton_module, resolve_backend
from stalesim.kernels.checks import (
    KERNEL_FLOAT_DTYPES,
    check_fused_linear_inputs,
    require_tensor,
)

SLAB_BYTES = 64 * 2**20
"""Size the backward's ``[N, V_chunk]`` slab of logit gradients is held to (at least one tile
of columns is always used). 64 MiB gives 2,048-column GEMMs at N=16k in bf16, large enough to
run at full tensor-core rate."""


def _dense_columns(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def slab_columns(n_rows: int, n_vocab: int, element_bytes: int, tile: int) -> int:
    """Vocabulary columns per backward slab: as many whole tiles as fit in ``SLAB_BYTES``."""
    tiles = max(1, SLAB_BYTES // max(1, n_rows * element_bytes * tile))
    return min(n_vocab, tiles * tile)


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
        hidden, weight, targets, lse, bias = ctx.saved_tensors
        kernels = ctx.kernels
        want_hidden, want_weight, _, _, want_bias, _ = ctx.needs_input_grad
        want_bias = want_bias and bias is not None
        n_rows, n_hidden = hidden.shape
        n_vocab = weight.shape[0]
        device, dtype = hidden.device, hidden.dtype
        grad_logp = grad_logp.to(torch.float32).contiguous()

        grad_hidden32 = (
            torch.zeros((n_rows, n_hidden), dtype=torch.float32, device=device)
            if want_hidden
            else None
        )
        grad_weight = new_buffer((n_vocab, n_hidden), dtype, device) if want_weight else None
        grad_bias32 = new_buffer((n_vocab,), torch.float32, device) if want_bias else None
        tile = kernels.launch_config(dtype, device).block_v
        width = slab_columns(n_rows, n_vocab, hidden.element_size(), tile)
        slab_full = new_buffer((n_rows, width), dtype, device)
        for start in range(0, n_vocab, width):
            stop = min(n_vocab, start + width)
            slab = slab_full[:, : stop - start]
            with launch_on(device):
                kernels.fused_grad_logits(
                    hidden, weight, bias, targets, lse, grad_logp, ctx.temperature, start, slab
                )
                if want_hidden:
                    kernels.matmul_accumulate(grad_hidden32, slab, weight[start:stop])
            if want_weight:
                torch.matmul(slab.T, hidden, out=grad_weight[start:stop])
            if want_bias:
                torch.sum(slab, dim=0, dtype=torch.float32, out=grad_bias32[start:stop])

        # The slab goes first, so it is never live beside both copies of dHidden.
        del slab, slab_full
        grad_hidden = grad_hidden32.to(dtype) if want_hidden else None
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
        extra memory is a float32 ``[N, H]`` accumulator plus a slab of at most
        :data:`SLAB_BYTES` (never ``N * V``).

    Raises:
        ValueError: mismatched shapes, dtypes or devices, targets outside ``[0, V)``, a
            temperature that is not finite and > 0, an unsupported dtype or backend.
    """
    chosen = resolve_backend(backend, require_tensor("hidden", hidden).device)
    if chosen == "reference":  # the reference checks its own inputs
        from stalesim.kernels.reference import fused_linear_logprobs_ref

        logp = fused_linear_logprobs_ref(
            hidden, weight, targets, temperature=temperature, bias=bias
        )
        return logp if hidden.dtype == torch.float64 else logp.to(torch.float32)
    temperature = check_fused_linear_inputs(
        hidden, weight, targets, temperature, bias=bias, allowed=KERNEL_FLOAT_DTYPES
    )
    kernels = load_triton_module("_fused_triton")
    return _FusedLinearLogprobs.apply(hidden, weight, targets, temperature, bias, kernels)
