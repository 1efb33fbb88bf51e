"""--mlflow and --wandb: a missing package or a URI MLflow refuses is one line and exit 2 before anything is written;
a real sweep logs every task to MLflow's local file store and to W&B in offline mode (no network). Both clients
come with the test extra (pip install -e '.[test]'), so these tests run wherever the suite does."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray_cluster import driver_env

from cldst import results

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sweeps import common, full_grid, search  # noqa: E402

pytestmark = pytest.mark.timeout(60)


def fails_in_one_line(main, argv: list[str], tmp_path: Path, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == [] and not ray.is_initialized()  # nothing written, no Ray
    return err


@pytest.mark.parametrize("main", [full_grid.main, search.main], ids=["full_grid", "search"])
@pytest.mark.parametrize("option,value", [("--mlflow", "file:./mlruns"), ("--wandb", "cldst")])
def test_a_missing_logger_package_is_one_line_before_anything(main, option, value, tmp_path, capsys, monkeypatch):
    package = option[2:]
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(common.importlib.util, "find_spec", lambda name, *a: None if name == package
                        else find_spec(name, *a))
    monkeypatch.chdir(tmp_path)
    err = fails_in_one_line(main, ["--preset", "quick", option, value], tmp_path, capsys)
    assert err == f"error: {option}: the {package} package is not installed; pip install 'cldst[{package}]' " \
                  f"(or {package})\n"


def test_an_mlflow_uri_mlflow_refuses_is_one_line_before_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = fails_in_one_line(full_grid.main, ["--preset", "quick", "--mlflow", "nosuch://store"], tmp_path, capsys)
    assert err.startswith("error: --mlflow: nosuch://store: ")


@pytest.mark.timeout(240)
def test_mlflow_and_wandb_log_every_task_of_a_sweep(tmp_path, monkeypatch):
    mlruns, wandb_dir = tmp_path / "mlruns", tmp_path / "wandb"
    wandb_dir.mkdir()
    argv = ["--preset", "quick", "--epochs", "1", "--num-tasks", "2", "--density", "0.1", "--growth", "random",
            "--name", "logged", "--results", str(tmp_path / "logged"), "--storage", str(tmp_path / "ray"),
            "--mlflow", mlruns.as_uri(), "--wandb", "cldst-test"]
    # MLflow 3.x keeps its file store only on request; W&B offline writes under WANDB_DIR and never calls home.
    env = driver_env(MLFLOW_ALLOW_FILE_STORE="true", WANDB_MODE="offline", WANDB_DIR=str(wandb_dir),
                     WANDB_SILENT="true")
    driver = subprocess.run([sys.executable, str(REPO / "sweeps" / "full_grid.py"), *argv], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=200)
    assert driver.returncode == 0, driver.stdout + driver.stderr
    loaded = results.load(tmp_path / "logged")
    trial_ids = sorted(loaded.runs.column("trial_id").to_pylist())
    avg_acc = {(t["trial_id"], t["task"] + 1): t["avg_acc"] for t in loaded.tasks.to_pylist()}
    assert len(trial_ids) == 2 and len(avg_acc) == 4
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=mlruns.as_uri())
    experiment = client.get_experiment_by_name("logged")  # the experiment is the sweep's name
    runs = {r.data.tags["trial_name"].removeprefix("trainable_"): r
            for r in client.search_runs([experiment.experiment_id])}  # one MLflow run per trial
    assert sorted(runs) == trial_ids
    for trial_id, run in runs.items():
        assert run.info.status == "FINISHED" and run.data.params["density"] == "0.1"
        history = client.get_metric_history(run.info.run_id, "avg_acc")
        assert {(m.step, m.value) for m in history} == {(k, avg_acc[trial_id, k]) for k in (1, 2)}
    offline = sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert sorted(p.name[len("run-"):-len(".wandb")] for p in offline) == trial_ids  # one W&B run per trial
    assert all(p.stat().st_size > 0 for p in offline)
