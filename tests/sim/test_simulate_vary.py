"""`stalesim simulate --vary`: variants of one scenario in one call, one table and one page."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main

SMALL = [
    "--set", "workload.prompts_per_step=8",
    "--set", "workload.group_size=4",
    "--set", "cluster.rollout_engines=2",
    "--steps", "5",
    "--quiet",
]  # fmt: skip


def test_each_variant_is_the_run_a_set_would_give(tmp_path: Path) -> None:
    out = tmp_path / "v"
    args = ["simulate", *SMALL, "--vary", "algorithm.max_staleness=1,4", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert [r["variant"] for r in meta["variants"]] == ["max_staleness=1", "max_staleness=4"]
    table = pl.read_parquet(out / "variants.parquet")
    assert table["algorithm.max_staleness"].to_list() == ["1", "4"]
    for row in meta["variants"]:
        single = tmp_path / row["folder"]
        plain = CliRunner().invoke(
            main,
            ["simulate", *SMALL, "--set", f"algorithm.{row['variant']}", "--out", str(single)],
        )
        assert plain.exit_code == 0, plain.output
        expected = json.loads((single / "summary.json").read_text())
        stored = json.loads((out / row["folder"] / "summary.json").read_text())
        assert stored["throughput"] == expected["throughput"]
        assert stored["law"]["lr_multiplier"] == expected["law"]["lr_multiplier"]
        assert row["samples_per_s"] == expected["throughput"]["samples_per_s"]
        assert row["law_time_to_target_rel"] == expected["law"]["time_to_target_rel"]
    # a larger bound lets more staleness in and the law's multiplier falls with it
    assert meta["variants"][1]["staleness_max"] > meta["variants"][0]["staleness_max"]
    assert meta["variants"][1]["law_lr_multiplier"] < meta["variants"][0]["law_lr_multiplier"]
    assert "max_staleness=4" in (out / "report.html").read_text()
    again = CliRunner().invoke(main, ["report", "simulate", str(out)])
    assert again.exit_code == 0, again.output


def test_two_varied_keys_multiply(tmp_path: Path) -> None:
    args = [
        "simulate", *SMALL, "--out", str(tmp_path / "v"), "--json",
        "--vary", "algorithm.mode=sync,async", "--vary", "workload.group_size=2,4",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    labels = [r["variant"] for r in json.loads(result.stdout)["variants"]]
    assert labels == [
        "mode=sync group_size=2",
        "mode=sync group_size=4",
        "mode=async group_size=2",
        "mode=async group_size=4",
    ]


@pytest.mark.parametrize(
    ("vary", "needle"),
    [
        (["algorithm.max_staleness"], "expected KEY=V1,V2"),
        (["algorithm.max_staleness=1,,2"], "an empty value"),
        (["algorithm.max_staleness=1,1"], "a value is repeated"),
        (["algorithm.max_stalenes=1,2"], "max_stalenes"),
        (["algorithm.max_staleness=1,-3"], "algorithm.max_staleness=-3"),
        (["algorithm.max_staleness=1", "algorithm.max_staleness=2"], "given twice"),
        (["workload.group_size=" + ",".join(str(i) for i in range(1, 66))], "at most 64"),
    ],
)
def test_bad_variants_are_one_line_and_write_nothing(
    tmp_path: Path, vary: list[str], needle: str
) -> None:
    out = tmp_path / "v"
    args = ["simulate", *SMALL, "--out", str(out)]
    for spec in vary:
        args += ["--vary", spec]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()
