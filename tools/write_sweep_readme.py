"""Write README.md for one law-experiment sweep folder from its own data (config.json,
runs.parquet, law.json); the prose that is not data comes from the arguments.

Usage: python tools/write_sweep_readme.py FOLDER PRESET TITLE INTRO WALL MACHINE [WORKERS]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
from stalesim.validate.train.task_configs import task_config


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


CALIBRATED_KINDS = (
    ("eta_opt", "eta_opt per S"),
    ("slope", "slopes"),
    ("ratio", "ratios"),
    ("eta_max", "eta_max per S"),
    ("eta_max_slope", "eta_max's slopes"),
    ("eta_max_ratio", "eta_max's ratios"),
)


def calibration_sentence(law: dict, interval: str) -> str | None:
    """How the fit widened each kind of interval and what the widened ones covered on fresh
    synthetic sweeps (the lower of the two reward models), or ``None`` for an uncalibrated fit."""
    coverage = ((law.get("slopes") or {}).get("interval_coverage") or {}).get("calibration")
    if not coverage:
        return None
    factors, widened, covered = coverage["factors"], [], []
    for kind, label in CALIBRATED_KINDS:
        if factors.get(kind) is None:
            continue
        widened.append(f"x{factors[kind]:.2f} for {label}")
        fresh = [
            c[kind]
            for c in (coverage.get("coverage"), coverage.get("skewed_coverage"))
            if c and c.get(kind) is not None
        ]
        if fresh:
            covered.append(f"{label} {min(fresh):.0%}")
    return (
        f"The {interval} intervals are widened by the fit's calibration factors "
        f"(`slopes.interval_coverage.calibration`): {', '.join(widened)}. On fresh synthetic "
        f"sweeps of this design the widened intervals held the truth in at least: "
        f"{', '.join(covered)} (nominal 95%, the lower of a symmetric and a skewed reward)."
    )


def fit_lines(law: dict) -> list[str]:
    """The README's fit section, from ``law.json`` alone (tests check each committed sweep
    README still holds these lines verbatim)."""
    lines: list[str] = []
    # the interval the fit made (jackknife over seeds since the re-analysis; older fits:
    # a seed bootstrap), as law.json records it
    method = (law.get("settings") or {}).get("interval_method_used", "percentile")
    interval = "leave-one-seed-out jackknife" if method == "jackknife" else "seed-bootstrap"
    lines += [
        "## Fit (`law.json`)", "",
        f"| S | realised lag | eta_opt [95% {interval}] | flag | eta_max [95%] | flag |",
        "| --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    for p in law["points"]:
        lines.append(
            f"| {p['staleness']} | {p.get('staleness_realised', p['staleness']):.2f} | "
            f"{fmt(p['eta_opt'])} [{fmt(p['eta_opt_lo'])}, {fmt(p['eta_opt_hi'])}] | "
            f"{p['eta_opt_flag']} | {fmt(p['eta_max'])} [{fmt(p['eta_max_lo'])}, "
            f"{fmt(p['eta_max_hi'])}] | {p['eta_max_flag']} |"
        )
    calibration = calibration_sentence(law, interval)
    if calibration:
        lines += ["", calibration]
    lines += ["", f"Slopes d ln eta / d ln S and ratios to S = 0 ({interval} 95% intervals):", ""]
    for curve, block in (law.get("slopes") or {}).items():
        for item in block.get("local", []):
            lines.append(
                f"* {curve}, S {item['from']:.3g}→{item['to']:.3g}: {item['slope']:.2f} "
                f"[{fmt(item['lo'])}, {fmt(item['hi'])}] ({item['verdict']})"
            )
        drop = block.get("drop_from_zero")
        if drop:
            lines.append(
                f"* {curve}({drop['to']:.3g})/{curve}(0) = {drop['ratio']:.2f} "
                f"[{fmt(drop['lo'])}, {fmt(drop['hi'])}]"
            )
    for curve in ("eta_opt", "eta_max"):
        fit = law.get(curve)
        if not fit:
            continue
        intervals = fit.get("intervals", {})
        parts = []
        for key in ("eta0", "s_c", "k", "alpha"):
            bounds = intervals.get(key)
            extra = f" [{bounds[0]:.3g}, {bounds[1]:.3g}]" if bounds else ""
            parts.append(f"{key} = {fit[key]:.3g}{extra}")
        r2 = (fit.get("quality") or {}).get("r2_log")
        lines.append(
            f"* four-parameter fit of {curve}: " + ", ".join(parts)
            + (f", R² (ln) {r2:.2f}" if r2 is not None else "")
        )  # fmt: skip
    if law.get("notes"):
        lines += ["", "Notes from the fit:", ""] + [f"* {n}" for n in law["notes"]]
    return lines


def main(
    folder: Path, preset: str, title: str, intro: str, wall: str, machine: str, workers: str = "2"
) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    runs = pl.read_parquet(folder / "runs.parquet")
    law_path = folder / "law.json"
    law = json.loads(law_path.read_text()) if law_path.exists() else None
    tr = cfg["train"]
    # The objective and optimizer as the fit labels them (validate/law/fit.py's regime).
    regime = (law or {}).get("regime") or {}
    objective = regime.get("objective", "see config.json")
    optimizer = regime.get("optimizer", "see config.json")
    failed = {f["run_id"] for f in (law or {}).get("failures", [])}
    runs = runs.with_columns(pl.col("run_id").is_in(list(failed)).alias("failed"))
    lrs = sorted(runs["lr"].unique().to_list())
    grids = "; ".join(
        f"LR {g['lrs']} x S {g['staleness']} x seeds {g['seeds']}" for g in cfg["grids"]
    )
    lines = [
        f"# {title}", "", intro, "",
        "Real GRPO training runs made by `stalesim validate sweep` (no synthetic data), fitted "
        "by `stalesim fit`.", "",
        f"* **Command**: `stalesim validate sweep --preset {preset} --out {folder} --workers {workers}` "
        f"(under `nice -n 10`; resumable), then `stalesim fit {folder}`; this README: "
        f"`python tools/write_sweep_readme.py {folder} {preset} ...`",
        f"* **Wall time**: {wall}; {runs['wall_s'].sum():.0f} s of worker time over "
        f"{runs.height} runs (median {runs['wall_s'].median():.0f} s per run).",
        f"* **Machine**: {machine}",
        "", "## What was run", "",
        f"* **Task**: {task_config(tr['task']).label}; reward = "
        f"{task_config(tr['task']).reward_label}.",
        f"* **Policy**: {tr['policy']['n_layer']}-layer, {tr['policy']['n_embd']}-wide decoder; "
        f"**warm start**: {tr['warm_start']['steps']} supervised steps on corrupted "
        f"demonstrations, one warm start per seed (seed {tr['warm_start']['seed']} + run seed).",
        f"* **GRPO**: {tr['prompts_per_step']} prompts x {tr['samples_per_prompt']} samples per "
        f"step, {tr['steps']} steps, {tr['minibatches_per_step']} optimizer step per learner "
        f"step; objective: {objective}; optimizer: {optimizer}; warm-up {tr['warmup_steps']} "
        "steps then constant LR.",
        f"* **Grid**: {grids}",
        "* **Failure** (for eta_max): collapse (non-finite, smoothed reward < half its best, or "
        "per-step drift KL(π_v‖π_v+1) on the learner's own samples > 2), or final reward below "
        "the run's own warm-start reward, or best smoothed reward short of warm + 0.5 x (best "
        "S=0 reward − warm).",
        "* **Staleness axis**: the fit uses each S group's realised mean lag (pipeline fill "
        "included).",
        "", "## Mean reward AUC over seeds (failed runs / seeds in brackets)", "",
        "| S \\ LR | " + " | ".join(f"{v:g}" for v in lrs) + " |",
        "| --- |" + " --- |" * len(lrs),
    ]  # fmt: skip

    def order(spec: str) -> tuple:
        fixed = spec.startswith("fixed")
        return (not fixed, int(spec.split(":")[1]) if fixed else 0, spec)

    for spec in sorted(runs["staleness_spec"].unique().to_list(), key=order):
        cells = []
        for lr in lrs:
            cell = runs.filter((pl.col("staleness_spec") == spec) & (pl.col("lr") == lr))
            if cell.height == 0:
                cells.append("")
                continue
            n_failed = int(cell["failed"].sum())
            mark = f" [{n_failed}/{cell.height}]" if n_failed else ""
            cells.append(f"{cell['reward_auc'].mean():.3f}{mark}")
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    if law:
        lines += ["", *fit_lines(law)]
    lines += [
        "", "## Files", "",
        "* `config.json`: train config and grids; `runs.parquet`: one row per run; "
        "`steps.parquet`: one row per step; `law.json`: the fit; `fit.txt`: the fit's printout. "
        "Shards are not committed.", "",
    ]  # fmt: skip
    (folder / "README.md").write_text("\n".join(lines))
    print("wrote", folder / "README.md")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:8])
