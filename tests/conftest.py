"""Shared fixtures: one real local Ray cluster for the whole session (starting one costs ~5 s)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from w2sray.sweep import connect

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.pop("RAY_ADDRESS", None)  # always a cluster of its own, never a user's
    connect(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session", autouse=True)
def _digest_cache(tmp_path_factory):
    """Content digests (w2sray/digests.py) are cached in a session folder, not the user's."""
    old = os.environ.get("W2SRAY_CACHE_DIR")
    os.environ["W2SRAY_CACHE_DIR"] = str(tmp_path_factory.mktemp("w2sray-cache"))
    yield
    if old is None:
        os.environ.pop("W2SRAY_CACHE_DIR", None)
    else:
        os.environ["W2SRAY_CACHE_DIR"] = old


def pytest_collection_modifyitems(config, items):
    """Run the tests that use the shared Ray cluster last: several other tests assert that a
    command did not start Ray, which they cannot see once the session cluster is up."""
    items.sort(key=lambda item: "ray_cluster" in getattr(item, "fixturenames", ()))
