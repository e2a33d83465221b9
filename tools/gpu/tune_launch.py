"""Launch-shape sweep for the two kernels that missed their targets on the H200 (2026-11-27).

It times, at the target shapes, with CUDA events (median of 20 after 3 warm-ups):

1. ``token_logprobs`` forward (N=8,192, V=151,936, bf16) for tile widths 1,024-8,192 and 4, 8
   or 16 warps, and one kernel variant that is not in the package (``tile-max``: one running
   maximum per row, taken per tile by a block reduction, so one ``exp`` per logit instead of
   the per-lane design's ``exp`` plus the rescaling ``exp``);
2. the fused forward (N=16,384, H=2,048, V=248,320, bf16) with each candidate tile alone in
   the autotuner;
3. the fused backward's logit-gradient kernel on a 16,384 x 16,384 slab for candidate tiles.

Each line is printed as it is measured (a run cut short keeps what it did) and all rows are
written to ``$OUT/tune.csv``. ``--tiny`` runs the same code at small shapes on CPU under the
Triton interpreter (a check of the script, not a measurement).

Usage (GPU box, repository root on PYTHONPATH as ``stalesim``): python tools/gpu/tune_launch.py
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

TINY = "--tiny" in sys.argv
if TINY:
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from stalesim.kernels.backend import load_triton_module  # noqa: E402

ROWS: list[dict] = []


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    if TINY:
        start = time.perf_counter()
        fn()
        return 1e3 * (time.perf_counter() - start)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def record(part: str, variant: str, ms: float, work: float, unit: str, error: float | None):
    rate = work / (ms / 1e3) / (1e9 if unit == "GB/s" else 1e12)
    row = {"part": part, "variant": variant, "median_ms": ms, "rate": rate, "unit": unit,
           "max_abs_diff_vs_package": error}  # fmt: skip
    ROWS.append(row)
    err = "" if error is None else f", max |diff| vs package {error:.1e}"
    print(f"{part} {variant}: {ms:.3f} ms, {rate:.1f} {unit}{err}", flush=True)


@triton.jit
def _tile_max_forward(
    logits_ptr, targets_ptr, logp_ptr, lse_ptr, n_vocab, stride_row, inv_temperature,
    BLOCK_V: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    cols = tl.arange(0, BLOCK_V)
    m = tl.max(tl.full((BLOCK_V,), float("-inf"), tl.float32), axis=0)
    s = tl.zeros((BLOCK_V,), tl.float32)
    ahead = tl.load(row_ptr + cols, mask=cols < n_vocab, other=float("-inf"))
    for start in range(0, n_vocab, BLOCK_V):
        z = ahead.to(tl.float32) * inv_temperature
        idx = start + BLOCK_V + cols
        ahead = tl.load(row_ptr + idx, mask=idx < n_vocab, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp(m - m_new) + tl.exp(z - m_new)
        m = m_new
    log_sum = tl.log(tl.sum(s, axis=0))
    target = tl.load(targets_ptr + row).to(tl.int64)
    target_logit = tl.load(row_ptr + target).to(tl.float32) * inv_temperature
    tl.store(lse_ptr + row, m + log_sum)
    tl.store(logp_ptr + row, (target_logit - m) - log_sum)


def logprob_sweep(device: torch.device, repeats: int) -> None:
    lp = load_triton_module("_logprob_triton")
    n, v = (37, 1000) if TINY else (8192, 151_936)
    logits = torch.randn(n, v, device=device).to(torch.bfloat16)
    targets = torch.randint(0, v, (n,), device=device)
    logp = torch.empty(n, device=device)
    lse = torch.empty(n, device=device)
    lp.logprob_forward(logits, targets, 1.0, logp, lse)
    reference = logp.clone()
    work = logits.numel() * logits.element_size()
    original = lp.launch_config
    shapes = [(64, 1)] if TINY else [(b, w) for b in (1024, 2048, 4096, 8192) for w in (4, 8, 16)]
    for block_v, warps in shapes:
        lp.launch_config = lambda n_vocab, dev, b=block_v, w=warps: lp.LogprobLaunch(b, w)
        try:
            ms = median_ms(lambda: lp.logprob_forward(logits, targets, 1.0, logp, lse), repeats)
            error = (logp - reference).abs().max().item()
            record("logprob-forward", f"per-lane BLOCK_V={block_v} warps={warps}", ms, work,
                   "GB/s", error)  # fmt: skip
        except Exception as exc:  # a shape that does not compile is a result too
            print(f"logprob-forward BLOCK_V={block_v} warps={warps}: {exc!r}"[:300], flush=True)
        finally:
            lp.launch_config = original
    for block_v, warps in [(64, 1)] if TINY else [(2048, 4), (4096, 8), (8192, 8), (8192, 16)]:

        def tile_max(b=block_v, w=warps) -> None:
            _tile_max_forward[(n,)](
                logits, targets, logp, lse, v, logits.stride(0), 1.0, BLOCK_V=b, num_warps=w
            )

        try:
            ms = median_ms(tile_max, repeats)
            error = (logp - reference).abs().max().item()
            record("logprob-forward", f"tile-max BLOCK_V={block_v} warps={warps}", ms, work,
                   "GB/s", error)  # fmt: skip
        except Exception as exc:
            print(f"logprob-forward tile-max {block_v}/{warps}: {exc!r}"[:300], flush=True)


FORWARD_TILES = [  # (BLOCK_N, BLOCK_V, BLOCK_H, warps, stages)
    (128, 128, 64, 8, 3), (128, 128, 64, 8, 4), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4),
    (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 256, 64, 8, 4), (256, 128, 64, 8, 4),
    (128, 128, 128, 8, 3), (128, 128, 64, 4, 3),
]  # fmt: skip


def fused_sweep(device: torch.device, repeats: int) -> None:
    fz = load_triton_module("_fused_triton")
    n, h, v = (40, 32, 300) if TINY else (16_384, 2048, 248_320)
    dtype = torch.float16 if TINY else torch.bfloat16
    hidden = torch.randn(n, h, device=device).to(dtype)
    weight = (torch.randn(v, h, device=device) / h**0.5).to(dtype)
    targets = torch.randint(0, v, (n,), device=device)
    logp = torch.empty(n, device=device)
    lse = torch.empty(n, device=device)
    if not TINY:
        fz.fused_forward(hidden, weight, None, targets, 1.0, logp, lse)
    reference = logp.clone()
    forward_flop = 2.0 * n * h * v
    original = fz._fused_forward_tuned
    for bn, bv, bh, warps, stages in [] if TINY else FORWARD_TILES:
        config = triton.Config(
            {"BLOCK_N": bn, "BLOCK_V": bv, "BLOCK_H": bh}, num_warps=warps, num_stages=stages
        )
        fz._fused_forward_tuned = triton.autotune(configs=[config], key=["n_hidden", "n_vocab"])(
            fz._fused_forward_kernel
        )
        try:
            ms = median_ms(
                lambda: fz.fused_forward(hidden, weight, None, targets, 1.0, logp, lse), repeats
            )
            error = (logp - reference).abs().max().item()
            record("fused-forward", f"{bn}x{bv}x{bh} warps={warps} stages={stages}", ms,
                   forward_flop, "TFLOP/s", error)  # fmt: skip
        except Exception as exc:
            print(f"fused-forward {bn}x{bv}x{bh}/{warps}/{stages}: {exc!r}"[:300], flush=True)
        finally:
            fz._fused_forward_tuned = original

    # the backward's logit-gradient kernel, on one large slab
    width = 256 if TINY else 16_384
    slab = torch.empty(n, width, device=device, dtype=dtype)
    grad_logp = torch.randn(n, device=device)
    lse_now = torch.full((n,), 12.0, device=device)
    launch = fz.launch_config
    grad_tiles = [(16, 32, 16, 1, 1)] if TINY else [
        (128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 64, 8, 4),
        (128, 64, 64, 4, 4),
    ]  # fmt: skip
    for bn, bv, bh, warps, stages in grad_tiles:
        fz.launch_config = lambda dt, dev, c=(bn, bv, bh, warps, stages): fz.FusedLaunch(
            *c, dot_precision="ieee"
        )
        try:
            ms = median_ms(
                lambda: fz.fused_grad_logits(
                    hidden, weight, None, targets, lse_now, grad_logp, 1.0, 0, slab
                ),
                repeats,
            )
            record("fused-grad-logits", f"{bn}x{bv}x{bh} warps={warps} stages={stages}", ms,
                   2.0 * n * h * width, "TFLOP/s", None)  # fmt: skip
        except Exception as exc:
            print(f"fused-grad-logits {bn}x{bv}x{bh}/{warps}/{stages}: {exc!r}"[:300], flush=True)
        finally:
            fz.launch_config = launch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cpu" if args.tiny else "cuda")
    torch.manual_seed(0)
    if not args.tiny:
        print(torch.cuda.get_device_name(device), torch.__version__, triton.__version__)
    out = Path(os.environ.get("OUT", "."))
    try:
        logprob_sweep(device, args.repeats)
        fused_sweep(device, args.repeats)
    finally:
        if ROWS:
            with (out / "tune.csv").open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(ROWS[0]))
                writer.writeheader()
                writer.writerows(ROWS)


if __name__ == "__main__":
    main()
