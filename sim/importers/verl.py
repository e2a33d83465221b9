"""verl: a resolved Hydra config, ``ppo_trainer.yaml`` (or a recipe's) with overrides, or a
launch script, mapped to a scenario.

Every input is laid over verl 0.9.1's own defaults (``data/importers/verl/ppo_trainer.yaml``,
the flattened ``_generated_ppo_trainer.yaml`` verl ships), as Hydra composes them; a key read
from those defaults rather than the user's config is reported as a default. Interpolations
(``${...}``) are resolved by omegaconf key by key; one that cannot be resolved is an error
naming it. Three trainers are told apart by their recipe's keys or module:

* ``verl.trainer.main_ppo``: the hybrid engine, every GPU generates then trains
  (``sync_colocated``);
* the one-step-off recipe (a top-level ``rollout`` pool, no ``async_training``): ``one_step``;
* the fully-async recipe (``async_training``): ``async``, with verl's staleness threshold as
  ``max_stale_fraction`` and a publication every ``trigger_parameter_sync_step`` local updates.
"""

from __future__ import annotations

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
    parse_script,
    positive_int,
    read_text,
    validated,
    yaml_scalar,
)

NAME = "verl"
VERSION = "0.9.1"

#: The trainer module of each verl entry point, by recipe.
_MODULES = re.compile(r"(main_ppo|fully_async_main)(\.py)?\b")
_RECIPES = {
    "fully_async": "fully_async_ppo_trainer.yaml",
    "one_step_off": "one_step_off_ppo_trainer.yaml",
}


def _data(name: str) -> str:
    return resources.files("stalesim.sim").joinpath("data", "importers", "verl", name).read_text()


def default_example() -> Path:
    """The example imported without a CONFIG: verl's shipped default config."""
    return Path(str(resources.files("stalesim.sim") / "data" / "importers" / "verl"))


def import_config(path: Path | None, extra: tuple[str, ...] = ()) -> Imported:
    """Import a verl config (YAML or launch script) with Hydra ``key=value`` overrides."""
    if path is None:
        source = f"verl {VERSION}'s shipped default (trainer/config/ppo_trainer.yaml)"
        imported = Imported(NAME, source)
        imported.notes.append(
            "no CONFIG given: imported verl's own default config (GSM8K, deepseek-llm-7b-chat, "
            "8 GPUs); pass your .hydra/config.yaml, ppo_trainer.yaml or launch script"
        )
        user = OmegaConf.create({})
        return _map(imported, _compose(user, None, extra, imported), user, extra)
    text = read_text(path)
    imported = Imported(NAME, str(path))
    if _is_script(path, text):
        script = parse_script(text, _MODULES, str(path))
        overrides, recipe = _script_overrides(script.command, imported)
        for name in sorted(script.unresolved):
            imported.notes.append(f"shell variable ${name} is not set in the script; left as is")
        user = OmegaConf.create({})
        return _map(imported, _compose(user, recipe, (*overrides, *extra), imported), user, extra)
    data = load_yaml_text(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: is empty, not a verl config")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a verl config (a YAML mapping), got {type(data).__name__}"
        )
    recipe = _recipe_of(data)
    own = {k: v for k, v in data.items() if k not in ("defaults", "hydra")}
    if not own.keys() & {"actor_rollout_ref", "data", "trainer", "async_training", "rollout"}:
        raise ConfigError(
            f"{path}: not a verl config: none of actor_rollout_ref, data, trainer at the top"
        )
    try:
        user = OmegaConf.create(own)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {_one_line(exc)}") from None
    return _map(imported, _compose(user, recipe, extra, imported), user, extra)


def _is_script(path: Path, text: str) -> bool:
    if path.suffix in (".yaml", ".yml", ".json"):
        return False
    return path.suffix == ".sh" or text.startswith("#!") or bool(_MODULES.search(text))


def _recipe_of(data: dict[str, Any]) -> str | None:
    if "async_training" in data:
        return "fully_async"
    if isinstance(data.get("rollout"), dict) and "nnodes" in data["rollout"]:
        return "one_step_off"
    return None


def _script_overrides(tokens: list[str], imported: Imported) -> tuple[list[str], str | None]:
    """The Hydra overrides after the trainer module, and the recipe the module or
    ``--config-name`` names."""
    start = next(i for i, t in enumerate(tokens) if _MODULES.search(t))
    module = tokens[start]
    recipe = None
    if "fully_async" in module:
        recipe = "fully_async"
    elif "one_step_off" in module:
        recipe = "one_step_off"
    overrides = []
    args = iter(tokens[start + 1 :])
    for token in args:
        if token in ("--config-name", "--config-path", "-cn", "-cp"):
            value = next(args, "")
            token = f"{token}={value}"
        if token.startswith(("--config-name=", "-cn=")):
            name = token.split("=", 1)[1]
            recipe = next((r for r, f in _RECIPES.items() if f.startswith(name)), recipe)
            continue
        if token.startswith("-"):
            continue
        if "=" in token or token.startswith("~"):
            overrides.append(token)
        elif token in ("&&", ";", "|", "&", ">", "2>&1"):
            break
    imported.notes.append(
        f"launch script: {module} with {len(overrides)} Hydra overrides"
        + (f" ({recipe} recipe)" if recipe else "")
    )
    return overrides, recipe


def _compose(
    user: DictConfig, recipe: str | None, overrides: tuple[str, ...] | list[str], imported: Imported
) -> DictConfig:
    """verl's defaults, the recipe's config, the user's file, then the overrides, as Hydra
    composes them."""
    base = OmegaConf.create(load_yaml_text(_data("ppo_trainer.yaml"), "verl defaults"))
    layers = [base]
    if recipe is not None:
        recipe_data = load_yaml_text(_data(_RECIPES[recipe]), f"verl {recipe} recipe")
        layers.append(
            OmegaConf.create(
                {k: v for k, v in recipe_data.items() if k not in ("defaults", "hydra")}
            )
        )
    layers.append(user)
    cfg = OmegaConf.merge(*layers)
    for item in overrides:
        _apply_override(cfg, user, item, imported)
    return cfg


def _apply_override(cfg: DictConfig, user: DictConfig, item: str, imported: Imported) -> None:
    """One Hydra override: ``key=value``, ``+key=value`` (add), ``++key=value`` (force) or
    ``~key`` (delete). It is also recorded in ``user`` so that its key counts as the user's."""
    if item.startswith("~"):
        key = item[1:].split("=", 1)[0]
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig) and leaf in node:
            del node[leaf]
        return
    if "=" not in item:
        raise ConfigError(f"{imported.source}: override {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.lstrip("+")
    if not key or not re.fullmatch(r"[A-Za-z0-9_.@/-]+", key):
        raise ConfigError(f"{imported.source}: override {item!r}: malformed key")
    value = yaml_scalar(raw) if raw.strip() else ""
    try:
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        OmegaConf.update(user, key, value, merge=True, force_add=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{imported.source}: override {item!r}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()).split(" full_key:")[0]


class _Reader:
    """Reads keys of the composed config, noting which came from verl's defaults."""

    def __init__(self, cfg: DictConfig, user: DictConfig, imported: Imported) -> None:
        self.cfg, self.user, self.imported = cfg, user, imported

    def __call__(self, key: str, default: Any = None) -> Any:
        try:
            value = OmegaConf.select(self.cfg, key, default=default, throw_on_missing=False)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"{self.imported.source}: {key}: {_one_line(exc)}") from None
        if isinstance(value, DictConfig | list) or OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        return value

    def given(self, key: str) -> bool:
        """Whether the user's file or overrides set ``key`` (rather than verl's defaults)."""
        return OmegaConf.select(self.user, key, default="\0missing") != "\0missing"

    def read(self, key: str) -> Any:
        """``key``'s value; one taken from verl's defaults is reported as a default."""
        value = self(key)
        if not self.given(key):
            self.imported.default(key, value, f"not in your config: verl {VERSION}'s default")
        return value


def _map(imported: Imported, cfg: DictConfig, user: DictConfig, extra: tuple[str, ...]) -> Imported:
    get = _Reader(cfg, user, imported)
    src = imported.source
    if get("async_training") is not None:
        recipe = "fully_async"
    elif get("rollout.nnodes") is not None:
        recipe = "one_step_off"
    else:
        recipe = None

    imported.fill("hardware.gpu", "H100", "verl's config does not name the GPU: set hardware.gpu")

    model_preset(imported, get.read("actor_rollout_ref.model.path"), "actor_rollout_ref.model.path")

    n = positive_int(get.read("actor_rollout_ref.rollout.n"), "actor_rollout_ref.rollout.n", src)
    mini = positive_int(
        get.read("actor_rollout_ref.actor.ppo_mini_batch_size"),
        "actor_rollout_ref.actor.ppo_mini_batch_size",
        src,
    )
    if recipe == "fully_async":
        require = positive_int(
            get.read("async_training.require_batches"), "async_training.require_batches", src
        )
        trigger = positive_int(
            get.read("async_training.trigger_parameter_sync_step"),
            "async_training.trigger_parameter_sync_step",
            src,
        )
        batch = mini * require * trigger
        minibatches = require * trigger
        imported.set(
            "workload.prompts_per_step",
            batch,
            "ppo_mini_batch_size x async_training.require_batches x trigger_parameter_sync_step "
            "(the prompts between two parameter syncs)",
        )
        imported.unmatched(
            "data.train_batch_size",
            get("data.train_batch_size"),
            "not used by the fully-async trainer (it consumes ppo_mini_batch_size x "
            "require_batches per local update)",
        )
    else:
        batch = positive_int(get.read("data.train_batch_size"), "data.train_batch_size", src)
        if batch % mini:
            raise ConfigError(
                f"{src}: actor_rollout_ref.actor.ppo_mini_batch_size={mini} does not divide "
                f"data.train_batch_size={batch}"
            )
        minibatches = batch // mini
        imported.set("workload.prompts_per_step", batch, "data.train_batch_size")
    imported.set("workload.group_size", n, "actor_rollout_ref.rollout.n")
    imported.set(
        "workload.max_prompt_tokens",
        positive_int(get.read("data.max_prompt_length"), "data.max_prompt_length", src),
        "data.max_prompt_length",
    )
    imported.set(
        "workload.max_response_tokens",
        positive_int(get.read("data.max_response_length"), "data.max_response_length", src),
        "data.max_response_length",
    )
    imported.default(
        "workload.response_tokens",
        "lognormal mean 2000, sigma 0.8 (capped at max_response_tokens)",
        "the config caps lengths only; calibrate the distribution from your logs",
    )
    imported.default("workload.prompt_tokens", "fixed 512", "the config caps prompt lengths only")

    tp = positive_int(
        get.read("actor_rollout_ref.rollout.tensor_model_parallel_size"),
        "actor_rollout_ref.rollout.tensor_model_parallel_size",
        src,
    )
    trainer_gpus = positive_int(get.read("trainer.nnodes"), "trainer.nnodes", src) * positive_int(
        get.read("trainer.n_gpus_per_node"), "trainer.n_gpus_per_node", src
    )
    if recipe is None:
        if trainer_gpus % tp:
            raise ConfigError(
                f"{src}: actor_rollout_ref.rollout.tensor_model_parallel_size={tp} does not divide "
                f"the {trainer_gpus} GPUs of trainer.nnodes x trainer.n_gpus_per_node"
            )
        imported.set("algorithm.mode", "sync_colocated", "verl.trainer.main_ppo (hybrid engine)")
        imported.set(
            "cluster.rollout_engines",
            trainer_gpus // tp,
            "trainer.nnodes x n_gpus_per_node / rollout.tensor_model_parallel_size",
        )
        imported.set("cluster.learner_gpus", trainer_gpus, "trainer.nnodes x n_gpus_per_node")
    else:
        rollout_gpus = positive_int(
            get.read("rollout.nnodes"), "rollout.nnodes", src
        ) * positive_int(get.read("rollout.n_gpus_per_node"), "rollout.n_gpus_per_node", src)
        if rollout_gpus % tp:
            raise ConfigError(
                f"{src}: actor_rollout_ref.rollout.tensor_model_parallel_size={tp} does not divide "
                f"the {rollout_gpus} GPUs of rollout.nnodes x rollout.n_gpus_per_node"
            )
        mode = "async" if recipe == "fully_async" else "one_step"
        imported.set("algorithm.mode", mode, f"the {recipe} recipe")
        imported.set(
            "cluster.rollout_engines",
            rollout_gpus // tp,
            "rollout.nnodes x n_gpus_per_node / tensor_model_parallel_size",
        )
        imported.set("cluster.learner_gpus", trainer_gpus, "trainer.nnodes x n_gpus_per_node")
    imported.set("cluster.rollout_tp", tp, "actor_rollout_ref.rollout.tensor_model_parallel_size")
    seqs = get.read("actor_rollout_ref.rollout.max_num_seqs")
    if seqs is not None:
        imported.set(
            "cluster.max_num_seqs",
            positive_int(seqs, "max_num_seqs", src),
            "actor_rollout_ref.rollout.max_num_seqs",
        )
    caching = get.read("actor_rollout_ref.rollout.enable_prefix_caching")
    if isinstance(caching, bool):
        imported.set(
            "cluster.prefix_caching", caching, "actor_rollout_ref.rollout.enable_prefix_caching"
        )
    util = get.read("actor_rollout_ref.rollout.gpu_memory_utilization")
    if isinstance(util, int | float) and 0 < util <= 1:
        imported.set(
            "cluster.memory_reserve_fraction",
            round(1 - float(util), 6),
            "1 - actor_rollout_ref.rollout.gpu_memory_utilization",
        )

    imported.set(
        "algorithm.minibatches_per_step",
        minibatches,
        "require_batches x trigger_parameter_sync_step"
        if recipe == "fully_async"
        else "data.train_batch_size / ppo_mini_batch_size",
    )
    if recipe == "fully_async":
        imported.set(
            "algorithm.streaming", True, "fully-async trainer takes mini-batches as they arrive"
        )
        imported.set(
            "algorithm.max_concurrent_rollouts",
            16 * (rollout_gpus // tp),
            "the fully-async rollouter runs 16 prompts per server",
        )
        imported.set(
            "algorithm.publish_interval",
            minibatches,
            "trigger_parameter_sync_step x require_batches (optimizer steps between syncs)",
        )
        threshold = get.read("async_training.staleness_threshold")
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or threshold < 0:
            raise ConfigError(
                f"{src}: async_training.staleness_threshold={threshold!r}: expected a number >= 0"
            )
        imported.set(
            "algorithm.max_stale_fraction", float(threshold), "async_training.staleness_threshold"
        )
        if get.read("async_training.partial_rollout") is True:
            imported.set("algorithm.inflight_updates", True, "async_training.partial_rollout")
            imported.set(
                "algorithm.kv_cache_on_update",
                "recompute",
                "async_training.partial_rollout (interrupted sequences resume on new weights)",
            )
    epochs = get("actor_rollout_ref.actor.ppo_epochs")
    if isinstance(epochs, int) and epochs > 1:
        imported.unmatched(
            "actor_rollout_ref.actor.ppo_epochs",
            epochs,
            "each batch is trained this many times; the simulator trains it once",
        )
    rollout_logprobs = bool(get("actor_rollout_ref.actor.use_rollout_log_probs")) or bool(
        get("async_training.use_rollout_log_probs")
    )
    bypass = bool(get("algorithm.rollout_correction.bypass_mode"))
    imported.set(
        "algorithm.old_logprob_pass",
        not (rollout_logprobs or bypass),
        "not (actor.use_rollout_log_probs or async_training.use_rollout_log_probs or "
        "algorithm.rollout_correction.bypass_mode)",
    )
    kl_loss = bool(get.read("actor_rollout_ref.actor.use_kl_loss"))
    kl_reward = bool(get.read("algorithm.use_kl_in_reward"))
    imported.set(
        "algorithm.reference_model",
        kl_loss or kl_reward,
        "actor.use_kl_loss or algorithm.use_kl_in_reward",
    )
    if get("algorithm.filter_groups.enable") is True:
        imported.set("algorithm.dynamic_sampling", True, "algorithm.filter_groups.enable")
        if recipe != "fully_async":
            imported.set(
                "algorithm.dynamic_sampling_policy",
                "regenerate",
                "verl's trainer regenerates whole batches until enough groups are kept",
            )
            gen = get.read("data.gen_batch_size")
            if isinstance(gen, int) and not isinstance(gen, bool) and gen > 0:
                imported.set("algorithm.dynamic_sampling_chunk", gen, "data.gen_batch_size")
            rounds = get.read("algorithm.filter_groups.max_num_gen_batches")
            if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > 0:
                imported.set(
                    "algorithm.dynamic_sampling_max_rounds",
                    rounds,
                    "algorithm.filter_groups.max_num_gen_batches",
                )
    estimator = get("algorithm.adv_estimator")
    if estimator == "gae":
        imported.unmatched(
            "algorithm.adv_estimator",
            estimator,
            "PPO with a critic: the critic's forward and training passes are not simulated",
        )
    if get("actor_rollout_ref.rollout.multi_turn.enable") is True:
        imported.unmatched(
            "actor_rollout_ref.rollout.multi_turn.enable",
            True,
            "multi-turn rollouts (tool calls between turns) are simulated as one response",
        )
    for key in ("actor_rollout_ref.actor.strategy", "actor_rollout_ref.rollout.name"):
        value = get(key)
        if value not in (None, "???"):
            imported.unmatched(
                key, value, "the backend sets the real speed: calibrate from your logs"
            )

    _target(imported, get, recipe)
    return validated(imported)


def _target(imported: Imported, get: _Reader, recipe: str | None) -> None:
    lr = get.read("actor_rollout_ref.actor.optim.lr")
    steps = get("trainer.total_training_steps")
    epochs = get("trainer.total_epochs")
    if recipe is not None:
        imported.notes.append(
            f"this run is asynchronous ({recipe}): its learning rate {lr:g} is not the on-policy "
            "baseline the law scales; set target.baseline_lr (and target.baseline_steps) from "
            "your synchronous run"
        )
        return
    if isinstance(lr, int | float) and not isinstance(lr, bool) and lr > 0:
        imported.set("target.baseline_lr", float(lr), "actor_rollout_ref.actor.optim.lr")
    if isinstance(steps, int) and steps > 0:
        imported.set(
            "target.baseline_steps",
            steps,
            "trainer.total_training_steps (the run's length, not necessarily the steps to its "
            "target reward)",
        )
    else:
        imported.unmatched(
            "trainer.total_epochs",
            epochs,
            "steps = epochs x dataset size / data.train_batch_size, and the dataset size is not "
            "in the config: set target.baseline_steps",
        )
