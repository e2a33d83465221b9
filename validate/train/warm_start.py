"""Supervised warm start on imperfect demonstrations, cached by config hash.

GRPO learns only from reward differences inside a group, so a policy that always fails (or
always succeeds) learns nothing. The warm start imitates demonstrations that are right most of
the time but carry mistakes (adjacent digits swapped, digits replaced), for a few hundred
steps: enough for answers of the right shape and a middling reward with spread between samples.
The checkpoint is stored under ``<cache>/warm_start/<hash>.pt`` (``$STALESIM_CACHE_DIR`` or
``~/.cache/stalesim``) so the warm start runs once per config. By default each run seed has its
own warm start (``per_run_seed``): runs with the same seed share one starting point across
learning rates and staleness values, runs with different seeds do not, so seeds are independent
replicates of the whole experiment and a bootstrap over seeds sees warm-start noise.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from stalesim.common.config_file import StrictModel
from stalesim.common.files import atomic_write
from stalesim.validate.train.policy import Policy, PolicyConfig
from stalesim.validate.train.tasks import DigitTask, TaskConfig


class WarmStartConfig(StrictModel):
    """How the starting policy is made."""

    steps: int = Field(300, ge=0, le=1_000_000)
    batch_size: int = Field(128, ge=1, le=1_000_000)
    lr: float = Field(3e-3, gt=0, le=10)
    corrupt_prob: float = Field(
        0.5, ge=0, le=1, description="chance that a demonstration carries mistakes"
    )
    max_mistakes: int = Field(
        2, ge=1, le=64, description="a corrupted demonstration has 1..max mistakes"
    )
    seed: int = Field(1234, ge=0, lt=2**31)
    per_run_seed: bool = Field(
        True,
        description="each run seed gets its own warm start (seed + run seed), so seeds are "
        "independent replicates; False: every run shares one warm start",
    )

    def for_run(self, run_seed: int) -> WarmStartConfig:
        """The warm-start config of the run with seed ``run_seed``."""
        if not self.per_run_seed:
            return self
        return self.model_copy(update={"seed": self.seed + run_seed, "per_run_seed": False})


def cache_dir() -> Path:
    """Where warm-start checkpoints are cached."""
    root = os.environ.get("STALESIM_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "stalesim"


def config_hash(*configs: StrictModel) -> str:
    """A short stable hash of the configs' JSON."""
    payload = json.dumps([c.model_dump(mode="json") for c in configs], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def build_policy(policy_config: PolicyConfig, task: DigitTask, seed: int) -> Policy:
    """A freshly initialised policy sized for ``task``."""
    torch.manual_seed(seed)
    return Policy(policy_config, task.vocab_size, task.prompt_len + task.max_response_len)


def corrupted_demonstrations(
    task: DigitTask, digits: torch.Tensor, config: WarmStartConfig, generator: torch.Generator
) -> torch.Tensor:
    """Correct responses, of which a fraction carry 1..max_mistakes swaps or replacements
    among the answer's digits (never its end-of-sequence token)."""
    demos = task.solutions(digits).clone()
    n, width = digits.shape[0], task.answer_digits
    corrupt = torch.rand(n, generator=generator) < config.corrupt_prob
    mistakes = torch.randint(1, config.max_mistakes + 1, (n,), generator=generator)
    for round_ in range(config.max_mistakes):
        active = corrupt & (mistakes > round_)
        position = torch.randint(0, width - 1, (n,), generator=generator)
        swap = torch.rand(n, generator=generator) < 0.5
        rows = torch.arange(n)
        left, right = demos[rows, position].clone(), demos[rows, position + 1].clone()
        random_digit = torch.randint(0, task.config.base, (n,), generator=generator)
        new_left = torch.where(swap, right, random_digit)
        new_right = torch.where(swap, left, right)
        demos[rows, position] = torch.where(active, new_left, left)
        demos[rows, position + 1] = torch.where(active, new_right, right)
    return demos


def train_warm_start(
    policy_config: PolicyConfig,
    task_config: TaskConfig,
    config: WarmStartConfig,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Run the supervised warm start and return the policy's state dict (on CPU)."""
    task = task_config.build()
    policy = build_policy(policy_config, task, config.seed).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
    for _ in range(config.steps):
        digits = task.sample_digits(config.batch_size, generator)
        demos = corrupted_demonstrations(task, digits, config, generator)
        sequence = torch.cat([task.prompts(digits), demos], dim=1).to(device)
        logits = policy(sequence[:, :-1])[:, task.prompt_len - 1 :]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), sequence[:, task.prompt_len :].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}


def warm_start_state(
    policy_config: PolicyConfig,
    task_config: TaskConfig,
    config: WarmStartConfig,
    device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """The warm-start weights for these configs: from the cache, or trained and cached."""
    path = cache_dir() / "warm_start" / f"{config_hash(policy_config, task_config, config)}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    state = train_warm_start(policy_config, task_config, config, device)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return state
