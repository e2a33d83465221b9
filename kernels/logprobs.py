"""Per-token log-probs from logits: ``logp[i] = log_softmax(logits[i] / T)[targets[i]]``.

The Triton path never materialises a softmax: the forward keeps one float32 log-sum-exp per row,
and the backward recomputes the probabilities tile by tile from it while writing ``dlogits``.
Rows a ``mask`` leaves out (padding, prompt positions, the model's last position) are skipped by
both passes, and ``inplace_grad=True`` writes ``dlogits`` over the logits instead of into a new
``[N, V]`` buffer.
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
    require_dtype,
    require_same_device,
    require_shape,
    require_targets_in_range,
    require_tensor,
    value_checks_enabled,
)

MASK_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


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
        keep: torch.Tensor | None,
        inplace_grad: bool,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits, targets = _dense_rows(logits), targets.contiguous()
        n_rows = logits.shape[0]
        logp = new_buffer((n_rows,), torch.float32, logits.device)
        lse = new_buffer((n_rows,), torch.float32, logits.device)
        entropy = new_buffer((n_rows,), torch.float32, logits.device) if with_entropy else None
        with launch_on(logits.device):
            kernels.logprob_forward(logits, targets, temperature, logp, lse, entropy, keep)
        ctx.save_for_backward(logits, targets, lse, entropy, keep)
        ctx.inplace_grad = inplace_grad
        ctx.temperature = temperature
        ctx.kernels = kernels
        return (logp, entropy) if with_entropy else logp

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx,
        grad_logp: torch.Tensor,
        grad_entropy: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, None, None, None, None, None, None]:
        logits, targets, lse, entropy, keep = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        if ctx.inplace_grad:
            # The gradient overwrites the logits; bumping their version makes autograd refuse
            # any other saved use of them (and a second backward) instead of reading gradients.
            grad_logits = logits
            torch.autograd.graph.increment_version(logits)
        else:
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
                keep=keep,
            )
        return grad_logits, None, None, None, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    backend: str = "auto",
    *,
    return_entropy: bool = False,
    mask: torch.Tensor | None = None,
    inplace_grad: bool = False,
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
        mask: ``[N]`` bool or integer; rows where it is 0 are skipped: the Triton passes read
            none of their logits, their log-prob (and entropy) is 0, their gradient is exactly
            0 whatever the upstream gradient holds, and their targets are not checked (padding
            may hold any index). Rows where it is nonzero are computed as without a mask.
        inplace_grad: the Triton backward writes the gradient over ``logits`` and returns that
            storage as ``dlogits``, so the backward allocates no ``[N, V]`` buffer (saves
            ``N * V * itemsize`` bytes at its peak: 2.49 GB at N=8,192, V=151,936 in bf16).
            Only for logits nothing else reads after the backward: the logits' version is
            bumped, so autograd refuses another saved use of them or a second backward
            instead of reading gradients. Logits with a strided vocabulary axis are copied
            first, and the copy is overwritten. The reference ignores it.

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
            unless ``STALESIM_KERNEL_DEBUG=1`` turns the check on), a mask that is not
            ``[N]`` bool or integer on the logits' device, an ``inplace_grad`` not a bool.
    """
    chosen = resolve_backend(backend, require_tensor("logits", logits).device)
    if not isinstance(inplace_grad, bool):
        raise ValueError(f"inplace_grad: expected True or False, got {inplace_grad!r}")
    keep = _keep_rows(mask, logits, targets)
    if chosen == "reference":  # the reference checks its own inputs
        from stalesim.kernels.reference import token_logprobs_ref

        if keep is not None:
            # Skipped rows may hold any target; index 0 keeps the reference's check quiet
            # and torch.where gives them an exact-zero value and gradient.
            targets = torch.where(keep, targets, torch.zeros_like(targets))
        out = token_logprobs_ref(
            logits, targets, temperature=temperature, return_entropy=return_entropy
        )
        if keep is not None:
            outs = out if return_entropy else (out,)
            outs = tuple(torch.where(keep, o, torch.zeros_like(o)) for o in outs)
            out = outs if return_entropy else outs[0]
        if logits.dtype == torch.float64:
            return out
        if return_entropy:
            return out[0].to(torch.float32), out[1].to(torch.float32)
        return out.to(torch.float32)
    check_values = value_checks_enabled(logits.device)
    temperature = check_logprob_inputs(
        logits,
        targets,
        temperature,
        allowed=KERNEL_FLOAT_DTYPES,
        check_values=check_values and keep is None,
    )
    if check_values and keep is not None:
        require_targets_in_range("targets", targets[keep], logits.shape[1])
    kernels = load_triton_module("_logprob_triton")
    keep_bytes = None if keep is None else keep.view(torch.uint8)
    return _TokenLogprobs.apply(
        logits, targets, temperature, kernels, return_entropy, keep_bytes, inplace_grad
    )


def _keep_rows(
    mask: torch.Tensor | None, logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor | None:
    """``mask`` checked and turned into a contiguous bool ``[N]`` (``None`` stays ``None``)."""
    if mask is None:
        return None
    require_tensor("mask", mask)
    require_shape("logits", logits, (None, None), "[N, V]")
    require_shape("mask", mask, (logits.shape[0],), "[N]")
    require_dtype("mask", mask, MASK_DTYPES)
    require_same_device(logits=logits, mask=mask)
    return (mask if mask.dtype == torch.bool else mask != 0).contiguous()
