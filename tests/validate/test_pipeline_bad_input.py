"""`validate pipeline` and `validate replay` on bad input and killed runs: one line and exit
code 2, in bounded time, and a finished run's folder is never replaced, mixed or replayed when
it is not whole."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")

from stalesim.common.output_dir import MARKER, seal

from tests.evidence import RESULTS

PIPELINE_KIND = "validate pipeline"  # the kind of a pipeline run's completion marker

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = RESULTS / "pipeline-cpu" / "lower-load" / "async"
RUN_NAMES = sorted(json.loads((COMMITTED / MARKER).read_text())["files"])
#: a pipeline small enough to start in seconds on a loaded 2-core machine
TINY = [
    "--set", "train.task.n_digits=3", "--set", "train.task.base=5",
    "--set", "train.policy.n_layer=1", "--set", "train.policy.n_head=2",
    "--set", "train.policy.n_embd=16", "--set", "train.warm_start.steps=10",
    "--set", "train.prompts_per_step=4", "--set", "train.samples_per_prompt=2",
    "--set", "train.warmup_steps=1",
]  # fmt: skip


def _stalesim(*args: str, timeout: float = 120, env: dict | None = None):
    started = time.perf_counter()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "stalesim"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return result, time.perf_counter() - started


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _finished_copy(tmp_path: Path, name: str = "run") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file in RUN_NAMES:
        shutil.copy2(COMMITTED / file, folder / file)
    shutil.copy2(COMMITTED / MARKER, folder / MARKER)
    return folder


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


REFUSALS = {
    "cuda-device": (["--set", "train.device=cuda"], "train.device"),
    "gpu-preset": (["--preset", "gpu-small"], "CUDA"),
    "unreachable-address": (["--address", "127.0.0.1:{port}"], "--address 127.0.0.1:"),
    "empty-address": (["--address", ""], "--address ''"),
    "bad-device": (["--set", "train.device=tpu"], "train.device"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_pipeline_run_leaves_the_finished_run_in_its_folder(
    tmp_path: Path, case: str
) -> None:
    args, named = REFUSALS[case]
    if case in ("cuda-device", "gpu-preset") and _cuda():
        pytest.skip("this machine has CUDA")
    folder = _finished_copy(tmp_path)
    before = _digests(folder)
    port = _free_port()
    args = [a.format(port=port) for a in args]
    result, seconds = _stalesim("validate", "pipeline", *args, "--out", str(folder), "--quiet")
    line = _one_line_error(result)
    assert named in line
    assert seconds < 60  # refused up front: no Ray start, no warm start, no retrying
    assert _digests(folder) == before  # config.json included: nothing was written


def test_an_unreachable_ray_address_fails_in_bounded_time_for_plan(tmp_path: Path) -> None:
    plan = {
        "name": "unreachable",
        "base": {"preset": "default"},
        "budget_gpus": 4,
        "space": {"learner_gpus": [1, 2]},
        "variants": [{"mode": ["sync"]}],
        "evaluation": {"steps": 6, "seed": 3, "round_size": 4, "probe": 1},
    }
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    address = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "out"
    result, seconds = _stalesim("plan", str(path), "--ray", address, "--out", str(out))
    line = _one_line_error(result)
    assert f"--ray {address}" in line
    assert seconds < 60


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("127.0.0.1:{port}", "cannot reach"),
        ("ray://127.0.0.1:{port}", "cannot reach"),
        ("127.0.0.1:99999", "port"),
        ("http://x:1", "not a Ray address"),
        ("  ", "give a Ray address"),
    ],
)
def test_the_address_check_names_the_option_and_address(address: str, named: str) -> None:
    from stalesim.common.ray_address import check_ray_address

    address = address.format(port=_free_port())
    started = time.perf_counter()
    with pytest.raises(ValueError) as caught:
        check_ray_address(address, "--address", timeout_s=5)
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert message.startswith("--address") and named in message and "\n" not in message


def test_a_reachable_address_passes_the_check() -> None:
    from stalesim.common.ray_address import check_ray_address

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_ray_address(f"127.0.0.1:{server.getsockname()[1]}", "--address", timeout_s=5)
    for address in ("auto", "local"):  # Ray itself finds (or starts) a cluster on this machine
        check_ray_address(address, "--address")


def _replay(folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    from click.testing import CliRunner
    from stalesim.cli import main

    result = CliRunner().invoke(
        main, ["validate", "replay", str(folder), "--out", str(tmp_path / "replayed")]
    )
    return subprocess.CompletedProcess([], result.exit_code, result.stdout, result.stderr)


def _reseal(folder: Path) -> None:
    seal(folder, PIPELINE_KIND, RUN_NAMES)


def _no_summary(folder: Path) -> str:
    (folder / "summary.json").unlink()
    return "summary.json"


def _garbage_summary(folder: Path) -> str:
    (folder / "summary.json").write_bytes(b"\x00\xffnot json")
    _reseal(folder)
    return "summary.json"


def _running_summary(folder: Path) -> str:
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    _reseal(folder)
    return "running"


def _empty_config(folder: Path) -> str:
    (folder / "config.json").write_text("{}")
    _reseal(folder)
    return "config.json"


def _no_marker(folder: Path) -> str:
    (folder / MARKER).unlink()
    return MARKER


def _malformed_marker(folder: Path) -> str:
    (folder / MARKER).write_text(json.dumps({"kind": PIPELINE_KIND, "files": ["steps.parquet"]}))
    return MARKER


def _new_table_beside_old_summary(folder: Path) -> str:
    steps = pl.read_parquet(folder / "steps.parquet")
    steps.head(steps.height // 2).write_parquet(folder / "steps.parquet")
    return "steps.parquet"


def _random_bytes(folder: Path) -> str:
    (folder / "samples.parquet").write_bytes(os.urandom(4096))
    _reseal(folder)
    return "samples.parquet"


def _truncated(folder: Path) -> str:
    data = (folder / "steps.parquet").read_bytes()
    (folder / "steps.parquet").write_bytes(data[: len(data) // 2])
    _reseal(folder)
    return "steps.parquet"


def _wrong_type(folder: Path) -> str:
    steps = pl.read_parquet(folder / "steps.parquet")
    steps.with_columns(pl.col("end_s").cast(pl.String)).write_parquet(folder / "steps.parquet")
    _reseal(folder)
    return "end_s"


def _missing_column(folder: Path) -> str:
    pl.read_parquet(folder / "queue.parquet").drop("groups_waiting").write_parquet(
        folder / "queue.parquet"
    )
    _reseal(folder)
    return "groups_waiting"


def _nan_value(folder: Path) -> str:
    steps = pl.read_parquet(folder / "steps.parquet")
    steps.with_columns(
        pl.when(pl.col("step") == 3).then(float("nan")).otherwise(pl.col("end_s")).alias("end_s")
    ).write_parquet(folder / "steps.parquet")
    _reseal(folder)
    return "end_s"


def _nan_timing(folder: Path) -> str:
    timings = pl.read_parquet(folder / "decode_timings.parquet")
    timings.with_columns(
        pl.when(pl.int_range(pl.len()) == 2)
        .then(float("nan"))
        .otherwise(pl.col("seconds"))
        .alias("seconds")
    ).write_parquet(folder / "decode_timings.parquet")
    _reseal(folder)
    return "decode_timings.parquet: column seconds"


DAMAGE = {
    f.__name__.strip("_"): f
    for f in (
        _no_summary,
        _garbage_summary,
        _running_summary,
        _empty_config,
        _no_marker,
        _malformed_marker,
        _new_table_beside_old_summary,
        _random_bytes,
        _truncated,
        _wrong_type,
        _missing_column,
        _nan_value,
        _nan_timing,
    )
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_replay_refuses_a_folder_that_is_not_one_whole_finished_run(
    tmp_path: Path, damage: str
) -> None:
    folder = _finished_copy(tmp_path)
    named = DAMAGE[damage](folder)
    line = _one_line_error(_replay(folder, tmp_path))
    assert named in line
    assert not (tmp_path / "replayed").exists()


def test_replay_reads_a_finished_run(tmp_path: Path) -> None:
    from stalesim.validate.pipeline.replay import load_run

    config, tables = load_run(_finished_copy(tmp_path))
    assert (
        tables["steps"].height == json.loads((COMMITTED / "summary.json").read_text())["steps_done"]
    )
    assert config.algorithm.mode == "async"


def _start_pipeline(folder: Path, cache: Path) -> subprocess.Popen:
    stalesim = Path(sys.executable).parent / "stalesim"
    return subprocess.Popen(
        [
            str(stalesim),
            "validate",
            "pipeline",
            "--steps",
            "2000",
            "--out",
            str(folder),
            "--quiet",
            *TINY,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "STALESIM_CACHE_DIR": str(cache), "RAY_USAGE_STATS_ENABLED": "0"},
        start_new_session=True,  # its own process group: Ray's processes are killed with it
    )


def _kill_mid_run(process: subprocess.Popen, folder: Path, since: float) -> None:
    """SIGKILL the run's process group once it has flushed a table (it is mid-run)."""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            flushed = [p for p in folder.rglob("steps.parquet") if p.stat().st_mtime > since]
            if flushed:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run flushed no table within 240 s"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


def test_a_killed_pipeline_run_is_never_replayed_and_never_mixes_with_a_finished_one(
    tmp_path: Path,
) -> None:
    previous = _finished_copy(tmp_path, "previous")
    before = _digests(previous)
    fresh = tmp_path / "fresh"
    for folder in (fresh, previous):
        since = time.time() - 1
        _kill_mid_run(_start_pipeline(folder, tmp_path / "cache"), folder, since)
    # a killed first run leaves no finished run: replay refuses, naming the missing marker
    assert MARKER in _one_line_error(_replay(fresh, tmp_path))
    # a killed later run leaves the earlier one whole (its staging folder aside), and only it
    after = {k: v for k, v in _digests(previous).items() if not k.startswith(".stalesim-tmp-")}
    assert after == before
    from stalesim.validate.pipeline.replay import load_run

    _, tables = load_run(previous)
    assert tables["steps"].height == pl.read_parquet(COMMITTED / "steps.parquet").height


@pytest.mark.parametrize("command", ["sweep", "pipeline"])
@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("train.device=tpu:0", "train.device='tpu:0': expected cpu, cuda or cuda:N"),
        ("train.device=cuda:x", "train.device='cuda:x': expected cpu, cuda or cuda:N"),
        ("train.policy.n_head=3", "policy.n_embd=64 is not divisible by policy.n_head=3"),
    ],
)
def test_a_bad_device_or_head_count_is_one_line_and_writes_nothing(
    tmp_path: Path, command: str, setting: str, named: str
) -> None:
    from click.testing import CliRunner
    from stalesim.cli import main

    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["validate", command, "--set", setting, "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "config", ['{"train": []}', '{"train": {"grpo": 3}}', "{", '{"train": {"policy": "x"}}']
)
def test_fit_refuses_a_damaged_sweep_config_in_one_line(tmp_path: Path, config: str) -> None:
    from click.testing import CliRunner
    from stalesim.cli import main

    sweep = RESULTS / "law-horizon" / "non-saturating"
    folder = tmp_path / "sweep"
    folder.mkdir()
    shutil.copy2(sweep / "runs.parquet", folder / "runs.parquet")
    (folder / "config.json").write_text(config)
    result = CliRunner().invoke(
        main, ["fit", str(folder), "--bootstrap", "0", "--out", str(tmp_path / "law")]
    )
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(folder / "config.json") in lines[0], result.stderr


_TABLE_COLUMNS = [
    (table, column) for table in ("samples", "steps", "queue", "weights") for column in {
        "samples": ("response_tokens", "staleness_max", "staleness_mean_tokens"),
        "steps": ("end_s", "idle_before_s", "publish_s", "version_end"),
        "queue": ("time_s", "groups_waiting"),
        "weights": ("seen_s", "ready_s"),
    }[table]
]  # fmt: skip


@settings(
    derandomize=True,
    database=None,
    max_examples=25,
    deadline=10_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    where=st.sampled_from(_TABLE_COLUMNS),
    row=st.integers(min_value=0, max_value=50),
    value=st.one_of(
        st.floats(width=64), st.integers(min_value=-(2**31), max_value=2**31), st.text(max_size=3)
    ),
)
def test_a_replayed_table_with_any_value_reads_or_is_refused_in_one_line(
    tmp_path: Path, where: tuple[str, str], row: int, value
) -> None:
    from stalesim.validate.pipeline.replay import RUN_TABLES, load_run

    folder = tmp_path / "run"
    shutil.rmtree(folder, ignore_errors=True)  # examples share the test's tmp_path
    folder = _finished_copy(tmp_path)
    table, column = where
    path = folder / f"{table}.parquet"
    frame = pl.read_parquet(path)
    values = frame[column].to_list()
    values[row % len(values)] = value
    frame.with_columns(pl.Series(column, values, strict=False)).write_parquet(path)
    _reseal(folder)
    spec = RUN_TABLES[table][column]
    try:
        _, tables = load_run(folder)
    except ValueError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(str(folder)), message
        return
    # accepted: the value was the column's kind, finite and in range
    read = tables[table][column][row % len(values)]
    assert isinstance(value, int | float) and math.isfinite(value) and value >= (spec.min or 0)
    assert read == pytest.approx(value)


def test_replay_publishes_its_trace_and_result_together(tmp_path: Path) -> None:
    from stalesim.common.output_dir import require_complete

    folder = _finished_copy(tmp_path)
    result = _replay(folder, tmp_path)
    names = ["replay.json", *(f"{t}.parquet" for t in ("samples", "steps", "busy", "queue"))]
    require_complete(tmp_path / "replayed", "validate replay", names)
    replayed = json.loads((tmp_path / "replayed" / "replay.json").read_text())
    # written either way; the exit code says whether every target was met
    assert result.returncode == (0 if all(replayed["met"].values()) else 1), result.stderr
    committed = json.loads((COMMITTED / "replay" / "replay.json").read_text())
    # the run's side is reduced from the tables read through the checks: unchanged by them
    assert replayed["real"] == committed["real"]
