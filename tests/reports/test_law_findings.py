"""The findings page reads each experiment's law.json and turns intervals into verdicts."""

from __future__ import annotations

import json
from pathlib import Path

from stalesim.reports.law_findings import compare_drops, findings
from stalesim.reports.validate_page import render_findings_report
from stalesim.sim.law.model import Law

CURVE = {"eta0": 1e-3, "s_c": 4.0, "k": 1.0, "alpha": 1.0}
BANDS = {"one_over_s": [-1.3, -0.7], "flat": [-0.3, 0.3], "flat_ratio": [0.8, 1.25]}


def _law(
    ratio: tuple[float, float, float],
    late: tuple[float, float, float] | None = None,
    steps: int = 160,
) -> dict:
    slope = None
    if late is not None:
        verdict = "one_over_s" if late[1] <= -1 <= late[2] and late[2] < 0 else "flat"
        slope = {
            "from": 8.0,
            "to": 32.0,
            "n_points": 2,
            "slope": late[0],
            "lo": late[1],
            "hi": late[2],
            "n_replicates": 100,
            "verdict": verdict,
        }
    drop = {"from": 0.0, "to": 28.8, "ratio": ratio[0], "lo": ratio[1], "hi": ratio[2]}
    block = {"local": [], "early": None, "late": slope, "drop_from_zero": drop}
    # as a fit records the simulated coverage of its own design's intervals
    coverage = {"n_sim": 200, "coverage": {"eta_opt": 0.95, "slope": 0.95, "ratio": 0.95}}
    return Law.model_validate(
        {
            "eta_opt": CURVE,
            "slopes": {"eta_opt": block, "eta_max": block, "interval_coverage": coverage},
            "regime": {"steps": steps, "prompts_per_step": 16, "samples_per_prompt": 8},
            "points": [
                {
                    "staleness": 0,
                    "staleness_realised": 0.0,
                    "eta_opt": 1e-3,
                    "eta_opt_lo": 9e-4,
                    "eta_opt_hi": 1.1e-3,
                    "eta_opt_flag": "ok",
                    "eta_max": 3e-3,
                    "eta_max_lo": 2.5e-3,
                    "eta_max_hi": 3.5e-3,
                    "eta_max_flag": "ok",
                },
            ],
        }
    ).to_json_dict()


def _write(root: Path, rel: str, law: dict) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(law))


def test_verdicts_from_constructed_laws(tmp_path: Path) -> None:
    _write(tmp_path, "law-objective/clip/law.json", _law((0.5, 0.4, 0.6), late=(-1.0, -1.3, -0.7)))
    # decoupled falls just as far: the clipping explanation gets no support
    _write(tmp_path, "law-objective/decoupled/law.json", _law((0.55, 0.45, 0.65)))
    # the small batch falls further, intervals apart: S_c grows with batch size
    _write(tmp_path, "law-batch/b4/law.json", _law((0.2, 0.15, 0.3)))
    # SGD falls less than Adam: the prediction is refuted
    _write(tmp_path, "law-optimizer/sgd/law.json", _law((0.9, 0.8, 1.0)))
    # a tighter clip holds eta up better than the default one: supports the trust region
    _write(tmp_path, "law-objective/clip-tight/law.json", _law((0.8, 0.7, 0.9)))
    # the larger batch falls less than 16 prompts, intervals apart
    _write(tmp_path, "law-batch/b32/law.json", _law((0.9, 0.85, 0.95)))
    # the non-saturating task at 64 prompts per step falls less by S_max than at 16
    _write(tmp_path, "law-batch-ns/b64/law.json", _law((0.6, 0.5, 0.7)))
    _write(tmp_path, "law-knee/confirm/law.json", _law((0.3, 0.25, 0.4)))
    # the same 64 groups in 4 mini-batches fall further than in one, intervals apart
    _write(tmp_path, "law-batch-ns/b64-mb4/law.json", _law((0.2, 0.15, 0.3)))
    # the non-saturating task's two horizons: eta(0) the same at both (a T-independent eta0)
    _write(tmp_path, "law-horizon/non-saturating/law-h60.json", _law((0.5, 0.4, 0.6), steps=60))
    _write(tmp_path, "law-horizon/non-saturating/law-h300.json", _law((0.5, 0.4, 0.6), steps=300))
    rows = {(r.experiment, r.prediction): r for r in findings(tmp_path)}
    by_experiment = {}
    for (experiment, _), row in rows.items():
        by_experiment.setdefault(experiment, []).append(row)
    late = [
        r
        for r in by_experiment["objective: clipped PPO"]
        if r.prediction.startswith("eta_opt ∝ 1/S beyond the knee")
    ]
    assert late[0].verdict == "confirms ∝1/S"
    assert "-1.00 [-1.30, -0.70]" in late[0].measured
    assert by_experiment["objective: decoupled vs clipped"][0].verdict.startswith("inconclusive")
    assert by_experiment["batch: 4 vs 16 prompts/step"][0].verdict == "confirms"
    assert by_experiment["batch: 96 vs 16 prompts/step"][0].measured == "not run"
    assert by_experiment["optimizer: SGD vs Adam β1=0.9"][0].verdict == "refutes"
    assert by_experiment["horizon (saturating task): 60 vs 160 steps"][0].measured == "not run"
    tight = by_experiment["objective: clipped vs tight clip"]
    assert [r.verdict for r in tight] == [
        "supports the clipping explanation",
        # eta_max's intervals have no simulated coverage: the same reading is withheld
        "inconclusive (would read 'supports the clipping explanation' on an interval of "
        "unchecked coverage)",
    ]
    assert "0.50 [0.40, 0.60] vs 0.80 [0.70, 0.90]" in tight[0].measured
    assert by_experiment["batch: 32 vs 16 prompts/step"][0].verdict == "confirms"
    assert by_experiment["batch: 8 vs 16 prompts/step"][0].measured == "not run"
    mb4 = by_experiment["batch: 64 prompts/step in 4 mini-batches vs in 1, the non-saturating task"]
    assert (
        mb4[0].verdict == "confirms" and "0.20 [0.15, 0.30] vs 0.60 [0.50, 0.70]" in mb4[0].measured
    )
    ns = by_experiment["batch: 64 vs 16 prompts/step, the non-saturating task's setup"][0]
    assert ns.verdict == "confirms" and "0.60 [0.50, 0.70] vs 0.30 [0.25, 0.40]" in ns.measured
    horizon = by_experiment["horizon (non-saturating task): 60 vs 300 steps (same runs)"]
    # eta_max(0) is 3e-3 at both horizons: ratio 1 [0.71, 1.4] against the predicted 5
    assert horizon[0].prediction == "eta_max(0) ∝ 1/T: ratio 5.00, within [4.00, 6.25]"
    assert "ratio 1.00 (interval from the ends [0.71, 1.40])" in horizon[0].measured
    # eta_max's interval has no simulated coverage, so the refutation is withheld
    assert horizon[0].verdict == (
        "inconclusive (would read 'refutes (moves less than 1/T)' on an interval of unchecked "
        "coverage)"
    )
    assert horizon[0].coverage.startswith("not simulated")
    page = render_findings_report(tmp_path)
    html = page.read_text()
    assert "confirms ∝1/S" in html and "not run" in html


def test_compare_drops_reads_interval_overlap() -> None:
    a = Law.model_validate(_law((0.3, 0.2, 0.4)))
    b = Law.model_validate(_law((0.6, 0.5, 0.7)))
    assert compare_drops(a, b, "eta_opt", a_should_drop_more=True)[1] == "confirms"
    assert compare_drops(a, b, "eta_opt", a_should_drop_more=False)[1] == "refutes"
    c = Law.model_validate(_law((0.35, 0.25, 0.55)))
    assert compare_drops(c, b, "eta_opt", True)[1].startswith("inconclusive")


def test_two_point_slope_and_a_bound_below_the_grid() -> None:
    from stalesim.reports.law_findings import _point_slope

    def point(s: int, lag: float, eta: float, lo: float, hi: float, flag: str = "ok") -> dict:
        return {"staleness": s, "staleness_realised": lag, "eta_max": eta, "eta_max_lo": lo,
                "eta_max_hi": hi, "eta_max_flag": flag}  # fmt: skip

    law = Law.model_validate(
        {
            "eta_opt": CURVE,
            "slopes": {"bands": BANDS},
            "points": [
                point(2, 2.0, 2e-3, 1.8e-3, 2.2e-3),
                point(8, 8.0, 5e-4, 4.5e-4, 5.5e-4),
                point(32, 32.0, 1e-4, 1e-4, 1e-4, "below_grid"),
            ],
        }
    )
    text, verdict = _point_slope(law, "eta_max", 2, 8)
    # ln(1/4) / ln(4) = -1 exactly; the ends: ln(4.5e-4/2.2e-3)/ln 4 and ln(5.5e-4/1.8e-3)/ln 4
    assert "= -1.00 [-1.14, -0.86]" in text and verdict == "confirms ∝1/S"
    text, verdict = _point_slope(law, "eta_max", 8, 32)
    # below 1e-4 from at least 4.5e-4: slope < ln(1e-4/4.5e-4)/ln 4 = -1.08
    assert "slope < -1.08" in text and verdict == "confirms ∝1/S or steeper"


def _pair(a: float, b: float, slope: float, lo: float, hi: float, verdict: str) -> dict:
    return {"from": a, "to": b, "n_points": 2, "slope": slope, "lo": lo, "hi": hi,
            "n_replicates": 3, "verdict": verdict}  # fmt: skip


def test_a_verdict_stands_only_where_every_score_agrees(tmp_path: Path) -> None:
    points = [
        {"staleness": s, "staleness_realised": float(s), "eta_opt": 1e-3 / max(s, 1),
         "eta_opt_lo": 8e-4 / max(s, 1), "eta_opt_hi": 1.2e-3 / max(s, 1), "eta_opt_flag": "ok",
         "no_rate_reaches": s == 16, "n_no_progress": 6 if s == 16 else 0, "n_unstable": 1,
         "n_runs": 15}
        for s in (0, 2, 8, 16)
    ]  # fmt: skip
    agree = _pair(2.0, 8.0, -1.0, -1.2, -0.8, "one_over_s")
    differ = _pair(8.0, 16.0, -1.0, -1.2, -0.8, "one_over_s")

    def entry(label: str, horizon: int, pairs: list[dict]) -> dict:
        return {"score": label, "score_label": label, "horizon": horizon,
                "points": points, "pairs": pairs}  # fmt: skip

    law = {
        "eta_opt": CURVE,
        "regime": {"steps": 300},
        "points": points,
        "slopes": {
            "bands": BANDS,
            "eta_opt": {"pairs": [agree, differ]},
            "interval_coverage": {"coverage": {"slope": 0.94, "ratio": 0.95}, "n_sim": 200},
            "by_score": {
                "AUC@300": entry("AUC", 300, [agree, differ]),
                "speed@300": entry(
                    "speed", 300, [agree, _pair(8.0, 16.0, -0.1, -0.4, 0.2, "inconclusive")]
                ),
            },
        },
    }
    _write(
        tmp_path, "law-horizon/non-saturating/law-h300.json", Law.model_validate(law).to_json_dict()
    )
    rows = {r.prediction: r for r in findings(tmp_path)}
    two_eight = rows["eta_opt ∝ 1/S beyond the knee (S 2→8)"]
    assert two_eight.verdict == "confirms ∝1/S"
    assert "the same under all 2 scores" in two_eight.measured
    assert two_eight.coverage.startswith("94%")
    eight_sixteen = rows["eta_opt ∝ 1/S beyond the knee (S 8→16)"]
    assert eight_sixteen.verdict.startswith("inconclusive (score-dependent")
    assert "speed @ 300: -0.10 [-0.40, 0.20] inconclusive" in eight_sixteen.measured
    progress = [r for r in rows.values() if r.experiment.endswith(": progress")]
    assert len(progress) == 1 and "S=[16]" in progress[0].measured
    assert progress[0].verdict.startswith("no rate reaches the target")


def _at_zero(law: dict, eta: float, lo: float, hi: float) -> Law:
    law["points"][0].update(eta_opt=eta, eta_opt_lo=lo, eta_opt_hi=hi)
    return Law.model_validate(law)


def test_a_horizon_ratio_confirms_only_inside_its_band_around_the_prediction() -> None:
    from stalesim.reports.law_findings import _horizon_rows

    long_ = _at_zero(_law((0.5, 0.4, 0.6), steps=160), 1e-3, 0.98e-3, 1.02e-3)
    # eta_opt(0) 2.6x higher at 60 steps against the predicted 160/60 = 2.67; the ratio's
    # interval [2.35, 2.96] lies inside [2.13, 3.33]: confirmed
    tight = _at_zero(_law((0.5, 0.4, 0.6), steps=60), 2.6e-3, 2.4e-3, 2.9e-3)
    rows = _horizon_rows(tight, long_, "t")
    assert [r.verdict for r in rows if r.prediction.startswith("eta_opt(0)")] == ["confirms"]
    # the same estimate with an interval that holds 2.67 but reaches far beyond the band:
    # containing the prediction is not confirming it
    wide = _at_zero(_law((0.5, 0.4, 0.6), steps=60), 2.6e-3, 0.5e-3, 8e-3)
    rows = _horizon_rows(wide, long_, "t")
    assert [r.verdict for r in rows if r.prediction.startswith("eta_opt(0)")] == ["inconclusive"]
