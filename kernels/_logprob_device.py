"""The device a Triton launch goes to.

Triton launches on the current CUDA device, not on the device of the tensors it is given, so
every launch is made inside a guard that makes the tensors' device current.
"""

from __future__ import annotations

import contextlib

import torch


def launch_on(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """A context in which Triton launches run on ``device`` (a no-op off CUDA)."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()
