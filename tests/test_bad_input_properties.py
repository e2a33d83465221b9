"""Generated input, as a user could type it.

* Every key of the scenario (and of validate's train config) given a generated invalid value,
  by ``--set`` or in a scenario file: exit code 2, one line naming the key, no traceback, and
  no output folder left behind.
* Every numeric scenario key given a generated value inside its declared range: either a
  one-line refusal (the setup cannot run) or a run whose trace keeps the simulator's
  invariants (never an exception of another kind: overflow, NaN times, ...).
* Whole generated scenarios (mode, bound, filter, mini-batches, sizes, lengths): the invariants.

Examples are derandomised so CI sees the same cases every run; sizes keep the file to a few
tens of seconds on two cores.
"""

from __future__ import annotations

import math
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from stalesim.cli import main
from stalesim.common.config_file import ConfigError
from stalesim.sim.derived import derive
from stalesim.sim.presets import load_scenario
from stalesim.sim.run import planned_samples, simulate
from stalesim.sim.scenario import Scenario

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# A small cluster, so that valid cases simulate in milliseconds.
SMALL = {
    "workload": {
        "prompts_per_step": 4,
        "group_size": 2,
        "max_response_tokens": 2048,
        "response_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.8},
    },
    "cluster": {"rollout_engines": 2, "learner_gpus": 2, "max_num_seqs": 16},
}


# --- the keys -------------------------------------------------------------------------------


class Key(typing.NamedTuple):
    path: str  # dotted, as --set takes it
    annotation: Any
    field: Any
    section: str | None  # an optional section that must exist first (its dotted path)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without Optional / Annotated, whether None is allowed)"""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional  # noqa: UP007
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def keys_of(model: type[BaseModel], prefix: str = "", section: str | None = None) -> list[Key]:
    """Every leaf key of ``model``; a length distribution contributes the keys of its default
    kind, an optional section those of its model."""
    found = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        inner, optional = _unwrap(field.annotation)
        if _is_model(inner):
            needs = path if optional and field.default is None else section
            found += keys_of(inner, f"{path}.", needs)
        elif typing.get_origin(inner) in (typing.Union, types.UnionType):
            found += keys_of(type(field.default), f"{path}.", section)
        elif name != "kind":
            found.append(Key(path, field.annotation, field, section))
    return found


SCENARIO_KEYS = keys_of(Scenario)


def bounds(field: Any) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is strict, high, high is strict)"""
    low = high = None
    low_strict = high_strict = False
    for bound in field.metadata:
        if getattr(bound, "gt", None) is not None:
            low, low_strict = bound.gt, True
        if getattr(bound, "ge", None) is not None:
            low = bound.ge
        if getattr(bound, "lt", None) is not None:
            high, high_strict = bound.lt, True
        if getattr(bound, "le", None) is not None:
            high = bound.le
    return low, low_strict, high, high_strict


def kinds(annotation: Any) -> set[type]:
    inner, _ = _unwrap(annotation)
    if typing.get_origin(inner) is Literal:
        return {Literal}  # type: ignore[arg-type]
    return {a for a in (typing.get_args(inner) or (inner,)) if isinstance(a, type)}


def valid_value(field: Any) -> Any:
    """Some value inside a numeric field's range (for sections that must exist)."""
    low, low_strict, high, _ = bounds(field)
    is_int = int in kinds(field.annotation)
    if low is None:
        return 1
    value = low if not low_strict else (low + (1 if is_int else max(abs(low), 1e-6)))
    return min(value, high) if high is not None else value


def section_base(section: str) -> dict[str, Any]:
    """A valid value for an optional section: each required number at a valid value."""
    model: Any = Scenario
    for part in section.split("."):
        model = _unwrap(model.model_fields[part].annotation)[0]
    return {name: valid_value(f) for name, f in model.model_fields.items() if f.is_required()}


# --- invalid values -------------------------------------------------------------------------

NOT_NUMBERS = ["true", "false", ".inf", "-.inf", ".nan", "'7'", "abc", "[1, 2]", "{a: 1}"]


@st.composite
def invalid_value(draw: st.DrawFn, key: Key) -> str:
    """YAML text of a value ``key`` must refuse."""
    types_ = kinds(key.annotation)
    if types_ & {int, float}:
        low, low_strict, high, high_strict = bounds(key.field)
        options = [st.sampled_from(NOT_NUMBERS)]
        is_int = float not in types_
        if high is not None:
            above = (
                st.integers(math.floor(high) + 1, 10**30)
                if is_int
                else st.floats(high, 1e300, exclude_min=not high_strict)
            )
            options.append(above.map(repr))
        if low is not None:
            below = (
                st.integers(-(10**30), math.ceil(low) - 1)
                if is_int
                else st.floats(-1e300, low, exclude_max=not low_strict)
            )
            options.append(below.map(repr))
        if is_int:
            fractional = st.floats(low if low is not None else -1e6, high or 1e6)
            options.append(fractional.filter(lambda x: not float(x).is_integer()).map(repr))
        return draw(st.one_of(options))
    if bool in types_:
        return draw(st.sampled_from(["1", "0", "2.5", "'true'", "maybe", "[true]"]))
    if Literal in types_ or str in types_:
        # unknown names (GPUs, presets, modes, pause policies) and non-strings
        return (
            draw(
                st.one_of(
                    st.sampled_from(["1", "2.5", "true", "[a]", "{a: b}", "not-a-known-name"]),
                    st.text("abcxyz-_", min_size=1, max_size=12).map(lambda s: f"zz{s}"),
                )
            )
            if key.path != "name"
            else draw(st.sampled_from(["1", "2.5", "true", "[a]", "{a: b}"]))
        )
    return draw(st.sampled_from(NOT_NUMBERS))


def nested(path: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), env={"STALESIM_QUIET": "1"})


def assert_refused(result: Any, key: str, out: Path) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (key, result.output, repr(result.exception))
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    if not key.startswith("--"):
        leaf = key.split(".")[-1]
        assert leaf in lines[0] or key.split(".")[0] in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


@settings(SETTINGS, max_examples=160)
@given(data=st.data(), key=st.sampled_from([k for k in SCENARIO_KEYS if k.path != "name"]))
def test_invalid_scenario_values_are_one_line_exit_2(data: st.DataObject, key: Key) -> None:
    raw = data.draw(invalid_value(key), label="value")
    as_file = data.draw(st.booleans(), label="in a scenario file")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        args = ["simulate", "--quiet", "--steps", "2", "--out", str(out)]
        if key.section:
            args += [
                "--set",
                f"{key.section}={yaml.safe_dump(section_base(key.section), default_flow_style=True).strip()}",
            ]
        if as_file:
            path = Path(tmp) / "scenario.yaml"
            text = yaml.safe_dump(nested(key.path, "@@"), default_flow_style=False)
            path.write_text(text.replace("'@@'", raw))
            args.insert(1, str(path))
            if key.section:  # the file must hold the whole section
                base = section_base(key.section)
                base[key.path.rsplit(".", 1)[1]] = "@@"
                text = yaml.safe_dump(nested(key.section, base), default_flow_style=False)
                path.write_text(text.replace("'@@'", raw))
                args = [a for a in args if not a.startswith(f"{key.section}=")]
                args.remove("--set")
        else:
            args += ["--set", f"{key.path}={raw}"]
        assert_refused(run_cli(*args), key.path, out)


TRAIN_KEYS = None  # filled lazily: validate imports torch


def train_keys() -> list[Key]:
    from stalesim.validate.train.presets import TrainConfig

    # free-text labels accept any string, so no value of theirs is invalid
    free_text = {"train.device", "train.lr_rule.source"}
    return [k for k in keys_of(TrainConfig, "train.") if k.path not in free_text]


@settings(SETTINGS, max_examples=40)
@given(data=st.data())
def test_invalid_train_values_are_one_line_exit_2(data: st.DataObject) -> None:
    pytest.importorskip("torch")
    key = data.draw(st.sampled_from(train_keys()), label="key")
    raw = data.draw(invalid_value(key), label="value")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "runs"
        result = run_cli(
            "validate", "sweep", "--quiet", "--out", str(out), "--set", f"{key.path}={raw}"
        )
        assert_refused(result, key.path, out)


# --- valid values ---------------------------------------------------------------------------


def check_invariants(scenario: Scenario, trace: Any, steps: int) -> None:
    """What every run must satisfy (the model's invariants of tests/sim/test_sim_invariants.py):
    each sample has exactly one fate, every step consumed B*G samples, staleness stays inside
    the mode's bound, times are finite and ordered."""
    s = trace.samples
    work, algo = scenario.workload, scenario.algorithm
    g = work.group_size
    assert s.height == s["group_id"].n_unique() * g
    assert s["sample_id"].to_list() == list(range(s.height))
    is_consumed = s["consumed_step"].is_not_null()
    reason = s["dropped_reason"]
    assert (is_consumed ^ reason.is_not_null()).all()
    assert set(reason.drop_nulls().unique()) <= {
        "staleness_filter",
        "max_staleness",
        "in_flight",
        "in_buffer",
        "zero_variance",
    }
    assert is_consumed.sum() == steps * work.prompts_per_step * g
    used = s.filter(is_consumed)
    assert used["staleness_min"].min() >= 0
    assert (used["staleness_min"] <= used["staleness_max"]).all()
    m = algo.minibatches_per_step
    if algo.mode in ("sync", "sync_colocated"):
        assert used["staleness_max"].max() <= m - 1
    elif algo.mode == "one_step":
        assert used["staleness_max"].max() <= 2 * m - 1
    elif algo.mode == "async" and algo.consumption_order == "deadline":
        # the admission limit bounds consumption lag only when the learner keeps deadlines
        assert used["staleness_max"].max() <= algo.max_staleness
    if algo.staleness_filter is not None:
        assert used["staleness_max"].max() <= algo.staleness_filter
    finished = s.filter(s["finish_s"].is_not_null())
    assert finished.height == trace.info["samples_finished"]
    for column in ("start_s", "finish_s"):
        values = finished[column]
        assert values.is_finite().all(), column
    assert (finished["finish_s"] >= finished["start_s"]).all()
    steps_frame = trace.steps
    assert steps_frame.height == steps
    assert steps_frame["end_s"].is_finite().all()
    assert (steps_frame["end_s"] >= steps_frame["start_s"]).all()
    assert math.isfinite(trace.end_s)


NUMERIC_KEYS = [k for k in SCENARIO_KEYS if kinds(k.annotation) & {int, float}]
MAX_SAMPLES = 6_000


@st.composite
def valid_number(draw: st.DrawFn, key: Key) -> float | int:
    low, low_strict, high, high_strict = bounds(key.field)
    low = -1e6 if low is None else low
    high = 1e6 if high is None else high
    if float not in kinds(key.annotation):
        lo = math.ceil(low) + (1 if low_strict and float(low).is_integer() else 0)
        hi = math.floor(high) - (1 if high_strict and float(high).is_integer() else 0)
        return draw(st.one_of(st.sampled_from([lo, hi]), st.integers(lo, hi)))
    edges = [] if low_strict else [low]
    edges += [] if high_strict else [high]
    return draw(
        st.one_of(
            st.sampled_from(edges or [(low + high) / 2]),
            st.floats(low, high, exclude_min=low_strict, exclude_max=high_strict),
        )
    )


@settings(SETTINGS, max_examples=120)
@given(data=st.data(), key=st.sampled_from(NUMERIC_KEYS))
def test_every_value_in_range_is_refused_in_one_line_or_runs_clean(
    data: st.DataObject, key: Key
) -> None:
    value = data.draw(valid_number(key), label="value")
    mode = data.draw(st.sampled_from(["async", "sync", "one_step", "partial_rollout"]))
    patch = yaml.safe_load(yaml.safe_dump(SMALL))
    patch.setdefault("algorithm", {})["mode"] = mode
    if key.section:
        patch = _merge(patch, nested(key.section, section_base(key.section)))
    patch = _merge(patch, nested(key.path, value))
    try:
        scenario = _scenario(patch)
        derive(scenario)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    steps = 2
    if planned_samples(scenario, steps) > MAX_SAMPLES:
        return  # valid, but too big to run here; test_killed_runs and the CLI tests run big ones
    trace = simulate(scenario, steps, seed=0)
    check_invariants(scenario, trace, steps)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    from stalesim.common.config_file import deep_merge

    return deep_merge(base, patch)


def _scenario(patch: dict[str, Any]) -> Scenario:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.yaml"
        path.write_text(yaml.safe_dump(patch))
        return load_scenario(str(path))


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(st.sampled_from(["sync_colocated", "sync", "one_step", "async", "partial_rollout"]))
    b = draw(st.sampled_from([2, 4, 6, 8, 12]))
    m = draw(st.sampled_from([d for d in (1, 2, 3, 4) if b % d == 0]))
    floor = {"sync": m - 1, "sync_colocated": m - 1, "one_step": 2 * m - 1}.get(mode, 0)
    staleness_filter = draw(st.one_of(st.none(), st.integers(floor, floor + 4)))
    response = draw(
        st.one_of(
            st.builds(lambda v: {"kind": "fixed", "value": v}, st.integers(1, 3000)),
            st.builds(
                lambda lo, span: {"kind": "uniform", "low": lo, "high": lo + span},
                st.integers(1, 500),
                st.integers(0, 2000),
            ),
            st.builds(
                lambda mean, sigma: {"kind": "lognormal", "mean": mean, "sigma": sigma},
                st.floats(1, 3000),
                st.floats(0, 2),
            ),
        )
    )
    return {
        "workload": {
            "prompts_per_step": b,
            "group_size": draw(st.integers(1, 4)),
            "response_tokens": response,
            "max_response_tokens": draw(st.integers(64, 4096)),
            "group_correlation": draw(st.floats(0, 1)),
        },
        "cluster": {
            "rollout_engines": draw(st.integers(1, 4)),
            "learner_gpus": draw(st.integers(1, 8)),
            "max_num_seqs": draw(st.integers(48, 64)),
        },
        "algorithm": {
            "mode": mode,
            "max_staleness": draw(st.integers(m - 1, m + 3)),
            "minibatches_per_step": m,
            "staleness_filter": staleness_filter,
            "inflight_updates": draw(st.booleans()) if mode == "async" else False,
            "partial_overprovision": draw(st.floats(0, 2)),
        },
        "weight_sync": {"pause_policy": draw(st.sampled_from(["blocking", "overlapped"]))},
    }


@settings(SETTINGS, max_examples=40)
@given(patch=scenarios(), steps=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_generated_scenarios_keep_the_invariants(
    patch: dict[str, Any], steps: int, seed: int
) -> None:
    try:
        scenario = _scenario(patch)
        derive(scenario)
    except ConfigError as exc:
        assume(False)
        raise AssertionError from exc
    trace = simulate(scenario, steps, seed)
    check_invariants(scenario, trace, steps)
    assert isinstance(trace.samples, pl.DataFrame)


# --- sizes refused before any work, with the figure they would need ---------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("simulate", "--steps", "1000000000"),
            "--steps=1000000000: 512,000,002,048 samples (--steps x workload.prompts_per_step x "
            "workload.group_size, plus those in flight) need about 512 TiB of memory",
        ),
        (
            ("simulate", "--set", "model.layers=1000", "--set", "model.head_dim=4096"),
            "a token takes 6.4e+04 KiB (2 x model.layers=1000 x model.kv_heads=4 x "
            "model.head_dim=4096 x model.dtype_bytes=2)",
        ),
        (
            ("simulate", "--set", "model.params=1e14"),
            "model.preset=qwen2.5-7b, model.params=1e+14: 1.863e+05 GiB of weights do not fit",
        ),
    ],
)
def test_impossible_simulations_are_refused_up_front(
    args: tuple[str, ...], expected: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli(*args, "--quiet", "--out", str(out))
    assert_refused(result, "--", out)
    assert expected in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--set", "train.prompts_per_step=1e12"), "allowed: 1 <= value <= 1000000"),
        (
            ("--set", "train.prompts_per_step=1e6"),
            "train.prompts_per_step=1000000 x train.samples_per_prompt=8 (the batch's "
            "activations): 1 run(s) at a time need about",
        ),
        (("--staleness", "fixed:99999999999"), "lags above 1000000 are not allowed"),
        (
            ("--staleness", "fixed:1000000", "--set", "train.steps=1000000"),
            "1,000,001 weight snapshots (staleness 1000000) of train.policy",
        ),
        (
            ("--set", "train.policy.n_embd=65536", "--set", "train.policy.n_layer=256"),
            "train.policy (n_layer=256, n_embd=65536: 13,194,142,154,752 parameters)",
        ),
        (("--set", "train.backend=triton"), "set TRITON_INTERPRET=1), which is for tests"),
        (("--lrs", "1e-3,inf"), "Input should be a finite number"),
        (("--seeds", "-1"), "seeds must be whole numbers in 0..4294967295"),
        (("--workers", "100000"), "--workers 100000: allowed 1..1024"),
    ],
)
def test_impossible_sweeps_are_refused_up_front(
    args: tuple[str, ...], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    out = tmp_path / "runs"
    result = run_cli("validate", "sweep", "--quiet", "--workers", "1", *args, "--out", str(out))
    assert_refused(result, "--", out)
    assert expected in result.stderr, result.stderr
