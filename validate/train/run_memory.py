"""The memory a training run needs, estimated from its config before anything is allocated,
so that a sweep refuses an impossible size up front, naming the key that makes it so."""

from __future__ import annotations

from stalesim.common.memory import refuse_if_too_big
from stalesim.validate.train.presets import SweepConfig, TrainConfig
from stalesim.validate.train.staleness import parse_staleness

FLOAT_BYTES = 4


def policy_params(train: TrainConfig) -> int:
    """Parameters of the policy: the blocks (attention 4E^2, MLP 2mE^2), embeddings, output."""
    e, p = train.policy.n_embd, train.policy
    vocab = train.task.vocab
    positions = train.task.prompt_len + train.task.response_len
    return p.n_layer * (4 + 2 * p.mlp_ratio) * e * e + (2 * vocab + positions) * e


def _activation_bytes(train: TrainConfig, sequences: int) -> int:
    """Forward activations kept for backward, per layer: the residual stream and its norms,
    attention projections, the MLP's hidden layer and the attention matrix; plus the logits."""
    p, e = train.policy, train.policy.n_embd
    length = train.task.prompt_len + train.task.response_len
    vocab = train.task.vocab
    per_token_layer = (10 + 2 * p.mlp_ratio) * e + 2 * p.n_head * length
    per_token = p.n_layer * per_token_layer + 3 * vocab
    return sequences * length * per_token * FLOAT_BYTES


def run_memory_parts(train: TrainConfig, max_lag: int) -> dict[str, int]:
    """Bytes one run needs, by the config keys that set them."""
    params = policy_params(train)
    versions = train.steps * train.minibatches_per_step
    snapshots = min(max_lag, versions) + 1
    policy = f"train.policy (n_layer={train.policy.n_layer}, n_embd={train.policy.n_embd}: {params:,} parameters"
    return {
        f"train.prompts_per_step={train.prompts_per_step} x "
        f"train.samples_per_prompt={train.samples_per_prompt} (the batch's activations)": (
            _activation_bytes(train, train.prompts_per_step * train.samples_per_prompt)
        ),
        f"train.warm_start.batch_size={train.warm_start.batch_size} (warm-start activations)": (
            _activation_bytes(train, train.warm_start.batch_size)
        ),
        f"{policy}, with optimizer state)": 6 * params * FLOAT_BYTES,
        f"{snapshots:,} weight snapshots (staleness {max_lag}) of {policy})": (
            snapshots * params * FLOAT_BYTES
        ),
    }


def check_sweep_fits(config: SweepConfig, workers: int) -> None:
    """Refuse a sweep whose runs, ``workers`` at a time, cannot fit in memory."""
    max_lag = max(parse_staleness(spec).max_lag for grid in config.grids for spec in grid.staleness)
    parts = run_memory_parts(config.train, max_lag)
    total = sum(parts.values())
    at_once = max(1, min(workers, len(config.runs())))
    largest = max(parts, key=parts.__getitem__)
    refuse_if_too_big(
        total * at_once,
        f"{largest}: {at_once} run(s) at a time",
        "make the run smaller there" + (" or use fewer --workers" if at_once > 1 else ""),
    )
