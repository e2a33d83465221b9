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

MIN_TORCH = (2, 8)
"""The oldest torch the Triton paths run on: the fused linear path's 16-bit GEMMs accumulate
into float32 with ``torch.addmm(..., out_dtype=torch.float32)``, which torch 2.8 introduced
(pytorch/pytorch#150812). ``pyproject.toml``'s extras declare the same minimum."""

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
    check_torch_version(torch.__version__)
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return importlib.import_module(f"stalesim.kernels.{name}")


def check_torch_version(version: str) -> None:
    """Refuse, in one line, a torch older than :data:`MIN_TORCH` (``version`` as
    ``torch.__version__`` writes it, e.g. ``2.7.1+cu126``)."""
    release = version.split("+")[0].split(".")
    try:
        found = tuple(int(part) for part in release[:2])
    except ValueError:
        return  # a source build's odd version string: let the call itself decide
    if found < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        raise ValueError(
            f"torch {version}: the Triton kernels need torch >= {need} "
            f"(torch.addmm(out_dtype=...)); install it with: pip install 'torch>={need}'"
        )
