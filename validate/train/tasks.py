"""The task families: problems made of random digits, with a verifiable reward.

Two families share one shape. A problem is ``problem_width`` random digits in ``0..base-1``;
its prompt ends with a separator token; the right answer is ``answer_digits`` digits followed by
an end-of-sequence token. Everything is generated on the fly from a ``torch.Generator``, so
nothing is downloaded and a seed fixes the data.

* ``sort`` (:class:`SortTask`): sort ``n_digits`` digits. Partial credit: one point per position
  that holds the right digit, divided by ``max(len(answer), n_digits)``.
* ``add`` (:class:`AddTask`): add two ``n_digits``-digit numbers, written least significant digit
  first (the order in which a left-to-right model can carry). Binary exact-match reward, as
  verifiable-reward RL uses: 1 iff the whole ``n_digits + 1``-digit sum is right and then ends,
  else 0. No partial credit, so a group learns only where some samples pass and some fail.

``vocab_size`` may enlarge the policy's vocabulary far past the task's own tokens: the extra
tokens are valid outputs that always score as wrong digits, and the warm start teaches the
policy to leave them alone. ``gpu-small`` uses this so that training runs the fused log-prob
kernel at tens of thousands of vocabulary columns, as an LLM would.

A task family is one config class in :mod:`stalesim.validate.train.task_configs` (a ``kind`` tag, its
shape, ``build()``) and one task class here; the trainer, warm start, pipeline and memory
estimate read only the shape above.
"""

from __future__ import annotations

import torch
from stalesim.validate.train.task_configs import (
    AddTaskConfig,
    SortTaskConfig,
    TaskConfig,
    task_config,
)

__all__ = [
    "AddTask",
    "AddTaskConfig",
    "DigitTask",
    "SortTask",
    "SortTaskConfig",
    "TaskConfig",
    "task_config",
]


class DigitTask:
    """Token layout and prompt generation shared by the families; a subclass gives the answer
    and the reward."""

    def __init__(self, config: SortTaskConfig | AddTaskConfig) -> None:
        self.config = config
        self.n_digits = config.n_digits
        self.sep_id = config.base
        self.eos_id = config.base + 1
        self.pad_id = config.base + 2
        #: tokens past the family's own exist in the policy's vocabulary but never in the task
        self.vocab_size = config.vocab
        self.problem_width = config.problem_width
        self.answer_digits = config.answer_digits
        self.prompt_len = config.prompt_len
        #: an answer has room for every digit and the end-of-sequence token
        self.max_response_len = config.response_len

    def sample_digits(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` problems: a ``[n, problem_width]`` tensor of random digits."""
        return torch.randint(
            0, self.config.base, (n, self.problem_width), generator=generator, dtype=torch.long
        )

    def prompts(self, digits: torch.Tensor) -> torch.Tensor:
        """The ``[n, prompt_len]`` prompt tokens."""
        raise NotImplementedError

    def answers(self, digits: torch.Tensor) -> torch.Tensor:
        """The ``[n, answer_digits]`` right answers."""
        raise NotImplementedError

    def solutions(self, digits: torch.Tensor) -> torch.Tensor:
        """The ``[n, max_response_len]`` correct responses: the answer, then end-of-sequence."""
        eos = torch.full((digits.shape[0], 1), self.eos_id, dtype=torch.long)
        return torch.cat([self.answers(digits), eos], dim=1)

    def rewards(self, digits: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Reward in ``[0, 1]`` of each response (``[n, T]`` tokens) to each problem."""
        raise NotImplementedError

    def _answer_lengths(self, responses: torch.Tensor) -> torch.Tensor:
        """Tokens before each response's first end-of-sequence token (all of them if none)."""
        width = responses.shape[1]
        is_eos = responses == self.eos_id
        has_eos = is_eos.any(dim=1)
        return torch.where(
            has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, width, dtype=torch.long)
        )


class SortTask(DigitTask):
    """Sort ``n_digits`` digits; partial credit per position."""

    def prompts(self, digits: torch.Tensor) -> torch.Tensor:
        sep = torch.full((digits.shape[0], 1), self.sep_id, dtype=torch.long)
        return torch.cat([digits, sep], dim=1)

    def answers(self, digits: torch.Tensor) -> torch.Tensor:
        return digits.sort(dim=1).values

    def rewards(self, digits: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        n, width = responses.shape
        target = self.answers(digits)
        answer_len = self._answer_lengths(responses)
        positions = torch.arange(width).expand(n, width)
        in_answer = positions < answer_len[:, None]
        # Compare position by position over the first n_digits slots of the answer.
        overlap = min(width, self.n_digits)
        correct = (responses[:, :overlap] == target[:, :overlap]) & in_answer[:, :overlap]
        denominator = torch.clamp(answer_len, min=self.n_digits).to(torch.float32)
        return correct.sum(dim=1).to(torch.float32) / denominator


class AddTask(DigitTask):
    """Add two ``n_digits``-digit numbers, least significant digit first; exact match."""

    def __init__(self, config: AddTaskConfig) -> None:
        super().__init__(config)
        self.plus_id = config.base + 3

    def prompts(self, digits: torch.Tensor) -> torch.Tensor:
        n = digits.shape[0]
        plus = torch.full((n, 1), self.plus_id, dtype=torch.long)
        sep = torch.full((n, 1), self.sep_id, dtype=torch.long)
        return torch.cat([digits[:, : self.n_digits], plus, digits[:, self.n_digits :], sep], dim=1)

    def answers(self, digits: torch.Tensor) -> torch.Tensor:
        base, width = self.config.base, self.n_digits
        a, b = digits[:, :width], digits[:, width:]
        carry = torch.zeros(digits.shape[0], dtype=torch.long)
        out = []
        for i in range(width):  # least significant digit first: the carry moves rightwards
            total = a[:, i] + b[:, i] + carry
            out.append(total % base)
            carry = total // base
        out.append(carry)
        return torch.stack(out, dim=1)

    def rewards(self, digits: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        target = self.answers(digits)
        length = self.answer_digits
        if responses.shape[1] < length:
            return torch.zeros(responses.shape[0])
        right_length = self._answer_lengths(responses) == length
        right_digits = (responses[:, :length] == target).all(dim=1)
        return (right_length & right_digits).to(torch.float32)
