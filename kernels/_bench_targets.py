"""The design targets of the Triton kernels, and each one's verdict on a bench run: a speed as a
fraction of the measured ceiling, or the peak memory over the gradient buffers, judged on the
Triton row at the target shapes (the peaked-logit row where a case also runs on random ones)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stalesim.kernels._bench_cases import FEW_ROWS_KERNEL, FUSED_GRPO_KERNEL, LOGITS_GRPO_KERNEL
from stalesim.kernels._bench_peers import RANDOM_SUFFIX


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
    Target("fused linear fwd+bwd (low-memory, exact) / bf16 matmul peak (95 ms at 780 "
           "TFLOP/s)", "fused_linear_logprobs",
           "forward+backward", "fraction_of_ceiling", 0.675, True),
    Target("fused linear fwd+bwd peak memory / gradient buffers", "fused_linear_logprobs",
           "forward+backward", "memory_ratio", 1.05, False),
    Target("log-probs forward, few rows / copy bandwidth", FEW_ROWS_KERNEL, "forward",
           "fraction_of_ceiling", 0.85, True),
    Target("fused linear + GRPO, gradient in the forward, fwd+bwd / bf16 matmul peak (80 ms "
           "at 780 TFLOP/s)", FUSED_GRPO_KERNEL, "forward+backward", "fraction_of_ceiling",
           0.80, True),
)  # fmt: skip
"""The design targets, at :data:`FULL` shapes in bf16 on one GPU."""


def target_verdicts(rows: list[dict[str, Any]], at_target_shapes: bool) -> list[dict[str, Any]]:
    """Each target with the Triton row's value and ``pass``, ``fail`` or ``not measured``
    (no GPU row, or a run at other than the target shapes). Where a case runs on random and
    on peaked logits, the peaked (trained-model-like) row is the one judged."""
    verdicts = []
    for target in TARGETS:
        hit = [
            r
            for r in rows
            if r["kernel"] == target.kernel
            and r["pass"] == target.pass_
            and r["implementation"] == "triton"
            and r["median_s"] is not None
            and not (r["shape"] or "").endswith(RANDOM_SUFFIX)
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
