"""Shared fixtures: one real local Ray cluster for the whole session (starting one costs ~5 s)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from w2sray.sweep import local_init_kwargs

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(**local_init_kwargs(num_cpus=2))
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config, items):
    """Run the tests that use the shared Ray cluster last: several other tests assert that a
    command did not start Ray, which they cannot see once the session cluster is up."""
    items.sort(key=lambda item: "ray_cluster" in getattr(item, "fixturenames", ()))
