"""Where the committed evidence lives, for the tests that read it.

Code never reads ``reports/results/``: commands take a results folder as an argument, and the
data the package needs at runtime ships in ``sim/data/``. Tests that check a committed
experiment (its fit reproduces, its tables read back, its page renders) name it through
``RESULTS`` alone, so moving the evidence is a one-line change here.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The committed experiment folders (README, command, fitted law, summary, raw run tables).
RESULTS = ROOT / "reports" / "results"
