"""The GPU law script runs first time: the same script, shrunk onto the CPU through its
``LAW_GPU_ARGS`` hook, sweeps, fits and packs its results; cut short, it still packs what
finished."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools/gpu/run_law_gpu_ns.sh"

TINY = {
    "train": {
        "device": "cpu",
        "backend": "auto",  # the script asks for Triton, which needs a CUDA device
        "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
        "task": {"n_digits": 3, "base": 16, "vocab_size": 64},
        "warm_start": {"steps": 5, "batch_size": 32, "per_run_seed": True},
        "steps": 10,
        "prompts_per_step": 4,
        "samples_per_prompt": 4,
        "smoothing_window": 2,
    }
}


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    environ = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OUT": str(tmp_path / "out"),
        "LAW_GPU_RUNS": str(tmp_path / "runs"),
        "STALESIM_CACHE_DIR": str(tmp_path / "cache"),
        "PKG_DIR": str(tmp_path / "pkg"),
        "SITE_DIR": str(tmp_path / "site"),
        "LAW_GPU_WORKERS": "1",
        "LAW_GPU_ARGS": f"--set @{tmp_path / 'tiny.yaml'} --lrs 1e-3,4e-3 --seeds 0",
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300
    )


def _packed(tmp_path: Path) -> Path:
    unpacked = tmp_path / "unpacked"
    with tarfile.open(tmp_path / "out" / "law-gpu-ns.tgz") as tar:
        tar.extractall(unpacked, filter="data")
    return unpacked


def test_the_script_sweeps_fits_and_packs_on_a_tiny_cpu_config(tmp_path: Path) -> None:
    done = _run(tmp_path)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sweep exit 0" in log and "fit exit" in log
    unpacked = _packed(tmp_path)
    runs = pl.read_parquet(unpacked / "runs.parquet")
    # the preset's staleness grid {0, 8}, the two rates and the seed the test asked for
    assert runs.height == 4
    assert sorted(runs["staleness"].unique().to_list()) == [0, 8]
    assert sorted(runs["lr"].unique().to_list()) == [1e-3, 4e-3]
    assert (runs["preset"] == "law-gpu-ns").all()
    assert (unpacked / "fit.txt").read_text().strip()
    assert not (unpacked / "cache").exists()


def test_cut_short_it_packs_what_finished_and_says_so(tmp_path: Path) -> None:
    done = _run(tmp_path, LAW_GPU_LIMIT_S="1")
    log = (tmp_path / "out" / "log.txt").read_text()
    assert done.returncode == 124, done.stdout + done.stderr
    assert "sweep exit 124" in log
    assert (tmp_path / "out" / "law-gpu-ns.tgz").exists()


@pytest.mark.parametrize("script", ["run_law_gpu_ns.sh", "run_on_gpu_box.sh", "box_setup.sh"])
def test_the_box_scripts_parse(script: str) -> None:
    path = ROOT / "tools/gpu" / script
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
