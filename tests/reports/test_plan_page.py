"""The capacity-planning page: what it states matches the plan's files, it shows the law only as
multipliers and relative times unless the plan has the user's baseline (then the user's
learning rate and hours), and it draws offline in headless Chromium without a single console
message."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from stalesim.common.config_file import validate_config
from stalesim.reports.page import format_number
from stalesim.reports.plan_page import (
    build_plan_page,
    distinct_labels,
    short_setup,
    write_plan_report,
)
from stalesim.sim.law.readings import readings
from stalesim.sim.plan.config import PlanConfig
from stalesim.sim.plan.planner import run_plan
from stalesim.sim.plan.rank import on_policy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BASELINE_LR = 1e-6
BASELINE_STEPS = 400

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


def _run(out: Path, baseline: bool) -> Path:
    plan = json.loads(json.dumps(PLAN))
    if baseline:
        plan["base"]["set"] |= {
            "target.baseline_lr": BASELINE_LR,
            "target.baseline_steps": BASELINE_STEPS,
        }
    run_plan(validate_config(PlanConfig, plan, "test plan"), readings(), out)
    write_plan_report(out)
    return out


@pytest.fixture(scope="module")
def plan_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("plan") / "out", baseline=False)


@pytest.fixture(scope="module")
def baseline_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run(tmp_path_factory.mktemp("plan") / "baseline", baseline=True)


def _metric(page_html: str, label: str) -> str:
    found = re.search(
        rf'data-label="{re.escape(html.escape(label))}" data-value="([^"]*)"', page_html
    )
    assert found, label
    return html.unescape(found.group(1))


def _labels(page_html: str) -> list[str]:
    return [html.unescape(x) for x in re.findall(r'data-label="([^"]*)"', page_html)]


def _specs(page_html: str) -> list[dict]:
    found = re.search(
        r'<script type="application/json" id="chart-specs">(.*?)</script>', page_html, re.S
    )
    assert found
    return json.loads(found.group(1))


def _fields(spec: dict) -> set[str]:
    """Every column name of every row of a chart's data."""
    return {key for rows in spec.get("datasets", {}).values() for row in rows for key in row}


def _visible_text(page_html: str) -> str:
    """The page without its scripts (the Vega bundle and the chart data)."""
    return re.sub(r"<script.*?</script>", "", page_html, flags=re.S)


def _table_after(page_html: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first table after ``heading``."""
    rest = page_html[page_html.index(f"<h2>{html.escape(heading)}</h2>") :]
    table = rest[: rest.index("</table>")]
    header = [html.unescape(h) for h in re.findall(r"<th(?:\s[^>]*)?>(.*?)</th>", table)]
    rows = [
        [html.unescape(c) for c in re.findall(r"<td(?:\s[^>]*)?>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    ]
    return header, rows


def _best_and_runner(out: Path) -> tuple[dict, dict, dict]:
    summary = json.loads((out / "plan.json").read_text())
    table = pl.read_parquet(out / "candidates.parquet")
    best = table.filter(pl.col("rank") == 1).row(0, named=True)
    runner = table.filter(pl.col("rank") == 2).row(0, named=True)
    return summary, best, runner


def test_the_card_states_the_recommendation_in_ratios(plan_out: Path) -> None:
    summary, best, runner = _best_and_runner(plan_out)
    assert summary["recommendation"]["best"]["candidate_id"] == best["candidate_id"]
    text = (plan_out / "report.html").read_text()
    assert float(_metric(text, "LR multiplier")) == best["lr_multiplier"]
    assert float(_metric(text, "time to target")) == best["time_to_target_rel"]
    assert float(_metric(text, "cost to target")) == best["cost_to_target_rel"]
    assert float(_metric(text, "learner steps")) == best["learner_steps_multiplier"]
    worse = runner["time_per_baseline_step_s"] / best["time_per_baseline_step_s"] - 1
    assert float(_metric(text, "worse by (time)")) == pytest.approx(worse)
    # time is relative to the fastest synchronous setup: that setup is at 1
    reference = pl.read_parquet(plan_out / "candidates.parquet").filter(
        pl.col("candidate_id") == summary["relative_to"]
    )
    assert reference["time_to_target_rel"][0] == 1.0
    assert on_policy(reference["mode"][0])
    assert "relative to the fastest synchronous setup" in text
    table = pl.read_parquet(plan_out / "candidates.parquet")
    # every infeasible candidate is listed with its reason
    for reason in table.filter(pl.col("evaluated") == "infeasible")["reason"].unique():
        assert html.escape(reason) in text
    # the trade-off family spans the bound's values, all simulated
    family = table.filter(pl.col("candidate_id").is_in(summary["trade_off"]["candidates"]))
    assert sorted(family["max_staleness"].to_list()) == [1, 2, 4, 8]
    assert set(family["evaluated"]) == {"simulated"}


def test_without_a_baseline_no_absolute_learning_rate_or_hours(plan_out: Path) -> None:
    summary, best, _ = _best_and_runner(plan_out)
    text = (plan_out / "report.html").read_text()
    visible = _visible_text(text)
    # the learning rate of the small model the law was measured on never shows
    law = readings()[0].law
    toy_lr = float(law.eta_opt_at(best["staleness"]))
    assert f"{toy_lr:.3g}" not in text and format_number(toy_lr) not in text
    labels = _labels(text)
    assert "learning rate" not in labels and "learner steps to target" not in labels
    units = re.findall(r'<span class="metric-unit[^"]*">([^<]*)</span>', text)
    assert "h" not in units and "USD" not in units
    assert "(h)" not in visible and "(USD)" not in visible
    # nor does any chart carry an absolute time, cost or learning rate in its data
    absolute = ("learning_rate", "time_to_target_s", "cost_to_target_usd", "time_per_baseline")
    for spec in _specs(text):
        assert not [f for f in _fields(spec) if f.startswith(absolute)], _fields(spec)
    # the page says how to get the user's numbers, and how far the law is from the run
    assert "target.baseline_lr" in visible and "target.baseline_steps" in visible
    assert html.escape(summary["law"]["regime_distance"]) in visible
    assert visible.count(html.escape(summary["law"]["regime_distance"])) == 1


def test_with_a_baseline_the_page_shows_the_users_numbers(baseline_out: Path) -> None:
    summary, best, runner = _best_and_runner(baseline_out)
    assert summary["law"]["baseline_lr"] == BASELINE_LR
    text = (baseline_out / "report.html").read_text()
    m = best["lr_multiplier"]
    # "0.593 × your 1e-06 = 5.93e-07": the user's learning rate times the multiplier
    formula = f"{m:.3g} × your {BASELINE_LR:.3g} = {m * BASELINE_LR:.3g}"
    assert re.fullmatch(r"0\.\d+ × your 1e-06 = \d\.\d+e-07", formula), formula
    assert html.escape(formula) in text
    assert float(_metric(text, "learning rate")) == pytest.approx(m * BASELINE_LR, rel=1e-12)
    assert float(_metric(text, "learning rate")) == best["learning_rate"]
    # time to target = baseline steps x steps multiplier x step time, in hours
    hours = BASELINE_STEPS * best["learner_steps_multiplier"] * best["step_time_s"] / 3600
    assert float(_metric(text, "time to target")) == pytest.approx(hours, rel=1e-9)
    # whole steps: a run cannot take a fraction of one
    assert float(_metric(text, "learner steps to target")) == math.ceil(
        BASELINE_STEPS * best["learner_steps_multiplier"]
    )
    assert float(_metric(text, "cost to target")) == best["cost_to_target_usd"]
    assert f"{BASELINE_STEPS:,} × {best['learner_steps_multiplier']:.3g} = " in text
    header, rows = _table_after(text, "Ranked candidates")
    assert header[:3] == ["#", "time (h)", "cost (USD)"]
    assert rows[0][1] == format_number(best["time_to_target_s"] / 3600)
    assert rows[1][1] == format_number(runner["time_to_target_s"] / 3600)
    assert "target.baseline_lr" not in _visible_text(text).split("Inputs")[0]


def test_the_decision_leads_the_page(plan_out: Path) -> None:
    summary = json.loads((plan_out / "plan.json").read_text())
    decision = summary["decision"]
    text = (plan_out / "report.html").read_text()
    visible = _visible_text(text)
    headings = re.findall(r"<h2>(.*?)</h2>", visible)
    assert headings[:3] == ["Decision", "The law and your run", "Recommendation"]
    verdict = decision["verdict"]
    assert html.escape(verdict[:1].upper() + verdict[1:]) in visible
    header, rows = _table_after(text, "Decision")
    assert header == ["decision", "answer", "how sure", "why"]
    names = [item["name"] for item in decision["items"]]
    assert [r[0] for r in rows] == [
        "learning rate" if n == "learning-rate multiplier" else n for n in names
    ]
    for item, row in zip(decision["items"], rows, strict=True):
        if item["name"] == "learning-rate multiplier":
            assert row[1] == f"{item['value']:.3g}×"
            for reading, value in item["under_readings"].items():
                assert f"{reading} {value:.3g}×" in row[2]
            agree = "readings agree" if item["same_under_all"] else "readings differ"
            assert row[2].startswith(f"{agree}: ")
        else:
            assert row[1] == item["value"]
            assert (row[2] == "same under every reading") == item["same_under_all"]
        if item.get("why"):
            assert row[3] == item["why"].replace("`", "")


def test_the_ranking_under_each_reading(plan_out: Path) -> None:
    summary = json.loads((plan_out / "plan.json").read_text())
    table = pl.read_parquet(plan_out / "candidates.parquet")
    text = (plan_out / "report.html").read_text()
    names = list(summary["law"]["readings"])
    assert names[0] == summary["law"]["reading"] == "conservative"
    uncertainty = _specs(text)[2]
    markers = [row for rows in uncertainty["datasets"].values() for row in rows if "reading" in row]
    by_row: dict[str, dict[str, float]] = {}
    for row in markers:
        by_row.setdefault(row["row"], {})[row["reading"]] = row["time"]
    # one marker per reading for every setup, and labels that tell the setups apart
    assert all(set(v) == set(names) for v in by_row.values())
    shown = table.filter(pl.col("rank").is_between(1, 12))
    assert len(by_row) >= shown.height
    # without their rank the labels still differ (short enough not to be cut)
    assert len({label.split(" ", 1)[1] for label in by_row}) == len(by_row)
    assert max(len(label) for label in by_row) < 60
    for row in shown.iter_rows(named=True):
        label = next(k for k in by_row if k.startswith(f"#{row['rank']} "))
        assert by_row[label]["conservative"] == pytest.approx(row["time_to_target_rel"])
        for reading in names[1:]:
            assert by_row[label][reading] == pytest.approx(row[f"time_to_target_rel_{reading}"])
    # the ranked table puts time, cost and learning rate first, with readable names
    header, rows = _table_after(text, "Ranked candidates")
    assert header[:5] == ["#", "time (× sync)", "cost (× sync)", "LR ×", "steps ×"]
    assert [f"# {r}" for r in names[1:]] == header[5 : 5 + len(names) - 1]
    assert not [h for h in header if "_" in h]
    best = table.filter(pl.col("rank") == 1).row(0, named=True)
    assert rows[0][:4] == [
        "1",
        format_number(best["time_to_target_rel"]),
        format_number(best["cost_to_target_rel"]),
        format_number(best["lr_multiplier"]),
    ]


def test_short_labels_tell_setups_apart() -> None:
    row = {
        "candidate_id": "aaaaaaaaaaaa",
        "total_gpus": 8,
        "gpu": "H100",
        "rollout_engines": 4,
        "rollout_tp": 1,
        "learner_gpus": 4,
        "mode": "async",
        "max_staleness": 2,
        "inflight_updates": True,
        "streaming": False,
        "prompts_per_step": 128,
        "group_size": 8,
        "minibatches_per_step": 2,
    }
    assert short_setup(row) == "8×H100 4×TP1+4 async≤2+inflight 128×8/2"
    colocated = row | {"mode": "sync_colocated", "inflight_updates": False}
    assert short_setup(colocated) == "8×H100 4×TP1+shared sync_colocated 128×8/2"
    # two setups the short form cannot tell apart get their ids
    twin = row | {"candidate_id": "bbbbbbbbbbbb"}
    other = row | {"candidate_id": "cccccccccccc", "max_staleness": 4}
    labels = distinct_labels(pl.DataFrame([row, twin, other]))
    assert labels == [
        "8×H100 4×TP1+4 async≤2+inflight 128×8/2 [aaaaaa]",
        "8×H100 4×TP1+4 async≤2+inflight 128×8/2 [bbbbbb]",
        "8×H100 4×TP1+4 async≤4+inflight 128×8/2",
    ]


def test_the_page_is_rendered_from_the_files_alone(plan_out: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("plan.json", "candidates.parquet"):
        shutil.copy(plan_out / name, copy / name)
    page = build_plan_page(copy)
    assert page.chart_count == 3  # frontier, trade-off, uncertainty
    assert page.html() == build_plan_page(plan_out).html()


def test_a_missing_file_or_column_is_a_one_line_error(plan_out: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"plan\.json: no such file"):
        build_plan_page(tmp_path)
    # a plan from before the law was applied as multipliers names what it lacks
    shutil.copy(plan_out / "plan.json", tmp_path / "plan.json")
    old = pl.read_parquet(plan_out / "candidates.parquet").drop("lr_multiplier")
    old.write_parquet(tmp_path / "candidates.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) lr_multiplier"):
        build_plan_page(tmp_path)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("which", ["plan_out", "baseline_out"])
def test_the_page_draws_offline_without_console_messages(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    out = request.getfixturevalue(which)
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
        (out / "report.html").resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    charts = build_plan_page(out).chart_count
    assert len(re.findall(r'data-rendered="1"', dom)) == charts
    assert 'data-rendered="error"' not in dom
    assert len(re.findall(r'<svg[^>]*class="marks"', dom)) == charts
    # console.log/warn/error and uncaught exceptions all reach stderr as CONSOLE lines
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    axis = "time to target (h)" if which == "baseline_out" else "time to target (× sync)"
    assert axis in dom and "staleness bound" in dom


def test_report_plan_rerenders_a_finished_plan_and_refuses_a_mixed_one(
    plan_out: Path, tmp_path: Path
) -> None:
    from click.testing import CliRunner
    from stalesim.cli import main
    from stalesim.common.output_dir import require_complete

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
