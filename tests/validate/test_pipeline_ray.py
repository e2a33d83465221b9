"""The real pipeline on Ray: staleness bounds, no sample lost or counted twice, and the weights
an engine uses are exactly the version it reports. A few short runs share one local Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import polars as pl
import pytest

pytest.importorskip("torch")

from stalesim.validate.pipeline.config import PipelineConfig

B, G, STEPS = 4, 2, 5


def tiny(mode: str, slots: int = 3, **algorithm) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "preset": "test",
            "train": {
                "task": {"n_digits": 3, "base": 5},
                "policy": {"n_layer": 1, "n_head": 2, "n_embd": 16},
                "warm_start": {"steps": 10, "batch_size": 32},
                "steps": STEPS,
                "prompts_per_step": B,
                "samples_per_prompt": G,
                "warmup_steps": 1,
            },
            "algorithm": {
                "mode": mode,
                "old_logprob_pass": False,
                "reference_model": False,
                **algorithm,
            },
            "rollout_workers": 1,
            "max_num_seqs": slots,  # below B*G: a batch spans several admissions
        }
    )


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    from stalesim.validate.pipeline.run import run_pipeline

    configs = {
        "sync": tiny("sync", slots=B * G),
        "one_step": tiny("one_step"),
        "async": tiny("async", max_staleness=1),
        "partial_rollout": tiny("partial_rollout"),
    }  # fmt: skip
    out = {}
    for name, config in configs.items():
        folder = tmp_path_factory.mktemp(name)
        summary = run_pipeline(config, folder, flush_s=0.5)
        tables = {
            t: pl.read_parquet(folder / f"{t}.parquet")
            for t in (
                "samples",
                "steps",
                "weights",
                "published",
                "decode_timings",
                "learner_timings",
            )
        }
        out[name] = (config, summary, tables)
    return out


@pytest.mark.xdist_group("ray")
def test_staleness_bounds_hold_in_every_mode(runs) -> None:
    # async's max_staleness limits admission only (the simulator's rule): a slow group may be
    # consumed staler, so its bound is checked at admission time below
    bounds = {"sync": (0, 0), "one_step": (0, 1)}
    for name, (_config, summary, tables) in runs.items():
        assert summary["status"] == "finished" and summary["steps_done"] == STEPS, name
        used = tables["samples"].filter(pl.col("consumed_step").is_not_null())
        lag = used["staleness_max"]
        assert lag.min() >= 0, name
        if name in bounds:
            low, high = bounds[name]
            assert low <= lag.min() and lag.max() <= high, (name, lag.unique().to_list())
        assert (used["staleness_min"] <= used["staleness_mean_tokens"] + 1e-9).all()
        assert (used["staleness_mean_tokens"] <= used["staleness_max"] + 1e-9).all()
    one_step = runs["one_step"][2]["samples"].filter(pl.col("consumed_step") >= 1)
    assert one_step["staleness_max"].max() == 1  # generation really overlapped training


@pytest.mark.xdist_group("ray")
def test_the_summary_has_throughput_staleness_and_overlap(runs) -> None:
    from stalesim.sim.metrics import warmup_steps

    w = warmup_steps(STEPS)
    for name, (_config, summary, tables) in runs.items():
        f = summary["figures"]
        ends = tables["steps"].sort("step")["end_s"].to_numpy()
        span = ends[-1] - ends[w - 1]
        assert f["throughput"]["steps_per_s"] == pytest.approx((STEPS - w) / span), name
        assert f["throughput"]["samples_per_s"] == pytest.approx((STEPS - w) * B * G / span)
        lag = tables["samples"].filter(pl.col("consumed_step") >= w)["staleness_max"]
        s = f["staleness"]
        assert s["mean"] == pytest.approx(lag.mean()) and s["max"] == lag.max(), name
        assert lag.min() <= s["p50"] <= s["p90"] <= s["max"], name
        assert 0.0 <= f["overlap"] <= 1.0, name
    # a synchronous learner trains while the engine waits for its weights; one_step generates
    # the next batch while the learner trains
    assert runs["sync"][1]["figures"]["overlap"] < 0.1
    assert runs["one_step"][1]["figures"]["overlap"] > runs["sync"][1]["figures"]["overlap"]


def engines_oldest_version(weights: pl.DataFrame, engines: int, at_s: float) -> int:
    """The oldest version any engine had loaded by ``at_s`` (0 before its first load)."""
    loaded = weights.filter(pl.col("end_s") <= at_s)
    held = [loaded.filter(pl.col("engine") == e)["version"].max() or 0 for e in range(engines)]
    return min(held)


@pytest.mark.xdist_group("ray")
def test_async_admits_within_the_simulators_limit(runs) -> None:
    """Group ``g`` (nothing dropped: no filter) starts only if ``g // chunk`` is at most
    ``max_staleness`` versions past the oldest weights an engine held then, as the simulator's
    admission (``groups_ahead``: (S + 1) chunks beyond ``m * chunk``); an engine reports a
    version to the coordinator after it finished loading it (``end_s``), so the versions read
    here are never older than the coordinator's."""
    config, _summary, tables = runs["async"]
    s_max, chunk = config.algorithm.max_staleness, B // config.train.minibatches_per_step
    groups = (
        tables["samples"]
        .group_by("group_id")
        .agg(
            pl.col("group_launch_s").first(),
            pl.col("dropped_reason").is_in(["max_staleness", "staleness_filter"]).any(),
        )
        .sort("group_id")
    )
    assert not groups["dropped_reason"].any()  # no filter set: admission only, no drops
    ahead = [
        g // chunk - engines_oldest_version(tables["weights"], config.rollout_workers, t)
        for g, t in zip(groups["group_id"], groups["group_launch_s"], strict=True)
    ]
    assert max(ahead) <= s_max, ahead
    assert max(ahead) == s_max  # the limit was reached: generation ran ahead of the learner


@pytest.mark.xdist_group("ray")
def test_no_sample_is_lost_or_counted_twice(runs) -> None:
    for name, (_config, _summary, tables) in runs.items():
        samples, steps = tables["samples"], tables["steps"]
        assert samples["sample_id"].n_unique() == samples.height
        consumed = samples.filter(pl.col("consumed_step").is_not_null())
        status = samples["dropped_reason"]
        # every launched sample is consumed, dropped with a reason, waiting, or in flight
        assert consumed.height + status.is_not_null().sum() == samples.height, name
        assert consumed["dropped_reason"].is_null().all()
        per_step = consumed.group_by("consumed_step").len().sort("consumed_step")
        assert per_step["consumed_step"].to_list() == list(range(STEPS))
        assert (per_step["len"] == B * G).all(), name
        # the learner counted its batch's tokens itself: the same samples, each once
        tokens = consumed.group_by("consumed_step").agg(
            (pl.col("prompt_tokens") + pl.col("response_tokens")).sum().alias("tokens")
        )
        joined = steps.join(tokens, left_on="step", right_on="consumed_step")
        assert (joined["tokens"] == joined["tokens_right"]).all(), name
        # a sample still generating belongs to a group in flight; a finished one is consumed,
        # dropped, waiting in the buffer, or waiting for the rest of its group
        unfinished = samples.filter(pl.col("finish_s").is_null())
        assert (unfinished["dropped_reason"] == "in_flight").all(), name
        finished = samples.filter(pl.col("finish_s").is_not_null())
        waiting = finished.filter(pl.col("dropped_reason") == "in_flight")
        assert waiting["group_complete_s"].is_null().all(), name


@pytest.mark.xdist_group("ray")
def test_an_engine_uses_exactly_the_published_weights_of_the_version_it_reports(runs) -> None:
    for name, (_config, _summary, tables) in runs.items():
        loads, published = tables["weights"], tables["published"]
        assert loads.height >= 1, name
        joined = loads.join(published, on="version", how="left")
        assert joined["digest_right"].is_not_null().all(), name
        assert (joined["digest"] == joined["digest_right"]).all(), name
        held = {0, *loads["version"].to_list()}
        used = tables["samples"].filter(pl.col("behaviour_version_min").is_not_null())
        assert set(used["behaviour_version_min"].to_list()) <= held
        assert set(used["behaviour_version_max"].to_list()) <= held


@pytest.mark.xdist_group("ray")
def test_the_timing_tables_have_the_shared_interface_columns(runs) -> None:
    _config, _summary, tables = runs["async"]
    decode = tables["decode_timings"]
    assert {"engine", "live_seqs", "context_tokens", "seconds"} <= set(decode.columns)
    assert (decode["live_seqs"] >= 1).all() and (decode["live_seqs"] <= 3).all()
    assert (decode["seconds"] > 0).all()
    learner = tables["learner_timings"]
    assert set(learner["phase"].unique().to_list()) == {"train", "overhead"}
    assert learner.filter(pl.col("phase") == "train").height == STEPS


def test_a_machine_without_ray_gets_one_line_naming_the_extra(tmp_path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["ray"] = None  # makes `import ray` fail as if it were not installed
        from stalesim.cli import main
        sys.argv = ["stalesim", "validate", "pipeline", "--quiet", "--steps", "2",
                    "--out", {str(tmp_path / "run")!r}]
        main()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: this command needs ray")
    assert "pip install -e '.[train]'" in lines[0]
