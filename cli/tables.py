"""The terminal's tables (rich), and how they are printed whole."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table
from stalesim.sim.modes import MODES

if TYPE_CHECKING:
    from rich.console import Console
    from stalesim.sim.metrics import RunSummary


def print_table(table: Table, console: Console | None = None) -> None:
    """Print ``table`` with every cell whole: cells wrap at word boundaries and fold where a word
    is wider than its column, never cut to an ellipsis. Into a file or a pipe (no terminal, so
    nothing there rewraps a long line) the width grows, when it must, to the narrowest at which
    every column holds its longest word and every unwrappable column its longest cell. In a
    terminal too narrow even for that, every column folds, so none is cropped at the edge."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    wide = console.options.update_width(100_000)

    def narrowest(column) -> int:
        sizes = [Measurement.get(console, wide, cell) for cell in (column.header, *column.cells)]
        widest = max(m.maximum if column.no_wrap else m.minimum for m in sizes)
        return max(widest, column.min_width or 0)

    # each column's padding (one space a side) and the vertical rules between and around them
    needed = sum(narrowest(c) for c in table.columns) + 3 * len(table.columns) + 1
    for column in table.columns:
        column.overflow = "fold"
    if needed > console.width:
        if not console.is_terminal:
            console.width = needed
        else:
            # A ratio or a minimum width would hold a column at its size and push the others
            # past the edge, where the terminal crops them.
            for column in table.columns:
                column.no_wrap, column.ratio, column.min_width = False, None, None
    console.print(table)


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def summary_table(summary: RunSummary) -> Table:
    """Headline numbers of one run."""
    scenario = summary.scenario or {}
    algo = scenario.get("algorithm") or {}
    derived = summary.derived or {}
    table = Table(
        title=f"stalesim simulate: {scenario.get('name', 'run')} ({algo.get('mode', '-')})",
        show_header=False,
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    tp, st, ut = summary.throughput, summary.step_time_s, summary.utilisation
    sq, tq = summary.staleness.sample_quantiles, summary.staleness.token_quantiles
    rows = [
        (
            "GPUs (rollout + learner)",
            f"{derived.get('rollout_gpus', '-')} + {derived.get('learner_gpus', '-')}"
            + (" (shared)" if derived.get("colocated") else ""),
        ),
        ("steps (warm-up excluded)", f"{summary.steps} ({summary.warmup_steps})"),
        ("simulated time", f"{_num(summary.simulated_s, 1)} s"),
        (
            "throughput",
            f"{_num(tp.samples_per_s)} samples/s, {_num(tp.tokens_per_s, 0)} tokens/s",
        ),
        ("learner steps per hour", _num(tp.steps_per_h, 1)),
        ("step time mean / p50 / p99", f"{_num(st.mean)} / {_num(st.p50)} / {_num(st.p99)} s"),
        ("utilisation rollout / learner", f"{_num(ut.rollout, 3)} / {_num(ut.learner, 3)}"),
        ("mean groups waiting", _num(summary.mean_queue_groups, 1)),
        ("staleness mean / p99 / max", f"{_num(sq.mean)} / {_num(sq.p99, 0)} / {_num(sq.max, 0)}"),
        ("token-weighted staleness mean / p99", f"{_num(tq.mean)} / {_num(tq.p99, 0)}"),
        (
            "dropped samples",
            ", ".join(f"{k}: {v}" for k, v in summary.dropped.items()) or "none",
        ),
        (
            "GPU-hours / cost",
            f"{_num(summary.gpu_hours)} h / "
            + ("-" if summary.cost_usd is None else f"${_num(summary.cost_usd)}"),
        ),
        *law_rows(summary.law),
        ("simulator wall time", f"{_num(summary.wall_s, 2)} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}×"


def _others(law: dict[str, Any], key: str) -> str:
    """The same quantity under the other readings, e.g. ``optimistic 0.61×, paper 0.33×``."""
    parts = [
        f"{name} {_x(law.get(f'{key}_{name}'))}"
        for name in law.get("readings", {})
        if name != law.get("reading") and f"{key}_{name}" in law
    ]
    return "; " + ", ".join(parts) if parts else ""


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:,.2f} h"


def law_rows(law: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The law's reading of the run as ratios to the user's on-policy run, and in the user's
    units where the scenario's ``target`` gives their learning rate and steps. Never an
    absolute learning rate or time from the small model the law was measured on."""
    if not law or law.get("lr_multiplier") is None:
        return []
    band = f" [{_sci(law.get('lr_multiplier_lo'))}, {_sci(law.get('lr_multiplier_hi'))}]"
    rows = [
        (
            f"law ({law['reading']}) at staleness {law['staleness_summary']} "
            f"{_num(law['staleness'])}",
            "ratios to your on-policy run"
            + (
                f" (its own staleness {_num(law['baseline_staleness'])}: the mini-batch schedule)"
                if law.get("baseline_staleness")
                else ""
            ),
        ),
        (
            "  measured on",
            # a summary written before readings carried labels has the provenance only
            (law.get("labels") or {}).get(law["reading"])
            or (law.get("readings") or {}).get(law["reading"])
            or "regime not recorded",
        ),
        (
            "  learning-rate multiplier",
            f"{_x(law['lr_multiplier'])}{band}{_others(law, 'lr_multiplier')}",
        ),
        (
            "  steps-to-target multiplier",
            f"{_x(law.get('steps_multiplier'))}{_others(law, 'steps_multiplier')}",
        ),
    ]
    if law.get("time_to_target_rel") is not None:
        rows.append(
            (
                "  time to target vs synchronous",
                f"{_x(law['time_to_target_rel'])} (sync step {_num(law['sync_step_time_s'])} s)"
                + _others(law, "time_to_target_rel"),
            )
        )
    if law.get("baseline_lr") is not None:
        rows.append(
            (
                "learning rate",
                f"{law['lr_multiplier']:.3g} × your {law['baseline_lr']:.3g} = "
                f"{_sci(law.get('learning_rate'))} [{_sci(law.get('learning_rate_lo'))}, "
                f"{_sci(law.get('learning_rate_hi'))}]",
            )
        )
    if law.get("baseline_steps") is not None and law.get("time_to_target_s") is not None:
        cost = law.get("cost_to_target_usd")
        step_s = law["time_per_baseline_step_s"] / law["learner_steps_multiplier"]
        rows.append(
            (
                "learner steps / time to target",
                f"{law['baseline_steps']:,.0f} × {law['learner_steps_multiplier']:.3g} = "
                f"{law['learner_steps_to_target']:,.0f} steps × {_num(step_s)} s = "
                f"{_hours(law['time_to_target_s'])} [{_hours(law.get('time_to_target_s_lo'))}, "
                f"{_hours(law.get('time_to_target_s_hi'))}]"
                + ("" if cost is None else f", ${_num(cost)}"),
            )
        )
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1%}"


def sensitivity_table(result: dict[str, Any]) -> Table:
    """Each coefficient moved down and up: the change of step time and of the speed-up."""
    step = result["relative_step"]
    sync_mode = MODES[result["mode"]].on_policy
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


def variants_table(meta: dict[str, Any]) -> Table:
    """One row per variant of ``simulate --vary``: throughput, step time, staleness, and the
    law's multipliers (the user's learning rate and hours where the scenario gives a
    baseline)."""
    rows = meta["variants"]
    baseline = any(r.get("law_learning_rate") is not None for r in rows)
    hours = any(r.get("law_time_to_target_s") is not None for r in rows)
    table = Table(
        title=f"stalesim simulate --vary {' '.join(meta['vary'])} ({meta['steps']} steps, seed "
        f"{meta['seed']}; law reading {meta['law']['reading']}; time× is relative to the same "
        "cluster run synchronously)"
    )
    columns = ["variant", "GPUs", "samples/s", "step s", "staleness mean/max", "LR×", "steps×"]
    columns += ["time×"] + (["LR"] if baseline else []) + (["hours"] if hours else [])
    for column in columns:
        left = column == "variant"
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for r in rows:
        cells = [
            r["variant"],
            str(r["gpus"]),
            _num(r["samples_per_s"]),
            _num(r["step_time_mean_s"]),
            f"{_num(r['staleness_mean'])} / {_num(r['staleness_max'], 0)}",
            _sci(r.get("law_lr_multiplier")),
            _sci(r.get("law_steps_multiplier")),
            _sci(r.get("law_time_to_target_rel")),
        ]
        if baseline:
            cells.append(_sci(r.get("law_learning_rate")))
        if hours:
            cells.append(_hours(r.get("law_time_to_target_s")))
        table.add_row(*cells)
    return table
