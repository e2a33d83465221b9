"""The GRPO loss options, in one frozen object.

:class:`GRPOOptions` is what the reference (:func:`stalesim.kernels.reference.grpo_loss_ref`),
the input checks, the Triton wrapper (:func:`stalesim.kernels.grpo_loss`) and the training
config (``stalesim.validate.train.presets.GRPOConfig``, whose fields are generated from this class)
all take. A new option is one field here, its check in ``__post_init__``, and its use in the
reference and the kernel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stalesim.kernels.checks import require_choice, require_number

RATIO_LEVELS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k2", "k3")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "constant")


@dataclass(frozen=True)
class GRPOOptions:
    """How the GRPO loss treats a batch; see :func:`reference.grpo_loss_ref` for the math.

    Attributes:
        eps_low: lower clip range, in [0, 1]: ratios below ``1 - eps_low`` are clipped.
        eps_high: upper clip range, >= 0 (DAPO's clip-higher sets it above ``eps_low``).
        is_cap: truncate the importance weights at this (> 0), or ``None`` for no truncation.
        ratio_level: ``"token"`` (PPO/GRPO) or ``"sequence"`` (GSPO, length-normalised).
        kl_estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (Schulman's estimators of the KL to the
            reference policy); used when ``beta > 0`` and reported in the statistics.
        beta: weight of the KL penalty, >= 0 (``> 0`` needs ``ref_logp``).
        aggregation: ``"token_mean"`` (DAPO), ``"seq_mean_token_mean"`` (GRPO) or
            ``"constant"`` (Dr. GRPO).
        max_tokens: the constant of ``"constant"`` aggregation (default: the padded length L);
            only allowed with it.

    Raises:
        ValueError: on construction, naming the option, its value and what is allowed.
    """

    eps_low: float = 0.2
    eps_high: float = 0.2
    is_cap: float | None = None
    ratio_level: Literal["token", "sequence"] = "token"
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    beta: float = 0.0
    aggregation: Literal["token_mean", "seq_mean_token_mean", "constant"] = "token_mean"
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        def normalise(name: str, value: float) -> None:
            object.__setattr__(self, name, value)

        normalise("eps_low", require_number("eps_low", self.eps_low, minimum=0.0, maximum=1.0))
        normalise("eps_high", require_number("eps_high", self.eps_high, minimum=0.0))
        if self.is_cap is not None:
            normalise("is_cap", require_number("is_cap", self.is_cap, strictly_positive=True))
        require_choice("ratio_level", self.ratio_level, RATIO_LEVELS)
        require_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        normalise("beta", require_number("beta", self.beta, minimum=0.0))
        require_choice("aggregation", self.aggregation, AGGREGATIONS)
        max_tokens = self.max_tokens
        if max_tokens is not None:
            if self.aggregation != "constant":
                raise ValueError(
                    f"max_tokens={max_tokens}: only used by aggregation='constant', "
                    f"got aggregation={self.aggregation!r}"
                )
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
                raise ValueError(f"max_tokens={max_tokens!r}: expected a positive integer")

    def replace(self, **changes: Any) -> GRPOOptions:
        """A copy with ``changes`` applied (checked like a new object)."""
        unknown = sorted(set(changes) - set(option_names()))
        if unknown:
            raise ValueError(
                f"{unknown[0]}: not a GRPO option; expected one of {', '.join(option_names())}"
            )
        return dataclasses.replace(self, **changes)


def option_names() -> tuple[str, ...]:
    """The names of the GRPO options, in declaration order."""
    return tuple(f.name for f in dataclasses.fields(GRPOOptions))


def resolve_options(options: GRPOOptions | None, overrides: Mapping[str, Any]) -> GRPOOptions:
    """``options`` (default: ``GRPOOptions()``) with keyword ``overrides`` applied, so that
    ``grpo_loss(..., eps_high=0.28)`` and ``grpo_loss(..., options=GRPOOptions(eps_high=0.28))``
    mean the same."""
    if options is not None and not isinstance(options, GRPOOptions):
        raise ValueError(f"options: expected a GRPOOptions, got {type(options).__name__}")
    base = options if options is not None else GRPOOptions()
    return base.replace(**overrides) if overrides else base
