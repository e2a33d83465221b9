"""The paper's predictions against the law experiments: one verdict per prediction, read
from the experiments' ``law.json`` files as data.

The experiments live under one results folder (``reports/results``):

* ``law-objective/clip``, ``clip-tight`` and ``decoupled`` — clipped PPO (eps 0.2/0.28), tight
  clipping (eps 0.05) and the decoupled objective (proximal = current policy, truncated
  importance weights), 16 prompts per step;
* ``law-batch/b4`` (``b8``, ``b32``, ``b96``) — the decoupled objective with 4 (8, 32, 96)
  prompts per step;
* ``law-optimizer/sgd`` (``sgd-m0.9``, ``adam-b0``) — the decoupled objective with SGD, SGD
  with momentum 0.9, or Adam with beta1 = 0;
* ``law-horizon/law-h60.json`` and ``law-h160.json`` — the clipped sweep judged at 60 and 160
  steps (a task that saturates); ``law-horizon/non-saturating/law-h60.json`` and
  ``law-h300.json`` — 300-step runs on a harder task, judged at 60 and 300 steps;
* ``law-scheduler`` — the staleness-aware scheduler on mixed-staleness runs;
* ``law-knee/prediction.json`` and ``law-knee/confirm`` — the knee predicted by the on-policy
  probe, committed before its confirmation sweep, and that sweep (read by
  :mod:`stalesim.reports.law_knee`).

The decoupled sweep is the reference that (b) and (c) change one setting of. A missing
experiment gives the row "not run", never a guess.

How verdicts are read:

* every interval is the fit's leave-one-seed-out jackknife interval (t quantile on n_seeds - 1
  degrees of freedom), whose coverage each fit measured on synthetic sweeps of its own design
  (``slopes.interval_coverage`` in law.json); the table's ``coverage`` column gives it;
* a slope interval (``d ln eta / d ln S``) is an equivalence test against the bands the fit
  recorded (``slopes.bands``): "∝ 1/S" only when the whole interval lies inside the band around
  -1, "flat" only inside the band around 0, a direction only when it lies wholly beyond a band,
  otherwise "inconclusive";
* an eta_opt verdict stands only when eta_opt located by every score (AUC, steps to target,
  best smoothed reward) at every horizon the runs allow (``slopes.by_score``) gives the same
  verdict; where they differ the row is "inconclusive (score-dependent)" and lists each;
* two sweeps compared through their ratios ``eta(S_max) / eta(0)``: "confirms" when the two
  intervals do not overlap and lie the predicted way round, "refutes" when they do not overlap
  and lie the other way, "inconclusive" when they overlap. The sweeps are independent, so
  non-overlap of 95% intervals is a conservative test;
* an interval built from the ends of two others (one law against another) covers at least the
  sum of their coverages minus 1, whatever their correlation;
* runs that never reached the target are "no progress", not instability: eta_max reads the
  unstable runs alone, and where no learning rate reaches the target a row says so.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stalesim.sim.law.model import Law, load_law, ratio_verdict, slope_verdict

#: Where each experiment's law sits under the results folder.
LAW_FILES = {
    "clip": "law-objective/clip/law.json",
    "clip-tight": "law-objective/clip-tight/law.json",
    "decoupled": "law-objective/decoupled/law.json",
    "batch-4": "law-batch/b4/law.json",
    "batch-8": "law-batch/b8/law.json",
    "batch-32": "law-batch/b32/law.json",
    "batch-96": "law-batch/b96/law.json",
    "sgd": "law-optimizer/sgd/law.json",
    "sgd-m0.9": "law-optimizer/sgd-m0.9/law.json",
    "adam-b0": "law-optimizer/adam-b0/law.json",
    "horizon-60": "law-horizon/law-h60.json",
    "horizon-160": "law-horizon/law-h160.json",
    "horizon-ns-60": "law-horizon/non-saturating/law-h60.json",
    "horizon-ns-300": "law-horizon/non-saturating/law-h300.json",
    "knee-confirm": "law-knee/confirm/law.json",
    "task2-add": "law-task2/sweep/law.json",
    "batch-ns-64": "law-batch-ns/b64/law.json",
    "batch-ns-64-mb4": "law-batch-ns/b64-mb4/law.json",
}

#: The sweeps on tasks that do not saturate within their horizon, each read for the two regimes:
#: (law, experiment label, the S pairs read against "∝ 1/S beyond the knee").
NON_SATURATING = (
    (
        "horizon-ns-300",
        "objective: clipped PPO, non-saturating task (300 steps)",
        ((2, 4), (2, 8), (8, 16)),
    ),
    (
        "knee-confirm",
        "non-saturating task, knee confirmation (S 0-8, 6 new seeds)",
        ((2, 8), (4, 8), (6, 8)),
    ),
    ("task2-add", "exact-match addition, binary reward (200 steps)", ((2, 4), (4, 8), (8, 16))),
)

#: Batch sizes (prompts per step) compared with the decoupled sweep's 16.
BATCHES = ("4", "8", "32", "96")

#: The slope verdicts (equivalence tests, see ``stalesim.validate.law.slopes``) read against the
#: prediction "flat below the knee".
FLAT_VERDICT_WORDS = {
    "flat": "confirms flat",
    "one_over_s": "refutes flat (∝1/S already)",
    "falls": "refutes flat (falls)",
    "falls_slower": "refutes flat (falls, more slowly than 1/S)",
    "steeper": "refutes flat (falls faster than 1/S)",
    "rises": "refutes flat (rises)",
    "inconclusive": "inconclusive",
    "undecided": "inconclusive",
    "degenerate": "inconclusive (grid-quantised)",
}

#: The slope verdicts read against the prediction "∝ 1/S beyond the knee".
VERDICT_WORDS = {
    "flat": "refutes ∝1/S (flat)",
    "one_over_s": "confirms ∝1/S",
    "falls_slower": "refutes ∝1/S (falls more slowly)",
    "falls": "inconclusive (falls; not settled against 1/S)",
    "steeper": "refutes ∝1/S (falls faster)",
    "rises": "refutes (rises)",
    "inconclusive": "inconclusive",
    "undecided": "inconclusive",
    "degenerate": "inconclusive (grid-quantised)",
}

#: A ratio eta(S_1)/eta(0) read against "flat from S = 0" (``ratio_verdict``'s words).
RATIO_FLAT_WORDS = {
    "flat": "confirms flat",
    "falls": "refutes flat (falls already at the first S)",
    "rises": "refutes (rises)",
    "inconclusive": "inconclusive",
}


@dataclass(frozen=True)
class Finding:
    """One row of the findings table."""

    experiment: str
    prediction: str
    measured: str
    verdict: str
    #: the measured coverage of the interval the verdict reads (see the page's coverage table)
    coverage: str = ""


#: The scheduler experiments, each a folder of rule sweeps with its ``summary.json``.
SCHEDULER_EXPERIMENTS = ("law-scheduler", "law-sched-alt")


def _steps_text(median: float | None) -> str:
    return "never" if median is None else f"{median:g}"


def scheduler_rows(root: Path) -> list[dict[str, Any]]:
    """One row per scheduler experiment, staleness distribution and rule: the rule's best rate's
    points and its verdict against the law's rule; [] when none was run."""
    import json

    out = []
    for experiment in SCHEDULER_EXPERIMENTS:
        path = root / experiment / "summary.json"
        if not path.exists():
            continue
        summary = json.loads(path.read_text())
        verdicts = {(v["rule"], v["staleness_spec"]): v for v in summary["verdicts"]}
        for row in summary["rows"]:
            verdict = verdicts.get((row["rule"], row["staleness_spec"]))
            steps = "; ".join(
                f"{target}: {_steps_text(v['median'])} ({v['reached']}/{row['n_seeds']})"
                for target, v in row["steps_to_target"].items()
            )
            out.append(
                {
                    "experiment": experiment,
                    "staleness": row["staleness_spec"],
                    "rule": row["rule"],
                    "best LR": f"{row['best_lr']:.3g} (of {len(row['lrs_tried'])})",
                    "reward AUC": round(row["reward_auc"], 4),
                    "final reward": round(row["final_reward"], 4),
                    "median steps to target (reached)": steps,
                    "failure rate": row["fail_rate"],
                    f"{summary['reference']} vs this rule": "reference"
                    if verdict is None
                    else f"{verdict['verdict']} ("
                    + ", ".join(f"{k}: {v}" for k, v in verdict["by_score"].items())
                    + ")",
                    "seeds": row["n_seeds"],
                }
            )
    return out


def load_experiment_laws(root: Path) -> dict[str, Law]:
    """Every experiment law present under ``root``."""
    return {name: load_law(root / rel) for name, rel in LAW_FILES.items() if (root / rel).exists()}


def _interval(lo: Any, hi: Any, fmt: str = ".3g") -> str:
    if lo is None or hi is None:
        return "[no interval]"
    return f"[{lo:{fmt}}, {hi:{fmt}}]"


def bands(law: Law) -> dict[str, list[float]]:
    """The equivalence bands the fit judged with (``slopes.bands``; {} in older law files)."""
    return dict((law.slopes or {}).get("bands") or {})


def calibrated_coverage(block: dict[str, Any] | None, kind: str) -> tuple[float, float] | None:
    """The fresh-sweep coverage of ``kind``'s calibrated intervals under the symmetric and the
    skewed model (``interval_coverage.calibration`` in law.json, written by
    :mod:`stalesim.validate.law.calibration`); None where it has no calibration for ``kind``."""
    calibration = (block or {}).get("calibration") or {}
    if (calibration.get("factors") or {}).get(kind) is None:
        return None
    symmetric = (calibration.get("coverage") or {}).get(kind)
    skewed = (calibration.get("skewed_coverage") or {}).get(kind)
    if symmetric is None or skewed is None:
        return None
    return float(symmetric), float(skewed)


def coverage_of(law: Law, kind: str) -> float | None:
    """The simulated coverage of ``law``'s ``kind`` intervals (``eta_opt``, ``slope`` or
    ``ratio``), as its fit measured it on synthetic sweeps of its own design: of the calibrated
    intervals on fresh sweeps, the lower of the two reward models, where the fit calibrated
    them; else of the plain interval. None if not measured."""
    block = (law.slopes or {}).get("interval_coverage") or {}
    calibrated = calibrated_coverage(block, kind)
    if calibrated is not None:
        return min(calibrated)
    value = (block.get("coverage") or {}).get(kind)
    return float(value) if value is not None else None


#: The interval kinds of eta_max's points, slopes and ratios, by the eta_opt kind they mirror.
EDGE_KIND = {"eta_opt": "eta_max", "slope": "eta_max_slope", "ratio": "eta_max_ratio"}
#: eta_max's coverage is simulated where the fit's design holds estimated edges; elsewhere it
#: is a grid bound (no interval) or lies outside the simulated design.
NOT_SIMULATED = "not simulated (eta_max a grid bound here, or outside the simulated design)"


def _unmeasured(kind: str) -> str:
    """What the coverage column says of ``kind`` (a coverage block's key) with no coverage."""
    return NOT_SIMULATED if kind in EDGE_KIND.values() else "not measured"


def coverage_kind(kind: str, curve: str) -> str:
    """The interval kind law.json's coverage block keys ``kind`` of ``curve`` by."""
    return EDGE_KIND[kind] if curve == "eta_max" else kind


def _coverage_text(law: Law, kind: str, curve: str = "eta_opt") -> str:
    kind = coverage_kind(kind, curve)
    value = coverage_of(law, kind)
    if value is None:
        return _unmeasured(kind)
    block = (law.slopes or {}).get("interval_coverage") or {}
    skewed = block.get("skewed") or {}
    plain, plain_skewed = (
        (block.get("coverage") or {}).get(kind),
        (skewed.get("coverage") or {}).get(kind),
    )
    calibrated = calibrated_coverage(block, kind)
    if calibrated is not None:
        factor = block["calibration"]["factors"][kind]
        text = (
            f"{calibrated[0]:.0%} / {calibrated[1]:.0%} ({kind}, calibrated: half-width "
            f"×{factor:.2f}; counted on {block.get('n_sim')} fresh synthetic sweeps, reward "
            f"symmetric / falling {skewed.get('skew', 3):g}× faster above eta_opt"
        )
        if plain is not None and plain_skewed is not None:
            text += f"; the plain t interval covered {plain:.0%} / {plain_skewed:.0%}"
        return text + ")"
    text = f"{value:.0%} ({kind}, {block.get('n_sim')} synthetic sweeps"
    if plain_skewed is not None:
        text += (
            f"; {plain_skewed:.0%} if the reward falls {skewed.get('skew'):g}× faster above eta_opt"
        )
    return text + ")"


def _ends_coverage(laws: list[Law], kind: str = "eta_opt") -> str:
    """An interval built from the ends of two others holds the truth whenever both do, so it
    covers at least ``c_a + c_b - 1`` (Bonferroni), however the two are correlated."""
    values = [coverage_of(law, kind) for law in laws]
    if None in values:
        return _unmeasured(kind)
    floor = sum(values) - (len(values) - 1)  # type: ignore[arg-type]
    return f"≥ {max(floor, 0):.0%} (from the ends of {len(values)} intervals)"


def _realised(points: list[dict[str, Any]], staleness: int) -> float | None:
    for p in points:
        if p.get("staleness") == staleness:
            return p.get("staleness_realised", float(staleness))
    return None


def _find_pair(
    pairs: list[dict[str, Any]], points: list[dict[str, Any]], a: int, b: int
) -> dict[str, Any] | None:
    """The pair slope between nominal S ``a`` and ``b`` (matched by their realised lags)."""
    la, lb = _realised(points, a), _realised(points, b)
    if la is None or lb is None:
        return None
    for record in pairs or []:
        if abs(record["from"] - la) < 1e-6 and abs(record["to"] - lb) < 1e-6:
            return record
    return None


def _by_score_records(law: Law, part: str | tuple[int, int]) -> list[tuple[str, dict | None]]:
    """eta_opt's ``part`` (``early``, ``late``, ``first_step`` or a nominal S pair) under
    every score and horizon the fit judged (its ``slopes.by_score``)."""
    out = []
    for entry in ((law.slopes or {}).get("by_score") or {}).values():
        label = f"{entry['score_label']} @ {entry['horizon']}"
        if isinstance(part, tuple):
            record = _find_pair(entry.get("pairs") or [], entry["points"], *part)
        else:
            record = entry.get(part)
        out.append((label, record))
    return out


def _record_text(record: dict[str, Any]) -> str:
    if "ratio" in record:
        return f"{record['ratio']:.2f} {_interval(record['lo'], record['hi'], '.2f')}"
    return f"{record['slope']:.2f} {_interval(record['lo'], record['hi'], '.2f')}"


def _score_agreement(
    law: Law, curve: str, part: str | tuple[int, int], key: str, words: dict[str, str]
) -> tuple[str, str]:
    """The verdict ``words[key]`` if every score and horizon that can judge it agrees, else
    "inconclusive (score-dependent)"; and a text listing each where they do not."""
    verdict = words.get(key, key)
    if curve != "eta_opt":
        return "", verdict
    records = _by_score_records(law, part)
    judged = [(label, r) for label, r in records if r is not None]
    if not judged:
        return "", verdict
    keys = {r["verdict"] for _, r in judged}
    if keys == {key}:
        return f"; the same under all {len(judged)} scores × horizons", verdict
    listing = "; ".join(
        f"{label}: {_record_text(r)} {words.get(r['verdict'], r['verdict'])}" for label, r in judged
    )
    return (
        f"; by score and horizon: {listing}",
        f"inconclusive (score-dependent; {verdict} at the default score)",
    )


def _drop(law: Law, curve: str = "eta_opt") -> dict[str, Any] | None:
    return ((law.slopes or {}).get(curve) or {}).get("drop_from_zero")


def _drop_text(law: Law, curve: str) -> str:
    drop = _drop(law, curve)
    if not drop:
        return f"{curve}(S)/{curve}(0): not estimable (a bound at S = 0 or S_max)"
    return (
        f"{curve}({drop['to']:.3g})/{curve}(0) = {drop['ratio']:.2f} "
        f"{_interval(drop['lo'], drop['hi'], '.2f')}"
    )


def _slope_text(
    law: Law, curve: str, part: str, words: dict[str, str] | None = None
) -> tuple[str, str]:
    """A slope of ``law.slopes`` and its verdict in ``words``, checked across scores."""
    words = words or VERDICT_WORDS
    slope = ((law.slopes or {}).get(curve) or {}).get(part)
    if not slope:
        return f"{curve}: no {part} slope (fewer than 2 usable S > 0)", "inconclusive"
    extra, verdict = _score_agreement(law, curve, part, slope["verdict"], words)
    return (
        f"{curve} slope over S {slope['from']:.3g}–{slope['to']:.3g} = {slope['slope']:.2f} "
        f"{_interval(slope['lo'], slope['hi'], '.2f')}" + extra,
        verdict,
    )


def compare_drops(a: Law, b: Law, curve: str, a_should_drop_more: bool) -> tuple[str, str]:
    """Compare ``eta(S_max)/eta(0)`` of two sweeps; ``a_should_drop_more``: the prediction is
    that ``a``'s ratio is the smaller one."""
    da, db = _drop(a, curve), _drop(b, curve)
    floor_a = _ratio_floor(a, curve)
    if floor_a is not None and db and db["hi"] is not None and floor_a > db["hi"]:
        # a's eta at S_max is only bounded below (no grid LR failed), but that bound already
        # puts its ratio above b's whole interval
        text = (
            f"> {floor_a:.2f} (a lower bound: no grid LR failed at S_max) vs "
            f"{db['ratio']:.2f} {_interval(db['lo'], db['hi'], '.2f')}"
        )
        return text, "refutes" if a_should_drop_more else "confirms"
    if not da or not db or None in (da["lo"], da["hi"], db["lo"], db["hi"]):
        bounds = [
            f"{curve}(S={p['staleness']}) {'>' if p.get(f'{curve}_flag') == 'above_grid' else '<'}"
            f" {p[curve]:.3g} (a bound: {p.get(f'{curve}_flag')})"
            for law in (a, b)
            for p in law.points
            if p.get(f"{curve}_flag") not in (None, "ok") and p.get(curve) is not None
        ]
        return "ratio not estimable: " + ("; ".join(bounds) or "missing"), "inconclusive"
    text = f"{da['ratio']:.2f} {_interval(da['lo'], da['hi'], '.2f')} vs {db['ratio']:.2f} " + (
        _interval(db["lo"], db["hi"], ".2f")
    )
    if da["hi"] < db["lo"]:
        return text, "confirms" if a_should_drop_more else "refutes"
    if db["hi"] < da["lo"]:
        return text, "refutes" if a_should_drop_more else "confirms"
    return text, "inconclusive (intervals overlap)"


def _point(
    law: Law, staleness: int, column: str
) -> tuple[float | None, float | None, float | None]:
    for p in law.points:
        if p.get("staleness") == staleness:
            return p.get(column), p.get(f"{column}_lo"), p.get(f"{column}_hi")
    return None, None, None


def _flag(law: Law, staleness: int, column: str) -> str | None:
    for p in law.points:
        if p.get("staleness") == staleness:
            return p.get(f"{column}_flag")
    return None


def _ratio_from_ends(
    num: tuple[float | None, float | None, float | None],
    den: tuple[float | None, float | None, float | None],
) -> tuple[float, float | None, float | None]:
    """``num/den`` of two (estimate, lo, hi) points, its interval from the ends of theirs
    (conservative: ``num_lo/den_hi`` to ``num_hi/den_lo``; ``None`` where an end is missing).
    Both estimates must be present."""
    (a, a_lo, a_hi), (z, z_lo, z_hi) = num, den
    lo = a_lo / z_hi if a_lo and z_hi else None
    hi = a_hi / z_lo if a_hi and z_lo else None
    return a / z, lo, hi  # type: ignore[operator]


def _ratio_floor(law: Law, curve: str) -> float | None:
    """When ``curve`` at the largest S is a lower bound (``above_grid``) and at S = 0 an
    estimate: the smallest ratio ``eta(S_max)/eta(0)`` it allows (bound / upper end at 0)."""
    points = sorted(law.points, key=lambda p: p["staleness"])
    if len(points) < 2 or points[0]["staleness"] != 0:
        return None
    first, last = points[0], points[-1]
    if last.get(f"{curve}_flag") != "above_grid" or first.get(f"{curve}_flag") != "ok":
        return None
    top = first.get(f"{curve}_hi") or first.get(curve)
    return float(last[curve]) / float(top) if top else None


def _first_step_ratio(law: Law, curve: str) -> tuple[str, str]:
    """``eta(S_1)/eta(0)`` for the smallest S > 0 of the sweep, its interval from the ends of
    the two points' intervals (conservative): flat below the knee means a ratio of 1."""
    record = ((law.slopes or {}).get(curve) or {}).get("first_step")
    if record:
        extra, verdict = _score_agreement(
            law, curve, "first_step", record["verdict"], RATIO_FLAT_WORDS
        )
        return (
            f"the first S > 0 against S = 0: {curve}({record['to']:.3g})/{curve}(0) = "
            f"{_record_text(record)} (inside {bands(law).get('flat_ratio')} counts as flat)"
            + extra,
            verdict,
        )
    staleness = sorted(p["staleness"] for p in law.points if p["staleness"] > 0)
    if not staleness:
        return "no S > 0", "inconclusive"
    first = staleness[0]
    at_first, at_zero = _point(law, first, curve), _point(law, 0, curve)
    flags = {p["staleness"]: p.get(f"{curve}_flag") for p in law.points}
    if None in (at_first[0], at_zero[0]) or flags.get(first) != "ok" or flags.get(0) != "ok":
        return f"{curve}({first})/{curve}(0): a bound at one end, not a ratio", "inconclusive"
    ratio, lo, hi = _ratio_from_ends(at_first, at_zero)
    text = (
        f"the first S > 0 against S = 0: {curve}({first})/{curve}(0) = {ratio:.2f} "
        f"{_interval(lo, hi, '.2f')} (interval from the ends of both points' intervals)"
    )
    return text, RATIO_FLAT_WORDS[ratio_verdict(lo, hi, bands(law).get("flat_ratio"))]


def _regime_rows(experiment: str, law: Law) -> list[Finding]:
    """The two regimes on one sweep: the slope beyond the knee against -1, and the slope (or
    the first step's ratio) below it against 0, for eta_max and eta_opt."""
    rows = []
    for curve in ("eta_max", "eta_opt"):
        text, verdict = _slope_text(law, curve, "late")
        rows.append(
            Finding(
                experiment,
                f"{curve} ∝ 1/S beyond the knee (slope -1)",
                text + "; " + _drop_text(law, curve),
                verdict,
            )
        )
        rows[-1] = Finding(**{**rows[-1].__dict__, "coverage": _coverage_text(law, "slope", curve)})
        early = ((law.slopes or {}).get(curve) or {}).get("early")
        if early:
            text, verdict = _slope_text(law, curve, "early", FLAT_VERDICT_WORDS)
            kind = "slope"
        else:
            text, verdict = _first_step_ratio(law, curve)
            kind = "ratio"
        rows.append(
            Finding(
                experiment,
                f"{curve} flat below the knee (slope 0)",
                text,
                verdict,
                _coverage_text(law, kind, curve),
            )
        )
    return rows


def _point_slope(law: Law, curve: str, a: int, b: int) -> tuple[str, str]:
    """The slope d ln eta / d ln S between the sweep's points at nominal S ``a`` and ``b``
    (realised lags), its interval from the ends of both points' intervals; a bound at ``b``
    (below the grid) gives a bound on the slope."""
    import math

    points = {p["staleness"]: p for p in law.points}
    if a not in points or b not in points:
        return f"{curve}: no points at S = {a} and {b}", "inconclusive"
    pa, pb = points[a], points[b]
    la, lb = pa.get("staleness_realised", a), pb.get("staleness_realised", b)
    if pa.get(f"{curve}_flag") != "ok" or None in (pa.get(f"{curve}_lo"), pa.get(f"{curve}_hi")):
        return f"{curve}({a}) is a bound, not an estimate", "inconclusive"
    span = math.log(lb / la)
    flag = pb.get(f"{curve}_flag")
    if flag in ("below_grid", "edge_low"):
        steepest = math.log(pb[curve] / pa[f"{curve}_lo"]) / span
        text = (
            f"{curve} from S {la:.3g} to {lb:.3g}: {pa[curve]:.3g} → below {pb[curve]:.3g} "
            f"({flag}): slope < {steepest:.2f}"
        )
        return text, "confirms ∝1/S or steeper" if steepest <= -1 else "inconclusive (a bound)"
    if flag != "ok":
        return f"{curve}({b}) is a bound ({flag}), not an estimate", "inconclusive"
    slope = math.log(pb[curve] / pa[curve]) / span
    lo = math.log(pb[f"{curve}_lo"] / pa[f"{curve}_hi"]) / span
    hi = math.log(pb[f"{curve}_hi"] / pa[f"{curve}_lo"]) / span
    text = (
        f"{curve} slope over S {la:.3g}–{lb:.3g} = {slope:.2f} {_interval(lo, hi, '.2f')} "
        "(from two points; interval from the ends of their intervals)"
    )
    return text, VERDICT_WORDS[_slope_key(lo, hi, bands(law))]


def _slope_key(lo: float, hi: float, band: dict[str, list[float]]) -> str:
    """A slope interval against the law's recorded bands, as the fit's verdict reads it."""
    one, flat = band.get("one_over_s"), band.get("flat")
    if not one or not flat:
        return "inconclusive"
    return slope_verdict(lo, hi, one, flat)


def _pair_row(law: Law, curve: str, a: int, b: int) -> tuple[str, str, str]:
    """The slope between nominal S ``a`` and ``b`` from the fit's replicates (``pairs``), its
    verdict checked across scores; a bound at one end falls back to :func:`_point_slope`."""
    pairs = ((law.slopes or {}).get(curve) or {}).get("pairs")
    record = _find_pair(pairs or [], law.points, a, b)
    if record is None:
        text, verdict = _point_slope(law, curve, a, b)
        return (
            text,
            verdict,
            _ends_coverage([law, law], coverage_kind("eta_opt", curve)),
        )
    extra, verdict = _score_agreement(law, curve, (a, b), record["verdict"], VERDICT_WORDS)
    text = (
        f"{curve} slope over S {record['from']:.3g}–{record['to']:.3g} = "
        f"{_record_text(record)}" + extra
    )
    return text, verdict, _coverage_text(law, "slope", curve)


def _progress_rows(name: str, law: Law) -> list[Finding]:
    """Where no learning rate reaches the target: a lack of progress, reported apart from the
    stability edge (which reads unstable runs only)."""
    stuck = [p for p in law.points if p.get("no_rate_reaches")]
    if not stuck:
        return []
    detail = ", ".join(
        f"S={p['staleness']}: {p.get('n_no_progress', 0)} no-progress and "
        f"{p.get('n_unstable', 0)} unstable of {p.get('n_runs', '?')} runs"
        for p in stuck
    )
    return [
        Finding(
            f"{name}: progress",
            "eta_max measures stability; a rate too slow to learn is not a failure of it",
            f"no grid learning rate gets half its seeds to the target at "
            f"S={[p['staleness'] for p in stuck]} ({detail})",
            "no rate reaches the target (no progress, not instability)",
            "—",
        )
    ]


def _drop_coverage(a: Law, b: Law, curve: str) -> str:
    """Coverage of the two ratio intervals a drop comparison reads."""
    kind = coverage_kind("ratio", curve)
    ca, cb = coverage_of(a, kind), coverage_of(b, kind)
    if ca is None or cb is None:
        return _unmeasured(kind)
    return f"{ca:.0%} / {cb:.0%} (the two ratio intervals)"


def _trust_region_rows(
    experiment: str, wide: Law, narrow: Law, wide_name: str, narrow_name: str, how: str
) -> list[Finding]:
    """If clipping is the trust region behind the plateau, the sweep with less of it (``wide``)
    falls further with S than the one with more (``narrow``)."""
    rows = []
    for curve in ("eta_opt", "eta_max"):
        text, verdict = compare_drops(wide, narrow, curve, a_should_drop_more=True)
        rows.append(
            Finding(
                experiment,
                f"if clipping acted as a trust region, {how}: {curve} falls further with S "
                f"under {wide_name} than under {narrow_name}",
                f"{curve}(S_max)/{curve}(0), {wide_name} vs {narrow_name}: {text}",
                {
                    "confirms": "supports the clipping explanation",
                    "refutes": "refutes the clipping explanation",
                }.get(verdict, verdict + ": the clipping explanation is not supported"),
                _drop_coverage(wide, narrow, curve),
            )
        )
    return rows


def _drop_row(
    experiment: str,
    prediction: str,
    pair: tuple[Law | None, Law | None],
    label: str,
    *,
    a_should_drop_more: bool,
) -> Finding:
    """eta_opt(S_max)/eta_opt(0) of two sweeps against a directional prediction ("not run"
    while either is missing)."""
    a, b = pair
    if a is None or b is None:
        return Finding(experiment, prediction, "not run", "—")
    text, verdict = compare_drops(a, b, "eta_opt", a_should_drop_more=a_should_drop_more)
    return Finding(
        experiment,
        prediction,
        f"eta_opt(S_max)/eta_opt(0), {label}: {text}",
        verdict,
        _drop_coverage(a, b, "eta_opt"),
    )


#: eta(0) ∝ 1/T is confirmed only when the ratio's whole interval lies within this factor of the
#: predicted ratio T_long/T_short (an equivalence test; the width of FLAT_RATIO_BAND around 1).
HORIZON_RATIO_FACTOR = 1.25


def _horizon_rows(short: Law, long_: Law, task: str) -> list[Finding]:
    """eta(0) ∝ 1/T and S_c ∝ T, from one set of runs judged at two horizons: the ratio
    eta(0, T_short)/eta(0, T_long) against T_long/T_short as an equivalence test (confirms only
    inside :data:`HORIZON_RATIO_FACTOR` of it, refutes only wholly beyond)."""
    t_short, t_long = short.regime.steps, long_.regime.steps  # type: ignore[union-attr]
    experiment = f"horizon ({task}): {t_short} vs {t_long} steps (same runs)"
    rows = []
    predicted = t_long / t_short
    for column in ("eta_max", "eta_opt"):
        at_short, at_long = _point(short, 0, column), _point(long_, 0, column)
        (s, s_lo, s_hi), (g, g_lo, g_hi) = at_short, at_long
        if None in (s, g):
            rows.append(Finding(experiment, f"{column}(0) ∝ 1/T", "not estimable", "—"))
            continue
        flags = [_flag(law, 0, column) for law in (short, long_)]
        if any(f not in (None, "ok") for f in flags):
            rows.append(
                Finding(
                    experiment,
                    f"{column}(0) ∝ 1/T: ratio {predicted:.2f}",
                    f"{column}(0) at T={t_short}: {s:.3g} ({flags[0]}); at T={t_long}: "
                    f"{g:.3g} ({flags[1]}): a bound at one horizon, not a ratio",
                    "inconclusive (a bound)",
                    "—",
                )
            )
            continue
        ratio, lo, hi = _ratio_from_ends(at_short, at_long)
        band = (predicted / HORIZON_RATIO_FACTOR, predicted * HORIZON_RATIO_FACTOR)
        if lo is None or hi is None:
            verdict = "inconclusive (no interval)"
        elif band[0] <= lo and hi <= band[1]:
            verdict = "confirms"
        elif hi < 1:
            verdict = "refutes (the other way: smaller at the shorter horizon)"
        elif hi < band[0]:
            verdict = "refutes (moves less than 1/T)"
        elif lo > band[1]:
            verdict = "refutes (moves more than 1/T)"
        else:
            verdict = "inconclusive"
        rows.append(
            Finding(
                experiment,
                f"{column}(0) ∝ 1/T: ratio {predicted:.2f}, within [{band[0]:.2f}, {band[1]:.2f}]",
                f"{column}(0) at T={t_short}: {s:.3g} {_interval(s_lo, s_hi)}; at "
                f"T={t_long}: {g:.3g} {_interval(g_lo, g_hi)}; ratio {ratio:.2f} "
                f"(interval from the ends {_interval(lo, hi, '.2f')})",
                verdict,
                _ends_coverage([short, long_], coverage_kind("eta_opt", column)),
            )
        )
    text, verdict = _same_s_drop(short, long_, "eta_opt")
    rows.append(
        Finding(
            experiment,
            "S_c ∝ T: the shorter horizon's eta_opt falls more by the same S",
            text,
            verdict,
            _ends_coverage([short, short, long_, long_]),
        )
    )
    return rows


def _same_s_drop(short: Law, long_: Law, curve: str) -> tuple[str, str]:
    """``curve(S)/curve(0)`` of two horizons at the largest S both judged (the shorter horizon
    leaves out the S its runs are too short for), each interval from the ends of the two
    points' intervals (conservative)."""
    common = {p["staleness"] for p in short.points} & {p["staleness"] for p in long_.points}
    common.discard(0)
    if not common:
        return "no staleness > 0 judged at both horizons", "inconclusive"
    at = max(common)
    ratios = []
    for law in (short, long_):
        point, zero = _point(law, at, curve), _point(law, 0, curve)
        flags = {p["staleness"]: p.get(f"{curve}_flag") for p in law.points}
        if None in (*point, *zero) or flags.get(at) != "ok":
            return f"{curve}({at})/{curve}(0): a bound at one horizon, not a ratio", "inconclusive"
        ratios.append(_ratio_from_ends(point, zero))
    (rs, ls, hs), (rl, ll, hl) = ratios
    text = (
        f"{curve}({at})/{curve}(0), T={short.regime.steps} vs T={long_.regime.steps}: "  # type: ignore[union-attr]
        f"{rs:.2f} {_interval(ls, hs, '.2f')} vs {rl:.2f} {_interval(ll, hl, '.2f')} "
        "(intervals from the ends of both points' intervals)"
    )
    if hs < ll:
        return text, "confirms"
    if hl < ls:
        return text, "refutes"
    return text, "inconclusive (intervals overlap)"


def findings(root: Path) -> list[Finding]:
    """The findings table for the experiments under ``root``."""
    laws = load_experiment_laws(root)
    rows: list[Finding] = []
    clip, tight, dec = laws.get("clip"), laws.get("clip-tight"), laws.get("decoupled")

    # (a) the two regimes, per objective; what clipping does to them
    for name, label in (
        ("clip", "clipped PPO"),
        ("clip-tight", "tight clip (eps 0.05)"),
        ("decoupled", "decoupled (no clipping)"),
    ):
        law = laws.get(name)
        if law is None:
            rows.append(Finding(f"objective: {label}", "flat, then ∝ 1/S", "not run", "—"))
        else:
            rows += _regime_rows(f"objective: {label}", law)
    if clip is not None and dec is not None:
        rows += _trust_region_rows(
            "objective: decoupled vs clipped", dec, clip, "decoupled", "clipped",
            "removing it",
        )  # fmt: skip
    if clip is not None and tight is not None:
        rows += _trust_region_rows(
            "objective: clipped vs tight clip", clip, tight, "eps 0.2/0.28", "eps 0.05",
            "narrowing it",
        )  # fmt: skip

    # (b) batch size, against the decoupled sweep's 16 prompts per step
    for label in BATCHES:
        law = laws.get(f"batch-{label}")
        experiment = f"batch: {label} vs 16 prompts/step"
        if law is None or dec is None:
            rows.append(Finding(experiment, "S_c grows with batch size", "not run", "—"))
            continue
        smaller = int(label) < 16
        for curve in ("eta_opt", "eta_max"):
            text, verdict = compare_drops(law, dec, curve, a_should_drop_more=smaller)
            rows.append(
                Finding(
                    experiment,
                    f"S_c grows with batch size: the {'smaller' if smaller else 'larger'} "
                    f"batch's {curve} falls {'more' if smaller else 'less'} by S = 32",
                    f"{curve}(S_max)/{curve}(0), {label} vs 16 prompts: {text}",
                    verdict,
                    _drop_coverage(law, dec, curve),
                )
            )
        if smaller:
            text, verdict = _slope_text(law, "eta_max", "late")
            rows.append(
                Finding(
                    experiment,
                    "small batches: eta_max slope near -1 beyond S_c",
                    text,
                    verdict,
                    _coverage_text(law, "slope", "eta_max"),
                )
            )

    # (b) batch size on the non-saturating task: 64 prompts per step against the knee
    # confirmation's 16 (same task, model and horizon; other seeds); and the same 64 groups per
    # step trained in M = 4 mini-batches of 16 (four updates per step): the batch per update is
    # 16, as in the knee confirmation, the data per step 64
    ns16, ns64 = laws.get("knee-confirm"), laws.get("batch-ns-64")
    rows.append(
        _drop_row(
            "batch: 64 vs 16 prompts/step, the non-saturating task's setup",
            "S_c grows with batch size: the larger batch's eta_opt falls less by S_max",
            (ns64, ns16),
            "64 vs 16 prompts",
            a_should_drop_more=False,
        )
    )
    rows.append(
        _drop_row(
            "batch: 64 prompts/step in 4 mini-batches vs in 1, the non-saturating task",
            "S_c grows with the batch per update: 16 per update falls more by S_max than 64",
            (laws.get("batch-ns-64-mb4"), ns64),
            "4 x 16 vs 1 x 64 per step",
            a_should_drop_more=True,
        )
    )

    # (c) optimizer
    predictions = {
        "sgd": "Adam hides the O(S·η) bias: SGD's eta_opt falls more with S",
        "sgd-m0.9": "Adam hides the O(S·η) bias: SGD's eta_opt falls more with S",
        "adam-b0": "(not the paper's) momentum adds ~1/(1-β1) steps of lag: β1=0 falls less",
    }
    for name, label in (("sgd", "SGD"), ("sgd-m0.9", "SGD momentum 0.9"), ("adam-b0", "Adam β1=0")):
        law = laws.get(name)
        if law is None or dec is None:
            rows.append(
                Finding(f"optimizer: {label} vs Adam β1=0.9", predictions[name], "not run", "—")
            )
            continue
        for curve in ("eta_opt", "eta_max"):
            text, verdict = compare_drops(law, dec, curve, a_should_drop_more=name != "adam-b0")
            rows.append(
                Finding(
                    f"optimizer: {label} vs Adam β1=0.9",
                    predictions[name].replace("eta_opt", curve),
                    f"{curve}(S_max)/{curve}(0), {label} vs Adam: {text}",
                    verdict,
                    _drop_coverage(law, dec, curve),
                )
            )

    # (d) the two regimes on the tasks that do not saturate within their horizon
    for name, experiment, pairs in NON_SATURATING:
        law = laws.get(name)
        if law is None:
            continue
        for curve in ("eta_opt", "eta_max"):
            text, verdict = _first_step_ratio(law, curve)
            rows.append(
                Finding(
                    experiment,
                    f"{curve} flat below the knee",
                    text,
                    verdict,
                    _coverage_text(law, "ratio", curve),
                )
            )
            for a, b in pairs:
                text, verdict, cover = _pair_row(law, curve, a, b)
                rows.append(
                    Finding(
                        experiment,
                        f"{curve} ∝ 1/S beyond the knee (S {a}→{b})",
                        text,
                        verdict,
                        cover,
                    )
                )

    # (d) horizon
    for short, long_, task, label in (
        ("horizon-60", "horizon-160", "saturating task", "60 vs 160 steps"),
        ("horizon-ns-60", "horizon-ns-300", "non-saturating task", "60 vs 300 steps"),
    ):
        if short in laws and long_ in laws:
            rows += _horizon_rows(laws[short], laws[long_], task)
        else:
            rows.append(Finding(f"horizon ({task}): {label}", "eta_max(0) ∝ 1/T", "not run", "—"))

    # the knee predicted by the on-policy probe before its confirmation sweep was run
    from stalesim.reports.law_knee import knee_rows

    rows += knee_rows(root)

    # (f) the pipeline: which lag the law reads when the lag emerges from a real run
    from stalesim.reports.law_pipeline import pipeline_rows

    rows += pipeline_rows(root)

    # the failure split: where no learning rate learns, apart from where rates break training
    for name, law in laws.items():
        rows += _progress_rows(name, law)
    return [withheld_if_unchecked(row) for row in rows]


def withheld_if_unchecked(row: Finding) -> Finding:
    """A verdict that claims something (anything but inconclusive) on an interval whose coverage
    was never simulated (eta_max's: the failure fraction's crossing plus the grid's resolution;
    a fit run without its coverage check) is withheld: the row reads inconclusive and says what
    it would have read."""
    unchecked = row.coverage.startswith(("not simulated", "not measured"))
    if not unchecked or row.verdict.startswith("inconclusive"):
        return row
    return replace(
        row,
        verdict=f"inconclusive (would read {row.verdict!r} on an interval of unchecked coverage)",
    )
