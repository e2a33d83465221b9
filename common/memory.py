"""How much memory this machine can give a run, so that oversized runs are refused up front
with the figure they would need instead of failing after minutes (or taking the machine down)."""

from __future__ import annotations

import os
from pathlib import Path

from stalesim.common.config_file import ConfigError

GIB = 1024**3


def available_bytes() -> int | None:
    """Memory a new allocation can get now: ``MemAvailable``, capped by the cgroup's limit;
    ``None`` where neither can be read (then nothing is refused)."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def human_bytes(n: float) -> str:
    """``n`` bytes as KiB, MiB, GiB, TiB or PiB, three significant figures."""
    for unit, size in (("PiB", 1024**5), ("TiB", 1024**4), ("GiB", GIB), ("MiB", 1024**2)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1024:.3g} KiB"


def refuse_if_too_big(needed_bytes: float, what: str, advice: str) -> None:
    """Raise :class:`ConfigError` when ``needed_bytes`` exceed the memory available now.

    ``what`` names the input and the quantity (``"--steps=10000000: 5.1e9 samples"``);
    ``advice`` says how to make it fit.
    """
    available = available_bytes()
    if available is not None and needed_bytes > available:
        raise ConfigError(
            f"{what} need about {human_bytes(needed_bytes)} of memory, but this machine has "
            f"{human_bytes(available)} available; {advice}"
        )
