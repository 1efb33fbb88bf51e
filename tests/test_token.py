"""Joining a cluster that requires a token: with a token at hand (RAY_AUTH_TOKEN or Ray's token file) the sweep runs
without further settings; without one, or with the wrong one, it says so in one line, exits 2 and writes nothing.
A local Ray's token file is made readable by its owner only."""

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import LocalCluster, driver_env

from cldst import results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeps import cluster  # noqa: E402

AUTH_VARIABLES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def plain_env(home: Path, **extra: str) -> dict:
    """A driver's environment with no Ray auth settings and `home` as its home (so no ~/.ray/auth_token)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in driver_env().items() if k not in AUTH_VARIABLES}
    return {**env, "HOME": str(home), **extra}


def test_the_token_is_found_where_ray_looks_first(tmp_path, monkeypatch):
    for name in AUTH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cluster.token_source() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("abc\n")
    assert cluster.token_source() == str(tmp_path / ".ray" / "auth_token")
    (tmp_path / "elsewhere").write_text("def")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert cluster.token_source() == str(tmp_path / "elsewhere")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "ghi")
    assert cluster.token_source() == "RAY_AUTH_TOKEN"


@pytest.mark.timeout(120)
def test_a_local_ray_uses_a_token_readable_by_its_owner_only_and_says_nothing_of_it(tmp_path):
    home = tmp_path / "home"
    start = ("import os, sys; sys.path.insert(0, sys.argv[1]); from sweeps import common, full_grid; import ray; "
             "common.start_ray(full_grid.build_parser().parse_args([])); print(os.environ['RAY_AUTH_MODE']); "
             "ray.shutdown()")
    env = {k: v for k, v in plain_env(home).items() if k != "RAY_ADDRESS"}
    ran = subprocess.run([sys.executable, "-c", start, str(REPO)], env=env, check=True, timeout=100, text=True,
                         capture_output=True, preexec_fn=lambda: os.umask(0o022))  # Ray would leave it at 0644
    token_file = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and token_file.read_text().strip()
    assert ran.stdout.splitlines()[-1] == "token"  # Ray's default for a local Ray
    assert "Token authentication" not in ran.stdout + ran.stderr, ran.stderr


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_a_cluster_that_requires_a_token(tmp_path):
    argv = [sys.executable, str(REPO / "sweeps" / "full_grid.py"), "--preset", "quick", "--epochs", "1",
            "--num-tasks", "2", "--density", "0.1", "--growth", "random", "--sparse-init", "ERK", "--name", "tok",
            "--results", str(tmp_path / "tok"), "--storage", str(tmp_path / "ray")]
    with LocalCluster(tmp_path) as cluster:
        cluster.start_head(num_cpus=1)
        cluster.wait_for_nodes(1)
        token = cluster.env["RAY_AUTH_TOKEN"]
        refusals = {  # (the driver's environment, what its one line says)
            "no token": (plain_env(tmp_path / "empty-home"), "requires a token and none is set here"),
            "a wrong token": (plain_env(tmp_path / "empty-home", RAY_AUTH_TOKEN="0" * 64),
                              "refuses the token from RAY_AUTH_TOKEN"),
            "auth turned off": (plain_env(tmp_path / "empty-home", RAY_AUTH_MODE="disabled", RAY_AUTH_TOKEN=token),
                                "RAY_AUTH_MODE=disabled here"),
        }
        for case, (env, says) in refusals.items():
            began = time.monotonic()
            driver = subprocess.run([*argv, "--address", cluster.address], env=env, cwd=tmp_path,
                                    capture_output=True, text=True, timeout=60)
            assert driver.returncode == 2, (case, driver.stdout, driver.stderr)
            assert driver.stderr.startswith("error: --address: ") and driver.stderr.count("\n") == 1, case
            assert says in driver.stderr and "ray get-auth-token" in driver.stderr, (case, driver.stderr)
            assert time.monotonic() - began < 30, case  # not Ray's 20 s of retries and a traceback
            assert not (tmp_path / "tok").exists() and not (tmp_path / "ray").exists(), case  # nothing written
        # The token in Ray's token file, and no other setting: the sweep runs.
        home = tmp_path / "home"
        (home / ".ray").mkdir(parents=True)
        (home / ".ray" / "auth_token").write_text(token + "\n")
        driver = subprocess.run([*argv, "--address", cluster.address], env=plain_env(home), cwd=tmp_path,
                                capture_output=True, text=True, timeout=180)
    assert driver.returncode == 0, driver.stdout + driver.stderr
    (run,) = results.load(tmp_path / "tok").runs.to_pylist()
    assert (run["status"], run["tasks_done"]) == ("ok", 2)
