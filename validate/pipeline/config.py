"""What a pipeline run is: a train config, the simulator's algorithm section, and its actors.

The pipeline speaks the scenario's vocabulary: ``algorithm`` is the simulator's
:class:`~stalesim.sim.scenario.AlgorithmConfig` (``mode``, ``max_staleness``,
``inflight_updates``, ``staleness_filter``, ``partial_overprovision``), so a run and its replay
name the same things the same way. Presets are sized to their machine: ``cpu`` (one rollout
worker and one learner, one torch thread each, about a minute per mode on a 2-core box),
``cpu-2w`` (two workers) and ``gpu-small`` (two workers and the learner sharing one GPU).
"""

from __future__ import annotations

from pydantic import Field
from stalesim.common.config_file import ConfigError, StrictModel, validate_config
from stalesim.sim.modes import MODES
from stalesim.sim.scenario import AlgorithmConfig, Scenario
from stalesim.validate.train.presets import PRESETS as SWEEP_PRESETS
from stalesim.validate.train.presets import TrainConfig


class PipelineConfig(StrictModel):
    """One asynchronous GRPO run on Ray actors."""

    preset: str = "custom"
    train: TrainConfig = TrainConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    seed: int = 0
    rollout_workers: int = Field(1, ge=1, description="rollout engines, one Ray actor each")
    max_num_seqs: int = Field(64, ge=1, description="live sequences per engine")
    torch_threads: int = Field(1, ge=1, description="torch threads per actor")
    idle_wait_s: float = Field(
        0.02, gt=0, description="longest an idle engine waits for work before asking again"
    )

    def check(self) -> PipelineConfig:
        """Raise :class:`ConfigError` (one line, naming the keys) when the sections disagree."""
        algo = self.algorithm
        spec = MODES[algo.mode]
        if not spec.pipeline:
            allowed = (name for name, other in MODES.items() if other.pipeline)
            raise ConfigError(
                f"algorithm.mode={algo.mode} is not run by the pipeline; allowed: "
                f"{', '.join(allowed)}"
            )
        if algo.round_token_budget is not None:
            raise ConfigError(
                "algorithm.round_token_budget is not run by the pipeline; leave it unset"
            )
        m = self.train.minibatches_per_step
        # what the pipeline does, stated in the scenario's keys: whole-batch consumption in
        # completion order, weights published once per learner step, sequences that take new
        # weights in flight keep their KV cache, resumed ones recompute it
        fixed = {
            "streaming": (algo.streaming, False),
            "consumption_order": (algo.consumption_order, "completion"),
            "dynamic_sampling": (algo.dynamic_sampling, False),
            "publish_interval": (algo.publish_interval or m, m),
        }
        if algo.kv_cache_on_update is not None:
            kv = "recompute" if spec.preempts else "keep"
            fixed["kv_cache_on_update"] = (algo.kv_cache_on_update, kv)
        for key, (value, allowed) in fixed.items():
            if value != allowed:
                raise ConfigError(
                    f"algorithm.{key}={value} is not run by the pipeline; allowed: {allowed}"
                )
        if spec.check is not None:
            # the simulator's own refusals (an admission limit that could never admit what the
            # learner waits for would stall the pipeline just as it would the simulation)
            spec.check(Scenario(algorithm=algo))
        if algo.inflight_updates and not spec.inflight_updates:
            allowed = " or ".join(n for n, s in MODES.items() if s.pipeline and s.inflight_updates)
            raise ConfigError(
                f"algorithm.inflight_updates=true needs algorithm.mode={allowed}, not {algo.mode}"
            )
        if algo.old_logprob_pass or algo.reference_model:
            raise ConfigError(
                "algorithm.old_logprob_pass and algorithm.reference_model must be false: the "
                "pipeline's learner reuses the rollout's log-probs and has no KL term"
            )
        if algo.minibatches_per_step != m:
            raise ConfigError(
                f"algorithm.minibatches_per_step={algo.minibatches_per_step} must equal "
                f"train.minibatches_per_step={m}"
            )
        samples = self.train.prompts_per_step * self.train.samples_per_prompt
        if spec.on_policy and samples > self.rollout_workers * self.max_num_seqs:
            raise ConfigError(
                f"algorithm.mode={algo.mode} launches a whole batch at once: {samples} samples "
                "but the "
                f"engines hold {self.rollout_workers * self.max_num_seqs} (rollout_workers x "
                "max_num_seqs)"
            )
        return self


_CPU_TRAIN = {**SWEEP_PRESETS["cpu-tiny"]["train"], "steps": 120}
_NO_EXTRA_PASSES = {"old_logprob_pass": False, "reference_model": False}

PRESETS: dict[str, dict] = {
    "cpu": {
        "preset": "cpu",
        "train": _CPU_TRAIN,
        "algorithm": {"mode": "async", "max_staleness": 2, **_NO_EXTRA_PASSES},
        "rollout_workers": 1,
        "max_num_seqs": 256,
    },
    "cpu-2w": {
        "preset": "cpu-2w",
        "train": _CPU_TRAIN,
        "algorithm": {"mode": "async", "max_staleness": 2, **_NO_EXTRA_PASSES},
        "rollout_workers": 2,
        "max_num_seqs": 128,
    },
    # the law experiments' non-saturating task, model and horizon, on the real pipeline
    "cpu-ns": {
        "preset": "cpu-ns",
        "train": SWEEP_PRESETS["law-horizon-ns"]["train"],
        "algorithm": {"mode": "async", "max_staleness": 4, **_NO_EXTRA_PASSES},
        "rollout_workers": 1,
        "max_num_seqs": 256,
    },
    "gpu-small": {
        "preset": "gpu-small",
        "train": {**SWEEP_PRESETS["gpu-small"]["train"], "steps": 300},
        "algorithm": {"mode": "async", "max_staleness": 2, **_NO_EXTRA_PASSES},
        "rollout_workers": 2,
        "max_num_seqs": 512,
        "torch_threads": 2,
    },
}


def preset_pipeline(name: str) -> dict:
    """The preset's config as plain data (for overrides)."""
    if name not in PRESETS:
        raise ConfigError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
    return {**PRESETS[name], "train": dict(PRESETS[name]["train"])}


def load_pipeline(data: dict, source: str) -> PipelineConfig:
    """Validate ``data`` (fields, then the consistency of its sections)."""
    return validate_config(PipelineConfig, data, source=source).check()
