"""The GRPO loss from a model's logits: per-token log-probs, then the loss, skipping every
position no token of the loss uses.

A trainer's model emits logits for ``P`` positions per row, of which the loss reads the first
``L`` (``P = L + 1``: the last position predicts past the response) and, of those, only the
masked-in ones (padding and prompt tokens are out). :func:`logits_grpo_loss` passes the loss's
mask, padded with zeros to ``P``, to :func:`~stalesim.kernels.logprobs.token_logprobs`, so that
on the Triton path the log-prob forward and backward read no logit of an unused position and
write exact zeros as its gradient: the work scales with the tokens the loss counts, not with
``R * P``.
"""

from __future__ import annotations

from typing import Any

import torch
from stalesim.kernels.backend import Backend
from stalesim.kernels.checks import require_shape, require_tensor
from stalesim.kernels.logprobs import token_logprobs
from stalesim.kernels.loss import grpo_loss
from stalesim.kernels.options import GRPOOptions


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
    keep = torch.nn.functional.pad(mask != 0, (0, positions - length))
    padded = torch.nn.functional.pad(targets, (0, positions - length))
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
