"""Median and range of each timed kernel row over several `stalesim bench kernels` folders of
one card (the repeats of one session), and of each target figure.

Usage: python tools/gpu/summarise_repeats.py DIR [DIR ...] > spread.csv
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl


def main(folders: list[Path]) -> None:
    rows = pl.concat(
        pl.read_csv(folder / "kernels.csv", infer_schema_length=None)
        .filter(pl.col("median_s").is_not_null())
        .select("kernel", "pass", "implementation", "dtype", "shape", "median_s",
                "fraction_of_ceiling", "peak_extra_bytes")
        for folder in folders
    )  # fmt: skip
    targets = pl.DataFrame(
        [
            {"kernel": "target", "pass": t["figure"], "implementation": t["target"],
             "fraction_of_ceiling": t["value"]}
            for folder in folders
            for t in json.loads((folder / "summary.json").read_text())["targets"]
        ]
    )  # fmt: skip
    keys = ["kernel", "pass", "implementation"]
    timed = rows.group_by([*keys, "dtype", "shape"], maintain_order=True).agg(
        runs=pl.len(),
        median_ms=(1e3 * pl.col("median_s")).median(),
        min_ms=(1e3 * pl.col("median_s")).min(),
        max_ms=(1e3 * pl.col("median_s")).max(),
        of_ceiling_median=pl.col("fraction_of_ceiling").median(),
        of_ceiling_min=pl.col("fraction_of_ceiling").min(),
        of_ceiling_max=pl.col("fraction_of_ceiling").max(),
        peak_extra_bytes=pl.col("peak_extra_bytes").max(),
    )
    target = targets.group_by(keys, maintain_order=True).agg(
        runs=pl.len(),
        of_ceiling_median=pl.col("fraction_of_ceiling").median(),
        of_ceiling_min=pl.col("fraction_of_ceiling").min(),
        of_ceiling_max=pl.col("fraction_of_ceiling").max(),
    )
    sys.stdout.write(pl.concat([timed, target], how="diagonal_relaxed").write_csv())


if __name__ == "__main__":
    main([Path(arg) for arg in sys.argv[1:]])
