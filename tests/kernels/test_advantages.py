"""group_advantages runs the reference on every backend; hold it to the reference's numbers."""

from __future__ import annotations

import pytest
import torch
from stalesim.kernels import group_advantages
from stalesim.kernels.reference import group_advantages_ref


@pytest.mark.parametrize("backend", ["auto", "triton", "reference"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_group_advantages_match_reference(backend, scale, dtype):
    rewards = torch.rand(5, 7, generator=torch.Generator().manual_seed(0)).to(dtype)
    got = group_advantages(rewards, scale=scale, eps=1e-6, backend=backend)
    expected = group_advantages_ref(rewards.double(), scale=scale, eps=1e-6)
    assert got.dtype == torch.float32
    assert ((got.double() - expected).norm() / expected.norm()).item() < 1e-6


def test_binary_rewards_of_one_group():
    rewards = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    got = group_advantages(rewards, eps=0.0)
    # mean 0.4, unbiased std sqrt(0.3)
    expected = (rewards - 0.4) / 0.3**0.5
    torch.testing.assert_close(got, expected)


def test_group_advantages_refuse_unknown_backend():
    with pytest.raises(ValueError, match="backend='cuda'"):
        group_advantages(torch.ones(2, 2), backend="cuda")
