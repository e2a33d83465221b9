"""``stalesim bench kernels``: correctness and speed of the Triton kernels, as CSV and HTML.

On a CUDA device: every kernel and its baselines (torch eager, torch.compile, and TRL,
Liger-Kernel and Cut Cross-Entropy when importable) at the issue's shapes, with measured
ceilings. Without one:
the correctness half only (every kernel against the float64 reference under the Triton
interpreter), and the output says plainly that GPU timings were not measured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click
from stalesim.sim.cli_options import quiet_option

DEFAULT_OUT = "stalesim-out/bench-kernels"
NOT_MEASURED = (
    "GPU timings not measured: no CUDA device was used, so this run checked correctness only "
    "(Triton kernels under the interpreter against the float64 reference)."
)


@click.command("kernels")
@click.option(
    "--out",
    "out_dir",
    default=DEFAULT_OUT,
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for kernels.csv, summary.json and report.html.",
)
@click.option("--quick", is_flag=True, help="Small shapes and few repeats: a smoke run.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default=None,
    help="Where to run (default: cuda when available, else cpu: correctness only).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=None,
    help="Timed repeats per measurement, median reported (default: 20, or 5 with --quick).",
)
@quiet_option()
def bench_kernels(
    out_dir: Path, quick: bool, device: str | None, repeats: int | None, quiet: bool
) -> None:
    """Benchmark the log-prob, fused linear log-prob and GRPO loss kernels.

    Writes one CSV row per (kernel, pass, implementation, shape): median time, peak extra
    memory, achieved GB/s or TFLOP/s and its fraction of the measured ceiling, or, for
    correctness rows, the relative norm errors against the float64 reference.
    """
    import torch
    from stalesim.kernels import _bench_cases as cases
    from stalesim.kernels.backend import load_triton_module

    chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available on this machine")
    if (
        chosen.type == "cpu"
        and torch.cuda.is_available()
        and not os.environ.get("TRITON_INTERPRET")
    ):
        raise ValueError(
            "--device cpu on a machine with CUDA: set TRITON_INTERPRET=1 so the kernels run "
            "under the interpreter"
        )
    # Importing the kernel modules first switches the interpreter on when there is no CUDA.
    for module in ("_logprob_triton", "_fused_triton", "_grpo_loss_triton"):
        load_triton_module(module)
    torch.manual_seed(0)
    if chosen.type == "cpu":
        torch.set_num_threads(1)
    repeats = repeats or (5 if quick else 20)

    thunks = cases.correctness_cases(chosen, quick)
    ceilings: dict[str, float] = {}
    if chosen.type == "cuda":
        shapes = cases.QUICK if quick else cases.FULL
        ceilings = cases.measure_ceilings(chosen, shapes, repeats)
        thunks += [
            lambda case=case: cases.measure(case, chosen, repeats, ceilings)
            for case in cases.timing_cases(chosen, shapes)
        ]
    rows = _run(thunks, quiet)
    # Without a GPU, a full run also compiles the GPU configurations for sm_90 (no GPU needed).
    compile_reports = _sm90_compile_reports() if chosen.type != "cuda" and not quick else None

    frame = _write_results(out_dir, rows, chosen, quick, ceilings, compile_reports)
    _print_table(frame)
    if isinstance(compile_reports, list):
        for r in compile_reports:
            click.echo(
                f"sm_90 compile {r['kernel']} ({r['operand']}): {r['registers']} registers, "
                f"{r['local_bytes']} B spilled, {r['shared_bytes']:,} B shared, "
                f"wgmma={r['uses_wgmma']}, pipelined={r['pipelined']}"
            )
    elif compile_reports is not None:
        click.echo(compile_reports)
    if chosen.type != "cuda":
        click.echo(NOT_MEASURED)
    click.echo(
        f"wrote {out_dir / 'kernels.csv'}, {out_dir / 'summary.json'}, {out_dir / 'report.html'}"
    )
    failed = frame.filter(frame["status"] == "FAIL")
    if failed.height:
        names = ", ".join(f"{r['kernel']} {r['dtype']}" for r in failed.iter_rows(named=True))
        raise click.ClickException(f"correctness check failed: {names}")


def _run(thunks: list, quiet: bool) -> list[dict[str, Any]]:
    from rich.progress import Progress

    rows = []
    with Progress(disable=quiet, transient=True) as progress:
        task = progress.add_task("kernels", total=len(thunks))
        for thunk in thunks:
            rows.append(thunk())
            progress.advance(task)
    return rows


def _sm90_compile_reports() -> list[dict[str, Any]] | str:
    """Resource reports of the GPU kernels compiled for sm_90, or why they could not be made."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "stalesim.kernels._fused_gpu_compile"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return f"sm_90 compile failed: {lines[-1] if lines else done.returncode}"
    return [json.loads(line) for line in done.stdout.splitlines()]


def _write_results(
    out_dir: Path,
    rows: list[dict[str, Any]],
    device,
    quick: bool,
    ceilings: dict[str, float],
    compile_reports: list[dict[str, Any]] | str | None,
):
    import polars as pl
    import torch
    import triton
    from stalesim.kernels._bench_cases import COLUMNS
    from stalesim.sim.files import atomic_write, write_json

    schema = (
        {name: pl.Utf8 for name in COLUMNS}
        | {
            name: pl.Float64
            for name in (
                "median_s",
                "achieved",
                "ceiling",
                "fraction_of_ceiling",
                "forward_rel_error",
                "grad_rel_error",
                "tolerance",
            )
        }
        | {"peak_extra_bytes": pl.Int64, "gradient_bytes": pl.Int64}
    )
    frame = pl.DataFrame(rows, schema=schema)
    atomic_write(out_dir / "kernels.csv", lambda tmp: frame.write_csv(tmp))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    summary = {
        "device": device_name,
        "gpu_timings_measured": device.type == "cuda",
        "quick": quick,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "ceilings": ceilings,
        "correctness_failures": frame.filter(pl.col("status") == "FAIL").height,
        "rows": frame.height,
        "sm90_compile": compile_reports,
    }
    write_json(out_dir / "summary.json", summary)
    _write_page(out_dir / "report.html", frame, summary)
    return frame


def _write_page(path: Path, frame, summary: dict[str, Any]) -> None:
    import altair as alt
    import polars as pl
    from stalesim.reports.page import Metric, Page

    subtitle = f"{summary['device']} · torch {summary['torch']} · triton {summary['triton']}"
    page = Page("Kernel benchmark", subtitle=subtitle + (" · quick" if summary["quick"] else ""))
    correctness = frame.filter(pl.col("pass") == "correctness")
    timed = frame.filter(pl.col("median_s").is_not_null())
    if not summary["gpu_timings_measured"]:
        page.prose(NOT_MEASURED, heading="Speed")
    else:
        ceilings = summary["ceilings"]
        page.metrics(
            "Measured ceilings",
            [
                Metric("copy bandwidth", ceilings["copy_bytes_per_s"] / 1e9, "GB/s"),
                Metric("bf16 matmul", ceilings["matmul_flop_per_s"] / 1e12, "TFLOP/s"),
            ],
        )
        page.metrics("Triton kernels against the ceilings", _headline_metrics(frame))
        if timed.height:
            chart_data = timed.with_columns(
                (pl.col("median_s") * 1e3).alias("median_ms"),
                pl.concat_str(["kernel", "pass"], separator=" · ").alias("case"),
            )
            chart = (
                alt.Chart(chart_data)
                .mark_bar()
                .encode(
                    x=alt.X("implementation:N", title=None),
                    y=alt.Y("median_ms:Q", title="median time (ms)"),
                    color=alt.Color("implementation:N", legend=None),
                    tooltip=["implementation", "median_ms", "achieved", "achieved_unit"],
                )
                .properties(width=160, height=180)
                .facet(facet=alt.Facet("case:N", title=None), columns=3)
                .resolve_scale(y="independent")
            )
            page.chart(chart, heading="Median time per implementation")
    failures = correctness.filter(pl.col("status") == "FAIL").height
    page.metrics(
        "Correctness against the float64 reference",
        [
            Metric("cases", correctness.height),
            Metric("failed", failures),
            Metric("worst gradient error / tolerance", _worst_ratio(correctness)),
        ],
    )
    grpo_option = pl.col("shape").str.split(": ").list.last()
    case = (
        pl.when(pl.col("kernel") == "grpo_loss")
        .then(pl.concat_str([pl.col("kernel"), grpo_option], separator=": "))
        .otherwise(pl.concat_str(["kernel", "dtype"], separator=" "))
    )
    error_data = (
        correctness.with_columns(case.alias("case"))
        .unpivot(
            index=["case", "shape", "tolerance"],
            on=["forward_rel_error", "grad_rel_error"],
            variable_name="quantity",
            value_name="relative_error",
        )
        .with_columns(pl.col("relative_error").clip(lower_bound=1e-12))
    )
    points = (
        alt.Chart(error_data)
        .mark_point(filled=True, size=70)
        .encode(
            x=alt.X("case:N", title=None, sort=None, axis=alt.Axis(labelLimit=320)),
            y=alt.Y("relative_error:Q", scale=alt.Scale(type="log"), title="‖out − ref‖ / ‖ref‖"),
            color=alt.Color("quantity:N", title=None),
            tooltip=["case", "shape", "quantity", "relative_error", "tolerance"],
        )
    )
    ticks = (
        alt.Chart(error_data)
        .mark_tick(color="#e45756", thickness=2, size=24)
        .encode(x=alt.X("case:N", sort=None), y="tolerance:Q")
    )
    page.chart(
        (points + ticks).properties(width=560, height=220),
        heading="Relative errors",
        caption="Red ticks: the gradient tolerance of each case (forward must be ≤ 1e-5).",
    )
    compiled = summary.get("sm90_compile")
    if isinstance(compiled, list):
        page.table(
            pl.DataFrame(compiled),
            heading="GPU kernels compiled for sm_90 (H100) without a GPU",
            caption="local_bytes > 0 would mean register spills; pipelined: asynchronous "
            "global-to-shared copies feed the matmul loop.",
        )
    elif isinstance(compiled, str):
        page.prose(compiled, heading="GPU kernels compiled for sm_90 (H100) without a GPU")
    page.table(frame, heading="All rows (kernels.csv)", collapsed=True)
    page.write(path)


def _headline_metrics(frame) -> list:
    import polars as pl
    from stalesim.reports.page import Metric

    def fraction(kernel: str, pass_: str) -> float | None:
        hit = frame.filter(
            (pl.col("kernel") == kernel)
            & (pl.col("pass") == pass_)
            & (pl.col("implementation") == "triton")
        )
        return hit["fraction_of_ceiling"][0] if hit.height else None

    fused = frame.filter(
        (pl.col("kernel") == "fused_linear_logprobs")
        & (pl.col("pass") == "forward+backward")
        & (pl.col("implementation") == "triton")
    )
    memory_ratio = (
        fused["peak_extra_bytes"][0] / fused["gradient_bytes"][0]
        if fused.height and fused["peak_extra_bytes"][0] is not None
        else None
    )
    return [
        Metric(
            "log-probs forward / copy bandwidth",
            fraction("token_logprobs", "forward"),
            kind="percent",
        ),
        Metric(
            "fused linear fwd+bwd / bf16 matmul",
            fraction("fused_linear_logprobs", "forward+backward"),
            kind="percent",
        ),
        Metric("fused fwd+bwd peak memory / gradient buffers", memory_ratio, "×"),
        Metric(
            "GRPO loss fwd+bwd / copy bandwidth",
            fraction("grpo_loss", "forward+backward"),
            kind="percent",
        ),
    ]


def _worst_ratio(correctness) -> float | None:
    import polars as pl

    if not correctness.height:
        return None
    return correctness.select((pl.col("grad_rel_error") / pl.col("tolerance")).max()).item()


def _print_table(frame) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="stalesim bench kernels")
    for name in (
        "kernel",
        "pass",
        "implementation",
        "dtype",
        "shape",
        "median ms",
        "rate",
        "of ceiling",
        "fwd err",
        "grad err",
        "status",
    ):
        table.add_column(name)

    def number(value: float | None, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    for r in frame.iter_rows(named=True):
        rate = "—" if r["achieved"] is None else f"{r['achieved']:.1f} {r['achieved_unit']}"
        median_ms = None if r["median_s"] is None else 1e3 * r["median_s"]
        table.add_row(
            r["kernel"],
            r["pass"],
            r["implementation"],
            r["dtype"],
            r["shape"],
            number(median_ms, ".3f"),
            rate,
            number(r["fraction_of_ceiling"], ".1%"),
            number(r["forward_rel_error"], ".1e"),
            number(r["grad_rel_error"], ".1e"),
            r["status"],
        )
    Console(width=200).print(table)
