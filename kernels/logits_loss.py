"""The GRPO loss from a model's logits: per-token log-probs, then the loss, skipping every
position no token of the loss uses.

A trainer's model emits logits for ``P`` positions per row, of which the loss reads the first
``L`` (``P = L + 1``: the last position predicts past the response) and, of those, only the
masked-in ones (padding and prompt tokens are out). :func:`logits_grpo_loss` passes the loss's
mask, padded with zeros to ``P``, to :func:`~stalesim.kernels.logprobs.token_logprobs`, so that
on the Triton path the log-prob forward and backward read no logit of an unused position and
write exact zeros as its gradient: the work scales with the tokens the loss counts, not with
``R * P``.

With ``one_pass=True`` (token-level ratio, no proximal policy, no cap, ``beta = 0``) one
Triton kernel (``_logits_grpo_triton``) computes each position's log-prob and, in the same
program, the logits' gradient, since the loss's derivative per token is known once its
log-prob is: each row is read, then re-read at once by the same program (from L2 while it is
still there; see ``_logits_grpo_triton`` for what that predicts), and its gradient written
once. The loss value
and statistics come from :func:`~stalesim.kernels.grpo_loss` on those log-probs, so they are
the two-pass path's; the backward only scales the stored gradient by the upstream gradient
(no work at all when it is exactly 1). The gradient buffer is held from the forward to the
backward (or written over the logits with ``inplace_grad=True``).
"""

from __future__ import annotations

from typing import Any

import torch
from stalesim.kernels._buffers import new_buffer
from stalesim.kernels._grad_in_forward import require_token_level, row_weights
from stalesim.kernels._logprob_device import launch_on
from stalesim.kernels.backend import Backend, load_triton_module, resolve_backend
from stalesim.kernels.checks import (
    KERNEL_FLOAT_DTYPES,
    check_grpo_loss_inputs,
    check_logprob_inputs,
    require_shape,
    require_targets_in_range,
    require_tensor,
    value_checks_enabled,
)
from stalesim.kernels.logprobs import token_logprobs
from stalesim.kernels.loss import STAT_NAMES, grpo_loss
from stalesim.kernels.options import GRPOOptions, resolve_options

SCALE_BLOCK = 4096
"""Elements per program of the backward's upstream scaling."""


def logits_grpo_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float = 1.0,
    ref_logp: torch.Tensor | None = None,
    proximal_logp: torch.Tensor | None = None,
    options: GRPOOptions | None = None,
    inplace_grad: bool = False,
    one_pass: bool = False,
    backend: Backend = "auto",
    **overrides: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The GRPO loss of :func:`~stalesim.kernels.grpo_loss` on ``log_softmax(logits / T)`` at
    ``targets``, differentiable with respect to ``logits``.

    Args:
        logits: ``[R, P, V]`` with ``P >= L``; positions ``t >= L`` are unused (a model's
            logits for ``L`` response tokens usually have ``P = L + 1``). The rows must be
            viewable as ``[R * P, V]`` with a dense vocabulary axis, or they are copied.
        targets: ``[R, L]`` token ids; where ``mask`` is 0 they are never read.
        behaviour_logp, advantages, mask, ref_logp, proximal_logp, options, overrides: as
            :func:`~stalesim.kernels.grpo_loss` takes them (``mask`` is ``[R, L]``).
        temperature: the sampling temperature the log-probs are taken at.
        inplace_grad: write the logits' gradient over ``logits`` (see
            :func:`~stalesim.kernels.token_logprobs`): the backward then allocates no
            ``[R, P, V]`` buffer.
        one_pass: compute the logits' gradient in the forward, in the same kernel and read of
            the logits as the log-probs (Triton backend; token-level ratio, no
            ``proximal_logp``, no ``is_cap``, ``beta = 0``). The reference ignores it.
        backend: ``"auto"``, ``"triton"`` or ``"reference"``, for both steps.

    Returns:
        The loss and the statistics dict, as :func:`~stalesim.kernels.grpo_loss` returns them.
        Masked and unused positions cost nothing in the Triton log-prob passes, and their
        gradient rows are exactly zero.

    Raises:
        ValueError: ``logits`` not 3-D or with fewer positions than ``targets`` has tokens,
            ``targets`` or ``mask`` not ``[R, L]``, and whatever the two steps refuse.
    """
    require_tensor("logits", logits)
    require_tensor("targets", targets)
    require_tensor("mask", mask)
    require_shape("logits", logits, (None, None, None), "[R, P, V]")
    rows, positions, vocab = logits.shape
    require_shape("targets", targets, (rows, None), "[R, L]")
    length = targets.shape[1]
    if positions < length:
        raise ValueError(
            f"logits: {positions} positions per row, fewer than the {length} tokens of targets"
        )
    require_shape("mask", mask, (rows, length), "[R, L]")
    if not isinstance(one_pass, bool):
        raise ValueError(f"one_pass: expected True or False, got {one_pass!r}")
    keep = torch.nn.functional.pad(mask != 0, (0, positions - length))
    padded = torch.nn.functional.pad(targets, (0, positions - length))
    if one_pass and resolve_backend(backend, logits.device) == "triton":
        opts = resolve_options(options, overrides)
        return _one_pass(
            logits, padded, keep, behaviour_logp, advantages, mask, ref_logp, proximal_logp,
            opts, temperature, inplace_grad,
        )  # fmt: skip
    logp = token_logprobs(
        logits.reshape(rows * positions, vocab),
        padded.reshape(-1),
        temperature,
        backend,
        mask=keep.reshape(-1),
        inplace_grad=inplace_grad,
    )
    logp = logp.view(rows, positions)[:, :length]
    return grpo_loss(
        logp,
        behaviour_logp,
        advantages,
        mask,
        ref_logp=ref_logp,
        proximal_logp=proximal_logp,
        options=options,
        backend=backend,
        **overrides,
    )


def _one_pass(
    logits: torch.Tensor,
    padded_targets: torch.Tensor,
    keep: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logp: torch.Tensor | None,
    proximal_logp: torch.Tensor | None,
    opts: GRPOOptions,
    temperature: float,
    inplace_grad: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`logits_grpo_loss` with the gradient computed in the forward's single read."""
    require_token_level(
        "one_pass",
        opts,
        (("proximal_logp", proximal_logp is not None),),
        " (use one_pass=False)",
    )
    rows, positions, vocab = logits.shape
    length = mask.shape[1]
    flat = logits.reshape(rows * positions, vocab)
    flat_targets = padded_targets.reshape(-1).contiguous()
    flat_keep = keep.reshape(-1).contiguous()
    check_logprob_inputs(flat, flat_targets, temperature, KERNEL_FLOAT_DTYPES, check_values=False)
    temperature = float(temperature)
    if value_checks_enabled(logits.device):
        require_targets_in_range("targets", flat_targets[flat_keep], vocab)
    check_grpo_loss_inputs(
        behaviour_logp,
        behaviour_logp,
        advantages,
        mask,
        ref_logp=ref_logp,
        proximal_logp=None,
        options=opts,
    )
    grpo_inputs = (behaviour_logp, advantages, mask, ref_logp)
    loss, stats = _OnePassGRPO.apply(
        logits, flat, flat_targets, flat_keep, grpo_inputs, opts, temperature, inplace_grad, length
    )
    names = STAT_NAMES if ref_logp is not None else STAT_NAMES[:-1]
    return loss, dict(zip(names, stats.unbind(0), strict=False))


class _OnePassGRPO(torch.autograd.Function):
    """Loss and statistics from logits; the logits' gradient is made in the forward."""

    @staticmethod
    def forward(
        ctx,
        logits: torch.Tensor,
        flat: torch.Tensor,
        targets: torch.Tensor,
        keep: torch.Tensor,
        grpo_inputs: tuple,
        opts: GRPOOptions,
        temperature: float,
        inplace_grad: bool,
        length: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        behaviour_logp, advantages, mask, ref_logp = grpo_inputs
        kernels = load_triton_module("_logits_grpo_triton")
        launch = load_triton_module("_logprob_triton").launch_config
        rows, positions, vocab = logits.shape
        pad = (0, positions - length)
        m = mask != 0
        # Per-position constants: μ (0 on padding, never read there), the row's advantage and
        # its aggregation weight.
        mu = torch.nn.functional.pad(torch.where(m, behaviour_logp.float(), 0.0), pad)
        adv = advantages.float()[:, None].expand(rows, positions).contiguous()
        weight = row_weights(mask, opts)[:, None].expand(rows, positions).contiguous()
        # Contiguous, so that the backward's scaling can walk the gradient as one vector.
        flat = flat.contiguous()
        n_positions = flat.shape[0]
        logp = new_buffer((n_positions,), torch.float32, flat.device)
        grad = flat if inplace_grad else new_buffer(tuple(flat.shape), flat.dtype, flat.device)
        if n_positions > 0:
            cfg = launch(vocab, flat.device, "forward")
            with launch_on(flat.device):
                kernels.logits_grpo_onepass_kernel[(n_positions,)](
                    flat, targets, keep.view(torch.uint8), mu.reshape(-1), adv.reshape(-1),
                    weight.reshape(-1), logp, grad, vocab, flat.stride(0), grad.stride(0),
                    1.0 / temperature, opts.eps_low, opts.eps_high,
                    BLOCK_V=cfg.block_v, num_warps=cfg.num_warps,
                )  # fmt: skip
        if inplace_grad:
            # The logits now hold their gradient: autograd refuses any other saved use.
            torch.autograd.graph.increment_version(logits)
        with torch.no_grad():
            loss, stats = grpo_loss(
                logp.view(rows, positions)[:, :length],
                behaviour_logp,
                advantages,
                mask,
                ref_logp=ref_logp,
                options=opts,
                backend="triton",
            )
        ctx.grad = grad
        ctx.shape = logits.shape
        stacked = torch.stack(list(stats.values()))
        ctx.mark_non_differentiable(stacked)
        return loss, stacked

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_stats: torch.Tensor):
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError("one_pass: the gradient was already used by an earlier backward")
        kernels = load_triton_module("_logits_grpo_triton")
        if grad.numel() > 0:
            with launch_on(grad.device):
                kernels.scale_kernel[(-(-grad.numel() // SCALE_BLOCK),)](
                    grad, grad_loss.reshape(1).to(torch.float32), grad.numel(), BLOCK=SCALE_BLOCK
                )
        return grad.view(ctx.shape), None, None, None, None, None, None, None, None
