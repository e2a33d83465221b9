"""Fit a scenario to a trainer's per-step logs: workload, learner rates and generation speed.

The input is a :class:`~stalesim.sim.calibrate.trainer_logs.StepLog` (per-step phase seconds and length
statistics, as verl, OpenRLHF or AReaL log them) and the scenario of the run that wrote it (its
GPUs, batch, model and mode: the log does not say them). Three parts are fitted, each at the
granularity of a training step, each with its fit error:

* **workload** — response lengths are lognormal (the simulator's default family). A step's
  logged mean is of lengths *cut* at ``max_response_tokens`` ``L``; with the share cut (the
  clip ratio ``c``) a step pins both lognormal parameters: ``mu = ln L - sigma * z`` with
  ``z = Phi^-1(1 - c)``, and ``sigma`` solves ``E[min(X, L)] = mean``. Without clipping the
  step's longest response gives a rough ``sigma`` (the expected maximum of ``n = B*G`` draws,
  ``ln(max/mean) = sigma*z_n - sigma^2/2``). One ``sigma`` (the median over steps) is kept;
  each step's uncut mean then solves the cut-mean equation, and a straight line over the steps
  gives the initial mean and ``response_growth_per_step`` (slope over intercept, the
  simulator's form of the drift). The prompt length is the logged mean prompt, fixed.
* **learner** — phase seconds times the learner's effective GPUs (``n`` times the scenario's
  data-parallel efficiency ``dp_efficiency(n)``, so that the simulator, which divides by the
  same, reproduces the seconds) over the step's tokens: the update phase is fitted by
  non-negative least squares to ``x_train * T / n_eff + M * step_overhead_s`` over the steps
  (``M`` optimizer steps per learner step; the intercept only when the tokens vary enough
  between steps to separate it, else through the origin); forward-only passes (old-policy and
  reference log-probs, pooled) through the origin. Tokens per step are the logged count when
  the framework logs one, else ``(prompt + response mean) * B * G``.
* **generation** — one scale ``k`` on the scenario's decode time model (all four coefficients:
  weight reads, KV reads, per-sequence compute, prefill; from the roofline or from measured
  coefficients already in the scenario). A single scale is what a per-step generation time can
  pin down: a step's generation time is one number per step, driven by the batch's longest
  answers, so it cannot separate the weight-read, KV-read and compute terms, while their
  ratios (which set how an engine slows as its batch and context grow) come from the hardware
  and model and stay meaningful when the setup changes. ``k`` is found by simulating the
  generation phase of the calibrated scenario (the learner's wait for its batch in a
  synchronous mode: generation plus the weight load) for ``sim_steps`` steps and matching its
  mean to the mean of the first ``sim_steps`` logged steps (all of them when the log is
  shorter: a log of run averages has one row), in up to three rounds (the weight load does
  not scale with ``k``). Only synchronous
  runs (``sync``, ``sync_colocated``) say how long generating a whole batch takes; for other
  modes the generation rate is left as it is, with a warning.

When the log has a weight-update time (verl's ``timing_s/update_weights``), its mean less the
transfer the simulator charges for the scenario becomes ``weight_sync.publish_s``, the
learner's own cost of publishing a version.

Fit errors are R² and the relative RMS error (RMS residual over the mean) per part; a part
whose R² is below 0.5 while it misses by over 10%, or that misses by over 25% whatever its R²,
is reported as explaining little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import yaml
from scipy.optimize import brentq, nnls
from scipy.special import ndtr, ndtri
from stalesim.common.config_file import ConfigError, deep_merge, validate_config
from stalesim.sim.calibrate.timings import FitQuality
from stalesim.sim.calibrate.trainer_logs import StepLog
from stalesim.sim.derived import derive, old_logprob_pass
from stalesim.sim.learner import cluster_dp_efficiency
from stalesim.sim.lengths import Fixed, LogNormal, Uniform
from stalesim.sim.modes import MODES
from stalesim.sim.scenario import Scenario

#: Simulated steps for the generation fit (more rows of the log are averaged, not simulated).
DEFAULT_SIM_STEPS = 6
#: Least relative spread of tokens per step that separates the update's fixed cost.
MIN_TOKEN_SPREAD = 0.05
MAX_SIGMA = 5.0


def quality(measured: np.ndarray, predicted: np.ndarray) -> FitQuality:
    """R² and relative RMS error of ``predicted`` against ``measured`` (R² is NaN for one row
    or a constant series)."""
    measured = np.asarray(measured, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    residual = measured - predicted
    total = float(np.sum((measured - measured.mean()) ** 2))
    r2 = (
        1.0 - float(np.sum(residual**2)) / total
        if total > 1e-12 * max(1.0, float(np.sum(measured**2)))
        else float("nan")
    )
    mean = float(measured.mean())
    rms = float(np.sqrt(np.mean(residual**2)))
    return FitQuality(
        rows=int(measured.size), r2=r2, relative_rms=rms / mean if mean > 0 else float("nan")
    )


def explains_little(q: FitQuality) -> bool:
    """The rule for a warning: low R² with a real miss, or a large miss whatever the R²."""
    rel = q.relative_rms
    if math.isnan(rel):
        return False
    if rel > 0.25:
        return True
    return not math.isnan(q.r2) and q.r2 < 0.5 and rel > 0.10


# --- workload ---------------------------------------------------------------------------------


def cut_mean(mean: float, sigma: float, cap: float) -> float:
    """``E[min(X, cap)]`` for a lognormal ``X`` of arithmetic mean ``mean`` and log-spread
    ``sigma``."""
    if sigma <= 0:
        return min(mean, cap)
    mu = math.log(mean) - 0.5 * sigma**2
    a = (math.log(cap) - mu) / sigma
    return float(mean * ndtr(a - sigma) + cap * (1.0 - ndtr(a)))


def sigma_from_clip(mean_cut: float, clip: float, cap: float) -> float | None:
    """The lognormal spread for which a share ``clip`` is cut at ``cap`` and the cut mean is
    ``mean_cut``; None when no spread fits."""
    if not (0.0 < clip < 1.0) or not (cap * clip < mean_cut < cap):
        return None
    z = float(ndtri(1.0 - clip))

    def gap(s: float) -> float:
        mu = math.log(cap) - s * z
        return cut_mean(math.exp(mu + 0.5 * s * s), s, cap) - mean_cut

    lo, hi = 1e-4, MAX_SIGMA
    if gap(lo) * gap(hi) > 0:
        return None
    return float(brentq(gap, lo, hi, xtol=1e-8))


def sigma_from_max(mean: float, longest: float, draws: int) -> float | None:
    """A rough spread from the longest of ``draws`` responses: ``ln(max/mean) = s*z_n - s²/2``."""
    if draws < 2 or longest <= mean or mean <= 0:
        return None
    z = float(ndtri(1.0 - 1.0 / (draws + 1)))
    ratio = math.log(longest / mean)
    disc = z * z - 2.0 * ratio
    return float(min(z - math.sqrt(disc) if disc >= 0 else z, MAX_SIGMA))


def uncut_mean(mean_cut: float, sigma: float, cap: float) -> float:
    """The lognormal's arithmetic mean whose cut mean is ``mean_cut``."""
    if mean_cut >= cap:
        raise ConfigError(
            f"a mean response length of {mean_cut:g} is not below workload.max_response_tokens="
            f"{cap:g}; set --scenario to the run's own cap"
        )
    hi = mean_cut * 2.0
    while cut_mean(hi, sigma, cap) < mean_cut and hi < 1e12:
        hi *= 2.0
    return float(brentq(lambda m: cut_mean(m, sigma, cap) - mean_cut, mean_cut, hi, xtol=1e-6))


@dataclass
class WorkloadFit:
    """The fitted lengths: lognormal responses with drift, and the prompt length."""

    response_mean: float | None = None
    sigma: float | None = None
    sigma_from: str = ""
    growth: float | None = None
    prompt_tokens: int | None = None
    quality: FitQuality | None = None
    per_step_means: list[float] = field(default_factory=list)
    fixed_at_cap: int | None = None

    def fragment(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.fixed_at_cap is not None:
            out["response_tokens"] = {"kind": "fixed", "value": self.fixed_at_cap}
            out["response_growth_per_step"] = 0.0
        elif self.response_mean is not None and self.sigma is not None:
            out["response_tokens"] = {
                "kind": "lognormal",
                "mean": round(self.response_mean, 1),
                "sigma": round(self.sigma, 4),
            }
            out["response_growth_per_step"] = round(self.growth or 0.0, 6)
        if self.prompt_tokens is not None:
            out["prompt_tokens"] = {"kind": "fixed", "value": self.prompt_tokens}
        return out


def _scenario_mean(dist: Any) -> float:
    if isinstance(dist, Fixed):
        return float(dist.value)
    if isinstance(dist, Uniform):
        return 0.5 * (dist.low + dist.high)
    if isinstance(dist, LogNormal):
        return float(dist.mean)
    return float(np.mean(dist.values))


def fit_workload(log: StepLog, scenario: Scenario, warnings: list[str]) -> WorkloadFit:
    """Lengths from the per-step means, maxima and clip ratios (see the module docstring)."""
    work = scenario.workload
    fit = WorkloadFit()
    if log.has("prompt_mean"):
        fit.prompt_tokens = max(1, round(float(np.mean(log.column("prompt_mean")))))
    if not log.has("response_mean"):
        warnings.append(
            "the log has no mean response length: the scenario's response lengths are kept"
        )
        return fit
    cap = float(work.max_response_tokens)
    means = log.column("response_mean").astype(np.float64)
    if (means <= 0).any():
        raise ConfigError(f"{log.source}: a mean response length is not positive")
    steps = log.column("step").astype(np.float64)
    # a step whose every response was cut says only that the lengths reach the cap
    saturated = means >= cap * (1.0 - 1e-9)
    if saturated.all():
        fit.fixed_at_cap = int(cap)
        fit.sigma_from = "every response cut at max_response_tokens"
        warnings.append(
            f"every logged response reached max_response_tokens={int(cap)}: responses fixed "
            "at the cap"
        )
        return fit
    if saturated.any():
        warnings.append(
            f"{int(saturated.sum())} of {means.size} steps had every response cut at "
            f"max_response_tokens={int(cap)}; the length fit uses the others"
        )
    means, steps = means[~saturated], steps[~saturated]
    clips = log.column("clip_ratio")[~saturated] if log.has("clip_ratio") else None
    tops = log.column("response_max")[~saturated] if log.has("response_max") else None
    sigmas: list[float] = []
    if clips is not None:
        for m, c in zip(means, clips, strict=True):
            s = sigma_from_clip(float(m), float(c), cap)
            if s is not None:
                sigmas.append(s)
        fit.sigma_from = "clip ratio at max_response_tokens"
    if not sigmas and tops is not None:
        draws = work.prompts_per_step * work.group_size
        for m, top in zip(means, tops, strict=True):
            if top < cap:  # a cut maximum says nothing about the tail
                s = sigma_from_max(float(m), float(top), draws)
                if s is not None:
                    sigmas.append(s)
        fit.sigma_from = "longest response per step (rough)"
    if sigmas:
        fit.sigma = float(np.median(sigmas))
    else:
        kept = work.response_tokens
        fit.sigma = float(kept.sigma) if isinstance(kept, LogNormal) else 0.8
        fit.sigma_from = "the scenario's (the log pins no spread)"
        warnings.append(
            f"response-length spread not in the log (no clipping, no usable maximum): sigma "
            f"{fit.sigma:g} kept"
        )
    uncut = np.array([uncut_mean(float(m), fit.sigma, cap) for m in means])
    t = steps - steps[0]
    if uncut.size >= 2 and np.ptp(t) > 0:
        slope, intercept = np.polyfit(t, uncut, 1)
    else:
        slope, intercept = 0.0, float(uncut.mean())
    if intercept <= 0:
        slope, intercept = 0.0, float(uncut.mean())
    growth = float(slope / intercept)
    if growth < 0:
        warnings.append(
            f"response lengths shrink over the run ({growth:+.2%} of the first step's per "
            "step); the simulator models growth only: response_growth_per_step=0, mean of "
            "the run kept"
        )
        growth, intercept = 0.0, float(uncut.mean())
    growth = min(growth, 1.0)
    fit.response_mean = float(max(1.0, intercept))
    fit.growth = growth
    fit.per_step_means = uncut.tolist()
    fit.quality = quality(uncut, fit.response_mean * (1.0 + growth * t))
    return fit


# --- learner ----------------------------------------------------------------------------------


@dataclass
class LearnerFit:
    """Per-GPU learner coefficients and how well they reproduce each phase."""

    coefficients: dict[str, float] = field(default_factory=dict)
    quality: dict[str, FitQuality] = field(default_factory=dict)
    gpus: int = 0
    effective_gpus: float = 0.0
    tokens_from: str = ""
    forward_from: str = ""


def step_tokens(log: StepLog, scenario: Scenario, workload: WorkloadFit) -> tuple[np.ndarray, str]:
    """Tokens each step trained on, and where the number came from."""
    if log.has("tokens"):
        return log.column("tokens").astype(np.float64), f"logged ({log.keys['tokens']})"
    work = scenario.workload
    samples = work.prompts_per_step * work.group_size
    if log.has("prompt_mean"):
        prompt = log.column("prompt_mean").astype(np.float64)
    else:
        prompt = np.full(log.frame.height, _scenario_mean(work.prompt_tokens))
    if log.has("response_mean"):
        response = log.column("response_mean").astype(np.float64)
        where = "(prompt + response mean) x B x G"
    else:
        # lengths unknown: the scenario's assumed ones (cut at the cap) stand in
        dist = work.response_tokens
        mean = _scenario_mean(dist)
        if isinstance(dist, LogNormal):
            mean = cut_mean(mean, dist.sigma, work.max_response_tokens)
        response = np.full(log.frame.height, mean)
        where = "the scenario's assumed lengths x B x G (the log has none)"
    return (prompt + response) * samples, where


def fit_learner(
    log: StepLog, scenario: Scenario, workload: WorkloadFit, warnings: list[str]
) -> LearnerFit:
    """Training and forward-only GPU-seconds per token, and the fixed cost per optimizer step."""
    derived = derive(scenario)
    n = derived.learner_gpus
    eff = cluster_dp_efficiency(scenario.cluster, n)
    n_eff = n * eff
    tokens, where = step_tokens(log, scenario, workload)
    if (tokens <= 0).any():
        raise ConfigError(f"{log.source}: a step has no tokens")
    fit = LearnerFit(gpus=n, effective_gpus=n_eff, tokens_from=where)
    m = scenario.algorithm.minibatches_per_step
    update = log.column("update_s").astype(np.float64)
    if update.sum() <= 0:
        raise ConfigError(
            f"{log.source}: column {log.keys['update_s']!r} is zero on every step; nothing to "
            "fit the training rate to"
        )
    per_gpu = tokens / n_eff
    spread = float(tokens.std() / tokens.mean()) if tokens.size > 1 else 0.0
    if tokens.size >= 3 and spread >= MIN_TOKEN_SPREAD:
        design = np.column_stack([per_gpu, np.full(tokens.size, float(m))])
        scale = np.linalg.norm(design, axis=0)
        coef, _ = nnls(design / scale, update)
        train, overhead = (coef / scale).tolist()
        if train <= 0:
            train, overhead = float(update.sum() / per_gpu.sum()), 0.0
    else:
        train, overhead = float(update.sum() / per_gpu.sum()), 0.0
    fit.coefficients["train_gpu_s_per_token"] = float(train)
    fit.quality["update"] = quality(update, train * per_gpu + m * overhead)
    forward_rows: list[tuple[np.ndarray, np.ndarray]] = []
    names = []
    for column in ("old_logprob_s", "ref_s"):
        if log.has(column):
            seconds = log.column(column).astype(np.float64)
            if seconds.sum() > 0:
                forward_rows.append((per_gpu, seconds))
                names.append(log.keys[column])
    if not forward_rows and log.has("forward_s"):
        passes = int(old_logprob_pass(scenario.algorithm)) + int(scenario.algorithm.reference_model)
        seconds = log.column("forward_s").astype(np.float64)
        if passes and seconds.sum() > 0:
            forward_rows.append((per_gpu * passes, seconds))
            names.append(f"{log.keys['forward_s']} / {passes} pass(es)")
    if forward_rows:
        x = np.concatenate([r[0] for r in forward_rows])
        y = np.concatenate([r[1] for r in forward_rows])
        forward = float(y.sum() / x.sum())
        fit.coefficients["forward_gpu_s_per_token"] = forward
        fit.quality["forward"] = quality(y, forward * x)
        fit.forward_from = ", ".join(names)
    else:
        fit.forward_from = "not in the log: a third of training (the simulator's default)"
    fit.coefficients["step_overhead_s"] = float(overhead)
    return fit


# --- generation -------------------------------------------------------------------------------


@dataclass
class GenerationFit:
    """The scale on the decode time model, or why it was not fitted."""

    scale: float | None = None
    base: dict[str, float] = field(default_factory=dict)
    coefficients: dict[str, float] = field(default_factory=dict)
    quality: FitQuality | None = None
    simulated_steps: int = 0
    measured_mean_s: float | None = None
    simulated_mean_s: float | None = None
    skipped: str | None = None


def simulated_generation_s(scenario: Scenario, steps: int, seed: int) -> np.ndarray:
    """Per learner step of a synchronous run: the learner's wait for its batch (the batch's
    generation, after the weight load)."""
    from stalesim.sim.run import simulate

    trace = simulate(scenario, steps, seed)
    return trace.steps.sort("step")["idle_before_s"].to_numpy()


def _with_decode(scenario: Scenario, coefficients: dict[str, float]) -> Scenario:
    data = deep_merge(
        scenario.model_dump(mode="json", exclude_none=True),
        {"cluster": {"decode_coefficients": coefficients}},
    )
    return validate_config(Scenario, data, "calibrated scenario")


def fit_generation(
    log: StepLog, scenario: Scenario, sim_steps: int, seed: int, warnings: list[str]
) -> GenerationFit:
    """Scale the decode time model until the simulated generation phase matches the log's."""
    mode = scenario.algorithm.mode
    # only an on-policy mode's per-step generation time is the whole batch's generation
    if not MODES[mode].on_policy:
        on_policy = [name for name, spec in MODES.items() if spec.on_policy]
        reason = (
            f"algorithm.mode={mode}: a step's generation time is the batch's generation only in "
            f"{' or '.join(on_policy)} runs; generation rate not fitted"
        )
        warnings.append(reason)
        return GenerationFit(skipped=reason)
    base = derive(scenario).time_model
    coefficients = {
        # measured coefficients are linear: a mixture of experts counts every expert read
        # (what a large batch touches)
        "a_s": base.a_s + base.expert_s,
        "beta_s_per_token": base.beta_s_per_token,
        "gamma_s_per_seq": base.gamma_s_per_seq,
        "prefill_s_per_token": base.prefill_s_per_token,
    }
    measured = log.column("gen_s").astype(np.float64)
    rows = min(measured.size, sim_steps)
    steps = max(rows, min(sim_steps, 3))
    target = float(measured[:rows].mean())
    if target <= 0:
        raise ConfigError(f"{log.source}: column {log.keys['gen_s']!r} is zero on every step")
    scale = 1.0
    simulated = np.zeros(steps)
    for _ in range(3):
        scaled = {k: v * scale for k, v in coefficients.items()}
        simulated = simulated_generation_s(_with_decode(scenario, scaled), steps, seed)
        ratio = target / float(simulated[:steps].mean())
        if abs(ratio - 1.0) < 1e-3:
            break
        scale *= ratio
    scaled = {k: v * scale for k, v in coefficients.items()}
    simulated = simulated_generation_s(_with_decode(scenario, scaled), steps, seed)
    fit = GenerationFit(
        scale=scale,
        base={k: float(v) for k, v in coefficients.items()},
        coefficients={k: float(v) for k, v in scaled.items()},
        simulated_steps=steps,
        measured_mean_s=target,
        simulated_mean_s=float(simulated.mean()),
    )
    if rows == steps:
        # step by step: the simulated run follows the log's steps (drift included)
        fit.quality = quality(measured[:rows], simulated[:rows])
    else:
        # fewer logged steps than simulated (a log of averages): compare the means
        fit.quality = quality(np.array([target]), np.array([simulated.mean()]))
    return fit


def fit_publish(log: StepLog, scenario: Scenario) -> float | None:
    """The learner's own time to publish a version: the logged weight-update seconds less the
    transfer the simulator already charges for this scenario (``weight_bytes / bandwidth +
    latency``); None when the log has no weight-update time."""
    if not log.has("sync_s"):
        return None
    logged = float(np.mean(log.column("sync_s")))
    return max(0.0, logged - derive(scenario).sync_s)


# --- the whole calibration --------------------------------------------------------------------


@dataclass
class LogCalibration:
    """Everything fitted from one log, and the scenario fragment it makes."""

    source: str
    framework: str
    scenario_name: str
    scenario_from: str
    steps: int
    workload: WorkloadFit
    learner: LearnerFit
    generation: GenerationFit
    unmodelled_s: float | None
    warnings: list[str]
    publish_s: float | None = None

    def fragment(self) -> dict[str, Any]:
        """``workload`` and ``cluster`` keys to lay over the scenario (``--set @FILE``, or
        the file itself as a scenario)."""
        out: dict[str, Any] = {}
        work = self.workload.fragment()
        if work:
            out["workload"] = work
        cluster: dict[str, Any] = {"learner_coefficients": dict(self.learner.coefficients)}
        if self.generation.scale is not None:
            cluster["decode_coefficients"] = dict(self.generation.coefficients)
        out["cluster"] = cluster
        if self.publish_s is not None:
            out["weight_sync"] = {"publish_s": self.publish_s}
        return out

    def fit_report(self) -> dict[str, Any]:
        def q(x: FitQuality | None) -> dict[str, float | int] | None:
            return x.as_dict() if x is not None else None

        w, lf, g = self.workload, self.learner, self.generation
        return {
            "workload": {
                "response_mean": w.response_mean,
                "sigma": w.sigma,
                "sigma_from": w.sigma_from,
                "response_growth_per_step": w.growth,
                "prompt_tokens": w.prompt_tokens,
                "fit": q(w.quality),
            },
            "learner": {
                **lf.coefficients,
                "gpus": lf.gpus,
                "effective_gpus": lf.effective_gpus,
                "tokens_from": lf.tokens_from,
                "forward_from": lf.forward_from,
                "fit": {k: v.as_dict() for k, v in lf.quality.items()},
            },
            "generation": {
                "scale": g.scale,
                "base": g.base,
                "measured_mean_s": g.measured_mean_s,
                "simulated_mean_s": g.simulated_mean_s,
                "simulated_steps": g.simulated_steps,
                "skipped": g.skipped,
                "fit": q(g.quality),
            },
            "publish_s": self.publish_s,
            "unmodelled_s_per_step": self.unmodelled_s,
            "warnings": list(self.warnings),
        }


def calibrate_log(
    log: StepLog,
    scenario: Scenario,
    *,
    scenario_from: str = "",
    sim_steps: int = DEFAULT_SIM_STEPS,
    seed: int = 0,
) -> LogCalibration:
    """Fit the workload, then the learner (its tokens follow the lengths), then generation on
    the scenario with both applied."""
    if sim_steps < 1:
        raise ConfigError(f"--sim-steps={sim_steps}: must be at least 1")
    MODES[scenario.algorithm.mode]  # a validated scenario names a known mode
    warnings: list[str] = []
    workload = fit_workload(log, scenario, warnings)
    learner = fit_learner(log, scenario, workload, warnings)
    publish_s = fit_publish(log, scenario)
    partial: dict[str, Any] = {
        "workload": workload.fragment(),
        "cluster": {"learner_coefficients": dict(learner.coefficients)},
    }
    if publish_s is not None:
        partial["weight_sync"] = {"publish_s": publish_s}
    calibrated = with_fragment(scenario, partial)
    generation = fit_generation(log, calibrated, sim_steps, seed, warnings)
    unmodelled = None
    if log.has("step_s"):
        parts = [c for c in ("gen_s", "old_logprob_s", "ref_s", "forward_s", "update_s", "sync_s")]
        total = sum(log.column(c).astype(np.float64) for c in parts if log.has(c))
        unmodelled = float(np.mean(log.column("step_s") - total))
    checks = [("response lengths", workload.quality), ("generation", generation.quality)]
    checks += [(f"learner {k}", v) for k, v in learner.quality.items()]
    for name, fq in checks:
        if fq is not None and explains_little(fq):
            warnings.append(
                f"the {name} fit explains little: R² {fq.r2:.2f}, relative RMS "
                f"{fq.relative_rms:.1%} over {fq.rows} steps"
            )
    return LogCalibration(
        source=log.source,
        framework=log.framework,
        scenario_name=scenario.name,
        scenario_from=scenario_from,
        steps=log.frame.height,
        workload=workload,
        learner=learner,
        generation=generation,
        unmodelled_s=unmodelled,
        warnings=warnings,
        publish_s=publish_s,
    )


def with_fragment(scenario: Scenario, fragment: dict[str, Any]) -> Scenario:
    """The scenario with a calibrated fragment (or any partial scenario) laid over it."""
    from stalesim.sim.presets import _without_replaced_distributions
    from stalesim.sim.scenario import check_consistent

    base = scenario.model_dump(mode="json", exclude_none=True)
    data = deep_merge(_without_replaced_distributions(base, fragment), fragment)
    scenario = validate_config(Scenario, data, "calibrated scenario")
    check_consistent(scenario)
    return scenario


def fragment_yaml(calibration: LogCalibration) -> str:
    """The fragment as YAML, with a header saying where it came from."""
    header = (
        f"# stalesim calibrate --from {calibration.framework} {calibration.source}\n"
        f"# fitted for scenario {calibration.scenario_name!r} ({calibration.scenario_from}); "
        "lay it over that scenario: stalesim simulate SCENARIO.yaml --set @THIS_FILE\n"
    )
    return header + yaml.safe_dump(calibration.fragment(), sort_keys=False)
