"""Unit tier guard: no test here may start Ray (the integration tier owns that)."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def _no_ray_started():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and hasattr(ray, "is_initialized"):
        assert not ray.is_initialized(), "a unit test started Ray; move it to tests/integration"
