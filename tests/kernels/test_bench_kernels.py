"""``stalesim bench kernels`` on CPU: the correctness half, end to end through the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.kernels import _bench_cases as cases
from stalesim.kernels._bench_cases import COLUMNS, FORWARD_TOLERANCE
from stalesim.kernels._bench_targets import TARGETS, target_verdicts


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only (interpreter) half")
def test_cpu_run_writes_correctness_rows_and_page(tmp_path) -> None:
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        main, ["bench", "kernels", "--quick", "--device", "cpu", "--quiet", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "GPU timings not measured" in result.output

    frame = pl.read_csv(out / "kernels.csv", infer_schema_length=None)
    assert tuple(frame.columns) == COLUMNS
    kernels = set(frame["kernel"])
    assert kernels == {
        "token_logprobs",
        "fused_linear_logprobs",
        "grpo_loss",
        "fused_linear_grpo_loss (triton gradient GEMMs)",
        "fused_linear_grpo_loss (torch gradient GEMMs)",
    }
    assert set(frame["pass"]) == {"correctness"}
    assert frame["status"].to_list() == ["ok"] * frame.height
    # The errors are real measurements: positive, and within the tolerances the rows state.
    assert (frame["forward_rel_error"] > 0).all()
    assert (frame["forward_rel_error"] <= FORWARD_TOLERANCE).all()
    assert (frame["grad_rel_error"] > 0).all()
    assert (frame["grad_rel_error"] <= frame["tolerance"]).all()
    # No timing without a GPU: those columns stay empty rather than holding made-up numbers.
    assert frame["median_s"].null_count() == frame.height

    summary = json.loads((out / "summary.json").read_text())
    assert summary["gpu_timings_measured"] is False
    assert summary["correctness_failures"] == 0
    html = (out / "report.html").read_text()
    assert "GPU timings not measured" in html and "Relative errors" in html


def test_cuda_request_without_cuda_is_a_one_line_error(tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(
        main, ["bench", "kernels", "--device", "cuda", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and "no CUDA device" in result.output


def test_timing_half_runs_on_cpu_at_tiny_shapes() -> None:
    """The GPU timing code, run on CPU (interpreter, wall clock) so its bookkeeping is tested
    where there is no GPU: every case runs, and every rate follows from its time and work."""
    device = torch.device("cpu")
    shapes = cases.TINY
    ceilings = cases.measure_ceilings(device, shapes, repeats=3)
    assert ceilings["copy_bytes_per_s"] > 0 and ceilings["matmul_flop_per_s"] > 0
    timed = cases.timing_cases(device, shapes, compile_baselines=False)
    kinds = {(c.labels["kernel"], c.labels["pass"], c.labels["implementation"]) for c in timed}
    for kernel in ("token_logprobs", "fused_linear_logprobs"):
        for pass_ in ("forward", "forward+backward"):
            assert {(kernel, pass_, "triton"), (kernel, pass_, "torch eager")} <= kinds
    assert ("grpo_loss", "forward+backward", "triton") in kinds
    assert (cases.FEW_ROWS_KERNEL, "forward", "triton") in kinds
    grpo = (cases.FUSED_GRPO_KERNEL, "forward+backward")
    assert {(*grpo, "triton"), (*grpo, "triton low-memory (log-probs + GRPO loss)"),
            (*grpo, "torch eager")} <= kinds  # fmt: skip
    # Every logits case runs on random and on peaked logits.
    for kernel in ("token_logprobs", "fused_linear_logprobs", cases.LOGITS_GRPO_KERNEL,
                   cases.FUSED_GRPO_KERNEL):  # fmt: skip
        shapes_run = {c.labels["shape"].rsplit(", ", 1)[-1] for c in timed
                      if c.labels["kernel"] == kernel}  # fmt: skip
        assert shapes_run == {"random logits", "peaked logits"}, kernel
    path = (cases.LOGITS_GRPO_KERNEL, "forward+backward")
    assert {(*path, "triton"), (*path, "triton one-pass"), (*path, "torch eager")} <= kinds
    # Every outside baseline has a row: timed when installed, "not installed" when not.
    for name in (
        "trl selective_log_softmax",
        "liger fused_linear_cross_entropy",
        "cut cross-entropy (gradient filter on)",
        "cut cross-entropy (gradient filter off)",
        "cut cross-entropy (cce_exact)",
        "liger triton_grpo_loss",
        "trl selective_log_softmax + loss",
        "liger fused_linear_grpo",
    ):
        assert any(c.labels["implementation"] == name for c in timed), name

    for case in timed:
        result = cases.measure(case, device, repeats=1, ceilings=ceilings)
        if case.missing is not None:
            assert result["status"] == "not installed" and "pip install" in result["note"]
            assert result["median_s"] is None
            continue
        assert result["status"] == "ok", result
        assert result["median_s"] > 0
        if result["achieved_unit"] == "µs":  # latency-bound: the time, no ceiling
            assert case.labels["kernel"] == "grpo_loss"
            assert result["achieved"] == pytest.approx(result["median_s"] * 1e6)
            assert result["fraction_of_ceiling"] is None and result["ceiling"] is None
            continue
        scale = 1e9 if result["achieved_unit"] == "GB/s" else 1e12
        assert result["achieved"] * scale == pytest.approx(case.work / result["median_s"])
        assert result["fraction_of_ceiling"] == pytest.approx(
            result["achieved"] / result["ceiling"]
        )
        assert result["peak_extra_bytes"] is None  # no allocator statistics off CUDA


def test_target_verdicts_from_rows() -> None:
    """pass / fail against each bound, by hand; 'not measured' off the target shapes."""

    def timed(kernel: str, pass_: str, fraction: float, peak=None, grads=None) -> dict:
        return cases.row(
            kernel=kernel, implementation="triton", median_s=1e-3, fraction_of_ceiling=fraction,
            peak_extra_bytes=peak, gradient_bytes=grads, **{"pass": pass_},
        )  # fmt: skip

    rows = [
        timed("token_logprobs", "forward", 0.91),
        timed(cases.LOGITS_GRPO_KERNEL, "forward+backward", 0.85),  # 1/0.85 = 1.18x the floor
        timed("fused_linear_logprobs", "forward+backward", 0.68, peak=1040, grads=1000),
        timed(cases.FEW_ROWS_KERNEL, "forward", 0.84),
        timed(cases.FUSED_GRPO_KERNEL, "forward+backward", 0.81),
    ]
    verdicts = {v["figure"]: v for v in target_verdicts(rows, at_target_shapes=True)}
    by_kernel = [verdicts[t.figure] for t in TARGETS]
    assert [v["verdict"] for v in by_kernel] == ["pass", "fail", "pass", "pass", "fail", "pass"]
    assert by_kernel[3]["value"] == pytest.approx(1.04)
    assert by_kernel[1]["target"] == ">= 0.87"
    rows[2] = timed("fused_linear_logprobs", "forward+backward", 0.68, peak=1060, grads=1000)
    assert target_verdicts(rows, True)[3]["verdict"] == "fail"
    assert {v["verdict"] for v in target_verdicts(rows, False)} == {"not measured"}
    assert {v["verdict"] for v in target_verdicts([], True)} == {"not measured"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only (interpreter) half")
def test_without_the_page_renderer_the_data_is_kept_and_the_page_made_later(
    tmp_path, monkeypatch
) -> None:
    """A GPU box that carries no vl-convert still publishes kernels.csv and summary.json, says
    how to render the page, and ``stalesim report kernels`` renders it from those files."""
    import sys

    out = tmp_path / "bench"
    monkeypatch.setitem(sys.modules, "vl_convert", None)  # import fails
    # not quiet (CI sets both), so the per-row lines are printed
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("STALESIM_QUIET", raising=False)
    result = CliRunner().invoke(main, ["bench", "kernels", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "report.html not written" in result.output
    assert f"stalesim report kernels {out}" in result.output.replace("\n", "")
    assert (out / "kernels.csv").exists() and (out / "summary.json").exists()
    assert not (out / "report.html").exists()
    # One line per row as it is measured, with its numbers.
    assert "grpo_loss correctness" in result.output and "grad err" in result.output

    # Put sys.modules back as it was (deleting only the package entry would leave its
    # extension submodule behind and break the next import of vl_convert in this process).
    monkeypatch.undo()
    rendered = CliRunner().invoke(main, ["report", "kernels", str(out)])
    assert rendered.exit_code == 0, rendered.output
    assert "Relative errors" in (out / "report.html").read_text()


def test_graph_line_names_what_cannot_be_captured() -> None:
    """The CUDA-graph summary line and summary.json entry, from rows by hand."""
    from stalesim.cli.bench_kernels import _graph_summary, graph_line

    def timed(impl: str, seconds: float | None, note: str) -> dict:
        return cases.row(
            kernel="fused_linear_logprobs", implementation=impl, graph_median_s=seconds,
            timing_note=note, **{"pass": "forward+backward"},
        )  # fmt: skip

    rows = [
        timed("triton", 0.09, "captured in a CUDA graph"),
        timed("torch.compile", 0.1, "captured in a CUDA graph"),
        timed("liger fused_linear_cross_entropy", None, "capture impossible: sync"),
        cases.row(kernel="token_logprobs", implementation="triton", **{"pass": "correctness"}),
    ]
    line = graph_line(rows, cuda_graphs=True)
    assert line.startswith("CUDA graphs: 2 of 3 timed cases captured; cannot be captured: ")
    assert "liger fused_linear_cross_entropy (fused_linear_logprobs): capture impossible" in line
    assert "every implementation" in graph_line(rows[:2], cuda_graphs=True)
    assert "not used" in graph_line(rows, cuda_graphs=False)
    summary = _graph_summary(rows)
    assert (summary["captured"], summary["timed"], len(summary["not_capturable"])) == (2, 3, 1)
