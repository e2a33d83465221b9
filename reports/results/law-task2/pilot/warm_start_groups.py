"""The law-task2 warm start's pass rate and how many groups of a step hold both outcomes (a
binary reward teaches GRPO only through groups with a pass and a fail). Needs the warm start,
trained once and cached (``$STALESIM_CACHE_DIR``). Run from the repository root."""

import torch
from stalesim.validate.presets import preset_sweep
from stalesim.validate.trainer import policy_reward
from stalesim.validate.warm_start import build_policy, warm_start_state

cfg = preset_sweep("law-task2").train
task = cfg.task.build()
for seed in (0,):  # the pilot's seed
    policy = build_policy(cfg.policy, task, seed)
    policy.load_state_dict(warm_start_state(cfg.policy, cfg.task, cfg.warm_start.for_run(seed)))
    rewards = policy_reward(
        cfg, task, policy, torch.Generator().manual_seed(10_000 + seed), "cpu", 512
    )
    passes = rewards.reshape(512, cfg.samples_per_prompt).sum(dim=1)
    mixed = ((passes > 0) & (passes < cfg.samples_per_prompt)).float().mean()
    print(
        f"seed {seed}: pass rate {rewards.mean():.3f}, groups with both outcomes {mixed:.2f}, all fail {(passes == 0).float().mean():.2f}, all pass {(passes == cfg.samples_per_prompt).float().mean():.2f}"
    )
