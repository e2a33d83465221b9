"""gpu-small's enlarged vocabulary, and the training config's GRPO options (generated from the
kernels' GRPOOptions)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from stalesim.common.config_file import ConfigError, validate_config
from stalesim.kernels.options import GRPOOptions
from stalesim.validate.train.presets import GRPOConfig, RunConfig, TrainConfig, preset_sweep
from stalesim.validate.train.tasks import SortTask, SortTaskConfig
from stalesim.validate.train.trainer import train_run
from stalesim.validate.train.warm_start import build_policy, train_warm_start


def test_gpu_small_runs_at_an_llm_like_vocabulary_and_cpu_tiny_is_unchanged() -> None:
    gpu = SortTask(preset_sweep("gpu-small").train.task)
    assert gpu.vocab_size == 32_768 and gpu.config.base + 3 == 19
    tiny = SortTask(preset_sweep("cpu-tiny").train.task)
    assert tiny.vocab_size == 13 and tiny.config.vocab_size is None


def test_vocabulary_must_hold_the_task_tokens() -> None:
    with pytest.raises(ConfigError, match="vocab_size=12: must be at least base \\+ 3 = 13"):
        validate_config(SortTaskConfig, {"base": 10, "vocab_size": 12})


def test_training_config_takes_every_grpo_option() -> None:
    options = {f.name for f in dataclasses.fields(GRPOOptions)}
    assert options <= set(GRPOConfig.model_fields)
    cfg = validate_config(
        TrainConfig, {"grpo": {"eps_low": 0.1, "ratio_level": "sequence", "kl_estimator": "k2"}}
    )
    assert cfg.grpo.loss_options() == GRPOOptions(
        eps_low=0.1, eps_high=0.28, ratio_level="sequence", kl_estimator="k2"
    )
    with pytest.raises(ConfigError, match=r"grpo=.*eps_low=2.0: must be <= 1.0"):
        validate_config(TrainConfig, {"grpo": {"eps_low": 2}})
    with pytest.raises(ConfigError, match=r"beta=0\.1: the trainer keeps no reference policy"):
        validate_config(TrainConfig, {"grpo": {"beta": 0.1}})


def test_training_through_the_triton_kernels_with_unused_tokens() -> None:
    """One GRPO step of a 1-layer policy whose vocabulary has 100 tokens the task never uses,
    through the fused Triton kernel (the interpreter on CPU): finite reward and loss."""
    data = {
        "task": {"n_digits": 2, "base": 4, "vocab_size": 107},
        "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
        "warm_start": {"steps": 5, "batch_size": 16},
        "steps": 1,
        "prompts_per_step": 2,
        "samples_per_prompt": 2,
        "warmup_steps": 0,
        "backend": "triton",
    }
    cfg = TrainConfig.model_validate(data)
    task = SortTask(cfg.task)
    state = train_warm_start(cfg.policy, cfg.task, cfg.warm_start)
    assert build_policy(cfg.policy, task, 0).output_weight.shape == (107, 16)
    result = train_run(
        RunConfig(preset="test", train=cfg, lr=1e-3, staleness="0", seed=0), warm_state=state
    )
    assert len(result.steps) == 1
    for step in result.steps:
        assert 0.0 <= step["reward_mean"] <= 1.0
        assert torch.isfinite(torch.tensor(step["loss"]))
