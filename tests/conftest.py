"""Fixtures shared by several test files, and the `slow` mark the quick tier (`pytest -m "not slow"`) leaves out."""

from __future__ import annotations

import logging

import pytest

# Modules whose tests start Ray, a sweep driver, the benchmarks or mutmut: minutes of the full suite. The quick tier
# leaves them out, with every multi-node test (marked cluster); docs/development/tests.md.
SLOW_MODULES = {"test_adaptive", "test_benchmarks", "test_examples", "test_faults", "test_loggers", "test_looks",
                "test_mutation", "test_race", "test_races", "test_s3_cluster", "test_s3_storage", "test_search_resume",
                "test_sweeps", "test_sweeps_cli", "test_token"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SLOW_MODULES or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for one test module (the machine's size), shut down after it."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()
