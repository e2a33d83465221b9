"""The bench's honest parts on CPU: peaked logits with the stated statistic, error rows built
the same way for every implementation (the reference standing in for the outside baselines),
and the measured ceilings stated beside the datasheet's."""

from __future__ import annotations

import math

import pytest
import torch
from stalesim.cli.bench_kernels import _ceilings_line
from stalesim.kernels import _bench_cases as cases
from stalesim.kernels._bench_logits import (
    ENTROPY_QUANTILES,
    entropy_quantile,
    logit_statistics,
    peaked_logits,
    random_logits,
)
from stalesim.kernels._bench_timing import datasheet_ceilings
from stalesim.kernels.reference import fused_linear_logprobs_ref, token_logprobs_ref

CPU = torch.device("cpu")


def test_entropy_quantile_passes_through_its_points() -> None:
    q = torch.tensor([p for p, _ in ENTROPY_QUANTILES], dtype=torch.float64)
    want = torch.tensor([h for _, h in ENTROPY_QUANTILES], dtype=torch.float64)
    assert torch.allclose(entropy_quantile(q), want, rtol=1e-12)
    # log-linear in between: the midpoint of 0.5 -> 0.8 is the geometric mean
    assert entropy_quantile(torch.tensor([0.65])).item() == pytest.approx(math.sqrt(0.01 * 0.672))


def test_peaked_logits_hold_the_stated_statistic() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, targets = peaked_logits(800, 3000, gen, CPU, torch.float32)
    stats = logit_statistics(logits, targets)
    # Wang et al. 2025 (Qwen3-8B CoT): over half the tokens below 0.01, 80th percentile 0.672.
    assert stats["entropy_median"] < 0.03
    assert 0.4 < stats["entropy_p80"] < 1.1
    assert stats["top1_mean"] > 0.85
    # Targets are sampled from each row: mostly its top token, not always.
    top = logits.argmax(dim=-1)
    assert 0.75 < (targets == top).float().mean().item() < 0.99
    flat = logit_statistics(*random_logits(200, 3000, gen, CPU, torch.float32))
    assert flat["entropy_median"] > math.log(3000) - 1 and flat["top1_mean"] < 0.01


def _stand_ins() -> dict[str, list[cases.Baseline]]:
    """The reference in place of each outside baseline, called as the bench calls them; a
    skewed one (1% off) shows the rows can fail to be small; an absent one gets its row."""
    from stalesim.kernels.logits_loss import logits_grpo_loss

    def grpo(*tensors: torch.Tensor) -> torch.Tensor:
        return logits_grpo_loss(*tensors, backend="reference", **cases.LOGITS_GRPO_OPTIONS)[0]

    absent = cases.Baseline("absent", None, "pip install absent")
    return {
        "token_logprobs": [
            cases.Baseline("stand-in nll", lambda x, t: -token_logprobs_ref(x, t), "", "nll"),
            cases.Baseline("skewed", lambda x, t: 1.01 * token_logprobs_ref(x, t), "", "logp"),
            absent,
        ],
        "fused_linear_logprobs": [
            cases.Baseline(
                "stand-in nll", lambda h, w, t: -fused_linear_logprobs_ref(h, w, t), "", "nll"
            ),
            absent,
        ],
        cases.LOGITS_GRPO_KERNEL: [cases.Baseline("stand-in loss", grpo, "", "loss"), absent],
        cases.FUSED_GRPO_KERNEL: [absent],
    }


def test_error_rows_for_every_implementation_against_float64() -> None:
    thunks = cases.error_cases(
        CPU, cases.TINY, compile_baselines=False, error_rows=6, baselines=_stand_ins()
    )
    rows = [thunk() for thunk in thunks]
    assert {r["pass"] for r in rows} == {cases.ERROR_PASS}
    seen = {(r["kernel"], r["implementation"], r["shape"].rsplit(", ", 1)[-1]) for r in rows}
    for kernel in ("token_logprobs", "fused_linear_logprobs", cases.LOGITS_GRPO_KERNEL,
                   cases.FUSED_GRPO_KERNEL):  # fmt: skip
        for kind in ("random logits", "peaked logits"):
            for name in ("triton", "torch eager", "absent"):
                assert (kernel, name, kind) in seen, (kernel, name, kind)
            assert (cases.LOGITS_GRPO_KERNEL, "triton one-pass", kind) in seen
    for r in rows:
        if r["implementation"] == "absent":
            assert r["status"] == "not installed" and "pip install absent" in r["note"]
            continue
        assert r["status"] == "ok", r
        if r["implementation"] == "skewed":
            # 1% off in value and in gradient, whichever logits
            assert r["forward_rel_error"] == pytest.approx(0.01, rel=1e-3)
            assert r["grad_rel_error"] == pytest.approx(0.01, rel=1e-3)
        else:  # float32 against float64: ours, eager torch and the stand-ins
            assert r["forward_rel_error"] < 1e-5, r
            assert r["grad_rel_error"] < 1e-5, r
    peaked = [
        r
        for r in rows
        if r["kernel"] == "token_logprobs" and "peaked" in r["shape"] and r["status"] == "ok"
    ]
    assert len(peaked) == 4 and all("entropy median" in r["note"] for r in peaked)


@pytest.mark.parametrize(
    ("name", "copy"),
    [("NVIDIA H200", 4.8e12), ("NVIDIA H100 80GB HBM3", 3.35e12), ("NVIDIA H100 PCIe", 2.0e12)],
)
def test_datasheet_ceilings_by_card(name: str, copy: float) -> None:
    assert datasheet_ceilings(name)["copy_bytes_per_s"] == copy


def test_ceilings_line_states_measured_beside_datasheet() -> None:
    measured = {"copy_bytes_per_s": 4.16e12, "matmul_flop_per_s": 780e12}
    line = _ceilings_line(measured, datasheet_ceilings("NVIDIA H200"))
    assert "4,160 GB/s measured (87% of the datasheet's 4,800)" in line
    assert "780 TFLOP/s measured (79% of the datasheet's 989)" in line
    assert datasheet_ceilings("NVIDIA A10G") is None
    assert "no datasheet figures" in _ceilings_line(measured, None)
