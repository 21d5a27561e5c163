"""Shared pytest fixtures live in tests/fixtures/; each area owns one module."""

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytest_plugins = [
    "tests.fixtures.media",
    "tests.fixtures.s3",
    "tests.fixtures.hub",
    "tests.fixtures.ray_cluster",
]
