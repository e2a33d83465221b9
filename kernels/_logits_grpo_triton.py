"""Triton kernels of the one-read logits -> GRPO loss path (see ``logits_loss``).

``logits_grpo_onepass_kernel``: one program per position. It streams the row's logits once
for the log-sum-exp (one ``exp`` per logit, as ``_logprob_triton``'s forward does), takes the
target's log-prob ``θ``, evaluates the token-level clipped surrogate's derivative ``∂ℓ/∂θ``
there (it depends on ``θ`` alone: the ratio is per token), and, in the same program, streams
the row again writing ``dlogits = a · ∂ℓ/∂θ · (onehot - p) / T``. A skipped position (mask 0)
reads nothing and writes an exact-zero row.

HBM traffic, predicted from the access pattern and not measured: the second read follows the
first within one program, so it comes from L2 when the row (297 KB in bf16 at V = 151,936) is
still there. Then a logit costs one read and one write (4 bytes in bf16) against the two-pass
path's 6. Whether it is still there depends on how many rows are in flight: the 50 MB L2 of an
H100 or H200 holds about 170 such rows. This launch (one program per row, the log-prob
forward's 2,048-wide, 4-warp tile, 48 registers per thread compiled for sm_90) fits 10 programs
on each of the 132 SMs, 1,320 rows in flight: while one program streams its row once, the
others stream about 390 MB, so the re-read is predicted to come from HBM (6 bytes per logit).
Sizing the rows in flight to L2 (about one program per SM) would then need each program to keep
about 5x more loads in flight to hold the bandwidth; that launch shape is a GPU tuning step, not
taken here.

``scale_kernel``: the backward multiplies the stored gradient by the upstream gradient, read
on the device; every program returns at once when it is exactly 1 (what ``loss.backward()``
passes), so the usual backward moves no bytes and never synchronises with the host.

``dlogits`` may be ``logits`` itself (the in-place option): each element is read and then
written by the same program.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def logits_grpo_onepass_kernel(
    logits_ptr,
    targets_ptr,
    keep_ptr,  # [M] uint8: 0 skips the position
    behaviour_ptr,  # [M] float32: μ per position
    adv_ptr,  # [M] float32: the row's advantage, per position
    weight_ptr,  # [M] float32: the row's aggregation weight a_i, per position
    logp_ptr,  # [M] float32 out: θ (0 where skipped)
    grad_ptr,  # [M, V] out, logits' dtype: dlogits for an upstream gradient of 1
    n_vocab,
    stride_row,
    stride_grad_row,
    inv_temperature,
    eps_low,
    eps_high,
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    cols = tl.arange(0, BLOCK_V)
    keep = tl.load(keep_ptr + row) != 0
    n_live = tl.where(keep, n_vocab, 0)  # a skipped row's loops read nothing

    m = tl.max(tl.full((BLOCK_V,), float("-inf"), tl.float32), axis=0)
    s = tl.zeros((BLOCK_V,), tl.float32)
    for start in range(0, n_live, BLOCK_V):
        idx = start + cols
        z = tl.load(row_ptr + idx, mask=idx < n_live, other=float("-inf")).to(tl.float32)
        z = z * inv_temperature
        tile_max = tl.max(z, axis=0)
        new_m = tl.where(tile_max > m, tile_max, m)
        shift = tl.where(new_m == float("-inf"), 0.0, new_m)
        s = s * tl.exp(m - shift) + tl.exp(z - shift)
        m = new_m
    shift = tl.where(m == float("-inf"), 0.0, m)
    log_sum = tl.log(tl.sum(s, axis=0))
    lse = shift + log_sum

    target = tl.load(targets_ptr + row).to(tl.int64)
    in_vocab = (target >= 0) & (target < n_vocab)
    target_logit = tl.load(row_ptr + target, mask=in_vocab & keep, other=0.0).to(tl.float32)
    target_logit = tl.where(in_vocab, target_logit * inv_temperature, float("nan"))
    theta = (target_logit - shift) - log_sum

    # The token-level clipped surrogate (reference.grpo_loss_ref, p = μ, no cap, beta = 0).
    mu = tl.load(behaviour_ptr + row)
    adv = tl.load(adv_ptr + row)
    nan_ok: tl.constexpr = tl.PropagateNan.ALL
    ratio = tl.exp(theta - mu)
    clipped = tl.minimum(
        tl.maximum(ratio, 1.0 - eps_low, propagate_nan=nan_ok), 1.0 + eps_high, propagate_nan=nan_ok
    )
    unclipped = (ratio * adv <= clipped * adv) | (ratio != ratio)
    dtheta = tl.where(unclipped, -adv * ratio, 0.0)
    coef = tl.load(weight_ptr + row) * dtheta * inv_temperature
    tl.store(logp_ptr + row, tl.where(keep, theta, 0.0))

    grad_row = grad_ptr + row * stride_grad_row
    for start in range(0, n_vocab, BLOCK_V):
        idx = start + cols
        z = tl.load(row_ptr + idx, mask=idx < n_live, other=float("-inf")).to(tl.float32)
        prob = tl.exp(z * inv_temperature - lse)
        grad = coef * (tl.where(idx == target, 1.0, 0.0) - prob)
        grad = tl.where(keep, grad, 0.0)  # exact zeros, whatever a skipped row computed
        tl.store(grad_row + idx, grad.to(grad_ptr.dtype.element_ty), mask=idx < n_vocab)


@triton.jit
def scale_kernel(grad_ptr, upstream_ptr, n_elements, BLOCK: tl.constexpr):
    """``grad *= upstream`` in place, unless ``upstream`` is exactly 1."""
    upstream = tl.load(upstream_ptr).to(tl.float32)
    if upstream != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = offs < n_elements
        grad = tl.load(grad_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        tl.store(grad_ptr + offs, (grad * upstream).to(grad_ptr.dtype.element_ty), mask=inside)
