"""Runs killed with SIGKILL at seeded random points, then started again.

After every kill: no output folder reads as complete unless all its files come from one
finished run (``require_complete`` and the files' own content agree); after the restart: the
output is complete, finished work was neither lost nor redone, and no temporary file is left.

The harness is :func:`kill_and_restart`: give it a :class:`KillCase` (a command line that
writes into a folder, and what "finished work" means there) to cover another command, e.g.
``stalesim plan``. A kill lands either after the k-th file rename of the process (every result
file passes through one, so these points cover the write and publish steps exactly) or after a
random delay.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from stalesim.common.output_dir import STAGE_PREFIX, WRITING, require_complete

# The CLI in a fresh interpreter; with KILL_AT_RENAME=k the process SIGKILLs itself right after
# its k-th os.replace (the last step of every atomic file write and of every publish).
ENTRY = """
import os, signal, sys
k = int(os.environ.get("KILL_AT_RENAME", "0"))
if k:
    real, count = os.replace, [0]
    def replace(src, dst, **kw):
        real(src, dst, **kw)
        count[0] += 1
        if count[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
from stalesim.cli import main
sys.argv[0] = "stalesim"
main()
"""


@dataclass
class KillCase:
    """A command to kill and restart.

    ``argv(out)``: its arguments, writing into folder ``out``. ``finished(out)``: the finished
    units of work in ``out`` (name -> fingerprint that changes if the unit is redone).
    ``check_complete(out)``: assert ``out`` is a whole, readable result.
    """

    name: str
    argv: Callable[[Path], list[str]]
    finished: Callable[[Path], dict[str, str]]
    check_complete: Callable[[Path], None]
    env: dict[str, str] = field(default_factory=dict)


def run(case: KillCase, out: Path, *, kill_at_rename: int = 0, kill_after_s: float = 0.0):
    """Run the command; kill it at the given point. Returns (exit code, killed)."""
    env = {**os.environ, **case.env, "STALESIM_QUIET": "1", "KILL_AT_RENAME": str(kill_at_rename)}
    # stderr goes to a file, not a pipe: a fork server still importing torch when its sweep is
    # killed exits only once the import is done, and would hold a pipe open until then.
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", ENTRY, *case.argv(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
        if kill_after_s:
            try:
                process.wait(timeout=kill_after_s)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
        process.wait(timeout=600)
        stderr.seek(0)
        killed = process.returncode == -signal.SIGKILL
        assert killed or process.returncode == 0, stderr.read()
    return process.returncode, killed


def temporaries(out: Path) -> list[Path]:
    """Files and folders a finished run must not leave behind."""
    if not out.exists():
        return []
    return [
        p
        for p in out.rglob("*")
        if p.name.startswith(STAGE_PREFIX) or p.name.endswith(".tmp") or p.name == WRITING
    ]


def kill_and_restart(case: KillCase, out: Path, kill: dict[str, float]) -> dict[str, str]:
    """Kill one run at ``kill`` (``{"rename": k}`` or ``{"after_s": t}``), check what it left,
    restart it to the end, check again; returns the finished work after the restart."""
    before = case.finished(out) if out.exists() else {}
    _, killed = run(
        case,
        out,
        kill_at_rename=int(kill.get("rename", 0)),
        kill_after_s=kill.get("after_s", 0.0),
    )
    after_kill = case.finished(out) if out.exists() else {}
    # finished work of earlier runs survives a kill untouched
    assert {k: after_kill.get(k) for k in before} == before
    run(case, out)
    assert temporaries(out) == [], (kill, killed)
    case.check_complete(out)
    final = case.finished(out)
    # nothing finished before the restart was redone (same fingerprint) or lost
    assert {k: final.get(k) for k in after_kill} == after_kill, kill
    return final


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- simulate -------------------------------------------------------------------------------

SIM_DATA = ("samples.parquet", "steps.parquet", "busy.parquet", "queue.parquet")


def simulate_case(seed: int) -> KillCase:
    def argv(out: Path) -> list[str]:
        return [
            "simulate",
            "--quiet",
            "--steps",
            "3",
            "--seed",
            str(seed),
            "--set",
            "workload.prompts_per_step=8",
            "--set",
            "workload.group_size=2",
            "--out",
            str(out),
        ]

    def check(out: Path) -> None:
        require_complete(out, "simulate", (*SIM_DATA, "summary.json", "report.html"))
        import json

        assert json.loads((out / "summary.json").read_text())["seed"] == seed

    # A simulate run is one unit: it is finished when its folder is complete.
    return KillCase(f"simulate seed {seed}", argv, lambda out: {}, check)


def readable_run(out: Path) -> tuple[str, ...] | None:
    """The data files' hashes if ``out`` reads as complete, else None."""
    try:
        require_complete(out, "simulate", (*SIM_DATA, "summary.json"))
    except ValueError:
        return None
    return tuple(sha(out / name) for name in SIM_DATA)


def test_killed_simulate_never_reads_as_a_mix_of_two_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    rng = random.Random(12)
    cases = [simulate_case(1), simulate_case(2)]
    runs: dict[int, tuple[str, ...]] = {}
    for seed, case in zip((1, 2), cases, strict=True):
        run(case, out)
        runs[seed] = readable_run(out)
        assert runs[seed] is not None and temporaries(out) == []
    assert runs[1] != runs[2]
    # Each simulate run renames 13 files: 6 written to its staging folder, 6 published, then
    # the marker. Kill points: one in each half of those, and one random moment.
    kills = [{"rename": rng.randint(1, 6)}, {"after_s": rng.uniform(0.5, 4.0)}]
    for i, kill in enumerate(kills):
        case = cases[i % 2]
        seed = 1 + i % 2
        run(
            case,
            out,
            kill_at_rename=int(kill.get("rename", 0)),
            kill_after_s=kill.get("after_s", 0),
        )
        left = readable_run(out)
        # readable only as one whole run: the previous one, or this one if it got that far
        assert left in (None, runs[1], runs[2]), kill
        run(case, out)
        assert readable_run(out) == runs[seed], kill
        assert temporaries(out) == [], kill
    # Killed among its publish renames: the report command refuses the folder in one line,
    # and the next run cleans up and completes.
    run(cases[0], out, kill_at_rename=rng.randint(8, 12))
    from click.testing import CliRunner
    from stalesim.cli import main

    result = CliRunner().invoke(main, ["report", "simulate", str(out)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "stopped while writing" in result.stderr
    assert readable_run(out) is None
    run(cases[0], out)
    assert readable_run(out) == runs[1] and temporaries(out) == []


# --- validate sweep -------------------------------------------------------------------------


def sweep_case(cache: Path, workers: int = 1) -> KillCase:
    def argv(out: Path) -> list[str]:
        return [
            "validate",
            "sweep",
            "--quiet",
            "--lrs",
            "1e-3,3e-3",
            "--staleness",
            "0,2",
            "--seeds",
            "0",
            "--workers",
            str(workers),
            "--set",
            "train.steps=3",
            "--set",
            "train.prompts_per_step=4",
            "--set",
            "train.samples_per_prompt=2",
            "--set",
            "train.warm_start.steps=2",
            "--set",
            "train.warm_start.batch_size=8",
            "--out",
            str(out),
        ]

    def finished(out: Path) -> dict[str, str]:
        shards = out / "shards"
        if not shards.exists():
            return {}
        return {
            p.name: f"{sha(p)}:{p.stat().st_mtime_ns}:{sha(p.with_name(p.name.replace('.run.json', '.steps.parquet')))}"
            for p in shards.glob("*.run.json")
        }

    def check(out: Path) -> None:
        require_complete(out, "validate sweep", ["runs.parquet", "steps.parquet"])
        runs = pl.read_parquet(out / "runs.parquet")
        steps = pl.read_parquet(out / "steps.parquet")
        assert runs.height == 4 and runs["run_id"].n_unique() == 4
        assert sorted(steps["run_id"].unique()) == sorted(runs["run_id"])
        assert (steps.group_by("run_id").len()["len"] == 3).all()

    return KillCase(
        f"validate sweep, {workers} worker(s)",
        argv,
        finished,
        check,
        env={"STALESIM_CACHE_DIR": str(cache)},
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_killed_sweep_loses_and_redoes_nothing(tmp_path: Path, workers: int) -> None:
    pytest.importorskip("torch")
    case = sweep_case(tmp_path / "cache", workers)
    out = tmp_path / "runs"
    rng = random.Random(workers)
    started = time.perf_counter()
    run(case, tmp_path / "probe")  # warms the warm-start cache and times a whole sweep
    whole_s = time.perf_counter() - started
    first = kill_and_restart(case, out, {"after_s": rng.uniform(0.3, 0.9) * whole_s})
    assert len(first) == 4
    if workers == 1:
        # Again from scratch, killed at a rename: inside a shard write or a table merge.
        out2 = tmp_path / "runs2"
        final = kill_and_restart(case, out2, {"rename": rng.randint(2, 12)})
        assert len(final) == 4


# --- plan -----------------------------------------------------------------------------------

PLAN_RESULT = ("candidates.parquet", "plan.json")


def plan_file(path: Path, seed: int) -> Path:
    """A small plan (about 14 simulations of 6 steps, one batch of 2 per round, so a kill
    lands between, inside or after simulations, in a cache write or in the publish)."""
    import json

    plan = {
        "name": f"kill-{seed}",
        "base": {
            "preset": "default",
            "set": {
                "workload.prompts_per_step": 8,
                "workload.group_size": 4,
                "workload.response_tokens": {"kind": "lognormal", "mean": 300, "sigma": 0.6},
                "workload.max_response_tokens": 1024,
                "cluster.max_num_seqs": 64,
            },
        },
        "budget_gpus": 4,
        "space": {"learner_gpus": [1, 2], "tp": [1, 2]},
        "variants": [{"mode": ["sync", "one_step"]}, {"mode": ["async"], "max_staleness": [1, 2]}],
        "evaluation": {"steps": 6, "seed": seed, "round_size": 2, "probe": 1, "keep_top": 2},
    }
    path.write_text(json.dumps(plan))
    return path


def plan_case(plan: Path, seed: int) -> KillCase:
    def argv(out: Path) -> list[str]:
        return ["plan", str(plan), "--workers", "1", "--quiet", "--out", str(out)]

    def finished(out: Path) -> dict[str, str]:
        # a finished simulation is a row of the cache; its finish time changes if it is redone
        cache = out / "simulated.parquet"
        if not cache.exists():
            return {}
        rows = pl.read_parquet(cache).filter(pl.col("seed") == seed)
        return {
            row["candidate_id"]: f"{row['simulated_at']!r}:{row['step_time_s']!r}"
            for row in rows.iter_rows(named=True)
        }

    def check(out: Path) -> None:
        import json

        require_complete(out, "plan", (*PLAN_RESULT, "report.html"))
        summary = json.loads((out / "plan.json").read_text())
        assert summary["plan"]["evaluation"]["seed"] == seed
        assert_one_plan(out)
        # every simulated candidate of the result is in the cache, with the same step time
        table = pl.read_parquet(out / "candidates.parquet").filter(
            pl.col("evaluated") == "simulated"
        )
        cache = finished(out)
        assert table.height == summary["counts"]["simulated"] > 0
        for row in table.iter_rows(named=True):
            assert cache[row["candidate_id"]].endswith(f":{row['step_time_s']!r}")

    return KillCase(f"plan seed {seed}", argv, finished, check)


def assert_one_plan(out: Path) -> None:
    """The result files of ``out`` belong together (one plan's summary and table)."""
    import json

    summary = json.loads((out / "plan.json").read_text())
    table = pl.read_parquet(out / "candidates.parquet")
    best = table.filter(pl.col("rank") == 1).row(0, named=True)
    assert summary["recommendation"]["best"]["candidate_id"] == best["candidate_id"]
    assert summary["counts"]["candidates"] == table.height
    assert summary["counts"]["simulated"] == (table["evaluated"] == "simulated").sum()


def readable_plan(out: Path) -> int | None:
    """The seed of the plan ``out`` reads as, if it reads as a complete one, else None."""
    import json

    try:
        require_complete(out, "plan", PLAN_RESULT)
    except ValueError:
        return None
    assert_one_plan(out)
    return json.loads((out / "plan.json").read_text())["plan"]["evaluation"]["seed"]


def test_killed_plan_keeps_finished_simulations_and_never_mixes_two_plans(
    tmp_path: Path,
) -> None:
    import json

    out = tmp_path / "out"
    rng = random.Random(9)
    cases = {
        seed: plan_case(plan_file(tmp_path / f"{seed}.json", seed), seed) for seed in (1, 2, 3)
    }
    started = time.perf_counter()
    run(cases[1], out)  # a finished plan in the folder
    whole_s = time.perf_counter() - started
    assert readable_plan(out) == 1
    # Two more plans into the same folder (other seeds: other simulations), each killed once:
    # at a rename (one of the ~7 cache writes, the 3 staged files or the publish) or at a
    # random moment. After each kill the folder reads as the previous plan, this one or
    # nothing; the restart keeps every simulation the killed run had finished.
    kills = {2: {"rename": rng.randint(2, 13)}, 3: {"after_s": rng.uniform(0.4, 0.9) * whole_s}}
    for seed, kill in kills.items():
        seen: list[tuple[int | None, dict[str, str]]] = []
        case = cases[seed]

        def finished(folder: Path, case: KillCase = case, seen: list = seen) -> dict[str, str]:
            work = case.finished(folder)
            seen.append((readable_plan(folder), work))
            return work

        kill_and_restart(KillCase(case.name, case.argv, finished, case.check_complete), out, kill)
        (before, _), (after_kill, left) = seen[0], seen[1]
        assert before == seed - 1 and after_kill in (seed - 1, seed, None), (kill, after_kill)
        counts = json.loads((out / "plan.json").read_text())["counts"]
        # every simulation finished before the kill was reused, none redone
        assert counts["resumed"] == len(left), (kill, counts, len(left))
        assert counts["simulated"] == counts["resumed"] + counts["simulated_this_run"]
        assert readable_plan(out) == seed
    # the earlier plans' simulations are still in the shared cache
    assert cases[1].finished(out) and cases[2].finished(out)
