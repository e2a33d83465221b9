"""Kernel tests run the Triton source under the interpreter when there is no GPU.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, so it is set here, before any
test module can import a kernel module.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

# CI runs two test workers on two cores; more threads per worker would only contend.
torch.set_num_threads(1)
