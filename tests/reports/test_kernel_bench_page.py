"""The kernel bench page: rendered from kernels.csv and summary.json alone, numbers equal theirs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.kernels._bench_cases import COLUMNS
from stalesim.reports.kernel_bench_page import (
    KERNELS_CSV_TYPES,
    NOT_MEASURED,
    build_kernel_bench_page,
    read_kernels_csv,
    write_kernel_bench_report,
)
from stalesim.reports.page import vega_javascript

COPY_BYTES_PER_S = 3.0e12
MATMUL_FLOP_PER_S = 7.5e14


def _timed(kernel, pass_, implementation, shape, seconds, work, unit, gradient_bytes=None, peak=0):
    """A timing row whose rate follows from its time and work, as the bench computes it."""
    scale, ceiling = (1e9, COPY_BYTES_PER_S) if unit == "GB/s" else (1e12, MATMUL_FLOP_PER_S)
    return {
        "kernel": kernel,
        "pass": pass_,
        "implementation": implementation,
        "dtype": "bfloat16",
        "shape": shape,
        "device": "cuda",
        "median_s": seconds,
        "peak_extra_bytes": peak,
        "gradient_bytes": gradient_bytes,
        "achieved": work / seconds / scale,
        "achieved_unit": unit,
        "ceiling": ceiling / scale,
        "fraction_of_ceiling": work / seconds / ceiling,
        "status": "ok",
    }


def _checked(kernel, dtype, shape, forward, grad, tolerance):
    return {
        "kernel": kernel,
        "pass": "correctness",
        "implementation": "triton",
        "dtype": dtype,
        "shape": shape,
        "device": "cuda",
        "forward_rel_error": forward,
        "grad_rel_error": grad,
        "tolerance": tolerance,
        "status": "ok" if forward <= 1e-5 and grad <= tolerance else "FAIL",
        "note": "vs float64 reference",
    }


LOGPROB_BYTES = 2048 * 32_768 * 2
FUSED_FLOP = 6 * 4096 * 1024 * 32_768
GRPO_BYTES = 64 * 256 * 4 * 6

HAND_MADE_ROWS = [
    _timed("token_logprobs", "forward", "triton", "N=2048 V=32768", 1.0e-4, LOGPROB_BYTES, "GB/s"),
    _timed("token_logprobs", "forward", "torch eager", "N=2048 V=32768", 4.0e-4, LOGPROB_BYTES, "GB/s"),
    _timed("token_logprobs", "forward+backward", "triton", "N=2048 V=32768", 2.5e-4, 2 * LOGPROB_BYTES, "GB/s"),
    _timed(
        "fused_linear_logprobs", "forward+backward", "triton", "N=4096 H=1024 V=32768",
        2.0e-3, FUSED_FLOP, "TFLOP/s", gradient_bytes=75_497_472, peak=113_246_208,
    ),
    {
        "kernel": "fused_linear_logprobs",
        "pass": "forward+backward",
        "implementation": "torch eager",
        "dtype": "bfloat16",
        "shape": "N=4096 H=1024 V=32768",
        "device": "cuda",
        "status": "out of memory",
    },
    _timed("grpo_loss", "forward+backward", "triton", "R=64 L=256", 5.0e-5, GRPO_BYTES, "GB/s"),
    _checked("token_logprobs", "float32", "N=13 V=389 T=0.8", 3.25e-8, 2.0e-6, 1e-5),
    _checked("token_logprobs", "bfloat16", "N=13 V=389 T=0.8", 1.75e-8, 3.5e-3, 2e-2),
    _checked("fused_linear_logprobs", "float16", "N=13 V=389 H=24 T=0.9", 4.0e-8, 3.0e-3, 2e-3),
    _checked("grpo_loss", "float32", "R=4 L=33: token ratio, clip 0.2/0.28", 1.5e-7, 4.5e-8, 1e-5),
]  # fmt: skip

SM90_REPORTS = [
    {
        "kernel": "_fused_forward_kernel",
        "operand": "*bf16",
        "registers": 168,
        "local_bytes": 0,
        "shared_bytes": 163_840,
        "uses_wgmma": True,
        "pipelined": True,
    }
]


def write_bench_output(out_dir: Path, rows=HAND_MADE_ROWS, **summary_changes) -> Path:
    """kernels.csv and summary.json as ``stalesim bench kernels`` writes them on a GPU."""
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = {name: KERNELS_CSV_TYPES.get(name, pl.String) for name in COLUMNS}
    frame = pl.DataFrame([{name: r.get(name) for name in COLUMNS} for r in rows], schema=schema)
    frame.write_csv(out_dir / "kernels.csv")
    summary = {
        "device": "NVIDIA H100 80GB HBM3",
        "gpu_timings_measured": True,
        "quick": True,
        "torch": "2.9.0",
        "triton": "3.5.0",
        "ceilings": {"copy_bytes_per_s": COPY_BYTES_PER_S, "matmul_flop_per_s": MATMUL_FLOP_PER_S},
        "correctness_failures": frame.filter(pl.col("status") == "FAIL").height,
        "rows": frame.height,
        "sm90_compile": SM90_REPORTS,
    } | summary_changes
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return out_dir


class Metrics(HTMLParser):
    """label -> data-value of every headline card."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-label" in attrs:
            self.cards[attrs["data-label"]] = attrs["data-value"]


def metric_values(html: str) -> dict[str, float | None]:
    parser = Metrics()
    parser.feed(html)
    return {label: (float(v) if v else None) for label, v in parser.cards.items()}


def chart_specs(html: str) -> list[dict]:
    match = re.search(
        r'<script type="application/json" id="chart-specs">(.*?)</script>', html, re.S
    )
    return json.loads(match.group(1))


def chart_rows(spec: dict) -> list[dict]:
    return [row for data in spec.get("datasets", {}).values() for row in data]


def headings(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>|<summary>(.*?)</summary>", html)


@pytest.fixture
def gpu_out(tmp_path: Path) -> Path:
    return write_bench_output(tmp_path / "bench")


@pytest.fixture(scope="module")
def real_cpu_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a real ``stalesim bench kernels --quick --device cpu`` writes."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU run needs TRITON_INTERPRET=1 on a machine with CUDA")
    out = tmp_path_factory.mktemp("bench") / "cpu"
    args = ["bench", "kernels", "--quick", "--device", "cpu", "--quiet", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out


def test_page_is_offline_with_one_bundle(gpu_out):
    html = write_kernel_bench_report(gpu_out).read_text()
    assert not re.search(r"""src\s*=\s*["']?https?:""", html, re.I)
    assert html.count(vega_javascript()) == 1
    assert len(chart_specs(html)) == 2  # median times, relative errors


def test_gpu_headline_numbers_equal_the_files(gpu_out):
    frame = pl.read_csv(gpu_out / "kernels.csv", infer_schema_length=None)
    cards = metric_values(write_kernel_bench_report(gpu_out).read_text())

    def triton(kernel: str, pass_: str) -> dict:
        (row,) = frame.filter(
            (pl.col("kernel") == kernel)
            & (pl.col("pass") == pass_)
            & (pl.col("implementation") == "triton")
        ).to_dicts()
        return row

    assert cards["copy bandwidth"] == COPY_BYTES_PER_S / 1e9
    assert cards["bf16 matmul"] == MATMUL_FLOP_PER_S / 1e12
    assert (
        cards["log-probs forward / copy bandwidth"]
        == triton("token_logprobs", "forward")["fraction_of_ceiling"]
    )
    fused = triton("fused_linear_logprobs", "forward+backward")
    assert cards["fused linear fwd+bwd / bf16 matmul"] == fused["fraction_of_ceiling"]
    assert cards["fused fwd+bwd peak memory / gradient buffers"] == 1.5
    assert fused["peak_extra_bytes"] / fused["gradient_bytes"] == 1.5
    assert (
        cards["GRPO loss fwd+bwd / copy bandwidth"]
        == triton("grpo_loss", "forward+backward")["fraction_of_ceiling"]
    )
    correctness = frame.filter(pl.col("pass") == "correctness")
    assert cards["cases"] == correctness.height == 4
    assert cards["failed"] == 1  # the float16 fused case: 3e-3 over its 2e-3 tolerance
    assert cards["worst gradient error / tolerance"] == pytest.approx(1.5)


def test_gpu_charts_hold_the_csv_rows(gpu_out):
    frame = pl.read_csv(gpu_out / "kernels.csv", infer_schema_length=None)
    specs = chart_specs(write_kernel_bench_report(gpu_out).read_text())

    timed = chart_rows(specs[0])
    ok = frame.filter(pl.col("median_s").is_not_null())
    assert len(timed) == ok.height == 5  # the out-of-memory row has no time to draw
    assert sorted(r["median_ms"] for r in timed) == pytest.approx(
        sorted(1e3 * ok["median_s"]), rel=1e-12
    )
    assert {r["case"] for r in timed} == {
        "token_logprobs · forward",
        "token_logprobs · forward+backward",
        "fused_linear_logprobs · forward+backward",
        "grpo_loss · forward+backward",
    }

    errors = chart_rows(specs[1])
    correctness = frame.filter(pl.col("pass") == "correctness")
    assert len(errors) == 2 * correctness.height
    by_case = {(r["case"], r["quantity"]): r["relative_error"] for r in errors}
    assert by_case[("token_logprobs bfloat16", "grad_rel_error")] == 3.5e-3
    assert by_case[("fused_linear_logprobs float16", "forward_rel_error")] == 4.0e-8
    assert by_case[("grpo_loss: token ratio, clip 0.2/0.28", "grad_rel_error")] == 4.5e-8


def test_sm90_reports_and_all_rows_are_tables(gpu_out):
    html = write_kernel_bench_report(gpu_out).read_text()
    assert "<h2>GPU kernels compiled for sm_90 (H100) without a GPU</h2>" in html
    assert "<td>_fused_forward_kernel</td>" in html and '<td class="num">163,840</td>' in html
    assert '<details class="fold"><summary>All rows (kernels.csv)</summary>' in html
    assert html.count("<td>out of memory</td>") == 1

    write_bench_output(gpu_out, sm90_compile="sm_90 compile failed: no ptxas")
    html = write_kernel_bench_report(gpu_out).read_text()
    assert "<p>sm_90 compile failed: no ptxas</p>" in html


def test_real_cpu_run_page_shows_the_csv(real_cpu_out):
    frame = pl.read_csv(real_cpu_out / "kernels.csv", infer_schema_length=None)
    summary = json.loads((real_cpu_out / "summary.json").read_text())
    html = (real_cpu_out / "report.html").read_text()  # written by `stalesim bench kernels`
    assert html == build_kernel_bench_page(real_cpu_out).html()
    assert not re.search(r"""src\s*=\s*["']?https?:""", html, re.I)
    assert html.count(vega_javascript()) == 1
    assert NOT_MEASURED in html
    assert f"cpu · torch {summary['torch']} · triton {summary['triton']} · quick" in html

    cards = metric_values(html)
    assert cards["cases"] == frame.height
    assert cards["failed"] == 0
    assert cards["worst gradient error / tolerance"] == pytest.approx(
        (frame["grad_rel_error"] / frame["tolerance"]).max(), rel=1e-15
    )
    (errors,) = chart_specs(html)
    values = sorted(r["relative_error"] for r in chart_rows(errors))
    assert values == sorted([*frame["forward_rel_error"], *frame["grad_rel_error"]])


def test_csv_reads_with_the_types_the_bench_wrote(real_cpu_out):
    frame = read_kernels_csv(real_cpu_out / "kernels.csv")
    # All-empty columns on CPU (no timings) stay numeric, as the bench wrote them.
    assert frame.schema["median_s"] == pl.Float64
    assert frame.schema["peak_extra_bytes"] == pl.Int64
    assert frame["median_s"].null_count() == frame.height


def test_missing_and_bad_files_name_the_file(gpu_out):
    (gpu_out / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"summary\.json: expected a JSON object"):
        write_kernel_bench_report(gpu_out)
    write_bench_output(gpu_out, gpu_timings_measured=None)
    with pytest.raises(ValueError, match=r"summary\.json: gpu_timings_measured"):
        write_kernel_bench_report(gpu_out)
    write_bench_output(gpu_out, ceilings={})
    with pytest.raises(ValueError, match=r"summary\.json: ceilings\.copy_bytes_per_s"):
        write_kernel_bench_report(gpu_out)
    write_bench_output(gpu_out)

    csv = gpu_out / "kernels.csv"
    pl.read_csv(csv).drop("tolerance").write_csv(csv)
    with pytest.raises(ValueError, match=r"kernels\.csv: missing column\(s\) tolerance"):
        write_kernel_bench_report(gpu_out)
    write_bench_output(gpu_out)
    text = csv.read_text().splitlines()
    text[1] = text[1].replace("0.0001", "fast", 1)
    csv.write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError, match=r"kernels\.csv: not a readable CSV file"):
        write_kernel_bench_report(gpu_out)
    csv.unlink()
    with pytest.raises(ValueError, match=r"kernels\.csv: no such file"):
        write_kernel_bench_report(gpu_out)


def test_cli_rerenders_and_reports_bad_input_on_one_line(gpu_out, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["report", "kernels", str(gpu_out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {gpu_out / 'report.html'}"
    assert "Median time per implementation" in (gpu_out / "report.html").read_text()

    (gpu_out / "summary.json").unlink()
    result = runner.invoke(main, ["report", "kernels", str(gpu_out)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith("error: ") and "summary.json: no such file" in result.output

    result = runner.invoke(main, ["report", "kernels", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "nowhere: no such directory" in result.output


def test_report_kernels_help_imports_no_heavy_libraries():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from stalesim.cli import main\n"
        "result = CliRunner().invoke(main, ['report', 'kernels', '--help'])\n"
        "assert result.exit_code == 0 and 'OUT_DIR' in result.output\n"
        "print(sorted(m for m in ('altair', 'polars', 'torch', 'vl_convert') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_targets_table_shows_each_verdict(gpu_out):
    targets = [
        {"figure": "log-probs forward / copy bandwidth", "target": ">= 0.9", "value": 0.93,
         "verdict": "pass"},
        {"figure": "fused linear fwd+bwd peak memory / gradient buffers", "target": "<= 1.05",
         "value": 1.5, "verdict": "fail"},
    ]  # fmt: skip
    write_bench_output(gpu_out, targets=targets)
    html = write_kernel_bench_report(gpu_out).read_text()
    assert "<h2>Targets</h2>" in html
    assert "<td>pass</td>" in html and "<td>fail</td>" in html
    assert "<td>&lt;= 1.05</td>" in html
    write_bench_output(gpu_out, targets="yes")
    with pytest.raises(ValueError, match="targets must be a list of objects"):
        write_kernel_bench_report(gpu_out)
    write_bench_output(gpu_out)  # leave the shared folder as the other tests expect it


def test_peer_standings_table_shows_the_bench_lines(gpu_out):
    from stalesim.kernels._bench_peers import LEVEL_BAND, peer_standings

    peers = peer_standings(HAND_MADE_ROWS)
    assert [p["standing"] for p in peers][:1] == [
        "ahead of all 1 peers; closest torch eager (0.25x its time, no extra memory either)"
    ]
    write_bench_output(gpu_out, peers=peers, peer_level_band=LEVEL_BAND)
    html = write_kernel_bench_report(gpu_out).read_text()
    assert "<h2>Standing among peers</h2>" in html
    assert "within 5% of their time is level" in html
    assert "ahead of all 1 peers; closest torch eager" in html
    assert "torch eager: out of memory" in html  # the fused row's peer that did not run
    write_bench_output(gpu_out, peers=[{"kernel": "k"}])
    with pytest.raises(ValueError, match="peers must be a list of objects with kernel, pass"):
        write_kernel_bench_report(gpu_out)
    write_bench_output(gpu_out)  # leave the shared folder as the other tests expect it
