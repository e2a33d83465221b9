"""Group-normalised advantages for GRPO.

This op has no Triton kernel on purpose: it touches ``B * G`` rewards (a few thousand numbers
per step), so its cost is a handful of kernel launches whatever the implementation, and a
custom kernel would add code without saving time. Every backend therefore runs the plain-torch
specification, :func:`stalesim.kernels.reference.group_advantages_ref`.
"""

from __future__ import annotations

from typing import Literal

import torch
from stalesim.kernels.backend import Backend, resolve_backend
from stalesim.kernels.reference import group_advantages_ref


def group_advantages(
    rewards: torch.Tensor,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Advantages ``[B, G]`` from rewards ``[B, G]``; see ``group_advantages_ref`` for the math.

    ``backend`` is validated like every kernel's (``"auto"``, ``"triton"``, ``"reference"``)
    so callers can pass one setting everywhere; all three run the same torch code.
    """
    if isinstance(rewards, torch.Tensor):
        resolve_backend(backend, rewards.device)
    return group_advantages_ref(rewards, scale=scale, eps=eps)
