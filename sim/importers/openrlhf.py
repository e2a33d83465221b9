"""OpenRLHF: a run's saved arguments or a launch script's flags, mapped to a scenario.

OpenRLHF 0.11 names its flags by section (``--rollout.batch_size``, ``--train.async_enable``);
earlier releases used flat names (``--rollout_batch_size``, ``--async_train``), which are read
as their 0.11 counterparts (:data:`LEGACY`). Saved arguments are a JSON or YAML mapping of the
parsed namespace: flat dotted keys (``vars(parser.parse_args())``), the nested form OpenRLHF's
``hierarchize`` makes of them, or a wandb ``config.yaml`` (each value under ``value``).
A flag the input does not give takes OpenRLHF 0.11.2's default (:data:`DEFAULTS`, from
``openrlhf/cli/train_ppo_ray.py``), reported as a default.

Modes: ``--train.colocate_all`` is the hybrid engine (``sync_colocated``); separate engines
without ``--train.async_enable`` wait for each other (``sync``); with it, a generator and a
trainer share a queue of ``--train.async_queue_size`` batches: a slot frees when the trainer
takes a batch, so with one slot batch ``k+1`` generates while batch ``k`` trains
(``one_step``), and with ``q`` slots up to ``q`` batches run ahead (``async``; with ``M``
optimizer steps per batch the last mini-batch is at most ``(q + 1) M - 1`` versions stale, as
``one_step``'s is ``2M - 1``). ``--train.partial_rollout_enable`` pauses generation for the
weight sync and resumes it on the new weights (in-flight updates, KV cache kept).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from stalesim.common.config_file import ConfigError, load_yaml_text
from stalesim.sim.importers.common import (
    Imported,
    model_preset,
    parse_script,
    positive_int,
    read_text,
    validated,
    yaml_scalar,
)

NAME = "openrlhf"
VERSION = "0.11.2"

#: OpenRLHF 0.11.2's defaults (openrlhf/cli/train_ppo_ray.py) for the flags this importer reads.
DEFAULTS: dict[str, Any] = {
    "actor.model_name_or_path": None,
    "rollout.batch_size": 1024,
    "rollout.n_samples_per_prompt": 1,
    "rollout.max_new_tokens": None,
    "data.max_len": 2048,
    "train.batch_size": 128,
    "train.max_epochs": 1,
    "vllm.num_engines": None,
    "vllm.tensor_parallel_size": 1,
    "vllm.enable_prefix_caching": False,
    "vllm.gpu_memory_utilization": 0.95,
    "actor.num_nodes": 1,
    "actor.num_gpus_per_node": 8,
    "ref.num_nodes": 1,
    "ref.num_gpus_per_node": 8,
    "train.colocate_all": False,
    "train.colocate_actor_ref": False,
    "train.async_enable": False,
    "train.async_queue_size": 1,
    "train.partial_rollout_enable": False,
    "algo.kl.init_coef": 0.01,
    "algo.kl.use_loss": False,
    "algo.advantage.estimator": "gae",
    "algo.dynamic_filtering_enable": False,
    "actor.adam.lr": 1e-6,
}

#: Flat flag names of OpenRLHF before 0.10, as their sectioned names.
LEGACY: dict[str, str] = {
    "pretrain": "actor.model_name_or_path",
    "rollout_batch_size": "rollout.batch_size",
    "n_samples_per_prompt": "rollout.n_samples_per_prompt",
    "generate_max_len": "rollout.max_new_tokens",
    "prompt_max_len": "data.prompt_max_len",
    "max_len": "data.max_len",
    "train_batch_size": "train.batch_size",
    "max_epochs": "train.max_epochs",
    "vllm_num_engines": "vllm.num_engines",
    "vllm_tensor_parallel_size": "vllm.tensor_parallel_size",
    "enable_prefix_caching": "vllm.enable_prefix_caching",
    "vllm_gpu_memory_utilization": "vllm.gpu_memory_utilization",
    "actor_num_nodes": "actor.num_nodes",
    "actor_num_gpus_per_node": "actor.num_gpus_per_node",
    "ref_num_nodes": "ref.num_nodes",
    "ref_num_gpus_per_node": "ref.num_gpus_per_node",
    "colocate_all_models": "train.colocate_all",
    "colocate_actor_ref": "train.colocate_actor_ref",
    "async_train": "train.async_enable",
    "async_queue_size": "train.async_queue_size",
    "init_kl_coef": "algo.kl.init_coef",
    "use_kl_loss": "algo.kl.use_loss",
    "advantage_estimator": "algo.advantage.estimator",
    "actor_learning_rate": "actor.adam.lr",
    "dynamic_filtering": "algo.dynamic_filtering_enable",
}

_MODULE = re.compile(r"openrlhf\.cli\.train_ppo_ray|train_ppo_ray\.py")


def default_example() -> Path:
    """The example imported without a CONFIG."""
    return Path(str(resources.files("stalesim.sim") / "data" / "importers" / "openrlhf"))


def import_config(path: Path | None, extra: tuple[str, ...] = ()) -> Imported:
    """Import OpenRLHF's saved arguments or launch script, with extra ``--flag value``s."""
    if path is None:
        example = default_example() / "train_grpo_qwen2.5_7b_async.sh"
        imported = import_config(example, extra)
        imported.source = f"stalesim's example launch script ({example.name})"
        imported.notes.append(
            "no CONFIG given: imported the example OpenRLHF launch script shipped with stalesim "
            "(Qwen2.5-7B GRPO, async, 8 + 8 GPUs); pass your run's saved args or launch script"
        )
        return imported
    text = read_text(path)
    imported = Imported(NAME, str(path))
    if path.suffix in (".json", ".yaml", ".yml"):
        args = _saved_args(text, path)
    else:
        script = parse_script(text, _MODULE, str(path))
        start = next(i for i, t in enumerate(script.command) if _MODULE.search(t))
        args = _flags(script.command[start + 1 :])
        for name in sorted(script.unresolved):
            imported.notes.append(f"shell variable ${name} is not set in the script; left as is")
    args.update(_flags(list(extra)))
    return _map(imported, args)


def _canonical(key: str) -> str:
    key = key.lstrip("-").replace("-", "_") if key.startswith("--") else key
    return LEGACY.get(key, key)


def _flags(tokens: list[str]) -> dict[str, Any]:
    """``--flag value`` / ``--flag=value`` / ``--flag`` (a switch) as a mapping."""
    args: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            continue
        if "=" in token:
            name, raw = token.split("=", 1)
            args[_canonical(name)] = yaml_scalar(raw)
            continue
        values = []
        while i < len(tokens) and not tokens[i].startswith("--"):
            values.append(tokens[i])
            i += 1
        key = _canonical(token)
        if not values:
            args[key] = True
        else:
            parsed = [yaml_scalar(v) for v in values]
            args[key] = parsed[0] if len(parsed) == 1 else parsed
    return args


def _saved_args(text: str, path: Path) -> dict[str, Any]:
    """Flat dotted arguments from a JSON/YAML dump (flat, nested, or wandb's config)."""
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from None
    else:
        data = load_yaml_text(text, str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected OpenRLHF's arguments as a mapping")
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if str(key).startswith("_wandb"):
                continue
            name = f"{prefix}{key}"
            if isinstance(value, dict) and set(value) <= {"value", "desc"} and "value" in value:
                value = value["value"]  # wandb's config.yaml
            if isinstance(value, dict):
                walk(value, f"{name}.")
            else:
                flat[_canonical(name)] = value

    walk(data, "")
    if not flat.keys() & {"actor.model_name_or_path", "rollout.batch_size", "vllm.num_engines"}:
        raise ConfigError(
            f"{path}: not OpenRLHF's arguments: no actor.model_name_or_path (--pretrain), "
            "rollout.batch_size or vllm.num_engines"
        )
    return flat


def _map(imported: Imported, args: dict[str, Any]) -> Imported:
    src = imported.source

    def read(key: str) -> Any:
        if key in args:
            return args[key]
        value = DEFAULTS.get(key)
        imported.default(key, value, f"not given: OpenRLHF {VERSION}'s default")
        return value

    imported.fill(
        "hardware.gpu", "H100", "OpenRLHF's arguments do not name the GPU: set hardware.gpu"
    )
    model_preset(
        imported, args.get("actor.model_name_or_path"), "--actor.model_name_or_path (--pretrain)"
    )

    batch = positive_int(read("rollout.batch_size"), "--rollout.batch_size", src)
    n = positive_int(read("rollout.n_samples_per_prompt"), "--rollout.n_samples_per_prompt", src)
    train_batch = positive_int(read("train.batch_size"), "--train.batch_size", src)
    imported.set("workload.prompts_per_step", batch, "--rollout.batch_size")
    imported.set("workload.group_size", n, "--rollout.n_samples_per_prompt")
    if (batch * n) % train_batch or batch % ((batch * n) // train_batch or 1):
        raise ConfigError(
            f"{src}: --train.batch_size={train_batch} samples must split the {batch * n} samples "
            f"of a rollout (--rollout.batch_size x --rollout.n_samples_per_prompt) into whole "
            "groups"
        )
    minibatches = (batch * n) // train_batch
    if minibatches < 1:
        raise ConfigError(
            f"{src}: --train.batch_size={train_batch} is larger than a rollout's {batch * n} samples"
        )
    imported.set(
        "algorithm.minibatches_per_step",
        minibatches,
        "rollout.batch_size x n_samples_per_prompt / train.batch_size",
    )
    epochs = read("train.max_epochs")
    if isinstance(epochs, int) and epochs > 1:
        imported.unmatched(
            "train.max_epochs",
            epochs,
            "each rollout is trained this many times; the simulator trains it once",
        )

    prompt_max = args.get("data.prompt_max_len")
    if isinstance(prompt_max, int):
        imported.set(
            "workload.max_prompt_tokens",
            positive_int(prompt_max, "--prompt_max_len", src),
            "--prompt_max_len",
        )
    new_tokens = read("rollout.max_new_tokens")
    if new_tokens is not None:
        new_tokens = positive_int(new_tokens, "--rollout.max_new_tokens", src)
        imported.set(
            "workload.max_response_tokens",
            new_tokens,
            "--rollout.max_new_tokens (--generate_max_len)",
        )
        max_len = args.get("data.max_len")
        if not isinstance(prompt_max, int) and isinstance(max_len, int) and max_len > new_tokens:
            imported.set(
                "workload.max_prompt_tokens",
                max_len - new_tokens,
                "--data.max_len - --rollout.max_new_tokens",
            )
        elif not isinstance(prompt_max, int):
            imported.fill(
                "workload.max_prompt_tokens",
                4096,
                "no prompt limit in the arguments: stalesim's default",
            )
    else:
        max_len = positive_int(read("data.max_len"), "--data.max_len", src)
        imported.set(
            "workload.max_response_tokens",
            max_len,
            "--data.max_len (prompt + response; OpenRLHF generates up to max_len - prompt length)",
        )
        imported.set("workload.max_prompt_tokens", max_len, "--data.max_len")
    imported.default(
        "workload.response_tokens",
        "lognormal mean 2000, sigma 0.8 (capped at max_response_tokens)",
        "the arguments cap lengths only; calibrate the distribution from your logs",
    )
    imported.default("workload.prompt_tokens", "fixed 512", "the arguments cap prompt lengths only")

    actor_gpus = positive_int(read("actor.num_nodes"), "--actor.num_nodes", src) * positive_int(
        read("actor.num_gpus_per_node"), "--actor.num_gpus_per_node", src
    )
    tp = positive_int(read("vllm.tensor_parallel_size"), "--vllm.tensor_parallel_size", src)
    engines = read("vllm.num_engines")
    if not isinstance(engines, int) or engines < 1:
        raise ConfigError(
            f"{src}: --vllm.num_engines={engines!r}: the simulator models generation by vLLM "
            "engines; give their number"
        )
    colocate = bool(read("train.colocate_all"))
    asynchronous = bool(read("train.async_enable"))
    queue = positive_int(read("train.async_queue_size"), "--train.async_queue_size", src)
    partial = bool(read("train.partial_rollout_enable"))
    imported.set("cluster.rollout_engines", engines, "--vllm.num_engines")
    imported.set("cluster.rollout_tp", tp, "--vllm.tensor_parallel_size")
    imported.set(
        "cluster.learner_gpus", actor_gpus, "--actor.num_nodes x --actor.num_gpus_per_node"
    )
    if colocate and not asynchronous:
        imported.set("algorithm.mode", "sync_colocated", "--train.colocate_all")
    elif not asynchronous:
        imported.set("algorithm.mode", "sync", "separate vLLM engines, no --train.async_enable")
    elif queue == 1 and not partial:
        imported.set(
            "algorithm.mode", "one_step", "--train.async_enable with --train.async_queue_size 1"
        )
    else:
        imported.set(
            "algorithm.mode",
            "async",
            "--train.async_enable with --train.async_queue_size > 1 or --train.partial_rollout_enable",
        )
        imported.set(
            "algorithm.max_staleness",
            (queue + 1) * minibatches - 1,
            "(--train.async_queue_size + 1) x optimizer steps per rollout - 1: the last "
            "mini-batch of a batch generated that many batches ahead",
        )
    if asynchronous and colocate:
        imported.unmatched(
            "train.colocate_all",
            True,
            "OpenRLHF refuses --train.colocate_all with --train.async_enable; simulated with "
            "separate pools",
        )
    if partial:
        imported.set("algorithm.inflight_updates", True, "--train.partial_rollout_enable")
        imported.set(
            "algorithm.kv_cache_on_update",
            "keep",
            "--train.partial_rollout_enable (vLLM pause/resume keeps the KV cache)",
        )
    imported.set(
        "cluster.prefix_caching",
        bool(read("vllm.enable_prefix_caching")),
        "--vllm.enable_prefix_caching",
    )
    util = read("vllm.gpu_memory_utilization")
    if isinstance(util, int | float) and 0 < util <= 1:
        imported.set(
            "cluster.memory_reserve_fraction",
            round(1 - float(util), 6),
            "1 - --vllm.gpu_memory_utilization",
        )
    imported.set(
        "algorithm.old_logprob_pass",
        True,
        "OpenRLHF's experience maker recomputes the actor's log-probs in every mode",
    )
    kl = read("algo.kl.init_coef")
    ref = isinstance(kl, int | float) and kl > 0
    imported.set(
        "algorithm.reference_model",
        ref,
        "--algo.kl.init_coef > 0 (OpenRLHF starts a reference model only then)",
    )
    if ref and not colocate and not bool(read("train.colocate_actor_ref")):
        ref_gpus = positive_int(read("ref.num_nodes"), "--ref.num_nodes", src) * positive_int(
            read("ref.num_gpus_per_node"), "--ref.num_gpus_per_node", src
        )
        imported.unmatched(
            "ref.num_nodes x ref.num_gpus_per_node",
            ref_gpus,
            "the reference model runs on GPUs of its own; the simulator runs it on the learner's",
        )
    if bool(read("algo.dynamic_filtering_enable")):
        imported.set("algorithm.dynamic_sampling", True, "--algo.dynamic_filtering_enable")
    estimator = read("algo.advantage.estimator")
    if estimator == "gae":
        imported.unmatched(
            "algo.advantage.estimator",
            estimator,
            "PPO with a critic: the critic's passes are not simulated",
        )

    lr = read("actor.adam.lr")
    if asynchronous:
        imported.notes.append(
            f"this run is asynchronous: its learning rate {lr:g} is not the on-policy baseline "
            "the law scales; set target.baseline_lr (and target.baseline_steps) from your "
            "synchronous run"
        )
    elif isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0:
        imported.set("target.baseline_lr", float(lr), "--actor.adam.lr (--actor_learning_rate)")
        imported.unmatched(
            "train.num_episodes",
            args.get("train.num_episodes", 1),
            "steps = episodes x dataset size / rollout.batch_size, and the dataset size is not "
            "in the arguments: set target.baseline_steps",
        )
    return validated(imported)
