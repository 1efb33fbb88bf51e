"""A remote --storage that cannot be used fails before Ray starts, in one line naming --storage (moto's S3 server on
loopback; no cluster)."""

from __future__ import annotations

import pytest
import ray
from shared_nothing import S3Server

from sweeps import experiment, full_grid


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def aws(s3, monkeypatch):
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)


def test_a_missing_bucket_fails_before_ray_starts(s3, aws, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        full_grid.main(["--preset", "quick", "--results", str(tmp_path / "r"), "--storage", "s3://no-such/ray"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (f"error: --storage: s3://no-such/ray: no bucket 'no-such' at {s3.endpoint}; "
                                       f"create it first\n")
    assert not (tmp_path / "r").exists() and not ray.is_initialized()


def test_an_existing_bucket_passes_the_check(s3, aws, tmp_path):
    experiment.check_paths(experiment.Experiment("quick", tmp_path / "r", s3.uri("ray")))  # no SystemExit
