"""The validation page renders offline from a small sweep folder and shows the fitted numbers."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from stalesim.cli import main
from stalesim.sim.law.model import law_curve, load_law

OPT = {"eta0": 2e-3, "s_c": 3.0, "k": 2.0, "alpha": 1.0}
STEPS = 12


def write_sweep(folder, distributions: bool = True):
    """A small sweep: 5 staleness values × 6 learning rates × 2 seeds (+2 distributions), with
    per-step rewards that rise faster the closer the learning rate is to eta_opt(S)."""
    rng = np.random.default_rng(0)
    groups = [(f"fixed:{s}", "fixed", s, float(s)) for s in (0, 1, 4, 8, 16)]
    if distributions:
        groups += [
            ("uniform:0-8", "distribution", 8, 4.0),
            ("uniform:0-16", "distribution", 16, 8.0),
        ]
    runs, steps = [], []
    for spec, kind, top, mean in groups:
        eta_opt = float(law_curve(mean, **OPT))
        for lr in np.geomspace(2.5e-4, 8e-3, 6):
            for seed in range(2):
                run_id = f"{spec}|{lr:.3g}|{seed}"
                distance = np.log(lr / eta_opt)
                collapsed = bool(lr > 4 * eta_opt)
                rate = 0.4 * np.exp(-(distance**2))
                reward = 0.3 + 0.6 * (1 - np.exp(-rate * np.arange(STEPS)))
                reward += rng.normal(0, 0.01, STEPS)
                done = STEPS // 2 if collapsed else STEPS
                reached = np.flatnonzero(reward[:done] >= 0.7)
                runs.append(
                    {
                        "run_id": run_id,
                        "lr": float(lr),
                        "staleness": top,
                        "staleness_kind": kind,
                        "staleness_spec": spec,
                        "staleness_mean": mean,
                        "staleness_max": float(top),
                        "staleness_token_mean": mean * 1.01,
                        "seed": seed,
                        "final_reward": float(reward[done - 1]),
                        "reward_auc": float(reward[:done].mean()) - 0.3 * collapsed,
                        "steps_to_target": float(reached[0]) if reached.size else None,
                        "target_reward": 0.7,
                        "collapsed": collapsed,
                        "collapse_step": done if collapsed else None,
                        "preset": "test-small",
                    }
                )
                steps.append(
                    pl.DataFrame(
                        {"run_id": run_id, "step": np.arange(done), "reward_mean": reward[:done]}
                    )
                )
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(runs).write_parquet(folder / "runs.parquet")
    pl.concat(steps).write_parquet(folder / "steps.parquet")
    return folder


def chart_specs(html: str) -> list[dict]:
    match = re.search(
        r'<script type="application/json" id="chart-specs">(.*?)</script>', html, re.S
    )
    assert match, "the page embeds its chart specs"
    return json.loads(match.group(1).replace("\\u003c", "<"))


def metric_value(html: str, label: str) -> float:
    match = re.search(rf'data-label="{re.escape(label)}" data-value="([^"]*)"', html)
    assert match, label
    return float(match.group(1))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    from stalesim.reports.validate_page import render_validate_report
    from stalesim.validate.law.fit import FitSettings, fit_runs_dir

    folder = write_sweep(tmp_path_factory.mktemp("sweep"))
    fit_runs_dir(folder, settings=FitSettings(bootstrap=30), command="test")
    path = render_validate_report(folder, None)
    return folder, path, path.read_text()


def test_page_is_offline_and_holds_every_chart(rendered):
    folder, path, html = rendered
    assert path == folder / "report.html"
    assert not re.search(r"<script[^>]+src=", html, re.I), "no external scripts"
    assert not re.search(r"""(src|href)=["']https?://""", html, re.I)
    assert "vegaEmbed" in html
    specs = chart_specs(html)
    # law, alpha, objective, reward curves, steps at eta_opt, 2 heat maps, summaries
    assert len(specs) == 8
    text = json.dumps(specs)
    for title in (
        "staleness S (versions)",
        "learner step",
        "median steps to target",
        "failed fraction",
        "RMS ln(measured / predicted eta_opt)",
    ):
        assert title in text, title


def test_page_shows_the_numbers_of_law_json(rendered):
    folder, _, html = rendered
    law = load_law(folder / "law.json")
    point0 = next(p for p in law.points if p["staleness"] == 0)
    assert metric_value(html, "eta_opt at S=0") == pytest.approx(point0["eta_opt"])
    assert metric_value(html, "alpha (eta_opt)") == pytest.approx(law.eta_opt.alpha)
    assert metric_value(html, "alpha, paper") == 1.0
    # the law chart's estimate layer carries exactly the per-S points of law.json
    law_spec = chart_specs(html)[0]
    datasets = law_spec["datasets"].values()
    estimates = next(d for d in datasets if d and "flag" in d[0])
    opt = sorted((r["S"], r["eta"]) for r in estimates if r["quantity"] == "eta_opt")
    expected = sorted((p["staleness"], p["eta_opt"]) for p in law.points)
    assert [s for s, _ in opt] == [s for s, _ in expected]
    assert [e for _, e in opt] == pytest.approx([e for _, e in expected])
    # reward curves: seeds averaged, so one line per (staleness group, lr)
    curves = next(d for d in chart_specs(html)[3]["datasets"].values() if d and "reward" in d[0])
    assert len({(r["group"], r["lr"]) for r in curves}) == 7 * 6


def test_page_without_law_json_fits_in_memory(tmp_path):
    folder = write_sweep(tmp_path / "sweep", distributions=False)
    out = tmp_path / "page.html"
    result = CliRunner().invoke(main, ["report", "validate", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "fitted the law itself" in html
    assert not (folder / "law.json").exists()
    assert "Not compared: no distribution runs in the sweep" in html


def test_report_and_fit_commands(tmp_path):
    folder = write_sweep(tmp_path / "sweep")
    runner = CliRunner()
    fitted = runner.invoke(main, ["fit", str(folder), "--bootstrap", "20", "--quiet"])
    assert fitted.exit_code == 0, fitted.output
    assert "eta_opt" in fitted.output and "law.json" in fitted.output
    page = runner.invoke(main, ["report", "validate", str(folder)])
    assert page.exit_code == 0, page.output
    assert (folder / "report.html").exists()
    bad = runner.invoke(main, ["report", "validate", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "error:" in bad.output
    # a law fitted to fewer runs than the folder holds is flagged as out of date
    law = json.loads((folder / "law.json").read_text())
    law["source"]["n_runs"] -= 1
    (folder / "law.json").write_text(json.dumps(law))
    assert runner.invoke(main, ["report", "validate", str(folder)]).exit_code == 0
    assert "run `stalesim fit` again" in (folder / "report.html").read_text().replace(
        "<code>", "`"
    ).replace("</code>", "`")
    (folder / "law.json").write_text("{}")
    broken = runner.invoke(main, ["report", "validate", str(folder)])
    assert broken.exit_code == 2
    assert "malformed law" in broken.output and "Traceback" not in broken.output


def test_page_function_needs_a_law(tmp_path):
    from stalesim.reports.validate_page import render_validate_report

    folder = write_sweep(tmp_path / "sweep", distributions=False)
    with pytest.raises(ValueError, match=r"law\.json: no such file \(run `stalesim fit"):
        render_validate_report(folder)
