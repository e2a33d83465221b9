"""Instruction counts of the log-prob forward kernels compiled for sm_90 (no GPU needed): the
per-lane design measured on the H200, the tile-max variant measured by tune_launch.py, and the
shipped kernel. Usage, from the repository root:

    git show ca75def:kernels/_logprob_triton.py > /tmp/sass/old_logprob.py
    TRITON_INTERPRET=0 python reports/results/gpu/sass_count.py
"""

import os, re, subprocess, sys, tempfile, importlib.util
os.environ["TRITON_INTERPRET"] = "0"
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path); m = importlib.util.module_from_spec(spec); sys.modules[name] = m; spec.loader.exec_module(m); return m
from stalesim.kernels import _logprob_triton as new
old = load("/tmp/sass/old_logprob.py", "old_logprob")
tune = load(str(Path(__file__).with_name("tune_launch.py")), "tune_launch")
cuobjdump = Path(triton.__file__).parent / "backends/nvidia/bin/cuobjdump"
def sass(kernel, sig, consts, warps):
    names = kernel.arg_names
    signature = {n: ("i32" if t == "aligned" else t) for n, t in sig.items()} | {n: "constexpr" for n in consts}
    aligned = [n for n, t in sig.items() if t == "aligned" or t.startswith("*")]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    c = triton.compile(triton.compiler.ASTSource(kernel, signature, consts, attrs), target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": 3})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(c.asm["cubin"]); f.flush()
        return subprocess.run([str(cuobjdump), "--dump-sass", f.name], capture_output=True, text=True).stdout
full = {"logits_ptr": "*bf16", "targets_ptr": "*i64", "logp_ptr": "*fp32", "lse_ptr": "*fp32", "entropy_ptr": "*fp32", "n_vocab": "aligned", "stride_row": "aligned", "inv_temperature": "fp32"}
small = {k: v for k, v in full.items() if k != "entropy_ptr"}
for label, kern, sig, consts, warps in [
    ("old per-lane 4096/8", old._logprob_forward_kernel, full, {"BLOCK_V": 4096, "WITH_ENTROPY": False}, 8),
    ("old per-lane 2048/4", old._logprob_forward_kernel, full, {"BLOCK_V": 2048, "WITH_ENTROPY": False}, 4),
    ("tune tile-max 2048/4", tune._tile_max_forward, small, {"BLOCK_V": 2048}, 4),
    ("shipped tile-max 2048/4", new._logprob_forward_kernel, full, {"BLOCK_V": 2048, "WITH_ENTROPY": False}, 4),
    ("shipped tile-max +entropy 2048/4", new._logprob_forward_kernel, full, {"BLOCK_V": 2048, "WITH_ENTROPY": True}, 4),
]:
    s = sass(kern, sig, consts, warps)
    instrs = re.findall(r"/\*[0-9a-f]{4}\*/\s+([A-Z][A-Z0-9_.]*)", s)
    # the loop body: between the first backward branch target and the branch
    total = len(instrs)
    ops = {}
    for i in instrs:
        key = i.split(".")[0]; ops[key] = ops.get(key, 0) + 1
    print(f"{label}: {total} instructions; MUFU {ops.get('MUFU',0)}, FFMA {ops.get('FFMA',0)}, FMNMX {ops.get('FMNMX',0)}, LDG {ops.get('LDG',0)}, SHFL {ops.get('SHFL',0)}, BAR {ops.get('BAR',0)}, FSETP {ops.get('FSETP',0)}, FSEL {ops.get('FSEL',0)}")
