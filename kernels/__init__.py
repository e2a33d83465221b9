"""Triton kernels for GRPO training, each beside its plain-torch reference.

Public API (imported lazily, so ``import stalesim.kernels`` stays cheap):

* :func:`token_logprobs` — per-token log-probs from logits.
* :func:`fused_linear_logprobs` — log-probs fused with the output projection.
* :func:`grpo_loss` — the GRPO loss and its off-policy statistics.
* :func:`group_advantages` — advantages normalised inside each group.
"""

from __future__ import annotations

import importlib
from typing import Any

# Module names differ from function names: importing a submodule sets it as an attribute of
# the package, which would shadow a function of the same name.
_EXPORTS = {
    "token_logprobs": "stalesim.kernels.logprobs",
    "fused_linear_logprobs": "stalesim.kernels.fused_linear",
    "grpo_loss": "stalesim.kernels.loss",
    "group_advantages": "stalesim.kernels.advantages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'stalesim.kernels' has no attribute {name!r}")
