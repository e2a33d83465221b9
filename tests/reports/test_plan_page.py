"""The capacity-planning page: what it states matches the plan's files, and it draws offline in
headless Chromium without a single console message."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from stalesim.reports.plan_page import build_plan_page, write_plan_report
from stalesim.sim.config_file import validate_config
from stalesim.sim.law import default_law
from stalesim.sim.plan import run_plan
from stalesim.sim.plan_config import PlanConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PLAN = {
    "name": "page",
    "base": {
        "preset": "default",
        "set": {
            "model.preset": "qwen2.5-1.5b",
            "workload.prompts_per_step": 8,
            "workload.group_size": 4,
            "workload.response_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.6},
            "workload.max_response_tokens": 1024,
        },
    },
    "budget_gpus": 4,
    "space": {"learner_gpus": [1, 2, 3], "tp": [1, 2], "gpu": ["H100", "A100-80GB"]},
    "variants": [
        {"mode": ["sync_colocated", "sync", "one_step"]},
        {"mode": ["async"], "max_staleness": [1, 2, 4, 8]},
    ],
    "evaluation": {"steps": 6, "seed": 2, "round_size": 8},
}


@pytest.fixture(scope="module")
def plan_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "out"
    run_plan(validate_config(PlanConfig, PLAN, "test plan"), default_law(), out)
    write_plan_report(out)
    return out


def _metric(page_html: str, label: str) -> str:
    found = re.search(
        rf'data-label="{re.escape(html.escape(label))}" data-value="([^"]*)"', page_html
    )
    assert found, label
    return html.unescape(found.group(1))


def test_the_card_states_the_recommendation_of_the_files(plan_out: Path) -> None:
    summary = json.loads((plan_out / "plan.json").read_text())
    table = pl.read_parquet(plan_out / "candidates.parquet")
    best = table.filter(pl.col("rank") == 1).row(0, named=True)
    assert summary["recommendation"]["best"]["candidate_id"] == best["candidate_id"]
    text = (plan_out / "report.html").read_text()
    assert float(_metric(text, "learning rate")) == best["eta_opt"]
    assert float(_metric(text, "time to target")) == pytest.approx(best["time_to_target_s"] / 3600)
    assert float(_metric(text, "cost to target")) == best["cost_to_target_usd"]
    runner = table.filter(pl.col("rank") == 2).row(0, named=True)
    worse = runner["time_to_target_s"] / best["time_to_target_s"] - 1
    assert float(_metric(text, "worse by (time)")) == pytest.approx(worse)
    # every infeasible candidate is listed with its reason
    for reason in table.filter(pl.col("evaluated") == "infeasible")["reason"].unique():
        assert html.escape(reason) in text
    # the trade-off family spans the bound's values, all simulated
    family = table.filter(pl.col("candidate_id").is_in(summary["trade_off"]["candidates"]))
    assert sorted(family["max_staleness"].to_list()) == [1, 2, 4, 8]
    assert set(family["evaluated"]) == {"simulated"}


def test_the_page_is_rendered_from_the_files_alone(plan_out: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("plan.json", "candidates.parquet"):
        shutil.copy(plan_out / name, copy / name)
    page = build_plan_page(copy)
    assert page.chart_count == 3  # frontier, trade-off, uncertainty
    assert page.html() == build_plan_page(plan_out).html()


def test_a_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"plan\.json: no such file"):
        build_plan_page(tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_page_draws_offline_without_console_messages(plan_out: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--dump-dom",
        (plan_out / "report.html").resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    charts = build_plan_page(plan_out).chart_count
    assert len(re.findall(r'data-rendered="1"', dom)) == charts
    assert 'data-rendered="error"' not in dom
    assert len(re.findall(r'<svg[^>]*class="marks"', dom)) == charts
    # console.log/warn/error and uncaught exceptions all reach stderr as CONSOLE lines
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    assert "time to target (h)" in dom and "staleness bound" in dom


def test_report_plan_rerenders_a_finished_plan_and_refuses_a_mixed_one(
    plan_out: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner
    from stalesim.cli import main
    from stalesim.sim.output_dir import require_complete

    copy = tmp_path / "copy"
    shutil.copytree(plan_out, copy)
    (copy / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", "plan", str(copy)])
    assert result.exit_code == 0, result.output
    assert (copy / "report.html").read_text() == build_plan_page(plan_out).html()
    # the page is part of the finished result now
    require_complete(copy, "plan", ["candidates.parquet", "plan.json", "report.html"])
    # a summary from elsewhere (e.g. copied over by hand) is refused in one line
    summary = json.loads((copy / "plan.json").read_text())
    summary["name"] = "another plan"
    (copy / "plan.json").write_text(json.dumps(summary))
    for folder in (copy, tmp_path / "empty"):
        folder.mkdir(exist_ok=True)
        result = CliRunner().invoke(main, ["report", "plan", str(folder)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert result.stderr.startswith("error: ")
