"""Which implementation runs a kernel call: compiled Triton, the Triton interpreter, or the
plain-torch reference.

``backend="auto"`` picks compiled Triton for CUDA tensors and the reference on CPU.
``backend="triton"`` on CPU runs the same Triton source under the interpreter, which is what
the tests use. The interpreter is chosen by the ``TRITON_INTERPRET`` environment variable,
which Triton reads when a kernel is decorated, so it is set here before any kernel module is
imported.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Literal

import torch

Backend = Literal["auto", "triton", "reference"]
BACKENDS: tuple[str, ...] = ("auto", "triton", "reference")


def resolve_backend(backend: str, device: torch.device) -> Literal["triton", "reference"]:
    """The implementation a call with ``backend`` on tensors living on ``device`` runs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "reference":
        return "reference"
    if backend == "triton":
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"backend='triton' needs CUDA or CPU tensors, got device {device}")
        return "triton"
    return "triton" if device.type == "cuda" else "reference"


def load_triton_module(name: str) -> ModuleType:
    """Import ``stalesim.kernels.<name>`` (a module of Triton kernels).

    On a machine without CUDA the interpreter is switched on first, so the same kernels run on
    CPU tensors.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return importlib.import_module(f"stalesim.kernels.{name}")
