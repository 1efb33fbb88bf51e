"""Fixtures shared by several test files."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for one test module (the machine's size), shut down after it."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()
