"""The screen: a closed-form estimate of a candidate's learner step time and staleness, in
microseconds, so that a plan simulates only the candidates that can still win.

It reads the same derived quantities the simulator runs on (the engine's linear decode time
model, the KV capacity, the learner's seconds per token, the weight sync time) and replaces
the event simulation by steady-state averages:

* an engine holds ``b = min(max_num_seqs, KV tokens / (prompt + mean response))`` sequences;
  a live sequence's mean context is ``prompt + E[R²] / (2 E[R])`` (a sequence is seen in
  proportion to its length), so the engine makes ``b / t_iter(b)`` tokens per second and
  finishes ``1 / (E[R] / rate + prefill)`` samples per second;
* a synchronous batch of ``n`` samples per engine that fits at once takes
  ``R_max·a + gamma·n·E[R] + beta·n·(P·E[R] + E[R²]/2)`` (the exact sum of the iteration
  times while sequences finish), where ``R_max`` is the expected longest response of the batch;
* the learner pays what the simulator charges (``LearnerCost.step_phases`` per mini-batch:
  the forward passes the mode's recipe runs, attention over the mean squared sequence length,
  the optimizer step; plus the colocated switch once per learner step);
* weights: the learner pays the publish (and a blocking transfer) per publication, every
  ``publish_interval`` optimizer steps in async; engines pay the load;
* each mode combines them in its own ``screen`` (``sim/modes/``, given these pieces as
  :class:`~stalesim.sim.modes.base.ScreenInputs`): sync adds generation, training and the
  weight update; one_step and async overlap them (the slower side sets the pace), and an async
  bound lets generation run only ``(S_max + 1) / M`` batches ahead; staleness is the
  mini-batch index in sync modes, ``2M - 1`` at most in one_step, and in the overlapped modes
  a sample's generation latency over the step time, up to the bound.

These are estimates, not bounds: the plan calibrates them against the simulations it runs
(:mod:`stalesim.sim.plan.selection`) and discards only with a safety margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri
from stalesim.sim.modes import MODES
from stalesim.sim.modes.base import ScreenInputs
from stalesim.sim.plan.space import Candidate

#: Points of the standard-normal grid on which length distributions are averaged.
GRID = 512
_Z = ndtri((np.arange(GRID) + 0.5) / GRID)


@dataclass(frozen=True)
class ScreenEstimate:
    """What the screen predicts for one feasible candidate."""

    step_time_s: float
    samples_per_s: float
    staleness_max: float
    staleness_p99: float
    staleness_mean: float
    staleness_token_mean: float
    learner_bound: bool

    def staleness(self, summary: str) -> float:
        return {
            "max": self.staleness_max,
            "p99": self.staleness_p99,
            "mean": self.staleness_mean,
            "token_mean": self.staleness_token_mean,
        }[summary]


@dataclass(frozen=True)
class _LengthStats:
    mean: float
    mean_square: float
    sorted: np.ndarray


_STATS: dict[str, _LengthStats] = {}


def _lengths(dist, cap: int) -> _LengthStats:
    # thousands of candidates share a handful of distributions
    key = f"{dist.model_dump_json()}|{cap}"
    stats = _STATS.get(key)
    if stats is None:
        values = np.sort(np.clip(np.rint(dist.quantile(_Z)), 1, cap))
        stats = _STATS[key] = _LengthStats(float(values.mean()), float((values**2).mean()), values)
    return stats


def screen(candidate: Candidate) -> ScreenEstimate:
    """The closed-form estimate for a feasible candidate."""
    scenario, derived = candidate.scenario, candidate.derived
    assert scenario is not None and derived is not None
    work, cluster, algo = scenario.workload, scenario.cluster, scenario.algorithm
    B, G, M = work.prompts_per_step, work.group_size, algo.minibatches_per_step
    prompt = _lengths(work.prompt_tokens, work.max_prompt_tokens).mean
    response = _lengths(work.response_tokens, work.max_response_tokens)
    r_mean, r_sq = response.mean, response.mean_square
    samples = B * G
    r_max = _quantile(response.sorted, 1.0 - 1.0 / (samples + 1))
    r_p99 = _quantile(response.sorted, 0.99)
    tm = derived.time_model
    engines = cluster.rollout_engines
    b_cap = max(1.0, min(cluster.max_num_seqs, derived.kv_tokens_per_engine / (prompt + r_mean)))
    context = prompt + r_sq / (2.0 * r_mean)

    def iteration_s(b: float) -> float:
        # fixed_s: a mixture of experts reads only the experts a batch of b touches
        return tm.fixed_s(b) + tm.gamma_s_per_seq * b + tm.beta_s_per_token * b * context

    prefill_per_sample = prompt * tm.prefill_s_per_token / G
    engine_samples_per_s = 1.0 / (r_mean * iteration_s(b_cap) / b_cap + prefill_per_sample)
    rollout_s = samples / (engines * engine_samples_per_s)
    per_engine = samples / engines
    at_once = (
        r_max * tm.fixed_s(min(per_engine, b_cap))
        + tm.gamma_s_per_seq * per_engine * r_mean
        + tm.beta_s_per_token * per_engine * (prompt * r_mean + r_sq / 2.0)
        + per_engine * prefill_per_sample
    )
    generate_s = max(at_once, rollout_s) if per_engine > b_cap else at_once
    # the learner's cost as the simulator charges it: each of the M chunks pays its passes
    # (which forward passes the mode's recipe runs) and the optimizer step; colocated GPUs
    # switch roles once per learner step
    learner = derived.learner
    chunk_tokens = samples / M * (prompt + r_mean)
    chunk_sq = samples / M * (prompt * prompt + 2.0 * prompt * r_mean + r_sq)
    learn_s = learner.switch_s + M * learner.step_s(chunk_tokens, chunk_sq)
    ws = scenario.weight_sync
    sync_s = derived.sync_s
    blocking = ws.pause_policy == "blocking"
    # publications per learner step: every K optimizer steps (async), once otherwise; the
    # learner pays the publish (and a blocking transfer), each engine its load
    pubs = M / (algo.publish_interval or M)
    learner_side = learn_s + pubs * (ws.publish_s + (sync_s if blocking else 0.0))
    weights_s = ws.publish_s + sync_s + ws.load_s
    inputs = ScreenInputs(
        generate_s=generate_s,
        rollout_s=rollout_s,
        learn_s=learn_s,
        learner_side_s=learner_side,
        weights_s=weights_s,
        publication_s=pubs * ((sync_s if blocking else 0.0) + ws.load_s),
        latency_mean_s=r_mean * iteration_s(b_cap) + prefill_per_sample * G,
        latency_p99_s=r_p99 * iteration_s(b_cap) + prefill_per_sample * G,
        minibatches=M,
    )
    spec = MODES[algo.mode]
    if spec.screen is None:
        raise ValueError(
            f"algorithm.mode={algo.mode} has no screen estimate: plan with "
            "evaluation.screen: false (or --no-screen)"
        )
    t = spec.screen(inputs, algo)
    return ScreenEstimate(
        step_time_s=t.step_s,
        samples_per_s=samples / t.step_s,
        staleness_max=t.staleness_max,
        staleness_p99=t.staleness_max,
        staleness_mean=t.staleness_mean,
        staleness_token_mean=t.staleness_token_mean,
        learner_bound=t.learner_bound,
    )


def _quantile(sorted_values: np.ndarray, q: float) -> float:
    return float(sorted_values[min(int(q * sorted_values.size), sorted_values.size - 1)])
