"""The learner's memory check: training state sharded over the learner's GPUs plus one
micro-batch of activations, against each GPU's memory."""

from __future__ import annotations

import pytest
from stalesim.common.config_file import ConfigError
from stalesim.sim.derived import derive
from stalesim.sim.presets import load_scenario


def derived(*overrides: str):
    return derive(load_scenario(None, None, overrides))


def test_memory_of_a_known_config_by_hand() -> None:
    """Qwen2.5-7B on 8 learner GPUs, prompts of 512 and responses capped at 8192 tokens."""
    memory = derived().learner_memory
    n, layers, hidden, tokens = 7.61e9, 28, 3584, 512 + 8192
    assert memory.tokens == tokens
    # 16 bytes per parameter (bf16 weights + grads, fp32 master + two Adam moments) over 8 GPUs
    assert memory.state_bytes == pytest.approx(16 * n / 8, rel=1e-12)
    checkpoints = 2 * hidden * tokens * layers  # each layer's bf16 input
    working = 34 * hidden * tokens  # one layer recomputed for its backward
    gathered = 2 * 2 * n / layers  # two layers' bf16 weights all-gathered
    assert memory.activation_bytes == pytest.approx(checkpoints + working + gathered, rel=1e-12)
    assert memory.total_bytes == pytest.approx(15.22e9 + 3.8946e9, rel=1e-4)
    assert derived().learner_usable_bytes == pytest.approx(0.9 * 80e9, rel=1e-12)
    # twice the GPUs halve the state, not the activations
    sixteen = derived("cluster.learner_gpus=16").learner_memory
    assert sixteen.state_bytes == pytest.approx(memory.state_bytes / 2, rel=1e-12)
    assert sixteen.activation_bytes == memory.activation_bytes


def test_32b_with_adam_on_one_80gb_gpu_is_refused_with_figures_and_keys() -> None:
    with pytest.raises(ConfigError) as err:
        derived("model.preset=qwen2.5-32b", "cluster.learner_gpus=1")
    message = str(err.value)
    assert "\n" not in message
    # 16 x 32.5e9 bytes = 484.3 GiB, against 0.9 x 80 GB = 67.1 GiB
    assert "484.3 GiB per GPU of training state" in message
    assert "67.1 GiB usable" in message
    assert "cluster.learner_gpus=1" in message and "workload.max_response_tokens" in message
    # eight H100s still do not hold it (60.5 GiB of state plus activations); sixteen do
    with pytest.raises(ConfigError, match=r"60\.54 GiB per GPU"):
        derived("model.preset=qwen2.5-32b", "cluster.learner_gpus=8")
    assert derived("model.preset=qwen2.5-32b", "cluster.learner_gpus=16").learner_gpus == 16


def test_colocated_learner_shards_over_the_rollout_gpus() -> None:
    """The engine sleeps while the learner trains, so the learner has each GPU's memory; its
    state is sharded over every rollout GPU, the key to change is the engines'."""
    with pytest.raises(ConfigError, match=r"cluster.rollout_engines x cluster.rollout_tp=4"):
        derived(
            "model.preset=qwen2.5-32b", "algorithm.mode=sync_colocated", "cluster.rollout_engines=4"
        )
    fits = derived(
        "model.preset=qwen2.5-32b", "algorithm.mode=sync_colocated", "cluster.rollout_engines=16"
    )
    assert fits.learner_memory.state_bytes == pytest.approx(16 * 32.5e9 / 16, rel=1e-12)
    # offload or not, the same check; without offload the state also shrinks the KV cache
    offload = derived("algorithm.mode=sync_colocated")
    kept = derived("algorithm.mode=sync_colocated", "cluster.colocated_offload=false")
    assert kept.learner_memory == offload.learner_memory
    assert kept.kv_tokens_per_engine < offload.kv_tokens_per_engine
