"""The pipeline's rollout engine: continuous batching over a per-slot KV cache gives the
policy's own log-probs, whatever joins, leaves or is preempted between iterations."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from stalesim.validate.pipeline.engine import ContinuousBatchEngine, Sequence  # noqa: E402
from stalesim.validate.train.policy import Policy, PolicyConfig  # noqa: E402
from stalesim.validate.train.tasks import SortTask, SortTaskConfig  # noqa: E402


def _policy_logps(policy: Policy, task: SortTask, seq: Sequence) -> torch.Tensor:
    ids = torch.tensor([seq.prompt + seq.tokens])
    logits = policy(ids[:, :-1])[0, task.prompt_len - 1 :]
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(seq.tokens)[:, None]).squeeze(1)


def test_continuous_batching_matches_the_policy_forward_with_joins_and_preemption() -> None:
    torch.manual_seed(0)
    task = SortTask(SortTaskConfig(n_digits=5, base=7))
    policy = Policy(PolicyConfig(n_layer=2, n_head=2, n_embd=16), task.vocab_size, 13)
    other = Policy(PolicyConfig(n_layer=2, n_head=2, n_embd=16), task.vocab_size, 13)
    generator = torch.Generator().manual_seed(3)
    engine = ContinuousBatchEngine(policy, task, 6, temperature=1.0, generator=generator)
    prompts = task.prompts(task.sample_digits(23, generator)).tolist()
    waiting = [Sequence(i, p) for i, p in enumerate(prompts)]
    done: list[Sequence] = []
    iteration = 0
    live_seen = set()
    while waiting or engine.live_count:
        take = min(engine.free_slots, 1 + iteration % 3, len(waiting))
        if take:
            prefilled = engine.admit([waiting.pop(0) for _ in range(take)])
            assert prefilled >= take * task.prompt_len
        if iteration == 4:  # partial rollout: preempt, resume later with their tokens
            parked = engine.preempt()
            assert engine.live_count == 0 and engine.free_slots == 6
            waiting = parked + waiting
        live_seen.add(engine.live_count)
        context = engine.context_tokens()
        assert context == sum(len(s.prompt) + len(s.tokens) for s in engine.live.values())
        done += engine.step()
        iteration += 1
    assert sorted(s.sample_id for s in done) == list(range(23))
    assert len(live_seen) > 2  # the live set really changed size between iterations
    for seq in done:
        assert len(seq.tokens) == len(seq.logps) == len(seq.versions)
        assert seq.tokens[-1] == task.eos_id or len(seq.tokens) == task.max_response_len
        torch.testing.assert_close(
            _policy_logps(policy, task, seq), torch.tensor(seq.logps), atol=1e-5, rtol=0
        )
    # new weights between iterations (in flight): the KV cache is kept, later tokens carry the
    # new version; the token drawn before the switch has the old weights' log-prob
    original = Policy(PolicyConfig(n_layer=2, n_head=2, n_embd=16), task.vocab_size, 13)
    original.load_state_dict(policy.state_dict())
    seq = Sequence(99, prompts[0])
    engine.admit([seq])
    engine.step()
    engine.load(other.state_dict(), version=1)
    while engine.live_count:
        engine.step()
    assert seq.versions[0] == 0 and set(seq.versions[1:]) == {1}
    with torch.no_grad():
        first = float(_policy_logps(original, task, seq)[0])
    assert first == pytest.approx(seq.logps[0], abs=1e-5)
