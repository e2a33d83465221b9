"""``stalesim bench kernels``: correctness and speed of the Triton kernels, as CSV and HTML.

On a CUDA device: every kernel and its baselines (torch eager, torch.compile, and TRL,
Liger-Kernel and Cut Cross-Entropy when importable; a "not installed" row with the install
command when not) at the target shapes, with measured ceilings, each target figure marked
pass or fail (``summary.json``'s ``targets``) and where each of our kernels stands against every
peer timed on the same inputs (``peers``; see ``kernels._bench_peers``). Without one:
the correctness half only (every kernel against the float64 reference under the Triton
interpreter), and the output says plainly that GPU timings were not measured.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import click
from stalesim.cli.options import out_folder_option, quiet_option

DEFAULT_OUT = "stalesim-out/bench-kernels"


def cuda_graphs_option():
    """``--cuda-graphs/--no-cuda-graphs``: also time every case replayed from a CUDA graph."""
    return click.option(
        "--cuda-graphs/--no-cuda-graphs",
        default=True,
        show_default=True,
        help="On a GPU, also time each case captured in a CUDA graph (no host time between "
        "its kernels) and say which implementations cannot be captured.",
    )


@click.command("kernels")
@out_folder_option(DEFAULT_OUT, "kernels.csv, summary.json and report.html.")
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
@cuda_graphs_option()
@quiet_option()
def bench_kernels(
    out_dir: Path,
    quick: bool,
    device: str | None,
    repeats: int | None,
    cuda_graphs: bool,
    quiet: bool,
) -> None:
    """Benchmark the log-prob, fused linear log-prob and GRPO loss kernels.

    Writes one CSV row per (kernel, pass, implementation, shape): median time, peak extra
    memory, achieved GB/s or TFLOP/s and its fraction of the measured ceiling, or, for
    correctness rows, the relative norm errors against the float64 reference. On a GPU,
    summary.json also judges each design target and says where each of our kernels stands
    against every peer timed on the same inputs (a line per case is printed).
    """
    frame = run_kernel_bench(out_dir, quick, device, repeats, quiet, cuda_graphs=cuda_graphs)
    failed = correctness_failures(frame)
    if failed:
        raise click.ClickException(f"correctness check failed: {', '.join(failed)}")


def correctness_failures(frame) -> list[str]:
    """``kernel dtype`` (and shape) of every correctness row that failed."""
    failed = frame.filter(frame["status"] == "FAIL")
    return [f"{r['kernel']} {r['dtype']} {r['shape']}" for r in failed.iter_rows(named=True)]


def run_kernel_bench(
    out_dir: Path,
    quick: bool,
    device: str | None,
    repeats: int | None,
    quiet: bool,
    extra_correctness: list | None = None,
    cuda_graphs: bool = True,
):
    """What ``stalesim bench kernels`` does, returning the rows as a polars frame (failures
    are rows with status ``FAIL``, not exceptions). ``extra_correctness`` adds thunks to the
    correctness half (``bench gpu`` adds checks at real shapes); ``cuda_graphs`` also times
    each GPU case replayed from a CUDA graph."""
    import torch
    from stalesim.kernels import _bench_cases as cases
    from stalesim.kernels._bench_peers import peer_standings
    from stalesim.kernels._bench_targets import target_verdicts
    from stalesim.kernels._bench_timing import datasheet_ceilings
    from stalesim.kernels.backend import load_triton_module
    from stalesim.reports.kernel_bench_page import NOT_MEASURED

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

    thunks = cases.correctness_cases(chosen, quick) + list(extra_correctness or [])
    ceilings: dict[str, float] = {}
    shapes = cases.QUICK if quick else cases.FULL
    if chosen.type == "cuda":
        ceilings = cases.measure_ceilings(chosen, shapes, repeats)
        # Every implementation's error against float64, on the inputs it is timed on.
        thunks += cases.error_cases(chosen, shapes)
        thunks += [
            lambda case=case: cases.measure(case, chosen, repeats, ceilings, cuda_graphs)
            for case in cases.timing_cases(chosen, shapes)
        ]
    with warnings.catch_warnings():
        # The interpreter evaluates both sides of tl.where in numpy, so the branches that
        # guard -inf - -inf and 0 * inf warn about the values they then discard.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="triton.runtime")
        rows = _run(thunks, quiet)
    # Without a GPU, a full run also compiles the GPU configurations for sm_90 (no GPU needed).
    compile_reports = _sm90_compile_reports() if chosen.type != "cuda" and not quick else None

    targets = target_verdicts(rows, chosen.type == "cuda" and shapes.target_shapes)
    standings = peer_standings(rows)
    from stalesim.common.output_dir import output_folder

    with output_folder(out_dir, kind="bench kernels") as stage:
        frame = _write_results(
            stage, rows, chosen, quick, ceilings, compile_reports, targets, standings
        )
        page_written = _write_page(stage)
    _print_table(frame)
    if ceilings:
        click.echo(_ceilings_line(ceilings, datasheet_ceilings(torch.cuda.get_device_name())))
    for t in targets:
        value = "—" if t["value"] is None else f"{t['value']:.3f}"
        click.echo(f"target {t['figure']}: {value} (target {t['target']}): {t['verdict']}")
    for entry in standings:
        if entry["judged"]:
            click.echo(
                f"among peers, {entry['kernel']} {entry['pass']} {entry['implementation']} "
                f"({entry['shape']}): {entry['standing']}"
            )
    if isinstance(compile_reports, list):
        for r in compile_reports:
            click.echo(
                f"sm_90 compile {r['kernel']} ({r['operand']}, {r['variant']}): "
                f"{r['registers']} registers, "
                f"{r['local_bytes']} B spilled, {r['shared_bytes']:,} B shared, "
                f"wgmma={r['uses_wgmma']}, pipelined={r['pipelined']}"
            )
    elif compile_reports is not None:
        click.echo(compile_reports)
    if chosen.type == "cuda":
        click.echo(graph_line(rows, cuda_graphs))
    if chosen.type != "cuda":
        click.echo(NOT_MEASURED)
    page = f", {out_dir / 'report.html'}" if page_written else ""
    click.echo(f"wrote {out_dir / 'kernels.csv'}, {out_dir / 'summary.json'}{page}")
    if not page_written:
        click.echo(
            "report.html not written: vl-convert-python (which inlines the chart JavaScript) is "
            f"not installed here; render it elsewhere with `stalesim report kernels {out_dir}`"
        )
    return frame


def graph_line(rows: list[dict[str, Any]], cuda_graphs: bool) -> str:
    """One line on the CUDA-graph timings: how many timed cases were captured, and each
    implementation that could not be (with the reason its first refusal gave)."""
    if not cuda_graphs:
        return "CUDA graphs: not used (--no-cuda-graphs); every time includes host launch time"
    timed = [r for r in rows if r.get("timing_note")]
    refused: dict[str, str] = {}
    for r in timed:
        if r["graph_median_s"] is None:
            refused.setdefault(f"{r['implementation']} ({r['kernel']})", r["timing_note"])
    captured = sum(r["graph_median_s"] is not None for r in timed)
    line = f"CUDA graphs: {captured} of {len(timed)} timed cases captured"
    if not refused:
        return line + "; every implementation could be captured"
    return line + "; cannot be captured: " + "; ".join(f"{k}: {v}" for k, v in refused.items())


def _ceilings_line(measured: dict[str, float], datasheet: dict[str, float] | None) -> str:
    """The measured ceilings beside the datasheet's (fractions are against the measured)."""

    def pair(key: str, scale: float, unit: str) -> str:
        text = f"{measured[key] / scale:,.0f} {unit} measured"
        if datasheet:
            sheet = datasheet[key]
            text += f" ({measured[key] / sheet:.0%} of the datasheet's {sheet / scale:,.0f})"
        return text

    return (
        f"ceilings: copy {pair('copy_bytes_per_s', 1e9, 'GB/s')}; bf16 matmul "
        f"{pair('matmul_flop_per_s', 1e12, 'TFLOP/s')}"
        + ("" if datasheet else "; no datasheet figures for this card")
    )


def _write_page(stage: Path) -> bool:
    """Write ``report.html``; ``False`` where the page renderer is missing. A GPU box carries
    only what the measurements need, and measurements already taken must not be lost for a
    page that ``stalesim report kernels`` renders later from the same files."""
    from stalesim.reports.kernel_bench_page import write_kernel_bench_report

    try:
        import vl_convert  # noqa: F401
    except ImportError:
        return False
    write_kernel_bench_report(stage)
    return True


def _run(thunks: list, quiet: bool) -> list[dict[str, Any]]:
    from rich.progress import Progress

    rows = []
    with Progress(disable=quiet, transient=True) as progress:
        task = progress.add_task("kernels", total=len(thunks))
        for thunk in thunks:
            rows.append(thunk())
            if not quiet:
                # A line per row as it lands: a run cut short still shows what it measured.
                progress.console.print(_row_line(rows[-1]), highlight=False, soft_wrap=True)
            progress.advance(task)
    return rows


def _number(value: float | None, fmt: str, scale: float = 1.0) -> str:
    """A figure for the printed rows, ``—`` where the row has none."""
    return "—" if value is None else format(scale * value, fmt)


def _row_line(r: dict[str, Any]) -> str:
    def number(key: str, fmt: str, scale: float = 1.0) -> str:
        return _number(r.get(key), fmt, scale)

    labels = f"{r['kernel']} {r['pass']} {r['implementation']} {r['dtype']} {r['shape']}"
    if r.get("median_s") is not None:
        return (
            f"{labels}: {number('median_s', '.3f', 1e3)} ms, {number('achieved', '.1f')} "
            f"{r['achieved_unit']} ({number('fraction_of_ceiling', '.1%')} of ceiling), "
            f"peak extra {number('peak_extra_bytes', ',.0f')} B, "
            f"graph {number('graph_median_s', '.3f', 1e3)} ms {r['status']}"
        )
    if r.get("forward_rel_error") is not None:
        return (
            f"{labels}: fwd err {number('forward_rel_error', '.1e')}, grad err "
            f"{number('grad_rel_error', '.1e')} {r['status']}"
        )
    return f"{labels}: {r['status']} {r.get('note') or ''}".rstrip()


def _sm90_compile_reports() -> list[dict[str, Any]] | str:
    """Resource reports of the GPU kernels compiled for sm_90, or why they could not be made."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "0"}
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
    targets: list[dict[str, Any]],
    standings: list[dict[str, Any]],
):
    import polars as pl
    import torch
    import triton
    from stalesim.common.files import atomic_write, write_json
    from stalesim.kernels._bench_cases import COLUMNS
    from stalesim.kernels._bench_peers import LEVEL_BAND
    from stalesim.reports.kernel_bench_page import KERNELS_CSV_TYPES

    # The page reads the columns of KERNELS_CSV_TYPES; the graph time is written as a number
    # beside them (older results, without it, still render).
    types = KERNELS_CSV_TYPES | {"graph_median_s": pl.Float64}
    schema = {name: types.get(name, pl.String) for name in COLUMNS}
    frame = pl.DataFrame(rows, schema=schema)
    atomic_write(out_dir / "kernels.csv", lambda tmp: frame.write_csv(tmp))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    from stalesim.kernels._bench_timing import datasheet_ceilings

    summary = {
        "device": device_name,
        "gpu_timings_measured": device.type == "cuda",
        "quick": quick,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "ceilings": ceilings,
        "datasheet_ceilings": datasheet_ceilings(device_name) if ceilings else None,
        "correctness_failures": frame.filter(pl.col("status") == "FAIL").height,
        "rows": frame.height,
        "sm90_compile": compile_reports,
        "targets": targets,
        "peers": standings,
        "peer_level_band": LEVEL_BAND,
        "cuda_graphs": _graph_summary(rows),
    }
    write_json(out_dir / "summary.json", summary)
    return frame


def _graph_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's ``cuda_graphs``: captured and refused cases, each refusal's reason."""
    timed = [r for r in rows if r.get("timing_note")]
    return {
        "captured": sum(r["graph_median_s"] is not None for r in timed),
        "timed": len(timed),
        "not_capturable": sorted(
            {
                f"{r['implementation']} ({r['kernel']}): {r['timing_note']}"
                for r in timed
                if r["graph_median_s"] is None
            }
        ),
    }


def _print_table(frame) -> None:
    from rich.table import Table
    from stalesim.cli.tables import print_table

    table = Table(title="stalesim bench kernels")
    for name in (
        "kernel",
        "pass",
        "implementation",
        "dtype",
        "shape",
        "median ms",
        "graph ms",
        "rate",
        "of ceiling",
        "fwd err",
        "grad err",
        "status",
    ):
        table.add_column(name)

    for r in frame.iter_rows(named=True):
        rate = "—" if r["achieved"] is None else f"{r['achieved']:.1f} {r['achieved_unit']}"
        table.add_row(
            r["kernel"],
            r["pass"],
            r["implementation"],
            r["dtype"],
            r["shape"],
            _number(r["median_s"], ".3f", 1e3),
            _number(r["graph_median_s"], ".3f", 1e3),
            rate,
            _number(r["fraction_of_ceiling"], ".1%"),
            _number(r["forward_rel_error"], ".1e"),
            _number(r["grad_rel_error"], ".1e"),
            r["status"],
        )
    print_table(table)
