"""Write the recorded trainer logs of this folder (see README.md): one run's per-step metrics in
each framework's own format and metric names, from a known ground truth.

Run from the repository root: ``python tests/data/logs/make_logs.py`` (needs torch and
tensorboard for the event file). The ground truth (``TRUTH``) is what the tests expect the
calibration to recover.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
TRUTH = {
    "learner_gpus": 8,  # one node: data-parallel efficiency 1
    "samples": 64 * 8,  # prompts_per_step x group_size of scenario-sync.yaml
    "minibatches": 1,
    "train_gpu_s_per_token": 4.0e-4,
    "forward_gpu_s_per_token": 1.3e-4,
    "step_overhead_s": 0.5,
    "response_mean": 1500.0,
    "response_sigma": 0.7,
    "response_growth_per_step": 0.01,
    "prompt_mean": 400.0,
    "max_response_tokens": 8192,
    "steps": 24,
    "noise": 0.02,
}


def _run(seed: int = 3) -> list[dict[str, float]]:
    t = TRUTH
    rng = np.random.default_rng(seed)
    n = t["learner_gpus"]
    steps = []
    for k in range(t["steps"]):
        mean = t["response_mean"] * (1 + t["response_growth_per_step"] * k)
        s = t["response_sigma"]
        mu = np.log(mean) - 0.5 * s * s
        lengths = np.minimum(np.rint(np.exp(mu + s * rng.standard_normal(t["samples"]))), 8192)
        lengths = np.maximum(lengths, 1)
        prompts = np.rint(rng.normal(t["prompt_mean"], 60, t["samples"])).clip(32, 2048)
        tokens = float(lengths.sum() + prompts.sum())
        jitter = 1 + t["noise"] * rng.standard_normal(4)
        update = (t["train_gpu_s_per_token"] * tokens / n + t["step_overhead_s"]) * jitter[0]
        forward = t["forward_gpu_s_per_token"] * tokens / n
        gen = (20.0 + 0.012 * lengths.max() + 0.004 * lengths.mean()) * jitter[3]
        steps.append(
            {
                "gen": gen,
                "old_log_prob": forward * jitter[1],
                "ref": forward * jitter[2],
                "update_actor": update,
                "reward": 1.5,
                "adv": 0.2,
                "update_weights": 2.0,
                "response_mean": float(lengths.mean()),
                "response_max": float(lengths.max()),
                "response_min": float(lengths.min()),
                "clip_ratio": float((lengths >= t["max_response_tokens"]).mean()),
                "prompt_mean": float(prompts.mean()),
                "prompt_max": float(prompts.max()),
                "tokens": tokens,
                "seq_max": float((lengths + prompts).max()),
            }
        )
    return steps


def write_verl_jsonl(steps: list[dict[str, float]]) -> None:
    """verl's file logger (verl/utils/tracking.py FileLogger): one ``{"step", "data"}`` line
    per step, ``timing_s/*`` from ``marked_timer``, lengths from ``compute_data_metrics``."""
    lines = []
    for i, s in enumerate(steps, 1):
        timing = {k: s[k] for k in ("gen", "reward", "old_log_prob", "ref", "adv")}
        timing["update_actor"] = s["update_actor"]
        timing["update_weights"] = s["update_weights"]
        timing["step"] = sum(timing.values())
        data = {
            "actor/entropy": 0.52 - 0.004 * i,
            "actor/pg_loss": -0.01 + 0.001 * (i % 3),
            "actor/pg_clipfrac": 0.002,
            "actor/ppo_kl": 0.0004,
            "actor/grad_norm": 0.31,
            "actor/lr": 1e-6,
            "critic/score/mean": 0.3 + 0.01 * i,
            "critic/rewards/mean": 0.3 + 0.01 * i,
            "critic/advantages/mean": 0.0,
            "response_length/mean": s["response_mean"],
            "response_length/max": s["response_max"],
            "response_length/min": s["response_min"],
            "response_length/clip_ratio": s["clip_ratio"],
            "prompt_length/mean": s["prompt_mean"],
            "prompt_length/max": s["prompt_max"],
            "prompt_length/min": 32.0,
            "prompt_length/clip_ratio": 0.0,
            **{f"timing_s/{k}": v for k, v in timing.items()},
            **{f"timing_per_token_ms/{k}": 1000 * v / s["tokens"] for k, v in timing.items()},
            "perf/total_num_tokens": int(s["tokens"]),
            "perf/time_per_step": timing["step"],
            "perf/throughput": s["tokens"] / (timing["step"] * TRUTH["learner_gpus"]),
            "training/global_step": i,
            "training/epoch": 0,
        }
        lines.append(json.dumps({"step": i, "data": data}))
    (HERE / "verl-grpo.jsonl").write_text("\n".join(lines) + "\n")


def write_openrlhf_wandb_csv(steps: list[dict[str, float]]) -> None:
    """OpenRLHF's wandb logger (openrlhf/utils/logging_utils.py) logs ``train/<key>`` with
    ``train/global_step``; wandb's "export CSV" of the run history adds ``_step``, ``_runtime``
    and ``_timestamp``. Keys from ``ppo_trainer.py``: ``timing/generation``,
    ``timing/make_experience`` (old-policy and reference forward passes), ``timing/ppo_train``,
    ``timing/broadcast``, ``timing/step_total``, ``rollout/response_length_mean``,
    ``rollout/truncated_rate``."""
    header = [
        "_step",
        "_runtime",
        "_timestamp",
        "train/global_step",
        "train/policy_loss",
        "train/kl",
        "train/timing/make_experience",
        "train/timing/ppo_train",
        "train/timing/broadcast",
        "train/rollout/reward_mean",
        "train/rollout/response_length_mean",
        "train/rollout/truncated_rate",
        "train/rollout/num_samples",
        "train/timing/generation",
        "train/timing/step_total",
    ]
    runtime = 0.0
    rows = []
    for i, s in enumerate(steps, 1):
        make = s["old_log_prob"] + s["ref"] + s["reward"]
        total = s["gen"] + make + s["update_actor"] + s["update_weights"]
        runtime += total
        rows.append(
            [
                i - 1,
                round(runtime, 3),
                round(1.7e9 + runtime, 3),
                i,
                -0.012,
                0.0004,
                make,
                s["update_actor"],
                s["update_weights"],
                0.3 + 0.01 * i,
                s["response_mean"],
                s["clip_ratio"],
                float(TRUTH["samples"]),
                s["gen"],
                total,
            ]
        )
    with (HERE / "openrlhf-wandb-export.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def write_areal_tensorboard(steps: list[dict[str, float]]) -> None:
    """AReaL's stats logger (areal/utils/stats_logger.py) writes every exported statistic with
    ``add_scalar(key, value, step)``: ``timeperf/*`` from ``record_timing`` in
    ``rl_trainer.py``, ``ppo_actor/*`` from ``actor.py`` (``seq_len`` is prompt + response,
    ``no_eos_ratios`` the truncated share, ``n_tokens`` the step's tokens)."""
    from torch.utils.tensorboard import SummaryWriter

    folder = HERE / "areal-tensorboard"
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    writer = SummaryWriter(log_dir=str(folder), filename_suffix=".areal")
    for i, s in enumerate(steps):
        stats = {
            "timeperf/rollout": s["gen"],
            "timeperf/recompute_logp": s["old_log_prob"],
            "timeperf/ref_logp": s["ref"],
            "timeperf/compute_advantage": s["adv"],
            "timeperf/train_step": s["update_actor"],
            "timeperf/update_weights": s["update_weights"],
            "ppo_actor/seq_len/avg": s["response_mean"] + s["prompt_mean"],
            "ppo_actor/seq_len/max": s["seq_max"],
            "ppo_actor/prompt_len/avg": s["prompt_mean"],
            "ppo_actor/no_eos_ratios/avg": s["clip_ratio"],
            "ppo_actor/task_reward/avg": 0.3 + 0.01 * i,
            "ppo_actor/n_tokens": s["tokens"],
            "ppo_actor/n_seqs": float(TRUTH["samples"]),
            "ppo_actor/update/actor_loss/avg": -0.01,
        }
        for key, value in stats.items():
            writer.add_scalar(key, value, i)
    writer.close()


if __name__ == "__main__":
    run = _run()
    write_verl_jsonl(run)
    write_openrlhf_wandb_csv(run)
    write_areal_tensorboard(run)
    (HERE / "truth.json").write_text(json.dumps(TRUTH, indent=2) + "\n")
