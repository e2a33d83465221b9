"""The Triton GRPO loss against the float64 reference, forward and backward.

Every kernel buffer is poisoned with NaN before the kernels run (``_buffers.POISON_VALUE``),
so an element a kernel failed to write shows up as NaN in the loss, the statistics or the
gradient. Errors are relative norm errors ``‖out - ref‖ / ‖ref‖``.
"""

from __future__ import annotations

import math

import pytest
import torch
from stalesim.kernels import _buffers
from stalesim.kernels import loss as loss_module
from stalesim.kernels.loss import grpo_loss
from stalesim.kernels.reference import grpo_loss_ref, token_logprobs_ref

F64 = torch.float64
# Tolerances on the gradient, which the kernel returns in logp's dtype; the loss and the
# statistics are float32 whatever the input dtype.
GRAD_TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}
VALUE_TOLERANCE = 1e-5


@pytest.fixture(autouse=True)
def poisoned_buffers(monkeypatch):
    monkeypatch.setattr(_buffers, "POISON_VALUE", math.nan)


def _inputs(dtype: torch.dtype, rows: int = 5, length: int = 37, seed: int = 0):
    """Random tensors rounded to ``dtype``; row 2 is fully masked, others have ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    behaviour = -3 * torch.rand(rows, length, generator=g, dtype=F64)
    tensors = {
        "logp": behaviour + 0.3 * torch.randn(rows, length, generator=g, dtype=F64),
        "behaviour_logp": behaviour,
        "proximal_logp": behaviour + 0.2 * torch.randn(rows, length, generator=g, dtype=F64),
        "ref_logp": behaviour + 0.3 * torch.randn(rows, length, generator=g, dtype=F64),
        # Alternating signs, so both clip sides and both gradient branches are exercised.
        "advantages": torch.randn(rows, generator=g, dtype=F64).abs()
        * torch.tensor([1.0, -1.0], dtype=F64).repeat(rows)[:rows],
    }
    tensors = {k: v.to(dtype) for k, v in tensors.items()}
    lengths = torch.randint(length // 3, length + 1, (rows,), generator=g)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    mask &= torch.rand(rows, length, generator=g) < 0.9  # holes, as from tool-call tokens
    mask[2] = False
    tensors["mask"] = mask
    return tensors


CASES = {
    "default": {},
    "asymmetric_clip": {"eps_low": 0.1, "eps_high": 0.28},
    "sequence": {"ratio_level": "sequence"},
    "sequence_seq_mean": {"ratio_level": "sequence", "aggregation": "seq_mean_token_mean"},
    "seq_mean_token_mean": {"aggregation": "seq_mean_token_mean"},
    "constant": {"aggregation": "constant"},
    "constant_max_tokens": {"aggregation": "constant", "max_tokens": 50},
    "kl_k1": {"ref": True, "beta": 0.1, "kl_estimator": "k1"},
    "kl_k2": {"ref": True, "beta": 0.1, "kl_estimator": "k2"},
    "kl_k3": {"ref": True, "beta": 0.1, "kl_estimator": "k3"},
    "ref_stat_only": {"ref": True},
    "decoupled": {"prox": True},
    "decoupled_capped": {"prox": True, "is_cap": 1.2},
    "decoupled_sequence_capped": {"prox": True, "is_cap": 1.05, "ratio_level": "sequence"},
    "aipo": {"is_cap": 1.5},
    "aipo_sequence": {"is_cap": 1.1, "ratio_level": "sequence"},
    "everything": {
        "prox": True,
        "is_cap": 1.3,
        "ref": True,
        "beta": 0.05,
        "ratio_level": "sequence",
        "aggregation": "constant",
        "eps_low": 0.15,
        "eps_high": 0.25,
    },
}


def _run(fn, tensors, case, **extra):
    """Loss, stats and ∂loss/∂logp of ``fn`` on ``tensors`` under option ``case``."""
    options = {k: v for k, v in case.items() if k not in ("prox", "ref")}
    if case.get("prox"):
        options["proximal_logp"] = tensors["proximal_logp"]
    if case.get("ref"):
        options["ref_logp"] = tensors["ref_logp"]
    logp = tensors["logp"].clone().requires_grad_()
    loss, stats = fn(
        logp, tensors["behaviour_logp"], tensors["advantages"], tensors["mask"], **options, **extra
    )
    loss.backward()
    return loss.detach(), stats, logp.grad


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.to(F64)
    return ((got.to(F64) - expected).norm() / expected.norm().clamp(min=1e-30)).item()


def _check_against_reference(tensors, case, grad_tolerance):
    loss, stats, grad = _run(grpo_loss, tensors, case, backend="triton")
    as_f64 = {k: (v.to(F64) if v.is_floating_point() else v) for k, v in tensors.items()}
    ref_loss, ref_stats, ref_grad = _run(grpo_loss_ref, as_f64, case)

    assert loss.dtype == torch.float32 and grad.dtype == tensors["logp"].dtype
    assert torch.isfinite(grad).all(), "gradient has unwritten (NaN) elements"
    assert _relative_error(loss, ref_loss) < VALUE_TOLERANCE
    assert _relative_error(grad, ref_grad) < grad_tolerance
    assert (grad[~tensors["mask"]] == 0).all()
    assert stats.keys() == ref_stats.keys()
    for name, value in stats.items():
        assert value.dtype == torch.float32 and not value.requires_grad
        assert value.item() == pytest.approx(
            ref_stats[name].item(), rel=VALUE_TOLERANCE, abs=1e-6
        ), name


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_float32_matches_reference(case):
    _check_against_reference(_inputs(torch.float32), case, GRAD_TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("case", ["default", "sequence", "everything", "kl_k3"])
def test_half_precision_inputs_match_reference(dtype, case):
    _check_against_reference(_inputs(dtype, seed=1), CASES[case], GRAD_TOLERANCE[dtype])


@pytest.mark.parametrize("case", ["default", "sequence_seq_mean", "everything"])
def test_rows_spanning_several_tiles(monkeypatch, case):
    # 16-token tiles split each 37-token row over 3 programs, so per-row and per-batch
    # reductions must combine partial sums across tiles.
    monkeypatch.setattr(loss_module, "MAX_BLOCK", 16)
    _check_against_reference(_inputs(torch.float32, seed=2), CASES[case], 1e-5)


def test_long_rows_with_default_tiles():
    tensors = _inputs(torch.float32, rows=3, length=1100, seed=3)
    tensors["mask"][2] = True  # the masked-row fixture would leave too few tokens here
    _check_against_reference(tensors, CASES["everything"], 1e-5)


def test_fully_masked_batch_gives_zero_loss_zero_gradient_on_policy_stats():
    tensors = _inputs(torch.float32)
    tensors["mask"][:] = False
    loss, stats, grad = _run(grpo_loss, tensors, CASES["everything"], backend="triton")
    assert loss.item() == 0.0
    assert (grad == 0).all()
    assert stats["ess"].item() == 1.0 and stats["ratio_mean"].item() == 1.0
    assert stats["clip_frac_low"].item() == 0.0 and stats["ref_kl"].item() == 0.0


@pytest.mark.parametrize(("rows", "length"), [(0, 5), (3, 0), (1, 1)])
def test_degenerate_shapes(rows, length):
    tensors = {
        "logp": torch.zeros(rows, length),
        "behaviour_logp": torch.zeros(rows, length),
        "advantages": torch.ones(rows),
        "mask": torch.ones(rows, length, dtype=torch.bool),
    }
    case = {"ratio_level": "sequence", "aggregation": "seq_mean_token_mean"}
    loss, stats, grad = _run(grpo_loss, tensors, case, backend="triton")
    ref_loss, ref_stats, ref_grad = _run(grpo_loss_ref, tensors, case)
    assert loss.item() == ref_loss.item() == (-1.0 if rows * length else 0.0)
    assert torch.equal(grad, ref_grad)
    assert {k: v.item() for k, v in stats.items()} == {k: v.item() for k, v in ref_stats.items()}


def test_garbage_in_padding_is_never_read():
    tensors = _inputs(torch.float32, seed=4)
    clean = _run(grpo_loss, tensors, CASES["everything"], backend="triton")
    padding = ~tensors["mask"]
    for name in ("logp", "behaviour_logp", "proximal_logp", "ref_logp"):
        tensors[name] = tensors[name].masked_fill(padding, math.nan if name == "logp" else 1e30)
    dirty = _run(grpo_loss, tensors, CASES["everything"], backend="triton")
    assert dirty[0].item() == clean[0].item()
    assert torch.equal(dirty[2], clean[2])
    assert all(dirty[1][k].item() == clean[1][k].item() for k in clean[1])


def test_large_log_ratios_keep_ess_finite():
    tensors = _inputs(torch.float32, seed=5)
    tensors["logp"][0, 0] = tensors["behaviour_logp"][0, 0] + 60.0  # ρ = e^60 overflows ρ²
    tensors["mask"][0, 0] = True
    _, stats, _ = _run(grpo_loss, tensors, CASES["default"], backend="triton")
    as_f64 = {k: (v.to(F64) if v.is_floating_point() else v) for k, v in tensors.items()}
    _, ref_stats, _ = _run(grpo_loss_ref, as_f64, CASES["default"])
    assert math.isfinite(stats["ess"].item())
    assert stats["ess"].item() == pytest.approx(ref_stats["ess"].item(), rel=1e-5)


def test_mask_dtypes_and_non_contiguous_inputs_agree():
    tensors = _inputs(torch.float32, seed=6)
    expected = _run(grpo_loss, tensors, CASES["sequence"], backend="triton")
    tensors["mask"] = tensors["mask"].to(torch.float32)
    tensors["logp"] = tensors["logp"].T.contiguous().T  # same values, column-major strides
    got = _run(grpo_loss, tensors, CASES["sequence"], backend="triton")
    assert got[0].item() == expected[0].item()
    assert torch.equal(got[2], expected[2])


def test_composes_with_token_logprobs_through_autograd():
    rows, length, vocab = 3, 11, 29
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(rows * length, vocab, generator=g)
    targets = torch.randint(0, vocab, (rows * length,), generator=g)
    tensors = _inputs(torch.float32, rows=rows, length=length, seed=8)
    case = CASES["everything"]

    from stalesim.kernels import token_logprobs

    def chain(fn_logprobs, fn_loss, x, as_dtype, **extra):
        x = x.detach().to(as_dtype).clone().requires_grad_()
        logp = fn_logprobs(x, targets, 0.9, **extra).view(rows, length)
        t = {k: (v.to(as_dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
        options = {k: v for k, v in case.items() if k not in ("prox", "ref")}
        loss, _ = fn_loss(
            logp, t["behaviour_logp"], t["advantages"], t["mask"],
            proximal_logp=t["proximal_logp"], ref_logp=t["ref_logp"], **options, **extra,
        )  # fmt: skip
        loss.backward()
        return loss.detach(), x.grad

    loss, grad = chain(token_logprobs, grpo_loss, logits, torch.float32, backend="triton")
    ref_loss, ref_grad = chain(token_logprobs_ref, grpo_loss_ref, logits, F64)
    assert _relative_error(loss, ref_loss) < 1e-5
    assert _relative_error(grad, ref_grad) < 1e-5


def test_auto_backend_on_cpu_runs_the_reference():
    tensors = _inputs(torch.float32, seed=9)
    auto = _run(grpo_loss, tensors, CASES["kl_k3"], backend="auto")
    reference = _run(grpo_loss_ref, tensors, CASES["kl_k3"])
    assert auto[0].item() == reference[0].item()
    assert torch.equal(auto[2], reference[2])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.update(logp=t["logp"].double()), "use backend='reference' for float64"),
        (lambda t: t.update(logp=t["logp"].long()), "logp: unsupported dtype"),
        (
            lambda t: t.update(behaviour_logp=t["behaviour_logp"][:, 1:]),
            "behaviour_logp: expected shape",
        ),
        (lambda t: t.update(advantages=t["advantages"][:-1]), "advantages: expected shape"),
        (lambda t: t.update(mask=t["mask"][None]), "mask: expected shape"),
        (lambda t: t.update(advantages=t["advantages"].double()), "advantages: unsupported dtype"),
        (
            lambda t: t.update(behaviour_logp=t["behaviour_logp"].to("meta")),
            "behaviour_logp is on meta",
        ),
    ],
)
def test_bad_tensors_are_refused_before_any_kernel(monkeypatch, change, message):
    def no_kernels(name):
        raise AssertionError("a kernel module was loaded for bad input")

    monkeypatch.setattr(loss_module, "load_triton_module", no_kernels)
    tensors = _inputs(torch.float32)
    change(tensors)
    with pytest.raises(ValueError, match=message):
        grpo_loss(
            tensors["logp"], tensors["behaviour_logp"], tensors["advantages"], tensors["mask"],
            backend="triton",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": 0.1}, "needs ref_logp"),
        ({"ratio_level": "tokens"}, "ratio_level='tokens'"),
        ({"is_cap": -1.0}, "is_cap"),
        ({"eps_high": math.nan}, "eps_high"),
        ({"backend": "cuda"}, "backend='cuda'"),
    ],
)
def test_bad_options_are_refused(options, message):
    tensors = _inputs(torch.float32)
    with pytest.raises(ValueError, match=message):
        grpo_loss(
            tensors["logp"], tensors["behaviour_logp"], tensors["advantages"], tensors["mask"],
            **{"backend": "triton", **options},
        )  # fmt: skip


def test_test_inputs_exercise_both_clip_sides_and_truncation():
    # Guards the comparisons above against inputs on which clipping never binds.
    tensors = _inputs(torch.float32)
    _, stats, _ = _run(grpo_loss_ref, tensors, CASES["decoupled_capped"])
    assert stats["clip_frac_low"].item() > 0.05 and stats["clip_frac_high"].item() > 0.05
    assert 0.05 < stats["is_trunc_frac"].item() < 0.95
