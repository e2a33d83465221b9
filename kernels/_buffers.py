"""Output, gradient and scratch buffers for every kernel, with a poison switch for tests.

The kernels write every element of the buffers they are given, so the wrappers allocate with
``torch.empty``. A test sets :data:`POISON_VALUE` (e.g. to NaN) to fill each new buffer first:
any element a kernel forgot to write then shows up as that value instead of as whatever the
allocator happened to leave there.
"""

from __future__ import annotations

import torch

POISON_VALUE: float | None = None
"""When not ``None``, every buffer from :func:`new_buffer` is filled with this value."""


def new_buffer(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor (poisoned when :data:`POISON_VALUE` is set)."""
    buffer = torch.empty(shape, dtype=dtype, device=device)
    if POISON_VALUE is not None:
        buffer.fill_(POISON_VALUE)
    return buffer
