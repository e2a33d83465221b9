"""Where each of our kernels stands among its peers, read from the bench's timed rows.

A peer is any implementation the bench timed on the same inputs (the same kernel, pass, dtype
and shape, which names the logit kind) that is not ours: torch eager, torch.compile, TRL,
Liger-Kernel, Cut Cross-Entropy. Ours are the implementations whose name starts with
:data:`OURS`. Each of ours is compared with every peer like with like: CUDA-graph replay times
where both sides were captured, eager medians otherwise, and the peak memory beyond the inputs
of both.

A time ratio within :data:`LEVEL_BAND` of 1 is called level, not ahead or behind: that is how far
a row's median moved between four repeated bench runs on the same H200
(``reports/results/gpu/h200-2026-11-27/spread.csv``; half-range over median, 1–3.5% for the
multi-millisecond Triton rows, 6% for the 1 ms log-prob forward). Peers that did not run (not
installed, out of memory, an error) are listed, never counted as beaten.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

OURS = "triton"
"""Our implementations' names start with this (``triton``, ``triton one-pass``, ...)."""

LEVEL_BAND = 0.05
"""``|ours / peer - 1|`` below this is level: the run-to-run spread of one bench row."""

RANDOM_SUFFIX = "random logits"
"""Shapes ending in this are the random-logit twin of a case; the peaked (trained-model-like)
row is the one a standing is judged on, since a gradient filter skips almost all of a random
row's backward."""

GROUP_KEYS = ("kernel", "pass", "dtype", "shape")

NOT_RUN = ("not installed", "out of memory", "error")
"""Statuses of a timed row that did not run; its peer is listed, not compared."""


def peer_standings(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (kernel, pass, dtype, shape, our implementation) that has a time: each
    peer's time ratio (ours over theirs: below 1 is faster), memory ratio and verdict, the
    peers that did not run, and a one-line ``standing``. ``judged`` is false on random-logit
    rows (see :data:`RANDOM_SUFFIX`)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("median_s") is not None or r.get("status") in NOT_RUN:
            groups.setdefault(tuple(r.get(k) for k in GROUP_KEYS), []).append(r)
    standings = []
    for key, members in groups.items():
        ours = [r for r in members if _is_ours(r) and r.get("median_s") is not None]
        peers = [r for r in members if not _is_ours(r)]
        for mine in ours:
            compared = [_compare(mine, p) for p in peers if p.get("median_s") is not None]
            not_run = [
                f"{p['implementation']}: {p['status']}" for p in peers if p.get("median_s") is None
            ]
            entry = dict(zip(GROUP_KEYS, key, strict=True)) | {
                "implementation": mine["implementation"],
                "seconds": mine["median_s"],
                "graph_seconds": mine.get("graph_median_s"),
                "peak_extra_bytes": mine.get("peak_extra_bytes"),
                "judged": not str(key[3] or "").endswith(RANDOM_SUFFIX),
                "peers": sorted(compared, key=lambda c: -c["time_ratio"]),  # fastest peer first
                "not_run": not_run,
            }
            entry["standing"] = standing_line(entry)
            standings.append(entry)
    return standings


def _is_ours(r: dict[str, Any]) -> bool:
    return str(r.get("implementation", "")).startswith(OURS)


def _compare(mine: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """Ours against one peer: graph replay against graph replay when both were captured."""
    graphs = mine.get("graph_median_s") is not None and peer.get("graph_median_s") is not None
    key = "graph_median_s" if graphs else "median_s"
    time_ratio = mine[key] / peer[key]
    mine_bytes, peer_bytes = mine.get("peak_extra_bytes"), peer.get("peak_extra_bytes")
    compared = mine_bytes is not None and peer_bytes is not None
    memory_ratio = mine_bytes / peer_bytes if compared and peer_bytes else None
    no_more_memory = mine_bytes <= peer_bytes if compared else None
    return {
        "implementation": peer["implementation"],
        "timing": "graph replay" if graphs else "eager",
        "seconds": peer[key],
        "time_ratio": time_ratio,
        "peak_extra_bytes": peer_bytes,
        "memory_ratio": memory_ratio,
        "no_more_memory": no_more_memory,
        "verdict": verdict(time_ratio, no_more_memory),
    }


def speed_word(time_ratio: float) -> str:
    """``ahead``, ``level`` or ``behind`` for ours / peer time."""
    if abs(time_ratio - 1) < LEVEL_BAND:
        return "level"
    return "ahead" if time_ratio < 1 else "behind"


def verdict(time_ratio: float, no_more_memory: bool | None) -> str:
    """The speed word, with the memory it is bought at: ``at no more memory`` when ours holds
    at most the peer's peak extra memory, ``using more memory`` otherwise (nothing where either
    side's memory was not measured)."""
    word = speed_word(time_ratio)
    if no_more_memory is None:
        return word
    return f"{word}, {'at no more memory' if no_more_memory else 'using more memory'}"


def standing_line(entry: dict[str, Any]) -> str:
    """One line: ahead of every peer that ran (and the closest one), or the peers ahead of
    ours and by how much; then the peers that did not run."""
    peers = entry["peers"]
    if not peers:
        line = "no peer timed"
    else:
        ahead_of_us = [p for p in peers if speed_word(p["time_ratio"]) == "behind"]
        level = [p for p in peers if speed_word(p["time_ratio"]) == "level"]
        if ahead_of_us:
            line = "behind " + ", ".join(
                f"{p['implementation']} ({p['time_ratio']:.2f}x its time, {_memory(p)})"
                for p in ahead_of_us
            )
        elif level:
            line = f"level with {', '.join(p['implementation'] for p in level)}"
            if len(peers) > len(level):
                line += f"; ahead of the other {len(peers) - len(level)}"
        else:
            closest = peers[0]
            line = (
                f"ahead of all {len(peers)} peers; closest {closest['implementation']} "
                f"({closest['time_ratio']:.2f}x its time, {_memory(closest)})"
            )
    if entry["not_run"]:
        line += f"; not run: {', '.join(entry['not_run'])}"
    return line


def _memory(peer: dict[str, Any]) -> str:
    ratio = peer["memory_ratio"]
    if ratio is not None:
        return f"{ratio:.3g}x its memory"
    if peer["no_more_memory"] is None:
        return "memory not compared"
    # The peer held no extra memory: ours either held none too, or more.
    return "no extra memory either" if peer["no_more_memory"] else "more than its 0 B"
