"""Triton kernels for per-token log-probs from logits: an online softmax over vocabulary tiles.

Import this module through ``stalesim.kernels.backend.load_triton_module("_logprob_triton")``,
so that on a machine without CUDA the interpreter is switched on before the kernels are
decorated.

Forward: one program per row streams its ``V`` logits once, in tiles. The row keeps one running
maximum, raised once per tile by a block reduction, and each lane of the tile its own sum of
exponentials against it (and, for the entropy, of ``exp(z - m) (z - m)``): one ``exp`` per logit
and one fused multiply-add, the rescaling being a per-tile scalar. The lanes are summed into the
row's log-sum-exp once, after the loop. Only that float32 per row is saved. (An earlier design
kept a running maximum per lane, which costs a second ``exp`` per logit; on an H200 it reached
69% of copy bandwidth against this one's 91%: ``reports/results/gpu/h200-2026-11-27``.)

Few rows (``forward_splits``): when the rows cannot give each SM :data:`PROGRAMS_PER_SM`
programs (256 rows on 132 SMs), each row's vocabulary is split over several programs of whole
tiles, each writing its partial max, sum of exponentials and entropy term, combined per row by
one more small launch; the bytes read are the same, spread over enough programs to keep HBM
busy.

Backward: a two-dimensional grid, programs ``(row, tile)``: each recomputes the probabilities of
one tile of its row from the saved log-sum-exp and writes that tile of ``dlogits``, so a row's
tiles are spread over the GPU instead of walked by one program. Rows go on the first grid axis
(up to 2**31 - 1 programs); the vocabulary's few tiles on the second (the 65,535 limit is V/4,096).

Target indices are read on the device: a target outside ``[0, V)`` reads no memory and gives a
NaN log-prob (the wrapper refuses it with a ``ValueError`` when the range check is on; it never
synchronises with the host by default).

HBM traffic per logit of ``B`` bytes: forward ``B`` (one
read: 2.49 GB for N=8,192, V=151,936 in bf16, 0.75 ms at 3.35 TB/s), backward ``2B`` (one read,
one write of dlogits). The whole log-probs -> GRPO loss path on logits is therefore ``3B`` per
logit plus the loss's per-token tensors: 6 bytes per bf16 logit, the floor of the bench's
``logits -> grpo_loss`` case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import triton
import triton.language as tl


@dataclass(frozen=True)
class LogprobLaunch:
    """Tile width and warps for one launch.

    On a GPU the forward streams a row in 2,048-wide tiles with 4 warps, the fastest of the
    widths (2,048-8,192) and warps tried on an H200 at N=8,192, V=151,936
    (``reports/results/gpu/h200-2026-11-27/tune``); the backward writes 4,096-wide tiles with 8
    warps (not swept). Under the interpreter, small tiles keep several tiles per row even on
    the small shapes tests use.
    """

    block_v: int
    num_warps: int


def launch_config(
    n_vocab: int, device: torch.device, direction: Literal["forward", "backward"]
) -> LogprobLaunch:
    """The tile width and warp count for ``direction`` over rows of ``n_vocab`` logits on
    ``device``."""
    if device.type != "cuda":
        return LogprobLaunch(block_v=64, num_warps=1)
    widest = 2048 if direction == "forward" else 4096
    block_v = min(widest, triton.next_power_of_2(n_vocab))
    return LogprobLaunch(block_v=block_v, num_warps=8 if block_v >= 4096 else 4)


@triton.jit
def _logprob_forward_kernel(
    logits_ptr,
    targets_ptr,
    logp_ptr,
    lse_ptr,
    entropy_ptr,
    keep_ptr,
    n_vocab,
    stride_row,
    inv_temperature,
    BLOCK_V: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    HAS_KEEP: tl.constexpr,
):
    """One row per program. With ``HAS_KEEP``, a row whose ``keep`` byte is 0 reads no logit
    (its loop runs zero times) and writes 0 for each of its outputs. HBM: the row's V logits read once (one pass over the logits,
    ``itemsize * V`` bytes; the prefetch past the last tile is fully masked and reads nothing),
    8 or 12 bytes written; no host synchronisation anywhere."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * stride_row
    cols = tl.arange(0, BLOCK_V)
    if HAS_KEEP:
        keep = tl.load(keep_ptr + row) != 0
        # A skipped row's columns end at 0: no tile is loaded and the loop never runs.
        n_live = tl.where(keep, n_vocab, 0)
    else:
        keep = row >= 0
        n_live = n_vocab

    # m: the row's running maximum (-inf until a finite logit or +inf is seen). Per lane:
    # s = sum exp(z - shift) and, for the entropy, w = sum exp(z - shift) (z - shift), where
    # shift is m, or 0 while m = -inf (exp(z - shift) is then 0, never exp(-inf + inf)).
    m = tl.max(tl.full((BLOCK_V,), float("-inf"), tl.float32), axis=0)
    s = tl.zeros((BLOCK_V,), tl.float32)
    w = tl.zeros((BLOCK_V,), tl.float32)
    # Software pipelining by hand: the next tile's load is issued before this tile's math, so
    # each program keeps two tiles of loads in flight (Triton pipelines only loads feeding dots).
    ahead = tl.load(row_ptr + cols, mask=cols < n_live, other=float("-inf"))
    for start in range(0, n_live, BLOCK_V):
        z = ahead.to(tl.float32) * inv_temperature
        idx = start + BLOCK_V + cols
        ahead = tl.load(row_ptr + idx, mask=idx < n_live, other=float("-inf"))
        # The reduction's max may drop a NaN; exp(NaN - shift) still carries it into s. A +inf
        # logit makes the shift +inf and the row NaN (inf - inf), as the reference does.
        tile_max = tl.max(z, axis=0)
        new_m = tl.where(tile_max > m, tile_max, m)
        shift = tl.where(new_m == float("-inf"), 0.0, new_m)
        scale = tl.exp(m - shift)  # 0 while m = -inf (then s = w = 0 anyway)
        e = tl.exp(z - shift)
        if WITH_ENTROPY:
            # Old terms move by (m - shift) each before shrinking by scale; lanes with s = 0
            # and -inf logits add 0, not 0 * -inf.
            moved = tl.where(s == 0.0, 0.0, (m - shift) * s)
            w = scale * (w + moved) + tl.where(e == 0.0, 0.0, e * (z - shift))
        s = s * scale + e
        m = new_m

    shift = tl.where(m == float("-inf"), 0.0, m)
    row_sum = tl.sum(s, axis=0)
    log_sum = tl.log(row_sum)
    target = tl.load(targets_ptr + row).to(tl.int64)
    in_vocab = (target >= 0) & (target < n_vocab)
    target_logit = tl.load(row_ptr + target, mask=in_vocab & keep, other=0.0).to(tl.float32)
    target_logit = tl.where(in_vocab, target_logit * inv_temperature, float("nan"))
    tl.store(lse_ptr + row, tl.where(keep, shift + log_sum, 0.0))
    # Subtracting the max before the sum keeps full float32 precision when logits are large
    # (at 1e4 one float32 ulp of the log-sum-exp is already 1e-3).
    tl.store(logp_ptr + row, tl.where(keep, (target_logit - shift) - log_sum, 0.0))
    if WITH_ENTROPY:
        tl.store(entropy_ptr + row, tl.where(keep, log_sum - tl.sum(w, axis=0) / row_sum, 0.0))


@triton.jit
def _logprob_split_forward_kernel(
    logits_ptr,
    targets_ptr,
    part_max_ptr,
    part_sum_ptr,
    part_w_ptr,
    target_logit_ptr,
    keep_ptr,
    n_rows,
    n_vocab,
    split_len,
    stride_row,
    inv_temperature,
    BLOCK_V: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    HAS_KEEP: tl.constexpr,
):
    """Program (row, split): the forward's loop over the columns ``[split * split_len,
    (split + 1) * split_len)`` of one row (``split_len`` a whole number of tiles), writing that
    split's running max, sum of ``exp(z - max)`` and (for the entropy) of
    ``exp(z - max) (z - max)`` to ``[splits, N]`` partials, and the target's tempered logit from
    the split that holds it. HBM: the split's logits read once, 12 bytes written."""
    row = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    row_ptr = logits_ptr + row * stride_row
    cols = tl.arange(0, BLOCK_V)
    begin = split * split_len
    end = tl.minimum(begin + split_len, n_vocab)
    if HAS_KEEP:
        keep = tl.load(keep_ptr + row) != 0
        end = tl.where(keep, end, begin)
    else:
        keep = row >= 0

    m = tl.max(tl.full((BLOCK_V,), float("-inf"), tl.float32), axis=0)
    s = tl.zeros((BLOCK_V,), tl.float32)
    w = tl.zeros((BLOCK_V,), tl.float32)
    # The next tile's load is issued before this tile's math, as in the one-program forward.
    ahead = tl.load(row_ptr + begin + cols, mask=begin + cols < end, other=float("-inf"))
    for start in range(begin, end, BLOCK_V):
        z = ahead.to(tl.float32) * inv_temperature
        idx = start + BLOCK_V + cols
        ahead = tl.load(row_ptr + idx, mask=idx < end, other=float("-inf"))
        tile_max = tl.max(z, axis=0)
        new_m = tl.where(tile_max > m, tile_max, m)
        shift = tl.where(new_m == float("-inf"), 0.0, new_m)
        scale = tl.exp(m - shift)
        e = tl.exp(z - shift)
        if WITH_ENTROPY:
            moved = tl.where(s == 0.0, 0.0, (m - shift) * s)
            w = scale * (w + moved) + tl.where(e == 0.0, 0.0, e * (z - shift))
        s = s * scale + e
        m = new_m
    out = split.to(tl.int64) * n_rows + row
    tl.store(part_max_ptr + out, m)
    tl.store(part_sum_ptr + out, tl.sum(s, axis=0))
    if WITH_ENTROPY:
        tl.store(part_w_ptr + out, tl.sum(w, axis=0))
    target = tl.load(targets_ptr + row).to(tl.int64)
    here = keep & (target >= begin) & (target < end)
    target_logit = tl.load(row_ptr + target, mask=here, other=0.0).to(tl.float32)
    tl.store(target_logit_ptr + row, target_logit * inv_temperature, mask=here)


@triton.jit
def _logprob_split_combine_kernel(
    part_max_ptr,
    part_sum_ptr,
    part_w_ptr,
    target_logit_ptr,
    targets_ptr,
    keep_ptr,
    logp_ptr,
    lse_ptr,
    entropy_ptr,
    n_rows,
    n_vocab,
    n_splits,
    BLOCK: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    HAS_KEEP: tl.constexpr,
):
    """``BLOCK`` rows per program: their ``n_splits`` partials combined into the log-sum-exp,
    the log-prob and the entropy (12 bytes per row and split read; one launch, so the few-rows
    path costs two launches in all)."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = rows < n_rows
    row_max = tl.full((BLOCK,), float("-inf"), tl.float32)
    for split in range(0, n_splits):
        m = tl.load(part_max_ptr + split * n_rows + rows, mask=inside, other=float("-inf"))
        # A NaN max is kept (the one-program forward's sum carries it; here the max does too).
        row_max = tl.where((m > row_max) | (m != m), m, row_max)
    shift = tl.where(row_max == float("-inf"), 0.0, row_max)
    row_sum = tl.zeros((BLOCK,), tl.float32)
    row_w = tl.zeros((BLOCK,), tl.float32)
    for split in range(0, n_splits):
        at = split * n_rows + rows
        m = tl.load(part_max_ptr + at, mask=inside, other=float("-inf"))
        part = tl.load(part_sum_ptr + at, mask=inside, other=0.0)
        scale = tl.exp(m - shift)
        row_sum += part * scale
        if WITH_ENTROPY:
            # A split's w is relative to its own max; moving it to the row's adds
            # (m_j - M) s_j (0, not 0 * -inf, for a split that saw only -inf logits).
            w = tl.load(part_w_ptr + at, mask=inside, other=0.0)
            row_w += scale * (w + tl.where(part == 0.0, 0.0, (m - shift) * part))
    log_sum = tl.log(row_sum)
    if HAS_KEEP:
        keep = tl.load(keep_ptr + rows, mask=inside, other=0) != 0
    else:
        keep = inside
    target = tl.load(targets_ptr + rows, mask=inside, other=0).to(tl.int64)
    in_vocab = (target >= 0) & (target < n_vocab)
    # Written by the split that held the target; never read otherwise.
    target_logit = tl.load(target_logit_ptr + rows, mask=inside & keep & in_vocab, other=0.0)
    target_logit = tl.where(in_vocab, target_logit, float("nan"))
    tl.store(lse_ptr + rows, tl.where(keep, shift + log_sum, 0.0), mask=inside)
    tl.store(logp_ptr + rows, tl.where(keep, (target_logit - shift) - log_sum, 0.0), mask=inside)
    if WITH_ENTROPY:
        entropy = log_sum - row_w / row_sum
        tl.store(entropy_ptr + rows, tl.where(keep, entropy, 0.0), mask=inside)


@triton.jit
def _logprob_backward_kernel(
    logits_ptr,
    targets_ptr,
    lse_ptr,
    entropy_ptr,
    grad_logp_ptr,
    grad_entropy_ptr,
    grad_logits_ptr,
    keep_ptr,
    n_vocab,
    stride_row,
    stride_grad_row,
    inv_temperature,
    BLOCK_V: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    HAS_KEEP: tl.constexpr,
):
    """Program (row, tile). HBM: one tile of logits read and one tile of dlogits written (two
    passes over the logits' size in all), 12 to 20 bytes per row of saved state read. With
    ``HAS_KEEP``, a skipped row reads no logit and writes an exact-zero tile.

    ``grad_logits`` may be ``logits`` itself (the in-place option): each element is read and
    then written by the same program, and no other program reads it."""
    row = tl.program_id(0).to(tl.int64)
    idx = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    in_vocab = idx < n_vocab
    if HAS_KEEP:
        keep = tl.load(keep_ptr + row) != 0
        # A skipped row's columns end at 0, so none of its logits is loaded.
        live = idx < tl.where(keep, n_vocab, 0)
    else:
        keep = row >= 0
        live = in_vocab

    lse = tl.load(lse_ptr + row)
    target = tl.load(targets_ptr + row).to(tl.int64)
    # d logp / d z_j = onehot_j - p_j and d entropy / d z_j = -p_j (log p_j + entropy), with
    # z = logits / T; p is recomputed from the saved log-sum-exp, so no [N, V] probability
    # tensor is ever kept.
    g_logp = tl.load(grad_logp_ptr + row).to(tl.float32) * inv_temperature
    z = tl.load(logits_ptr + row * stride_row + idx, mask=live, other=float("-inf"))
    log_prob = z.to(tl.float32) * inv_temperature - lse
    prob = tl.exp(log_prob)
    grad = g_logp * (tl.where(idx == target, 1.0, 0.0) - prob)
    if WITH_ENTROPY:
        g_entropy = tl.load(grad_entropy_ptr + row).to(tl.float32) * inv_temperature
        entropy = tl.load(entropy_ptr + row)
        # p log p is 0 at p = 0 (a -inf logit), not 0 * -inf.
        term = prob * tl.where(prob == 0.0, 0.0, log_prob + entropy)
        grad -= g_entropy * term
    # A skipped row's gradient is exactly 0, whatever its upstream gradient holds.
    grad = tl.where(keep, grad, 0.0)
    out = grad_logits_ptr + row * stride_grad_row + idx
    tl.store(out, grad.to(grad_logits_ptr.dtype.element_ty), mask=in_vocab)


PROGRAMS_PER_SM = 8
"""Forward programs per SM below which the vocabulary is split (4-warp programs: 8 keep an
SM's loads in flight; one row per program leaves most SMs idle at a few hundred rows)."""


COMBINE_BLOCK = 128
"""Rows per program of the split forward's combining kernel."""


def forward_splits(n_rows: int, n_vocab: int, block_v: int, sms: int) -> int:
    """Programs per row of the forward: 1 (one program streams the row) when ``n_rows`` reach
    :data:`PROGRAMS_PER_SM` programs on each of ``sms`` SMs, else as many vocabulary splits
    (of whole tiles, at most one per tile, at least 2) as keep the programs within that count,
    so they run in one wave without a tail. At V=151,936 with 2,048-wide tiles on 132 SMs:
    256 rows take 4 splits of 19 tiles (1,024 programs), 8,192 rows one."""
    target = PROGRAMS_PER_SM * sms
    if n_rows >= target:
        return 1
    wanted = max(2, target // max(1, n_rows))
    return max(1, min(wanted, -(-n_vocab // block_v)))


def _device_sms(device: torch.device) -> int:
    # Off CUDA (the interpreter) one SM is assumed: only batches of fewer than
    # PROGRAMS_PER_SM rows take the split path there, so tests reach both paths on purpose.
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def logprob_forward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    logp: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    splits: int | None = None,
) -> None:
    """Fill ``logp[N]``, ``lse[N]`` and, if given, ``entropy[N]`` (float32) from
    ``logits[N, V]`` (unit column stride); rows whose ``keep[N]`` byte is 0 are skipped (read
    nothing, write 0). ``splits`` programs share each row (default: :func:`forward_splits` for
    the device), their partial log-sum-exps combined per row."""
    n_rows, n_vocab = logits.shape
    if n_rows == 0:
        return
    cfg = launch_config(n_vocab, logits.device, "forward")
    if splits is None:
        splits = forward_splits(n_rows, n_vocab, cfg.block_v, _device_sms(logits.device))
    if splits > 1:
        _split_forward(logits, targets, temperature, logp, lse, entropy, keep, splits, cfg)
        return
    _logprob_forward_kernel[(n_rows,)](
        logits,
        targets,
        logp,
        lse,
        entropy if entropy is not None else lse,
        keep if keep is not None else targets,
        n_vocab,
        logits.stride(0),
        1.0 / temperature,
        BLOCK_V=cfg.block_v,
        WITH_ENTROPY=entropy is not None,
        HAS_KEEP=keep is not None,
        num_warps=cfg.num_warps,
    )


def _split_forward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    logp: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor | None,
    keep: torch.Tensor | None,
    splits: int,
    cfg: LogprobLaunch,
) -> None:
    """The vocabulary-split forward: partials per (split, row), then one combining launch (no
    host synchronisation; two launches in all)."""
    n_rows, n_vocab = logits.shape
    tiles = triton.cdiv(n_vocab, cfg.block_v)
    split_len = triton.cdiv(tiles, splits) * cfg.block_v
    splits = triton.cdiv(n_vocab, split_len)  # no split left without columns
    device = logits.device
    part = torch.empty((3, splits, n_rows), dtype=torch.float32, device=device)
    target_logit = torch.empty((n_rows,), dtype=torch.float32, device=device)
    keep_arg = keep if keep is not None else targets
    _logprob_split_forward_kernel[(n_rows, splits)](
        logits, targets, part[0], part[1], part[2], target_logit, keep_arg,
        n_rows, n_vocab, split_len, logits.stride(0), 1.0 / temperature,
        BLOCK_V=cfg.block_v, WITH_ENTROPY=entropy is not None, HAS_KEEP=keep is not None,
        num_warps=cfg.num_warps,
    )  # fmt: skip
    _logprob_split_combine_kernel[(triton.cdiv(n_rows, COMBINE_BLOCK),)](
        part[0], part[1], part[2], target_logit, targets, keep_arg, logp, lse,
        entropy if entropy is not None else lse, n_rows, n_vocab, splits,
        BLOCK=COMBINE_BLOCK, WITH_ENTROPY=entropy is not None, HAS_KEEP=keep is not None,
    )  # fmt: skip


def logprob_backward(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lse: torch.Tensor,
    grad_logp: torch.Tensor,
    temperature: float,
    grad_logits: torch.Tensor,
    entropy: torch.Tensor | None = None,
    grad_entropy: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> None:
    """Fill ``grad_logits[N, V]`` from the upstream gradients ``grad_logp[N]`` and, with the
    saved ``entropy``, ``grad_entropy[N]`` (contiguous float32); rows whose ``keep[N]`` byte
    is 0 get exact zeros without reading their logits. ``grad_logits`` may be ``logits``."""
    n_rows, n_vocab = logits.shape
    if n_rows == 0:
        return
    cfg = launch_config(n_vocab, logits.device, "backward")
    with_entropy = entropy is not None and grad_entropy is not None
    _logprob_backward_kernel[(n_rows, triton.cdiv(n_vocab, cfg.block_v))](
        logits,
        targets,
        lse,
        entropy if with_entropy else lse,
        grad_logp,
        grad_entropy if with_entropy else grad_logp,
        grad_logits,
        keep if keep is not None else targets,
        n_vocab,
        logits.stride(0),
        grad_logits.stride(0),
        1.0 / temperature,
        BLOCK_V=cfg.block_v,
        WITH_ENTROPY=with_entropy,
        HAS_KEEP=keep is not None,
        num_warps=cfg.num_warps,
    )
