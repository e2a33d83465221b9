"""token_logprobs (Triton, under the interpreter on CPU) against the float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from stalesim.kernels import _buffers
from stalesim.kernels.backend import load_triton_module
from stalesim.kernels.logprobs import token_logprobs
from stalesim.kernels.reference import token_logprobs_ref

# Odd sizes: 389 columns are 6 full 64-wide interpreter tiles and a partial one.
N, V = 13, 389

# Forward values are computed in float32 from inputs that are exact in every dtype, so they are
# float32-accurate whatever the input dtype; the gradient is written in the input dtype.
GRAD_TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every output and gradient buffer starts as NaN, so unwritten elements are caught."""
    monkeypatch.setattr(_buffers, "POISON_VALUE", float("nan"))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.detach().double() - want).norm() / want.norm())


def reference_and_grad(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, upstream: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    exact = logits.detach().double().requires_grad_()
    logp = token_logprobs_ref(exact, targets, temperature=temperature)
    logp.backward(upstream.double())
    return logp.detach(), exact.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_forward_and_backward_match_reference(dtype: torch.dtype, temperature: float) -> None:
    gen = torch.Generator().manual_seed(int(100 * temperature) + dtype.itemsize)
    logits = (4 * torch.randn(N, V, generator=gen)).to(dtype).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=gen)
    upstream = torch.randn(N, generator=gen)

    logp = token_logprobs(logits, targets, temperature=temperature, backend="triton")
    logp.backward(upstream)
    want, want_grad = reference_and_grad(logits, targets, temperature, upstream)

    assert logp.dtype == torch.float32 and logp.shape == (N,)
    assert logits.grad.dtype == dtype
    assert relative_error(logp, want) < 1e-6
    assert relative_error(logits.grad, want_grad) < GRAD_TOLERANCE[dtype]


def test_strided_rows_and_int32_targets() -> None:
    gen = torch.Generator().manual_seed(1)
    wide = torch.randn(N, V + 11, generator=gen)
    logits = wide[:, 3 : 3 + V].requires_grad_()
    assert logits.stride(0) != V
    targets = torch.randint(0, V, (N,), generator=gen, dtype=torch.int32)
    upstream = torch.randn(N, generator=gen)

    logp = token_logprobs(logits, targets, backend="triton")
    logp.backward(upstream)
    want, want_grad = reference_and_grad(logits, targets, 1.0, upstream)
    assert relative_error(logp, want) < 1e-6
    assert relative_error(logits.grad, want_grad) < 1e-5


def test_extreme_and_minus_infinity_logits_are_finite_and_exact() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(N, V, generator=gen)
    logits[:, ::5] = float("-inf")  # masked vocabulary entries
    logits[0, :] = 1e4  # a flat row at a huge offset
    logits[1, 7] = 1e4  # one dominant entry
    logits[2, 1:] = -1e4
    logits[2, 0] = 0.0
    logits[3, :200] = float("-inf")  # the first tiles see only -inf
    targets = torch.randint(0, V, (N,), generator=gen)
    targets = torch.where(targets % 5 == 0, targets + 1, targets).clamp(max=V - 1)
    targets[3] = 251
    targets[2] = 1  # a -1e4 logit against one at ~0: log-prob about -1e4
    logits = logits.requires_grad_()
    upstream = torch.randn(N, generator=gen)

    logp = token_logprobs(logits, targets, temperature=0.9, backend="triton")
    logp.backward(upstream)
    want, want_grad = reference_and_grad(logits, targets, 0.9, upstream)

    assert torch.isfinite(logp).all() and torch.isfinite(logits.grad).all()
    assert torch.allclose(logp.double(), want, rtol=1e-6, atol=1e-4)
    assert logp[0].item() == pytest.approx(-math.log(V), abs=1e-4)
    assert relative_error(logits.grad, want_grad) < 1e-5
    assert (logits.grad[logits.detach() == float("-inf")] == 0).all()


def test_minus_infinity_target_gives_minus_infinity() -> None:
    logits = torch.zeros(2, V)
    logits[0, 4] = float("-inf")
    logits[1, 6] = float("-inf")
    logp = token_logprobs(logits, torch.tensor([4, 5]), backend="triton")
    assert logp[0].item() == float("-inf")
    assert logp[1].item() == pytest.approx(-math.log(V - 1), rel=1e-6)


@pytest.mark.parametrize(("rows", "vocab"), [(1, 1), (3, 17), (2, 64), (5, 65)])
def test_tiny_and_tile_edge_shapes(rows: int, vocab: int) -> None:
    gen = torch.Generator().manual_seed(rows * 1000 + vocab)
    logits = torch.randn(rows, vocab, generator=gen).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), generator=gen)
    upstream = torch.randn(rows, generator=gen)
    logp = token_logprobs(logits, targets, backend="triton")
    logp.backward(upstream)
    want, want_grad = reference_and_grad(logits, targets, 1.0, upstream)
    assert torch.allclose(logp.double(), want, atol=1e-6)
    assert torch.allclose(logits.grad.double(), want_grad, atol=1e-6)


def test_largest_vocabulary_with_gpu_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """V = 2**18 streamed in the tiles a GPU uses (128 forward tiles and 64 backward tiles per
    row)."""
    kernels = load_triton_module("_logprob_triton")
    cuda = torch.device("cuda")
    gpu_tiles = {d: kernels.launch_config(262_144, cuda, d) for d in ("forward", "backward")}
    assert (gpu_tiles["forward"].block_v, gpu_tiles["backward"].block_v) == (2048, 4096)
    monkeypatch.setattr(
        kernels, "launch_config", lambda n_vocab, device, direction: gpu_tiles[direction]
    )
    vocab = 262_144
    gen = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(2, vocab, generator=gen)).requires_grad_()
    targets = torch.tensor([0, vocab - 1])
    upstream = torch.tensor([1.0, -0.5])
    logp = token_logprobs(logits, targets, backend="triton")
    logp.backward(upstream)
    want, want_grad = reference_and_grad(logits, targets, 1.0, upstream)
    assert relative_error(logp, want) < 1e-6
    assert relative_error(logits.grad, want_grad) < 1e-5


def test_empty_batch() -> None:
    logits = torch.randn(0, V, requires_grad=True)
    logp = token_logprobs(logits, torch.zeros(0, dtype=torch.long), backend="triton")
    logp.sum().backward()
    assert logp.shape == (0,) and logits.grad.shape == (0, V)


def test_auto_on_cpu_is_the_reference() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(N, V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen)
    assert torch.equal(token_logprobs(logits, targets), token_logprobs_ref(logits, targets))


def _good() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(4, 10), torch.tensor([0, 3, 9, 1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda x, t: (x, torch.tensor([0, 3, 10, 1])), "outside"),
        (lambda x, t: (x, torch.tensor([0, -1, 9, 1])), "outside"),
        (lambda x, t: (x, t[:3]), "targets"),
        (lambda x, t: (x[0], t), "logits"),
        (lambda x, t: (x.double(), t), "dtype"),
        (lambda x, t: (x.int(), t), "dtype"),
        (lambda x, t: (x, t.float()), "dtype"),
        (lambda x, t: (x, t.to("meta")), "device"),
        (lambda x, t: ("not a tensor", t), "logits"),
    ],
)
def test_bad_inputs_raise_value_error(change, message: str) -> None:
    logits, targets = change(*_good())
    with pytest.raises(ValueError, match=message):
        token_logprobs(logits, targets, backend="triton")


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(*_good(), temperature=temperature, backend="triton")


def test_unknown_backend_raises() -> None:
    with pytest.raises(ValueError, match="backend"):
        token_logprobs(*_good(), backend="cuda")


def reference_with_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    upstream_logp: torch.Tensor,
    upstream_entropy: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    exact = logits.detach().double().requires_grad_()
    logp, entropy = token_logprobs_ref(exact, targets, temperature, return_entropy=True)
    (logp * upstream_logp.double() + entropy * upstream_entropy.double()).sum().backward()
    return logp.detach(), entropy.detach(), exact.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_entropy_forward_and_backward_match_reference(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(20 + dtype.itemsize)
    logits = (3 * torch.randn(N, V, generator=gen)).to(dtype)
    logits[:, 1::7] = float("-inf")
    logits[0, :] = 1e4
    logits[1, :300] = float("-inf")  # several -inf tiles before the first finite logit
    logits[2, 11] = 5e3  # an almost deterministic row: entropy ~ 0
    logits = logits.requires_grad_()
    targets = torch.randint(0, V, (N,), generator=gen)
    targets = torch.where(targets % 7 == 1, targets + 1, targets).clamp(max=V - 1)
    targets[1] = 303
    up_logp, up_entropy = torch.randn(N, generator=gen), torch.randn(N, generator=gen)

    logp, entropy = token_logprobs(
        logits, targets, temperature=0.7, backend="triton", return_entropy=True
    )
    (logp * up_logp + entropy * up_entropy).sum().backward()
    want_logp, want_entropy, want_grad = reference_with_entropy(
        logits, targets, 0.7, up_logp, up_entropy
    )

    assert entropy.dtype == torch.float32 and entropy.shape == (N,)
    assert torch.isfinite(entropy).all() and torch.isfinite(logits.grad).all()
    assert relative_error(logp, want_logp) < 1e-6
    assert relative_error(entropy, want_entropy) < 1e-6
    assert entropy[0].item() == pytest.approx(math.log(V), rel=1e-6)
    assert abs(entropy[2].item()) < 1e-6
    assert relative_error(logits.grad, want_grad) < GRAD_TOLERANCE[dtype]


def test_entropy_alone_drives_the_gradient() -> None:
    """A loss on the entropy only: the log-prob output gets no gradient (materialised as 0)."""
    gen = torch.Generator().manual_seed(30)
    logits = torch.randn(N, V, generator=gen).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=gen)
    _, entropy = token_logprobs(logits, targets, backend="triton", return_entropy=True)
    entropy.sum().backward()
    _, want_entropy, want_grad = reference_with_entropy(
        logits, targets, 1.0, torch.zeros(N), torch.ones(N)
    )
    assert relative_error(entropy, want_entropy) < 1e-6
    assert relative_error(logits.grad, want_grad) < 1e-5


def test_entropy_with_reference_backend() -> None:
    gen = torch.Generator().manual_seed(31)
    logits = torch.randn(N, V, generator=gen)
    targets = torch.randint(0, V, (N,), generator=gen)
    got = token_logprobs(logits, targets, backend="reference", return_entropy=True)
    want = token_logprobs_ref(logits, targets, return_entropy=True)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
