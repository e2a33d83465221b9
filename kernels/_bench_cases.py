"""What ``stalesim bench kernels`` measures: correctness cases and GPU timing cases.

Correctness runs every Triton kernel (compiled on CUDA, under the interpreter on CPU) against
the float64 reference on small odd shapes and reports relative norm errors. Timing (CUDA only)
runs each kernel and its baselines at the target shapes and reports the median time over
repeats (CUDA events), the peak memory beyond the inputs, and the achieved rate as a fraction
of a ceiling measured on the same GPU (copy bandwidth, or the bf16 matmul rate).

Every result is one row: a dict with the keys of :data:`COLUMNS`. How a time, a peak memory and
a ceiling are measured is ``_bench_timing``; the targets the rows are judged against are
``_bench_targets``; where ours stand among the peers, ``_bench_peers``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from stalesim.kernels._bench_timing import (
    copy_seconds,
    graph_seconds,
    matmul_seconds,
    median_seconds,
    peak_extra_bytes,
)

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
    "graph_median_s",
    "timing_note",
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
    cases += [
        lambda d=d, gemms=gemms: _fused_grpo_case(device, d, quick, gen, gemms)
        for d in fused_dtypes
        for gemms in ("triton", "torch")
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
    vocabulary (N=1,024, V=151,936: the vocabulary-split forward on a 132-SM GPU), the fused
    path at gpu-small's (N=2,048, H=1,024, V=32,768: 8 row chunks x 13 slabs in the
    backward), and the fused GRPO op there in 4 row chunks, with each kind of gradient GEMM."""
    gen = torch.Generator().manual_seed(5)
    # The fused GRPO op at gpu-small's H and V over 2 x 1,024 positions, its memory budget
    # set for 4 chunks of 512 rows (at 32,768 columns a row takes 67,088 bytes).
    grpo_shape, grpo_budget = (2, 1025, 1024, 1024, 32_768), 512 * 67_088
    return [
        lambda: _token_logprobs_case(device, torch.bfloat16, False, gen, shape=(1024, 151_936)),
        lambda: _fused_linear_case(device, torch.bfloat16, False, gen, shape=(2048, 32_768, 1024)),
        *[
            lambda gemms=gemms: _fused_grpo_case(
                device, torch.bfloat16, False, gen, gemms, grpo_shape, grpo_budget
            )
            for gemms in ("triton", "torch")
        ],
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


def _fused_grpo_case(
    device: torch.device,
    dtype: torch.dtype,
    quick: bool,
    gen: torch.Generator,
    gemms: str,
    shape: tuple[int, int, int, int, int] | None = None,
    memory_budget: int | None = None,
) -> dict[str, Any]:
    """:func:`~stalesim.kernels.fused_linear_grpo.fused_linear_grpo_loss` (``R, P, L, H, V``;
    about 1 position in 5 masked) against its float64 reference: the loss's error relative to
    its scale and the worse of the two gradients' relative errors."""
    from stalesim.kernels.fused_linear_grpo import DEFAULT_MEMORY_BUDGET, fused_linear_grpo_loss
    from stalesim.kernels.reference import fused_linear_logprobs_ref

    rows, positions, length, h, v = shape or ((3, 6, 5, 24, 389) if quick else (4, 17, 16, 40, 517))
    temperature = 0.9
    hidden = torch.randn(rows, positions, h, generator=gen).to(dtype)
    weight = (torch.randn(v, h, generator=gen) / h**0.5).to(dtype)
    targets = torch.randint(0, v, (rows, length), generator=gen)
    mask = torch.rand(rows, length, generator=gen) > 0.2
    with torch.no_grad():
        current = fused_linear_logprobs_ref(
            hidden[:, :length].reshape(-1, h).double(), weight.double(), targets.reshape(-1),
            temperature=temperature,
        ).view(rows, length)  # fmt: skip
    behaviour = (current + 0.3 * torch.randn(rows, length, generator=gen)).float()
    advantages = torch.randn(rows, generator=gen)
    options = {"temperature": temperature, **LOGITS_GRPO_OPTIONS}

    exact = [t.double().requires_grad_() for t in (hidden, weight)]
    want, _ = fused_linear_grpo_loss(
        *exact, targets, behaviour.double(), advantages.double(), mask, backend="reference",
        **options,
    )  # fmt: skip
    want.backward()
    live = [t.to(device).requires_grad_() for t in (hidden, weight)]
    got, _ = fused_linear_grpo_loss(
        *live, targets.to(device), behaviour.to(device), advantages.to(device), mask.to(device),
        memory_budget=memory_budget or DEFAULT_MEMORY_BUDGET, gradient_gemms=gemms,
        backend="triton", **options,
    )  # fmt: skip
    got.backward()
    grad_error = max(relative_error(a.grad, b.grad) for a, b in zip(live, exact, strict=True))
    # The loss sums terms of both signs, so it may be near 0; its error is taken relative to
    # its scale, the token mean of |advantage| (each token's term is about A times a ratio
    # near 1), not to its value.
    scale = (advantages.abs()[:, None].expand(rows, length)[mask]).mean().item()
    loss_error = abs(got.item() - want.item()) / max(scale, 1e-12)
    return _correctness_row(
        f"fused_linear_grpo_loss ({gemms} gradient GEMMs)",
        dtype,
        f"R={rows} P={positions} L={length} H={h} V={v} T={temperature}, masked positions",
        device,
        loss_error,
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
    few_rows: int = 256
    """Rows of the few-rows log-prob forward case (at ``logprobs``' V)."""

    @property
    def fused_grpo(self) -> tuple[int, int, int, int]:
        """``R, L, H, V`` of the fused linear + GRPO case: ``fused``'s N as rows of at most
        1,024 tokens (N=16,384 is 16 x 1,024)."""
        n, h, v = self.fused
        length = min(n, 1024)
        return max(1, n // length), length, h, v


FULL = BenchShapes(
    (8192, 151_936), (16_384, 2048, 248_320), (64, 1024), (8, 1024, 151_936), 2**28, 8192,
    target_shapes=True,
)  # fmt: skip
"""The target shapes: log-probs N=8192 V=151,936; fused N=16,384 H=2048 V=248,320; GRPO loss
on 65,536 tokens; log-probs -> GRPO loss on 8 x 1,024 tokens of 151,936 logits."""
QUICK = BenchShapes((2048, 32_768), (4096, 1024, 32_768), (64, 256), (4, 512, 32_768), 2**26, 4096)
"""A smoke run on a GPU."""
TINY = BenchShapes(
    (16, 300), (16, 32, 100), (4, 24), (2, 7, 300), 2**16, 64, torch.float32, few_rows=4
)
"""Shapes the tests use to run the timing code on CPU under the interpreter."""


def measure_ceilings(device: torch.device, shapes: BenchShapes, repeats: int) -> dict[str, float]:
    """Copy bandwidth (bytes/s, read + write of a large tensor) and the matmul rate (FLOP/s of
    a large square ``torch.matmul`` in the benchmark dtype) on ``device``."""
    copy_s = copy_seconds(device, shapes.copy_floats, repeats)
    matmul_s = matmul_seconds(device, shapes.matmul_size, shapes.dtype, repeats)
    return {
        "copy_bytes_per_s": 2 * shapes.copy_floats * 4 / copy_s,
        "matmul_flop_per_s": 2 * shapes.matmul_size**3 / matmul_s,
    }


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
    """An implementation as an RL trainer calls it: ``fn`` when its package imports, else
    ``None`` and how to install it (the bench then writes a "not installed" row instead of
    leaving it out).

    ``fn`` returns one value per token (``reduction="none"``): the log-probs
    (``returns="logp"``) or the negative log-likelihood a cross-entropy returns
    (``returns="nll"``), or the scalar loss for the logits -> GRPO case (``"loss"``). The bench
    backpropagates an upstream gradient of +1 into whatever it returns, with no wrapper, so no
    side pays for a reduction or a negation the others skip."""

    name: str
    fn: Callable[..., torch.Tensor] | None
    install: str
    returns: str = "logp"


def _import_or_none(module: str, attribute: str) -> Any:
    try:
        return getattr(importlib.import_module(module), attribute)
    except Exception:  # any failure to import counts as not installed
        return None


def _optional_baselines(kind: str) -> list[Baseline]:
    """TRL, Liger-Kernel and Cut Cross-Entropy for ``kind``, importable or not, each called
    per token (``reduction="none"``) as a trainer that weights tokens itself calls it."""
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
                liger_ce and (lambda x, t: liger_ce(x, t, reduction="none")),
                liger,
                "nll",
            )
        )
    if kind == "fused_linear_logprobs":
        flce = _import_or_none(
            "liger_kernel.transformers.functional", "liger_fused_linear_cross_entropy"
        )
        found.append(
            Baseline(
                "liger fused_linear_cross_entropy",
                flce and (lambda h, w, t: flce(h, w, t, reduction="none")),
                liger,
                "nll",
            )
        )
        lce = _import_or_none("cut_cross_entropy", "linear_cross_entropy")
        # CCE skips the gradient of logits whose softmax is below a threshold: on random
        # logits almost every one is, on peaked (trained-model-like) logits far fewer. It is
        # timed with the filter (its default), without it, and as its exact variant.
        found.append(
            Baseline(
                "cut cross-entropy (gradient filter on)",
                lce and (lambda h, w, t: lce(h, w, t, reduction="none")),
                cce,
                "nll",
            )
        )
        found.append(
            Baseline(
                "cut cross-entropy (gradient filter off)",
                lce and (lambda h, w, t: lce(h, w, t, reduction="none", filter_eps=None)),
                cce,
                "nll",
            )
        )
        found.append(
            Baseline(
                "cut cross-entropy (cce_exact)",
                lce and (lambda h, w, t: lce(h, w, t, reduction="none", impl="cce_exact")),
                cce,
                "nll",
            )
        )
    return found


def _implementations(
    kind: str,
    triton_fn: Callable[..., torch.Tensor],
    eager: Callable[..., torch.Tensor],
    compile_baselines: bool,
    baselines: list[Baseline] | None = None,
    returns: str = "logp",
) -> tuple[dict[str, Baseline], dict[str, str]]:
    """The implementations to run (ours, torch eager, torch.compile, the outside baselines;
    ``baselines`` replaces the outside ones, e.g. with stand-ins in tests), and the missing
    baselines with how to install each."""
    impls = {
        "triton": Baseline("triton", triton_fn, "", returns),
        "torch eager": Baseline("torch eager", eager, "", returns),
    }
    if compile_baselines:
        impls["torch.compile"] = Baseline("torch.compile", torch.compile(eager), "", returns)
    missing: dict[str, str] = {}
    for baseline in _optional_baselines(kind) if baselines is None else baselines:
        if baseline.fn is None:
            missing[baseline.name] = baseline.install
        else:
            impls[baseline.name] = baseline
    return impls, missing


def _backward_ones(out: torch.Tensor, cache: dict[Any, torch.Tensor]) -> None:
    """``out.backward(+1)``: an upstream gradient of ones, allocated once per shape and dtype
    so that no side pays for it inside the timed region."""
    key = (tuple(out.shape), out.dtype)
    if key not in cache:
        cache[key] = torch.ones_like(out)
    out.backward(cache[key])


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
    rate_unit: str = "GB/s"
    """"GB/s" (work in bytes), "TFLOP/s" (work in FLOPs), or "µs" for a latency-bound case
    whose rate against a bandwidth ceiling would mean nothing: its row gives the median time in
    microseconds and no ceiling."""
    ceiling_key: str = "copy_bytes_per_s"
    gradient_bytes: int | None = None
    release: Callable[[], None] | None = None
    """Set on the last case of a kernel: frees the inputs its group shared."""
    missing: str | None = None
    """Why this baseline was not run and how to install it; its row says so."""


def measure(
    case: TimedCase,
    device: torch.device,
    repeats: int,
    ceilings: dict[str, float],
    graphs: bool = False,
) -> dict[str, Any]:
    """Time ``case`` and express it as a rate against its ceiling; failures become a status.
    With ``graphs`` (CUDA only) the case is also captured in a CUDA graph and its replay timed
    (``graph_median_s``), or ``timing_note`` says why it could not be."""
    try:
        result = _measure(case, device, repeats, ceilings)
        if graphs and device.type == "cuda" and result["status"] == "ok":
            try:
                seconds, note = graph_seconds(case.run, repeats)
            except Exception as error:  # a failed replay is reported like a failed capture
                seconds, note = None, f"graph replay failed: {str(error).strip()[:160]}"
            finally:
                case.reset()
            result |= {"graph_median_s": seconds, "timing_note": note}
        return result
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
    if case.rate_unit == "µs":
        return row(
            **labels,
            median_s=seconds,
            peak_extra_bytes=peak,
            gradient_bytes=case.gradient_bytes,
            achieved=seconds * 1e6,
            achieved_unit="µs",
            status="ok",
        )
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
    """Every (kernel, pass, implementation, logit kind) to time at ``shapes``."""
    return [
        *_token_logprobs_timing(device, shapes, compile_baselines),
        *_few_rows_timing(device, shapes, compile_baselines),
        *_fused_linear_timing(device, shapes, compile_baselines),
        *_fused_grpo_timing(device, shapes, compile_baselines),
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


def _lazy(build: Callable[[], dict[str, torch.Tensor]], state: dict[str, Any]):
    """``build()``'s tensors, made on first use so that building the cases costs no memory."""

    def inputs() -> dict[str, torch.Tensor]:
        if not state:
            state.update(build())
        return {k: v for k, v in state.items() if not k.startswith("_")}

    return inputs


# Inputs. Every logits case runs on random and on peaked (trained-model-like) logits; see
# stalesim.kernels._bench_logits for the statistic the peaked ones match.


def _logprob_inputs(
    n: int, v: int, kind: str, device: torch.device, dtype: torch.dtype, seed: int
) -> dict[str, torch.Tensor]:
    from stalesim.kernels._bench_logits import LOGIT_KINDS

    gen = torch.Generator().manual_seed(seed)
    logits, targets = LOGIT_KINDS[kind](n, v, gen, device, dtype)
    return {"logits": logits, "targets": targets}


def _fused_inputs(
    n: int, h: int, v: int, kind: str, device: torch.device, dtype: torch.dtype, seed: int
) -> dict[str, torch.Tensor]:
    """Hidden states and an output projection. Random: both Gaussian (logits ~ N(0, 1)).
    Peaked: each row's hidden state also carries its target's weight direction, scaled so that
    the target's logit stands ``a_i`` above a unit-variance bulk, with ``a_i`` set from an
    entropy drawn as :func:`~stalesim.kernels._bench_logits.entropy_quantile` draws it (a
    planted peak over a Gaussian bulk, not a Zipf tail: the row's statistics are measured and
    written beside it)."""
    from stalesim.kernels._bench_logits import device_generator, entropy_quantile

    gen = torch.Generator().manual_seed(seed)
    on_device = device_generator(gen, device)
    weight = torch.randn(v, h, generator=on_device, device=device) / h**0.5
    hidden = torch.randn(n, h, generator=on_device, device=device)
    targets = torch.randint(0, v, (n,), generator=on_device, device=device)
    if kind == "peaked":
        # Top-1 probability ~ exp(-entropy) for a peaked row; the bulk's partition sum is
        # (V - 1) e^{1/2} for unit-variance Gaussian logits.
        top1 = torch.exp(-entropy_quantile(torch.rand(n, generator=gen, dtype=torch.float64)))
        top1 = top1.clamp(1e-3, 1 - 1e-7)
        margin = math.log((v - 1) * math.exp(0.5)) + torch.log(top1 / (1 - top1))
        margin = margin.to(device=device, dtype=torch.float32)
        direction = weight[targets]
        hidden += (margin[:, None] - (hidden * direction).sum(-1, keepdim=True)) * (
            direction / (direction * direction).sum(-1, keepdim=True)
        )
    return {"hidden": hidden.to(dtype), "weight": weight.to(dtype), "targets": targets}


def _response_mask(rows: int, length: int, seed: int) -> torch.Tensor:
    """Responses of lengths uniform in ``[L/2, L]``, right-padded: the mask a batch of
    variable-length samples has (about 3/4 of the positions used)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=gen)
    return torch.arange(length)[None, :] < lengths[:, None]


def _logits_grpo_inputs(
    rows: int, length: int, v: int, kind: str, device: torch.device, dtype: torch.dtype, seed: int
) -> dict[str, torch.Tensor]:
    """Logits ``[R, L + 1, V]`` (the model's output: the last position predicts past the
    response and is unused), token ids sampled as :func:`_logprob_inputs` samples them, a
    behaviour log-prob near the current one (on-policy up to a 0.05 log-ratio spread),
    advantages, and the mask of :func:`_response_mask`."""
    gen = torch.Generator().manual_seed(seed + 1)
    flat = _logprob_inputs(rows * (length + 1), v, kind, device, dtype, seed)
    logits = flat["logits"].view(rows, length + 1, v)
    ids = flat["targets"].view(rows, length + 1)[:, :length].contiguous()
    with torch.no_grad():
        current = torch.cat(
            [
                _eager_token_logprobs(chunk.reshape(-1, v), chunk_ids.reshape(-1))
                for chunk, chunk_ids in zip(logits[:, :length].split(1), ids.split(1), strict=True)
            ]
        ).view(rows, length)
    noise = 0.05 * torch.randn(rows, length, generator=gen).to(device)
    return {
        "logits": logits,
        "ids": ids,
        "old": (current + noise).float(),
        "advantages": torch.randn(rows, generator=gen).to(device),
        "mask": _response_mask(rows, length, seed).to(device),
    }


# Implementations of each kernel, ours and the baselines, all called the same way.


def _logprob_impls(
    compile_baselines: bool, baselines: list[Baseline] | None = None
) -> tuple[dict[str, Baseline], dict[str, str]]:
    from stalesim.kernels.logprobs import token_logprobs

    return _implementations(
        "token_logprobs",
        lambda x, t: token_logprobs(x, t, backend="triton"),
        _eager_token_logprobs,
        compile_baselines,
        baselines,
    )


def _fused_impls(
    compile_baselines: bool, baselines: list[Baseline] | None = None
) -> tuple[dict[str, Baseline], dict[str, str]]:
    from stalesim.kernels.fused_linear import fused_linear_logprobs

    return _implementations(
        "fused_linear_logprobs",
        lambda x, w, t: fused_linear_logprobs(x, w, t, backend="triton"),
        _eager_fused_linear,
        compile_baselines,
        baselines,
    )


LOGITS_GRPO_OPTIONS: dict[str, float] = {"eps_low": 0.2, "eps_high": 0.28}
"""The logits -> GRPO case's loss: token ratio, clip 0.2/0.28, token-mean aggregation."""


def _logits_grpo_impls(
    compile_baselines: bool, baselines: list[Baseline] | None = None
) -> tuple[dict[str, Baseline], dict[str, str]]:
    from stalesim.kernels.logits_loss import logits_grpo_loss
    from stalesim.kernels.reference import grpo_loss_ref

    def triton_path(logits, ids, old, advantages, mask) -> torch.Tensor:
        # Masked positions and the unused last one are skipped by both log-prob passes.
        return logits_grpo_loss(
            logits, ids, old, advantages, mask, backend="triton", **LOGITS_GRPO_OPTIONS
        )[0]

    def one_pass(logits, ids, old, advantages, mask) -> torch.Tensor:
        # The gradient made in the forward's single read of the logits.
        return logits_grpo_loss(
            logits, ids, old, advantages, mask, backend="triton", one_pass=True,
            **LOGITS_GRPO_OPTIONS,
        )[0]  # fmt: skip

    def eager(logits, ids, old, advantages, mask) -> torch.Tensor:
        rows, length = ids.shape
        logp = _eager_token_logprobs(logits[:, :-1].reshape(-1, logits.shape[-1]), ids.reshape(-1))
        return grpo_loss_ref(logp.view(rows, length), old, advantages, mask, **LOGITS_GRPO_OPTIONS)[
            0
        ]

    if baselines is None:
        baselines = _logits_grpo_baselines(
            LOGITS_GRPO_OPTIONS["eps_low"], LOGITS_GRPO_OPTIONS["eps_high"]
        )
    impls, missing = _implementations(
        LOGITS_GRPO_KERNEL, triton_path, eager, compile_baselines, baselines, "loss"
    )
    ours = {"triton one-pass": Baseline("triton one-pass", one_pass, "", "loss")}
    return {"triton": impls.pop("triton")} | ours | impls, missing


def _logits_grpo_reference(logits, ids, old, advantages, mask) -> torch.Tensor:
    """The float64 specification of the logits -> GRPO case."""
    from stalesim.kernels.logits_loss import logits_grpo_loss

    return logits_grpo_loss(
        logits, ids, old, advantages, mask, backend="reference", **LOGITS_GRPO_OPTIONS
    )[0]


def _logprob_reference(logits, targets) -> torch.Tensor:
    from stalesim.kernels.reference import token_logprobs_ref

    return token_logprobs_ref(logits, targets)


def _fused_reference(hidden, weight, targets) -> torch.Tensor:
    from stalesim.kernels.reference import fused_linear_logprobs_ref

    return fused_linear_logprobs_ref(hidden, weight, targets)


def _timed_group(
    impls: dict[str, Baseline],
    inputs: Callable[[], dict[str, torch.Tensor]],
    state: dict[str, Any],
    leaves: tuple[str, ...],
    labels: dict[str, Any],
    passes: dict[str, tuple[str, float, str, str, int | None]],
) -> list[TimedCase]:
    """The timed cases of one input set: for each implementation and each pass in
    ``passes`` (``"forward"`` and/or ``"forward+backward"``, each with its note, work, unit,
    ceiling key and gradient bytes). Forward+backward backpropagates +1 into what the
    implementation returns; the last case frees the inputs."""
    reset = _leaf_resetter(state, leaves)
    upstream: dict[Any, torch.Tensor] = {}
    cases = []
    for name, impl in impls.items():

        def forward(fn=impl.fn) -> object:
            with torch.no_grad():
                return fn(*inputs().values())

        def forward_backward(fn=impl.fn) -> None:
            tensors = inputs()
            for leaf in leaves:
                tensors[leaf].grad = None
                tensors[leaf].requires_grad_(True)
            _backward_ones(fn(*inputs().values()), upstream)

        for pass_, (note, work, unit, ceiling, grad_bytes) in passes.items():
            run = forward if pass_ == "forward" else forward_backward
            cases.append(
                TimedCase(
                    labels | {"implementation": name, "pass": pass_, "note": note},
                    run, reset, work, unit, ceiling, grad_bytes,
                )
            )  # fmt: skip

    def release() -> None:
        state.clear()
        upstream.clear()

    cases[-1].release = release
    return cases


def _token_logprobs_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    from stalesim.kernels._bench_logits import LOGIT_KINDS

    n, v = shapes.logprobs
    dtype = shapes.dtype
    impls, missing = _logprob_impls(compile_baselines)
    read = n * v * dtype.itemsize
    cases = []
    for kind in LOGIT_KINDS:
        state: dict[str, Any] = {}
        inputs = _lazy(lambda kind=kind: _logprob_inputs(n, v, kind, device, dtype, 0), state)
        labels = {
            "kernel": "token_logprobs",
            "dtype": dtype_name(dtype),
            "shape": f"N={n} V={v}, {kind} logits",
        }
        passes = {
            "forward": ("bytes: logits read once", read, "GB/s", "copy_bytes_per_s", None),
            "forward+backward": (
                "bytes: logits read twice, dlogits written once; upstream +1 per token",
                3 * read, "GB/s", "copy_bytes_per_s", read,
            ),
        }  # fmt: skip
        cases += _timed_group(impls, inputs, state, ("logits",), labels, passes)
        for pass_ in passes:
            cases += _missing_cases(labels | {"pass": pass_}, missing)
    return cases


def _fused_linear_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    from stalesim.kernels._bench_logits import LOGIT_KINDS

    n, h, v = shapes.fused
    dtype = shapes.dtype
    impls, missing = _fused_impls(compile_baselines)
    flops = 2 * n * h * v
    cases = []
    for kind in LOGIT_KINDS:
        state: dict[str, Any] = {}
        inputs = _lazy(lambda kind=kind: _fused_inputs(n, h, v, kind, device, dtype, 0), state)
        labels = {
            "kernel": "fused_linear_logprobs",
            "dtype": dtype_name(dtype),
            "shape": f"N={n} H={h} V={v}, {kind} logits",
        }
        passes = {
            "forward": ("FLOPs: 2NHV", flops, "TFLOP/s", "matmul_flop_per_s", None),
            "forward+backward": (
                "FLOPs credited: 6NHV, the model's (forward, dHidden, dWeight); the Triton "
                "path executes 8NHV, recomputing the logits in the backward; upstream +1 per "
                "token",
                3 * flops, "TFLOP/s", "matmul_flop_per_s", (n + v) * h * dtype.itemsize,
            ),
        }  # fmt: skip
        cases += _timed_group(impls, inputs, state, ("hidden", "weight"), labels, passes)
        for pass_ in passes:
            cases += _missing_cases(labels | {"pass": pass_}, missing)
    return cases


def _grpo_loss_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    """The GRPO loss alone on log-probs: about a megabyte of traffic, so its time is launch
    latency, not bandwidth; the row gives microseconds, not a fraction of copy bandwidth."""
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

        def forward_backward(fn=impl.fn) -> None:
            tensors = inputs()
            tensors["logp"].grad = None
            tensors["logp"].requires_grad_(True)
            fn(**tensors).backward()

        labels = {
            "kernel": "grpo_loss",
            "implementation": name,
            "dtype": "float32",
            "shape": f"R={rows} L={length} ({tokens:,} tokens): {option_name}",
            "pass": "forward+backward",
            "note": "time only (µs): latency-bound, a rate against copy bandwidth means nothing",
        }
        cases.append(
            TimedCase(labels, forward_backward, reset, 0.0, "µs", "copy_bytes_per_s", tokens * 4)
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
        # inplace=False: Liger would otherwise overwrite the shared logits with their gradient
        # (ours has the same option, also off here).
        loss, _ = liger(
            logits, old, None, ids, advantages, mask, temperature=1.0, beta=0.0,
            eps_low=eps_low, eps_high=eps_high, inplace=False, loss_type="dapo", reduce=True,
        )  # fmt: skip
        return loss

    return [
        Baseline("trl selective_log_softmax + loss", selective and trl_path, "pip install trl",
                 "loss"),
        Baseline("liger triton_grpo_loss", liger and liger_path, "pip install liger-kernel",
                 "loss"),
    ]  # fmt: skip


def _logits_grpo_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    """Logits ``[R, L + 1, V]`` -> per-token log-probs -> GRPO loss (token ratio, clip
    0.2/0.28, token mean) -> backward to the logits, on responses of varying length. The work
    credited is the floor: the used positions' logits read twice (forward and backward) and
    the whole gradient written once (unused positions' rows are zeros)."""
    from stalesim.kernels._bench_logits import LOGIT_KINDS

    rows, length, v = shapes.logits_grpo
    dtype = shapes.dtype
    impls, missing = _logits_grpo_impls(compile_baselines)
    used = int(_response_mask(rows, length, 2).sum())
    floor_bytes = (2 * used + rows * (length + 1)) * v * dtype.itemsize
    cases = []
    for kind in LOGIT_KINDS:
        state: dict[str, Any] = {}
        inputs = _lazy(
            lambda kind=kind: _logits_grpo_inputs(rows, length, v, kind, device, dtype, 2), state
        )
        labels = {
            "kernel": LOGITS_GRPO_KERNEL,
            "dtype": dtype_name(dtype),
            "shape": f"R={rows} L={length} V={v} ({used} of {rows * length} tokens used), "
            f"{kind} logits",
        }
        passes = {
            "forward+backward": (
                "bytes: the floor, used positions' logits read twice and dlogits written "
                "once; fraction 1/1.15 = 0.87 is the target",
                floor_bytes, "GB/s", "copy_bytes_per_s", rows * (length + 1) * v * dtype.itemsize,
            )
        }  # fmt: skip
        cases += _timed_group(impls, inputs, state, ("logits",), labels, passes)
        cases += _missing_cases(labels | {"pass": "forward+backward"}, missing)
    return cases


FEW_ROWS_KERNEL = "token_logprobs (few rows)"
"""The log-prob forward on too few rows to fill the GPU one program per row: the
vocabulary-split path."""


def _few_rows_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    """The log-prob forward at :attr:`BenchShapes.few_rows` rows (peaked logits): too few rows
    for one program each to keep HBM busy, so the Triton path splits each row's vocabulary."""
    n, v = shapes.few_rows, shapes.logprobs[1]
    dtype = shapes.dtype
    impls, _ = _logprob_impls(compile_baselines, [])
    state: dict[str, Any] = {}
    inputs = _lazy(lambda: _logprob_inputs(n, v, "peaked", device, dtype, 3), state)
    labels = {
        "kernel": FEW_ROWS_KERNEL,
        "dtype": dtype_name(dtype),
        "shape": f"N={n} V={v}, peaked logits",
    }
    passes = {
        "forward": ("bytes: logits read once; target >= 85% of copy bandwidth",
                    n * v * dtype.itemsize, "GB/s", "copy_bytes_per_s", None),
    }  # fmt: skip
    return _timed_group(impls, inputs, state, ("logits",), labels, passes)


FUSED_GRPO_KERNEL = "fused_linear_grpo_loss"
"""Hidden states -> output projection -> token log-probs -> GRPO loss, forward and backward."""


def _fused_grpo_inputs(
    rows: int, length: int, h: int, v: int, kind: str, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """:func:`_fused_inputs` as ``[R, L, H]`` responses, every position used (the fused
    linear case's N rows, so the two compare), behaviour log-probs within a 0.05 log-ratio of
    the current ones (computed by the fused Triton forward in chunks) and advantages."""
    from stalesim.kernels.fused_linear import fused_linear_logprobs

    flat = _fused_inputs(rows * length, h, v, kind, device, dtype, 0)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        current = torch.cat(
            [
                fused_linear_logprobs(chunk, flat["weight"], ids, backend="triton")
                for chunk, ids in zip(
                    flat["hidden"].split(4096), flat["targets"].split(4096), strict=True
                )
            ]
        ).view(rows, length)
    return {
        "hidden": flat["hidden"].view(rows, length, h),
        "weight": flat["weight"],
        "ids": flat["targets"].view(rows, length),
        "old": (current.float() + 0.05 * torch.randn(rows, length, generator=gen).to(device)),
        "advantages": torch.randn(rows, generator=gen).to(device),
        "mask": torch.ones(rows, length, dtype=torch.bool, device=device),
    }


def _eager_grpo_from_logp(logp, old, advantages, mask) -> torch.Tensor:
    """The token-level clipped GRPO loss, token mean, as training code writes it."""
    eps_low, eps_high = LOGITS_GRPO_OPTIONS["eps_low"], LOGITS_GRPO_OPTIONS["eps_high"]
    ratio = torch.exp(logp - old)
    adv = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    maskf = mask.to(per_token.dtype)
    return (per_token * maskf).sum() / maskf.sum().clamp(min=1.0)


def _fused_grpo_impls(
    compile_baselines: bool, baselines: list[Baseline] | None = None
) -> tuple[dict[str, Baseline], dict[str, str]]:
    """Ours with the gradient in the forward (``triton``, and with the library's gradient
    GEMMs), ours as the low-memory log-probs then the GRPO loss, eager torch and torch.compile
    (logits, a float32 log-softmax, the loss), and Liger-Kernel's chunked fused linear GRPO
    loss."""
    from stalesim.kernels.fused_linear import fused_linear_logprobs
    from stalesim.kernels.fused_linear_grpo import fused_linear_grpo_loss
    from stalesim.kernels.loss import grpo_loss

    def grad_in_forward(hidden, weight, ids, old, advantages, mask) -> torch.Tensor:
        return fused_linear_grpo_loss(
            hidden, weight, ids, old, advantages, mask, backend="triton", **LOGITS_GRPO_OPTIONS
        )[0]

    def low_memory(hidden, weight, ids, old, advantages, mask) -> torch.Tensor:
        rows, length, h = hidden.shape
        logp = fused_linear_logprobs(
            hidden.reshape(-1, h), weight, ids.reshape(-1), backend="triton"
        ).view(rows, length)
        return grpo_loss(logp, old, advantages, mask, backend="triton", **LOGITS_GRPO_OPTIONS)[0]

    def eager(hidden, weight, ids, old, advantages, mask) -> torch.Tensor:
        logp = _eager_token_logprobs(hidden @ weight.T, ids)
        return _eager_grpo_from_logp(logp, old, advantages, mask)

    outside = baselines if baselines is not None else _fused_grpo_baselines()
    impls, missing = _implementations(
        FUSED_GRPO_KERNEL, grad_in_forward, eager, compile_baselines, outside, "loss"
    )

    def with_library_gemms(hidden, weight, ids, old, advantages, mask) -> torch.Tensor:
        return fused_linear_grpo_loss(
            hidden, weight, ids, old, advantages, mask, backend="triton",
            gradient_gemms="torch", **LOGITS_GRPO_OPTIONS,
        )[0]  # fmt: skip

    cublas = "triton + cuBLAS gradient GEMMs"
    impls = {
        "triton": impls.pop("triton"),
        cublas: Baseline(cublas, with_library_gemms, "", "loss"),
        "triton low-memory (log-probs + GRPO loss)": Baseline(
            "triton low-memory (log-probs + GRPO loss)", low_memory, "", "loss"
        ),
        **impls,
    }
    return impls, missing


def _fused_grpo_baselines() -> list[Baseline]:
    """Liger-Kernel's fused linear GRPO loss (chunked, torch.compile inside), token ratio,
    no KL, no reference model, token-mean ("dapo") aggregation."""
    module = _import_or_none("liger_kernel.chunked_loss", "LigerFusedLinearGRPOLoss")
    eps_low, eps_high = LOGITS_GRPO_OPTIONS["eps_low"], LOGITS_GRPO_OPTIONS["eps_high"]
    liger = module and module(
        beta=0.0, use_ref_model=False, epsilon_low=eps_low, epsilon_high=eps_high,
        loss_type="dapo",
    )  # fmt: skip

    def liger_path(hidden, weight, ids, old, advantages, mask) -> torch.Tensor:
        out = liger(hidden, weight, ids, mask, advantages, old_per_token_logps=old)
        return out[0] if isinstance(out, tuple) else out

    return [
        Baseline("liger fused_linear_grpo", liger and liger_path, "pip install liger-kernel",
                 "loss"),
    ]  # fmt: skip


def _fused_grpo_reference(hidden, weight, ids, old, advantages, mask) -> torch.Tensor:
    from stalesim.kernels.fused_linear_grpo import fused_linear_grpo_loss

    return fused_linear_grpo_loss(
        hidden, weight, ids, old, advantages, mask, backend="reference", **LOGITS_GRPO_OPTIONS
    )[0]


def _fused_grpo_timing(device: torch.device, shapes: BenchShapes, compile_baselines: bool):
    """Hidden states to the GRPO loss, forward and backward, at the fused linear case's N, H
    and V; 6NHV FLOPs credited to every side (ours makes both gradients in the forward; the
    low-memory path recomputes the logits, 8NHV)."""
    from stalesim.kernels._bench_logits import LOGIT_KINDS

    rows, length, h, v = shapes.fused_grpo
    dtype = shapes.dtype
    impls, missing = _fused_grpo_impls(compile_baselines)
    n = rows * length
    cases = []
    for kind in LOGIT_KINDS:
        state: dict[str, Any] = {}
        inputs = _lazy(
            lambda kind=kind: _fused_grpo_inputs(rows, length, h, v, kind, device, dtype), state
        )
        labels = {
            "kernel": FUSED_GRPO_KERNEL,
            "dtype": dtype_name(dtype),
            "shape": f"R={rows} L={length} H={h} V={v} (N={n}, every position used), {kind} logits",
        }
        passes = {
            "forward+backward": (
                "FLOPs credited: 6NHV; the GRPO loss (token ratio, clip 0.2/0.28, token mean) "
                "backpropagated from +1; the default 1 GiB memory budget",
                6 * n * h * v, "TFLOP/s", "matmul_flop_per_s", (n + v) * h * dtype.itemsize,
            )
        }  # fmt: skip
        cases += _timed_group(impls, inputs, state, ("hidden", "weight"), labels, passes)
        cases += _missing_cases(labels | {"pass": "forward+backward"}, missing)
    return cases


# ---------------------------------------------------------------------------------------------
# Errors of every implementation against the float64 reference, on the bench's own inputs
# ---------------------------------------------------------------------------------------------

ERROR_PASS = "error vs float64"
"""The ``pass`` of the rows that give each implementation's forward and gradient error."""


def error_cases(
    device: torch.device,
    shapes: BenchShapes,
    compile_baselines: bool = True,
    error_rows: int = 1024,
    baselines: dict[str, list[Baseline]] | None = None,
) -> list[Callable[[], dict[str, Any]]]:
    """One thunk per (kernel, implementation, logit kind): the implementation's forward value
    and gradient, called as in the timing (upstream +1), against the float64 reference on the
    first ``error_rows`` rows of the timing's inputs (one row of responses for the logits ->
    GRPO case). ``baselines`` (by kernel) replaces the outside baselines, e.g. with stand-ins
    in tests. Errors are reported, not judged: a bf16 accumulation is a property of a
    baseline, not a failure of this bench."""
    from stalesim.kernels._bench_logits import LOGIT_KINDS

    dtype = shapes.dtype
    baselines = baselines or {}
    n, v = shapes.logprobs
    fn_, h, fv = shapes.fused
    rows, length, gv = shapes.logits_grpo
    n_err, fn_err = min(n, error_rows), min(fn_, error_rows)
    fg_rows, fg_full_len, _, _ = shapes.fused_grpo
    fg_len = min(fg_full_len, error_rows)
    kernels = [
        ("token_logprobs", _logprob_impls(compile_baselines, baselines.get("token_logprobs")),
         lambda kind: _logprob_inputs(n_err, v, kind, device, dtype, 0),
         ("logits",), _logprob_reference, f"N={n_err} (of {n}) V={v}"),
        ("fused_linear_logprobs",
         _fused_impls(compile_baselines, baselines.get("fused_linear_logprobs")),
         lambda kind: _fused_inputs(fn_err, h, fv, kind, device, dtype, 0),
         ("hidden", "weight"), _fused_reference, f"N={fn_err} (of {fn_}) H={h} V={fv}"),
        (LOGITS_GRPO_KERNEL, _logits_grpo_impls(compile_baselines, baselines.get(LOGITS_GRPO_KERNEL)),
         lambda kind: _logits_grpo_inputs(1, length, gv, kind, device, dtype, 2),
         ("logits",), _logits_grpo_reference, f"R=1 (of {rows}) L={length} V={gv}"),
        (FUSED_GRPO_KERNEL,
         _fused_grpo_impls(compile_baselines, baselines.get(FUSED_GRPO_KERNEL)),
         lambda kind: _fused_grpo_inputs(1, fg_len, h, fv, kind, device, dtype),
         ("hidden", "weight"), _fused_grpo_reference,
         f"R=1 (of {fg_rows}) L={fg_len} (of {fg_full_len}) H={h} V={fv}"),
    ]  # fmt: skip
    thunks: list[Callable[[], dict[str, Any]]] = []
    for kernel, (impls, missing), build, leaves, reference, shape in kernels:
        for kind in LOGIT_KINDS:
            labels = {
                "kernel": kernel,
                "pass": ERROR_PASS,
                "dtype": dtype_name(dtype),
                "shape": f"{shape}, {kind} logits",
                "device": device.type,
            }
            # The group's inputs are built once, on first use, and dropped after its last row.
            shared: dict[str, Any] = {}
            inputs = _lazy(lambda build=build, kind=kind: build(kind), shared)
            group = [
                lambda impl=impl, inputs=inputs, leaves=leaves, reference=reference,
                labels=labels: _error_row(impl, inputs(), leaves, reference, labels)
                for impl in impls.values()
            ]  # fmt: skip
            group[-1] = lambda last=group[-1], shared=shared: _then_clear(last, shared)
            thunks += group
            thunks += [
                lambda labels=labels, name=name, install=install: row(
                    **labels, implementation=name, status="not installed",
                    note=f"not installed: {install}",
                )
                for name, install in missing.items()
            ]  # fmt: skip
    return thunks


def _then_clear(thunk: Callable[[], dict[str, Any]], shared: dict[str, Any]) -> dict[str, Any]:
    try:
        return thunk()
    finally:
        shared.clear()


def _error_row(
    impl: Baseline,
    inputs: dict[str, torch.Tensor],
    leaves: tuple[str, ...],
    reference: Callable[..., torch.Tensor],
    labels: dict[str, Any],
) -> dict[str, Any]:
    """``impl``'s relative forward and gradient errors (the worst leaf) against
    ``reference`` in float64, both backpropagating +1 into what ``impl`` returns."""
    sign = -1.0 if impl.returns == "nll" else 1.0
    live = {k: t.detach().clone().requires_grad_(k in leaves) for k, t in inputs.items()}
    exact = {
        k: (t.detach().double() if t.is_floating_point() else t).requires_grad_(k in leaves)
        for k, t in inputs.items()
    }
    labels = labels | {"implementation": impl.name}
    try:
        got = impl.fn(*live.values())
        _backward_ones(got, {})
    except Exception as error:  # a baseline library failing must not stop the benchmark
        return row(**labels, status="error", note=str(error).strip().splitlines()[0][:200])
    want = sign * reference(*exact.values())
    want.backward(torch.ones_like(want))
    grad_error = max(relative_error(live[k].grad, exact[k].grad) for k in leaves)
    note = "reported, not judged"
    if "logits" in inputs and inputs["logits"].dim() == 2:
        from stalesim.kernels._bench_logits import describe, logit_statistics

        note += "; " + describe(logit_statistics(inputs["logits"], inputs["targets"]))
    return row(
        **labels,
        forward_rel_error=relative_error(got, want),
        grad_rel_error=grad_error,
        status="ok",
        note=note,
    )
