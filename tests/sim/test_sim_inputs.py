"""Inputs of the model: length distributions, memory budget, roofline coefficients."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stalesim.sim.derived import derive
from stalesim.sim.lengths import Empirical, Fixed, LogNormal, Uniform, sample_group_lengths
from stalesim.sim.presets import load_scenario, preset_names
from stalesim.sim.time_model import from_coefficients


def test_lognormal_mean_and_group_correlation() -> None:
    rng = np.random.default_rng(0)
    dist = LogNormal(mean=2000, sigma=0.5)
    lengths = sample_group_lengths(dist, rng, 20_000, 8, 0.6, 10**9)
    assert lengths.mean() == pytest.approx(2000, rel=0.02)
    logs = np.log(lengths)
    # share of log-variance between groups equals the configured correlation
    between = logs.mean(axis=1).var() - logs.var(axis=1, ddof=1).mean() / 8
    assert between / logs.var() == pytest.approx(0.6, abs=0.03)
    independent = np.log(sample_group_lengths(dist, rng, 20_000, 8, 0.0, 10**9))
    assert np.corrcoef(independent[:, 0], independent[:, 1])[0, 1] == pytest.approx(0, abs=0.03)


def test_truncation_uniform_and_fixed() -> None:
    rng = np.random.default_rng(1)
    capped = sample_group_lengths(LogNormal(mean=3000, sigma=1.5), rng, 2000, 4, 0.5, 4096)
    assert capped.max() == 4096 and capped.min() >= 1
    uniform = sample_group_lengths(Uniform(low=10, high=14), rng, 10_000, 2, 0.3, 100)
    assert set(np.unique(uniform)) == {10, 11, 12, 13, 14}
    assert np.bincount(uniform.ravel())[10:].min() > 0.18 * uniform.size
    assert (sample_group_lengths(Fixed(value=7), rng, 3, 5, 0.9, 100) == 7).all()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_empirical_lengths_come_from_the_file(tmp_path: Path, suffix: str) -> None:
    values = [100, 200, 200, 900, 4000]
    path = tmp_path / f"lengths{suffix}"
    frame = pl.DataFrame({"n": values, "other": [0] * 5})
    frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
    dist = Empirical(path=path, column="n")
    drawn = sample_group_lengths(dist, np.random.default_rng(2), 5000, 4, 0.0, 1000)
    assert set(np.unique(drawn)) == {100, 200, 900, 1000}  # 4000 truncated to the max
    assert (drawn == 200).mean() == pytest.approx(0.4, abs=0.02)


def test_memory_budget_and_kv_tokens() -> None:
    scenario = load_scenario(None, None, ("model.preset=llama-3.1-8b", "cluster.rollout_tp=2"))
    d = derive(scenario)
    usable = 2 * 80e9 * 0.9
    kv_per_token = 2 * 32 * 8 * 128 * 2  # K and V, layers, KV heads, head dim, bf16
    assert d.engine_usable_bytes == pytest.approx(usable)
    assert d.kv_tokens_per_engine == math.floor((usable - 8.03e9 * 2) / kv_per_token)
    # roofline: the weights stream once per iteration over both GPUs' bandwidth; tensor
    # parallelism adds two all-reduces per layer (20 us each) and sends each sequence's hidden
    # state (4096 bf16 values, half of it each way) over NVLink at 80% of 450 GB/s
    bandwidth = 2 * 3.35e12 * 0.7
    allreduces = 2 * 32
    assert d.time_model.a_s == pytest.approx(0.001 + 8.03e9 * 2 / bandwidth + allreduces * 20e-6)
    assert d.time_model.beta_s_per_token == pytest.approx(kv_per_token / bandwidth)
    tp_bytes_s = allreduces * 2 * (2 - 1) / 2 * 4096 * 2 / (450e9 * 0.8)
    assert d.time_model.gamma_s_per_seq == pytest.approx(
        2 * 8.03e9 / (2 * 989e12 * 0.5) + tp_bytes_s
    )
    # a mixture of experts computes with its active parameters but stores all of them
    moe = derive(load_scenario(None, None, ("model.preset=qwen3-30b-a3b", "cluster.rollout_tp=2")))
    assert moe.time_model.gamma_s_per_seq == pytest.approx(
        2 * 3.3e9 / (2 * 989e12 * 0.5) + 2 * 48 * 2048 * 2 / (450e9 * 0.8)
    )
    assert moe.weight_bytes == pytest.approx(30.5e9 * 2)


def test_closed_form_iterations_inverse() -> None:
    tm = from_coefficients(0.01, 2e-6, 3e-4, 0.0)
    for live, context in [(1, 10), (64, 50_000), (300, 1_000_000)]:
        for n in (1, 7, 250):
            brute = sum(tm.iteration_s(live, context + live * k) for k in range(n))
            total = tm.iterations_s(n, live, context)
            assert total == pytest.approx(brute, rel=1e-12)
            assert tm.iterations_within(total, live, context) == n
            assert tm.iterations_within(total * (1 + 1e-9), live, context) == n + 1


def test_every_preset_loads_and_is_feasible() -> None:
    for name in preset_names():
        derive(load_scenario(None, name, ()))


def test_weight_sync_over_nvlink_within_a_node_else_network() -> None:
    weights = 7.61e9 * 2
    one_node = derive(
        load_scenario(None, None, ("cluster.rollout_engines=4", "cluster.learner_gpus=4"))
    )
    assert one_node.sync_s == pytest.approx(weights / 450e9 + 0.5)  # one way of 900 GB/s
    two_nodes = derive(
        load_scenario(None, None, ("cluster.rollout_engines=8", "cluster.learner_gpus=8"))
    )
    assert two_nodes.sync_s == pytest.approx(weights / 50e9 + 0.5)
    colocated = derive(load_scenario(None, "colocated", ()))
    assert colocated.sync_s == pytest.approx(weights / 450e9 + 0.5)
    assert colocated.learner_gpus == colocated.rollout_gpus == colocated.total_gpus == 16


def test_set_kind_replaces_the_whole_distribution() -> None:
    # the default response lengths are lognormal; switching kind must not keep its keys
    scenario = load_scenario(
        overrides=(
            "workload.response_tokens.kind=fixed",
            "workload.response_tokens.value=100",
        )
    )
    lengths = scenario.workload.response_tokens
    assert lengths.kind == "fixed"
    assert lengths.value == 100
