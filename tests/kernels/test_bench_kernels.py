"""``stalesim bench kernels`` on CPU: the correctness half, end to end through the CLI."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.kernels._logprob_bench_cases import COLUMNS, FORWARD_TOLERANCE


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
    assert kernels == {"token_logprobs", "fused_linear_logprobs", "grpo_loss"}
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
