"""Publishing weights: the transfer time from the learner to the rollout engines.

Colocated training reshards over NVLink, and so do separate pools that share one node; pools
on different nodes send over the network.
"""

from __future__ import annotations

from stalesim.sim.hardware import GpuSpec
from stalesim.sim.models import ModelSpec


def weight_sync_s(
    gpu: GpuSpec,
    model: ModelSpec,
    *,
    same_node: bool,
    bandwidth_bytes_per_s: float | None,
    latency_s: float,
) -> float:
    """``weight_bytes / bandwidth + latency``; every engine receives its copy in parallel, over
    one direction of NVLink (half the datasheet's both-ways figure) or the network."""
    if bandwidth_bytes_per_s is None:
        bandwidth_bytes_per_s = (
            gpu.nvlink_one_way_bytes_per_s if same_node else gpu.network_bytes_per_s
        )
    return model.weight_bytes / bandwidth_bytes_per_s + latency_s
