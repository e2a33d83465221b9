"""Bench inputs whose softmax looks like a trained model's, next to random ones.

Random ``N(0, 1)`` logits over a 151,936-token vocabulary give a nearly flat softmax (entropy
about ``ln V - 1/2`` = 11.4 nats, top-1 probability ~1e-5). A trained model sampling its own
tokens is the opposite: most positions are nearly certain. Kernels that skip work on small
probabilities (Cut Cross-Entropy's gradient filter) look far better on random logits than on
real ones, so every logits case is also run on :func:`peaked_logits`.

**The statistic matched**: the per-position entropy of the sampling distribution, drawn from a
quantile function through points reported for Qwen3-8B's chain-of-thought tokens on maths
problems (Wang et al. 2025, "Beyond the 80/20 Rule: High-Entropy Minority Tokens Drive
Effective Reinforcement Learning for LLM Reasoning", arXiv:2506.01939, Fig. 2: over half of
the tokens have entropy below 0.01, and the 80th percentile is 0.672). The quantile function is
linear in log-entropy between :data:`ENTROPY_QUANTILES`' points; the 0th and 100th percentile
points (1e-5 and 3.0) are assumptions of this bench, not measurements. The targets are sampled
from each row's own distribution, as an on-policy sample's tokens are.

**The shape of a row**: a Zipf-like ranking ``z_r = -ln(1 + r) / tau`` over ranks ``r``, with
the per-row temperature ``tau`` chosen (from a grid of :data:`GRID_SIZE` values) so that the
row's entropy is its drawn target, and the ranking rotated by a random offset so that each
row's top token sits at a random vocabulary index. :func:`logit_statistics` measures what a
batch actually holds; the bench writes it beside each row.
"""

from __future__ import annotations

import functools
import math

import torch

ENTROPY_QUANTILES: tuple[tuple[float, float], ...] = (
    (0.0, 1e-5),
    (0.5, 0.01),
    (0.8, 0.672),
    (1.0, 3.0),
)
"""(quantile, entropy in nats) points of the per-position entropy distribution."""

GRID_SIZE = 256
"""Temperatures tabulated between the flattest and the most peaked row shape."""

ROW_CHUNK = 256
"""Rows built at a time: bounds the [rows, V] index temporaries on a GPU."""


def entropy_quantile(q: torch.Tensor) -> torch.Tensor:
    """The target entropy (nats) at quantiles ``q`` in [0, 1] (float64)."""
    qs = torch.tensor([p for p, _ in ENTROPY_QUANTILES], dtype=torch.float64)
    logs = torch.tensor([math.log(h) for _, h in ENTROPY_QUANTILES], dtype=torch.float64)
    q = q.to(torch.float64).clamp(0.0, 1.0)
    upper = torch.searchsorted(qs, q, right=True).clamp(1, len(qs) - 1)
    lower = upper - 1
    frac = (q - qs[lower]) / (qs[upper] - qs[lower])
    return torch.exp(logs[lower] + frac * (logs[upper] - logs[lower]))


@functools.lru_cache(maxsize=2)
def _ranked_grid(n_vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse temperatures, their rows' entropies (increasing) and the ranked base logits."""
    base = -torch.log1p(torch.arange(n_vocab, dtype=torch.float64))
    inverse = torch.logspace(math.log10(60.0), math.log10(0.3), GRID_SIZE, dtype=torch.float64)
    log_q = torch.log_softmax(inverse[:, None] * base[None, :], dim=-1)
    entropy = -(log_q.exp() * log_q).sum(dim=-1)
    return inverse, entropy, base


def peaked_logits(
    n_rows: int,
    n_vocab: int,
    gen: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n_rows, n_vocab]`` logits whose per-row entropies follow :data:`ENTROPY_QUANTILES`,
    and ``[n_rows]`` targets sampled from each row's softmax (``gen`` is a CPU generator)."""
    inverse, grid_entropy, base = _ranked_grid(n_vocab)
    wanted = entropy_quantile(torch.rand(n_rows, generator=gen, dtype=torch.float64))
    level = torch.searchsorted(grid_entropy, wanted).clamp(max=GRID_SIZE - 1)
    offset = torch.randint(0, n_vocab, (n_rows,), generator=gen)
    # Target rank: inverse-CDF sampling from the row's ranked distribution (per grid level).
    u = torch.rand(n_rows, generator=gen, dtype=torch.float64)
    rank = torch.empty(n_rows, dtype=torch.long)
    for k in level.unique().tolist():
        rows = level == k
        cdf = torch.softmax(inverse[k] * base, dim=-1).cumsum(dim=-1)
        rank[rows] = torch.searchsorted(cdf, u[rows]).clamp(max=n_vocab - 1)
    targets = (rank + offset) % n_vocab

    logits = torch.empty(n_rows, n_vocab, device=device, dtype=dtype)
    base_dev = base.to(device=device, dtype=torch.float32)
    scale = inverse[level].to(device=device, dtype=torch.float32)
    columns = torch.arange(n_vocab, device=device)
    for start in range(0, n_rows, ROW_CHUNK):
        stop = min(start + ROW_CHUNK, n_rows)
        ranks = (columns[None, :] - offset[start:stop, None].to(device)) % n_vocab
        logits[start:stop] = (base_dev[ranks] * scale[start:stop, None]).to(dtype)
    return logits, targets.to(device)


def random_logits(
    n_rows: int,
    n_vocab: int,
    gen: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``N(0, 1)`` logits and uniform targets: the flat softmax most kernel benchmarks use
    (drawn on ``device``, seeded from ``gen``)."""
    on_device = device_generator(gen, device)
    logits = torch.randn(n_rows, n_vocab, generator=on_device, device=device).to(dtype)
    return logits, torch.randint(0, n_vocab, (n_rows,), generator=on_device, device=device)


def device_generator(gen: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from the CPU generator ``gen``: large inputs are drawn
    where they are used, reproducibly."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return torch.Generator(device=device).manual_seed(seed)


LOGIT_KINDS = {"random": random_logits, "peaked": peaked_logits}
"""The logit generators every logits case runs on, by the label its rows carry."""


def logit_statistics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """What a batch holds: mean top-1 probability, median and 80th-percentile entropy (nats),
    and the mean probability of the targets, in float64 over the rows given."""
    log_q = torch.log_softmax(logits.double(), dim=-1)
    q = log_q.exp()
    entropy = -(q * torch.where(q > 0, log_q, 0.0)).sum(dim=-1)
    return {
        "top1_mean": float(q.max(dim=-1).values.mean()),
        "entropy_median": float(entropy.median()),
        "entropy_p80": float(torch.quantile(entropy, 0.8)),
        "target_prob_mean": float(q.gather(-1, targets.long()[:, None]).mean()),
    }


def describe(stats: dict[str, float]) -> str:
    """The statistics as the note of a bench row."""
    return (
        f"top-1 p {stats['top1_mean']:.3f}, entropy median {stats['entropy_median']:.3g} "
        f"p80 {stats['entropy_p80']:.3g} nats, target p {stats['target_prob_mean']:.3f}"
    )
