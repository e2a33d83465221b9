"""The knee's confirmation sweep asks its question: the non-saturating task's train config, six
staleness values, four sqrt(2)-spaced rates centred on each S's known optimum, six new seeds."""

from __future__ import annotations

import itertools
import math

import pytest
from stalesim.validate.train.presets import preset_sweep


def test_the_confirmation_grid() -> None:
    knee, horizon = preset_sweep("law-knee-ns"), preset_sweep("law-horizon-ns")
    assert knee.train == horizon.train  # the same task, policy, warm start and horizon
    runs = knee.runs()
    assert len(runs) == 6 * 4 * 6
    old_seeds = {s for g in horizon.grids for s in g.seeds}
    assert {r.seed for r in runs} == {3, 4, 5, 6, 7, 8} and not old_seeds & {r.seed for r in runs}
    centres = {0: 5.4e-4, 2: 5.5e-4, 3: 5.5e-4 * 0.6 ** math.log2(1.5), 4: 3.3e-4,
               6: 3.3e-4 * (1.8 / 3.3) ** math.log2(1.5), 8: 1.8e-4}  # fmt: skip
    for s, centre in centres.items():
        lrs = sorted({r.lr for r in runs if r.staleness == f"fixed:{s}"})
        assert len(lrs) == 4
        ratios = [b / a for a, b in itertools.pairwise(lrs)]
        assert ratios == pytest.approx([math.sqrt(2)] * 3, rel=0.01)
        assert math.sqrt(lrs[1] * lrs[2]) == pytest.approx(centre, rel=0.01)
        assert {r.seed for r in runs if r.staleness == f"fixed:{s}"} == {3, 4, 5, 6, 7, 8}
    # a sweep stopped early has covered every S with the same seeds
    first = runs[: 6 * 4 * 2]
    assert {r.seed for r in first} == {3, 4} and len({r.staleness for r in first}) == 6
