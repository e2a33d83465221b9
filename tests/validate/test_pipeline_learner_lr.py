"""The pipeline's learner sets each update's learning rate by the training config's rule, from
the lags of the samples it trains on, as the law sweeps' trainer does."""

from __future__ import annotations

import math

import pytest
import torch
from stalesim.validate.pipeline.config import PipelineConfig
from stalesim.validate.pipeline.learner import PipelineLearner
from stalesim.validate.train.warm_start import build_policy

CURVE = {"eta0": 1e-3, "s_c": 2.0, "k": 1.0, "alpha": 1.0}


def _learner(rule: dict, lr: float = 1e-3) -> PipelineLearner:
    config = PipelineConfig.model_validate(
        {
            "lr": lr,
            "train": {
                "task": {"n_digits": 3, "base": 5},
                "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                "prompts_per_step": 2,
                "samples_per_prompt": 2,
                "warmup_steps": 1,
                "lr_rule": rule,
            },
        }
    )
    task = config.train.task.build()
    warm = build_policy(config.train.policy, task, 0).state_dict()
    return PipelineLearner(config, warm, 0.0)


def _batch(learner: PipelineLearner, versions: list[int]) -> dict:
    """Four samples (two groups of two) generated at these behaviour versions."""
    task = learner.task
    digits = [[0, 1, 2], [3, 4, 0]]
    samples = []
    for i, version in enumerate(versions):
        prompt = task.prompts(torch.tensor([digits[i // 2]]))[0].tolist()
        tokens = [1, 2, 3, task.eos_id]
        samples.append(
            {"prompt": prompt, "tokens": tokens, "logps": [-1.0] * 4, "reward": float(i % 2),
             "versions": [version] * 4}
        )  # fmt: skip
    return {"samples": samples, "digits": digits}


def _step_lr(learner: PipelineLearner, versions: list[int]) -> float:
    row, _, _ = learner.step(0, _batch(learner, versions), 0.0, lambda v, s: None)
    return row["lr"]


@pytest.mark.parametrize(
    ("rule", "factor"),
    [
        # lags 8, 8, 0, 0 against the learner's version 8: mean 4, max 8
        ({"kind": "law", **CURVE, "summary": "mean"}, 1 / (1 + 4 / 2)),
        ({"kind": "law", **CURVE, "summary": "max"}, 1 / (1 + 8 / 2)),
        ({"kind": "constant"}, 1.0),
    ],
)
def test_the_learning_rate_follows_the_rule_and_the_batch_lags(rule: dict, factor: float) -> None:
    learner = _learner(rule)
    for _ in range(8):  # eight on-policy updates: the learner is at version 8, warm-up done
        assert _step_lr(learner, [learner.version] * 4) == pytest.approx(1e-3)
    assert learner.version == 8
    assert _step_lr(learner, [0, 0, 8, 8]) == pytest.approx(1e-3 * factor, rel=1e-9)


def test_the_ess_rule_scales_by_the_root_of_the_batch_ess() -> None:
    learner = _learner({"kind": "ess"})
    row, _, _ = learner.step(0, _batch(learner, [0, 0, 0, 0]), 0.0, lambda v, s: None)
    assert 0.0 < row["ess"] <= 1.0
    assert row["lr"] == pytest.approx(1e-3 * math.sqrt(row["ess"]), rel=1e-9)


def test_the_cpu_ns_preset_trains_what_the_law_sweeps_trained() -> None:
    """The pipeline's ``cpu-ns`` preset is the non-saturating law sweeps' train config, so a law
    fitted on those sweeps drives its learning rate on the task it was measured on."""
    from stalesim.validate.pipeline.config import load_pipeline, preset_pipeline
    from stalesim.validate.train.presets import preset_sweep

    data = preset_pipeline("cpu-ns")
    data["train"] = {**data["train"], "lr_rule": {"kind": "law", **CURVE, "summary": "max"}}
    config = load_pipeline(data, "test")
    sweep = preset_sweep("law-horizon-ns").train.model_dump()
    assert config.train.model_dump() | {"lr_rule": sweep["lr_rule"]} == sweep
    assert config.train.lr_rule.summary == "max" and config.algorithm.max_staleness == 4


def test_the_learner_builds_the_configured_optimizer() -> None:
    """``train.optimizer`` reaches the pipeline's learner as it reaches the law sweeps' trainer."""
    config = PipelineConfig.model_validate(
        {"train": {"task": {"n_digits": 3, "base": 5},
                   "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                   "optimizer": {"name": "sgd", "momentum": 0.5}}}
    )  # fmt: skip
    task = config.train.task.build()
    learner = PipelineLearner(config, build_policy(config.train.policy, task, 0).state_dict(), 0.0)
    assert isinstance(learner.optimizer, torch.optim.SGD)
    assert learner.optimizer.param_groups[0]["momentum"] == 0.5
    adam = _learner({"kind": "constant"})
    assert isinstance(adam.optimizer, torch.optim.AdamW)
    assert adam.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
