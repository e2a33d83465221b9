"""The summary as a readable rich table."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def summary_table(summary: dict[str, Any]) -> Table:
    """Headline numbers of one run."""
    scenario = summary["scenario"]
    algo = scenario["algorithm"]
    derived = summary["derived"]
    table = Table(
        title=f"stalesim simulate: {scenario['name']} ({algo['mode']})", show_header=False
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    tp, st, ut = summary["throughput"], summary["step_time_s"], summary["utilisation"]
    sq, tq = summary["staleness"]["sample_quantiles"], summary["staleness"]["token_quantiles"]
    rows = [
        (
            "GPUs (rollout + learner)",
            f"{derived['rollout_gpus']} + {derived['learner_gpus']}"
            + (" (shared)" if derived["colocated"] else ""),
        ),
        ("steps (warm-up excluded)", f"{summary['steps']} ({summary['warmup_steps']})"),
        ("simulated time", f"{_num(summary['simulated_s'], 1)} s"),
        (
            "throughput",
            f"{_num(tp['samples_per_s'])} samples/s, {_num(tp['tokens_per_s'], 0)} tokens/s",
        ),
        ("learner steps per hour", _num(tp["steps_per_h"], 1)),
        (
            "step time mean / p50 / p99",
            f"{_num(st['mean'])} / {_num(st['p50'])} / {_num(st['p99'])} s",
        ),
        ("utilisation rollout / learner", f"{_num(ut['rollout'], 3)} / {_num(ut['learner'], 3)}"),
        ("mean groups waiting", _num(summary["mean_queue_groups"], 1)),
        (
            "staleness mean / p99 / max",
            f"{_num(sq['mean'])} / {_num(sq['p99'], 0)} / {_num(sq['max'], 0)}",
        ),
        ("token-weighted staleness mean / p99", f"{_num(tq['mean'])} / {_num(tq['p99'], 0)}"),
        (
            "dropped samples",
            ", ".join(f"{k}: {v}" for k, v in summary["dropped"].items()) or "none",
        ),
        (
            "GPU-hours / cost",
            f"{_num(summary['gpu_hours'])} h / "
            + ("-" if summary["cost_usd"] is None else f"${_num(summary['cost_usd'])}"),
        ),
        *law_rows(summary.get("law")),
        ("simulator wall time", f"{_num(summary['wall_s'], 2)} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def law_rows(law: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The law's reading of the run: learning rate, steps and time to target."""
    if not law or law.get("eta_opt") is None:
        return []
    time_s = law.get("time_to_target_s")
    lo, hi = law.get("time_to_target_s_lo"), law.get("time_to_target_s_hi")
    cost = law.get("cost_to_target_usd")
    return [
        (
            f"law: learning rate at staleness {law['staleness_summary']} {_num(law['staleness'])}",
            f"{_sci(law['eta_opt'])} [{_sci(law.get('eta_opt_lo'))}, {_sci(law.get('eta_opt_hi'))}]",
        ),
        (
            "law: learner steps / time to target",
            f"{_num(law.get('learner_steps_to_target'), 0)} / "
            + (
                "-"
                if time_s is None
                else f"{time_s / 3600:,.2f} h [{_num(lo and lo / 3600)}, {_num(hi and hi / 3600)}]"
            )
            + ("" if cost is None else f", ${_num(cost)}"),
        ),
    ]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def sensitivity_table(result: dict[str, Any]) -> Table:
    """Each coefficient moved down and up: the change of step time and of the speed-up."""
    step = result["relative_step"]
    sync_mode = result["mode"] in ("sync", "sync_colocated")
    faster = result["reference_mode"] if sync_mode else result["mode"]
    slower = result["mode"] if sync_mode else result["reference_mode"]
    table = Table(
        title=f"sensitivity: each coefficient -{step:.0%} / +{step:.0%}, {result['steps']} steps "
        f"each; speed-up {faster} over {slower}: {_num(result['speedup'])}x"
    )
    for column in ("coefficient", "value", "step time -/+", "speed-up -/+"):
        table.add_column(column, justify="left" if column == "coefficient" else "right")
    by_key: dict[str, dict[str, dict[str, Any]]] = {}
    for row in result["rows"]:
        by_key.setdefault(row["key"], {})[row["direction"]] = row
    for key, rows in by_key.items():
        low, high = rows["low"], rows["high"]
        table.add_row(
            key,
            f"{low['value']:.4g}",
            f"{_pct(low['step_time_change'])} / {_pct(high['step_time_change'])}",
            f"{_pct(low['speedup_change'])} / {_pct(high['speedup_change'])}",
        )
    return table
