"""Manifests of committed experiment folders: what was run, where, and every file's SHA-256.

An *experiment folder* is a folder holding a ``README.md`` and at least one other file of its
own. A file belongs to the nearest folder above it (itself included) that holds a
``README.md``; a folder whose README stands alone (the results index, ``gpu/``) is an index,
not an experiment. Each experiment folder gets a ``manifest.json`` listing the files it owns,
README included, with their size and SHA-256, plus the command(s), the code commit, the
machine and the date as its README records them (the commit and date fall back to the last
git commit that changed the folder when the README records none).

Generated files are not evidence and are left out: HTML pages (``stalesim report ...``
regenerates them from the folder's data), sweep ``shards/``, ``__pycache__`` and hidden files.

``check_manifests`` guarantees that every experiment folder has a manifest and that its files
are exactly those listed, byte for byte; it does not compare the descriptive fields, which a
later commit may legitimately change.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict

MANIFEST = "manifest.json"
GIT_SOURCE = "git: last commit that changed the folder's data"
README = "README.md"
#: Folder names whose contents are working files, never evidence.
SKIPPED_DIRS = frozenset({"shards", "__pycache__"})
#: File suffixes that are regenerated from the data (and are git-ignored under results/).
GENERATED_SUFFIXES = frozenset({".html"})

#: Lines that start a command in a README's code blocks or ``Command`` bullets.
_COMMAND_START = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(?:stalesim|python3?|bash)\b")
#: A code span in prose is a command only with an argument, an option or a module to run
#: (``stalesim fit`` alone names a command; it does not record one).
_HAS_ARGUMENT = re.compile(r"/|\s--?\w")
_LABELLED = re.compile(r"\bcommands?\b|\bmade by\b|\brun:", re.IGNORECASE)
_SPAN = re.compile(r"`([^`]+)`")
_SCRIPT = re.compile(r"[\w.-]+\.sh")
_COMMIT = re.compile(r"\bcommit\s+`([0-9a-f]{7,40})`")
_DATE = re.compile(r"\b(20\d\d-[01]\d-[0-3]\d)\b")
_MACHINE = re.compile(r"\*\*(?:[^*]*/\s*)?machine(?:\s*/[^*]*)?\*\*\s*:?\s*(.+)", re.IGNORECASE)
_MACHINE_MENTION = re.compile(r"\b(?:machine|VM|vCPU|GPU box)\b")
_MACHINE_PROSE = re.compile(r"\bThe machine(?: was|:)\s+([^.]+(?:\.\d[^.]*)*)\.")


class FileEntry(BaseModel):
    """One file of the folder: its path relative to the folder, size in bytes and SHA-256."""

    model_config = ConfigDict(extra="forbid")
    path: str
    bytes: int
    sha256: str


class Manifest(BaseModel):
    """What one experiment folder holds and how it was made."""

    model_config = ConfigDict(extra="forbid")
    folder: str
    commands: list[str]
    commit: str | None
    commit_source: str
    machine: str | None
    date: str | None
    date_source: str
    files: list[FileEntry]


def _skipped(relative: Path) -> bool:
    parts = relative.parts
    return (
        any(part in SKIPPED_DIRS or part.startswith(".") for part in parts)
        or relative.suffix in GENERATED_SUFFIXES
        or relative.name == MANIFEST
    )


def _owner(path: Path, root: Path) -> Path | None:
    """The nearest folder from ``path``'s own up to ``root`` that holds a README."""
    folder = path.parent
    while True:
        if (folder / README).is_file():
            return folder
        if folder == root:
            return None
        folder = folder.parent


def owned_files(root: Path) -> dict[Path, list[Path]]:
    """Every experiment folder under ``root`` (itself included) and the files it owns.

    Raises ValueError naming the first file that no folder's README covers: evidence without a
    README says nothing about how it was made.
    """
    owners: dict[Path, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or _skipped(path.relative_to(root)):
            continue
        owner = _owner(path, root)
        if owner is None:
            raise ValueError(
                f"{path}: no {README} in its folder or any folder above it up to {root}; an "
                "experiment folder needs a README saying how its files were made"
            )
        owners.setdefault(owner, []).append(path)
    return {
        folder: files for folder, files in owners.items() if any(f.name != README for f in files)
    }


def sha256_of(path: Path) -> str:
    """The file's SHA-256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(folder: Path, files: list[Path]) -> list[FileEntry]:
    """The entries of ``files``, sorted by their path relative to ``folder``."""
    entries = [
        FileEntry(
            path=f.relative_to(folder).as_posix(), bytes=f.stat().st_size, sha256=sha256_of(f)
        )
        for f in files
    ]
    return sorted(entries, key=lambda e: e.path)


def _bullet_blocks(lines: list[str]) -> list[str]:
    """Each Markdown bullet or paragraph line joined with its indented continuation lines."""
    blocks: list[str] = []
    for line in lines:
        if blocks and line.startswith("  ") and line.strip() and not line.lstrip().startswith("*"):
            blocks[-1] += " " + line.strip()
        else:
            blocks.append(line.strip())
    return blocks


def readme_commands(text: str, folder: str | None = None) -> list[str]:
    """The commands a README records: the command lines of its code blocks, and the code spans
    of its lines that say they are the command (``**Command**:``, ``Made by``, ``Run:``); a
    script named there (``run.sh``) is recorded as ``bash FOLDER/run.sh`` when ``folder`` (the
    README's folder as the repository names it) is given."""
    commands: list[str] = []
    prose: list[str] = []
    in_code = False
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            prose.append(line)
            continue
        stripped = line.strip()
        if pending:
            stripped = pending + " " + stripped
            pending = ""
        if stripped.endswith("\\"):
            pending = stripped[:-1].strip()
            continue
        if _COMMAND_START.match(stripped):
            commands.append(re.sub(r"\s+#\s.*$", "", stripped))
    for block in _bullet_blocks(prose):
        if _LABELLED.search(block):
            for span in (s.strip() for s in _SPAN.findall(block)):
                if _COMMAND_START.match(span) and _HAS_ARGUMENT.search(span):
                    commands.append(span)
                elif folder and _SCRIPT.fullmatch(span):
                    commands.append(f"bash {folder}/{span}")
    return list(dict.fromkeys(commands))


def readme_machine(text: str) -> str | None:
    """The machine the README says the experiment ran on, as it words it: a ``**Machine**``
    bullet, a sentence "The machine was ...", or else the first line that mentions one."""
    blocks = _bullet_blocks(text.splitlines())
    for block in blocks:
        match = _MACHINE.search(block)
        if match:
            return match.group(1).strip()
    match = _MACHINE_PROSE.search(" ".join(text.split()))
    if match:
        return match.group(1).strip()
    mention = next((b for b in blocks if _MACHINE_MENTION.search(b)), None)
    return mention.replace("**", "").lstrip("#* ").strip() if mention else None


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def build_manifest(folder: Path, files: list[Path], root: Path) -> Manifest:
    """The manifest of one experiment folder from its README, git and its files."""
    text = (folder / README).read_text(encoding="utf-8")
    # The commit that last wrote the folder's own data: README edits, manifests, pages and the
    # files of experiment folders nested inside it aside.
    data = [f.relative_to(folder).as_posix() for f in files if f.name not in (README, MANIFEST)]
    last = _git(folder, "log", "-1", "--format=%H %cs", "--", *data) if data else None
    git_commit, git_date = last.split() if last else (None, None)
    commit_match = _COMMIT.search(text)
    date_match = _DATE.search(text)
    # The folder as the repository names it, whichever results folder the command was given.
    prefix = _git(folder, "rev-parse", "--show-prefix")
    name = prefix.rstrip("/") if prefix else folder.resolve().relative_to(root.resolve().parent)
    return Manifest(
        folder=str(name),
        commands=readme_commands(text, str(name)),
        commit=commit_match.group(1) if commit_match else git_commit,
        commit_source="README" if commit_match else GIT_SOURCE if git_commit else "none recorded",
        machine=readme_machine(text),
        date=date_match.group(1) if date_match else git_date,
        date_source="README" if date_match else GIT_SOURCE if git_date else "none recorded",
        files=file_entries(folder, files),
    )


def _manifest_text(manifest: Manifest) -> str:
    return json.dumps(manifest.model_dump(), indent=1, ensure_ascii=False) + "\n"


def _require_dir(root: Path) -> Path:
    if not root.is_dir():
        raise ValueError(f"{root}: no such directory (give a results folder)")
    return Path(root)


def write_manifests(root: Path) -> list[Path]:
    """Write ``manifest.json`` in every experiment folder under ``root``; their paths.

    Every folder is read (and an uncovered file refused) before anything is written."""
    root = _require_dir(root)
    manifests = [(f, build_manifest(f, files, root)) for f, files in owned_files(root).items()]
    if not manifests:
        raise ValueError(f"{root}: no experiment folder (a folder with a {README} and data files)")
    written = []
    for folder, manifest in manifests:
        path = folder / MANIFEST
        path.write_text(_manifest_text(manifest), encoding="utf-8")
        written.append(path)
    return written


def check_manifests(root: Path) -> list[str]:
    """Every way the files under ``root`` differ from their manifests, one line each, naming
    the file; empty when every experiment folder matches its manifest exactly."""
    root = _require_dir(root)
    problems: list[str] = []
    for folder, files in owned_files(root).items():
        path = folder / MANIFEST
        if not path.is_file():
            problems.append(f"{path}: missing (run `stalesim report manifest` to write it)")
            continue
        try:
            listed = Manifest.model_validate_json(path.read_text(encoding="utf-8")).files
        except ValueError as exc:
            problems.append(f"{path}: not a manifest ({' '.join(str(exc).split())[:200]})")
            continue
        expected = {e.path: e for e in listed}
        actual = {e.path: e for e in file_entries(folder, files)}
        for name in sorted(expected.keys() | actual.keys()):
            where = folder / name
            if name not in actual:
                problems.append(f"{where}: listed in {MANIFEST} but missing")
            elif name not in expected:
                problems.append(f"{where}: not listed in {MANIFEST}")
            elif actual[name].bytes != expected[name].bytes:
                problems.append(
                    f"{where}: {actual[name].bytes} bytes, {MANIFEST} says {expected[name].bytes}"
                )
            elif actual[name].sha256 != expected[name].sha256:
                problems.append(f"{where}: SHA-256 differs from {MANIFEST}")
    return problems
