"""Triton kernels for GRPO training, each beside its plain-torch reference.

Public API (imported lazily; importing the package only imports torch, to switch the Triton
interpreter on where there is no CUDA):

* :func:`token_logprobs` — per-token log-probs from logits.
* :func:`fused_linear_logprobs` — log-probs fused with the output projection.
* :func:`grpo_loss` — the GRPO loss and its off-policy statistics.
* :func:`logits_grpo_loss` — the GRPO loss from logits, skipping masked and unused positions.
* :func:`fused_linear_grpo_loss` — the GRPO loss fused with the output projection, its
  gradients made in the forward.
* :func:`group_advantages` — advantages normalised inside each group.
"""

from __future__ import annotations

import importlib
import os
from typing import Any


def _interpret_without_cuda() -> None:
    # Triton reads TRITON_INTERPRET when it decorates a function, its own library helpers
    # included, and torch may import Triton on its own (an optimizer step on CPU does): so on a
    # machine without CUDA the switch is set as soon as the kernels package is imported, before
    # any torch work. An explicit value (TRITON_INTERPRET=0 for the offline sm_90 compile) wins.
    if "TRITON_INTERPRET" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


_interpret_without_cuda()

# Module names differ from function names: importing a submodule sets it as an attribute of
# the package, which would shadow a function of the same name.
_EXPORTS = {
    "token_logprobs": "stalesim.kernels.logprobs",
    "fused_linear_logprobs": "stalesim.kernels.fused_linear",
    "grpo_loss": "stalesim.kernels.loss",
    "logits_grpo_loss": "stalesim.kernels.logits_loss",
    "fused_linear_grpo_loss": "stalesim.kernels.fused_linear_grpo",
    "group_advantages": "stalesim.kernels.advantages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stalesim.kernels' has no attribute {name!r}")
