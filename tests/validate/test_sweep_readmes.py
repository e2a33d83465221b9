"""Every committed sweep README still states its fit as its ``law.json`` holds it.

A refit changes ``law.json``; the README's fit section is then stale unless rewritten by
``tools/write_sweep_readme.py``. Each line that tool makes from ``law.json`` must appear in the
README verbatim."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.evidence import RESULTS, ROOT

SWEEP_READMES = sorted(
    path.parent
    for path in RESULTS.rglob("README.md")
    if "tools/write_sweep_readme.py" in path.read_text() and (path.parent / "law.json").exists()
)


def _fit_lines():
    spec = importlib.util.spec_from_file_location(
        "write_sweep_readme", ROOT / "tools/write_sweep_readme.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fit_lines


def test_every_sweep_folder_is_found():
    assert len(SWEEP_READMES) >= 14


@pytest.mark.parametrize("folder", SWEEP_READMES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_readme_fit_section_matches_law_json(folder: Path) -> None:
    law = json.loads((folder / "law.json").read_text())
    readme = set((folder / "README.md").read_text().splitlines())
    stale = [line for line in _fit_lines()(law) if line and line not in readme]
    assert not stale, f"{len(stale)} line(s) differ from law.json, first: {stale[0]}"
