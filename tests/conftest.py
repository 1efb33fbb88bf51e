"""Fixtures shared by several test files, and the `slow` mark the quick tier (`pytest -m "not slow"`) leaves out."""

from __future__ import annotations

import logging
import os

import pytest

# Several xdist workers on as many cores: torch (and OpenMP in the drivers and trials a test starts) on one thread
# each. With torch's default, a thread per core in every worker, the workers' OpenMP threads spin waiting for each
# other: test_masking.py and test_continual.py on 2 workers took 161 s instead of 51 s (299 s of CPU instead of
# 55 s). Set before any test module imports torch.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Modules whose tests start Ray, a sweep driver, the benchmarks or the mutation script: minutes of the full suite.
# The quick tier leaves them out, with every multi-node test (marked cluster); docs/development/tests.md.
SLOW_MODULES = {"test_adaptive", "test_benchmarks", "test_examples", "test_faults", "test_loggers", "test_looks",
                "test_mutation", "test_race", "test_races", "test_s3_cluster", "test_s3_storage", "test_search_resume",
                "test_sweeps", "test_sweeps_cli", "test_token"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the slow tests. (With `-n 2 --dist loadfile`, xdist hands the modules out in the order of their
    number of tests, most first: the Ray modules, with few tests, start last, each beside the rest of the other
    worker's queue. Ordering them first, with `--no-loadscope-reorder`, was not faster: two Ray modules then run side
    by side; docs/development/tests.md.)"""
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
