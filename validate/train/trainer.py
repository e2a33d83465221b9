"""One GRPO training run under controlled staleness.

Each learner step:

1. draws ``B`` sorting problems and, per group, a lag ``S`` from the run's staleness spec; the
   group's ``G`` responses are sampled by the exact weights of version ``v - S`` (kept in a
   :class:`~stalesim.validate.train.staleness.SnapshotRing`), with their behaviour log-probs;
2. scores them, normalises rewards inside each group (``kernels.group_advantages``);
3. makes ``minibatches_per_step`` updates (the configured optimizer, AdamW by default) on the
   GRPO loss against the behaviour log-probs (``kernels.grpo_loss``, log-probs by
   ``kernels.fused_linear_logprobs``), each one a new version whose weights go into the ring;
   each update's learning rate follows the config's ``lr_rule`` (constant, the staleness law
   through :class:`~stalesim.validate.train.staleness_lr.StalenessLR`, or the ESS rule).

The learning curve is the reward of the *learner's* policy: at step ``t`` the policy of the
version at the start of the step, sampled on fresh problems. For on-policy runs that sample is the
consumed batch itself; for stale runs it is an extra rollout, so that a run's curve is not simply
shifted by ``S`` steps of lag. (The reward of the consumed, stale batch is logged too.)

Before the first step the warm start is scored on ``eval_prompts`` fresh problems
(``warm_reward``): a run that ends below it has failed, whatever its curve did in between.
Every step logs reward, clip fractions, importance-ratio statistics, ESS, KL(behaviour ‖ learner),
the drift KL(π_v ‖ π_v+m) of the step's updates on the learner's own fresh samples, entropy,
gradient norm, the realised staleness (mean, max, token-weighted) and timings. A collapse (see
:mod:`stalesim.validate.train.collapse`) ends the run early and is recorded.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from stalesim import kernels
from stalesim.validate.law.horizon import run_summary
from stalesim.validate.train.collapse import CollapseDetector
from stalesim.validate.train.optimizers import build_optimizer
from stalesim.validate.train.policy import Policy, Rollout
from stalesim.validate.train.presets import RunConfig, TrainConfig
from stalesim.validate.train.staleness import SnapshotRing, parse_staleness
from stalesim.validate.train.staleness_lr import UpdateLR
from stalesim.validate.train.tasks import DigitTask
from stalesim.validate.train.warm_start import build_policy, config_hash, warm_start_state

Observer = Callable[..., None]


@dataclass
class RunResult:
    """A finished (or collapsed) run: its summary row and one row per step taken."""

    run: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)


def run_id(run: RunConfig) -> str:
    """A stable 16-hex-digit hash of everything that determines the run."""
    return config_hash(run)


def resolve_device(name: str) -> torch.device:
    """The torch device ``train.device`` names; ValueError (one line) for a name torch does
    not know, a device other than cpu and cuda, or a CUDA device this machine lacks."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"train.device={name!r}: expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"train.device={name!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"train.device={name!r}: CUDA is not available on this machine (use cpu)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"train.device={name!r}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s)"
            )
    return device


@dataclass
class _Batch:
    """The samples one learner step consumes, flattened to ``B*G`` rows."""

    prompts: torch.Tensor
    rollout: Rollout
    rewards: torch.Tensor  # [B, G]
    behaviour_version: torch.Tensor  # [B*G]


def _sample_batch(
    cfg: TrainConfig,
    task: DigitTask,
    behaviour: Policy,
    ring: SnapshotRing,
    behaviour_versions: np.ndarray,
    generator: torch.Generator,
    device: torch.device,
) -> _Batch:
    """Sample every group with the snapshot of its own behaviour version."""
    groups, group_size = cfg.prompts_per_step, cfg.samples_per_prompt
    digits = task.sample_digits(groups, generator)
    prompts = task.prompts(digits).repeat_interleave(group_size, dim=0).to(device)
    n, width = groups * group_size, task.max_response_len
    tokens = torch.full((n, width), task.pad_id, dtype=torch.long, device=device)
    logp = torch.zeros(n, width, device=device)
    mask = torch.zeros(n, width, device=device)
    for version in np.unique(behaviour_versions):
        behaviour.load_state_dict(ring.get(int(version)))
        group_ids = torch.from_numpy(np.flatnonzero(behaviour_versions == version))
        rows = (group_ids[:, None] * group_size + torch.arange(group_size)).reshape(-1).to(device)
        rollout = behaviour.sample(
            prompts[rows],
            width,
            temperature=cfg.temperature,
            generator=generator,
            eos_id=task.eos_id,
            pad_id=task.pad_id,
        )
        tokens[rows], logp[rows], mask[rows] = rollout.tokens, rollout.logp, rollout.mask
    rewards = task.rewards(digits.repeat_interleave(group_size, dim=0), tokens.cpu())
    per_sample_version = torch.from_numpy(np.repeat(behaviour_versions, group_size))
    return _Batch(
        prompts=prompts,
        rollout=Rollout(tokens=tokens, logp=logp, mask=mask),
        rewards=rewards.view(groups, group_size),
        behaviour_version=per_sample_version,
    )


def policy_reward(
    cfg: TrainConfig,
    task: DigitTask,
    policy: Policy,
    generator: torch.Generator,
    device: torch.device,
    prompts_count: int | None = None,
) -> torch.Tensor:
    """Rewards ``[B, G]`` of ``policy`` on fresh problems (the learning curve's sample)."""
    return policy_sample(cfg, task, policy, generator, device, prompts_count)[0]


def policy_sample(
    cfg: TrainConfig,
    task: DigitTask,
    policy: Policy,
    generator: torch.Generator,
    device: torch.device,
    prompts_count: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Rollout]:
    """Rewards ``[B, G]``, prompts and rollout of ``policy`` on fresh problems."""
    count = prompts_count or cfg.prompts_per_step
    digits = task.sample_digits(count, generator)
    prompts = task.prompts(digits).repeat_interleave(cfg.samples_per_prompt, dim=0).to(device)
    rollout = policy.sample(
        prompts,
        task.max_response_len,
        temperature=cfg.temperature,
        generator=generator,
        eos_id=task.eos_id,
        pad_id=task.pad_id,
    )
    rewards = task.rewards(
        digits.repeat_interleave(cfg.samples_per_prompt, dim=0), rollout.tokens.cpu()
    )
    return rewards.view(count, cfg.samples_per_prompt), prompts, rollout


@torch.no_grad()
def drift_kl(
    policy: Policy, task: DigitTask, cfg: TrainConfig, prompts: torch.Tensor, rollout: Rollout
) -> float:
    """KL(π_old ‖ π_new) per token: ``rollout`` was sampled by π_old (its ``logp``), ``policy``
    is π_new; the k3 estimator ``mean(r - 1 - ln r)``, ``r = π_new/π_old``, over sampled tokens.
    """
    new_logp, _ = sequence_logprobs(policy, task, prompts, rollout.tokens, cfg)
    log_ratio = (new_logp.float() - rollout.logp.float()) * rollout.mask
    k3 = (torch.exp(log_ratio) - 1 - log_ratio) * rollout.mask
    return float(k3.sum() / rollout.mask.sum().clamp(min=1))


def sequence_logprobs(
    policy: Policy, task: DigitTask, prompts: torch.Tensor, tokens: torch.Tensor, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Learner log-probs ``[n, T]`` of response ``tokens`` and the detached hidden states."""
    sequence = torch.cat([prompts, tokens], dim=1)
    hidden = policy.hidden(sequence[:, :-1])[:, task.prompt_len - 1 :]
    n, width, size = hidden.shape
    logp = kernels.fused_linear_logprobs(
        hidden.reshape(n * width, size),
        policy.output_weight,
        tokens.reshape(-1),
        cfg.temperature,
        backend=cfg.backend,
    )
    return logp.view(n, width), hidden.detach()


def grpo_step_loss(
    policy: Policy,
    task: DigitTask,
    cfg: TrainConfig,
    prompts: torch.Tensor,
    rollout: Rollout,
    advantages: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float], float]:
    """The GRPO loss of one minibatch, its kernel statistics and the policy's mean entropy."""
    logp, hidden = sequence_logprobs(policy, task, prompts, rollout.tokens, cfg)
    loss, stats = kernels.grpo_loss(
        logp,
        rollout.logp,
        advantages,
        rollout.mask,
        options=cfg.grpo.loss_options(),
        backend=cfg.backend,
    )
    with torch.no_grad():
        log_probs = torch.log_softmax(
            (hidden @ policy.output_weight.T).float() / cfg.temperature, -1
        )
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        mean_entropy = float((entropy * rollout.mask).sum() / rollout.mask.sum().clamp(min=1))
    return loss, {k: float(v) for k, v in stats.items()}, mean_entropy


def summarise(
    rewards: list[float], cfg: TrainConfig, collapse_step: int | None
) -> dict[str, float | None]:
    """Run metrics from the per-step learner rewards.

    After a collapse the remaining planned steps are counted at the last smoothed reward before
    the collapse (0 if it was not finite): a collapsed run keeps whatever it had fallen to.
    ``reward_auc`` is the mean of that curve over all planned steps (the area under the reward
    curve divided by the number of steps, so it lies in [0, 1]); ``final_reward`` is the mean of
    its last ``smoothing_window`` steps; ``steps_to_target`` is the first step whose trailing
    ``smoothing_window``-step mean reaches ``target_reward`` (None if never);
    ``best_smoothed_reward`` is the highest trailing ``smoothing_window``-step mean reached
    before any collapse.
    """
    return run_summary(
        np.asarray(rewards, dtype=float),
        cfg.steps,
        cfg.smoothing_window,
        collapse_step,
        cfg.target_reward,
    )


def train_run(
    run: RunConfig,
    *,
    warm_state: dict[str, torch.Tensor] | None = None,
    observer: Observer | None = None,
) -> RunResult:
    """Train one run to the end (or to its collapse) and return its rows.

    ``observer(event, **payload)``, if given, sees ``"version"`` events (``version``, ``policy``)
    after each optimizer step and ``"rollout"`` events (``step``, ``version``,
    ``behaviour_version``, ``prompts``, ``rollout``) for each consumed batch; tests use it to
    check the weights that generated each batch.
    """
    cfg = run.train
    device = resolve_device(cfg.device)
    spec = parse_staleness(run.staleness)
    task = cfg.task.build()
    if warm_state is None:
        warm_state = warm_start_state(
            cfg.policy, cfg.task, cfg.warm_start.for_run(run.seed), device
        )
    policy = build_policy(cfg.policy, task, run.seed).to(device)
    policy.load_state_dict(warm_state)
    behaviour = copy.deepcopy(policy)
    behaviour.requires_grad_(False)
    optimizer = build_optimizer(policy.parameters(), cfg.optimizer, run.lr, cfg.weight_decay)
    update_lr = UpdateLR(optimizer, cfg.lr_rule, run.lr, cfg.warmup_steps)
    generator = torch.Generator().manual_seed(run.seed)
    # the warm start's own score, on problems drawn apart from the training stream
    eval_generator = torch.Generator().manual_seed(10_000 + run.seed)
    warm_reward = float(
        policy_reward(cfg, task, policy, eval_generator, device, cfg.eval_prompts).mean()
    )
    rng = np.random.default_rng(run.seed)
    ring = SnapshotRing(spec.max_lag + 1)
    ring.put(0, policy)
    detector = CollapseDetector(cfg.collapse)
    minibatches = cfg.minibatches_per_step
    group_size = cfg.samples_per_prompt
    groups_per_minibatch = cfg.prompts_per_step // minibatches
    rid = run_id(run)
    version = 0
    rows: list[dict[str, Any]] = []
    curve: list[float] = []
    collapse_step: int | None = None
    all_lags: list[np.ndarray] = []
    all_tokens: list[np.ndarray] = []
    drifts: list[float] = []
    started = time.perf_counter()

    for step in range(cfg.steps):
        t0 = time.perf_counter()
        lags = np.minimum(spec.draw(cfg.prompts_per_step, rng, step), version)
        behaviour_versions = version - lags
        batch = _sample_batch(cfg, task, behaviour, ring, behaviour_versions, generator, device)
        if spec.max_lag == 0:
            learner_rewards = batch.rewards
            own_prompts, own_rollout = batch.prompts, batch.rollout
        else:
            learner_rewards, own_prompts, own_rollout = policy_sample(
                cfg, task, policy, generator, device
            )
        if observer is not None:
            observer(
                "rollout",
                step=step,
                version=version,
                behaviour_version=batch.behaviour_version,
                prompts=batch.prompts,
                rollout=batch.rollout,
            )
        advantages = kernels.group_advantages(
            batch.rewards.to(device), scale=cfg.grpo.advantage_scale, backend=cfg.backend
        ).reshape(-1)
        rollout_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        step_stats: list[dict[str, float]] = []
        losses, grad_norms, entropies, step_lags, step_tokens = [], [], [], [], []
        for m in range(minibatches):
            group_ids = slice(
                m * groups_per_minibatch * group_size, (m + 1) * groups_per_minibatch * group_size
            )
            mb = Rollout(
                tokens=batch.rollout.tokens[group_ids],
                logp=batch.rollout.logp[group_ids],
                mask=batch.rollout.mask[group_ids],
            )
            loss, stats, entropy = grpo_step_loss(
                policy, task, cfg, batch.prompts[group_ids], mb, advantages[group_ids]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(
                policy.parameters(), cfg.grad_clip if cfg.grad_clip is not None else math.inf
            )
            step_lags.append((version - batch.behaviour_version[group_ids]).numpy())
            step_tokens.append(mb.mask.sum(dim=1).cpu().numpy())
            update_lr.set(
                version, lags=step_lags[-1], tokens=step_tokens[-1], ess=stats.get("ess", math.nan)
            )
            optimizer.step()
            version += 1
            ring.put(version, policy)
            if observer is not None:
                observer("version", version=version, policy=policy)
            losses.append(float(loss.detach()))
            grad_norms.append(float(grad_norm))
            entropies.append(entropy)
            step_stats.append(stats)
        learn_s = time.perf_counter() - t1

        lags_now = np.concatenate(step_lags)
        tokens_now = np.concatenate(step_tokens)
        drift = drift_kl(policy, task, cfg, own_prompts, own_rollout)
        drifts.append(drift)
        all_lags.append(lags_now)
        all_tokens.append(tokens_now)
        reward_mean = float(learner_rewards.mean())
        row = {
            "run_id": rid,
            "step": step,
            "version": version,
            "reward_mean": reward_mean,
            "reward_std": float(learner_rewards.std()),
            "rollout_reward_mean": float(batch.rewards.mean()),
            "clip_frac_low": _mean(step_stats, "clip_frac_low"),
            "clip_frac_high": _mean(step_stats, "clip_frac_high"),
            "ratio_mean": _mean(step_stats, "ratio_mean"),
            "ratio_max": max(s.get("ratio_max", math.nan) for s in step_stats),
            "ess": _mean(step_stats, "ess"),
            "kl": _mean(step_stats, "approx_kl"),
            "entropy": float(np.mean(entropies)),
            "grad_norm": float(np.mean(grad_norms)),
            "drift_kl": drift,
            "staleness_mean": float(lags_now.mean()),
            "staleness_max": int(lags_now.max()),
            "staleness_token_mean": float((lags_now * tokens_now).sum() / max(tokens_now.sum(), 1)),
            "loss": float(np.mean(losses)),
            "rollout_s": rollout_s,
            "learn_s": learn_s,
            "lr": float(optimizer.param_groups[0]["lr"]),
        }
        rows.append(row)
        curve.append(reward_mean)
        reason = detector.update(
            reward=reward_mean,
            loss=row["loss"],
            grad_norm=row["grad_norm"],
            kl=row["kl"],
            drift_kl=drift,
        )
        if reason is not None:
            collapse_step = step
            break

    lags_all = np.concatenate(all_lags)
    tokens_all = np.concatenate(all_tokens)
    # lags once the pipeline is full (version >= max lag): what the run settles at
    filled = [lag for lag, row in zip(all_lags, rows, strict=True) if row["step"] >= spec.max_lag]
    lags_filled = np.concatenate(filled) if filled else lags_all
    summary = summarise(curve, cfg, collapse_step)
    return RunResult(
        run={
            "run_id": rid,
            "preset": run.preset,
            "lr": run.lr,
            "staleness": spec.max_lag,
            "staleness_kind": spec.family,
            "staleness_spec": spec.text,
            "staleness_mean": float(lags_all.mean()),
            "staleness_max": int(lags_all.max()),
            "staleness_token_mean": float((lags_all * tokens_all).sum() / max(tokens_all.sum(), 1)),
            "staleness_mean_filled": float(lags_filled.mean()),
            "seed": run.seed,
            **summary,
            "warm_reward": warm_reward,
            "drift_kl_max": float(np.max(drifts)) if drifts else math.nan,
            "optimizer": cfg.optimizer.label,
            "objective": objective_label(cfg),
            "lr_rule": cfg.lr_rule.kind,
            "prompts_per_step": cfg.prompts_per_step,
            "target_reward": cfg.target_reward,
            "collapsed": collapse_step is not None,
            "collapse_step": collapse_step,
            "collapse_reason": detector.reason,
            "steps": cfg.steps,
            "steps_done": len(rows),
            "minibatches_per_step": minibatches,
            "wall_s": time.perf_counter() - started,
        },
        steps=rows,
    )


def objective_label(cfg: TrainConfig) -> str:
    """A short name of the run's loss: ``clip(0.2/0.28)``, ``decoupled(cap=2)``..."""
    grpo = cfg.grpo
    if grpo.is_cap is not None:
        return f"decoupled(cap={grpo.is_cap:g})"
    return f"clip({grpo.eps_low:g}/{grpo.eps_high:g})"


def _mean(stats: list[dict[str, float]], key: str) -> float:
    values = [s[key] for s in stats if key in s]
    return float(np.mean(values)) if values else math.nan
