"""Per-step metrics as RL trainers log them, read into one table with canonical column names.

Three trainers, three files each:

* **formats**: a JSONL metrics file (verl's file logger writes ``{"step": N, "data": {...}}``
  per line; a flat ``{"step": N, "metric": value, ...}`` per line is read too), a wandb
  history export (CSV, one column per metric key and ``_step``; or JSON, a list of such rows),
  and TensorBoard event files (a folder, or one ``events.out.tfevents.*`` file; read with
  tbparse, the ``logs`` extra).
* **metric names**: each framework's own, read from its source (verl 0.9.1, OpenRLHF 0.11.2,
  AReaL 1.0.4), in :data:`FRAMEWORKS`:

  - verl (``verl/trainer/ppo/ray_trainer.py`` ``marked_timer`` names under ``timing_s/``,
    ``metric_utils.compute_data_metrics`` and ``compute_throughout_metrics``):
    ``timing_s/gen``, ``timing_s/old_log_prob``, ``timing_s/ref``, ``timing_s/update_actor``,
    ``timing_s/update_weights``, ``timing_s/step``, ``response_length/mean|max|clip_ratio``,
    ``prompt_length/mean``, ``perf/total_num_tokens`` (prompt + response tokens of the trained
    batch).
  - OpenRLHF (``openrlhf/trainer/ppo_trainer.py``; its wandb and TensorBoard loggers prefix
    every key with ``train/``, its console line does not): ``timing/generation``,
    ``timing/make_experience`` (every forward-only pass of the batch together: old policy,
    reference, reward and critic models), ``timing/ppo_train``, ``timing/broadcast``,
    ``timing/step_total``, ``rollout/response_length_mean``, ``rollout/truncated_rate``; the
    step is ``global_step``.
  - AReaL (``areal/trainer/rl_trainer.py`` ``record_timing`` under ``timeperf/``, and
    ``areal/trainer/ppo/actor.py`` statistics under ``ppo_actor/``): ``timeperf/rollout``,
    ``timeperf/recompute_logp``, ``timeperf/ref_logp``, ``timeperf/train_step``,
    ``timeperf/update_weights``, ``ppo_actor/seq_len/avg|max`` (prompt + response),
    ``ppo_actor/prompt_len/avg``, ``ppo_actor/no_eos_ratios/avg`` (truncated share),
    ``ppo_actor/n_tokens`` (tokens of the step).

The result is a :class:`StepLog`: one row per logged training step, the canonical columns of
:data:`CANONICAL` (seconds and token counts; ``None`` where the framework logs no such
metric). Timings must be finite and non-negative: anything else is a one-line
:class:`ConfigError` naming the file and the metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from stalesim.common.config_file import ConfigError

#: The canonical per-step quantities and what they mean.
CANONICAL: dict[str, str] = {
    "gen_s": "seconds generating the step's rollouts",
    "old_logprob_s": "seconds of the forward-only pass for the old policy's log-probs",
    "ref_s": "seconds of the reference model's forward-only pass",
    "forward_s": "seconds of all forward-only passes together (when not logged apart)",
    "update_s": "seconds training (forward, backward, optimizer) on the step's batch",
    "sync_s": "seconds publishing weights to the rollout engines",
    "step_s": "seconds of the whole step",
    "response_mean": "mean response length (tokens) of the step's batch",
    "response_max": "longest response (tokens) of the step's batch",
    "clip_ratio": "share of responses cut at the maximum response length",
    "prompt_mean": "mean prompt length (tokens)",
    "tokens": "prompt + response tokens of the step's trained batch",
}
TIMINGS = ("gen_s", "old_logprob_s", "ref_s", "forward_s", "update_s", "sync_s", "step_s")


@dataclass(frozen=True)
class FrameworkMetrics:
    """One trainer's metric names: canonical quantity -> the keys it may be logged under (the
    first found is used). ``seq_minus_prompt`` marks a response length logged as the whole
    sequence's (prompt + response)."""

    name: str
    step_keys: tuple[str, ...]
    keys: dict[str, tuple[str, ...]]
    seq_minus_prompt: bool = False


def _prefixed(*keys: str, prefix: str = "train/") -> tuple[str, ...]:
    # OpenRLHF's wandb and TensorBoard loggers add "train/"; its console line does not
    return tuple(k for key in keys for k in (prefix + key, key))


FRAMEWORKS: dict[str, FrameworkMetrics] = {
    "verl": FrameworkMetrics(
        "verl",
        step_keys=("step", "_step", "training/global_step"),
        keys={
            "gen_s": ("timing_s/gen",),
            "old_logprob_s": ("timing_s/old_log_prob",),
            "ref_s": ("timing_s/ref",),
            "update_s": ("timing_s/update_actor",),
            "sync_s": ("timing_s/update_weights",),
            "step_s": ("timing_s/step",),
            "response_mean": ("response_length/mean",),
            "response_max": ("response_length/max",),
            "clip_ratio": ("response_length/clip_ratio",),
            "prompt_mean": ("prompt_length/mean",),
            "tokens": ("perf/total_num_tokens",),
        },
    ),
    "openrlhf": FrameworkMetrics(
        "openrlhf",
        step_keys=(*_prefixed("global_step"), "_step", "step"),
        keys={
            "gen_s": _prefixed("timing/generation"),
            "forward_s": _prefixed("timing/make_experience"),
            "update_s": _prefixed("timing/ppo_train"),
            "sync_s": _prefixed("timing/broadcast"),
            "step_s": _prefixed("timing/step_total"),
            "response_mean": _prefixed("rollout/response_length_mean"),
            "clip_ratio": _prefixed("rollout/truncated_rate"),
        },
    ),
    "areal": FrameworkMetrics(
        "areal",
        step_keys=("_step", "step", "global_step"),
        keys={
            "gen_s": ("timeperf/rollout",),
            "old_logprob_s": ("timeperf/recompute_logp",),
            "ref_s": ("timeperf/ref_logp",),
            "update_s": ("timeperf/train_step",),
            "sync_s": ("timeperf/update_weights",),
            "response_mean": ("ppo_actor/seq_len/avg",),
            "response_max": ("ppo_actor/seq_len/max",),
            "clip_ratio": ("ppo_actor/no_eos_ratios/avg",),
            "prompt_mean": ("ppo_actor/prompt_len/avg",),
            "tokens": ("ppo_actor/n_tokens",),
        },
        seq_minus_prompt=True,
    ),
}


@dataclass(frozen=True)
class StepLog:
    """Per-step metrics of one run: ``frame`` has ``step`` and the canonical columns found;
    ``keys`` maps each canonical column to the metric key it was read from."""

    source: str
    framework: str
    frame: pl.DataFrame
    keys: dict[str, str]

    def has(self, column: str) -> bool:
        return column in self.frame.columns

    def column(self, column: str) -> Any:
        return self.frame[column].to_numpy()


# --- reading the formats into {metric key: value} rows ---------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {_first_line(exc)}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: line {number} is not JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path}: line {number} is not a JSON object")
        # verl's file logger nests the metrics: {"step": N, "data": {...}}
        if isinstance(record.get("data"), dict) and "step" in record:
            record = {"step": record["step"], **record["data"]}
        rows.append(record)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {_first_line(exc)}") from None
    except json.JSONDecodeError:
        # a .json file with one object per line
        return _read_jsonl(path)
    if isinstance(data, dict) and isinstance(data.get("history"), list):
        data = data["history"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(
            f"{path}: expected a list of per-step objects (a wandb history export), got "
            f"{type(data).__name__}"
        )
    return data


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path, infer_schema_length=None)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise ConfigError(f"{path}: cannot read as CSV: {_first_line(exc)}") from None


def _read_tensorboard(path: Path) -> pl.DataFrame:
    try:
        from tbparse import SummaryReader
    except ImportError:
        raise ConfigError(
            f"{path}: reading TensorBoard event files needs tbparse and tensorboard: "
            "pip install -e '.[logs]'"
        ) from None
    try:
        scalars = SummaryReader(str(path), pivot=False).scalars
    except Exception as exc:  # tbparse raises whatever its parsers raise on a corrupt file
        raise ConfigError(f"{path}: cannot read TensorBoard events: {_first_line(exc)}") from None
    if scalars is None or len(scalars) == 0:
        raise ConfigError(f"{path}: no scalar metrics in the TensorBoard event files")
    long = pl.DataFrame(
        {
            "step": scalars["step"].to_numpy(dtype="float64"),
            "tag": [str(t) for t in scalars["tag"]],
            "value": scalars["value"].to_numpy(dtype="float64"),
        }
    )
    # the last value written wins when a tag is logged twice at one step
    return long.pivot(on="tag", index="step", values="value", aggregate_function="last").sort(
        "step"
    )


def _is_event_file(path: Path) -> bool:
    return "tfevents" in path.name


def read_rows(path: str | Path) -> pl.DataFrame:
    """The raw per-step metrics of a log, one column per metric key as logged."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    if path.is_dir():
        if not any(_is_event_file(p) for p in path.rglob("*")):
            raise ConfigError(
                f"{path}: a folder must hold TensorBoard event files (events.out.tfevents.*)"
            )
        return _read_tensorboard(path)
    if _is_event_file(path):
        return _read_tensorboard(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = _read_csv(path)
    elif suffix in (".jsonl", ".json", ".log", ".txt"):
        rows = _read_json(path) if suffix == ".json" else _read_jsonl(path)
        frame = _rows_frame(path, rows)
    else:
        raise ConfigError(
            f"{path}: unknown log format {suffix or '(no suffix)'}; allowed: .jsonl, .json, "
            ".csv (wandb export), a TensorBoard event file or a folder of them"
        )
    if frame.height == 0:
        raise ConfigError(f"{path}: the log is empty (no per-step rows)")
    return frame


def _rows_frame(path: Path, rows: list[dict[str, Any]]) -> pl.DataFrame:
    if not rows:
        raise ConfigError(f"{path}: the log is empty (no per-step rows)")
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    columns: dict[str, list[Any]] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        # metric values are numbers; other fields (text, tables) are not metrics: skip them
        if all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
        ):
            columns[key] = [None if v is None else float(v) for v in values]
    return pl.DataFrame(columns, schema={k: pl.Float64 for k in columns})


# --- mapping to the canonical columns ----------------------------------------------------------


def read_log(path: str | Path, framework: str) -> StepLog:
    """Read a trainer's log and map its metric names to the canonical columns.

    Rows without a generation time (evaluation-only rows of a wandb export) are skipped. At
    least the generation and training times must be present; every present timing must be
    finite and non-negative on every kept row.
    """
    if framework not in FRAMEWORKS:
        raise ConfigError(f"--from {framework!r}: allowed: {', '.join(FRAMEWORKS)}")
    return map_metrics(read_rows(path), framework, str(path))


def log_from_rows(rows: list[dict[str, Any]], framework: str, source: str) -> StepLog:
    """A log held in memory: rows as a JSONL file has them (verl's nested form included)."""
    flat = [
        {"step": r["step"], **r["data"]} if isinstance(r.get("data"), dict) and "step" in r else r
        for r in rows
    ]
    return map_metrics(_rows_frame(Path(source), flat), framework, source)


def map_metrics(raw: pl.DataFrame, framework: str, source: str) -> StepLog:
    """The canonical columns of a frame of raw metrics (one column per logged key)."""
    names = FRAMEWORKS[framework]
    found: dict[str, str] = {}
    for canonical, candidates in names.keys.items():
        for key in candidates:
            if key in raw.columns:
                found[canonical] = key
                break
    for required in ("gen_s", "update_s"):
        if required not in found:
            raise ConfigError(
                f"{source}: missing metric column {names.keys[required][0]!r} "
                f"({CANONICAL[required]}); is this a {framework} log?"
            )
    step_key = next((k for k in names.step_keys if k in raw.columns), None)
    selected = [
        pl.col(key).cast(pl.Float64, strict=False).alias(canonical)
        for canonical, key in found.items()
    ]
    step = (
        pl.col(step_key).cast(pl.Float64, strict=False).alias("step")
        if step_key is not None
        else pl.int_range(pl.len()).cast(pl.Float64).alias("step")
    )
    frame = raw.select(step, *selected).filter(pl.col("gen_s").is_not_null())
    if frame.height == 0:
        raise ConfigError(f"{source}: no row has a value of {found['gen_s']!r}")
    for canonical, key in found.items():
        _check_values(source, key, frame["step"], frame[canonical])
    if names.seq_minus_prompt and "response_mean" in found:
        if "prompt_mean" not in found:
            raise ConfigError(
                f"{source}: {found['response_mean']!r} is prompt + response; the response "
                f"length needs {names.keys['prompt_mean'][0]!r} too"
            )
        frame = frame.with_columns(
            (pl.col("response_mean") - pl.col("prompt_mean")).alias("response_mean"),
            *(
                [(pl.col("response_max") - pl.col("prompt_mean")).alias("response_max")]
                if "response_max" in found
                else []
            ),
        )
    if frame["step"].is_null().any():
        raise ConfigError(f"{source}: column {step_key!r} (the step) has empty values")
    frame = frame.sort("step")
    return StepLog(source=source, framework=framework, frame=frame, keys=found)


def _check_values(source: str, key: str, steps: pl.Series, values: pl.Series) -> None:
    # every metric the fit reads must be a finite, non-negative number on every step it uses
    for step, value in zip(steps.to_list(), values.to_list(), strict=True):
        where = f"{source}: column {key!r} at step {_step_text(step)}"
        if value is None:
            raise ConfigError(f"{where}: empty (every step needs it)")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value} is not a finite number")
        if value < 0:
            raise ConfigError(f"{where}: {value:g} is negative")


def _step_text(step: float | None) -> str:
    if step is None:
        return "?"
    return str(int(step)) if float(step).is_integer() else f"{step:g}"


# --- the simulator's own runs, written as verl logs them ---------------------------------------


def verl_metrics_from_trace(trace: Any, max_response_tokens: int) -> list[dict[str, Any]]:
    """Per learner step of a simulated run, the metrics verl's trainer would log for it:
    ``timing_s/gen`` (the learner's wait for its batch: in a synchronous mode the batch's
    generation), ``timing_s/old_log_prob``, ``timing_s/ref``, ``timing_s/update_actor`` (the
    learner's busy seconds of each phase in the step), ``timing_s/step`` (step end to step
    end), ``response_length/mean|max|clip_ratio``, ``prompt_length/mean`` and
    ``perf/total_num_tokens`` of the samples the step consumed. Steps are numbered from 1, as
    verl's ``global_steps``."""
    steps = trace.steps.sort("step")
    busy = trace.busy.filter(pl.col("pool") == "learner")
    samples = trace.samples.filter(pl.col("consumed_step").is_not_null())
    rows: list[dict[str, Any]] = []
    previous_end = 0.0
    phases = {"old_logprob": "old_log_prob", "reference": "ref", "update": "update_actor"}
    for step in steps.iter_rows(named=True):
        inside = busy.filter(
            (pl.col("start_s") >= step["start_s"] - 1e-9)
            & (pl.col("end_s") <= step["end_s"] + 1e-9)
        )
        used = samples.filter(pl.col("consumed_step") == step["step"])
        lengths = used["response_tokens"]
        row: dict[str, Any] = {"timing_s/gen": float(step["idle_before_s"])}
        for kind, name in phases.items():
            spans = inside.filter(pl.col("kind") == kind)
            if spans.height:
                row[f"timing_s/{name}"] = float((spans["end_s"] - spans["start_s"]).sum())
        row["timing_s/step"] = float(step["end_s"] - previous_end)
        previous_end = float(step["end_s"])
        row["response_length/mean"] = float(lengths.mean())
        row["response_length/max"] = float(lengths.max())
        row["response_length/clip_ratio"] = float((lengths >= max_response_tokens).mean())
        row["prompt_length/mean"] = float(used["prompt_tokens"].mean())
        row["perf/total_num_tokens"] = int(step["tokens"])
        rows.append({"step": int(step["step"]) + 1, "data": row})
    return rows


def write_verl_jsonl(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as verl's file logger does: one ``{"step": N, "data": {...}}`` per line."""
    from stalesim.common.files import write_text

    return write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
