"""The pipeline's learner step: GRPO on a batch of finished groups, as the trainer makes it.

A batch comes from the coordinator as the samples of ``B`` groups, each with its tokens,
behaviour log-probs and reward. The step normalises rewards inside each group
(``kernels.group_advantages``), then makes one AdamW update per mini-batch on the clipped GRPO
loss (:func:`stalesim.validate.train.trainer.grpo_step_loss`, through ``stalesim.kernels``) against the
behaviour log-probs; each update is a new version. Phases are timed: ``overhead`` (building the
batch, and publishing the weights after the step) and ``train`` (forward, backward and update of
each mini-batch), as rows of the shared learner timing table.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from stalesim import kernels
from stalesim.validate.pipeline.config import PipelineConfig
from stalesim.validate.train.collapse import CollapseDetector
from stalesim.validate.train.optimizers import build_optimizer
from stalesim.validate.train.policy import Rollout
from stalesim.validate.train.staleness_lr import UpdateLR
from stalesim.validate.train.tasks import DigitTask
from stalesim.validate.train.trainer import grpo_step_loss, resolve_device
from stalesim.validate.train.warm_start import build_policy


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A SHA-256 of the weights' bytes, in the state dict's order: equal digests, equal weights."""
    h = hashlib.sha256()
    for name, tensor in state.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def batch_tensors(
    task: DigitTask, samples: list[dict[str, Any]], digits: list[list[int]], device: torch.device
) -> tuple[torch.Tensor, Rollout, torch.Tensor]:
    """Prompts ``[n, P]``, the padded rollout and rewards ``[n]`` of a batch's samples."""
    width = task.max_response_len
    n = len(samples)
    group_size = n // len(digits)
    tokens = torch.full((n, width), task.pad_id, dtype=torch.long)
    logp = torch.zeros(n, width)
    mask = torch.zeros(n, width)
    prompts = torch.tensor([s["prompt"] for s in samples], dtype=torch.long)
    for i, s in enumerate(samples):
        length = len(s["tokens"])
        tokens[i, :length] = torch.tensor(s["tokens"], dtype=torch.long)
        logp[i, :length] = torch.tensor(s["logps"])
        mask[i, :length] = 1.0
    rewards = torch.tensor([s["reward"] for s in samples], dtype=torch.float32)
    del group_size
    return (
        prompts.to(device),
        Rollout(tokens=tokens.to(device), logp=logp.to(device), mask=mask.to(device)),
        rewards,
    )


class PipelineLearner:
    """The policy, its optimizer and the GRPO step; Ray-free (the actor wraps it)."""

    def __init__(
        self, config: PipelineConfig, warm_state: dict[str, torch.Tensor], t0: float
    ) -> None:
        self.config = config
        self.cfg = config.train
        self.t0 = t0
        self.device = resolve_device(self.cfg.device)
        self.task = self.cfg.task.build()
        self.policy = build_policy(self.cfg.policy, self.task, config.seed).to(self.device)
        self.policy.load_state_dict(warm_state)
        self.optimizer = build_optimizer(
            self.policy.parameters(), self.cfg.optimizer, config.lr, self.cfg.weight_decay
        )
        self.update_lr = UpdateLR(
            self.optimizer, self.cfg.lr_rule, config.lr, self.cfg.warmup_steps
        )
        self.detector = CollapseDetector(self.cfg.collapse)
        self.version = 0

    def now(self) -> float:
        return time.time() - self.t0

    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.policy.state_dict().items()}

    def step(
        self,
        step: int,
        batch: dict[str, Any],
        idle_before_s: float,
        publish: Callable[[int, dict[str, torch.Tensor]], None],
        extra_overhead_s: float = 0.0,
    ) -> tuple[dict[str, Any], list[tuple], list[tuple]]:
        """Train on ``batch``, publish the new weights; returns the step's row, its timing rows
        (step, phase, tokens, gpus, seconds) and its busy intervals. ``extra_overhead_s`` is
        learner time outside this call that the step also costs (asking for the batch,
        reporting the previous step): it is added to the step's overhead row."""
        cfg, task = self.cfg, self.task
        start = self.now()
        t_prep = time.perf_counter()
        samples = batch["samples"]
        prompts, rollout, rewards = batch_tensors(task, samples, batch["digits"], self.device)
        G, M = cfg.samples_per_prompt, cfg.minibatches_per_step
        advantages = kernels.group_advantages(
            rewards.view(-1, G).to(self.device), scale=cfg.grpo.advantage_scale, backend=cfg.backend
        ).reshape(-1)
        # tokens as the simulator counts them: prompt plus response of every sample
        seq_tokens = np.array([len(s["prompt"]) + len(s["tokens"]) for s in samples])
        prep_s = time.perf_counter() - t_prep
        # each sample's behaviour version: the oldest that generated any of its tokens
        behaviour = np.array([min(s["versions"]) for s in samples])
        per_mb = len(samples) // M
        version_start = self.version
        timing: list[tuple] = []
        busy: list[tuple] = [("learner", 0, "overhead", start, start + prep_s)]
        losses, norms, entropies, stats_all = [], [], [], []
        train_start = self.now()
        for m in range(M):
            t_mb = time.perf_counter()
            rows = slice(m * per_mb, (m + 1) * per_mb)
            mb = Rollout(
                tokens=rollout.tokens[rows], logp=rollout.logp[rows], mask=rollout.mask[rows]
            )
            loss, stats, entropy = grpo_step_loss(
                self.policy, task, cfg, prompts[rows], mb, advantages[rows]
            )
            self.update_lr.set(
                self.version,
                lags=self.version - behaviour[rows],
                tokens=mb.mask.sum(dim=1).cpu().numpy(),
                ess=stats.get("ess", math.nan),
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(
                self.policy.parameters(), cfg.grad_clip if cfg.grad_clip is not None else math.inf
            )
            self.optimizer.step()
            self.version += 1
            losses.append(float(loss.detach()))
            norms.append(float(norm))
            entropies.append(entropy)
            stats_all.append(stats)
            timing.append(
                (step, "train", int(seq_tokens[rows].sum()), 1, time.perf_counter() - t_mb)
            )
        end = self.now()
        busy.append(("learner", 0, "train", train_start, end))
        t_pub = time.perf_counter()
        publish(self.version, self.state())
        publish_s = time.perf_counter() - t_pub
        busy.append(("learner", 0, "sync", end, end + publish_s))
        timing.append(
            (step, "overhead", int(seq_tokens.sum()), 1, prep_s + publish_s + extra_overhead_s)
        )
        reward_mean = float(rewards.mean())
        kl = float(np.mean([s.get("approx_kl", math.nan) for s in stats_all]))
        row = {
            "step": step,
            "start_s": start,
            "end_s": end,
            "idle_before_s": idle_before_s,
            "version_start": version_start,
            "version_end": self.version,
            "tokens": int(seq_tokens.sum()),
            "reward_mean": reward_mean,
            "reward_std": float(rewards.std()),
            "loss": float(np.mean(losses)),
            "grad_norm": float(np.mean(norms)),
            "entropy": float(np.mean(entropies)),
            "kl": kl,
            "clip_frac_low": float(np.mean([s.get("clip_frac_low", math.nan) for s in stats_all])),
            "clip_frac_high": float(
                np.mean([s.get("clip_frac_high", math.nan) for s in stats_all])
            ),
            "ess": float(np.mean([s.get("ess", math.nan) for s in stats_all])),
            "behaviour_version_mean": float(behaviour.mean()),
            "prep_s": prep_s,
            "train_s": end - train_start,
            "publish_s": publish_s,
            "call_overhead_s": extra_overhead_s,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "collapse_reason": None,
        }
        reason = self.detector.update(
            reward=reward_mean, loss=row["loss"], grad_norm=row["grad_norm"], kl=kl
        )
        row["collapse_reason"] = reason
        return row, timing, busy
