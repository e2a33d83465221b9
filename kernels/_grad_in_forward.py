"""What the ops that make their gradient in the forward share: the options they support (the
token-level ratio, no ``is_cap``, no KL penalty) and each row's aggregation weight."""

from __future__ import annotations

import torch
from stalesim.kernels.options import GRPOOptions


def require_token_level(
    op: str, opts: GRPOOptions, extra: tuple[tuple[str, bool], ...] = (), hint: str = ""
) -> None:
    """Refuse, in one line, the options whose per-token derivative is not known once the token's
    log-prob is: a sequence-level ratio, ``is_cap``, a KL penalty (and ``extra`` of the op's)."""
    unsupported = [
        text
        for text, bad in (
            (f"ratio_level={opts.ratio_level!r}", opts.ratio_level != "token"),
            *extra,
            (f"is_cap={opts.is_cap}", opts.is_cap is not None),
            (f"beta={opts.beta}", opts.beta > 0),
        )
        if bad
    ]
    if unsupported:
        names = ", ".join(["is_cap", *(text for text, _ in extra)])
        raise ValueError(
            f"{op}: supports the token-level ratio without {names} or a KL penalty; "
            f"got {', '.join(unsupported)}{hint}"
        )


def row_weights(mask: torch.Tensor, opts: GRPOOptions) -> torch.Tensor:
    """The aggregation weight ``a_i`` of each row (``reference.grpo_loss_ref``), float32."""
    rows, length = mask.shape
    tokens = (mask != 0).sum(dim=1).to(torch.float64)
    if opts.aggregation == "token_mean":
        weight = (1.0 / tokens.sum().clamp(min=1.0)).expand(rows)
    elif opts.aggregation == "seq_mean_token_mean":
        weight = 1.0 / (tokens.clamp(min=1.0) * (tokens > 0).sum().clamp(min=1))
    else:
        weight = torch.full(
            (rows,), 1.0 / (rows * (opts.max_tokens or length)), dtype=torch.float64
        )
    return weight.to(device=mask.device, dtype=torch.float32)
