"""The task families' configs: which problems are drawn, told apart by ``kind``.

Pure configuration (no torch), so that reading a stored run's task (a law's label, a sweep's
README, the memory estimate) needs no training stack. Each config's ``build()`` gives its task
(:mod:`stalesim.validate.train.tasks`: prompts, answers and reward). A new family is one config class
here (a ``kind`` tag, its shape properties, ``label``, ``build()``) and its entry in
:data:`TaskConfig`, plus one task class in :mod:`stalesim.validate.train.tasks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, TypeAdapter, model_validator
from stalesim.common.config_file import StrictModel

if TYPE_CHECKING:
    from stalesim.validate.train.tasks import AddTask, SortTask


class _DigitTaskConfig(StrictModel):
    """Fields every digit task has."""

    n_digits: int = Field(6, ge=2, le=64, description="digits per number (sort: per prompt)")
    base: int = Field(10, ge=2, le=64, description="digits are drawn from 0..base-1")
    vocab_size: int | None = Field(
        None,
        le=1_000_000,
        description="total vocabulary of the policy (default: the task's own tokens); the "
        "tokens past those are never in a prompt or an answer, so a large value only makes "
        "the output projection and the log-prob kernels run at an LLM-like vocabulary size",
    )

    #: tokens past the digits: separator, end-of-sequence, padding (and any of the family's own)
    extra_tokens: ClassVar[int] = 3

    @model_validator(mode="after")
    def _room_for_the_task(self) -> _DigitTaskConfig:
        needed = self.base + self.extra_tokens
        if self.vocab_size is not None and self.vocab_size < needed:
            raise ValueError(
                f"vocab_size={self.vocab_size}: must be at least base + {self.extra_tokens} = "
                f"{needed} (the digits and the task's own tokens)"
            )
        return self

    @property
    def vocab(self) -> int:
        """The policy's vocabulary size."""
        return self.vocab_size or self.base + self.extra_tokens

    @property
    def problem_width(self) -> int:
        """Random digits per problem."""
        raise NotImplementedError

    @property
    def answer_digits(self) -> int:
        """Digits in a right answer (before its end-of-sequence token)."""
        raise NotImplementedError

    @property
    def prompt_len(self) -> int:
        """Tokens per prompt."""
        raise NotImplementedError

    @property
    def response_len(self) -> int:
        """Tokens a response has room for: the answer's digits and the end-of-sequence token."""
        return self.answer_digits + 1

    @property
    def label(self) -> str:
        """The task in words, for a law's label and a sweep's README."""
        raise NotImplementedError

    @property
    def reward_label(self) -> str:
        """The reward in words."""
        raise NotImplementedError

    def prompt_of(self, digits: list[int]) -> list[int]:
        """The prompt tokens of one problem (pure Python: the pipeline's coordinator uses it)."""
        raise NotImplementedError

    def digits_of(self, prompt: list[int]) -> list[int]:
        """The problem's digits read back from its prompt (inverse of :meth:`prompt_of`)."""
        raise NotImplementedError


class SortTaskConfig(_DigitTaskConfig):
    """Which sorting problems are drawn."""

    # excluded from the config's dump, so a sort config hashes (run ids, warm-start cache) as
    # it did before tasks had kinds
    kind: Literal["sort"] = Field("sort", exclude=True, description="sort the digits")

    @property
    def problem_width(self) -> int:
        return self.n_digits

    @property
    def answer_digits(self) -> int:
        return self.n_digits

    @property
    def prompt_len(self) -> int:
        return self.n_digits + 1

    @property
    def label(self) -> str:
        return f"sort {self.n_digits} digits of base {self.base}"

    @property
    def reward_label(self) -> str:
        return "fraction of right positions (partial credit)"

    def prompt_of(self, digits: list[int]) -> list[int]:
        return [*digits, self.base]

    def digits_of(self, prompt: list[int]) -> list[int]:
        return list(prompt[:-1])

    def build(self) -> SortTask:
        from stalesim.validate.train.tasks import SortTask

        return SortTask(self)


class AddTaskConfig(_DigitTaskConfig):
    """Which addition problems are drawn: two ``n_digits``-digit numbers (leading zeros allowed)."""

    kind: Literal["add"] = Field(description="add two numbers; binary exact-match reward")
    #: the plus sign between the two numbers
    extra_tokens: ClassVar[int] = 4

    @property
    def problem_width(self) -> int:
        return 2 * self.n_digits

    @property
    def answer_digits(self) -> int:
        return self.n_digits + 1

    @property
    def prompt_len(self) -> int:
        return 2 * self.n_digits + 2

    @property
    def label(self) -> str:
        return f"add two {self.n_digits}-digit base-{self.base} numbers"

    @property
    def reward_label(self) -> str:
        return "1 iff the whole sum is exactly right, else 0 (exact match)"

    def prompt_of(self, digits: list[int]) -> list[int]:
        n = self.n_digits
        return [*digits[:n], self.base + 3, *digits[n:], self.base]

    def digits_of(self, prompt: list[int]) -> list[int]:
        n = self.n_digits
        return [*prompt[:n], *prompt[n + 1 : 2 * n + 1]]

    def build(self) -> AddTask:
        from stalesim.validate.train.tasks import AddTask

        return AddTask(self)


def _task_kind(value: Any) -> str:
    # a config without a kind is a sort task: every config written before kinds existed
    if isinstance(value, dict):
        return value.get("kind", "sort")
    return getattr(value, "kind", "sort")


TaskConfig = Annotated[
    Annotated[SortTaskConfig, Tag("sort")] | Annotated[AddTaskConfig, Tag("add")],
    Discriminator(
        _task_kind,
        custom_error_type="task_kind",
        custom_error_message="kind must be one of: sort, add",
    ),
]
"""A task family's config, told apart by ``kind`` (``sort`` when absent)."""

TASK_KINDS = ("sort", "add")

_TASK_ADAPTER: TypeAdapter[Any] = TypeAdapter(TaskConfig)


def task_config(data: dict[str, Any]) -> SortTaskConfig | AddTaskConfig:
    """The task config a stored run config's ``train.task`` section describes (validated)."""
    return _TASK_ADAPTER.validate_python(data)
