"""Fixtures shared across test folders.

Ray takes seconds to start, so every test that needs it shares one local instance: such tests
take the ``ray_local`` fixture and carry ``@pytest.mark.xdist_group("ray")`` so that xdist runs
them on one worker (``--dist loadgroup`` in pyproject), where the session fixture starts Ray once.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by the tests of one xdist worker; skipped without Ray."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
