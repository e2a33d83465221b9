"""Output folders that are never half-written and never mix two runs.

A command that writes several result files into a folder (``simulate --out``, ``bench kernels
--out``, the merged tables of ``validate sweep``) writes them with :func:`output_folder`::

    with output_folder(out_dir, kind="simulate") as stage:
        write_parquet(stage / "samples.parquet", frame)    # any way of writing files
        write_json(stage / "summary.json", summary)
    # here out_dir holds exactly these files and a completion marker

The files go to a fresh staging folder inside ``out_dir`` (``.stalesim-tmp-<pid>-<hex>``), so
the long part of a run leaves the previous output untouched. When the block ends normally they
are published under a lock on the folder: a ``.stalesim-writing`` sign is put up, the previous
marker is removed, every file is renamed into place, files the previous run listed and this
one did not write are removed, the marker ``stalesim-complete.json`` (kind, time, and every
file's size and SHA-256) is written atomically, and the sign is taken down. An exception in
the block publishes nothing and removes the staging folder; a killed run leaves its staging
folder (and any ``.NAME.<pid>.*.tmp`` file of :mod:`stalesim.common.files`), which the next run
in that folder removes once the writer's process is gone.

Readers call :func:`require_complete` with the files they are about to read: it refuses a
folder with the writing sign up, without a marker, or whose files differ from what the marker
recorded, so a reader never combines files of two runs. Folders written before markers existed
(committed results, hand-made test folders) can be accepted with ``legacy_ok=True``; those
without one that a reader must trust can be sealed with :func:`seal`.

Only POSIX is supported (folder locks are ``flock`` on the folder itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stalesim.common.config_file import ConfigError
from stalesim.common.files import is_stale_temporary, pid_alive, write_json

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

MARKER = "stalesim-complete.json"
WRITING = ".stalesim-writing"
STAGE_PREFIX = ".stalesim-tmp-"
_STAGE = re.compile(rf"^{re.escape(STAGE_PREFIX)}(?P<pid>\d+)-[0-9a-f]+$")
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def output_folder(final: str | Path, kind: str) -> Iterator[Path]:
    """Yield an empty staging folder; publish its files into ``final`` if the block succeeds."""
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise ConfigError(f"--out {final}: is a file, not a folder")
    final.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    stage = final / f"{STAGE_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        yield stage
        publish(stage, final, kind)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, final: Path, kind: str) -> dict[str, Any]:
    """Move every file of ``stage`` into ``final`` and write the marker; returns the marker."""
    names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file())
    manifest = {
        "kind": kind,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {name: _fingerprint(stage / name) for name in names},
    }
    with locked(final):
        previous = _read_marker(final) or {}
        (final / WRITING).write_text(f"{os.getpid()}\n")
        (final / MARKER).unlink(missing_ok=True)
        for name in names:
            target = final / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, target)
        listed = previous.get("files")
        for name in listed if isinstance(listed, dict) else {}:
            if name not in manifest["files"] and isinstance(name, str) and _inside(final, name):
                (final / name).unlink(missing_ok=True)
        write_json(final / MARKER, manifest)
        (final / WRITING).unlink()
    return manifest


def seal(folder: str | Path, kind: str, names: Iterable[str]) -> dict[str, Any]:
    """Write the marker for files already in ``folder`` (hand-made or imported results)."""
    folder = Path(folder)
    manifest = {
        "kind": kind,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {name: _fingerprint(folder / name) for name in sorted(names)},
    }
    write_json(folder / MARKER, manifest)
    return manifest


def require_complete(
    folder: str | Path, kind: str, files: Iterable[str], *, legacy_ok: bool = False
) -> dict[str, Any] | None:
    """Raise ValueError unless ``files`` of ``folder`` all come from one finished run.

    Returns the marker, or ``None`` for a folder without one when ``legacy_ok``.
    """
    folder = Path(folder)
    again = f"run `stalesim {kind}` again with this folder to finish it"
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such directory")
    if (folder / WRITING).exists():
        raise ValueError(
            f"{folder}: a run was stopped while writing its results here (or is writing now); "
            + again
        )
    marker = _read_marker(folder)
    if marker is None:
        if legacy_ok:
            return None
        raise ValueError(
            f"{folder}: not a finished `stalesim {kind}` output (no {MARKER}: the run was "
            f"stopped before it finished, or another program wrote the folder); {again}"
        )
    problem = _marker_problem(marker)
    if problem:
        raise ValueError(f"{folder / MARKER}: damaged completion marker ({problem}); {again}")
    if marker["kind"] != kind:
        raise ValueError(
            f"{folder}: holds a `stalesim {marker['kind']}` output, not `stalesim {kind}`"
        )
    listed = marker["files"]
    for name in files:
        path = folder / name
        if name not in listed:
            raise ValueError(f"{path}: not part of the run recorded in {MARKER}; {again}")
        if not path.is_file():
            raise ValueError(f"{path}: no such file, though {MARKER} lists it; {again}")
        if _fingerprint(path) != listed[name]:
            raise ValueError(
                f"{path}: changed after the run recorded in {MARKER} finished (it belongs to "
                f"another run); {again}"
            )
    return marker


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove staging folders and temporary files in ``folder`` whose writer has died."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGE.match(entry.name)
        if match and entry.is_dir() and not pid_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        elif entry.is_file() and is_stale_temporary(entry.name):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def locked(folder: str | Path, *, wait: bool = True, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (re-entrant within one process).

    With ``wait=False`` a folder locked by another process raises :class:`ConfigError`.
    """
    key = os.path.realpath(folder)
    if key in _HELD or fcntl is None:
        yield
        return
    fd = os.open(key, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ConfigError(
                f"{folder}: another stalesim process is writing to it{what}; wait for it or "
                "use another folder"
            ) from None
        _HELD[key] = fd
        try:
            yield
        finally:
            del _HELD[key]
    finally:
        os.close(fd)


def _fingerprint(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _marker_problem(marker: dict[str, Any]) -> str:
    """What is wrong with a marker's structure ("" when nothing): a reader indexes into it."""
    if not isinstance(marker.get("kind"), str):
        return "no 'kind' string"
    files = marker.get("files")
    if not isinstance(files, dict):
        return "no 'files' object"
    for name, fingerprint in files.items():
        if not (
            isinstance(fingerprint, dict)
            and isinstance(fingerprint.get("bytes"), int)
            and isinstance(fingerprint.get("sha256"), str)
        ):
            return f"entry {name!r} has no 'bytes' integer and 'sha256' string"
    return ""


def _inside(folder: Path, name: str) -> bool:
    return os.path.realpath(folder / name).startswith(os.path.realpath(folder) + os.sep)
