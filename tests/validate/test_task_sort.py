"""The sorting task's reward on hand-made answers."""

from __future__ import annotations

import pytest
import torch
from stalesim.validate.train.tasks import SortTask, SortTaskConfig

TASK = SortTask(SortTaskConfig(n_digits=4, base=10))
E, P = TASK.eos_id, TASK.pad_id
DIGITS = torch.tensor([[3, 1, 2, 1]])  # sorted: 1 1 2 3


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ([1, 1, 2, 3, E], 1.0),  # perfect
        ([1, 1, 3, 2, E], 0.5),  # last two swapped
        ([1, 1, 2, 9, E], 0.75),  # one wrong digit
        ([1, 1, 2, E, P], 0.75),  # one digit missing
        ([E, P, P, P, P], 0.0),  # empty answer
        ([3, 2, 1, 1, E], 0.0),  # reversed: no position right
        ([1, 1, 2, 3, 3], 0.8),  # no end token: 4 right out of 5 emitted
        ([1, 1, 2, 3, E, 7], 1.0),  # tokens after the end token do not count
    ],
)
def test_reward_on_hand_made_answers(response: list[int], expected: float) -> None:
    reward = TASK.rewards(DIGITS, torch.tensor([response]))
    assert reward.item() == pytest.approx(expected)


def test_solutions_score_one_and_rewards_stay_in_unit_interval() -> None:
    generator = torch.Generator().manual_seed(0)
    digits = TASK.sample_digits(256, generator)
    assert torch.all(TASK.rewards(digits, TASK.solutions(digits)) == 1.0)
    noise = torch.randint(0, TASK.vocab_size, (256, TASK.max_response_len), generator=generator)
    rewards = TASK.rewards(digits, noise)
    assert torch.all((rewards >= 0) & (rewards <= 1))
    assert rewards.mean() < 0.5


def test_prompts_end_with_separator_and_hold_the_digits() -> None:
    prompts = TASK.prompts(DIGITS)
    assert prompts.tolist() == [[3, 1, 2, 1, TASK.sep_id]]
    assert prompts.shape[1] == TASK.prompt_len
