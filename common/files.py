"""Atomic result files: written to a temporary sibling, then renamed, so a crash never leaves
half a file and never destroys the previous one.

The temporary sibling of ``NAME`` is ``.NAME.<pid>.<random>.tmp``; when a writer is killed it
stays behind, and the next write of ``NAME`` (or
:func:`stalesim.common.output_dir.remove_stale_temporaries` on the folder) removes it once process
``pid`` is gone. Folders of several files that must stay consistent use
:mod:`stalesim.common.output_dir`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(path)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates files readable by the owner only; results are meant to be shared.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp$")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a process we may not signal counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def is_stale_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_write` whose writer is gone."""
    match = _TEMPORARY.match(name)
    return bool(match) and not pid_alive(int(match["pid"]))


def _remove_stale_siblings(path: Path) -> None:
    for sibling in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        if is_stale_temporary(sibling.name):
            sibling.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    """``name`` with glob wildcards escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON atomically (NaN and inf become null)."""
    text = json.dumps(_finite(payload), indent=2, sort_keys=False) + "\n"
    return write_text(path, text)


def write_parquet(path: str | Path, frame: Any) -> Path:
    """Write a polars DataFrame as Parquet atomically."""
    return atomic_write(path, lambda tmp: frame.write_parquet(tmp))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
