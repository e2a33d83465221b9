"""Run the pipeline: start Ray, the coordinator, the rollout workers and the learner; write files.

``ray.init()`` starts a local instance unless an address is given (``--address``: join an
existing cluster, e.g. ``auto`` or ``ray://head:10001``). While the run goes, the driver copies
the coordinator's record to Parquet every ``flush_s`` seconds, each file written atomically, so
the files go to a staging folder inside ``out`` and are published with a completion marker
only when the run ends (:func:`stalesim.common.output_dir.output_folder`), so a run that is refused,
fails or is killed never replaces or mixes with the files of a finished run there. Everything is
checked before anything is written or started (:func:`check_pipeline`). Files in ``out``:

``samples, steps, busy, queue`` (the simulator's trace columns), ``decode_timings,
prefill_timings, learner_timings`` (the timing tables of the calibration interface),
``weights`` (each weight load of each engine, with the digest of the weights it then held),
``published`` (each version the learner published, with its digest), ``config.json`` and
``summary.json`` (with the run's throughput, staleness and overlap:
:mod:`stalesim.validate.pipeline.summary`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stalesim.common.config_file import ConfigError
from stalesim.common.files import write_json, write_parquet
from stalesim.common.output_dir import output_folder
from stalesim.common.ray_address import check_ray_address
from stalesim.validate.pipeline.config import PipelineConfig
from stalesim.validate.pipeline.summary import run_figures

#: the completion marker's kind of a pipeline run's folder
PIPELINE_KIND = "validate pipeline"
#: the files a finished run's folder holds besides its tables
RUN_FILES = ("config.json", "summary.json")
#: the statuses of a run that ended (the run's own outcome, not an interruption)
ENDED = ("finished", "collapsed")

TABLES = (
    "samples",
    "steps",
    "busy",
    "queue",
    "decode_timings",
    "prefill_timings",
    "learner_timings",
    "weights",
    "published",
)


def _write_tables(out: Path, tables: dict[str, Any]) -> None:
    for name in TABLES:
        write_parquet(out / f"{name}.parquet", tables[name])


def run_pipeline(
    config: PipelineConfig,
    out: str | Path,
    *,
    address: str | None = None,
    flush_s: float = 2.0,
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run ``config`` to its last step (or a collapse) and return the summary written."""
    check_pipeline(config, out, address)
    with output_folder(out, kind=PIPELINE_KIND) as stage:
        write_json(stage / "config.json", config.model_dump(mode="json"))
        summary = _run(config, stage, address, flush_s, on_progress)
        write_json(stage / "summary.json", summary)
    return summary


def check_pipeline(config: PipelineConfig, out: str | Path, address: str | None) -> None:
    """Raise a one-line error for anything that would stop the run after it started: the
    config's sections, a CUDA device on a machine without one, an output path that is a file,
    a cluster address nobody answers at (checked with a timeout: Ray itself retries forever)."""
    config.check()
    from stalesim.validate.train.trainer import resolve_device

    try:
        resolve_device(config.train.device)
    except ValueError as exc:
        raise ConfigError(f"{exc} (preset {config.preset})") from None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if address is not None:
        check_ray_address(address, "--address")


def _run(
    config: PipelineConfig,
    out: Path,
    address: str | None,
    flush_s: float,
    on_progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    import ray
    import torch
    from stalesim.validate.pipeline.actors import actor_classes
    from stalesim.validate.train.warm_start import warm_start_state

    cfg = config.train
    warm = warm_start_state(cfg.policy, cfg.task, cfg.warm_start, cfg.device)
    started_ray = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address is None:
            options["num_cpus"] = config.rollout_workers + 1
            if cfg.device.startswith("cuda") and torch.cuda.is_available():
                options["num_gpus"] = torch.cuda.device_count()
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError) as exc:
            where = f"--address {address}" if address is not None else "a local Ray"
            raise ConfigError(f"{where}: cannot start or join Ray ({exc})") from None
        started_ray = True
    coordinator_cls, worker_cls, learner_cls = actor_classes()
    actors = config.rollout_workers + 1
    cpus = ray.cluster_resources().get("CPU", actors)
    per_cpu = min(1.0, cpus / actors)
    per_gpu = 1.0 / actors if cfg.device.startswith("cuda") else 0.0
    t0 = time.time()
    started = time.perf_counter()
    warm_ref = ray.put(warm)
    coordinator = coordinator_cls.options(num_cpus=0).remote(config, t0)
    workers = [
        worker_cls.options(num_cpus=per_cpu, num_gpus=per_gpu).remote(
            config, i, warm_ref, coordinator, t0
        )
        for i in range(config.rollout_workers)
    ]
    learner = learner_cls.options(num_cpus=per_cpu, num_gpus=per_gpu).remote(
        config, warm_ref, coordinator, t0
    )
    ray.get([a.ready.remote() for a in [*workers, learner]])
    t0 = time.time()
    ray.get(coordinator.start.remote(t0))
    worker_runs = [w.run.remote(t0) for w in workers]
    learner_run = learner.run.remote(t0)
    status = "running"
    outcome: dict[str, Any] = {}
    try:
        while True:
            ready, _ = ray.wait([learner_run], timeout=flush_s)
            tables = ray.get(coordinator.snapshot.remote())
            _write_tables(out, tables)
            trained = tables["steps"].height
            if on_progress is not None:
                on_progress(trained, cfg.steps)
            if ready:
                outcome = ray.get(learner_run)
                break
        ray.get(coordinator.stop.remote())
        ray.get(worker_runs, timeout=60)
        status = "collapsed" if outcome.get("collapse_reason") else "finished"
    finally:
        try:
            ray.get(coordinator.stop.remote(), timeout=10)
            tables = ray.get(coordinator.snapshot.remote(), timeout=60)
            _write_tables(out, tables)
        finally:
            for actor in [*workers, learner, coordinator]:
                ray.kill(actor)
            if started_ray:
                ray.shutdown()
    steps = tables["steps"]
    figures = run_figures(
        tables["samples"], steps, tables["busy"], cfg.prompts_per_step * cfg.samples_per_prompt
    )
    summary = {
        "status": status,
        "preset": config.preset,
        "mode": config.algorithm.mode,
        "max_staleness": config.algorithm.max_staleness,
        "lr": config.lr,
        "seed": config.seed,
        "steps_planned": cfg.steps,
        "steps_done": steps.height,
        "collapse_reason": outcome.get("collapse_reason"),
        "wall_s": time.perf_counter() - started,
        "run_s": float(steps["end_s"].max()) if steps.height else 0.0,
        "ray_address": address or "local",
        # throughput, staleness (mean, p50, p90, max) and overlap over the steady-state window
        "figures": figures,
    }
    return summary
