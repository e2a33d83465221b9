"""What ``stalesim bench kernels`` measures: correctness cases and GPU timing cases.

Correctness runs every Triton kernel (compiled on CUDA, under the interpreter on CPU) against
the float64 reference on small odd shapes and reports relative norm errors. Timing (CUDA only)
runs each kernel and its baselines at the issue's shapes and reports the median time over
repeats (CUDA events), the peak memory beyond the inputs, and the achieved rate as a fraction
of a ceiling measured on the same GPU (copy bandwidth, or the bf16 matmul rate).

Every result is one row: a dict with the keys of :data:`COLUMNS`.
"""

from __future__ import annotations

import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
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


def real_shape_correctness_cases(device: torch.device) -> list[Callable[[], dict[str, Any]]]:
    """bf16 checks at the sizes the GPU tiles, the vocabulary splits and the backward's row
    chunks and slabs are built for (``stalesim bench gpu`` runs them): log-probs at a real
    vocabulary (N=1,024, V=151,936) and the fused path at gpu-small's (N=2,048, H=1,024,
    V=32,768: 8 row chunks x 13 slabs in the backward)."""
    gen = torch.Generator().manual_seed(5)
    return [
        lambda: _token_logprobs_case(device, torch.bfloat16, False, gen, shape=(1024, 151_936)),
        lambda: _fused_linear_case(device, torch.bfloat16, False, gen, shape=(2048, 32_768, 1024)),
    ]


def _token_logprobs_case(
    device: torch.device,
    dtype: torch.dtype,
    quick: bool,
    gen: torch.Generator,
    shape: tuple[int, int] | None = None,
) -> dict[str, Any]:
    from stalesim.kernels.logprobs import token_logprobs
    from stalesim.kernels.reference import token_logprobs_ref

    n, v = shape or ((13, 389) if quick else (61, 4099))
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
    device: torch.device,
    dtype: torch.dtype,
    quick: bool,
    gen: torch.Generator,
    shape: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    from stalesim.kernels.fused_linear import fused_linear_logprobs
    from stalesim.kernels.reference import fused_linear_logprobs_ref

    n, v, h = shape or ((13, 389, 24) if quick else (67, 1031, 72))
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
# Timing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchShapes:
    """Problem sizes of the timing half, and of the ceiling measurements."""

    logprobs: tuple[int, int]  # N, V
    fused: tuple[int, int, int]  # N, H, V
    grpo: tuple[int, int]  # R, L
    logits_grpo: tuple[int, int, int]  # R, L, V
    copy_floats: int
    matmul_size: int
    dtype: torch.dtype = torch.bfloat16
    target_shapes: bool = False


FULL = BenchShapes(
    (8192, 151_936), (16_384, 2048, 248_320), (64, 1024), (8, 1024, 151_936), 2**28, 8192,
    target_shapes=True,
)  # fmt: skip
"""The issue's shapes: log-probs N=8192 V=151,936; fused N=16,384 H=2048 V=248,320; GRPO loss
on 65,536 tokens; log-probs -> GRPO loss on 8 x 1,024 tokens of 151,936 logits."""
QUICK = BenchShapes((2048, 32_768), (4096, 1024, 32_768), (64, 256), (4, 512, 32_768), 2**26, 4096)
"""A smoke run on a GPU."""
TINY = BenchShapes((16, 300), (16, 32, 100), (4, 24), (2, 7, 300), 2**16, 64, torch.float32)
"""Shapes the tests use to run the timing code on CPU under the interpreter."""


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


def measure_ceilings(device: torch.device, shapes: BenchShapes, repeats: int) -> dict[str, float]:
    """Copy bandwidth (bytes/s, read + write of a large tensor) and the matmul rate (FLOP/s of
    a large square ``torch.matmul`` in the benchmark dtype) on ``device``."""
    copy_s = _copy_seconds(device, shapes.copy_floats, repeats)
    matmul_s = _matmul_seconds(device, shapes.matmul_size, shapes.dtype, repeats)
    return {
        "copy_bytes_per_s": 2 * shapes.copy_floats * 4 / copy_s,
        "matmul_flop_per_s": 2 * shapes.matmul_size**3 / matmul_s,
    }


def _copy_seconds(device: torch.device, count: int, repeats: int) -> float:
    src = torch.empty(count, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    return median_seconds(lambda: dst.copy_(src), repeats, device)


def _matmul_seconds(device: torch.device, size: int, dtype: torch.dtype, repeats: int) -> float:
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    return median_seconds(lambda: torch.matmul(a, b), repeats, device)


def _eager_token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """What training code usually writes: a float32 log-softmax, then a gather."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def _eager_fused_linear(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    return _eager_token_logprobs(hidden @ weight.T, targets)


@dataclass(frozen=True)
class Baseline:
    """An outside implementation: ``fn`` when its package imports, else ``None`` and how to
    install it (the bench then writes a "not installed" row instead of leaving it out)."""

    name: str
    fn: Callable[..., torch.Tensor] | None
    install: str


def _import_or_none(module: str, attribute: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attribute)
    except Exception:  # any failure to import counts as not installed
        return None


def _optional_baselines(kind: str) -> list[Baseline]:
    """TRL, Liger-Kernel and Cut Cross-Entropy for ``kind``, importable or not; losses that
    reduce are wrapped to give the negative summed log-prob (the same work)."""
    trl = "pip install trl"
    liger = "pip install liger-kernel"
    cce = "pip install cut-cross-entropy"
    found: list[Baseline] = []
    if kind == "token_logprobs":
        selective = _import_or_none("trl.trainer.utils", "selective_log_softmax")
        found.append(Baseline("trl selective_log_softmax", selective, trl))
        liger_ce = _import_or_none("liger_kernel.transformers.functional", "liger_cross_entropy")
        found.append(
            Baseline(
                "liger cross_entropy",
                liger_ce and (lambda x, t: -liger_ce(x, t, reduction="none")),
                liger,
            )
        )
    if kind == "fused_linear_logprobs":
        flce = _import_or_none(
            "liger_kernel.transformers.functional", "liger_fused_linear_cross_entropy"
        )
        found.append(
            Baseline(
                "liger fused_linear_cross_entropy",
                flce and (lambda h, w, t: -flce(h, w, t, reduction="sum")),
                liger,
            )
        )
        lce = _import_or_none("cut_cross_entropy", "linear_cross_entropy")
        # CCE skips the gradient of logits whose softmax is below a threshold; with random
        # weights almost every logit is, so it is timed with the filter (its default) and
        # without it (the work a trained model's peaked softmax does not let it skip).
        found.append(
            Baseline(
                "cut cross-entropy (gradient filter on)",
                lce and (lambda h, w, t: -lce(h, w, t, reduction="sum")),
                cce,
            )
        )
        found.append(
            Baseline(
                "cut cross-entropy (gradient filter off)",
                lce and (lambda h, w, t: -lce(h, w, t, reduction="sum", filter_eps=None)),
                cce,
            )
        )
    return found


def _implementations(
    kind: str,
    triton_fn: Callable[..., torch.Tensor],
    eager: Callable[..., torch.Tensor],
    compile_baselines: bool,
    baselines: list[Baseline] | None = None,
) -> tuple[dict[str, Callable[..., torch.Tensor]], dict[str, str]]:
    """The implementations to time, and the missing baselines with how to install each."""
    impls = {"triton": triton_fn, "torch eager": eager}
    if compile_baselines:
        impls["torch.compile"] = torch.compile(eager)
    missing: dict[str, str] = {}
    for baseline in _optional_baselines(kind) if baselines is None else baselines:
        if baseline.fn is None:
            missing[baseline.name] = baseline.install
        else:
            impls[baseline.name] = baseline.fn
    return impls, missing


def _missing_cases(labels: dict[str, Any], missing: dict[str, str]) -> list[TimedCase]:
    return [
        TimedCase(labels | {"implementation": name}, missing=f"not installed: {install}")
        for name, install in missing.items()
    ]


@dataclass
class TimedCase:
    """One timed (kernel, pass, implementation): ``run`` does the work once, ``reset`` drops
    gradients so each run starts from the same memory state."""

    labels: dict[str, Any]
    run: Callable[[], object] | None = None
    reset: Callable[[], None] = lambda: None
    work: float = 0.0
    rate_unit: str = "GB/s"  # "GB/s" (work in bytes) or "TFLOP/s" (work in FLOPs)
    ceiling_key: str = "copy_bytes_per_s"
    gradient_bytes: int | None = None
    release: Callable[[], None] | None = None
    """Set on the last case of a kernel: frees the inputs its group shared."""
    missing: str | None = None
    """Why this baseline was not run and how to install it; its row says so."""


def measure(
    case: TimedCase, device: torch.device, repeats: int, ceilings: dict[str, float]
) -> dict[str, Any]:
    """Time ``case`` and express it as a rate against its ceiling; failures become a status."""
    try:
        return _measure(case, device, repeats, ceilings)
    finally:
        if case.release is not None:
            case.release()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def _measure(
    case: TimedCase, device: torch.device, repeats: int, ceilings: dict[str, float]
) -> dict[str, Any]:
    scale = 1e9 if case.rate_unit == "GB/s" else 1e12
    labels = case.labels | {"device": device.type}
    if case.missing is not None:
        return row(**(labels | {"note": case.missing}), status="not installed")
    try:
        seconds = median_seconds(case.run, repeats, device)
        peak = peak_extra_bytes(case.run, case.reset, device)
    except torch.OutOfMemoryError:
        case.reset()
        torch.cuda.empty_cache()
        return row(**labels, status="out of memory")
    except Exception as error:  # a baseline library failing must not stop the benchmark
        case.reset()
        return row(**labels, status="error", note=str(error).strip().splitlines()[0][:200])
    case.reset()
    rate = case.work / seconds
    ceiling = ceilings[case.ceiling_key]
    return row(
        **labels,
        median_s=seconds,
        peak_extra_bytes=peak,
        gradient_bytes=case.gradient_bytes,
        achieved=rate / scale,
        achieved_unit=case.rate_unit,
        ceiling=ceiling / scale,
        fraction_of_ceiling=rate / ceiling,
        status="ok",
    )


def timing_cases(
    device: torch.device, shapes: BenchShapes, compile_baselines: bool = True
) -> list[TimedCase]:
    """Every (kernel, pass, implementation) to time at ``shapes``."""
    return [
        *_token_logprobs_timing(device, shapes, compile_baselines),
        *_fused_linear_timing(device, shapes, compile_baselines),
        *_grpo_loss_timing(device, shapes, compile_baselines),
        *_logits_grpo_timing(device, shapes, compile_baselines),
    ]


def _leaf_resetter(state: dict[str, torch.Tensor], names: tuple[str, ...]) -> Callable[[], None]:
    def reset() -> None:
        for name in names:
            if name in state:
                state[name].grad = None
                state[name].requires_grad_(False)

    return reset


def _token_logprobs_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    from stalesim.kernels.logprobs import token_logprobs

    n, v = shapes.logprobs
    dtype = shapes.dtype
    state: dict[str, torch.Tensor] = {}

    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        if not state:  # allocated on first use, so building the cases costs no memory
            state["logits"] = torch.randn(n, v, device=device, dtype=dtype)
            state["targets"] = torch.randint(0, v, (n,), device=device)
        return state["logits"], state["targets"]

    impls, missing = _implementations(
        "token_logprobs",
        lambda x, t: token_logprobs(x, t, backend="triton"),
        _eager_token_logprobs,
        compile_baselines,
    )
    read = n * v * dtype.itemsize
    reset = _leaf_resetter(state, ("logits",))
    cases = []
    for name, impl in impls.items():

        def forward(impl=impl) -> object:
            logits, targets = inputs()
            with torch.no_grad():
                return impl(logits, targets)

        def forward_backward(impl=impl) -> None:
            logits, targets = inputs()
            logits.grad = None
            logits.requires_grad_(True)
            impl(logits, targets).sum().backward()

        labels = {
            "kernel": "token_logprobs",
            "implementation": name,
            "dtype": dtype_name(dtype),
            "shape": f"N={n} V={v}",
        }
        cases.append(
            TimedCase(
                labels | {"pass": "forward", "note": "bytes: logits read once"},
                forward, reset, read, "GB/s", "copy_bytes_per_s",
            )
        )  # fmt: skip
        cases.append(
            TimedCase(
                labels | {"pass": "forward+backward",
                          "note": "bytes: logits read twice, dlogits written once"},
                forward_backward, reset, 3 * read, "GB/s", "copy_bytes_per_s", read,
            )
        )  # fmt: skip
    cases[-1].release = state.clear
    labels = {"kernel": "token_logprobs", "dtype": dtype_name(dtype), "shape": f"N={n} V={v}"}
    for pass_ in ("forward", "forward+backward"):
        cases += _missing_cases(labels | {"pass": pass_}, missing)
    return cases


def _fused_linear_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    from stalesim.kernels.fused_linear import fused_linear_logprobs

    n, h, v = shapes.fused
    dtype = shapes.dtype
    state: dict[str, torch.Tensor] = {}

    def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not state:
            state["hidden"] = torch.randn(n, h, device=device, dtype=dtype)
            state["weight"] = torch.randn(v, h, device=device, dtype=dtype) / h**0.5
            state["targets"] = torch.randint(0, v, (n,), device=device)
        return state["hidden"], state["weight"], state["targets"]

    impls, missing = _implementations(
        "fused_linear_logprobs",
        lambda x, w, t: fused_linear_logprobs(x, w, t, backend="triton"),
        _eager_fused_linear,
        compile_baselines,
    )
    flops = 2 * n * h * v
    reset = _leaf_resetter(state, ("hidden", "weight"))
    cases = []
    for name, impl in impls.items():

        def forward(impl=impl) -> object:
            hidden, weight, targets = inputs()
            with torch.no_grad():
                return impl(hidden, weight, targets)

        def forward_backward(impl=impl) -> None:
            hidden, weight, targets = inputs()
            for leaf in (hidden, weight):
                leaf.grad = None
                leaf.requires_grad_(True)
            impl(hidden, weight, targets).sum().backward()

        labels = {
            "kernel": "fused_linear_logprobs",
            "implementation": name,
            "dtype": dtype_name(dtype),
            "shape": f"N={n} H={h} V={v}",
        }
        cases.append(
            TimedCase(
                labels | {"pass": "forward", "note": "FLOPs: 2NHV"},
                forward, reset, flops, "TFLOP/s", "matmul_flop_per_s",
            )
        )  # fmt: skip
        cases.append(
            TimedCase(
                labels | {"pass": "forward+backward",
                          "note": "FLOPs credited: 6NHV, the model's (forward, dHidden, "
                                  "dWeight); the Triton path executes 8NHV, recomputing the "
                                  "logits in the backward"},
                forward_backward, reset, 3 * flops, "TFLOP/s", "matmul_flop_per_s",
                (n + v) * h * dtype.itemsize,
            )
        )  # fmt: skip
    cases[-1].release = state.clear
    labels = {
        "kernel": "fused_linear_logprobs",
        "dtype": dtype_name(dtype),
        "shape": f"N={n} H={h} V={v}",
    }
    for pass_ in ("forward", "forward+backward"):
        cases += _missing_cases(labels | {"pass": pass_}, missing)
    return cases


def _grpo_loss_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    from stalesim.kernels.loss import grpo_loss
    from stalesim.kernels.reference import grpo_loss_ref

    rows, length = shapes.grpo
    option_name = "sequence ratio, TIS cap 2, k3 KL"
    options = GRPO_OPTION_SETS[option_name]
    state: dict[str, torch.Tensor] = {}

    def inputs() -> dict[str, torch.Tensor]:
        if not state:
            gen = torch.Generator().manual_seed(1)
            raw = _grpo_inputs(rows, length, gen, with_proximal=False)
            state.update({k: t.to(device) for k, t in raw.items()})
        return state

    def eager(**tensors: torch.Tensor) -> torch.Tensor:
        return grpo_loss_ref(**tensors, **options)[0]

    impls, _ = _implementations(
        "grpo_loss",
        lambda **tensors: grpo_loss(**tensors, **options, backend="triton")[0],
        eager,
        compile_baselines,
    )
    tokens = rows * length
    reset = _leaf_resetter(state, ("logp",))
    cases = []
    for name, impl in impls.items():

        def forward_backward(impl=impl) -> None:
            tensors = inputs()
            tensors["logp"].grad = None
            tensors["logp"].requires_grad_(True)
            impl(**tensors).backward()

        labels = {
            "kernel": "grpo_loss",
            "implementation": name,
            "dtype": "float32",
            "shape": f"R={rows} L={length} ({tokens:,} tokens): {option_name}",
            "pass": "forward+backward",
            "note": "bytes: three log-prob tensors and the mask read, dlogp written",
        }
        # logp, behaviour and reference log-probs read (4 B each), the mask (1 B), dlogp written.
        work = tokens * (3 * 4 + 1 + 4)
        cases.append(
            TimedCase(labels, forward_backward, reset, work, "GB/s", "copy_bytes_per_s", tokens * 4)
        )
    cases[-1].release = state.clear
    return cases


LOGITS_GRPO_KERNEL = "token_logprobs+grpo_loss"
"""The whole path from logits to the GRPO loss, forward and backward, as one timed case."""


def _logits_grpo_baselines(eps_low: float, eps_high: float) -> list[Baseline]:
    """TRL's path (``selective_log_softmax`` then the loss as its GRPOTrainer writes it, in
    eager torch) and Liger-Kernel's fused Triton GRPO loss on logits."""
    selective = _import_or_none("trl.trainer.utils", "selective_log_softmax")
    liger = _import_or_none("liger_kernel.transformers.grpo_loss", "triton_grpo_loss")

    def trl_path(logits, ids, old, advantages, mask) -> torch.Tensor:
        logp = selective(logits[:, :-1], ids)
        ratio = torch.exp(logp - old)
        clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
        adv = advantages.unsqueeze(1)
        per_token = -torch.min(ratio * adv, clipped * adv)
        maskf = mask.to(per_token.dtype)
        return (per_token * maskf).sum() / maskf.sum().clamp(min=1.0)

    def liger_path(logits, ids, old, advantages, mask) -> torch.Tensor:
        # inplace=False: Liger would otherwise overwrite the shared logits with their gradient.
        loss, _ = liger(
            logits, old, None, ids, advantages, mask, temperature=1.0, beta=0.0,
            eps_low=eps_low, eps_high=eps_high, inplace=False, loss_type="dapo", reduce=True,
        )  # fmt: skip
        return loss

    return [
        Baseline("trl selective_log_softmax + loss", selective and trl_path, "pip install trl"),
        Baseline("liger triton_grpo_loss", liger and liger_path, "pip install liger-kernel"),
    ]


def _logits_grpo_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    """Logits ``[R, L + 1, V]`` (the model's output, the last position unused, as trainers
    pass them) -> per-token log-probs -> GRPO loss (token ratio, clip 0.2/0.28, token mean)
    -> backward to the logits. The work credited is the floor of any implementation: the
    logits read twice and their gradient written once, ``3 * itemsize`` bytes per logit."""
    from stalesim.kernels.logprobs import token_logprobs
    from stalesim.kernels.loss import grpo_loss
    from stalesim.kernels.options import GRPOOptions
    from stalesim.kernels.reference import grpo_loss_ref

    rows, length, v = shapes.logits_grpo
    dtype = shapes.dtype
    options = GRPOOptions(eps_low=0.2, eps_high=0.28)
    state: dict[str, torch.Tensor] = {}

    def inputs() -> dict[str, torch.Tensor]:
        if not state:
            gen = torch.Generator().manual_seed(2)
            state["logits"] = torch.randn(rows, length + 1, v, device=device, dtype=dtype)
            state["ids"] = torch.randint(0, v, (rows, length), device=device)
            old = -torch.rand(rows, length, generator=gen) * 3
            state["old"] = old.to(device)
            state["advantages"] = torch.randn(rows, generator=gen).to(device)
            state["mask"] = (torch.rand(rows, length, generator=gen) < 0.9).to(device)
        return state

    def triton_path(logits, ids, old, advantages, mask) -> torch.Tensor:
        # All L + 1 positions go through the kernel (a contiguous view, no copy); the last
        # one's log-prob is dropped, so its gradient row is zero.
        padded = torch.nn.functional.pad(ids, (0, 1))
        logp = token_logprobs(logits.view(-1, v), padded.view(-1), backend="triton")
        logp = logp.view(rows, length + 1)[:, :-1]
        return grpo_loss(logp, old, advantages, mask, options=options, backend="triton")[0]

    def eager(logits, ids, old, advantages, mask) -> torch.Tensor:
        logp = _eager_token_logprobs(logits[:, :-1].reshape(-1, v), ids.reshape(-1))
        return grpo_loss_ref(logp.view(rows, length), old, advantages, mask, options=options)[0]

    impls, missing = _implementations(
        LOGITS_GRPO_KERNEL,
        triton_path,
        eager,
        compile_baselines,
        baselines=_logits_grpo_baselines(options.eps_low, options.eps_high),
    )
    floor_bytes = 3 * rows * length * v * dtype.itemsize
    reset = _leaf_resetter(state, ("logits",))
    labels = {
        "kernel": LOGITS_GRPO_KERNEL,
        "pass": "forward+backward",
        "dtype": dtype_name(dtype),
        "shape": f"R={rows} L={length} V={v}",
    }
    cases = []
    for name, impl in impls.items():

        def forward_backward(impl=impl) -> None:
            tensors = inputs()
            tensors["logits"].grad = None
            tensors["logits"].requires_grad_(True)
            impl(**tensors).backward()

        cases.append(
            TimedCase(
                labels | {"implementation": name,
                          "note": "bytes: the floor, logits read twice and dlogits written "
                                  "once; fraction 1/1.15 = 0.87 is the target"},
                forward_backward, reset, floor_bytes, "GB/s", "copy_bytes_per_s",
                rows * (length + 1) * v * dtype.itemsize,
            )
        )  # fmt: skip
    cases[-1].release = state.clear
    return cases + _missing_cases(labels, missing)


@dataclass(frozen=True)
class Target:
    """A speed or memory figure of a Triton kernel that the design promises."""

    figure: str
    kernel: str
    pass_: str
    quantity: str  # "fraction_of_ceiling" or "memory_ratio" (peak extra / gradient bytes)
    bound: float
    at_least: bool


TARGETS: tuple[Target, ...] = (
    Target("log-probs forward / copy bandwidth", "token_logprobs", "forward",
           "fraction_of_ceiling", 0.90, True),
    Target("log-probs -> GRPO loss fwd+bwd: floor time / time (<= 1.15x the floor)",
           LOGITS_GRPO_KERNEL, "forward+backward", "fraction_of_ceiling", 1 / 1.15, True),
    Target("fused linear fwd+bwd / bf16 matmul peak", "fused_linear_logprobs",
           "forward+backward", "fraction_of_ceiling", 0.60, True),
    Target("fused linear fwd+bwd peak memory / gradient buffers", "fused_linear_logprobs",
           "forward+backward", "memory_ratio", 1.05, False),
)  # fmt: skip
"""The issue's targets, at :data:`FULL` shapes in bf16 on one GPU."""


def target_verdicts(rows: list[dict[str, Any]], at_target_shapes: bool) -> list[dict[str, Any]]:
    """Each target with the Triton row's value and ``pass``, ``fail`` or ``not measured``
    (no GPU row, or a run at other than the target shapes)."""
    verdicts = []
    for target in TARGETS:
        hit = [
            r
            for r in rows
            if r["kernel"] == target.kernel
            and r["pass"] == target.pass_
            and r["implementation"] == "triton"
            and r["median_s"] is not None
        ]
        value = None
        if hit and target.quantity == "memory_ratio":
            peak, grads = hit[0]["peak_extra_bytes"], hit[0]["gradient_bytes"]
            value = peak / grads if peak is not None and grads else None
        elif hit:
            value = hit[0]["fraction_of_ceiling"]
        if value is None or not at_target_shapes:
            verdict = "not measured"
        elif target.at_least:
            verdict = "pass" if value >= target.bound else "fail"
        else:
            verdict = "pass" if value <= target.bound else "fail"
        verdicts.append(
            {
                "figure": target.figure,
                "target": f"{'>=' if target.at_least else '<='} {target.bound:.3g}",
                "value": value,
                "verdict": verdict,
            }
        )
    return verdicts
