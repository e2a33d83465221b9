"""The page ``stalesim bench kernels`` writes: kernel speed and correctness, read from its files.

It reads the bench's output folder as data (``kernels.csv``: one row per kernel, pass,
implementation and shape; ``summary.json``: device, versions, measured ceilings and the sm_90
compile reports) and never imports the kernels, so a page can be re-rendered from any finished
run with ``stalesim report kernels OUT_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
from stalesim.reports.inputs import read_csv_table, read_json_object
from stalesim.reports.page import Metric, Page

NOT_MEASURED = (
    "GPU timings not measured: no CUDA device was used, so this run checked correctness only "
    "(Triton kernels under the interpreter against the float64 reference)."
)

#: The columns of kernels.csv the page reads, with their types. An empty cell is null (a
#: correctness row has no time, a timing row no error), so a column may be empty throughout.
KERNELS_CSV_TYPES: dict[str, pl.DataType] = {
    "kernel": pl.String,
    "pass": pl.String,
    "implementation": pl.String,
    "dtype": pl.String,
    "shape": pl.String,
    "median_s": pl.Float64,
    "peak_extra_bytes": pl.Int64,
    "gradient_bytes": pl.Int64,
    "achieved": pl.Float64,
    "achieved_unit": pl.String,
    "ceiling": pl.Float64,
    "fraction_of_ceiling": pl.Float64,
    "forward_rel_error": pl.Float64,
    "grad_rel_error": pl.Float64,
    "tolerance": pl.Float64,
    "status": pl.String,
}

#: Keys of summary.json the page reads, and the JSON types each must have.
SUMMARY_KEYS: dict[str, type] = {
    "device": str,
    "torch": str,
    "triton": str,
    "quick": bool,
    "gpu_timings_measured": bool,
    "ceilings": dict,
}
#: Ceilings a run with GPU timings must state (bytes/s and FLOP/s measured on the same GPU).
CEILING_KEYS = ("copy_bytes_per_s", "matmul_flop_per_s")

SM90_HEADING = "GPU kernels compiled for sm_90 (H100) without a GPU"

#: summary.json's ``targets``: one object per design target, as the bench wrote it.
TARGET_COLUMNS: dict[str, pl.DataType] = {
    "figure": pl.String,
    "target": pl.String,
    "value": pl.Float64,
    "verdict": pl.String,
}


#: summary.json's ``peers``, one row each on the page: where each of our implementations
#: stands against the peers timed on the same inputs.
PEER_COLUMNS: dict[str, pl.DataType] = {
    "kernel": pl.String,
    "pass": pl.String,
    "shape": pl.String,
    "implementation": pl.String,
    "seconds": pl.Float64,
    "standing": pl.String,
}


def write_kernel_bench_report(out_dir: Path) -> Path:
    """Render ``out_dir/report.html`` from ``kernels.csv`` and ``summary.json`` in ``out_dir``;
    returns its path."""
    out_dir = Path(out_dir)
    return build_kernel_bench_page(out_dir).write(out_dir / "report.html")


def read_kernels_csv(path: Path) -> pl.DataFrame:
    """kernels.csv with the types of :data:`KERNELS_CSV_TYPES` (other columns are kept)."""
    return read_csv_table(path, KERNELS_CSV_TYPES)


def read_bench_summary(path: Path) -> dict[str, Any]:
    """summary.json, checked for the keys the page reads; errors name the file and the key."""
    summary = read_json_object(path)
    for key, kind in SUMMARY_KEYS.items():
        if not isinstance(summary.get(key), kind):
            raise ValueError(
                f"{path}: {key} must be a JSON {_json_type(kind)}, got {summary.get(key)!r}"
            )
    if summary["gpu_timings_measured"]:
        for key in CEILING_KEYS:
            value = summary["ceilings"].get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{path}: ceilings.{key} must be a number, got {value!r}")
    targets = summary.get("targets")
    if targets is not None and not _is_list_of_objects(targets):
        raise ValueError(f"{path}: targets must be a list of objects, got {targets!r}")
    peers = summary.get("peers")
    if peers is not None and not (
        _is_list_of_objects(peers) and all(set(PEER_COLUMNS) <= set(p) for p in peers)
    ):
        raise ValueError(
            f"{path}: peers must be a list of objects with {', '.join(PEER_COLUMNS)}, "
            f"got {str(peers)[:120]}"
        )
    compiled = summary.get("sm90_compile")
    if not (compiled is None or isinstance(compiled, str) or _is_list_of_objects(compiled)):
        raise ValueError(
            f"{path}: sm90_compile must be null, a message or a list of objects, got {compiled!r}"
        )
    return summary


def build_kernel_bench_page(out_dir: Path) -> Page:
    """The kernel bench page for the run in ``out_dir``, not yet written."""
    out_dir = Path(out_dir)
    frame = read_kernels_csv(out_dir / "kernels.csv")
    summary = read_bench_summary(out_dir / "summary.json")

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
        page.metrics("Triton kernels against the ceilings", headline_metrics(frame))
    targets = summary.get("targets")
    if targets:
        page.table(
            pl.DataFrame(targets, schema=TARGET_COLUMNS),
            heading="Targets",
            caption="Each design target against the Triton kernel's measured figure at the "
            "target shapes; 'not measured' without a GPU or on a --quick run.",
        )
    peers = summary.get("peers")
    if peers:
        page.table(
            pl.DataFrame([{k: p[k] for k in PEER_COLUMNS} for p in peers], schema=PEER_COLUMNS)
            .with_columns((pl.col("seconds") * 1e3).alias("seconds"))
            .rename({"seconds": "ms"}),
            heading="Standing among peers",
            caption="Each of our implementations against every other implementation timed on "
            "the same inputs: CUDA-graph replay where both were captured, eager medians "
            f"otherwise; within {summary.get('peer_level_band', 0):.0%} of their time is level "
            "(the run-to-run spread of one row). On random "
            "logits a gradient filter skips most of the backward, so the peaked rows are the "
            "ones to read.",
        )
    if summary["gpu_timings_measured"] and timed.height:
        page.chart(timing_chart(timed), heading="Median time per implementation")
    failures = correctness.filter(pl.col("status") == "FAIL").height
    page.metrics(
        "Correctness against the float64 reference",
        [
            Metric("cases", correctness.height),
            Metric("failed", failures),
            Metric("worst gradient error / tolerance", worst_ratio(correctness)),
        ],
    )
    page.chart(
        error_chart(correctness),
        heading="Relative errors",
        caption="Red ticks: the gradient tolerance of each case (forward must be ≤ 1e-5).",
    )
    compiled = summary.get("sm90_compile")
    if isinstance(compiled, list):
        page.table(
            pl.DataFrame(compiled),
            heading=SM90_HEADING,
            caption="local_bytes > 0 would mean register spills; pipelined: asynchronous "
            "global-to-shared copies feed the matmul loop.",
        )
    elif isinstance(compiled, str):
        page.prose(compiled, heading=SM90_HEADING)
    page.table(frame, heading="All rows (kernels.csv)", collapsed=True)
    return page


def timing_chart(timed: pl.DataFrame) -> alt.TopLevelMixin:
    """Median time of each implementation, one panel per (kernel, pass)."""
    chart_data = timed.with_columns(
        (pl.col("median_s") * 1e3).alias("median_ms"),
        pl.concat_str(["kernel", "pass"], separator=" · ").alias("case"),
    )
    return (
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


def error_chart(correctness: pl.DataFrame) -> alt.TopLevelMixin:
    """Forward and gradient relative errors of each correctness case, with its tolerance."""
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
    return (points + ticks).properties(width=560, height=220)


def headline_metrics(frame: pl.DataFrame) -> list[Metric]:
    """The Triton kernels' rates as fractions of the measured ceilings, and the fused kernel's
    peak memory over its gradient buffers; a dash where the run has no such row."""

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
        if fused.height and fused["peak_extra_bytes"][0] is not None and fused["gradient_bytes"][0]
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
        Metric(
            "log-probs -> GRPO loss fwd+bwd: floor / time",
            fraction("token_logprobs+grpo_loss", "forward+backward"),
            kind="percent",
        ),
    ]


def worst_ratio(correctness: pl.DataFrame) -> float | None:
    """The largest gradient error as a multiple of its tolerance (above 1 is a failure)."""
    if not correctness.height:
        return None
    return correctness.select((pl.col("grad_rel_error") / pl.col("tolerance")).max()).item()


def _is_list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _json_type(kind: type) -> str:
    return {str: "string", bool: "boolean", dict: "object"}.get(kind, str(kind))
