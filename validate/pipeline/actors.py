"""The pipeline's processes: rollout workers and the learner, each a loop run as a Ray actor.

A rollout worker is one :class:`~stalesim.validate.pipeline.engine.ContinuousBatchEngine`. Each
turn of its loop it reports to the coordinator (its version, finished and preempted samples,
timings) and gets samples to admit and the newest published weights; it loads the weights when
the mode allows (drained, or at once for in-flight updates), prefills what it admitted, and runs
one decode iteration. A turn's time, less the prefill and the weight load, is the decode
iteration's time in the timing table: what the engine really spends per iteration, its
scheduling included.

The learner takes batches from the coordinator, trains
(:class:`~stalesim.validate.pipeline.learner.PipelineLearner`) and publishes the new weights
into Ray's object store; workers fetch them from there.
"""

from __future__ import annotations

import time
from typing import Any

import ray
import torch
from stalesim.validate.pipeline.config import PipelineConfig
from stalesim.validate.pipeline.engine import ContinuousBatchEngine, Sequence
from stalesim.validate.pipeline.learner import PipelineLearner, weights_digest
from stalesim.validate.train.trainer import resolve_device
from stalesim.validate.train.warm_start import build_policy


class RolloutWorker:
    """One engine and its loop (wrapped by ``ray.remote`` in :func:`actor_classes`)."""

    def __init__(
        self,
        config: PipelineConfig,
        index: int,
        warm_state: dict[str, torch.Tensor],
        coordinator: Any,
        t0: float,
    ) -> None:
        torch.set_num_threads(config.torch_threads)
        self.config = config
        self.index = index
        self.coordinator = coordinator
        self.t0 = t0
        cfg = config.train
        self.device = resolve_device(cfg.device)
        self.task = cfg.task.build()
        policy = build_policy(cfg.policy, self.task, config.seed).to(self.device)
        policy.load_state_dict(warm_state)
        policy.requires_grad_(False)
        generator = torch.Generator(device=self.device).manual_seed(config.seed * 1000 + index)
        self.engine = ContinuousBatchEngine(
            policy, self.task, config.max_num_seqs, temperature=cfg.temperature, generator=generator
        )

    def now(self) -> float:
        return time.time() - self.t0

    def _rewards(self, done: list[Sequence]) -> list[float]:
        task = self.task
        digits = torch.tensor([task.config.digits_of(s.prompt) for s in done], dtype=torch.long)
        responses = torch.full((len(done), task.max_response_len), task.pad_id, dtype=torch.long)
        for i, s in enumerate(done):
            responses[i, : len(s.tokens)] = torch.tensor(s.tokens)
        return task.rewards(digits, responses).tolist()

    def ready(self) -> bool:
        return True

    def run(self, t0: float) -> int:
        """Serve until the coordinator says stop; returns the decode iterations run."""
        self.t0 = t0
        engine, index = self.engine, self.index
        inflight = self.config.algorithm.inflight_updates
        epoch = 0
        finished: list[dict[str, Any]] = []
        parked: list[dict[str, Any]] = []
        timings: dict[str, list[tuple]] = {"decode": [], "prefill": [], "sync": [], "busy": []}
        span_start: float | None = None
        iterations = 0
        seen: dict[int, float] = {}  # version -> when this engine first heard of it
        loaded: tuple | None = None  # the last load, until the next exchange reports it
        while True:
            turn = time.perf_counter()
            idle = engine.live_count == 0
            reply = ray.get(
                self.coordinator.exchange.remote(
                    index,
                    engine.version,
                    epoch,
                    engine.free_slots,
                    engine.live_count,
                    finished,
                    parked,
                    timings,
                    idle,
                )
            )
            if idle:
                turn = time.perf_counter()  # time spent waiting for work is not decode time
            finished, parked = [], []
            timings = {"decode": [], "prefill": [], "sync": [], "busy": []}
            if loaded is not None:
                # the weights count as synced once the coordinator has heard of them
                timings["sync"].append((*loaded, self.now()))
                loaded = None
            if reply["weights"] is not None and reply["weights"][0] not in seen:
                seen[reply["weights"][0]] = self.now()
            if reply["stop"]:
                if span_start is not None:
                    self.coordinator.exchange.remote(
                        index,
                        engine.version,
                        epoch,
                        0,
                        0,
                        [],
                        [],
                        {"busy": [("rollout", index, "decode", span_start, self.now())]},
                        False,
                    )
                return iterations
            stall = 0.0
            if reply["preempt"]:
                parked = [
                    {
                        "sample_id": s.sample_id,
                        "tokens": s.tokens,
                        "logps": s.logps,
                        "versions": s.versions,
                    }
                    for s in engine.preempt()
                ]
                epoch = reply["epoch"]
            if reply["weights"] is not None and (inflight or engine.live_count == 0):
                version, handle = reply["weights"]
                t_load, start = time.perf_counter(), self.now()
                state = ray.get(handle[0])
                engine.load(state, version)
                digest = weights_digest(engine.policy.state_dict())
                load_s = time.perf_counter() - t_load
                stall += load_s
                loaded = (index, version, seen.pop(version, start), start, start + load_s, digest)
                timings["busy"].append(("rollout", index, "sync", start, start + load_s))
            if reply["admit"]:
                t_fill, start = time.perf_counter(), self.now()
                tokens = engine.admit(
                    [
                        Sequence(
                            w["sample_id"],
                            w["prompt"],
                            list(w["tokens"]),
                            list(w["logps"]),
                            list(w["versions"]),
                        )
                        for w in reply["admit"]
                    ]
                )
                fill_s = time.perf_counter() - t_fill
                stall += fill_s
                timings["prefill"].append((index, tokens, fill_s, start))
            if engine.live_count:
                if span_start is None:
                    span_start = self.now()
                live, context = engine.live_count, engine.context_tokens()
                done = engine.step()
                iterations += 1
                finish = self.now()
                if done:
                    for s, reward in zip(done, self._rewards(done), strict=True):
                        finished.append(
                            {
                                "sample_id": s.sample_id,
                                "prompt": s.prompt,
                                "tokens": s.tokens,
                                "logps": s.logps,
                                "versions": s.versions,
                                "reward": reward,
                                "finish_s": finish,
                            }
                        )
                seconds = time.perf_counter() - turn - stall
                timings["decode"].append((index, live, context, seconds, finish))
                if engine.live_count == 0:
                    # the span ends with its last iteration, not after the report that follows
                    # (under load that round trip would read as decoding beside the learner)
                    timings["busy"].append(("rollout", index, "decode", span_start, finish))
                    span_start = None
            elif span_start is not None:
                timings["busy"].append(("rollout", index, "decode", span_start, self.now()))
                span_start = None


class Learner:
    """The learner's loop (wrapped by ``ray.remote`` in :func:`actor_classes`)."""

    def __init__(
        self,
        config: PipelineConfig,
        warm_state: dict[str, torch.Tensor],
        coordinator: Any,
        t0: float,
    ) -> None:
        torch.set_num_threads(config.torch_threads)
        self.config = config
        self.coordinator = coordinator
        self.core = PipelineLearner(config, warm_state, t0)

    def _publish(self, version: int, state: dict[str, torch.Tensor]) -> None:
        ref = ray.put(state)
        # a list keeps the reference a reference: Ray would resolve a bare ObjectRef argument
        ray.get(
            self.coordinator.publish.remote(version, [ref], self.core.now(), weights_digest(state))
        )

    def ready(self) -> bool:
        return True

    def run(self, t0: float) -> dict[str, Any]:
        """Train every step (or until a collapse); returns how it ended."""
        core = self.core
        core.t0 = t0
        self._publish(0, core.state())
        free_since = core.now()
        collapse = None
        bookkeeping_s = 0.0
        for step in range(self.config.train.steps):
            waited_s, t_take = 0.0, time.perf_counter()
            while True:
                batch = ray.get(self.coordinator.take_batch.remote(step, 1.0))
                if batch is not None:
                    waited_s += batch["waited_s"]
                    break
                waited_s += 1.0
                if ray.get(self.coordinator.progress.remote())["stopped"]:
                    return {"steps_done": step, "collapse_reason": None, "stopped": True}
            # asking for the batch costs a round trip even when it is there: learner overhead
            call_s = max(0.0, time.perf_counter() - t_take - waited_s)
            row, timing, busy = core.step(
                step, batch, waited_s, self._publish, extra_overhead_s=bookkeeping_s + call_s
            )
            busy.insert(0, ("learner", 0, "wait", free_since, free_since + waited_s))
            t_book = time.perf_counter()
            ray.get(self.coordinator.step_done.remote(row, timing, busy, batch["groups"]))
            bookkeeping_s = time.perf_counter() - t_book
            free_since = core.now()
            if row["collapse_reason"] is not None:
                collapse = row["collapse_reason"]
                return {"steps_done": step + 1, "collapse_reason": collapse, "stopped": False}
        return {"steps_done": self.config.train.steps, "collapse_reason": None, "stopped": False}


def actor_classes() -> tuple[Any, Any, Any]:
    """The coordinator, worker and learner as Ray actor classes."""
    from stalesim.validate.pipeline.coordinator import Coordinator

    return (
        ray.remote(max_concurrency=16)(Coordinator),
        ray.remote(RolloutWorker),
        ray.remote(Learner),
    )
