"""AReaL: an experiment YAML (with ``key=value`` overrides, as AReaL's launcher takes them),
mapped to a scenario.

The GPU split comes from ``allocation_mode`` (``sglang:d4p1t1+d4p1t1``; older releases wrote
``sglang.d4p1t1+d4p1t1``) or, in AReaL 1.0, the per-engine ``rollout.backend`` and
``actor.backend`` (``sglang:d4t2``, ``fsdp:d8``). ``+`` separates inference from training
(decoupled: ``async``, with ``rollout.max_head_offpolicyness`` (in training steps of ``M``
mini-batches) as ``max_staleness = offpolicyness x M + M - 1`` optimizer steps, and
AReaL's interruptible generation as in-flight updates that recompute the KV cache); ``|``
puts them on the same GPUs (``sync_colocated``). A key the YAML does not give takes AReaL
1.0.4's dataclass default (:data:`DEFAULTS`, from ``areal/api/cli_args.py``), reported as a
default.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from stalesim.common.config_file import ConfigError, load_yaml_text
from stalesim.sim.importers.common import (
    Imported,
    model_preset,
    positive_int,
    read_text,
    validated,
    yaml_scalar,
)

NAME = "areal"
VERSION = "1.0.4"

#: AReaL 1.0.4's dataclass defaults (areal/api/cli_args.py) for the keys this importer reads.
DEFAULTS: dict[str, Any] = {
    "gconfig.n_samples": 1,
    "gconfig.max_new_tokens": 16384,
    "rollout.max_head_offpolicyness": 0,
    "rollout.max_concurrent_rollouts": None,
    "actor.ppo_n_minibatches": 4,
    "actor.recompute_logprob": False,
    "actor.use_decoupled_loss": False,
    "actor.kl_ctl": 0.1,
    "actor.optimizer.lr": 1e-3,
    "total_train_epochs": 1,
    "total_train_steps": None,
}

_PARALLEL = re.compile(r"([a-z]+)(?:\[[A-Za-z_][A-Za-z0-9_]*\])?[:.]?((?:[dtpce]\d+)+)$")


def default_example() -> Path:
    """The example imported without a CONFIG: AReaL's examples/math/gsm8k_grpo.yaml."""
    return Path(str(resources.files("stalesim.sim") / "data" / "importers" / "areal"))


def import_config(path: Path | None, extra: tuple[str, ...] = ()) -> Imported:
    """Import an AReaL experiment YAML with ``key=value`` overrides."""
    if path is None:
        example = default_example() / "gsm8k_grpo.yaml"
        imported = import_config(example, extra)
        imported.source = "AReaL's examples/math/gsm8k_grpo.yaml (shipped with stalesim)"
        imported.notes.append(
            "no CONFIG given: imported AReaL's GSM8K GRPO example (Qwen2.5-1.5B-Instruct, "
            "4 + 4 GPUs); pass your experiment YAML"
        )
        return imported
    text = read_text(path)
    data = load_yaml_text(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected an AReaL experiment (a YAML mapping)")
    if not data.keys() & {"actor", "rollout", "gconfig", "allocation_mode"}:
        raise ConfigError(f"{path}: not an AReaL experiment: none of actor, rollout, gconfig")
    imported = Imported(NAME, str(path))
    try:
        cfg = OmegaConf.create(data)
        for item in extra:
            key, sep, raw = item.partition("=")
            if not sep or not key.lstrip("+"):
                raise ConfigError(f"{path}: override {item!r}: expected key=value")
            OmegaConf.update(cfg, key.lstrip("+"), yaml_scalar(raw), merge=True, force_add=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {' '.join(str(exc).split())}") from None
    return _map(imported, cfg)


def _parallel(spec: str, key: str, source: str) -> tuple[str | None, dict[str, int]]:
    """``sglang:d4p1t1`` as (``sglang``, {d: 4, p: 1, t: 1}); a backend-less ``d4p1t1`` too."""
    text = spec.strip()
    match = _PARALLEL.fullmatch(text) or re.fullmatch(r"()((?:[dtpce]\d+)+)", text)
    if match is None:
        raise ConfigError(
            f"{source}: {key}={spec!r}: expected a backend and sizes like sglang:d4t1"
        )
    sizes = {d: int(n) for d, n in re.findall(r"([dtpce])(\d+)", match.group(2))}
    return (match.group(1) or None), sizes


def _allocation(get: Any, imported: Imported) -> tuple[bool, int, int, int, str]:
    """(colocated, engines, engine TP, learner GPUs, where it came from)."""
    src = imported.source
    mode = get("allocation_mode")
    if isinstance(mode, str) and mode.strip():
        key = "allocation_mode"
        colocated = "|" in mode and "+" not in mode
        parts = re.split(r"[+|]", mode)
        inference = [p for p in parts if p.strip().startswith(("sglang", "vllm"))]
        training = [p for p in parts if p not in inference]
        if len(inference) != 1 or len(training) != 1:
            raise ConfigError(
                f"{src}: allocation_mode={mode!r}: expected one inference and one training "
                "allocation (e.g. sglang:d4p1t1+d4p1t1)"
            )
        gen, train = inference[0], training[0]
    else:
        gen, train = get("rollout.backend"), get("actor.backend")
        if not isinstance(gen, str) or not isinstance(train, str):
            raise ConfigError(
                f"{src}: no allocation_mode and no rollout.backend / actor.backend: the GPU split "
                "is missing"
            )
        key = "rollout.backend, actor.backend"
        strategy = get("rollout.scheduling_strategy.type")
        colocated = strategy == "colocation"
    _, g = _parallel(gen, key, src)
    _, t = _parallel(train, key, src)
    tp = g.get("t", 1) * g.get("p", 1)
    engines = g.get("d", 1)
    learner = math.prod(t.get(d, 1) for d in "dtpc")
    return colocated, engines, tp, learner, key


def _map(imported: Imported, cfg: DictConfig) -> Imported:
    src = imported.source

    def get(key: str) -> Any:
        try:
            value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{src}: {key}: {' '.join(str(exc).split())}") from None
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        return value

    def read(key: str) -> Any:
        value = get(key)
        if value is None and OmegaConf.select(cfg, key, default="\0") == "\0":
            value = DEFAULTS.get(key)
            imported.default(key, value, f"not in your YAML: AReaL {VERSION}'s default")
        return value

    imported.fill(
        "hardware.gpu", "H100", "AReaL's experiment does not name the GPU: set hardware.gpu"
    )
    model_preset(imported, get("actor.path"), "actor.path")

    batch = get("rollout.consumer_batch_size")
    batch_key = "rollout.consumer_batch_size"
    if batch is None:
        batch, batch_key = get("train_dataset.batch_size"), "train_dataset.batch_size"
    if batch is None:
        raise ConfigError(f"{src}: train_dataset.batch_size is missing: the prompts per step")
    batch = positive_int(batch, batch_key, src)
    n = positive_int(read("gconfig.n_samples"), "gconfig.n_samples", src)
    imported.set("workload.prompts_per_step", batch, batch_key)
    imported.set("workload.group_size", n, "gconfig.n_samples")
    imported.set(
        "workload.max_response_tokens",
        positive_int(read("gconfig.max_new_tokens"), "gconfig.max_new_tokens", src),
        "gconfig.max_new_tokens",
    )
    prompt_max = get("train_dataset.max_length")
    if prompt_max is not None:
        imported.set(
            "workload.max_prompt_tokens",
            positive_int(prompt_max, "train_dataset.max_length", src),
            "train_dataset.max_length (prompts longer are filtered out)",
        )
    else:
        imported.fill(
            "workload.max_prompt_tokens", 4096, "no train_dataset.max_length: stalesim's default"
        )
    imported.default(
        "workload.response_tokens",
        "lognormal mean 2000, sigma 0.8 (capped at max_response_tokens)",
        "the YAML caps lengths only; calibrate the distribution from your logs",
    )
    imported.default("workload.prompt_tokens", "fixed 512", "the YAML caps prompt lengths only")

    colocated, engines, tp, learner, where = _allocation(get, imported)
    imported.set("cluster.rollout_engines", engines, f"{where}: inference d")
    imported.set("cluster.rollout_tp", tp, f"{where}: inference t x p")
    imported.set("cluster.learner_gpus", learner, f"{where}: training d x t x p x c")
    minibatches = positive_int(read("actor.ppo_n_minibatches"), "actor.ppo_n_minibatches", src)
    if batch % minibatches:
        raise ConfigError(
            f"{src}: actor.ppo_n_minibatches={minibatches} does not divide the {batch} prompts "
            f"of {batch_key}"
        )
    imported.set("algorithm.minibatches_per_step", minibatches, "actor.ppo_n_minibatches")
    stale = read("rollout.max_head_offpolicyness")
    stale = 0 if stale is None else int(stale)
    if colocated:
        imported.set(
            "algorithm.mode", "sync_colocated", f"{where}: '|' colocates generation and training"
        )
        if stale:
            imported.unmatched(
                "rollout.max_head_offpolicyness",
                stale,
                "colocated: generation and training alternate, so no sample is stale",
            )
    else:
        imported.set(
            "algorithm.mode", "async", f"{where}: generation and training on separate GPUs"
        )
        imported.set(
            "algorithm.max_staleness",
            stale * minibatches + minibatches - 1,
            "rollout.max_head_offpolicyness x actor.ppo_n_minibatches + ppo_n_minibatches - 1 "
            "(AReaL counts a version per training step, the simulator per optimizer step)",
        )
        imported.set(
            "algorithm.inflight_updates", True, "AReaL interrupts generation for new weights"
        )
        imported.set(
            "algorithm.kv_cache_on_update",
            "recompute",
            "interrupted sequences re-prefill on the new weights",
        )
    concurrent = read("rollout.max_concurrent_rollouts")
    if isinstance(concurrent, int) and concurrent > 0:
        imported.set(
            "algorithm.max_concurrent_rollouts", concurrent, "rollout.max_concurrent_rollouts"
        )
    recompute = bool(read("actor.recompute_logprob")) or bool(read("actor.use_decoupled_loss"))
    imported.set(
        "algorithm.old_logprob_pass",
        recompute,
        "actor.recompute_logprob or actor.use_decoupled_loss",
    )
    kl = read("actor.kl_ctl")
    ref = isinstance(kl, int | float) and kl > 0 and get("ref") is not None
    imported.set(
        "algorithm.reference_model", ref, "actor.kl_ctl > 0 and a ref section (AReaL's rule)"
    )
    if get("critic") is not None:
        imported.unmatched(
            "critic", "(section)", "PPO with a critic: the critic's passes are not simulated"
        )
    if get("dynamic_bs") is True:
        imported.unmatched("dynamic_bs", True, "variable-size batches are not simulated")

    lr = read("actor.optimizer.lr")
    on_policy = colocated or stale == 0
    if not on_policy:
        imported.notes.append(
            f"this run is asynchronous (max_head_offpolicyness {stale}): its learning rate "
            f"{lr:g} is not the on-policy baseline the law scales; set target.baseline_lr (and "
            "target.baseline_steps) from your synchronous run"
        )
    else:
        if isinstance(lr, int | float) and lr > 0:
            imported.set("target.baseline_lr", float(lr), "actor.optimizer.lr")
        steps = get("total_train_steps")
        if isinstance(steps, int) and steps > 0:
            imported.set("target.baseline_steps", steps, "total_train_steps (the run's length)")
        else:
            imported.unmatched(
                "total_train_epochs",
                read("total_train_epochs"),
                "steps = epochs x dataset size / batch size, and the dataset size is not in the "
                "YAML: set target.baseline_steps",
            )
    return validated(imported)
