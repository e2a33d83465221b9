r"""The specification of every kernel, in plain torch.

Each function here states the exact math a Triton kernel must reproduce, and is what the
kernels are tested against (in float64) and what training runs on CPU. Computation happens in
float32, or in float64 when the inputs are float64; nothing here is tuned for speed.

Notation used throughout: ``R`` rows (samples), each padded to ``L`` tokens; ``m[i, t]`` is 1
for a real token and 0 for padding (any nonzero mask value counts as 1); ``n_i = Σ_t m[i, t]``
is the number of tokens of row ``i``; ``N = Σ_i n_i``. ``sg(·)`` is stop-gradient. Log-probs
are natural logarithms.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from stalesim.kernels.checks import (
    REFERENCE_FLOAT_DTYPES,
    check_fused_linear_inputs,
    check_grpo_loss_inputs,
    check_logprob_inputs,
    require_choice,
    require_dtype,
    require_number,
    require_shape,
    require_tensor,
)
from stalesim.kernels.options import GRPOOptions, resolve_options

ADVANTAGE_SCALES = ("group", "batch", "none")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference computes in for inputs of ``dtype``: float64 stays, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# Log-probs
# --------------------------------------------------------------------------------------------


def token_logprobs_ref(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Log-probability of each target token under the tempered softmax of its logits.

    For row ``n`` with logits ``z[n, :]`` (``V`` entries) and temperature ``T``:

    .. math::
        \log p[n] = z[n, y_n]/T - \log \sum_v \exp(z[n, v]/T)

    and, with ``return_entropy``, the entropy of the same tempered distribution,
    ``H[n] = -Σ_v q_v log q_v`` with ``q = softmax(z[n]/T)`` and ``0·log 0 = 0`` (so ``-inf``
    logits contribute nothing).

    The gradient w.r.t. ``logits`` is ``(onehot(y) - q) / T`` times the upstream gradient.
    ``-inf`` logits are allowed (their probability is 0); a ``-inf`` target logit gives
    ``log p = -inf``. Output is float32 (float64 for float64 input), shape ``[N]``.
    """
    temperature = check_logprob_inputs(logits, targets, temperature, REFERENCE_FLOAT_DTYPES)
    return _tempered_logprobs(logits, targets, temperature, return_entropy)


def _tempered_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: float, return_entropy: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_logprobs_ref` on inputs already checked."""
    z = logits.to(compute_dtype(logits.dtype)) / temperature
    log_q = torch.log_softmax(z, dim=-1)
    logp = log_q.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    if not return_entropy:
        return logp
    q = log_q.exp()
    # log q is -inf where q is 0; replacing it first keeps both value and gradient finite.
    safe_log_q = torch.where(q > 0, log_q, torch.zeros_like(log_q))
    entropy = -(q * safe_log_q).sum(dim=-1)
    return logp, entropy


def fused_linear_logprobs_ref(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Log-probs of ``targets`` under ``softmax((hidden @ weight.T + bias) / T)``.

    ``hidden[N, H]``, ``weight[V, H]``, ``bias[V]``: the logits are
    ``z = hidden @ weight.T + bias`` computed in float32 (float64 for float64 inputs), then
    exactly :func:`token_logprobs_ref`. Gradients flow to ``hidden``, ``weight`` and ``bias``.
    This reference materialises the ``[N, V]`` logits; the kernel must not.
    """
    temperature = check_fused_linear_inputs(
        hidden, weight, targets, temperature, bias, REFERENCE_FLOAT_DTYPES
    )
    dtype = compute_dtype(hidden.dtype)
    logits = hidden.to(dtype) @ weight.to(dtype).T
    if bias is not None:
        logits = logits + bias.to(dtype)
    return _tempered_logprobs(logits, targets, temperature)


# --------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------


def group_advantages_ref(
    rewards: torch.Tensor,
    scale: Literal["group", "batch", "none"] = "group",
    eps: float = 1e-6,
) -> torch.Tensor:
    r"""Advantages of ``G`` responses per prompt, from their rewards ``r[B, G]``.

    Every scale first subtracts the group mean, ``r̄_b = (1/G) Σ_g r[b, g]``:

    * ``"group"`` (GRPO): ``A[b, g] = (r[b, g] - r̄_b) / (std_b + eps)`` with ``std_b`` the
      unbiased (Bessel-corrected, divide by ``G - 1``) standard deviation of group ``b``;
    * ``"batch"`` (Lite PPO / TRL ``scale_rewards="batch"``): ``A = (r - r̄_b) / (std + eps)``
      with ``std`` the unbiased standard deviation of all ``B·G`` rewards;
    * ``"none"`` (Dr. GRPO): ``A = r - r̄_b``.

    A group whose rewards are all equal gets advantages exactly 0 under every scale, for any
    ``eps`` (including 0). Output is float32
    (float64 for float64 input), shape ``[B, G]``; it does not require grad.
    """
    require_tensor("rewards", rewards)
    require_shape("rewards", rewards, (None, None), "[B, G]")
    require_dtype("rewards", rewards, REFERENCE_FLOAT_DTYPES)
    require_choice("scale", scale, ADVANTAGE_SCALES)
    require_number("eps", eps, minimum=0.0)
    groups, group_size = rewards.shape
    if scale == "group" and group_size < 2:
        raise ValueError(
            f"rewards: scale='group' needs G >= 2 responses per group, got G={group_size}"
        )
    if scale == "batch" and groups * group_size < 2:
        raise ValueError("rewards: scale='batch' needs at least 2 rewards in the batch")
    r = rewards.detach().to(compute_dtype(rewards.dtype))
    if r.numel() == 0:
        return r.clone()
    # The rounded mean of equal rewards can differ from them by an ulp; those groups are set to
    # exactly 0 rather than to a ratio of two rounding errors.
    constant_group = r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True)
    centred = torch.where(constant_group, 0.0, r - r.mean(dim=1, keepdim=True))
    if scale == "none":
        return centred
    std = r.std(dim=1, keepdim=True) if scale == "group" else r.std()
    # std is 0 only where every centred value is already 0; dividing by 1 keeps them 0.
    return centred / torch.where(std > 0, std + eps, 1.0)


# --------------------------------------------------------------------------------------------
# GRPO loss
# --------------------------------------------------------------------------------------------


def grpo_loss_ref(
    logp: torch.Tensor,
    behaviour_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    proximal_logp: torch.Tensor | None = None,
    options: GRPOOptions | None = None,
    **overrides: Any,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""The clipped GRPO surrogate loss with its off-policy corrections, and batch statistics.

    The options (``eps_low``, ``eps_high``, ``is_cap``, ``ratio_level``, ``kl_estimator``,
    ``beta``, ``aggregation``, ``max_tokens``) come as one :class:`GRPOOptions` in ``options``,
    or as keywords that override its fields (``grpo_loss_ref(..., eps_high=0.28)``).

    Inputs, all ``[R, L]`` except ``advantages[R]``: ``θ = logp`` (current policy, the only
    input that receives a gradient), ``μ = behaviour_logp`` (the policy that generated the
    tokens), ``A = advantages``, ``m = mask``, and optionally ``ref = ref_logp`` (reference
    policy) and ``proximal_logp``. Everything except ``θ`` is treated as a constant.

    **Proximal policy** ``p`` (the anchor of the trust region):

    * ``proximal_logp`` given — decoupled PPO (AReaL): ``p = proximal_logp``;
    * else, ``is_cap`` given — truncated importance sampling against the current policy
      (AIPO, LlamaRL): ``p = sg(θ)``, so the ratio below is 1 in value and clipping never acts;
    * else — standard PPO/GRPO: ``p = μ``.

    **Ratio and behaviour weight** at ``ratio_level="token"``::

        r[i,t] = exp(θ[i,t] - p[i,t])
        w[i,t] = sg(min(exp(p[i,t] - μ[i,t]), C))          # C = is_cap, or +inf when None

    At ``ratio_level="sequence"`` (GSPO, length-normalised) both use the row mean of the log
    ratio over its tokens, the same for every token of row ``i``::

        r[i,t] = s_i = exp( Σ_t m[i,t] (θ[i,t] - p[i,t]) / max(n_i, 1) )
        w[i,t] = sg(min(exp( Σ_t m[i,t] (p[i,t] - μ[i,t]) / max(n_i, 1) ), C))

    (With ``p = μ``, ``w = 1``.)

    **Non-finite values**: NaN or ``inf`` in a masked-in token of ``logp``, ``behaviour_logp``,
    ``proximal_logp`` or ``ref_logp``, or in the advantage of a row with tokens, makes the loss
    NaN (it is never silently dropped); the Triton kernels do the same.

    **Per-token loss**, with ``clip(r) = min(max(r, 1 - eps_low), 1 + eps_high)``::

        ℓ[i,t] = - w[i,t] · min( r[i,t] A_i, clip(r[i,t]) A_i )  +  beta · k[i,t]

    The gradient of the surrogate w.r.t. ``θ`` is ``-w A r`` times ``∂log r/∂θ`` where the
    unclipped term is the minimum (ties, including the clip boundaries, count as unclipped), and
    0 where the clip binds: ``A < 0, r < 1 - eps_low`` or ``A > 0, r > 1 + eps_high``.

    **KL to the reference** (only with ``beta > 0``, which requires ``ref_logp``), Schulman's
    estimators of ``KL(π_θ ‖ π_ref)`` with ``d = ref - θ``:
    ``k1 = -d``, ``k2 = d² / 2``, ``k3 = exp(d) - 1 - d`` (GRPO's choice).

    **Aggregation** ``loss = Σ_{i,t} m[i,t] · a_i · ℓ[i,t]`` with row weight ``a_i``:

    * ``"token_mean"`` (DAPO): ``a_i = 1 / max(N, 1)`` — every token of the batch counts equally;
    * ``"seq_mean_token_mean"`` (GRPO): ``a_i = 1 / (max(n_i, 1) · max(R', 1))`` with ``R'``
      the number of rows that have at least one token — the mean over non-empty rows of each
      row's token mean;
    * ``"constant"`` (Dr. GRPO): ``a_i = 1 / (R · max_tokens)``, ``max_tokens`` defaulting to
      ``L`` — the token sum divided by a constant that does not depend on response lengths.

    Masked tokens never reach the arithmetic (they are replaced before any ``exp``), so padding
    may hold any value, even NaN; a fully masked row contributes loss 0 and gets gradient 0.
    A fully masked batch gives loss 0.

    **Statistics** (a dict of detached 0-dim tensors on the inputs' device, float32 or float64
    like the loss). Means are over the ``N`` masked-in tokens (token-weighted); with ``N = 0``
    every statistic takes its on-policy value (fractions 0, ratios 1, ``ess`` 1, KLs 0):

    * ``clip_frac_low``  — fraction of tokens with ``A < 0`` and ``r < 1 - eps_low``;
    * ``clip_frac_high`` — fraction of tokens with ``A > 0`` and ``r > 1 + eps_high``;
    * ``ratio_mean``, ``ratio_max`` — mean and max of ``r`` (the clipped ratio, vs ``p``);
    * ``is_trunc_frac`` — fraction of tokens whose behaviour weight was truncated by ``C``;
    * ``ess`` — normalised effective sample size of the token importance weights of the current
      policy w.r.t. the behaviour policy, ``ρ = exp(θ - μ)``:
      ``(Σ ρ)² / (N Σ ρ²)`` in ``(0, 1]``, 1 when on-policy (computed with a max shift, so it
      stays finite for large log ratios);
    * ``approx_kl`` — ``mean(ρ - 1 - log ρ)``, the k3 estimate of ``KL(μ ‖ π_θ)`` from tokens
      sampled from ``μ``;
    * ``ref_kl`` — present only when ``ref_logp`` is given: the mean of the chosen estimator
      ``k`` above (``KL(π_θ ‖ π_ref)``).
    """
    opts = resolve_options(options, overrides)
    check_grpo_loss_inputs(
        logp,
        behaviour_logp,
        advantages,
        mask,
        ref_logp=ref_logp,
        proximal_logp=proximal_logp,
        options=opts,
        allowed=REFERENCE_FLOAT_DTYPES,
    )
    eps_low, eps_high, is_cap, beta = opts.eps_low, opts.eps_high, opts.is_cap, opts.beta
    ratio_level, kl_estimator, aggregation = opts.ratio_level, opts.kl_estimator, opts.aggregation
    max_tokens = opts.max_tokens
    dtype = compute_dtype(logp.dtype)
    rows, length = logp.shape
    m = mask != 0
    mf = m.to(dtype)

    def constant(t: torch.Tensor) -> torch.Tensor:
        # Padding is replaced by 0 so that it never produces inf/NaN in values or gradients.
        return torch.where(m, t.detach().to(dtype), torch.zeros((), dtype=dtype, device=t.device))

    theta = torch.where(m, logp.to(dtype), torch.zeros((), dtype=dtype, device=logp.device))
    mu = constant(behaviour_logp)
    adv = advantages.detach().to(dtype).unsqueeze(1)
    if proximal_logp is not None:
        prox = constant(proximal_logp)
    elif is_cap is not None:
        prox = theta.detach()
    else:
        prox = mu

    n_row = mf.sum(dim=1)
    log_ratio = theta - prox
    log_weight = prox - mu
    if ratio_level == "sequence":
        per_token = n_row.clamp(min=1).unsqueeze(1)
        log_ratio = ((mf * log_ratio).sum(dim=1, keepdim=True) / per_token).expand(rows, length)
        log_weight = ((mf * log_weight).sum(dim=1, keepdim=True) / per_token).expand(rows, length)
    ratio = torch.exp(log_ratio)
    weight = torch.exp(log_weight)
    truncated = torch.zeros_like(m)
    if is_cap is not None:
        truncated = weight > is_cap
        weight = weight.clamp(max=is_cap)

    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    per_token_loss = -weight * surrogate
    kl = None
    if ref_logp is not None:
        kl = _kl_estimate(constant(ref_logp) - theta, kl_estimator)
        if beta > 0:
            per_token_loss = per_token_loss + beta * kl

    total_tokens = n_row.sum()
    if aggregation == "token_mean":
        row_weight = (1 / total_tokens.clamp(min=1)).expand(rows)
    elif aggregation == "seq_mean_token_mean":
        nonempty_rows = (n_row > 0).sum().clamp(min=1).to(dtype)
        row_weight = 1 / (n_row.clamp(min=1) * nonempty_rows)
    else:
        row_weight = torch.full(
            (rows,), 1 / (rows * (max_tokens or length)), dtype=dtype, device=logp.device
        )
    loss = (torch.where(m, per_token_loss, 0.0) * row_weight.unsqueeze(1)).sum()

    with torch.no_grad():
        stats = _grpo_stats(
            m=m,
            total_tokens=total_tokens,
            ratio=ratio,
            adv=adv,
            eps_low=eps_low,
            eps_high=eps_high,
            truncated=truncated,
            behaviour_log_ratio=theta - mu,
            kl=kl,
        )
    return loss, stats


def _kl_estimate(d: torch.Tensor, estimator: str) -> torch.Tensor:
    """Schulman's estimator of KL(π_θ ‖ π_ref) from ``d = log π_ref - log π_θ``."""
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    return torch.exp(d) - 1 - d


def _grpo_stats(
    *,
    m: torch.Tensor,
    total_tokens: torch.Tensor,
    ratio: torch.Tensor,
    adv: torch.Tensor,
    eps_low: float,
    eps_high: float,
    truncated: torch.Tensor,
    behaviour_log_ratio: torch.Tensor,
    kl: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """The statistics documented in :func:`grpo_loss_ref` (on-policy values when empty)."""
    dtype = ratio.dtype
    empty = total_tokens == 0

    def full(value: float) -> torch.Tensor:
        return torch.full((), value, dtype=dtype, device=ratio.device)

    def masked_max(x: torch.Tensor) -> torch.Tensor:
        # The extra -inf element keeps max() defined for an empty batch.
        return torch.cat([torch.where(m, x, -torch.inf).flatten(), full(-torch.inf)[None]]).max()

    count = total_tokens.clamp(min=1)

    def mean(x: torch.Tensor, on_policy_value: float) -> torch.Tensor:
        value = torch.where(m, x.to(dtype), 0.0).sum() / count
        return torch.where(empty, full(on_policy_value), value)

    ratio = ratio.detach()
    low = (adv < 0) & (ratio < 1 - eps_low)
    high = (adv > 0) & (ratio > 1 + eps_high)
    d = behaviour_log_ratio.detach()
    shift = masked_max(d).nan_to_num(neginf=0.0)
    shifted = torch.where(m, torch.exp(d - shift), 0.0)
    ess = shifted.sum() ** 2 / (count * (shifted * shifted).sum()).clamp(
        min=torch.finfo(dtype).tiny
    )
    rho = torch.exp(d)
    stats = {
        "clip_frac_low": mean(low, 0.0),
        "clip_frac_high": mean(high, 0.0),
        "ratio_mean": mean(ratio, 1.0),
        "ratio_max": torch.where(empty, full(1.0), masked_max(ratio)),
        "is_trunc_frac": mean(truncated, 0.0),
        "ess": torch.where(empty, full(1.0), ess),
        "approx_kl": mean(rho - 1 - d, 0.0),
    }
    if kl is not None:
        stats["ref_kl"] = mean(kl.detach(), 0.0)
    return stats
