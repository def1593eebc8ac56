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
