"""The policy: KV-cache sampling draws exactly what full recomputation draws."""

from __future__ import annotations

import torch
from stalesim.validate.train.policy import Policy, PolicyConfig
from stalesim.validate.train.tasks import SortTask, SortTaskConfig


def _policy(seed: int = 0) -> tuple[Policy, SortTask]:
    task = SortTask(SortTaskConfig(n_digits=5, base=8))
    torch.manual_seed(seed)
    policy = Policy(PolicyConfig(n_layer=2, n_head=2, n_embd=32), task.vocab_size, 12)
    # Larger weights than the init gives a peaky, input-dependent distribution to sample.
    with torch.no_grad():
        for param in policy.parameters():
            param.mul_(8.0)
    return policy.double(), task


def test_kv_cache_sampling_equals_uncached_sampling() -> None:
    policy, task = _policy()
    prompts = task.prompts(task.sample_digits(64, torch.Generator().manual_seed(1)))
    draws = []
    for use_cache in (True, False):
        draws.append(
            policy.sample(
                prompts,
                task.max_response_len,
                temperature=0.7,
                generator=torch.Generator().manual_seed(5),
                eos_id=task.eos_id,
                pad_id=task.pad_id,
                use_cache=use_cache,
            )
        )
    cached, full = draws
    assert torch.equal(cached.tokens, full.tokens)
    assert torch.equal(cached.mask, full.mask)
    torch.testing.assert_close(cached.logp, full.logp, rtol=0, atol=1e-10)
    # The samples are not degenerate: several distinct responses.
    assert len({tuple(row) for row in cached.tokens.tolist()}) > 10


def test_sampled_logprobs_match_a_forward_pass_at_the_temperature() -> None:
    policy, task = _policy(seed=3)
    prompts = task.prompts(task.sample_digits(16, torch.Generator().manual_seed(2)))
    rollout = policy.sample(
        prompts,
        task.max_response_len,
        temperature=1.5,
        generator=torch.Generator().manual_seed(0),
        eos_id=task.eos_id,
        pad_id=task.pad_id,
    )
    logits = policy(torch.cat([prompts, rollout.tokens], dim=1)[:, :-1])[:, task.prompt_len - 1 :]
    logp = torch.log_softmax(logits / 1.5, dim=-1).gather(-1, rollout.tokens[..., None])[..., 0]
    torch.testing.assert_close(rollout.logp, logp * rollout.mask, rtol=0, atol=1e-10)
    # The mask covers exactly the tokens up to and including the first end token.
    for tokens, mask in zip(rollout.tokens.tolist(), rollout.mask.tolist(), strict=True):
        end = tokens.index(task.eos_id) + 1 if task.eos_id in tokens else len(tokens)
        assert mask == [1.0] * end + [0.0] * (len(tokens) - end)
