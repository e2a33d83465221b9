"""Publishing weights: the transfer time from the learner to the rollout engines.

Colocated training reshards over NVLink, and so do separate pools that share one node; pools
on different nodes send over the network.

A publication costs three things, kept apart because different parties wait for them:

1. the learner's publish (``weight_sync.publish_s``): it holds the learner after the update
   that made the version, and the transfer starts after it;
2. the transfer (this module: ``weight_bytes / bandwidth + latency_s``): under the
   ``blocking`` policy it holds the learner and stalls the engines, under ``overlapped`` it
   runs in the background;
3. each engine's load (``weight_sync.load_s``): a stall of the engine when it takes the
   weights (between batches, after draining, or at an iteration boundary in flight).

Both extra costs default to 0, which is the model before they existed.
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
