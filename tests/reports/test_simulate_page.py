"""The simulate page: numbers equal the summary's, charts hold the trace, long traces stay small."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from html.parser import HTMLParser

import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.reports.page import vega_javascript
from stalesim.reports.simulate_page import (
    QUEUE_BINS,
    UTILISATION_BINS,
    build_simulate_page,
    learner_phases,
    phase_means,
    write_simulate_report,
)
from stalesim.reports.timeline import bin_intervals


class Metrics(HTMLParser):
    """label -> (data-value, shown text) of every headline card."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, tuple[str, str]] = {}
        self._label: str | None = None
        self._value = ""
        self._in_value = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "data-label" in attrs:
            self._label, self._value = attrs["data-label"], attrs["data-value"]
        if attrs.get("class") == "metric-value":
            self._in_value, self._shown = True, ""

    def handle_endtag(self, tag):
        if self._in_value and tag == "div":
            self.cards[self._label] = (self._value, self._shown)
            self._in_value = False

    def handle_data(self, data):
        if self._in_value:
            self._shown += data


def metric_cards(html: str) -> dict[str, tuple[str, str]]:
    parser = Metrics()
    parser.feed(html)
    return parser.cards


def chart_specs(html: str) -> list[dict]:
    match = re.search(
        r'<script type="application/json" id="chart-specs">(.*?)</script>', html, re.S
    )
    return json.loads(match.group(1))


def datasets(spec: dict) -> list[list[dict]]:
    return list(spec.get("datasets", {}).values())


def test_headline_numbers_equal_the_summary(sim_out):
    summary = json.loads((sim_out / "summary.json").read_text())
    cards = metric_cards(write_simulate_report(sim_out).read_text())
    expected = {
        "samples/s": summary["throughput"]["samples_per_s"],
        "tokens/s": summary["throughput"]["tokens_per_s"],
        "learner steps/h": summary["throughput"]["steps_per_h"],
        "step time mean": summary["step_time_s"]["mean"],
        "step time p50": summary["step_time_s"]["p50"],
        "step time p99": summary["step_time_s"]["p99"],
        "rollout utilisation": summary["utilisation"]["rollout"],
        "learner utilisation": summary["utilisation"]["learner"],
        "mean queue": summary["mean_queue_groups"],
        "sample mean": summary["staleness"]["sample_quantiles"]["mean"],
        "sample p99": summary["staleness"]["sample_quantiles"]["p99"],
        "sample max": summary["staleness"]["sample_quantiles"]["max"],
        "token-weighted mean": summary["staleness"]["token_quantiles"]["mean"],
        "token-weighted p99": summary["staleness"]["token_quantiles"]["p99"],
        "token-weighted max": summary["staleness"]["token_quantiles"]["max"],
        "dropped: in_flight": summary["dropped"]["in_flight"],
        "dropped: stale": summary["dropped"]["stale"],
        "GPU-hours": summary["gpu_hours"],
        "cost": summary["cost_usd"],
        "learner steps": summary["steps"],
        "measured window": summary["measured_window_s"],
        "warm-up": summary["warmup_s"],
    }
    for label, value in expected.items():
        recorded, shown = cards[label]
        assert float(recorded) == value, label
        number = float(re.match(r"[-\d,.]+", shown).group().replace(",", ""))
        scale = 100.0 if label.endswith("utilisation") else 1.0
        assert number == pytest.approx(value * scale, rel=5e-4), (label, shown)
    assert cards["tokens/s"][1] == "123.5tokens/s"
    assert cards["rollout utilisation"][1] == "82.5%"


def test_missing_cost_shows_a_dash_not_zero(sim_out):
    summary = json.loads((sim_out / "summary.json").read_text())
    summary["cost_usd"] = None
    (sim_out / "summary.json").write_text(json.dumps(summary))
    cards = metric_cards(write_simulate_report(sim_out).read_text())
    assert cards["cost"] == ("", "—USD")


def test_charts_carry_the_histogram_utilisation_and_queue(sim_out):
    page = build_simulate_page(sim_out)
    html = page.html()
    specs = chart_specs(html)
    assert page.chart_count == len(specs) == 5

    (histogram,) = datasets(specs[0])
    shares = {(row["staleness"], row["weighting"]): row["share"] for row in histogram}
    # 4 and 2 samples; 1200 and 600 tokens; nothing at lag 2.
    assert shares[(0, "samples")] == pytest.approx(4 / 6)
    assert shares[(1, "tokens")] == pytest.approx(600 / 1800)
    assert shares[(2, "samples")] == 0.0

    rows = [row for data in datasets(specs[1]) for row in data if "utilisation" in row]
    busy = pl.DataFrame(rows)
    assert busy.height == UTILISATION_BINS * 3  # rollout decode, rollout sync, learner train
    # Averaged over the 40 s run the pools are busy 82.5% and 30% (no training in period 0).
    per_pool = busy.group_by("pool").agg(pl.col("utilisation").sum() / UTILISATION_BINS)
    assert dict(per_pool.rows()) == pytest.approx({"rollout": 0.825, "learner": 0.3})

    queue_rows = [row for data in datasets(specs[2]) for row in data if "groups_waiting" in row]
    assert [r["groups_waiting"] for r in queue_rows] == [1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 2]
    assert queue_rows[-1]["time_s"] == 40.0


def test_learner_phases_per_step(sim_out):
    """Each hand-made step waits (6 or 16 s), then trains 4 s; a weight sync that starts as a
    step ends belongs to that step, even when the next step starts at once."""
    specs = chart_specs(build_simulate_page(sim_out).html())
    rows = [row for data in datasets(specs[4]) for row in data if "phase" in row]
    seconds = {(row["step"], row["phase"]): row["seconds"] for row in rows}
    assert seconds == {
        (0, "wait"): 16.0,
        (0, "train"): 4.0,
        (1, "wait"): 6.0,
        (1, "train"): 4.0,
        (2, "wait"): 6.0,
        (2, "train"): 4.0,
    }
    busy = pl.DataFrame(
        {
            "pool": ["learner"] * 5,
            "unit": [0] * 5,
            "kind": ["reference", "update", "sync", "update", "weight_sync"],
            "start_s": [0.0, 1.0, 3.0, 3.0, 5.0],
            "end_s": [1.0, 3.0, 3.5, 5.0, 5.5],
        }
    )
    steps = pl.DataFrame(
        {"step": [0, 1], "start_s": [0.0, 3.0], "end_s": [3.0, 5.0], "idle_before_s": [0.0, 0.0]}
    )
    phases = learner_phases(busy, steps)
    assert {(r["step"], r["phase"]): r["seconds"] for r in phases.to_dicts()} == {
        (0, "wait"): 0.0,
        (0, "reference"): 1.0,
        (0, "update"): 2.0,
        (0, "weight sync"): 0.5,
        (1, "wait"): 0.0,
        (1, "update"): 2.0,
        (1, "weight sync"): 0.5,
    }
    means = phase_means(phases)
    assert means["phase"].to_list() == ["wait", "reference", "update", "weight sync"]
    assert means["mean_s_per_step"].to_list() == pytest.approx([0.0, 0.5, 2.0, 0.5])


def test_sensitivity_section_when_the_summary_has_one(sim_out):
    summary = json.loads((sim_out / "summary.json").read_text())
    summary["sensitivity"] = {
        "relative_step": 0.2,
        "steps": 10,
        "seed": 0,
        "mode": "async",
        "reference_mode": "sync",
        "step_time_s": 10.0,
        "speedup": 2.0,
        "rows": [
            {
                "key": "cluster.learner_mfu",
                "direction": direction,
                "value": 0.4,
                "moved_to": moved,
                "step_time_s": step,
                "step_time_change": step / 10.0 - 1,
                "speedup": speedup,
                "speedup_change": speedup / 2.0 - 1,
            }
            for direction, moved, step, speedup in (
                ("low", 0.32, 11.0, 1.8),
                ("high", 0.48, 9.5, 2.1),
            )
        ],
    }
    (sim_out / "summary.json").write_text(json.dumps(summary))
    html = write_simulate_report(sim_out).read_text()
    specs = chart_specs(html)
    assert len(specs) == 6
    rows = [row for data in datasets(specs[5]) for row in data if "change" in row]
    changes = {(r["direction"], r["measure"]): r["change"] for r in rows}
    assert changes == pytest.approx(
        {
            ("-20%", "step time"): 0.1,
            ("+20%", "step time"): -0.05,
            ("-20%", "speed-up"): -0.1,
            ("+20%", "speed-up"): 0.05,
        }
    )
    assert "Sensitivity to the coefficients" in html and "speed-up 2" in html


def test_scenario_table_lists_every_setting(sim_out):
    html = write_simulate_report(sim_out).read_text()
    assert '<details class="fold"><summary>Scenario</summary>' in html
    assert "<td>cluster.rollout_engines</td><td>2</td>" in html
    assert "<td>algorithm.mode</td><td>async</td>" in html
    assert "<td>tags</td><td>[&quot;a&quot;, &quot;b&quot;]</td>" in html


def test_long_traces_are_binned_and_the_page_stays_small(long_sim_out):
    busy_rows = pl.scan_parquet(long_sim_out / "busy.parquet").select(pl.len()).collect().item()
    assert busy_rows > 900_000
    html = write_simulate_report(long_sim_out).read_text()
    assert len(html.encode()) - len(vega_javascript().encode()) < 3_000_000
    specs = chart_specs(html)

    rows = [row for data in datasets(specs[1]) for row in data if "utilisation" in row]
    assert len(rows) == UTILISATION_BINS
    # Each engine is busy 0.8 s of every second and a bin holds 50 whole seconds: 80% busy.
    assert [row["utilisation"] for row in rows] == pytest.approx([0.8] * UTILISATION_BINS, abs=1e-9)

    queue = [row for data in datasets(specs[2]) for row in data if "value" in row]
    assert len(queue) == QUEUE_BINS
    # The saw-tooth 0..9 has mean 4.5 over each whole second, and a bin holds 15 of them.
    assert [row["value"] for row in queue] == pytest.approx([4.5] * QUEUE_BINS, abs=1e-6)
    assert {(row["low"], row["high"]) for row in queue} == {(0.0, 9.0)}


def test_missing_and_corrupt_files_name_the_file(sim_out):
    (sim_out / "queue.parquet").unlink()
    with pytest.raises(ValueError, match=r"queue\.parquet: no such file"):
        write_simulate_report(sim_out)
    (sim_out / "queue.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"queue\.parquet: not a readable Parquet file"):
        write_simulate_report(sim_out)
    pl.DataFrame({"time_s": [0.0]}).write_parquet(sim_out / "queue.parquet")
    with pytest.raises(ValueError, match=r"queue\.parquet: missing column\(s\) groups_waiting"):
        write_simulate_report(sim_out)
    (sim_out / "summary.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"summary\.json: not valid JSON"):
        write_simulate_report(sim_out)


def test_cli_rerenders_and_reports_bad_input_on_one_line(sim_out, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["report", "simulate", str(sim_out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {sim_out / 'report.html'}"
    assert (sim_out / "report.html").stat().st_size > len(vega_javascript())

    (sim_out / "busy.parquet").unlink()
    result = runner.invoke(main, ["report", "simulate", str(sim_out)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert result.output.startswith("error: ") and "busy.parquet: no such file" in result.output

    result = runner.invoke(main, ["report", "simulate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "nowhere: no such directory" in result.output


def test_report_help_imports_no_heavy_libraries():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from stalesim.cli import main\n"
        "result = CliRunner().invoke(main, ['report', '--help'])\n"
        "assert result.exit_code == 0 and 'simulate' in result.output and 'validate' in result.output\n"
        "print(sorted(m for m in ('altair', 'polars', 'torch', 'vl_convert') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_real_simulate_output_renders_the_summary_and_its_trace(real_sim_out):
    summary = json.loads((real_sim_out / "summary.json").read_text())
    html = (real_sim_out / "report.html").read_text()  # written by `stalesim simulate` itself
    cards = metric_cards(html)
    assert float(cards["tokens/s"][0]) == summary["throughput"]["tokens_per_s"]
    assert float(cards["step time p99"][0]) == summary["step_time_s"]["p99"]
    assert float(cards["rollout utilisation"][0]) == summary["utilisation"]["rollout"]
    assert float(cards["sample max"][0]) == summary["staleness"]["sample_quantiles"]["max"]

    specs = chart_specs(html)
    (histogram,) = datasets(specs[0])
    samples = {r["staleness"]: r["count"] for r in histogram if r["weighting"] == "samples"}
    assert samples == {r["staleness"]: r["samples"] for r in summary["staleness"]["histogram"]}

    # The simulator's rollout utilisation is decode time inside the measured window over
    # engines x window; the page's binning must find the same busy seconds.
    busy = pl.read_parquet(real_sim_out / "busy.parquet").filter(
        (pl.col("pool") == "rollout") & (pl.col("kind") == "decode")
    )
    start = summary["warmup_s"]
    end = start + summary["measured_window_s"]

    def busy_seconds_before(t: float) -> float:
        return bin_intervals(busy, t_end=t, bins=1)["value"][0] * t

    engines = summary["scenario"]["cluster"]["rollout_engines"]
    window_busy = busy_seconds_before(end) - busy_seconds_before(start)
    assert window_busy / (engines * (end - start)) == pytest.approx(
        summary["utilisation"]["rollout"], rel=1e-9
    )
    rows = [r for data in datasets(specs[1]) for r in data if r.get("kind") == "decode"]
    t_end = rows[-1]["bin_end_s"]
    chart_busy = sum(r["utilisation"] * (r["bin_end_s"] - r["bin_start_s"]) for r in rows)
    assert chart_busy * engines == pytest.approx(busy_seconds_before(t_end), rel=1e-9)


@pytest.fixture(scope="module")
def baseline_sim_out(tmp_path_factory: pytest.TempPathFactory):
    """The default scenario with the user's on-policy baseline (learning rate and steps)."""
    out_dir = tmp_path_factory.mktemp("baseline") / "run"
    args = ["simulate", "--steps", "12", "--seed", "3", "--out", str(out_dir), "--quiet"]
    args += ["--set", "target.baseline_lr=1e-6", "--set", "target.baseline_steps=400"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out_dir


def _visible(html: str) -> str:
    return re.sub(r"<script.*?</script>", "", html, flags=re.S)


def test_the_law_shows_ratios_without_a_baseline(real_sim_out):
    from html import escape

    from stalesim.reports.page import format_number
    from stalesim.sim.law.readings import readings

    law = json.loads((real_sim_out / "summary.json").read_text())["law"]
    assert law["baseline_lr"] is None and law["baseline_steps"] is None
    html = (real_sim_out / "report.html").read_text()
    cards = metric_cards(html)
    assert float(cards["LR multiplier"][0]) == law["lr_multiplier"]
    assert float(cards["steps multiplier"][0]) == law["steps_multiplier"]
    assert float(cards["time to target vs sync"][0]) == law["time_to_target_rel"]
    # no absolute learning rate, steps or hours of the small model the law was measured on
    assert not {"learning rate", "learner steps to target", "time to target"} & set(cards)
    toy_lr = float(readings()[0].law.eta_opt_at(law["staleness"]))
    assert f"{toy_lr:.3g}" not in html and format_number(toy_lr) not in html
    visible = _visible(html)
    assert "target.baseline_lr" in visible
    assert escape(law["regime_distance"]) in visible
    # every reading side by side, the primary first
    table = visible[visible.index("<th>reading</th>") :]
    rows = re.findall(r"<tr>(.*?)</tr>", table[: table.index("</table>")].split("<tbody>")[1])
    names = list(law["readings"])
    assert len(rows) == len(names) == 3
    for name, row in zip(names, rows, strict=True):
        cells = re.findall(r"<td(?:\s[^>]*)?>(.*?)</td>", row)
        suffix = "" if name == law["reading"] else f"_{name}"
        assert cells[0].startswith(name)
        assert cells[1:4] == [
            format_number(law[f"lr_multiplier{suffix}"]),
            format_number(law[f"steps_multiplier{suffix}"]),
            format_number(law[f"time_to_target_rel{suffix}"]),
        ]


def test_the_law_shows_the_users_numbers_with_a_baseline(baseline_sim_out):
    from html import escape

    summary = json.loads((baseline_sim_out / "summary.json").read_text())
    law = summary["law"]
    html = (baseline_sim_out / "report.html").read_text()
    cards = metric_cards(html)
    m = law["lr_multiplier"]
    assert float(cards["learning rate"][0]) == pytest.approx(m * 1e-6, rel=1e-12)
    formula = f"{m:.3g} × your 1e-06 = {m * 1e-6:.3g}"
    assert re.fullmatch(r"0\.\d+ × your 1e-06 = \d\.\d+e-07", formula), formula
    assert escape(formula) in html
    # 400 x steps multiplier learner steps at the run's mean step time
    step_s = 3600.0 / summary["throughput"]["steps_per_h"]
    hours = 400 * law["learner_steps_multiplier"] * step_s / 3600
    assert float(cards["time to target"][0]) == pytest.approx(hours, rel=1e-9)
    # whole steps: a run cannot take a fraction of one
    assert float(cards["learner steps to target"][0]) == math.ceil(
        400 * law["learner_steps_multiplier"]
    )
    assert f"400 × {law['learner_steps_multiplier']:.3g} = " in html
    assert "target.baseline_lr</code>" not in _visible(html)
