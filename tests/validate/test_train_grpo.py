"""GRPO training: the update lowers the loss, staleness uses the exact old snapshot, collapses
are detected and recorded."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from stalesim.validate.train.collapse import CollapseConfig, CollapseDetector
from stalesim.validate.train.policy import Rollout
from stalesim.validate.train.presets import RunConfig, TrainConfig
from stalesim.validate.train.staleness import SnapshotRing, parse_staleness, split_staleness_list
from stalesim.validate.train.tasks import SortTask
from stalesim.validate.train.trainer import grpo_step_loss, summarise, train_run
from stalesim.validate.train.warm_start import build_policy, train_warm_start


def tiny_train(**changes) -> TrainConfig:
    data = {
        "task": {"n_digits": 4, "base": 6},
        "policy": {"n_layer": 1, "n_head": 2, "n_embd": 32},
        "warm_start": {"steps": 30, "batch_size": 64, "corrupt_prob": 0.9, "max_mistakes": 2},
        "steps": 8,
        "prompts_per_step": 6,
        "samples_per_prompt": 4,
        "warmup_steps": 1,
        **changes,
    }
    return TrainConfig.model_validate(data)


@pytest.fixture(scope="module")
def warm() -> tuple[TrainConfig, dict[str, torch.Tensor]]:
    torch.set_num_threads(1)
    cfg = tiny_train()
    return cfg, train_warm_start(cfg.policy, cfg.task, cfg.warm_start)


def test_grpo_update_lowers_the_loss_on_a_fixed_batch(warm) -> None:
    cfg, state = warm
    task = SortTask(cfg.task)
    policy = build_policy(cfg.policy, task, 0)
    policy.load_state_dict(state)
    generator = torch.Generator().manual_seed(0)
    digits = task.sample_digits(16, generator)
    prompts = task.prompts(digits).repeat_interleave(8, dim=0)
    rollout = policy.sample(
        prompts,
        task.max_response_len,
        temperature=1.0,
        generator=generator,
        eos_id=task.eos_id,
        pad_id=task.pad_id,
    )
    rewards = task.rewards(digits.repeat_interleave(8, dim=0), rollout.tokens).view(16, 8)
    assert rewards.std(dim=1).gt(0).sum() >= 4, "the warm start must leave reward variance"
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    advantages = (centred / (rewards.std(dim=1, keepdim=True) + 1e-6)).reshape(-1)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=0.0)
    losses = []
    for _ in range(5):
        loss, _stats, _ = grpo_step_loss(policy, task, cfg, prompts, rollout, advantages)
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final, _, _ = grpo_step_loss(policy, task, cfg, prompts, rollout, advantages)
    # First call is on-policy: every ratio is 1 up to the sampler's float error.
    assert losses[0] == pytest.approx(
        float(-(advantages[:, None] * rollout.mask).sum() / rollout.mask.sum()), abs=1e-5
    )
    assert float(final.detach()) < losses[0] - 0.01
    assert all(b < a for a, b in itertools.pairwise(losses))


@pytest.mark.parametrize("spec", ["fixed:3", "uniform:0-4"])
def test_rollouts_come_from_the_exact_snapshot_of_version_t_minus_s(warm, spec) -> None:
    cfg, state = warm
    run = RunConfig(preset="test", train=cfg, lr=3e-3, staleness=spec, seed=7)
    task = SortTask(cfg.task)
    weights = {0: {k: v.clone() for k, v in state.items()}}
    rollouts = []

    def observe(event: str, **payload) -> None:
        if event == "version":
            weights[payload["version"]] = {
                k: v.detach().clone() for k, v in payload["policy"].state_dict().items()
            }
        else:
            rollouts.append(payload)

    result = train_run(run, warm_state=state, observer=observe)
    assert len(rollouts) == cfg.steps
    probe = build_policy(cfg.policy, task, 0)
    lags_seen = set()
    for item in rollouts:
        version, behaviour = item["version"], item["behaviour_version"]
        lags = version - behaviour
        lags_seen |= set(lags.tolist())
        if spec.startswith("fixed"):
            assert torch.all(behaviour == max(0, version - 3))
        assert torch.all((lags >= 0) & (lags <= min(4, version)))
        rollout: Rollout = item["rollout"]
        for b in behaviour.unique().tolist():
            rows = behaviour == b
            probe.load_state_dict(weights[b])
            with torch.no_grad():
                sequence = torch.cat([item["prompts"][rows], rollout.tokens[rows]], dim=1)
                logits = probe(sequence[:, :-1])[:, task.prompt_len - 1 :]
                logp = torch.log_softmax(logits, -1).gather(-1, rollout.tokens[rows][..., None])[
                    ..., 0
                ]
            mask = rollout.mask[rows]
            torch.testing.assert_close(rollout.logp[rows], logp * mask, rtol=0, atol=2e-5)
            if b != version:
                # The newest weights would give measurably different log-probs.
                probe.load_state_dict(weights[version])
                with torch.no_grad():
                    newer = torch.log_softmax(probe(sequence[:, :-1])[:, task.prompt_len - 1 :], -1)
                newer = newer.gather(-1, rollout.tokens[rows][..., None])[..., 0]
                assert (rollout.logp[rows] - newer * mask).abs().max() > 1e-3
    if spec.startswith("uniform"):
        assert len(lags_seen) >= 3, "per-group lags should vary"
    # The run's measured staleness agrees with the lags it consumed.
    steps = result.steps
    assert result.run["staleness_max"] == max(s["staleness_max"] for s in steps)
    assert result.run["staleness_mean"] == pytest.approx(
        np.mean([s["staleness_mean"] for s in steps])
    )


def test_a_huge_learning_rate_collapses_without_raising(warm) -> None:
    cfg, state = warm
    cfg = cfg.model_copy(update={"steps": 30, "collapse": CollapseConfig(window=3)})
    run = RunConfig(preset="test", train=cfg, lr=3.0, staleness="0", seed=0)
    result = train_run(run, warm_state=state)
    assert result.run["collapsed"] is True
    assert result.run["collapse_step"] == len(result.steps) - 1 < cfg.steps - 1
    assert result.run["collapse_reason"]
    assert 0 <= result.run["reward_auc"] <= 1
    assert (
        result.run["steps_to_target"] is None
        or result.run["steps_to_target"] <= result.run["collapse_step"]
    )


def test_collapse_detector_rules() -> None:
    detector = CollapseDetector(CollapseConfig(window=2, reward_drop_fraction=0.5, kl_max=1.0))
    assert detector.update(reward=0.8, loss=0.1, grad_norm=1.0, kl=0.0) is None
    assert detector.update(reward=0.8, loss=0.1, grad_norm=1.0, kl=0.0) is None
    assert detector.update(reward=0.2, loss=0.1, grad_norm=1.0, kl=0.0) is None  # mean 0.5 >= 0.4
    assert "smoothed reward" in detector.update(reward=0.2, loss=0.1, grad_norm=1.0, kl=0.0)
    assert "KL" in CollapseDetector(CollapseConfig(kl_max=1.0)).update(
        reward=0.5, loss=0.0, grad_norm=1.0, kl=1.5
    )
    assert "non-finite" in CollapseDetector(CollapseConfig()).update(
        reward=0.5, loss=math.nan, grad_norm=1.0, kl=0.0
    )


def test_summary_metrics_on_a_known_curve() -> None:
    cfg = tiny_train(steps=6, smoothing_window=2, target_reward=0.5)
    metrics = summarise([0.2, 0.4, 0.6, 0.8, 1.0, 1.0], cfg, None)
    assert metrics["reward_auc"] == pytest.approx(4.0 / 6)
    assert metrics["final_reward"] == pytest.approx(1.0)
    assert metrics["steps_to_target"] == 2.0  # (0.4 + 0.6) / 2 >= 0.5 first at step 2
    collapsed = summarise([0.2, 0.4, 0.1, 0.1], cfg, 3)
    assert collapsed["reward_auc"] == pytest.approx((0.8 + 0.1 * 2) / 6)
    assert collapsed["steps_to_target"] is None


def test_staleness_specs_parse_and_draw_within_bounds() -> None:
    assert parse_staleness("4").text == "fixed:4"
    assert parse_staleness("geometric:p=0.3,max=16").text == "geometric:p=0.3,max=16"
    assert split_staleness_list("0,1, 2 uniform:0-8,geometric:p=0.3,max=16") == [
        "0",
        "1",
        "2",
        "uniform:0-8",
        "geometric:p=0.3,max=16",
    ]
    rng = np.random.default_rng(0)
    uniform = parse_staleness("uniform:2-5").draw(20000, rng)
    assert uniform.min() == 2 and uniform.max() == 5
    assert uniform.mean() == pytest.approx(3.5, abs=0.05)
    geometric = parse_staleness("geometric:p=0.25,max=1000").draw(20000, rng)
    assert geometric.mean() == pytest.approx(3.0, rel=0.05)  # (1 - p) / p
    for bad in ["-1", "uniform:5-2", "geometric:p=0,max=3", "stale"]:
        with pytest.raises(ValueError):
            parse_staleness(bad)


def test_snapshot_ring_keeps_the_latest_versions() -> None:
    ring = SnapshotRing(3)
    layer = torch.nn.Linear(2, 2)
    for version in range(5):
        with torch.no_grad():
            layer.weight.fill_(version)
        ring.put(version, layer)
    assert ring.versions() == [2, 3, 4]
    assert torch.all(ring.get(3)["weight"] == 3)
    with pytest.raises(KeyError):
        ring.get(1)
