"""How the kernel bench measures on a GPU: median times from CUDA events (a clock off CUDA),
replay of a CUDA graph (no host time between kernels), the peak memory a call adds, the copy
and matmul rates that serve as ceilings, and the datasheet figures stated beside them."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn``: CUDA events on the current stream on a GPU, else a clock."""
    for _ in range(3):
        fn()
    times = []
    if device.type != "cuda":
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    torch.cuda.synchronize()
    for _ in range(repeats):
        start_event = torch.cuda.Event(enable_timing=True)
        end_event = torch.cuda.Event(enable_timing=True)
        start_event.record()
        fn()
        end_event.record()
        end_event.synchronize()
        times.append(start_event.elapsed_time(end_event) / 1e3)
    return statistics.median(times)


def graph_seconds(fn: Callable[[], object], repeats: int) -> tuple[float | None, str]:
    """Median time of ``fn`` captured once in a CUDA graph and replayed (no host time
    between its kernels), or ``None`` and why it cannot be captured (a host synchronisation,
    a CPU-side decision on device values, an uncapturable library call). ``fn`` has run on
    this device before (autotuning and compilation are done)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception as error:  # what the capture refused is the answer, not a failure
        torch.cuda.synchronize()
        first = str(error).strip().splitlines()
        return None, "capture impossible: " + (first[0][:160] if first else type(error).__name__)
    try:
        graph.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start_event = torch.cuda.Event(enable_timing=True)
            end_event = torch.cuda.Event(enable_timing=True)
            start_event.record()
            graph.replay()
            end_event.record()
            end_event.synchronize()
            times.append(start_event.elapsed_time(end_event) / 1e3)
    finally:
        del graph
        torch.cuda.empty_cache()
    return statistics.median(times), "captured in a CUDA graph"


def peak_extra_bytes(
    fn: Callable[[], object], reset: Callable[[], None], device: torch.device
) -> int | None:
    """Peak CUDA memory ``fn`` allocates beyond what is live before it (after ``reset``);
    ``None`` off CUDA, where no allocator statistics exist."""
    if device.type != "cuda":
        return None
    reset()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


DATASHEET_CEILINGS: dict[str, dict[str, float]] = {
    "H200": {"copy_bytes_per_s": 4.8e12, "matmul_flop_per_s": 989e12},
    "H100 SXM": {"copy_bytes_per_s": 3.35e12, "matmul_flop_per_s": 989e12},
    "H100 PCIe": {"copy_bytes_per_s": 2.0e12, "matmul_flop_per_s": 756e12},
    "H100 NVL": {"copy_bytes_per_s": 3.9e12, "matmul_flop_per_s": 835e12},
}
"""NVIDIA's datasheet figures: HBM bandwidth and dense (no sparsity) bf16 tensor-core rate.
A measured copy reaches ~85-90% of the HBM figure and a large bf16 matmul ~80% of the rate
(the H200 of reports/results/gpu/h200-2026-11-27 measured 4.16 TB/s and 780 TFLOP/s), so the
bench states both and computes every fraction against the measured one."""


def datasheet_ceilings(device_name: str) -> dict[str, float] | None:
    """The datasheet ceilings of the card ``device_name`` names (as
    ``torch.cuda.get_device_name`` spells it), or ``None`` for a card not listed."""
    name = device_name.upper()
    for card in sorted(DATASHEET_CEILINGS, key=len, reverse=True):
        words = card.upper().split()
        if all(word in name for word in words):
            return DATASHEET_CEILINGS[card]
    if "H100" in name:  # an H100 that names no form factor is the SXM part
        return DATASHEET_CEILINGS["H100 SXM"]
    return None


def copy_seconds(device: torch.device, count: int, repeats: int) -> float:
    src = torch.empty(count, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return median_seconds(lambda: dst.copy_(src), repeats, device)


def matmul_seconds(device: torch.device, size: int, dtype: torch.dtype, repeats: int) -> float:
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    return median_seconds(lambda: torch.matmul(a, b), repeats, device)
