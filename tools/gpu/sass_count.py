"""Instruction counts of the log-prob forward kernels compiled for sm_90 (no GPU needed): the
per-lane design measured on the H200, the tile-max variant measured by tune_launch.py, and the
shipped kernel. Usage, from the repository root:

    git show ca75def:kernels/_logprob_triton.py > /tmp/sass/old_logprob.py
    TRITON_INTERPRET=0 python tools/gpu/sass_count.py
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

# Compiling to a cubin needs the real compiler, not the interpreter the tests may have set.
os.environ["TRITON_INTERPRET"] = "0"

import triton
from triton.backends.compiler import GPUTarget

FULL = {
    "logits_ptr": "*bf16",
    "targets_ptr": "*i64",
    "logp_ptr": "*fp32",
    "lse_ptr": "*fp32",
    "entropy_ptr": "*fp32",
    "n_vocab": "aligned",
    "stride_row": "aligned",
    "inv_temperature": "fp32",
}
SMALL = {k: v for k, v in FULL.items() if k != "entropy_ptr"}
COUNTED = ("MUFU", "FFMA", "FMNMX", "LDG", "SHFL", "BAR", "FSETP", "FSEL")


def load(path: str, name: str) -> ModuleType:
    """Import a module from a file path under ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sass(kernel, sig: dict, consts: dict, warps: int) -> str:
    """The SASS of ``kernel`` compiled for sm_90 with these constants and warps."""
    names = kernel.arg_names
    signature = {n: ("i32" if t == "aligned" else t) for n, t in sig.items()}
    signature |= {n: "constexpr" for n in consts}
    aligned = [n for n, t in sig.items() if t == "aligned" or t.startswith("*")]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    compiled = triton.compile(
        triton.compiler.ASTSource(kernel, signature, consts, attrs),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": warps, "num_stages": 3},
    )
    cuobjdump = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(compiled.asm["cubin"])
        handle.flush()
        return subprocess.run(
            [str(cuobjdump), "--dump-sass", handle.name], capture_output=True, text=True
        ).stdout


def main() -> None:
    from stalesim.kernels import _logprob_triton as new

    old = load("/tmp/sass/old_logprob.py", "old_logprob")
    tune = load(str(Path(__file__).with_name("tune_launch.py")), "tune_launch")
    cases = [
        ("old per-lane 4096/8", old._logprob_forward_kernel, FULL,
         {"BLOCK_V": 4096, "WITH_ENTROPY": False}, 8),
        ("old per-lane 2048/4", old._logprob_forward_kernel, FULL,
         {"BLOCK_V": 2048, "WITH_ENTROPY": False}, 4),
        ("tune tile-max 2048/4", tune._tile_max_forward, SMALL, {"BLOCK_V": 2048}, 4),
        ("shipped tile-max 2048/4", new._logprob_forward_kernel, FULL,
         {"BLOCK_V": 2048, "WITH_ENTROPY": False}, 4),
        ("shipped tile-max +entropy 2048/4", new._logprob_forward_kernel, FULL,
         {"BLOCK_V": 2048, "WITH_ENTROPY": True}, 4),
    ]  # fmt: skip
    for label, kernel, sig, consts, warps in cases:
        instrs = re.findall(
            r"/\*[0-9a-f]{4}\*/\s+([A-Z][A-Z0-9_.]*)", sass(kernel, sig, consts, warps)
        )
        ops: dict[str, int] = {}
        for instr in instrs:
            key = instr.split(".")[0]
            ops[key] = ops.get(key, 0) + 1
        counts = ", ".join(f"{op} {ops.get(op, 0)}" for op in COUNTED)
        print(f"{label}: {len(instrs)} instructions; {counts}")


if __name__ == "__main__":
    main()
