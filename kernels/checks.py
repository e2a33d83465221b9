"""Input validation shared by every kernel entry point.

Each check raises :class:`ValueError` with a one-line message that names the argument, what it
got and what is allowed, so bad input is refused before any kernel (Triton or reference) runs.
The checks never copy or modify tensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from stalesim.kernels.options import GRPOOptions

KERNEL_FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)
"""Floating dtypes the Triton kernels read (they compute in float32)."""

REFERENCE_FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float64, *KERNEL_FLOAT_DTYPES)
"""Floating dtypes the plain-torch reference accepts (float64 for exact comparisons)."""

INDEX_DTYPES: tuple[torch.dtype, ...] = (torch.int64, torch.int32)


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def require_tensor(name: str, value: object) -> torch.Tensor:
    """``value`` itself, after checking that it is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def require_dtype(name: str, tensor: torch.Tensor, allowed: Sequence[torch.dtype]) -> None:
    """Refuse a tensor whose dtype is not one of ``allowed``."""
    if tensor.dtype not in allowed:
        raise ValueError(
            f"{name}: unsupported dtype {str(tensor.dtype).removeprefix('torch.')}; "
            f"expected one of {_dtype_names(allowed)}"
        )


def require_shape(name: str, tensor: torch.Tensor, shape: Sequence[int | None], dims: str) -> None:
    """Refuse a tensor whose shape differs from ``shape`` (``None`` matches any size).

    ``dims`` spells the expected shape for the message, e.g. ``"[N, V]"``.
    """
    ok = tensor.dim() == len(shape) and all(
        want is None or got == want for got, want in zip(tensor.shape, shape, strict=True)
    )
    if not ok:
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(
            f"{name}: expected shape {dims} = {want}, got {tuple(tensor.shape)}".replace("'", "")
        )


def require_same_device(**tensors: torch.Tensor | None) -> torch.device:
    """The common device of the given tensors (``None`` entries are skipped)."""
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {name: t.device for name, t in present.items()}
    first_name, first = next(iter(devices.items()))
    for name, device in devices.items():
        if device != first:
            raise ValueError(
                f"{name} is on {device} but {first_name} is on {first}; "
                "all tensors must be on one device"
            )
    return first


DEBUG_CHECKS_ENV = "STALESIM_KERNEL_DEBUG"
"""Set to 1 to have the Triton entry points check values on CUDA tensors too (a host sync)."""


def value_checks_enabled(device: torch.device) -> bool:
    """Whether checks that read tensor values run for tensors on ``device``.

    Reading a value of a CUDA tensor synchronises the host with the GPU, so the Triton paths
    skip those checks on CUDA unless :data:`DEBUG_CHECKS_ENV` is ``1``; the kernels handle what
    the checks would refuse on the device instead (an out-of-range target gives a NaN
    log-prob). CPU tensors are always checked: reading them costs nothing.
    """
    return device.type != "cuda" or os.environ.get(DEBUG_CHECKS_ENV) == "1"


def require_targets_in_range(name: str, targets: torch.Tensor, num_classes: int) -> None:
    """Refuse integer class indices outside ``[0, num_classes)``.

    This reads the tensor's min and max, which synchronises with the GPU once per call.
    """
    require_dtype(name, targets, INDEX_DTYPES)
    if targets.numel() == 0:
        return
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ValueError(f"{name}: value {bad} is outside [0, {num_classes})")


#: The smallest temperature the log-prob ops accept. The kernels scale logits by
#: ``1/temperature`` in float32: at 1e-45 that factor is infinite and every log-prob NaN, and
#: well before that a logit of a few tens divided by the temperature keeps too few bits for
#: its log-prob (float32's spacing at 2e4 is 2e-3). Greedy decoding is ``argmax``, not a
#: temperature.
MIN_TEMPERATURE = 1e-3


def require_temperature(temperature: float) -> float:
    """The temperature as a float, after checking that it is finite and at least
    :data:`MIN_TEMPERATURE`."""
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                f"temperature: expected a number, got a tensor of shape {tuple(temperature.shape)}"
            )
        temperature = float(temperature)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise ValueError(f"temperature: expected a number, got {type(temperature).__name__}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be finite and > 0")
    if temperature < MIN_TEMPERATURE:
        raise ValueError(
            f"temperature={temperature}: below the smallest supported, {MIN_TEMPERATURE:g} "
            "(the log-probs would lose their precision, and become NaN below about 1e-38)"
        )
    return float(temperature)


def require_choice(name: str, value: object, choices: Sequence[str]) -> None:
    """Refuse a value that is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {', '.join(map(repr, choices))}")


def require_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strictly_positive: bool = False,
) -> float:
    """``value`` as a float, after checking that it is a finite number within the bounds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}={value}: must be finite")
    if strictly_positive and value <= 0:
        raise ValueError(f"{name}={value}: must be > 0")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value}: must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value}: must be <= {maximum}")
    return value


def check_logprob_inputs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    allowed: Sequence[torch.dtype] = KERNEL_FLOAT_DTYPES,
    *,
    check_values: bool = True,
) -> float:
    """Validate ``token_logprobs`` arguments; returns the temperature as a float.

    ``check_values=False`` skips the target range check (which reads the targets)."""
    require_tensor("logits", logits)
    require_tensor("targets", targets)
    require_shape("logits", logits, (None, None), "[N, V]")
    require_dtype("logits", logits, allowed)
    require_shape("targets", targets, (logits.shape[0],), "[N]")
    require_same_device(logits=logits, targets=targets)
    if logits.shape[1] == 0:
        raise ValueError("logits: vocabulary size V must be > 0")
    require_dtype("targets", targets, INDEX_DTYPES)
    if check_values:
        require_targets_in_range("targets", targets, logits.shape[1])
    return require_temperature(temperature)


def check_fused_linear_inputs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    bias: torch.Tensor | None = None,
    allowed: Sequence[torch.dtype] = KERNEL_FLOAT_DTYPES,
    *,
    check_values: bool = True,
) -> float:
    """Validate ``fused_linear_logprobs`` arguments; returns the temperature as a float.

    ``check_values=False`` skips the target range check (which reads the targets)."""
    for name, t in (("hidden", hidden), ("weight", weight), ("targets", targets)):
        require_tensor(name, t)
    require_shape("hidden", hidden, (None, None), "[N, H]")
    require_shape("weight", weight, (None, hidden.shape[1]), "[V, H]")
    require_shape("targets", targets, (hidden.shape[0],), "[N]")
    require_dtype("hidden", hidden, allowed)
    require_dtype("weight", weight, allowed)
    if weight.dtype != hidden.dtype:
        raise ValueError(
            f"weight: dtype {str(weight.dtype).removeprefix('torch.')} differs from hidden's "
            f"{str(hidden.dtype).removeprefix('torch.')}"
        )
    if bias is not None:
        require_tensor("bias", bias)
        require_shape("bias", bias, (weight.shape[0],), "[V]")
        require_dtype("bias", bias, allowed)
    require_same_device(hidden=hidden, weight=weight, targets=targets, bias=bias)
    if weight.shape[0] == 0:
        raise ValueError("weight: vocabulary size V must be > 0")
    require_dtype("targets", targets, INDEX_DTYPES)
    if check_values:
        require_targets_in_range("targets", targets, weight.shape[0])
    return require_temperature(temperature)


MASK_DTYPES: tuple[torch.dtype, ...] = (
    torch.bool,
    torch.uint8,
    torch.int32,
    torch.int64,
    *REFERENCE_FLOAT_DTYPES,
)


def check_grpo_loss_inputs(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None,
    proximal_logp: torch.Tensor | None,
    options: GRPOOptions,
    allowed: Sequence[torch.dtype] = KERNEL_FLOAT_DTYPES,
) -> None:
    """Validate ``grpo_loss`` tensors against each other and against ``options`` (which
    checked themselves when they were made)."""
    require_tensor("logp", logp)
    require_shape("logp", logp, (None, None), "[R, L]")
    require_dtype("logp", logp, allowed)
    rows, length = logp.shape
    for name, t in (
        ("behaviour_logp", behaviour_logp),
        ("proximal_logp", proximal_logp),
        ("ref_logp", ref_logp),
    ):
        if t is None and name != "behaviour_logp":
            continue
        require_tensor(name, t)
        require_shape(name, t, (rows, length), "[R, L]")
        require_dtype(name, t, allowed)
    require_tensor("advantages", advantages)
    require_shape("advantages", advantages, (rows,), "[R]")
    require_dtype("advantages", advantages, allowed)
    require_tensor("mask", mask)
    require_shape("mask", mask, (rows, length), "[R, L]")
    require_dtype("mask", mask, MASK_DTYPES)
    require_same_device(
        logp=logp,
        behaviour_logp=behaviour_logp,
        advantages=advantages,
        mask=mask,
        proximal_logp=proximal_logp,
        ref_logp=ref_logp,
    )
    if options.beta > 0 and ref_logp is None:
        raise ValueError(f"beta={options.beta}: a KL penalty needs ref_logp (got None)")
