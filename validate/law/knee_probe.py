"""Predict the staleness knee from a short on-policy probe, before any stale run is made.

The paper bounds the learning rate of asynchronous GRPO by two terms,

    eta << min{ R_batch / (S · G_upd),  R_crit / (T · G_upd) },

the first *stale-limited* (a batch sampled ``S`` versions ago stays useful while the weights
have moved less than ``R_batch``), the second *horizon-limited* (over ``T`` steps the weights
may move at most ``R_crit``). Both are written in quantities an on-policy run can measure:

* **G_upd(eta)**, the drift per step per unit learning rate: ``‖θ_{t+1} − θ_t‖ / eta``, the
  median over the steps of an on-policy run at constant ``eta`` after warm-up. With Adam the
  step size barely depends on the gradient's scale, so ``G_upd`` is close to a constant; the
  probe measures it at several ``eta`` and fits ``‖θ_{t+1} − θ_t‖ ∝ eta ** a`` (``a = 1`` when
  ``G_upd`` does not depend on ``eta``).
* **R_batch**, the parameter distance over which a stale batch's gradient keeps pointing the
  fresh gradient's way. At a checkpoint version ``v`` of an on-policy run, for each lag
  ``k = 0…K`` the probe samples batches with the exact weights of version ``v − k`` (with their
  behaviour log-probs), and takes the gradient of the GRPO surrogate at ``θ_v`` on each (the
  same clipped, importance-weighted loss training uses). It compares the *expected* stale
  gradient ``g_k`` with the expected fresh gradient ``g_0``:
  ``cos_k = <g_k, g_0> / (‖g_k‖ ‖g_0‖)`` and ``err_k = ‖g_k − g_0‖ / ‖g_0‖``.
  One batch's gradient is mostly noise, so every inner product is estimated without the noise's
  bias from independent halves: ``‖g‖² ≈ <ḡ_A, ḡ_B>`` (the two halves' means), and
  ``<g_k, g_0>`` from products of batches that share no sample (:func:`alignment`). The lag's
  parameter distance is ``d_k = ‖θ_v − θ_{v−k}‖``. **R_batch is the distance ``d`` at which
  the noise-corrected cosine first falls to 1/2**, read by linear interpolation between the two
  lags that straddle it (:func:`crossing`); if it never falls that far within ``K`` lags the
  reading is a lower bound (``d_K``), flagged as such.

Predicting the knee. The horizon term is not measured by the probe: it is the on-policy optimum
``eta_opt(0)`` of the same task and horizon (read from the task's fitted law). The two terms
meet at the knee ``S_c``. Writing both with the same constant ``c`` (the "<<"),
``eta_opt(0) = c · R_crit / (T · G_upd)`` and the stale-limited optimum
``eta_s(S) = c · R_batch / (S · G_upd(eta_s))``. **Assumption 1: c = 1 with R_batch defined at
cosine 1/2**, i.e. the best stale rate is the one at which ``S`` steps of drift use up the
half-alignment distance. Then

    S_c = R_batch / (eta_opt(0) · G_upd(eta_opt(0)))          (the bound's knee)

and, with ``G_upd ∝ eta ** (a − 1)``, the stale-limited optimum obeys
``S · eta_s ** a = const``, so

    d ln eta_opt / d ln S = −1 / a   beyond the knee           (the bound's slope).

The bound counts the drift over ``S`` steps as ``S`` times one step's (straight-line motion).
Real drift may be slower: the probe measures ``d_k ∝ k ** γ`` at each checkpoint
(``γ = 1`` straight, ``γ = 1/2`` a random walk). Using the measured drift instead of
``S · G_upd`` gives a second reading, **the drift reading**: at ``eta_opt(0)`` the knee is the
lag ``k_½`` at which the cosine itself falls to 1/2, and the slope is ``−γ / a``. Both
readings are reported; the bound's is the primary one (the one the paper writes), chosen before
the probe's numbers were seen.

Two more readings are recorded beside these, and added after the first probe table (version 20
of seed 0) showed the cosine staying above 0.9 out to 16 lags, so that R_batch at cosine 1/2 is
only a lower bound there: the distance at which the relative error ``err_k`` first reaches 1
(the stale gradient's error as large as the fresh gradient; ``S_c`` read the bound's way from
it), and ``R_batch`` extrapolated from a fitted decay ``cos = exp(−d / ℓ)`` (``R = ℓ ln 2``).
Neither replaces the primary reading.

Further assumptions, stated so a reader can weigh them: R_batch and the drift are read along
the on-policy trajectory at ``eta_opt(0)``, and assumed to hold for the stale runs and at the
other rates; ``eta_opt(0)`` carries the horizon and the score by which it was located; the
interval of ``S_c`` is the spread over seeds and checkpoints (min to max) combined with the ends
of ``eta_opt(0)``'s interval, not a sampling interval of checked coverage.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: The cosine at which a stale batch's gradient counts as no longer pointing the fresh way.
HALF = 0.5


@dataclass(frozen=True)
class Alignment:
    """A stale expected gradient against the fresh one, with the noise bias removed."""

    cosine: float
    rel_error: float
    norm2: float  # ‖g_k‖², unbiased
    fresh_norm2: float  # ‖g_0‖², unbiased


def _half_means(batches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means of the first and second half of ``batches`` (rows are one batch's gradient)."""
    n = batches.shape[0]
    if n < 2 or n % 2:
        raise ValueError(f"gradient batches: need an even number >= 2, got {n}")
    return batches[: n // 2].mean(0), batches[n // 2 :].mean(0)


def alignment(stale: np.ndarray, fresh: np.ndarray, same: bool = False) -> Alignment:
    """Cosine and relative error of the expected gradient of ``stale`` batches against that of
    ``fresh`` ones (each ``[n_batches, n_params]``, ``n_batches`` even), estimated without the
    bias the batches' noise puts in a plain cosine of means.

    ``‖E g‖²`` is estimated by ``<mean of half A, mean of half B>``, whose expectation is
    ``‖E g‖²`` exactly when the halves are independent; ``<E g_k, E g_0>`` by the mean of the
    four products of halves of the two independent sets (or, with ``same=True``, when ``stale``
    *is* the fresh set, by the halves' product, which gives cosine 1). A norm estimate <= 0
    (noise swamps the signal) gives NaN.
    """
    sa, sb = _half_means(np.asarray(stale, dtype=float))
    fa, fb = _half_means(np.asarray(fresh, dtype=float))
    norm2 = float(sa @ sb)
    fresh2 = float(fa @ fb)
    cross = norm2 if same else float((sa @ fa + sa @ fb + sb @ fa + sb @ fb) / 4)
    if norm2 <= 0 or fresh2 <= 0:
        return Alignment(math.nan, math.nan, norm2, fresh2)
    cosine = cross / math.sqrt(norm2 * fresh2)
    err2 = max(norm2 + fresh2 - 2 * cross, 0.0)
    return Alignment(cosine, math.sqrt(err2 / fresh2), norm2, fresh2)


def crossing(
    x: Sequence[float], cosine: Sequence[float], level: float = HALF
) -> tuple[float, bool]:
    """The ``x`` at which ``cosine`` first falls to ``level``, by linear interpolation between
    the last point above it and the first at or below it; ``(x[-1], False)`` (a lower bound)
    when it never does. NaN cosines (noise-swamped) are skipped."""
    pts = [(float(a), float(c)) for a, c in zip(x, cosine, strict=True) if math.isfinite(c)]
    if not pts:
        raise ValueError("cosine: no finite value to read a crossing from")
    prev = pts[0]
    if prev[1] <= level:
        return prev[0], True
    for point in pts[1:]:
        if point[1] <= level:
            (x0, c0), (x1, c1) = prev, point
            return x0 + (x1 - x0) * (c0 - level) / (c0 - c1), True
        prev = point
    return pts[-1][0], False


def decay_scale(x: Sequence[float], cosine: Sequence[float]) -> float:
    """``ℓ`` of the least-squares fit ``cos = exp(−x / ℓ)`` (through ``cos = 1`` at ``x = 0``)
    over the points with ``x > 0`` and ``0 < cos < 1``; ``inf`` when no point has fallen below
    1 (no decay seen). Used to extrapolate ``R_batch`` past the last lag, flagged as such."""
    xs, cs = np.asarray(x, dtype=float), np.asarray(cosine, dtype=float)
    keep = (xs > 0) & np.isfinite(cs) & (cs > 0) & (cs < 1)
    if not keep.any():
        return math.inf
    y = -np.log(cs[keep])
    # least squares of y = x / ℓ through the origin
    return float((xs[keep] @ xs[keep]) / (xs[keep] @ y))


def power_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of ``ln y`` on ``ln x`` over the points with ``x, y > 0``."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (xs > 0) & (ys > 0) & np.isfinite(xs) & np.isfinite(ys)
    if keep.sum() < 2:
        raise ValueError("power law: need at least two positive points")
    return float(np.polyfit(np.log(xs[keep]), np.log(ys[keep]), 1)[0])


@dataclass(frozen=True)
class KneePrediction:
    """The knee and the stale-limited slope predicted from one probe reading."""

    s_c_bound: float  # R_batch / (eta0 · G_upd(eta0))
    slope_bound: float  # −1 / a
    s_c_drift: float  # k at which the cosine falls to 1/2
    slope_drift: float  # −γ / a


def predict_knee(
    r_batch: float, g_upd: float, eta0: float, a: float, k_half: float, gamma: float
) -> KneePrediction:
    """The bound's and the drift reading's knee and slope (see the module docstring)."""
    for name, value in (("R_batch", r_batch), ("G_upd", g_upd), ("eta_opt(0)", eta0), ("a", a)):
        if not value > 0:
            raise ValueError(f"{name}={value!r}: must be > 0")
    return KneePrediction(
        s_c_bound=r_batch / (eta0 * g_upd),
        slope_bound=-1.0 / a,
        s_c_drift=k_half,
        slope_drift=-gamma / a,
    )


def stale_limited_rate(s: float, r_batch: float, g_upd0: float, eta0: float, a: float) -> float:
    """The rate ``eta`` solving ``S · eta · G_upd(eta) = R_batch`` with
    ``G_upd(eta) = g_upd0 · (eta / eta0) ** (a − 1)``: the bound's stale-limited optimum."""
    # S · eta0 · g_upd0 · (eta/eta0) ** a = R_batch
    return eta0 * (r_batch / (s * eta0 * g_upd0)) ** (1.0 / a)


# ----------------------------------------------------------------------------------------------
# The probe on real GRPO training (torch imported only here)


@dataclass
class ProbeSettings:
    """What the probe measures and how hard it looks."""

    eta0: float
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    checkpoints: list[int] = field(default_factory=lambda: [20, 100, 200])
    max_lag: int = 16
    batches: int = 8  # gradient batches per lag (two halves)
    batch_prompts: int = 32  # prompts per gradient batch (x samples_per_prompt)
    drift_factors: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    drift_steps: int = 60
    warmup_steps: int = 10  # the train config's, excluded from the drift median

    def check(self) -> None:
        """ValueError (one line) naming the first setting out of range."""
        if not self.eta0 > 0 or not math.isfinite(self.eta0):
            raise ValueError(f"--eta0 {self.eta0!r}: must be a positive number")
        if not self.seeds or any(not 0 <= s < 2**32 for s in self.seeds):
            raise ValueError(f"--seeds {self.seeds}: whole numbers in 0..4294967295")
        if not 1 <= self.max_lag <= 256:
            raise ValueError(f"--max-lag {self.max_lag}: allowed 1..256")
        if not self.checkpoints or any(c <= self.max_lag for c in self.checkpoints):
            raise ValueError(
                f"--checkpoints {self.checkpoints}: each must be > --max-lag {self.max_lag} "
                "(the probe needs the weights of versions v - max_lag .. v, all after the warm start)"
            )
        if self.batches < 2 or self.batches % 2 or self.batches > 1024:
            raise ValueError(f"--batches {self.batches}: an even number in 2..1024")
        if not 1 <= self.batch_prompts <= 4096:
            raise ValueError(f"--batch-prompts {self.batch_prompts}: allowed 1..4096")
        if len(self.drift_factors) < 2 or any(not 0 < f <= 100 for f in self.drift_factors):
            raise ValueError(
                f"--drift-factors {self.drift_factors}: at least two factors in (0, 100]"
            )
        if not self.warmup_steps < self.drift_steps <= max(self.checkpoints):
            raise ValueError(
                f"--drift-steps {self.drift_steps}: must exceed the warm-up "
                f"({self.warmup_steps} steps) and be at most the last checkpoint "
                f"({max(self.checkpoints)}): the rate-eta0 run supplies those steps"
            )


def _flat(module: Any) -> Any:
    import torch

    return torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])


def _gradients(cfg: Any, task: Any, learner: Any, behaviour: Any, n: int, prompts: int, gen: Any):
    """``n`` gradients (rows) of the GRPO surrogate at ``learner``'s weights, each on a fresh
    batch sampled by ``behaviour`` (its log-probs are the importance weights' denominators)."""
    import torch
    from stalesim import kernels
    from stalesim.validate.train.trainer import grpo_step_loss, policy_sample

    device = next(learner.parameters()).device
    rows = []
    for _ in range(n):
        rewards, batch_prompts, rollout = policy_sample(
            cfg, task, behaviour, gen, device, prompts_count=prompts
        )
        advantages = kernels.group_advantages(
            rewards.to(device), scale=cfg.grpo.advantage_scale, backend=cfg.backend
        ).reshape(-1)
        loss, _, _ = grpo_step_loss(learner, task, cfg, batch_prompts, rollout, advantages)
        learner.zero_grad(set_to_none=True)
        loss.backward()
        rows.append(
            torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).double()
                    for p in learner.parameters()
                ]
            )
        )
    learner.zero_grad(set_to_none=True)
    return torch.stack(rows).cpu().numpy()


class _Recorder:
    """An observer of :func:`~stalesim.validate.train.trainer.train_run`: keeps the last
    ``max_lag + 1`` versions' weights, records each step's drift, and at each checkpoint version
    measures the stale gradients' alignment. It uses its own generator and its own copies of the
    policy, so the run it watches trains exactly as it would unwatched."""

    def __init__(self, cfg: Any, task: Any, settings: ProbeSettings, seed: int) -> None:
        import torch

        self.cfg, self.task, self.settings = cfg, task, settings
        self.gen = torch.Generator().manual_seed(1_000_003 + seed)
        self.states: dict[int, dict[str, Any]] = {}
        self.flats: dict[int, Any] = {}
        self.drift: list[tuple[int, float]] = []
        self.table: list[dict[str, Any]] = []
        self.learner: Any = None
        self.behaviour: Any = None

    def __call__(self, event: str, **payload: Any) -> None:
        if event != "version":
            return
        version, policy = payload["version"], payload["policy"]
        if self.learner is None:
            self.learner = copy.deepcopy(policy)
            self.behaviour = copy.deepcopy(policy)
            self.behaviour.requires_grad_(False)
        flat = _flat(policy)
        if version - 1 in self.flats:
            self.drift.append((version, float((flat - self.flats[version - 1]).norm())))
        self.flats[version] = flat
        self.states[version] = {k: v.detach().clone() for k, v in policy.state_dict().items()}
        for old in [v for v in self.flats if v < version - self.settings.max_lag]:
            del self.flats[old], self.states[old]
        if version in self.settings.checkpoints:
            self._probe(version)

    def _probe(self, version: int) -> None:
        s = self.settings
        self.learner.load_state_dict(self.states[version])
        grads = {}
        for k in range(s.max_lag + 1):
            self.behaviour.load_state_dict(self.states[version - k])
            grads[k] = _gradients(
                self.cfg, self.task, self.learner, self.behaviour, s.batches, s.batch_prompts,
                self.gen,
            )  # fmt: skip
        for k in range(s.max_lag + 1):
            al = alignment(grads[k], grads[0], same=k == 0)
            self.table.append(
                {
                    "version": version,
                    "lag": k,
                    "distance": float((self.flats[version] - self.flats[version - k]).norm()),
                    "cosine": al.cosine,
                    "rel_error": al.rel_error,
                    "norm2": al.norm2,
                    "fresh_norm2": al.fresh_norm2,
                }
            )


def _on_policy_run(preset_train: Any, lr: float, seed: int, steps: int, observer: Any) -> Any:
    from stalesim.validate.train.presets import RunConfig
    from stalesim.validate.train.trainer import train_run

    train = preset_train.model_copy(update={"steps": steps})
    run = RunConfig(preset="knee-probe", train=train, lr=lr, staleness="fixed:0", seed=seed)
    return train_run(run, observer=observer)


def run_probe(
    train: Any,
    settings: ProbeSettings,
    eta0_interval: tuple[float, float] | None = None,
    on_run: Any = None,
) -> dict[str, Any]:
    """Run the probe: per seed, one on-policy run at ``eta0`` to the last checkpoint with the
    alignment measured at each checkpoint, and one short run per drift factor (the run at factor
    1 reuses the first). Returns the raw tables and the prediction (JSON-ready)."""
    import torch

    # one torch thread, as the sweep's workers train: on a shared machine a second thread
    # spins far more than it computes for a model this small
    torch.set_num_threads(1)
    task = train.task.build()
    last = max(settings.checkpoints)
    alignment_rows: list[dict[str, Any]] = []
    drift_rows: list[dict[str, Any]] = []
    settings = replace(settings, warmup_steps=train.warmup_steps)
    settings.check()
    # versions still warming up are left out of the drift median
    warm = train.warmup_steps
    for seed in settings.seeds:
        rec = _Recorder(train, task, settings, seed)
        steps = math.ceil(last / train.minibatches_per_step)
        result = _on_policy_run(train, settings.eta0, seed, steps, rec)
        if result.run["collapsed"]:
            raise ValueError(
                f"the probe's run at eta0={settings.eta0:g} (seed {seed}) collapsed at step "
                f"{result.run['collapse_step']}: eta0 is not an on-policy optimum"
            )
        alignment_rows += [{"seed": seed, **row} for row in rec.table]
        per_lr = {1.0: rec.drift}
        for factor in settings.drift_factors:
            if factor == 1.0:
                continue
            drift_rec = _Recorder(train, task, replace(settings, checkpoints=[]), seed)
            _on_policy_run(train, settings.eta0 * factor, seed, settings.drift_steps, drift_rec)
            per_lr[factor] = drift_rec.drift
        for factor, drift in per_lr.items():
            lr = settings.eta0 * factor
            kept = [d for v, d in drift if warm < v <= settings.drift_steps]
            drift_rows.append(
                {
                    "seed": seed,
                    "lr": lr,
                    "steps": len(kept),
                    "step_drift": float(np.median(kept)),
                    "g_upd": float(np.median(kept)) / lr,
                }
            )
        if on_run is not None:
            on_run(seed)
    return {
        "alignment": alignment_rows,
        "drift": drift_rows,
        "prediction": prediction_from_tables(
            alignment_rows, drift_rows, settings.eta0, eta0_interval
        ),
    }


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity: an unbounded reading is written as null."""
    return value if math.isfinite(value) else None


def prediction_from_tables(
    alignment_rows: list[dict[str, Any]],
    drift_rows: list[dict[str, Any]],
    eta0: float,
    eta0_interval: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The knee and slope from the probe's raw tables: one reading per (seed, checkpoint), the
    point prediction from the medians of R_batch, G_upd(eta0), k_½ and γ, and the interval from
    the readings' min and max combined with ``eta0_interval``'s ends (see the module docstring).
    """
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for row in drift_rows:
        by_seed.setdefault(row["seed"], []).append(row)
    a_by_seed = {
        seed: power_exponent([r["lr"] for r in rows], [r["step_drift"] for r in rows])
        for seed, rows in by_seed.items()
    }
    g0_by_seed = {
        seed: min(rows, key=lambda r: abs(math.log(r["lr"] / eta0)))["g_upd"]
        for seed, rows in by_seed.items()
    }
    readings = []
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in alignment_rows:
        groups.setdefault((row["seed"], row["version"]), []).append(row)
    skipped = []
    for (seed, version), rows in sorted(groups.items()):
        rows = sorted(rows, key=lambda r: r["lag"])
        if not rows[0]["fresh_norm2"] > 0:
            # the fresh gradient's own halves disagree: noise swamps the signal here
            skipped.append({"seed": seed, "version": version})
            continue
        dist = [r["distance"] for r in rows]
        cos = [r["cosine"] for r in rows]
        lags = [r["lag"] for r in rows]
        r_batch, r_seen = crossing(dist, cos)
        k_half, k_seen = crossing(lags, cos)
        gamma = power_exponent(lags[1:], dist[1:])
        pred = predict_knee(r_batch, g0_by_seed[seed], eta0, a_by_seed[seed], k_half, gamma)
        err = [r["rel_error"] for r in rows]
        r_err, err_seen = crossing(dist, [-e for e in err], -1.0)
        readings.append(
            {
                "seed": seed,
                "version": version,
                "r_batch": r_batch,
                "r_batch_is_bound": not r_seen,
                "r_batch_extrapolated": _finite_or_none(decay_scale(dist, cos) * math.log(2)),
                "r_err": r_err,
                "r_err_is_bound": not err_seen,
                "s_c_err": r_err / (eta0 * g0_by_seed[seed]),
                "k_half": k_half,
                "k_half_is_bound": not k_seen,
                "gamma": gamma,
                "g_upd": g0_by_seed[seed],
                "a": a_by_seed[seed],
                "s_c_bound": pred.s_c_bound,
                "slope_bound": pred.slope_bound,
                "s_c_drift": pred.s_c_drift,
                "slope_drift": pred.slope_drift,
                "cos_level": {
                    str(level): crossing(dist, cos, level)[0] / (eta0 * g0_by_seed[seed])
                    for level in (0.7, 0.3)
                },
            }
        )
    if not readings:
        raise ValueError(
            "the probe read no checkpoint: the gradient noise swamps its mean at every one "
            "(raise --batches or --batch-prompts)"
        )
    lo_eta, hi_eta = eta0_interval or (eta0, eta0)

    def med(key: str) -> float:
        return float(np.median([r[key] for r in readings]))

    s_c = med("r_batch") / (eta0 * med("g_upd"))
    s_c_lo = min(r["r_batch"] / (hi_eta * r["g_upd"]) for r in readings)
    s_c_hi = max(r["r_batch"] / (lo_eta * r["g_upd"]) for r in readings)
    bounds = sum(r["r_batch_is_bound"] for r in readings)
    if bounds:
        # a reading whose cosine never fell to 1/2 only bounds its knee from below
        s_c_hi = None
    slopes = [r["slope_bound"] for r in readings]
    return {
        "eta0": eta0,
        "eta0_interval": [lo_eta, hi_eta],
        "r_batch": med("r_batch"),
        "g_upd": med("g_upd"),
        "a": med("a"),
        "gamma": med("gamma"),
        "s_c": s_c,
        "s_c_interval": [s_c_lo, s_c_hi],
        # at least half the readings are lower bounds: so is the point prediction
        "s_c_is_lower_bound": 2 * bounds >= len(readings),
        "slope": -1.0 / med("a"),
        "slope_interval": [min(slopes), max(slopes)],
        "s_c_drift": med("k_half"),
        "s_c_drift_interval": [
            min(r["k_half"] for r in readings),
            None if any(r["k_half_is_bound"] for r in readings)
            else max(r["k_half"] for r in readings),
        ],
        "slope_drift": -med("gamma") / med("a"),
        "slope_drift_interval": [min(r["slope_drift"] for r in readings), max(r["slope_drift"] for r in readings)],
        "any_r_batch_bound": any(r["r_batch_is_bound"] for r in readings),
        "s_c_extrapolated": _finite_or_none(
            float(np.median([r["r_batch_extrapolated"] or math.inf for r in readings]))
            / (eta0 * med("g_upd"))
        ),
        "s_c_err": med("s_c_err"),
        "s_c_err_interval": [min(r["s_c_err"] for r in readings), max(r["s_c_err"] for r in readings)],
        "any_r_err_bound": any(r["r_err_is_bound"] for r in readings),
        "readings": readings,
        "skipped": skipped,
    }  # fmt: skip
