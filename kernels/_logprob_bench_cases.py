"""What ``stalesim bench kernels`` measures: correctness cases and GPU timing cases.

Correctness runs every Triton kernel (compiled on CUDA, under the interpreter on CPU) against
the float64 reference on small odd shapes and reports relative norm errors. Timing (CUDA only)
runs each kernel and its baselines at the issue's shapes and reports the median time over
repeats (CUDA events), the peak memory beyond the inputs, and the achieved rate as a fraction
of a ceiling measured on the same GPU (copy bandwidth, or the bf16 matmul rate).

Every result is one row: a dict with the keys of :data:`COLUMNS`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

COLUMNS: tuple[str, ...] = (
    "kernel",
    "pass",
    "implementation",
    "dtype",
    "shape",
    "device",
    "median_s",
    "peak_extra_bytes",
    "gradient_bytes",
    "achieved",
    "achieved_unit",
    "ceiling",
    "fraction_of_ceiling",
    "forward_rel_error",
    "grad_rel_error",
    "tolerance",
    "status",
    "note",
)

# Forward values are float32 whatever the input dtype; gradients are stored in the input dtype.
GRAD_TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
FORWARD_TOLERANCE = 1e-5

GRPO_OPTION_SETS: dict[str, dict[str, Any]] = {
    "token ratio, clip 0.2/0.28": {"eps_high": 0.28},
    "sequence ratio, TIS cap 2, k3 KL": {
        "ratio_level": "sequence",
        "is_cap": 2.0,
        "beta": 0.04,
        "kl_estimator": "k3",
        "aggregation": "seq_mean_token_mean",
    },
    "decoupled, k2 KL, Dr. GRPO constant": {
        "decoupled": True,
        "beta": 0.1,
        "kl_estimator": "k2",
        "aggregation": "constant",
    },
}
"""Option sets of the GRPO loss the correctness half runs (``decoupled`` adds a proximal policy)."""


def row(**values: Any) -> dict[str, Any]:
    """A result row with every column present (missing ones are ``None``)."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown bench columns: {sorted(unknown)}")
    return {name: values.get(name) for name in COLUMNS}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """``||got - want|| / ||want||`` in float64."""
    want = want.detach().double().cpu()
    return float((got.detach().double().cpu() - want).norm() / want.norm())


# ---------------------------------------------------------------------------------------------
# Correctness
# ---------------------------------------------------------------------------------------------


def correctness_cases(device: torch.device, quick: bool) -> list[Callable[[], dict[str, Any]]]:
    """One thunk per (kernel, dtype or option set); each returns its row when called."""
    gen = torch.Generator().manual_seed(0)
    token_dtypes = (torch.float32, torch.float16, torch.bfloat16)
    # The interpreter multiplies bfloat16 tl.dot operands wrongly, so bf16 matmuls are GPU-only.
    fused_dtypes = token_dtypes if device.type == "cuda" else (torch.float32, torch.float16)
    cases: list[Callable[[], dict[str, Any]]] = []
    cases += [lambda d=d: _token_logprobs_case(device, d, quick, gen) for d in token_dtypes]
    cases += [lambda d=d: _fused_linear_case(device, d, quick, gen) for d in fused_dtypes]
    cases += [
        lambda name=name: _grpo_loss_case(device, name, quick, gen) for name in GRPO_OPTION_SETS
    ]
    return cases


def _correctness_row(
    kernel: str,
    dtype: torch.dtype,
    shape: str,
    device: torch.device,
    forward_error: float,
    grad_error: float,
    grad_tolerance: float,
) -> dict[str, Any]:
    ok = forward_error <= FORWARD_TOLERANCE and grad_error <= grad_tolerance
    return row(
        kernel=kernel,
        implementation="triton" if device.type == "cuda" else "triton (interpreter)",
        dtype=dtype_name(dtype),
        shape=shape,
        device=device.type,
        forward_rel_error=forward_error,
        grad_rel_error=grad_error,
        tolerance=grad_tolerance,
        status="ok" if ok else "FAIL",
        note="vs float64 reference; tolerance applies to the gradient, forward must be <= 1e-5",
        **{"pass": "correctness"},
    )


def _token_logprobs_case(
    device: torch.device, dtype: torch.dtype, quick: bool, gen: torch.Generator
) -> dict[str, Any]:
    from stalesim.kernels.logprobs import token_logprobs
    from stalesim.kernels.reference import token_logprobs_ref

    n, v = (13, 389) if quick else (61, 4099)
    temperature = 0.8
    logits = (4 * torch.randn(n, v, generator=gen)).to(dtype)
    logits[:, ::17] = float("-inf")
    logits[0] = 1e4
    targets = torch.randint(0, v, (n,), generator=gen)
    targets = torch.where(targets % 17 == 0, targets + 1, targets).clamp(max=v - 1)
    upstream = torch.randn(n, generator=gen)

    exact = logits.double().requires_grad_()
    want = token_logprobs_ref(exact, targets, temperature=temperature)
    want.backward(upstream.double())
    live = logits.to(device).requires_grad_()
    got = token_logprobs(live, targets.to(device), temperature=temperature, backend="triton")
    got.backward(upstream.to(device))
    return _correctness_row(
        "token_logprobs",
        dtype,
        f"N={n} V={v} T={temperature}, -inf and 1e4 logits",
        device,
        relative_error(got, want),
        relative_error(live.grad, exact.grad),
        GRAD_TOLERANCE[dtype],
    )


def _fused_linear_case(
    device: torch.device, dtype: torch.dtype, quick: bool, gen: torch.Generator
) -> dict[str, Any]:
    from stalesim.kernels.fused_linear import fused_linear_logprobs
    from stalesim.kernels.reference import fused_linear_logprobs_ref

    n, v, h = (13, 389, 24) if quick else (67, 1031, 72)
    temperature = 0.9
    hidden = torch.randn(n, h, generator=gen).to(dtype)
    weight = (torch.randn(v, h, generator=gen) / h**0.5).to(dtype)
    bias = torch.randn(v, generator=gen).to(dtype)
    targets = torch.randint(0, v, (n,), generator=gen)
    upstream = torch.randn(n, generator=gen)

    exact = [t.double().requires_grad_() for t in (hidden, weight, bias)]
    want = fused_linear_logprobs_ref(
        exact[0], exact[1], targets, temperature=temperature, bias=exact[2]
    )
    want.backward(upstream.double())
    live = [t.to(device).requires_grad_() for t in (hidden, weight, bias)]
    got = fused_linear_logprobs(
        live[0], live[1], targets.to(device), temperature, bias=live[2], backend="triton"
    )
    got.backward(upstream.to(device))
    grad_error = max(relative_error(a.grad, b.grad) for a, b in zip(live, exact, strict=True))
    return _correctness_row(
        "fused_linear_logprobs",
        dtype,
        f"N={n} V={v} H={h} T={temperature}, bias",
        device,
        relative_error(got, want),
        grad_error,
        GRAD_TOLERANCE[dtype],
    )


def _grpo_inputs(
    rows: int, length: int, gen: torch.Generator, with_proximal: bool
) -> dict[str, torch.Tensor]:
    logp = -torch.rand(rows, length, generator=gen) * 3
    tensors = {
        "logp": logp,
        "behaviour_logp": logp + 0.3 * torch.randn(rows, length, generator=gen),
        "advantages": torch.randn(rows, generator=gen),
        "mask": torch.rand(rows, length, generator=gen) < 0.85,
        "ref_logp": logp + 0.2 * torch.randn(rows, length, generator=gen),
    }
    if with_proximal:
        tensors["proximal_logp"] = logp + 0.1 * torch.randn(rows, length, generator=gen)
    return tensors


def _grpo_loss_case(
    device: torch.device, name: str, quick: bool, gen: torch.Generator
) -> dict[str, Any]:
    from stalesim.kernels.loss import grpo_loss
    from stalesim.kernels.reference import grpo_loss_ref

    rows, length = (4, 33) if quick else (16, 257)
    options = dict(GRPO_OPTION_SETS[name])
    decoupled = options.pop("decoupled", False)
    if options.get("aggregation") == "constant":
        options["max_tokens"] = length
    inputs = _grpo_inputs(rows, length, gen, decoupled)

    exact = {k: (t.double() if t.is_floating_point() else t) for k, t in inputs.items()}
    exact["logp"].requires_grad_()
    want, _ = grpo_loss_ref(**exact, **options)
    want.backward()
    live = {k: t.to(device) for k, t in inputs.items()}
    live["logp"].requires_grad_()
    got, _ = grpo_loss(**live, **options, backend="triton")
    got.backward()
    return _correctness_row(
        "grpo_loss",
        torch.float32,
        f"R={rows} L={length}: {name}",
        device,
        abs(got.item() - want.item()) / max(abs(want.item()), 1e-12),
        relative_error(live["logp"].grad, exact["logp"].grad),
        GRAD_TOLERANCE[torch.float32],
    )


# ---------------------------------------------------------------------------------------------
# GPU timing
# ---------------------------------------------------------------------------------------------


def median_cuda_seconds(fn: Callable[[], object], repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` on the current CUDA stream, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def peak_extra_bytes(fn: Callable[[], object], reset: Callable[[], None]) -> int:
    """Peak CUDA memory ``fn`` allocates beyond what is live before it (after ``reset``)."""
    reset()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def measure_ceilings(quick: bool, repeats: int) -> dict[str, float]:
    """Copy bandwidth (bytes/s, read + write of a large tensor) and the bf16 matmul rate
    (FLOP/s of a large square ``torch.matmul``) on the current GPU."""
    count = 2**26 if quick else 2**28
    size = 4096 if quick else 8192
    copy_s = _copy_seconds(count, repeats)
    matmul_s = _matmul_seconds(size, repeats)
    return {
        "copy_bytes_per_s": 2 * count * 4 / copy_s,
        "bf16_matmul_flop_per_s": 2 * size**3 / matmul_s,
    }


def _copy_seconds(count: int, repeats: int) -> float:
    src = torch.empty(count, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    return median_cuda_seconds(lambda: dst.copy_(src), repeats)


def _matmul_seconds(size: int, repeats: int) -> float:
    a = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(size, size, dtype=torch.bfloat16, device="cuda")
    return median_cuda_seconds(lambda: torch.matmul(a, b), repeats)


def _eager_token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """What training code usually writes: a float32 log-softmax, then a gather."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _eager_fused_linear(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    return _eager_token_logprobs(hidden @ weight.T, targets)


def _optional_baselines(kind: str) -> dict[str, Callable[..., torch.Tensor]]:
    """Liger-Kernel and Cut Cross-Entropy, when importable, as functions giving log-probs or
    (for losses that reduce) the negative summed log-prob."""
    found: dict[str, Callable[..., torch.Tensor]] = {}
    if kind == "token_logprobs":
        try:
            from liger_kernel.transformers.functional import liger_cross_entropy
        except Exception:
            pass
        else:
            found["liger cross_entropy"] = lambda x, t: -liger_cross_entropy(x, t, reduction="none")
    if kind == "fused_linear_logprobs":
        try:
            from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        except Exception:
            pass
        else:
            found["liger fused_linear_cross_entropy"] = lambda h, w, t: (
                -liger_fused_linear_cross_entropy(h, w, t, reduction="sum")
            )
        try:
            from cut_cross_entropy import linear_cross_entropy
        except Exception:
            pass
        else:
            found["cut cross-entropy"] = lambda h, w, t: (
                -linear_cross_entropy(h, w, t, reduction="sum")
            )
    return found


def _timed_row(
    fn: Callable[[], object],
    reset: Callable[[], None],
    repeats: int,
    *,
    work: float,
    rate_unit: str,
    ceiling: float,
    gradient_bytes: int | None,
    **labels: Any,
) -> dict[str, Any]:
    """Time ``fn`` and express it as a rate of ``work`` (bytes or FLOPs) against ``ceiling``."""
    scale = 1e9 if rate_unit == "GB/s" else 1e12
    try:
        seconds = median_cuda_seconds(fn, repeats)
        peak = peak_extra_bytes(fn, reset)
    except torch.cuda.OutOfMemoryError:
        reset()
        torch.cuda.empty_cache()
        return row(**labels, device="cuda", status="out of memory")
    except Exception as error:  # a baseline library failing must not stop the benchmark
        reset()
        return row(**labels, device="cuda", status="error", note=str(error).splitlines()[0][:200])
    finally:
        reset()
    rate = work / seconds
    return row(
        **labels,
        device="cuda",
        median_s=seconds,
        peak_extra_bytes=peak,
        gradient_bytes=gradient_bytes,
        achieved=rate / scale,
        achieved_unit=rate_unit,
        ceiling=ceiling / scale,
        fraction_of_ceiling=rate / ceiling,
        status="ok",
    )


def timing_cases(
    quick: bool, repeats: int, ceilings: dict[str, float]
) -> list[Callable[[], dict[str, Any]]]:
    """One thunk per (kernel, pass, implementation) at the issue's shapes (smaller if quick)."""
    return [
        *_token_logprobs_timing(quick, repeats, ceilings),
        *_fused_linear_timing(quick, repeats, ceilings),
        *_grpo_loss_timing(quick, repeats, ceilings),
    ]


def _implementations(kind: str, triton_fn: Callable[..., torch.Tensor], eager: Callable[..., Any]):
    impls: dict[str, Callable[..., torch.Tensor]] = {
        "triton": triton_fn,
        "torch eager": eager,
        "torch.compile": torch.compile(eager),
    }
    impls.update(_optional_baselines(kind))
    return impls


def _token_logprobs_timing(quick: bool, repeats: int, ceilings: dict[str, float]):
    from stalesim.kernels.logprobs import token_logprobs

    n, v = (2048, 32768) if quick else (8192, 151_936)
    dtype = torch.bfloat16
    shape = f"N={n} V={v}"
    state: dict[str, torch.Tensor] = {}

    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        if not state:
            state["logits"] = torch.randn(n, v, device="cuda", dtype=dtype)
            state["targets"] = torch.randint(0, v, (n,), device="cuda")
        return state["logits"], state["targets"]

    def reset() -> None:
        if state:
            state["logits"].grad = None
            state["logits"].requires_grad_(False)

    impls = _implementations(
        "token_logprobs", lambda x, t: token_logprobs(x, t, backend="triton"), _eager_token_logprobs
    )
    read = n * v * dtype.itemsize
    ceiling = ceilings["copy_bytes_per_s"]
    cases = []
    for name, impl in impls.items():

        def forward(impl=impl) -> object:
            logits, targets = inputs()
            with torch.no_grad():
                return impl(logits, targets)

        def forward_backward(impl=impl) -> object:
            logits, targets = inputs()
            logits.grad = None
            logits.requires_grad_(True)
            impl(logits, targets).sum().backward()

        labels = {"kernel": "token_logprobs", "implementation": name, "dtype": "bfloat16"}
        cases.append(
            lambda f=forward, labels=labels: _timed_row(
                f,
                reset,
                repeats,
                work=read,
                rate_unit="GB/s",
                ceiling=ceiling,
                gradient_bytes=None,
                shape=shape,
                **labels,
                **{"pass": "forward"},
                note="bytes: logits read once",
            )
        )
        cases.append(
            lambda f=forward_backward, labels=labels: _timed_row(
                f,
                reset,
                repeats,
                work=3 * read,
                rate_unit="GB/s",
                ceiling=ceiling,
                gradient_bytes=read,
                shape=shape,
                **labels,
                **{"pass": "forward+backward"},
                note="bytes: logits read twice, dlogits written once",
            )
        )
    return cases


def _fused_linear_timing(quick: bool, repeats: int, ceilings: dict[str, float]):
    from stalesim.kernels.fused_linear import fused_linear_logprobs

    n, h, v = (4096, 1024, 32768) if quick else (16_384, 2048, 248_320)
    dtype = torch.bfloat16
    shape = f"N={n} H={h} V={v}"
    state: dict[str, torch.Tensor] = {}

    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not state:
            state["hidden"] = torch.randn(n, h, device="cuda", dtype=dtype)
            state["weight"] = torch.randn(v, h, device="cuda", dtype=dtype) / h**0.5
            state["targets"] = torch.randint(0, v, (n,), device="cuda")
        return state["hidden"], state["weight"], state["targets"]

    def reset() -> None:
        for key in ("hidden", "weight"):
            if key in state:
                state[key].grad = None
                state[key].requires_grad_(False)

    impls = _implementations(
        "fused_linear_logprobs",
        lambda x, w, t: fused_linear_logprobs(x, w, t, backend="triton"),
        _eager_fused_linear,
    )
    flops = 2 * n * h * v
    gradient_bytes = (n + v) * h * dtype.itemsize
    ceiling = ceilings["bf16_matmul_flop_per_s"]
    cases = []
    for name, impl in impls.items():

        def forward(impl=impl) -> object:
            hidden, weight, targets = inputs()
            with torch.no_grad():
                return impl(hidden, weight, targets)

        def forward_backward(impl=impl) -> object:
            hidden, weight, targets = inputs()
            for t in (hidden, weight):
                t.grad = None
                t.requires_grad_(True)
            impl(hidden, weight, targets).sum().backward()

        labels = {"kernel": "fused_linear_logprobs", "implementation": name, "dtype": "bfloat16"}
        cases.append(
            lambda f=forward, labels=labels: _timed_row(
                f,
                reset,
                repeats,
                work=flops,
                rate_unit="TFLOP/s",
                ceiling=ceiling,
                gradient_bytes=None,
                shape=shape,
                **labels,
                **{"pass": "forward"},
                note="FLOPs: 2NVH",
            )
        )
        cases.append(
            lambda f=forward_backward, labels=labels: _timed_row(
                f,
                reset,
                repeats,
                work=3 * flops,
                rate_unit="TFLOP/s",
                ceiling=ceiling,
                gradient_bytes=gradient_bytes,
                shape=shape,
                **labels,
                **{"pass": "forward+backward"},
                note="FLOPs: 6NVH (model FLOPs; recomputing logits is not counted)",
            )
        )
    return cases


def _grpo_loss_timing(quick: bool, repeats: int, ceilings: dict[str, float]):
    from stalesim.kernels.loss import grpo_loss
    from stalesim.kernels.reference import grpo_loss_ref

    rows, length = (64, 256) if quick else (64, 1024)
    options = dict(GRPO_OPTION_SETS["sequence ratio, TIS cap 2, k3 KL"])
    shape = f"R={rows} L={length} ({rows * length:,} tokens): sequence ratio, TIS, k3 KL"
    state: dict[str, torch.Tensor] = {}

    def inputs() -> dict[str, torch.Tensor]:
        if not state:
            gen = torch.Generator().manual_seed(1)
            state.update({k: t.cuda() for k, t in _grpo_inputs(rows, length, gen, False).items()})
        return state

    def reset() -> None:
        if state:
            state["logp"].grad = None
            state["logp"].requires_grad_(False)

    def eager(**kw: torch.Tensor) -> torch.Tensor:
        return grpo_loss_ref(**kw, **options)[0]

    impls = {
        "triton": lambda **kw: grpo_loss(**kw, **options, backend="triton")[0],
        "torch eager": eager,
        "torch.compile": torch.compile(eager),
    }
    tokens = rows * length
    # logp, behaviour and reference log-probs read (4 B each), the mask (1 B), dlogp written.
    work = tokens * (3 * 4 + 1 + 4)
    cases = []
    for name, impl in impls.items():

        def forward_backward(impl=impl) -> object:
            tensors = inputs()
            tensors["logp"].grad = None
            tensors["logp"].requires_grad_(True)
            impl(**tensors).backward()

        cases.append(
            lambda f=forward_backward, name=name: _timed_row(
                f,
                reset,
                repeats,
                work=work,
                rate_unit="GB/s",
                ceiling=ceilings["copy_bytes_per_s"],
                gradient_bytes=tokens * 4,
                shape=shape,
                kernel="grpo_loss",
                implementation=name,
                dtype="float32",
                note="bytes: three log-prob tensors and the mask read, dlogp written",
                **{"pass": "forward+backward"},
            )
        )
    return cases
