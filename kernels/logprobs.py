"""Per-token log-probs from logits: ``logp[i] = log_softmax(logits[i] / T)[targets[i]]``.

The Triton path never materialises a softmax: the forward keeps one float32 log-sum-exp per row,
and the backward recomputes the probabilities tile by tile from it while writing ``dlogits``.
"""

from __future__ import annotations

from types import ModuleType

import torch
from stalesim.kernels._buffers import new_buffer
from stalesim.kernels._logprob_device import launch_on
from stalesim.kernels.backend import load_triton_module, resolve_backend
from stalesim.kernels.checks import (
    KERNEL_FLOAT_DTYPES,
    check_logprob_inputs,
    require_tensor,
    value_checks_enabled,
)


def _dense_rows(logits: torch.Tensor) -> torch.Tensor:
    # Rows may be strided (a slice of a larger batch); the vocabulary axis must be dense.
    return logits if logits.stride(1) == 1 else logits.contiguous()


class _TokenLogprobs(torch.autograd.Function):
    """Autograd wrapper around the Triton forward and backward kernels; ``with_entropy`` also
    returns the entropy of each row's distribution and takes its gradient in the backward."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        logits: torch.Tensor,
        targets: torch.Tensor,
        temperature: float,
        kernels: ModuleType,
        with_entropy: bool,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits, targets = _dense_rows(logits), targets.contiguous()
        n_rows = logits.shape[0]
        logp = new_buffer((n_rows,), torch.float32, logits.device)
        lse = new_buffer((n_rows,), torch.float32, logits.device)
        entropy = new_buffer((n_rows,), torch.float32, logits.device) if with_entropy else None
        with launch_on(logits.device):
            kernels.logprob_forward(logits, targets, temperature, logp, lse, entropy)
        ctx.save_for_backward(logits, targets, lse, entropy)
        ctx.temperature = temperature
        ctx.kernels = kernels
        return (logp, entropy) if with_entropy else logp

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx,
        grad_logp: torch.Tensor,
        grad_entropy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, None, None, None, None]:
        logits, targets, lse, entropy = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        grad_logits = new_buffer(tuple(logits.shape), logits.dtype, logits.device)
        with launch_on(logits.device):
            ctx.kernels.logprob_backward(
                logits,
                targets,
                lse,
                grad_logp.to(torch.float32).contiguous(),
                ctx.temperature,
                grad_logits,
                entropy=entropy,
                grad_entropy=None
                if grad_entropy is None
                else grad_entropy.to(torch.float32).contiguous(),
            )
        return grad_logits, None, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    backend: str = "auto",
    *,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each row's target token under ``softmax(logits / temperature)``.

    Args:
        logits: ``[N, V]`` float32, bfloat16 or float16 (float64 too with the reference).
        targets: ``[N]`` int64 or int32 indices in ``[0, V)``.
        temperature: finite and > 0.
        backend: ``"auto"`` (Triton on CUDA, the reference on CPU), ``"triton"`` (on CPU: the
            interpreter) or ``"reference"``.
        return_entropy: also return the entropy of each row's tempered distribution (one
            more float32 per row saved for the backward).

    Returns:
        ``[N]`` float32 log-probs (float64 when the reference is given float64 logits), and
        with ``return_entropy`` the ``[N]`` entropies too; differentiable with respect to
        ``logits``.

    Non-finite values (the same on every backend): a ``-inf`` logit has probability 0; a
    ``-inf`` target logit gives ``-inf``; a NaN or ``+inf`` logit anywhere in a row makes that
    row's log-prob, entropy and gradient NaN (other rows are unaffected). Nothing is rejected
    for its values except the targets.

    Raises:
        ValueError: mismatched shapes or devices, a temperature that is not finite and > 0, an
            unsupported dtype or backend, targets outside ``[0, V)`` (always for CPU tensors
            and the reference; on CUDA the Triton path does not read the targets on the host,
            which would synchronise, and gives a NaN log-prob for such a target instead,
            unless ``STALESIM_KERNEL_DEBUG=1`` turns the check on).
    """
    chosen = resolve_backend(backend, require_tensor("logits", logits).device)
    if chosen == "reference":  # the reference checks its own inputs
        from stalesim.kernels.reference import token_logprobs_ref

        out = token_logprobs_ref(
            logits, targets, temperature=temperature, return_entropy=return_entropy
        )
        if logits.dtype == torch.float64:
            return out
        if return_entropy:
            return out[0].to(torch.float32), out[1].to(torch.float32)
        return out.to(torch.float32)
    temperature = check_logprob_inputs(
        logits,
        targets,
        temperature,
        allowed=KERNEL_FLOAT_DTYPES,
        check_values=value_checks_enabled(logits.device),
    )
    kernels = load_triton_module("_logprob_triton")
    return _TokenLogprobs.apply(logits, targets, temperature, kernels, return_entropy)
