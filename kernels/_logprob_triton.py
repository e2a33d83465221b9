"""Triton kernels for per-token log-probs from logits: an online softmax over vocabulary tiles.

Import this module through ``stalesim.kernels.backend.load_triton_module("_logprob_triton")``,
so that on a machine without CUDA the interpreter is switched on before the kernels are
decorated.

One program handles one row and streams its ``V`` logits once, keeping a running maximum and a
running sum of exponentials, so the forward reads the logits exactly once and saves only the
row's log-sum-exp. The grid is one-dimensional (``N`` programs): CUDA allows 2**31 - 1 programs
along the first grid axis, so long sequences never hit the 65,535 limit of the other axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class LogprobLaunch:
    """Tile width and warps for one launch.

    On a GPU a row is streamed in 4,096-wide tiles (8 KiB of bf16 per program in flight, enough
    outstanding loads per SM to saturate HBM with several resident programs). Under the
    interpreter, small tiles keep several tiles per row even on the small shapes tests use.
    """

    block_v: int
    num_warps: int


def launch_config(n_vocab: int, device: torch.device) -> LogprobLaunch:
    """The tile width and warp count for rows of ``n_vocab`` logits on ``device``."""
    if device.type != "cuda":
        return LogprobLaunch(block_v=64, num_warps=1)
    block_v = min(4096, triton.next_power_of_2(n_vocab))
    return LogprobLaunch(block_v=block_v, num_warps=8 if block_v >= 2048 else 4)


@triton.jit
def _logprob_forward_kernel(
    logits_ptr,
    targets_ptr,
    logp_ptr,
    lse_ptr,
    entropy_ptr,
    n_vocab,
    stride_row,
    inv_temperature,
    BLOCK_V: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    cols = tl.arange(0, BLOCK_V)

    running_max = tl.full((), float("-inf"), tl.float32)
    running_sum = tl.zeros((), tl.float32)
    # sum_j exp(z_j - max) * (z_j - max), for the entropy log(sum) - weighted / sum.
    running_weighted = tl.zeros((), tl.float32)
    for start in range(0, n_vocab, BLOCK_V):
        idx = start + cols
        z = tl.load(row_ptr + idx, mask=idx < n_vocab, other=float("-inf")).to(tl.float32)
        z = z * inv_temperature
        new_max = tl.maximum(running_max, tl.max(z, axis=0))
        # While every logit seen so far is -inf the max is -inf too, and z - max would be
        # -inf - -inf = NaN; shifting by 0 instead keeps exp() at an exact 0.
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        rescale = tl.exp(running_max - shift)
        e = tl.exp(z - shift)
        if WITH_ENTROPY:
            # Moving the reference point from the old max to the new one adds
            # (old - new) * sum; with no finite logit yet, the sum is 0 and so is the term.
            moved = tl.where(running_max == float("-inf"), 0.0, running_max - shift) * running_sum
            # A -inf logit has weight exp(-inf) = 0; 0 * -inf would be NaN.
            tile = e * tl.where(z == float("-inf"), 0.0, z - shift)
            running_weighted = rescale * (running_weighted + moved) + tl.sum(tile, axis=0)
        running_sum = running_sum * rescale + tl.sum(e, axis=0)
        running_max = new_max

    shift = tl.where(running_max == float("-inf"), 0.0, running_max)
    log_sum = tl.log(running_sum)
    target = tl.load(targets_ptr + row).to(tl.int64)
    target_logit = tl.load(row_ptr + target).to(tl.float32) * inv_temperature
    tl.store(lse_ptr + row, shift + log_sum)
    # Subtracting the max before the sum keeps full float32 precision when logits are large
    # (at 1e4 one float32 ulp of the log-sum-exp is already 1e-3).
    tl.store(logp_ptr + row, (target_logit - shift) - log_sum)
    if WITH_ENTROPY:
        tl.store(entropy_ptr + row, log_sum - running_weighted / running_sum)


@triton.jit
def _logprob_backward_kernel(
    logits_ptr,
    targets_ptr,
    lse_ptr,
    entropy_ptr,
    grad_logp_ptr,
    grad_entropy_ptr,
    grad_logits_ptr,
    n_vocab,
    stride_row,
    stride_grad_row,
    inv_temperature,
    BLOCK_V: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    grad_row_ptr = grad_logits_ptr + row * stride_grad_row
    cols = tl.arange(0, BLOCK_V)

    lse = tl.load(lse_ptr + row)
    target = tl.load(targets_ptr + row).to(tl.int64)
    # d logp / d z_j = onehot_j - p_j and d entropy / d z_j = -p_j (log p_j + entropy), with
    # z = logits / T; p is recomputed from the saved log-sum-exp, so no [N, V] probability
    # tensor is ever kept.
    g_logp = tl.load(grad_logp_ptr + row).to(tl.float32) * inv_temperature
    if WITH_ENTROPY:
        g_entropy = tl.load(grad_entropy_ptr + row).to(tl.float32) * inv_temperature
        entropy = tl.load(entropy_ptr + row)
    for start in range(0, n_vocab, BLOCK_V):
        idx = start + cols
        in_vocab = idx < n_vocab
        z = tl.load(row_ptr + idx, mask=in_vocab, other=float("-inf")).to(tl.float32)
        log_prob = z * inv_temperature - lse
        prob = tl.exp(log_prob)
        grad = g_logp * (tl.where(idx == target, 1.0, 0.0) - prob)
        if WITH_ENTROPY:
            # p log p is 0 at p = 0 (a -inf logit), not 0 * -inf.
            term = prob * tl.where(prob == 0.0, 0.0, log_prob + entropy)
            grad -= g_entropy * term
        tl.store(grad_row_ptr + idx, grad.to(grad_logits_ptr.dtype.element_ty), mask=in_vocab)


def logprob_forward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    logp: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor | None = None,
) -> None:
    """Fill ``logp[N]``, ``lse[N]`` and, if given, ``entropy[N]`` (float32) from
    ``logits[N, V]`` (unit column stride)."""
    n_rows, n_vocab = logits.shape
    if n_rows == 0:
        return
    cfg = launch_config(n_vocab, logits.device)
    _logprob_forward_kernel[(n_rows,)](
        logits,
        targets,
        logp,
        lse,
        entropy if entropy is not None else lse,
        n_vocab,
        logits.stride(0),
        1.0 / temperature,
        BLOCK_V=cfg.block_v,
        WITH_ENTROPY=entropy is not None,
        num_warps=cfg.num_warps,
    )


def logprob_backward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    grad_logp: torch.Tensor,
    temperature: float,
    grad_logits: torch.Tensor,
    entropy: torch.Tensor | None = None,
    grad_entropy: torch.Tensor | None = None,
) -> None:
    """Fill ``grad_logits[N, V]`` from the upstream gradients ``grad_logp[N]`` and, with the
    saved ``entropy``, ``grad_entropy[N]`` (contiguous float32)."""
    n_rows, n_vocab = logits.shape
    if n_rows == 0:
        return
    cfg = launch_config(n_vocab, logits.device)
    with_entropy = entropy is not None and grad_entropy is not None
    _logprob_backward_kernel[(n_rows,)](
        logits,
        targets,
        lse,
        entropy if with_entropy else lse,
        grad_logp,
        grad_entropy if with_entropy else grad_logp,
        grad_logits,
        n_vocab,
        logits.stride(0),
        grad_logits.stride(0),
        1.0 / temperature,
        BLOCK_V=cfg.block_v,
        WITH_ENTROPY=with_entropy,
        num_warps=cfg.num_warps,
    )
