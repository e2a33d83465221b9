"""The readings of the staleness–learning-rate law that stalesim weighs a decision under.

A law is measured on a small model; what carries over to a user's run is its shape, the ratios
``eta(S) / eta(0)`` and ``steps(S) / steps(0)``, and the shape depends on the task it was
measured on. So a decision is read under several laws, each a committed fit with its provenance
(``sim/data/laws/<name>.json``; refitting one is replacing its file):

* ``conservative`` (the default): a task that does not saturate within its horizon, where
  ``eta_opt`` was measured to fall past ``S = 2`` (to 0.33x by ``S = 8``);
* ``optimistic``: a task that saturates within its horizon, where ``eta_opt`` falls about 2x
  over ``S = 0..32``;
* ``paper``: the paper's stale-limited exponent, ``alpha = 1``, with its knee fitted to the
  conservative law's measured points, and steps that grow as ``1 / eta`` (the same distance at
  a slower pace).

A user's own law (``--law FILE``) replaces the shipped ones: it is read beside its own paper
reading.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
from scipy.optimize import least_squares
from stalesim.sim.law.model import PAPER_ALPHA, Law, LawCurve, StepsModel, law_from_dict

#: Shipped readings: file under ``sim/data/laws/`` and the role the reading plays. Each file's
#: ``regime`` labels it with its task, model size, batch, horizon and whether the task
#: saturated (measured when it was fitted), and that label is what a user is shown.
SHIPPED = {
    "conservative": ("conservative.json", "eta_opt falls past S = 2, to 0.33x by S = 8"),
    "optimistic": ("optimistic.json", "eta_opt falls about 2x over S = 0..32"),
}
PAPER = "paper"
DEFAULT_READING = "conservative"
#: The name a law from ``--law FILE`` is read under.
USER = "yours"
READING_NAMES = (*SHIPPED, PAPER)


@dataclass(frozen=True)
class Reading:
    """One law the decision is read under, with a line that says where it comes from."""

    name: str
    law: Law
    provenance: str

    def describe(self) -> str:
        return f"{self.name}: {self.provenance}"

    @property
    def label(self) -> str:
        """Task, model size, batch, horizon and whether the task saturated."""
        return reading_label(self.law)


def shipped_law(name: str) -> Law:
    """A law stalesim ships (``conservative`` or ``optimistic``)."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped law {name!r}; choose one of {', '.join(SHIPPED)}")
    file, _ = SHIPPED[name]
    where = f"stalesim.sim/data/laws/{file}"
    try:
        text = resources.files("stalesim.sim").joinpath("data", "laws", file).read_text()
    except FileNotFoundError:
        raise ValueError(
            f"this installation ships no {where}; fit a law with `stalesim fit RUNS_DIR` and "
            "pass its law.json with --law"
        ) from None
    return law_from_dict(json.loads(text), where=where)


def _measured_points(law: Law) -> tuple[np.ndarray, np.ndarray]:
    """The law's own ``eta_opt`` points that its fit used, on its staleness axis."""
    axis = "staleness_realised" if law.lag_axis == "realised" else "staleness"
    rows = [
        p
        for p in law.points
        if p.get("eta_opt_in_fit") and p.get("eta_opt") and p.get(axis) is not None
    ]
    return (
        np.array([float(p[axis]) for p in rows]),
        np.array([float(p["eta_opt"]) for p in rows]),
    )


def paper_law(law: Law) -> Law:
    """``law`` with the paper's exponent: ``alpha = 1`` and ``k = 1``, ``eta0`` and ``s_c``
    refitted (least squares in ``ln eta``) to the points ``law`` was fitted to, and steps to
    target ``steps(0) * eta(0) / eta(S)``. Without points (an old law file) the curve keeps the
    law's ``eta0``, ``s_c`` and ``k``."""
    curve = law.eta_opt
    s, eta = _measured_points(law)
    eta0, s_c, k = curve.eta0, curve.s_c, curve.k
    if s.size >= 2 and np.ptp(s) > 0:

        def residuals(theta: np.ndarray) -> np.ndarray:
            return np.log(eta) - (theta[0] - np.log1p(s / np.exp(theta[1])))

        start = np.array([np.log(curve.eta0), np.log(max(float(np.median(s[s > 0])), 0.5))])
        fit = least_squares(residuals, start, bounds=([-np.inf, np.log(1e-3)], [np.inf, 9.0]))
        eta0, s_c, k = float(np.exp(fit.x[0])), float(np.exp(fit.x[1])), 1.0
    steps0 = float(law.steps_to_target_at(0.0)) if law.steps_to_target is not None else 1.0
    return law.model_copy(
        update={
            "eta_opt": LawCurve(eta0=eta0, s_c=s_c, k=k, alpha=PAPER_ALPHA, fixed=["alpha", "k"]),
            "eta_max": None,
            "steps_to_target": StepsModel(form="eta_ratio", steps0=steps0, p=1.0, p_fixed=True),
            "notes": [
                f"the paper's reading of {law.source.get('runs_dir') or 'the law'}: alpha and k "
                f"held at 1, eta0 and s_c fitted to its {s.size} measured points"
            ],
        }
    )


def _provenance(law: Law, kind: str) -> str:
    """``kind``, then the regime the law was measured on, its label first."""
    regime = law.regime.describe() if law.regime is not None else "unknown regime"
    return f"{kind}; measured on {regime}"


def reading_label(law: Law) -> str:
    """The label a reading is shown with: task, model size, batch, horizon, saturation."""
    return law.regime.label() if law.regime is not None else "regime not recorded"


def readings(primary: str | Law = DEFAULT_READING) -> list[Reading]:
    """The readings a decision is weighed under, the primary one first.

    ``primary`` is a shipped reading's name (then every shipped reading and the paper's follow)
    or a user's law (then only its paper reading follows)."""
    if isinstance(primary, Law):
        return [
            Reading(USER, primary, _provenance(primary, "your law")),
            Reading(
                PAPER,
                paper_law(primary),
                f"alpha = 1 with the knee fitted to your law's points ({len(primary.points)} S); "
                f"measured on {reading_label(primary)}",
            ),
        ]
    if primary not in READING_NAMES:
        raise ValueError(f"no law reading {primary!r}; choose one of {', '.join(READING_NAMES)}")
    conservative = shipped_law("conservative")
    out = {
        name: Reading(name, shipped_law(name), _provenance(shipped_law(name), kind))
        for name, (_, kind) in SHIPPED.items()
    }
    paper = paper_law(conservative)
    out[PAPER] = Reading(
        PAPER,
        paper,
        f"the paper's alpha = 1, knee s_c = {paper.eta_opt.s_c:.3g} fitted to the conservative "
        f"law's points; measured on {reading_label(conservative)}",
    )
    return [out[primary], *(r for name, r in out.items() if name != primary)]


def default_law() -> Law:
    """The law stalesim reads by default: the ``conservative`` reading."""
    return shipped_law(DEFAULT_READING)


__all__ = [
    "DEFAULT_READING",
    "PAPER",
    "READING_NAMES",
    "SHIPPED",
    "USER",
    "Reading",
    "default_law",
    "paper_law",
    "reading_label",
    "readings",
    "shipped_law",
]
