"""The pre-registered knee beside its confirmation: the findings rows that read the knee probe's
prediction (``law-knee/prediction.json``, committed before any confirmation run) and the
confirmation sweep's fit (``law-knee/confirm/law.json``) as data.

The prediction file carries the test it is judged by (``test``), written before the runs:

* **the knee**: the fit's ``s_c`` (where the flat ``eta0`` and the stale-limited asymptote
  ``eta0 (S / s_c) ** -alpha`` meet: the bound's ``min`` read off the law family) with its
  bootstrap interval, against the band ``[S_c / f, f · S_c]`` around the predicted knee:
  "confirms" when the measured interval lies inside it, "refutes" when wholly outside, otherwise
  "inconclusive". A prediction that is only a lower bound has the band ``[S_c / f, ∞)``. A fit
  whose ``alpha`` sits on its bound (or holds ``s_c`` fixed) locates no knee: "inconclusive". A
  predicted knee beyond the grid's largest S is a prediction that ``eta_opt`` stays flat over
  the grid, read on the fit's ratio ``eta_opt(S_max) / eta_opt(0)`` against its flat band;
* **the stale-limited slope**: the fit's jackknife slope (coverage checked on synthetic sweeps)
  over the widest pair of S values at or beyond the predicted knee, against the band
  predicted slope ± h; the fit's own equivalence verdict (∝ 1/S, flat, ...) is shown beside it.

No file means the row says so: no prediction, runs pending, or runs not yet fitted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from stalesim.sim.law.model import Law, load_law

#: Each knee test: the probe's prediction file, the sweep that confirms it, and its label.
KNEE_TESTS = (
    (
        "law-knee/prediction.json",
        "law-knee/confirm",
        "knee: predicted before measured (non-saturating task)",
    ),
    (
        "law-task2/knee-probe/prediction.json",
        "law-task2/sweep",
        "knee: predicted before measured (exact-match addition)",
    ),
)


def _fmt(value: float | None, fmt: str = ".3g") -> str:
    return "∞" if value is None else f"{value:{fmt}}"


def band_verdict(lo: float, hi: float, band_lo: float, band_hi: float | None) -> str:
    """An interval against a pre-registered band (``band_hi`` None: unbounded above)."""
    top = float("inf") if band_hi is None else band_hi
    if band_lo <= lo and hi <= top:
        return "confirms"
    if hi < band_lo or lo > top:
        return "refutes"
    return "inconclusive"


def _grid_size(config: dict[str, Any]) -> int:
    unique = {
        (lr, s, seed)
        for g in config.get("grids", [])
        for lr in g["lrs"]
        for s in g["staleness"]
        for seed in g["seeds"]
    }
    return len(unique)


def _runs_done(folder: Path) -> int:
    import polars as pl

    path = folder / "runs.parquet"
    if not path.exists():
        return 0
    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def _prediction_text(pred: dict[str, Any], record: dict[str, Any]) -> str:
    p = pred
    lo, hi = p["s_c_interval"]
    knee = (
        f"S_c {'≥' if p.get('s_c_is_lower_bound') else '='} {p['s_c']:.3g} [{lo:.3g}, {_fmt(hi)}]"
    )
    slo, shi = p["slope_interval"]
    when = f"{record.get('date', '?')}, commit {str(record.get('commit') or '?')[:7]}"
    return (
        f"{knee}, stale-limited slope {p['slope']:.2f} [{slo:.2f}, {shi:.2f}] (probe of "
        f"{when}; R_batch {p['r_batch']:.3g}, G_upd {p['g_upd']:.3g}, eta_opt(0) {p['eta0']:.3g})"
    )


def _knee_coverage_record(folder: Path) -> dict[str, Any] | None:
    path = folder / "knee_coverage.json"
    return json.loads(path.read_text()) if path.exists() else None


def knee_calibration(folder: Path) -> float | None:
    """The factor the knee's interval is widened by for its stated level to hold
    (``knee_coverage.json``'s ``calibration``), or None where none was found."""
    record = _knee_coverage_record(folder) or {}
    return (record.get("calibration") or {}).get("factor")


def knee_coverage(folder: Path) -> str:
    """The measured coverage of the fitted knee's interval (``knee_coverage.json``, written by
    ``python -m stalesim.validate.law.knee_coverage``), or "not simulated"."""
    record = _knee_coverage_record(folder)
    if record is None:
        return "not simulated"
    if record.get("coverage") is None:
        return "not simulated (no synthetic sweep reported an interval)"
    plain = (
        f"{record['n_sim']} synthetic sweeps of this design whose true knee is the fitted one; "
        f"{record['reported_share']:.0%} reported one"
    )
    calibration = record.get("calibration") or {}
    if calibration.get("coverage") is not None:
        return (
            f"{calibration['coverage']:.0%} (s_c, calibrated: half-width on the log scale "
            f"×{calibration['factor']:.2f}, counted on {calibration['n_intervals']} fresh "
            f"sweeps; the plain interval covered {record['coverage']:.0%} of {plain})"
        )
    return f"{record['coverage']:.0%} (s_c, {plain})"


def _method(law: Law) -> str:
    """How the fit made its intervals (older fits: the seed bootstrap)."""
    return str((law.settings or {}).get("interval_method_used") or "bootstrap")


def _knee_finding(
    pred: dict[str, Any], test: dict[str, Any], law: Law, calibration: float | None = None
) -> tuple[str, str]:
    """The fitted knee against the pre-registered band; ``calibration`` widens the fitted
    interval (on the log scale, about the estimate) to its measured level first."""
    factor = float(test["knee_band_factor"])
    s_c, (_, hi_pred) = pred["s_c"], pred["s_c_interval"]
    bound = bool(pred.get("s_c_is_lower_bound"))
    grid = [p.get("staleness_realised", p["staleness"]) for p in law.points]
    s_max = max(grid) if grid else 0.0
    if s_c / factor > s_max:
        # predicted flat over the whole grid: read the fit's drop from S = 0 to S_max
        drop = ((law.slopes or {}).get("eta_opt") or {}).get("drop_from_zero") or {}
        flat = ((law.slopes or {}).get("bands") or {}).get("flat_ratio")
        if not drop or not flat or drop.get("lo") is None:
            return "the fit holds no eta_opt(S_max)/eta_opt(0) ratio", "inconclusive"
        verdict = band_verdict(drop["lo"], drop["hi"], flat[0], flat[1])
        return (
            f"predicted flat to S = {s_max:.3g}: eta_opt({s_max:.3g})/eta_opt(0) = "
            f"{drop['ratio']:.2f} [{drop['lo']:.2f}, {drop['hi']:.2f}] against the flat band "
            f"[{flat[0]:g}, {flat[1]:g}]",
            verdict,
        )
    curve = law.eta_opt
    interval = curve.intervals.get("s_c")
    text = f"fitted knee s_c = {curve.s_c:.3g}"
    if interval is None:
        return text + " (no interval)", "inconclusive"
    lo, hi = interval
    band_hi = None if bound else factor * s_c
    text += f" [{lo:.3g}, {hi:.3g}] ({_method(law)})"
    if calibration is not None and calibration > 1:
        centre, half = np.log(curve.s_c), calibration * np.log(hi / lo) / 2
        lo, hi = float(np.exp(centre - half)), float(np.exp(centre + half))
        text += f", calibrated to its level (×{calibration:.2f}): [{lo:.3g}, {hi:.3g}]"
    text += (
        f", alpha = {curve.alpha:.2f}; pre-registered band [{s_c / factor:.3g}, {_fmt(band_hi)}]"
    )
    if "s_c" in curve.fixed:
        return text + " (s_c held fixed by the fit)", "inconclusive"
    if any(n.startswith("eta_opt: alpha") and "on its bound" in n for n in law.notes):
        # a fall steeper than any power the fit allows: its s_c is where that extreme power
        # would cross eta0, not where a 1/S-like stale limit takes over
        return text + " (alpha sits on its bound: s_c is not the knee)", "inconclusive"
    if hi_pred is not None and bound:
        text += f" (predicted interval [{pred['s_c_interval'][0]:.3g}, {hi_pred:.3g}])"
    return text, band_verdict(lo, hi, s_c / factor, band_hi)


def _slope_finding(pred: dict[str, Any], test: dict[str, Any], law: Law) -> tuple[str, str, str]:
    from stalesim.reports.law_findings import VERDICT_WORDS, _coverage_text

    pairs = ((law.slopes or {}).get("eta_opt") or {}).get("pairs") or []
    beyond = [
        p for p in pairs if p.get("lo") is not None and min(p["from"], p["to"]) >= pred["s_c"]
    ]
    if not beyond:
        return (
            f"no S pair of the grid lies at or beyond the predicted knee ({pred['s_c']:.3g})",
            "inconclusive (not testable on this grid)",
            "—",
        )
    widest = max(beyond, key=lambda p: abs(p["to"] - p["from"]))
    half = float(test["slope_halfwidth"])
    verdict = band_verdict(widest["lo"], widest["hi"], pred["slope"] - half, pred["slope"] + half)
    text = (
        f"eta_opt slope over S {widest['from']:.3g}–{widest['to']:.3g} = {widest['slope']:.2f} "
        f"[{widest['lo']:.2f}, {widest['hi']:.2f}] (jackknife, {widest.get('n_replicates')} "
        f"seeds) against the pre-registered band [{pred['slope'] - half:.2f}, "
        f"{pred['slope'] + half:.2f}]; the fit's verdict: "
        f"{VERDICT_WORDS.get(widest.get('verdict', ''), widest.get('verdict'))}"
    )
    return text, verdict, _coverage_text(law, "slope")


def knee_rows(root: Path) -> list[Any]:
    """The knee rows of the findings table for the results under ``root``: per knee test, the
    prediction beside its confirmation's fit."""
    return [row for test in KNEE_TESTS for row in _test_rows(root, *test)]


def _test_rows(root: Path, prediction_file: str, confirm: str, experiment: str) -> list[Any]:
    from stalesim.reports.law_findings import Finding

    path = root / prediction_file
    if not path.exists():
        return [Finding(experiment, "the knee predicted by the probe", "no prediction", "—")]
    record = json.loads(path.read_text())
    pred, test = record["prediction"], record["test"]
    prediction = _prediction_text(pred, record)
    folder = root / confirm
    law_path = folder / "law.json"
    if not law_path.exists():
        done = _runs_done(folder)
        config = folder / "config.json"
        total = _grid_size(json.loads(config.read_text())) if config.exists() else None
        if done == 0:
            measured = "runs pending"
        else:
            measured = (
                f"{done} of {total if total is not None else '?'} runs done, not yet fitted "
                f"(stalesim fit {folder})"
            )
        return [Finding(experiment, prediction, measured, "pending", "—")]
    law = load_law(law_path)
    knee_text, knee_verdict = _knee_finding(pred, test, law, knee_calibration(folder))
    slope_text, slope_verdict, cover = _slope_finding(pred, test, law)
    return [
        Finding(
            experiment + ": the knee", prediction, knee_text, knee_verdict, knee_coverage(folder)
        ),
        Finding(
            experiment + ": the stale-limited slope",
            f"slope {pred['slope']:.2f} beyond S_c = {pred['s_c']:.3g}",
            slope_text,
            slope_verdict,
            cover,
        ),
    ]
