"""The staleness–learning-rate trade-off, checked in the real pipeline.

For a set of pipeline runs (same mode and bound, different learning rates and seeds) this
computes, per run: the measured staleness summary the law is stated in (``max``, ``p99``,
``mean`` or ``token_mean`` of the consumed samples), the law's learning rate for it, the
learner policy's reward curve, the learner steps and wall-clock seconds to the target reward,
and whether the run collapsed.

The learner policy's reward at version ``v`` is read off the samples that version generated
(every sample's reward is logged with its behaviour version): a trailing mean over
``smoothing_window`` versions, as the trainer smooths its curve. Steps to target is the first
version whose smoothed reward reaches the target; its wall-clock time is when that version was
published. (The consumed batches' reward lags the learner by the staleness; the per-version
curve does not.)

Run as ``python -m stalesim.validate.pipeline.tradeoff law-lr RUN_DIR`` (prints the law's learning
rate for the run's measured staleness) or ``... summary DIR`` (writes ``DIR/tradeoff.json``
and prints a table).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from stalesim.common.files import write_json
from stalesim.sim.law.model import Law
from stalesim.sim.law.readings import default_law


def staleness_summary(samples: pl.DataFrame, summary: str) -> float:
    """The law's summary of the consumed samples' staleness."""
    used = samples.filter(pl.col("consumed_step").is_not_null())
    lag = used["staleness_max"].to_numpy().astype(float)
    if summary == "max":
        return float(lag.max())
    if summary == "p99":
        return float(np.quantile(lag, 0.99))
    if summary == "mean":
        return float(lag.mean())
    tokens = used["response_tokens"].to_numpy().astype(float)
    return float((used["staleness_mean_tokens"].to_numpy() * tokens).sum() / tokens.sum())


def version_reward_curve(samples: pl.DataFrame) -> pl.DataFrame:
    """Mean reward of the samples each version generated (single-version samples)."""
    return (
        samples.filter(
            pl.col("reward").is_not_null()
            & (pl.col("behaviour_version_min") == pl.col("behaviour_version_max"))
        )
        .group_by(pl.col("behaviour_version_min").alias("version"))
        .agg(pl.col("reward").mean().alias("reward"), pl.len().alias("samples"))
        .sort("version")
    )


def trailing_mean(rewards: np.ndarray, window: int) -> np.ndarray:
    """The ``window``-version trailing mean of a reward curve (empty when it is shorter)."""
    if rewards.size < window:
        return np.array([])
    return np.convolve(rewards, np.ones(window) / window, mode="valid")


def version_reaching(curve: pl.DataFrame, window: int, target: float) -> int | None:
    """The first version whose trailing ``window``-version mean reward reaches ``target``
    (None if none does)."""
    reached = np.flatnonzero(trailing_mean(curve["reward"].to_numpy(), window) >= target)
    return int(curve["version"][int(reached[0]) + window - 1]) if reached.size else None


def run_outcome(run_dir: Path, law: Law) -> dict[str, Any]:
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    samples = pl.read_parquet(run_dir / "samples.parquet")
    published = pl.read_parquet(run_dir / "published.parquet")
    train = config["train"]
    window, target = train["smoothing_window"], train["target_reward"]
    curve = version_reward_curve(samples)
    rewards = curve["reward"].to_numpy()
    steps_to_target = version_reaching(curve, window, target)
    seconds_to_target = None
    if steps_to_target is not None:
        at = published.filter(pl.col("version") == steps_to_target)["time_s"]
        seconds_to_target = float(at[0]) if at.len() else None
    s = staleness_summary(samples, law.staleness_summary)
    return {
        "run": run_dir.name,
        "lr": config["lr"],
        "seed": config["seed"],
        "status": summary["status"],
        "collapsed": summary["status"] == "collapsed",
        "collapse_reason": summary.get("collapse_reason"),
        "steps_done": summary["steps_done"],
        "run_s": summary["run_s"],
        "staleness_summary": law.staleness_summary,
        "staleness": s,
        "law_lr": float(law.eta_opt_at(s)),
        "law_steps_to_target": float(law.steps_to_target_at(s)),
        "steps_to_target": steps_to_target,
        "seconds_to_target": seconds_to_target,
        "final_reward": float(np.mean(rewards[-window:])) if rewards.size else None,
        "reward_curve": [
            {"version": int(v), "reward": float(r)}
            for v, r in zip(curve["version"], curve["reward"], strict=True)
        ],
    }


def summarize_tradeoff(folder: Path, law: Law | None = None) -> dict[str, Any]:
    law = law or default_law()
    runs = [
        run_outcome(p, law)
        for p in sorted(folder.iterdir())
        if (p / "summary.json").exists() and (p / "samples.parquet").exists()
    ]
    arms: dict[str, Any] = {}
    for arm in sorted({r["run"].rsplit("-seed", 1)[0] for r in runs}):
        members = [r for r in runs if r["run"].rsplit("-seed", 1)[0] == arm]
        hit = [r for r in members if r["steps_to_target"] is not None]
        arms[arm] = {
            "lr": members[0]["lr"],
            "seeds": len(members),
            "collapsed": sum(r["collapsed"] for r in members),
            "reached_target": len(hit),
            "median_steps_to_target": float(np.median([r["steps_to_target"] for r in hit]))
            if hit
            else None,
            "median_seconds_to_target": float(np.median([r["seconds_to_target"] for r in hit]))
            if hit
            else None,
            "median_final_reward": float(np.median([r["final_reward"] for r in members])),
            "median_staleness": float(np.median([r["staleness"] for r in members])),
            "law_steps_to_target_at_eta_opt": float(
                law.steps_to_target_at(np.median([r["staleness"] for r in members]))
            ),
        }
    result = {"law_staleness_summary": law.staleness_summary, "arms": arms, "runs": runs}
    write_json(folder / "tradeoff.json", result)
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("law-lr", "summary"):
        print("usage: python -m stalesim.validate.pipeline.tradeoff law-lr RUN_DIR | summary DIR")
        return 2
    if argv[0] == "law-lr":
        law = default_law()
        samples = pl.read_parquet(Path(argv[1]) / "samples.parquet")
        print(f"{float(law.eta_opt_at(staleness_summary(samples, law.staleness_summary))):.6g}")
        return 0
    result = summarize_tradeoff(Path(argv[1]))
    for arm, a in result["arms"].items():
        print(
            f"{arm}: lr {a['lr']:.3g}, {a['seeds']} seeds, {a['collapsed']} collapsed, "
            f"{a['reached_target']} reached target; median steps {a['median_steps_to_target']} "
            f"(law at eta_opt: {a['law_steps_to_target_at_eta_opt']:.1f}), median seconds "
            f"{a['median_seconds_to_target']}, median final reward {a['median_final_reward']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
