"""The law-task2 warm start's pass rate and how many groups of a step hold both outcomes (a
binary reward teaches GRPO only through groups with a pass and a fail), for each run seed given
(default 0, the pilot's). Trains each seed's warm start once and caches it
(``$STALESIM_CACHE_DIR``). Run from the repository root:
``python tools/warm_start_groups.py 0 1``."""

import sys

import torch
from stalesim.validate.train.presets import preset_sweep
from stalesim.validate.train.trainer import policy_reward
from stalesim.validate.train.warm_start import build_policy, warm_start_state

PROMPTS = 512
cfg = preset_sweep("law-task2").train
task = cfg.task.build()
torch.set_num_threads(1)
for seed in [int(s) for s in sys.argv[1:]] or [0]:
    policy = build_policy(cfg.policy, task, seed)
    policy.load_state_dict(warm_start_state(cfg.policy, cfg.task, cfg.warm_start.for_run(seed)))
    generator = torch.Generator().manual_seed(10_000 + seed)
    rewards = policy_reward(cfg, task, policy, generator, "cpu", PROMPTS)
    passes = rewards.reshape(PROMPTS, cfg.samples_per_prompt).sum(dim=1)
    mixed = ((passes > 0) & (passes < cfg.samples_per_prompt)).float().mean()
    none, every = (passes == 0).float().mean(), (passes == cfg.samples_per_prompt).float().mean()
    print(
        f"seed {seed}: pass rate {rewards.mean():.3f}, groups with both outcomes {mixed:.2f}, "
        f"all fail {none:.2f}, all pass {every:.2f}"
    )
