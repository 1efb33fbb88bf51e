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
    """Marks the slow tests, and runs the modules with a cluster first, then the other slow ones, so that no long
    module is the last a worker starts (README: `-n 2 --dist loadfile`, a module to a worker). Its effect on the
    suite's time was not measured apart from the other changes."""
    rank = {}
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in SLOW_MODULES or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.slow)
        rank[module] = min(rank.get(module, 2), 0 if item.get_closest_marker("cluster") else
                           1 if item.get_closest_marker("slow") else 2)
    items.sort(key=lambda item: rank[item.module.__name__.rpartition(".")[2]])


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for one test module (the machine's size), shut down after it."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()
