"""The GPU launch configurations compile for an H100 (sm_90) on a machine without a GPU.

The interpreter runs the kernels' arithmetic but not the compiler, so this checks what only a
compile shows: no register spills to local memory, shared memory within the SM's limit, and
tensor-core (wgmma) matmuls fed by pipelined asynchronous copies for 16-bit operands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton
from stalesim.kernels._fused_gpu_compile import SM90_SHARED_BYTES
from stalesim.kernels._fused_triton import FORWARD_CONFIGS

CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


@pytest.mark.skipif(not CUOBJDUMP.exists(), reason="Triton was installed without its CUDA tools")
def test_gpu_configurations_compile_without_spills() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "stalesim.kernels._fused_gpu_compile"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reports = [json.loads(line) for line in done.stdout.splitlines()]
    kernels = {r["kernel"] for r in reports}
    assert kernels == {
        "_logprob_forward_kernel",
        "_logprob_backward_kernel",
        "_logprob_split_forward_kernel",
        "_logprob_split_combine_kernel",
        "_fused_forward_kernel",
        "_fused_grad_logits_kernel",
        "grpo_forward_kernel",
        "logits_grpo_onepass_kernel",
        "scale_kernel",
        "logits_exp_kernel",
        "grad_hidden_kernel",
        "grad_weight_kernel",
        "scale_exp_kernel",
    }
    for report in reports:
        assert report["local_bytes"] == 0, report
        assert report["shared_bytes"] <= SM90_SHARED_BYTES, report
        assert report["registers"] <= 255, report
    matmuls = [r for r in reports if r["operand"] == "*bf16" and r["kernel"].startswith("_fused")]
    # Every autotuned forward tile plus the logit-gradient kernel.
    assert len(matmuls) == len(FORWARD_CONFIGS) + 1
    # The gradient-in-forward op's three matmuls, in bf16.
    matmuls += [
        r
        for r in reports
        if r["operand"] == "*bf16"
        and r["kernel"] in ("logits_exp_kernel", "grad_hidden_kernel", "grad_weight_kernel")
    ]
    assert len(matmuls) == len(FORWARD_CONFIGS) + 4
    for report in matmuls:
        assert report["uses_wgmma"] and report["pipelined"], report
