"""A real headless browser opens the pages with networking cut off and the charts draw."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from stalesim.reports.simulate_page import build_simulate_page, write_simulate_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)


def rendered_dom(page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium with no network."""
    profile.mkdir()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # No network: every host resolves to nothing and every proxy connection is refused.
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        # Let the page's promises (vega-embed draws asynchronously) settle before the dump.
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("fixture", ["sim_out", "long_sim_out", "real_sim_out"])
def test_simulate_page_charts_render_offline(fixture, request, tmp_path):
    out_dir = request.getfixturevalue(fixture)
    charts = build_simulate_page(out_dir).chart_count
    dom = rendered_dom(write_simulate_report(out_dir), tmp_path / "profile")

    assert len(re.findall(r'data-rendered="1"', dom)) == charts
    assert 'data-rendered="error"' not in dom
    assert 'class="chart-error"' not in dom
    # vega-embed replaced each empty div with an SVG scene holding drawn marks.
    svgs = re.findall(r'<svg[^>]*class="marks"', dom)
    assert len(svgs) == charts
    assert len(re.findall(r'<path[^>]*\sd="M', dom)) > 50
    # Axis labels come from the data: the utilisation panels and the histogram are there.
    assert "simulated time (s)" in dom and "staleness (versions)" in dom
