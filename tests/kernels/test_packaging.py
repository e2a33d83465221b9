"""The declared torch minimum is the one the kernels check, and an older torch is refused in
one line before any kernel runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import torch
from stalesim.kernels import backend
from stalesim.kernels.backend import MIN_TORCH, check_torch_version
from stalesim.kernels.logprobs import token_logprobs

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.mark.parametrize("version", ["2.7.1+cu126", "2.4.0", "1.13.1"])
def test_older_torch_is_refused_in_one_line(version: str) -> None:
    with pytest.raises(ValueError, match=r"^torch .*need torch >= 2\.8 .*pip install") as caught:
        check_torch_version(version)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("version", ["2.8.0", "2.8.0a0+git1234", "2.11.0+cu130", "3.0.0"])
def test_supported_torch_passes(version: str) -> None:
    check_torch_version(version)


def test_kernel_call_checks_the_running_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend.torch, "__version__", "2.7.0")
    logits = torch.zeros(2, 5)
    with pytest.raises(ValueError, match=r"torch 2\.7\.0"):
        token_logprobs(logits, torch.zeros(2, dtype=torch.long), backend="triton")


def test_pyproject_declares_the_checked_minimum() -> None:
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    want = ".".join(map(str, MIN_TORCH))
    for extra in ("train", "dev"):
        pins = [re.sub(r"\s", "", p) for p in extras[extra] if re.match(r"torch\b", p)]
        assert pins == [f"torch>={want}"], (extra, pins)
