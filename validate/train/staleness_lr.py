"""A staleness-aware learning-rate scheduler: each optimizer step's learning rate follows the
measured staleness of the batch it trains on, through a fitted staleness–learning-rate law.

:class:`StalenessLR` is a drop-in ``torch.optim.lr_scheduler.LRScheduler``. The one difference
from an ordinary scheduler is *when* it is stepped: the learning rate of an update depends on the
batch that update consumes, so call ``scheduler.step(staleness=...)`` after the batch is known
and **before** ``optimizer.step()``::

    from stalesim.sim.law.model import load_law
    from stalesim.validate.train.staleness_lr import StalenessLR

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)   # the LR you use on-policy
    scheduler = StalenessLR(optimizer, load_law("law.json"))
    for batch in loader:
        loss = compute_loss(model, batch)
        loss.backward()
        # lags of the batch's samples, in optimizer steps (current version - behaviour version)
        scheduler.step(staleness=batch.lags, tokens=batch.token_counts)
        optimizer.step()
        optimizer.zero_grad()

Each group's learning rate is ``base_lr * eta(S) / eta(0)``: the law's *relative* fall with
staleness scales the learning rate you tuned on-policy (``absolute=True`` uses the law's
``eta(S)`` itself, for a setup the law was measured on). ``S`` is one summary of the batch's lags
(``mean``, ``max`` or token-weighted ``token_mean``; by default the law's ``staleness_summary``).

:class:`LRRuleConfig` is how the training config of ``stalesim validate`` picks a rule:
``constant`` (the run's LR), ``law`` (this scheduler, with the curve given in the config), or
``ess`` (the run's LR times ``sqrt(ESS / B)``, ESS the effective sample size of the batch's
importance weights, a rule that needs no law).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from stalesim.common.config_file import StrictModel
from stalesim.sim.law.model import Law, LawCurve, law_curve

Summary = Literal["mean", "max", "token_mean"]


class LRRuleConfig(StrictModel):
    """How each optimizer step's learning rate is set from the run's learning rate ``lr``.

    * ``constant``: ``lr`` (after the linear warm-up);
    * ``law``: ``lr * eta(S) / eta(0)`` with ``eta`` the curve ``eta0, s_c, k, alpha`` and ``S``
      the ``summary`` of the mini-batch's lags (via :class:`StalenessLR`);
    * ``ess``: ``lr * sqrt(ESS / B)``, the normalised effective sample size of the
      mini-batch's token importance weights (current policy vs behaviour), in ``(0, 1]``.
    """

    kind: Literal["constant", "law", "ess"] = "constant"
    eta0: float | None = Field(None, gt=0)
    s_c: float | None = Field(None, gt=0)
    k: float | None = Field(None, gt=0)
    alpha: float | None = Field(None, ge=0)
    summary: Summary = "mean"
    source: str = Field("", description="where the law came from (for the record)")

    @model_validator(mode="after")
    def _law_has_curve(self) -> LRRuleConfig:
        if self.kind == "law":
            missing = [n for n in ("eta0", "s_c", "k", "alpha") if getattr(self, n) is None]
            if missing:
                raise ValueError(f"lr_rule.kind='law' needs {', '.join(missing)}")
        return self

    def curve(self) -> Callable[[float], float]:
        """The law curve ``S -> eta(S)`` of a ``law`` rule."""
        if self.kind != "law":
            raise ValueError(f"lr_rule.kind={self.kind!r} has no law curve")
        eta0, s_c, k, alpha = self.eta0, self.s_c, self.k, self.alpha
        return lambda s: float(law_curve(s, eta0, s_c, k, alpha))


def summarise_lags(
    staleness: Sequence[float] | np.ndarray | torch.Tensor,
    tokens: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    summary: Summary = "mean",
) -> float:
    """One number for a batch's lags: their mean, max, or token-weighted mean."""
    lags = np.asarray(
        staleness.detach().cpu() if isinstance(staleness, torch.Tensor) else staleness,
        dtype=float,
    ).reshape(-1)
    if lags.size == 0:
        raise ValueError("staleness: empty batch")
    if np.any(lags < 0) or not np.all(np.isfinite(lags)):
        raise ValueError("staleness: lags must be finite and >= 0")
    if summary == "max":
        return float(lags.max())
    if summary == "token_mean" and tokens is not None:
        weights = np.asarray(
            tokens.detach().cpu() if isinstance(tokens, torch.Tensor) else tokens, dtype=float
        ).reshape(-1)
        if weights.shape != lags.shape:
            raise ValueError(f"tokens: expected {lags.size} weights, got {weights.size}")
        total = weights.sum()
        return float((lags * weights).sum() / total) if total > 0 else float(lags.mean())
    return float(lags.mean())


class StalenessLR(torch.optim.lr_scheduler.LRScheduler):
    """Sets every parameter group's learning rate from the staleness of the current batch.

    ``law`` is a fitted :class:`~stalesim.sim.law.model.Law` (its ``eta_opt`` curve), a
    :class:`~stalesim.sim.law.model.LawCurve`, or any callable ``S -> eta``. The learning rate of a
    group is ``base_lr * warm-up * eta(S) / eta(0)`` (``absolute=True``: ``warm-up * eta(S)``),
    with a linear warm-up over the first ``warmup_steps`` calls of :meth:`step`. Until a
    staleness has been given, ``S = 0``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        law: Law | LawCurve | Callable[[float], float],
        *,
        summary: Summary | None = None,
        absolute: bool = False,
        warmup_steps: int = 0,
        last_epoch: int = -1,
    ) -> None:
        if isinstance(law, Law):
            curve: Callable[[float], float] = law.eta_opt
            summary = summary or law.staleness_summary  # type: ignore[assignment]
        else:
            curve = law
        if summary not in ("mean", "max", "token_mean"):
            # p99 laws and missing summaries fall back to the max, the conservative choice
            summary = "max"
        self.curve = lambda s: float(np.asarray(curve(s)))
        self.summary: Summary = summary
        self.absolute = absolute
        self.warmup_steps = warmup_steps
        self.staleness = 0.0
        self._eta_zero = self.curve(0.0)
        if not (math.isfinite(self._eta_zero) and self._eta_zero > 0):
            raise ValueError(f"law: eta(0) = {self._eta_zero!r} must be finite and > 0")
        super().__init__(optimizer, last_epoch)

    def factor(self, staleness: float) -> float:
        """``eta(S) / eta(0)``: how much staleness ``S`` scales the learning rate."""
        return self.curve(staleness) / self._eta_zero

    def get_lr(self) -> list[float]:
        # the construction's own step and the first update share the first warm-up fraction
        warm = min(1.0, max(self.last_epoch, 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.absolute:
            return [warm * self.curve(self.staleness) for _ in self.base_lrs]
        scale = warm * self.factor(self.staleness)
        return [base * scale for base in self.base_lrs]

    def step(  # type: ignore[override]
        self,
        epoch: int | None = None,
        *,
        staleness: Sequence[float] | np.ndarray | torch.Tensor | float | None = None,
        tokens: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    ) -> None:
        """Set the learning rate for the update about to be made on a batch with these lags.

        ``staleness`` holds the lag of each sample (or group) of the batch, or one number;
        ``tokens`` the token count of each, for the ``token_mean`` summary.
        """
        if staleness is not None:
            if np.ndim(staleness) == 0:
                staleness = [float(staleness)]  # type: ignore[arg-type]
            self.staleness = summarise_lags(staleness, tokens, self.summary)  # type: ignore[arg-type]
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        values = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def ess_lr_factor(ess: float) -> float:
    """``sqrt(ESS / B)`` for a normalised ESS in ``(0, 1]`` (1 on-policy)."""
    if not math.isfinite(ess):
        return 1.0
    return math.sqrt(min(max(ess, 0.0), 1.0))


class UpdateLR:
    """The learning rate of every update under an :class:`LRRuleConfig`, for any training loop
    (the law sweeps' trainer and the Ray pipeline's learner both call it): after the linear
    warm-up over ``warmup_steps`` updates, ``lr`` for ``constant``, :class:`StalenessLR` on the
    mini-batch's lags for ``law``, ``lr * sqrt(ESS / B)`` for ``ess``. Call :meth:`set` once the
    mini-batch's loss is known and before ``optimizer.step()``."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, rule: LRRuleConfig, lr: float, warmup_steps: int
    ) -> None:
        self.optimizer, self.rule, self.lr, self.warmup_steps = optimizer, rule, lr, warmup_steps
        self.scheduler = (
            StalenessLR(optimizer, rule.curve(), summary=rule.summary, warmup_steps=warmup_steps)
            if rule.kind == "law"
            else None
        )

    def set(
        self,
        version: int,
        *,
        lags: Sequence[float] | np.ndarray,
        tokens: Sequence[float] | np.ndarray | None = None,
        ess: float = math.nan,
    ) -> float:
        """Set the learning rate of update number ``version`` (0-based), which trains on samples
        with these ``lags`` (and token counts) and this normalised ESS; returns it."""
        if self.scheduler is not None:
            self.scheduler.step(staleness=lags, tokens=tokens)
        else:
            warm = min(1.0, (version + 1) / max(self.warmup_steps, 1))
            factor = ess_lr_factor(ess) if self.rule.kind == "ess" else 1.0
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * warm * factor
        return float(self.optimizer.param_groups[0]["lr"])


__all__ = ["LRRuleConfig", "StalenessLR", "UpdateLR", "ess_lr_factor", "summarise_lags"]
