"""Shared fixtures: one real local Ray cluster for the whole session (starting one costs ~5 s)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from w2sray.sweep import DRIVER_RESOURCE

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    ray.init(
        num_cpus=2,
        resources={DRIVER_RESOURCE: 1000},
        include_dashboard=False,
        log_to_driver=False,
    )
    yield ray
    ray.shutdown()
