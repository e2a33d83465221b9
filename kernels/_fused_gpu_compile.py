"""Compile the log-prob kernels for an H100 (sm_90) without a GPU, and report their resources.

Triton compiles to a cubin without a driver, so machines without a GPU can still check what
the interpreter cannot: that the GPU launch configurations compile, fit the SM's shared memory,
do not spill registers to local memory, and that the matmul loops are software-pipelined
(asynchronous global-to-shared copies). Arguments are specialised as Triton's launcher would
specialise them at the shapes that matter (16-byte-aligned pointers and strides, unit strides
as constants).

Run as ``TRITON_INTERPRET=0 python -m stalesim.kernels._fused_gpu_compile`` (the kernels
package switches the interpreter on by itself on a machine without CUDA unless told ``0``); it
prints one JSON object per compiled kernel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SM90_SHARED_BYTES = 232_448
"""Shared memory one H100 thread block may use (227 KiB)."""

ALIGNED = "aligned"
"""Marks an integer argument that Triton specialises as divisible by 16."""


def _jobs() -> list[tuple[Any, dict[str, Any], dict[str, Any], int, int]]:
    """(kernel, argument types, constexpr values, warps, stages) for each GPU launch: both
    log-prob kernels, the fused forward in every autotuned tile of :data:`FORWARD_CONFIGS`
    (16-bit) and its fixed float32 tile, the fused logit-gradient kernel, the GRPO loss
    forward, and the one-read logits -> GRPO kernel with its backward scaling."""
    import torch
    from stalesim.kernels import _fused_triton as fused
    from stalesim.kernels import _grpo_loss_triton as grpo
    from stalesim.kernels import _logprob_triton as logprob

    jobs = []
    # The log-prob kernels compile with the row-skip mask in bf16 (the GRPO path's dtype)
    # and without it in float32, so both variants are checked.
    for dtype, short in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        forward = logprob.launch_config(151_936, torch.device("cuda"), "forward")
        backward = logprob.launch_config(151_936, torch.device("cuda"), "backward")
        for with_entropy in (False, True):
            jobs.append(
                (
                    logprob._logprob_forward_kernel,
                    {"logits_ptr": f"*{short}", "targets_ptr": "*i64", "logp_ptr": "*fp32",
                     "lse_ptr": "*fp32", "entropy_ptr": "*fp32", "keep_ptr": "*u8",
                     "n_vocab": ALIGNED, "stride_row": ALIGNED, "inv_temperature": "fp32"},
                    {"BLOCK_V": forward.block_v, "WITH_ENTROPY": with_entropy,
                     "HAS_KEEP": short == "bf16"},
                    forward.num_warps, 3,
                )
            )  # fmt: skip
            jobs.append(
                (
                    logprob._logprob_backward_kernel,
                    {"logits_ptr": f"*{short}", "targets_ptr": "*i64", "lse_ptr": "*fp32",
                     "entropy_ptr": "*fp32", "grad_logp_ptr": "*fp32",
                     "grad_entropy_ptr": "*fp32", "grad_logits_ptr": f"*{short}",
                     "keep_ptr": "*u8", "n_vocab": ALIGNED, "stride_row": ALIGNED,
                     "stride_grad_row": ALIGNED, "inv_temperature": "fp32"},
                    {"BLOCK_V": backward.block_v, "WITH_ENTROPY": with_entropy,
                     "HAS_KEEP": short == "bf16"},
                    backward.num_warps, 3,
                )
            )  # fmt: skip
        for with_entropy in (False, True):
            jobs.append(
                (
                    logprob._logprob_split_forward_kernel,
                    {"logits_ptr": f"*{short}", "targets_ptr": "*i64", "part_max_ptr": "*fp32",
                     "part_sum_ptr": "*fp32", "part_w_ptr": "*fp32",
                     "target_logit_ptr": "*fp32", "keep_ptr": "*u8", "n_rows": "i32",
                     "n_vocab": ALIGNED, "split_len": ALIGNED, "stride_row": ALIGNED,
                     "inv_temperature": "fp32"},
                    {"BLOCK_V": forward.block_v, "WITH_ENTROPY": with_entropy,
                     "HAS_KEEP": short == "bf16"},
                    forward.num_warps, 3,
                )
            )  # fmt: skip
            jobs.append(
                (
                    logprob._logprob_split_combine_kernel,
                    {"part_max_ptr": "*fp32", "part_sum_ptr": "*fp32", "part_w_ptr": "*fp32",
                     "target_logit_ptr": "*fp32", "targets_ptr": "*i64", "keep_ptr": "*u8",
                     "logp_ptr": "*fp32", "lse_ptr": "*fp32", "entropy_ptr": "*fp32",
                     "n_rows": "i32", "n_vocab": ALIGNED, "n_splits": "i32"},
                    {"BLOCK": logprob.COMBINE_BLOCK, "WITH_ENTROPY": with_entropy,
                     "HAS_KEEP": short == "bf16"},
                    4, 1,
                )
            )  # fmt: skip
        cfg = fused.launch_config(dtype, torch.device("cuda"))
        operands = {"hidden_ptr": f"*{short}", "weight_ptr": f"*{short}",
                    "bias_ptr": f"*{short}", "targets_ptr": "*i64"}  # fmt: skip
        sizes = {"n_rows": "i32", "n_vocab": ALIGNED, "n_hidden": ALIGNED,
                 "stride_hidden": ALIGNED, "stride_weight": ALIGNED, "inv_temperature": "fp32"}  # fmt: skip
        forward_tiles = fused.FORWARD_CONFIGS if dtype != torch.float32 else (cfg,)
        for tile in forward_tiles:
            jobs.append(
                (
                    fused._fused_forward_kernel,
                    {**operands, "partial_max_ptr": "*fp32", "partial_sum_ptr": "*fp32",
                     "partial_target_ptr": "*fp32", "n_splits": "i32", **sizes,
                     "row_bucket": "i32"},
                    {"HAS_BIAS": True, "GROUP_ROWS": fused.GROUP_ROWS,
                     "BLOCK_N": tile.block_n, "BLOCK_V": tile.block_v,
                     "BLOCK_H": tile.block_h, "DOT_PRECISION": cfg.dot_precision},
                    tile.num_warps, tile.num_stages,
                )
            )  # fmt: skip
        jobs.append(
            (
                fused._fused_grad_logits_kernel,
                {**operands, "lse_ptr": "*fp32", "grad_logp_ptr": "*fp32",
                 "slab_ptr": f"*{short}", "chunk_start": ALIGNED, "chunk_width": ALIGNED,
                 "stride_slab": ALIGNED, **sizes},
                {"HAS_BIAS": True, "BLOCK_N": cfg.block_n, "BLOCK_V": cfg.block_v,
                 "BLOCK_H": cfg.block_h, "DOT_PRECISION": cfg.dot_precision},
                cfg.num_warps, cfg.num_stages,
            )
        )  # fmt: skip
    # The GRPO loss forward, at the bench's sequence-level option set (every branch the NaN
    # propagation touches: the cap, the clip, the KL).
    jobs.append(
        (
            grpo.grpo_forward_kernel,
            {"logp_ptr": "*fp32", "behaviour_ptr": "*fp32", "prox_ptr": "*fp32",
             "ref_ptr": "*fp32", "adv_ptr": "*fp32", "mask_ptr": "*u8",
             "sequence_sums_ptr": "*fp32", "dloss_ptr": "*fp32", "partial_ptr": "*fp32",
             "L": ALIGNED, "T": "i32", "P": "i32", "eps_low": "fp32", "eps_high": "fp32",
             "is_cap": "fp32", "beta": "fp32"},
            {"PROX_MODE": int(grpo.PROX_CURRENT), "SEQUENCE": True, "HAS_CAP": True,
             "HAS_REF": True, "USE_KL": True, "KL_ESTIMATOR": 3, "BLOCK": 512,
             "TILES_BLOCK": 2},
            4, 1,
        )
    )  # fmt: skip
    # The one-read logits -> GRPO kernel (bf16 logits, the forward's tile) and the backward's
    # upstream scaling.
    from stalesim.kernels import _logits_grpo_triton as onepass

    jobs.append(
        (
            onepass.logits_grpo_onepass_kernel,
            {"logits_ptr": "*bf16", "targets_ptr": "*i64", "keep_ptr": "*u8",
             "behaviour_ptr": "*fp32", "adv_ptr": "*fp32", "weight_ptr": "*fp32",
             "logp_ptr": "*fp32", "grad_ptr": "*bf16", "n_vocab": ALIGNED,
             "stride_row": ALIGNED, "stride_grad_row": ALIGNED, "inv_temperature": "fp32",
             "eps_low": "fp32", "eps_high": "fp32"},
            {"BLOCK_V": forward.block_v}, forward.num_warps, 3,
        )
    )  # fmt: skip
    jobs.extend(_grad_in_forward_jobs())
    jobs.append(
        (
            onepass.scale_kernel,
            {"grad_ptr": "*bf16", "upstream_ptr": "*fp32", "n_elements": "i32"},
            {"BLOCK": 4096}, 8, 1,
        )
    )  # fmt: skip
    return jobs


def _grad_in_forward_jobs() -> list[tuple[Any, dict[str, Any], dict[str, Any], int, int]]:
    """The three kernels of the fused linear + GRPO op with the gradient in the forward, at
    their GPU tiles in bf16 and float32."""
    import torch
    from stalesim.kernels import fused_linear_grpo as gif

    jobs = []
    for dtype, short in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        cfg = gif.launch_config(dtype, torch.device("cuda"))
        rows = {"targets_ptr": "*i64", "keep_ptr": "*u8", "n_rows": "i32", "n_vocab": ALIGNED,
                "n_hidden": ALIGNED, "n_tiles": "i32"}  # fmt: skip
        scales = {"exp_ptr": f"*{short}", "scale_ptr": "*fp32", "coef_ptr": "*fp32"}
        common = {"TILE_V": cfg.tile_v, "DOT_PRECISION": cfg.dot_precision}
        jobs.append(
            (
                gif.logits_exp_kernel,
                {"hidden_ptr": f"*{short}", "weight_ptr": f"*{short}", "exp_ptr": f"*{short}",
                 "tile_max_ptr": "*fp32", "tile_sum_ptr": "*fp32", "target_logit_ptr": "*fp32",
                 **rows, "stride_hidden": ALIGNED, "stride_weight": ALIGNED,
                 "stride_exp": ALIGNED, "inv_temperature": "fp32"},
                {"GROUP_ROWS": 8, "BLOCK_N": cfg.block_n, "BLOCK_H": cfg.block_h, **common},
                cfg.num_warps, cfg.num_stages,
            )
        )  # fmt: skip
        jobs.append(
            (
                gif.grad_hidden_kernel,
                {**scales, **rows, "weight_ptr": f"*{short}", "grad_hidden_ptr": f"*{short}",
                 "stride_exp": ALIGNED, "stride_weight": ALIGNED, "stride_grad": ALIGNED},
                {**common, "BLOCK_N": cfg.block_n, "BLOCK_H": cfg.grad_h,
                 "BLOCK_K": cfg.block_k},
                cfg.num_warps, cfg.num_stages,
            )
        )  # fmt: skip
        jobs.append(
            (
                gif.grad_weight_kernel,
                {**scales, **rows, "hidden_ptr": f"*{short}", "grad_weight_ptr": f"*{short}",
                 "stride_exp": ALIGNED, "stride_hidden": ALIGNED, "stride_grad": ALIGNED},
                {"ACCUMULATE": True, **common, "BLOCK_V": cfg.block_v, "BLOCK_H": cfg.grad_h,
                 "BLOCK_R": cfg.block_r},
                cfg.num_warps, cfg.num_stages,
            )
        )  # fmt: skip
        jobs.append(
            (
                gif.scale_exp_kernel,
                {**scales, "targets_ptr": "*i64", "keep_ptr": "*u8", "n_vocab": ALIGNED,
                 "n_tiles": "i32", "stride_exp": ALIGNED},
                {"TILE_V": cfg.tile_v, "BLOCK": gif.SCALE_COLUMNS}, 4, 1,
            )
        )  # fmt: skip
    return jobs


SASS_OPS = ("HGMMA", "HMMA", "FFMA", "FMUL", "FADD", "MUFU", "FMNMX", "LDG", "LDGSTS", "LDS",
            "STG", "STS", "SHFL", "BAR", "ATOMG", "RED", "BRA")  # fmt: skip
"""SASS opcodes counted per kernel: tensor-core ops, the float pipes, ``exp`` (MUFU), memory
traffic instructions (global loads, asynchronous copies, shared memory, stores), shuffles,
barriers, atomics and branches."""


def instruction_counts(sass: str, ptx: str) -> dict[str, Any]:
    """Static instruction counts of one kernel: every SASS instruction, the opcodes of
    :data:`SASS_OPS` (by their first dotted part), and PTX instructions (lines that are neither
    directives, labels, braces nor comments). Static: a loop body counts once."""
    opcodes = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass)
    by_op = {op: sum(1 for o in opcodes if o == op) for op in SASS_OPS}
    ptx_lines = [line.strip() for line in ptx.splitlines()]
    ptx_count = sum(
        1
        for line in ptx_lines
        if line
        and not line.startswith((".", "//", "{", "}", "$", "@$"))
        and line.endswith(";")
        and not line.endswith(":")
    )
    return {
        "sass_instructions": len(opcodes),
        "sass_ops": {op: n for op, n in by_op.items() if n},
        "ptx_instructions": ptx_count,
    }


def compile_for_sm90() -> list[dict[str, Any]]:
    """Compile every GPU launch configuration for sm_90; one resource report per kernel."""
    import triton
    from triton.backends.compiler import GPUTarget

    target = GPUTarget("cuda", 90, 32)
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    reports = []
    for kernel, arg_types, constexprs, warps, stages in _jobs():
        names = kernel.arg_names
        signature = {n: ("i32" if t == ALIGNED else t) for n, t in arg_types.items()}
        signature |= {n: "constexpr" for n in constexprs}
        aligned = [n for n, t in arg_types.items() if t == ALIGNED or t.startswith("*")]
        attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
        source = triton.compiler.ASTSource(kernel, signature, constexprs, attrs)
        compiled = triton.compile(
            source, target=target, options={"num_warps": warps, "num_stages": stages}
        )
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(compiled.asm["cubin"])
            cubin.flush()
            usage = subprocess.run(
                [str(cuobjdump), "--dump-resource-usage", cubin.name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        resources = dict(re.findall(r"(REG|LOCAL|SHARED):(\d+)", usage))
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(compiled.asm["cubin"])
            cubin.flush()
            sass = subprocess.run(
                [str(cuobjdump), "--dump-sass", cubin.name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        ttgir = compiled.asm["ttgir"]
        reports.append(
            {
                "kernel": kernel.__name__,
                "variant": ",".join(f"{k}={v}" for k, v in constexprs.items() if k.isupper())
                + f",warps={warps},stages={stages}",
                "operand": next(
                    (
                        arg_types[n]
                        for n in ("hidden_ptr", "logits_ptr", "exp_ptr", "logp_ptr", "grad_ptr")
                        if n in arg_types
                    ),
                    None,
                ),
                "registers": int(resources["REG"]),
                "local_bytes": int(resources["LOCAL"]),
                "shared_bytes": compiled.metadata.shared,
                "uses_wgmma": "warp_group_dot" in ttgir,
                "pipelined": "async_copy_global_to_local" in ttgir,
                **instruction_counts(sass, compiled.asm["ptx"]),
            }
        )
    return reports


def main() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("set TRITON_INTERPRET=0: the interpreter does not compile kernels")
    for report in compile_for_sm90():
        print(json.dumps(report))


if __name__ == "__main__":
    main()
