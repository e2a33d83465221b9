"""The reference is the specification: hold it to analytic cases and to autograd's gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
from stalesim.kernels.reference import (
    fused_linear_logprobs_ref,
    group_advantages_ref,
    grpo_loss_ref,
    token_logprobs_ref,
)

F64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(rows: int = 4, length: int = 9, seed: int = 0):
    g = _gen(seed)
    behaviour = -torch.rand(rows, length, generator=g, dtype=F64) * 3
    logp = behaviour + 0.4 * torch.randn(rows, length, generator=g, dtype=F64)
    advantages = torch.randn(rows, generator=g, dtype=F64)
    mask = torch.rand(rows, length, generator=g) < 0.7
    mask[:, 0] = True
    return logp, behaviour, advantages, mask


# ---------------------------------------------------------------- log-probs


def test_token_logprobs_match_log_softmax_with_temperature():
    g = _gen(1)
    logits = torch.randn(7, 11, generator=g, dtype=F64) * 3
    targets = torch.randint(0, 11, (7,), generator=g)
    got, entropy = token_logprobs_ref(logits, targets, temperature=0.7, return_entropy=True)
    z = logits / 0.7
    expected = z[torch.arange(7), targets] - torch.logsumexp(z, dim=1)
    q = torch.softmax(z, dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(entropy, -(q * q.log()).sum(1), rtol=1e-12, atol=1e-12)


def test_uniform_logits_give_log_uniform_and_entropy_log_v():
    logits = torch.zeros(3, 5, dtype=F64)
    logp, entropy = token_logprobs_ref(logits, torch.tensor([0, 2, 4]), return_entropy=True)
    torch.testing.assert_close(logp, torch.full((3,), -math.log(5), dtype=F64))
    torch.testing.assert_close(entropy, torch.full((3,), math.log(5), dtype=F64))


def test_extreme_and_minus_inf_logits_stay_finite_and_exact():
    logits = torch.tensor(
        [[1e4, -1e4, -math.inf, 0.0], [-math.inf, 2.0, 2.0, -math.inf]], dtype=torch.float32
    )
    logp, entropy = token_logprobs_ref(logits, torch.tensor([1, 2]), return_entropy=True)
    assert logp[0].item() == pytest.approx(-2e4)
    assert logp[1].item() == pytest.approx(-math.log(2))
    assert entropy[0].item() == pytest.approx(0.0, abs=1e-6)
    assert entropy[1].item() == pytest.approx(math.log(2))
    x = logits.clone().requires_grad_()
    token_logprobs_ref(x, torch.tensor([1, 2]), return_entropy=True)[1].sum().backward()
    assert torch.isfinite(x.grad).all()


def test_logprob_gradient_is_onehot_minus_softmax_over_temperature():
    g = _gen(2)
    logits = torch.randn(4, 6, generator=g, dtype=F64, requires_grad=True)
    targets = torch.tensor([0, 5, 3, 3])
    token_logprobs_ref(logits, targets, temperature=2.0).sum().backward()
    expected = (torch.nn.functional.one_hot(targets, 6) - torch.softmax(logits / 2, 1)) / 2
    torch.testing.assert_close(logits.grad, expected.detach())


def test_fused_linear_reference_is_projection_then_logprobs():
    g = _gen(3)
    hidden = torch.randn(5, 4, generator=g, dtype=F64)
    weight = torch.randn(9, 4, generator=g, dtype=F64)
    bias = torch.randn(9, generator=g, dtype=F64)
    targets = torch.randint(0, 9, (5,), generator=g)
    got = fused_linear_logprobs_ref(hidden, weight, targets, 1.3, bias)
    expected = token_logprobs_ref(hidden @ weight.T + bias, targets, 1.3)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": torch.tensor([0, 5])}, "outside \\[0, 5\\)"),
        ({"targets": torch.tensor([-1, 0])}, "outside"),
        ({"targets": torch.tensor([0.0, 1.0])}, "targets: unsupported dtype"),
        ({"targets": torch.tensor([0, 1, 2])}, "targets: expected shape"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
        ({"logits": torch.zeros(2, 5, dtype=torch.int32)}, "logits: unsupported dtype"),
        ({"logits": torch.zeros(2, 5, 1)}, "logits: expected shape"),
    ],
)
def test_logprob_reference_refuses_bad_input(kwargs, message):
    args = {"logits": torch.zeros(2, 5), "targets": torch.tensor([0, 4]), "temperature": 1.0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        token_logprobs_ref(**args)


# ---------------------------------------------------------------- advantages


def test_group_advantages_analytic_values():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]], dtype=F64)
    got = group_advantages_ref(rewards, "group", eps=0.0)
    # Group 0: mean 0.5, unbiased std sqrt(1/3); group 1 has no spread.
    a = 0.5 / math.sqrt(1 / 3)
    expected = torch.tensor([[a, -a, -a, a], [0.0, 0.0, 0.0, 0.0]], dtype=F64)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(
        group_advantages_ref(rewards, "none"), rewards - rewards.mean(1, True)
    )
    batch_std = rewards.flatten().std().item()
    torch.testing.assert_close(
        group_advantages_ref(rewards, "batch", eps=0.0),
        (rewards - rewards.mean(1, True)) / batch_std,
    )


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_equal_rewards_give_exactly_zero_advantages(scale):
    # 0.1 is not representable: the rounded group mean differs from the rewards by an ulp.
    rewards = torch.full((2, 3), 0.1, dtype=F64)
    assert (group_advantages_ref(rewards, scale, eps=0.0) == 0).all()


def test_group_advantages_are_centred_with_unit_std():
    rewards = torch.rand(6, 8, generator=_gen(4), dtype=F64)
    a = group_advantages_ref(rewards, "group", eps=0.0)
    torch.testing.assert_close(a.mean(1), torch.zeros(6, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(a.std(1), torch.ones(6, dtype=F64))


def test_group_advantages_refuse_bad_input():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages_ref(torch.ones(3, 1), "group")
    with pytest.raises(ValueError, match="scale='median'"):
        group_advantages_ref(torch.ones(3, 2), "median")
    with pytest.raises(ValueError, match="rewards: expected shape"):
        group_advantages_ref(torch.ones(6), "group")


# ---------------------------------------------------------------- GRPO loss: analytic cases


def test_on_policy_loss_is_minus_mean_advantage_and_stats_are_on_policy():
    _, behaviour, advantages, mask = _batch()
    logp = behaviour.clone().requires_grad_()
    loss, stats = grpo_loss_ref(logp, behaviour, advantages, mask)
    tokens = mask.sum(1).to(F64)
    expected = -(advantages * tokens).sum() / tokens.sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert stats["clip_frac_low"].item() == 0 and stats["clip_frac_high"].item() == 0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    assert stats["ratio_max"].item() == pytest.approx(1.0)
    assert stats["ess"].item() == pytest.approx(1.0)
    assert stats["approx_kl"].item() == pytest.approx(0.0, abs=1e-15)
    loss.backward()
    # On policy the ratio is 1, so ∂loss/∂θ = -A / N on every real token.
    expected_grad = torch.where(mask, -advantages[:, None] / tokens.sum(), 0.0)
    torch.testing.assert_close(logp.grad, expected_grad)


def test_aggregations_weight_rows_as_documented():
    behaviour = torch.zeros(3, 4, dtype=F64)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    advantages = torch.tensor([2.0, -1.0, 5.0], dtype=F64)

    def loss(**kw):
        return grpo_loss_ref(behaviour, behaviour, advantages, mask, **kw)[0].item()

    assert loss(aggregation="token_mean") == pytest.approx(-(2.0 - 3.0) / 4)
    # Mean over the two non-empty rows of each row's token mean.
    assert loss(aggregation="seq_mean_token_mean") == pytest.approx(-(2.0 - 1.0) / 2)
    # Dr. GRPO: token sum over rows * max_tokens (default: the padded length 4).
    assert loss(aggregation="constant") == pytest.approx(-(2.0 - 3.0) / (3 * 4))
    assert loss(aggregation="constant", max_tokens=10) == pytest.approx(-(2.0 - 3.0) / (3 * 10))


def test_clip_fractions_count_binding_clips_only():
    behaviour = torch.zeros(4, 1, dtype=F64)
    logp = torch.log(torch.tensor([[0.5], [0.5], [1.5], [1.5]], dtype=F64))
    advantages = torch.tensor([-1.0, 1.0, 1.0, -1.0], dtype=F64)
    mask = torch.ones(4, 1, dtype=torch.bool)
    x = logp.clone().requires_grad_()
    loss, stats = grpo_loss_ref(x, behaviour, advantages, mask, eps_low=0.2, eps_high=0.3)
    # Row 0: A<0 and r<0.8 (low clip); row 2: A>0 and r>1.3 (high clip); rows 1, 3 unclipped.
    assert stats["clip_frac_low"].item() == pytest.approx(0.25)
    assert stats["clip_frac_high"].item() == pytest.approx(0.25)
    assert loss.item() == pytest.approx(-(0.8 * -1 + 0.5 + 1.3 - 1.5) / 4)
    loss.backward()
    torch.testing.assert_close(
        x.grad, torch.tensor([[0.0], [-0.5 / 4], [0.0], [1.5 / 4]], dtype=F64)
    )


def test_sequence_ratio_is_exp_of_mean_token_log_ratio():
    logp, behaviour, advantages, mask = _batch(rows=1, length=7, seed=5)
    _, stats = grpo_loss_ref(logp, behaviour, advantages, mask, ratio_level="sequence")
    expected = torch.exp((logp - behaviour)[mask].mean())
    assert stats["ratio_mean"].item() == pytest.approx(expected.item(), rel=1e-12)
    assert stats["ratio_max"].item() == pytest.approx(expected.item(), rel=1e-12)


def test_ess_of_known_weights():
    behaviour = torch.zeros(1, 4, dtype=F64)
    logp = torch.log(torch.tensor([[1.0, 2.0, 3.0, 7.0]], dtype=F64))
    mask = torch.tensor([[True, True, True, False]])
    _, stats = grpo_loss_ref(logp, behaviour, torch.ones(1, dtype=F64), mask)
    assert stats["ess"].item() == pytest.approx(36 / (3 * 14))
    assert stats["approx_kl"].item() == pytest.approx(
        sum(w - 1 - math.log(w) for w in (1.0, 2.0, 3.0)) / 3
    )
    # A huge log ratio must not overflow the ESS: one weight dominates, so ESS -> 1/n.
    huge = torch.tensor([[800.0, 0.0, 0.0, 0.0]], dtype=F64)
    _, stats = grpo_loss_ref(huge, behaviour, torch.ones(1, dtype=F64), mask)
    assert stats["ess"].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("estimator", "value"),
    [("k1", lambda d: -d), ("k2", lambda d: d * d / 2), ("k3", lambda d: math.exp(d) - 1 - d)],
)
def test_kl_estimators_and_beta(estimator, value):
    behaviour = torch.zeros(1, 3, dtype=F64)
    ref = torch.tensor([[0.3, -0.2, 0.5]], dtype=F64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    advantages = torch.tensor([0.0], dtype=F64)
    loss, stats = grpo_loss_ref(
        behaviour, behaviour, advantages, mask, ref_logp=ref, beta=0.5, kl_estimator=estimator
    )
    expected = sum(value(d) for d in (0.3, -0.2, 0.5)) / 3
    assert stats["ref_kl"].item() == pytest.approx(expected, rel=1e-12)
    assert loss.item() == pytest.approx(0.5 * expected, rel=1e-12)


def test_decoupled_objective_weights_by_truncated_behaviour_to_proximal_ratio():
    behaviour = torch.zeros(1, 2, dtype=F64)
    proximal = torch.log(torch.tensor([[0.5, 4.0]], dtype=F64))
    logp = proximal.clone().requires_grad_()
    mask = torch.ones(1, 2, dtype=torch.bool)
    advantages = torch.tensor([1.0], dtype=F64)
    loss, stats = grpo_loss_ref(
        logp, behaviour, advantages, mask, proximal_logp=proximal, is_cap=2.0
    )
    # r = 1 against the proximal policy; w = min(π_prox/μ, 2) = (0.5, 2).
    assert loss.item() == pytest.approx(-(0.5 + 2.0) / 2)
    assert stats["is_trunc_frac"].item() == pytest.approx(0.5)
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.25, -1.0]], dtype=F64))


def test_truncated_importance_sampling_without_proximal_is_aipo():
    behaviour = torch.zeros(1, 3, dtype=F64)
    logp = torch.log(torch.tensor([[0.5, 1.5, 5.0]], dtype=F64)).requires_grad_()
    mask = torch.ones(1, 3, dtype=torch.bool)
    advantages = torch.tensor([-2.0], dtype=F64)
    loss, _ = grpo_loss_ref(logp, behaviour, advantages, mask, is_cap=3.0)
    weights = torch.tensor([[0.5, 1.5, 3.0]], dtype=F64)
    assert loss.item() == pytest.approx((2.0 * weights).sum().item() / 3)
    loss.backward()
    # REINFORCE with the truncated weight held constant: ∂/∂θ = -min(ρ, C) A / N.
    torch.testing.assert_close(logp.grad, 2.0 * weights / 3)


def test_proximal_equal_to_behaviour_is_standard_grpo():
    logp, behaviour, advantages, mask = _batch(seed=6)
    plain = grpo_loss_ref(logp, behaviour, advantages, mask)[0]
    decoupled = grpo_loss_ref(logp, behaviour, advantages, mask, proximal_logp=behaviour)[0]
    assert decoupled.item() == pytest.approx(plain.item(), rel=1e-12)


def test_masked_rows_and_padding_never_leak():
    logp, behaviour, advantages, mask = _batch(seed=7)
    mask[1] = False
    dirty_logp = torch.where(mask, logp, torch.nan)
    dirty_behaviour = torch.where(mask, behaviour, torch.inf)
    for aggregation in ("token_mean", "seq_mean_token_mean", "constant"):
        for level in ("token", "sequence"):
            x = dirty_logp.clone().requires_grad_()
            kw = dict(
                aggregation=aggregation, ratio_level=level, ref_logp=dirty_behaviour, beta=0.1
            )
            loss, stats = grpo_loss_ref(x, dirty_behaviour, advantages, mask, **kw)
            clean = grpo_loss_ref(
                logp, behaviour, advantages, mask, **{**kw, "ref_logp": behaviour}
            )
            assert loss.item() == pytest.approx(clean[0].item(), rel=1e-12)
            assert all(torch.isfinite(v) for v in stats.values())
            loss.backward()
            assert torch.isfinite(x.grad).all()
            assert (x.grad[~mask] == 0).all()


def test_fully_masked_batch_gives_zero_loss_and_on_policy_stats():
    logp, behaviour, advantages, _ = _batch(seed=8)
    mask = torch.zeros_like(logp, dtype=torch.bool)
    x = logp.clone().requires_grad_()
    loss, stats = grpo_loss_ref(x, behaviour, advantages, mask, ref_logp=behaviour)
    loss.backward()
    assert loss.item() == 0.0
    assert (x.grad == 0).all()
    assert {k: v.item() for k, v in stats.items()} == {
        "clip_frac_low": 0.0,
        "clip_frac_high": 0.0,
        "ratio_mean": 1.0,
        "ratio_max": 1.0,
        "is_trunc_frac": 0.0,
        "ess": 1.0,
        "approx_kl": 0.0,
        "ref_kl": 0.0,
    }


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "constant"])
def test_reference_gradient_passes_gradcheck(level, aggregation):
    logp, behaviour, advantages, mask = _batch(rows=3, length=5, seed=9)
    g = _gen(10)
    proximal = behaviour + 0.2 * torch.randn(3, 5, generator=g, dtype=F64)
    ref = behaviour + 0.3 * torch.randn(3, 5, generator=g, dtype=F64)

    def loss(x):
        return grpo_loss_ref(
            x, behaviour, advantages, mask, proximal_logp=proximal, ref_logp=ref, beta=0.2,
            is_cap=1.5, ratio_level=level, aggregation=aggregation, eps_low=0.1, eps_high=0.3,
        )[0]  # fmt: skip

    assert torch.autograd.gradcheck(loss, (logp.clone().requires_grad_(),))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.1}, "needs ref_logp"),
        ({"ratio_level": "row"}, "ratio_level='row'"),
        ({"kl_estimator": "k4"}, "kl_estimator='k4'"),
        ({"aggregation": "sum"}, "aggregation='sum'"),
        ({"eps_low": -0.1}, "eps_low"),
        ({"eps_high": math.inf}, "eps_high"),
        ({"is_cap": 0.0}, "is_cap"),
        ({"max_tokens": 8}, "only used by aggregation='constant'"),
        ({"max_tokens": 0, "aggregation": "constant"}, "max_tokens"),
        ({"ref_logp": torch.zeros(4, 8, dtype=F64)}, "ref_logp: expected shape"),
        (
            {"proximal_logp": torch.zeros(4, 9, dtype=torch.int64)},
            "proximal_logp: unsupported dtype",
        ),
    ],
)
def test_loss_reference_refuses_bad_options(kwargs, message):
    logp, behaviour, advantages, mask = _batch()
    with pytest.raises(ValueError, match=message):
        grpo_loss_ref(logp, behaviour, advantages, mask, **kwargs)


def test_loss_reference_refuses_mismatched_tensors():
    logp, behaviour, advantages, mask = _batch()
    with pytest.raises(ValueError, match="behaviour_logp: expected shape"):
        grpo_loss_ref(logp, behaviour[:, :-1], advantages, mask)
    with pytest.raises(ValueError, match="advantages: expected shape"):
        grpo_loss_ref(logp, behaviour, advantages[:, None], mask)
    with pytest.raises(ValueError, match="mask: expected shape"):
        grpo_loss_ref(logp, behaviour, advantages, mask.T)
    with pytest.raises(ValueError, match="behaviour_logp is on meta"):
        grpo_loss_ref(logp, behaviour.to("meta"), advantages, mask)
