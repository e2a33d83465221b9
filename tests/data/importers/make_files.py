"""Write the hand-made files of this folder: files the frameworks write at run time but
nobody ships, produced in exactly their format from the real files beside them.

Run from the repository root: ``python tests/data/importers/make_files.py``. Needs omegaconf
and pyyaml only.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent


def verl_hydra_config(recipe: str | None, overrides: list[str], out: Path) -> None:
    """A run's ``.hydra/config.yaml``: Hydra composes the defaults (verl's flattened
    ``_generated_ppo_trainer.yaml`` is that composition), lays the recipe's own keys and the
    command-line overrides over it, and saves the result unresolved (``${...}`` kept)."""
    cfg = OmegaConf.load(HERE / "verl" / "_generated_ppo_trainer.yaml")
    if recipe is not None:
        own = OmegaConf.load(HERE / "verl" / recipe)
        own = OmegaConf.create({k: v for k, v in own.items() if k not in ("defaults", "hydra")})
        cfg = OmegaConf.merge(cfg, own)
    cfg.merge_with_dotlist([o.lstrip("+") for o in overrides])
    out.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out, resolve=False)


def openrlhf_saved_args(argv: list[str], out: Path) -> None:
    """OpenRLHF's parsed arguments, as its own parser makes them (the argparse block of the
    real ``train_ppo_ray.py`` run on ``argv``) and as wandb logs them (``config=args.__dict__``
    of the hierarchized namespace), written as JSON."""
    source = (HERE / "openrlhf" / "train_ppo_ray.py.txt").read_text()
    tree = ast.parse(source)
    main = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    )
    body = []
    for stmt in main.body:
        if "parse_args" in ast.unparse(stmt):
            break
        body.append(stmt)
    from datetime import datetime

    namespace: dict = {"argparse": argparse, "datetime": datetime}
    exec(compile(ast.Module(body=body, type_ignores=[]), "train_ppo_ray.py", "exec"), namespace)
    args = vars(namespace["parser"].parse_args(argv))
    nested: dict = {}
    for key, value in args.items():  # openrlhf.utils.config.hierarchize
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    out.write_text(json.dumps(nested, indent=2, default=str) + "\n")


def main() -> None:
    verl_hydra_config(
        None,
        [
            "actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct",
            "data.train_batch_size=512",
            "data.max_prompt_length=1024",
            "data.max_response_length=8192",
            "actor_rollout_ref.rollout.n=8",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
            "actor_rollout_ref.rollout.gpu_memory_utilization=0.6",
            "actor_rollout_ref.actor.ppo_mini_batch_size=128",
            "actor_rollout_ref.actor.use_kl_loss=True",
            "actor_rollout_ref.actor.optim.lr=1e-6",
            "algorithm.adv_estimator=grpo",
            "trainer.n_gpus_per_node=8",
            "trainer.nnodes=4",
            "trainer.total_training_steps=400",
        ],
        HERE / "verl" / "grpo_run" / ".hydra" / "config.yaml",
    )
    verl_hydra_config(
        "one_step_off_ppo_trainer.yaml",
        [
            "actor_rollout_ref.model.path=/models/Qwen2.5-Math-7B",
            "data.train_batch_size=64",
            "data.max_response_length=20480",
            "actor_rollout_ref.rollout.n=8",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
            "actor_rollout_ref.actor.ppo_mini_batch_size=32",
            "actor_rollout_ref.hybrid_engine=False",
            "algorithm.adv_estimator=grpo",
            "algorithm.filter_groups.enable=True",
            "rollout.nnodes=1",
            "rollout.n_gpus_per_node=4",
            "trainer.nnodes=1",
            "trainer.n_gpus_per_node=12",
        ],
        HERE / "verl" / "one_step_off_run" / ".hydra" / "config.yaml",
    )
    openrlhf_saved_args(
        [
            "--actor.model_name_or_path",
            "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
            "--actor.num_nodes",
            "2",
            "--actor.num_gpus_per_node",
            "8",
            "--vllm.num_engines",
            "8",
            "--vllm.tensor_parallel_size",
            "2",
            "--rollout.batch_size",
            "256",
            "--rollout.n_samples_per_prompt",
            "16",
            "--train.batch_size",
            "1024",
            "--rollout.max_new_tokens",
            "16384",
            "--data.max_len",
            "18432",
            "--train.async_enable",
            "--train.async_queue_size",
            "2",
            "--train.partial_rollout_enable",
            "--algo.advantage.estimator",
            "group_norm",
            "--algo.kl.init_coef",
            "0",
            "--actor.adam.lr",
            "2e-6",
        ],
        HERE / "openrlhf" / "saved_args_async.json",
    )
    # AReaL 1.0's per-engine form of the same split as gsm8k_grpo.yaml, larger: the allocation
    # moves from the deprecated allocation_mode to rollout.backend and actor.backend.
    example = yaml.safe_load((HERE / "areal" / "gsm8k_grpo.yaml").read_text())
    example.pop("allocation_mode")
    example["actor"]["path"] = "Qwen/Qwen3-8B"
    example["actor"]["backend"] = "fsdp:d16"
    example["rollout"]["backend"] = "sglang:d8t2"
    example["rollout"]["max_head_offpolicyness"] = 4
    example["cluster"]["n_nodes"] = 4
    example["train_dataset"]["batch_size"] = 512
    example["actor"]["ppo_n_minibatches"] = 4
    example["gconfig"]["n_samples"] = 8
    example["gconfig"]["max_new_tokens"] = 8192
    (HERE / "areal" / "qwen3_8b_backends.yaml").write_text(
        "# Hand-made from gsm8k_grpo.yaml in AReaL 1.0's per-engine backend form (see README).\n"
        + yaml.safe_dump(example, sort_keys=False)
    )


if __name__ == "__main__":
    main()
