"""The task family: sort a list of digits, with a verifiable reward and partial credit.

A prompt is ``n_digits`` random digits in ``0..base-1`` followed by a separator token; the right
answer is the same digits in ascending order followed by an end-of-sequence token. Everything is
generated on the fly from a ``torch.Generator``, so nothing is downloaded and a seed fixes the
data. Difficulty grows with ``n_digits`` (longer answers) and ``base`` (fewer repeated digits).

Reward (in ``[0, 1]``): the answer is the tokens before the first end-of-sequence token. It earns
one point per position that holds the right digit, divided by ``max(len(answer), n_digits)``, so a
perfect answer scores 1, every wrong or missing position costs ``1/n_digits``, and padding an
answer with extra tokens is penalised too.

``vocab_size`` may enlarge the policy's vocabulary far past the task's ``base + 3`` tokens: the
extra tokens are valid outputs that always score as wrong digits, and the warm start teaches
the policy to leave them alone. ``gpu-small`` uses this so that training runs the fused
log-prob kernel at tens of thousands of vocabulary columns, as an LLM would.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from stalesim.common.config_file import StrictModel


class SortTaskConfig(StrictModel):
    """Which sorting problems are drawn."""

    n_digits: int = Field(6, ge=2, le=64, description="digits per prompt (and per answer)")
    base: int = Field(10, ge=2, le=64, description="digits are drawn from 0..base-1")
    vocab_size: int | None = Field(
        None,
        le=1_000_000,
        description="total vocabulary of the policy (default: base + 3, the task's own tokens); "
        "the tokens past those are never in a prompt or an answer, so a large value only makes "
        "the output projection and the log-prob kernels run at an LLM-like vocabulary size",
    )

    @model_validator(mode="after")
    def _room_for_the_task(self) -> SortTaskConfig:
        needed = self.base + 3
        if self.vocab_size is not None and self.vocab_size < needed:
            raise ValueError(
                f"vocab_size={self.vocab_size}: must be at least base + 3 = {needed} "
                "(the digits, separator, end-of-sequence and padding tokens)"
            )
        return self


class SortTask:
    """Token layout, prompt generation and reward for one :class:`SortTaskConfig`."""

    def __init__(self, config: SortTaskConfig) -> None:
        self.config = config
        self.n_digits = config.n_digits
        self.sep_id = config.base
        self.eos_id = config.base + 1
        self.pad_id = config.base + 2
        #: tokens ``base + 3`` and up exist in the policy's vocabulary but never in the task
        self.vocab_size = config.vocab_size or config.base + 3
        self.prompt_len = config.n_digits + 1
        #: an answer has room for every digit and the end-of-sequence token
        self.max_response_len = config.n_digits + 1

    def sample_digits(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` problems: a ``[n, n_digits]`` tensor of random digits."""
        return torch.randint(
            0, self.config.base, (n, self.n_digits), generator=generator, dtype=torch.long
        )

    def prompts(self, digits: torch.Tensor) -> torch.Tensor:
        """The ``[n, prompt_len]`` prompt tokens: the digits, then the separator."""
        sep = torch.full((digits.shape[0], 1), self.sep_id, dtype=torch.long)
        return torch.cat([digits, sep], dim=1)

    def solutions(self, digits: torch.Tensor) -> torch.Tensor:
        """The ``[n, max_response_len]`` correct responses: sorted digits, then end-of-sequence."""
        eos = torch.full((digits.shape[0], 1), self.eos_id, dtype=torch.long)
        return torch.cat([digits.sort(dim=1).values, eos], dim=1)

    def rewards(self, digits: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        """Reward in ``[0, 1]`` of each response (``[n, T]`` tokens) to each problem."""
        n, width = responses.shape
        target = digits.sort(dim=1).values
        is_eos = responses == self.eos_id
        has_eos = is_eos.any(dim=1)
        first_eos = torch.where(
            has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, width, dtype=torch.long)
        )
        answer_len = first_eos
        positions = torch.arange(width).expand(n, width)
        in_answer = positions < answer_len[:, None]
        # Compare position by position over the first n_digits slots of the answer.
        overlap = min(width, self.n_digits)
        correct = (responses[:, :overlap] == target[:, :overlap]) & in_answer[:, :overlap]
        denominator = torch.clamp(answer_len, min=self.n_digits).to(torch.float32)
        return correct.sum(dim=1).to(torch.float32) / denominator
