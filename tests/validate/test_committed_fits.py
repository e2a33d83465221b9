"""The committed fits of the two shipped readings reproduce from their raw runs with today's code:
refitting gives the committed ``law.json`` field for field (only when and how it was run differ)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from stalesim.cli import main

from tests.evidence import RESULTS


@pytest.mark.parametrize("folder", ["law-horizon/non-saturating", "law-objective/clip"])
def test_a_committed_fit_reproduces_from_its_runs(folder: str, tmp_path: Path) -> None:
    out = tmp_path / "law.json"
    result = CliRunner().invoke(main, ["fit", str(RESULTS / folder), "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    committed = json.loads((RESULTS / folder / "law.json").read_text())
    refit = json.loads(out.read_text())
    for law in (committed, refit):
        for where in ("date", "command", "runs_dir", "machine"):  # when, how and where it ran
            law["source"].pop(where)
    assert refit == committed
