"""Packing trials on a GPU safely, tested on the CPU: a trial holding a fraction of a GPU caps its CUDA memory at
that fraction (the torch.cuda calls are stand-ins here), an overrun fails the trial with a message naming its
share, and trials that hold a GPU do not reuse actors."""

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cldst import continual
from cldst import tune as cldst_tune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps import common, experiment, full_grid  # noqa: E402

CONFIG = {"benchmark": "synthetic", "num_tasks": 2, "epochs": 1}


@pytest.fixture
def fake_trial(monkeypatch):
    """A trial with the given Ray resources on a machine that seems to have a GPU; continual.run is replaced by
    `run` (default: record the config it got and report one task)."""
    calls = {"fraction": [], "reports": []}

    def setup(resources: dict, run=None):
        context = SimpleNamespace(get_trial_resources=lambda: SimpleNamespace(required_resources=resources),
                                  get_trial_id=lambda: "trial_1")
        monkeypatch.setattr(cldst_tune.tune, "get_context", lambda: context)
        monkeypatch.setattr(cldst_tune.tune, "get_checkpoint", lambda: None)
        monkeypatch.setattr(cldst_tune.tune, "report", lambda metrics, checkpoint: calls["reports"].append(metrics))
        monkeypatch.setattr(cldst_tune.ray, "get_gpu_ids", lambda: [0] if resources.get("GPU") else [])
        monkeypatch.setattr(cldst_tune.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n1"))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        gpu = SimpleNamespace(total_memory=80 * 2**30)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: gpu)
        monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                            lambda fraction, device: calls["fraction"].append((fraction, device)))

        def report_one_task(cfg, bench, hooks, state):
            calls["device"] = cfg.device
            numbers = {f.name: 0.0 for f in dataclasses.fields(continual.TaskResult)}  # the metrics are not tested here
            result = continual.TaskResult(**{**numbers, "task": 0, "acc": [90.0], "fwt_acc": [50.0]})
            hooks.on_task_end(result, {"model": {}})

        monkeypatch.setattr(cldst_tune.continual, "run", run or report_one_task)
        monkeypatch.setattr(cldst_tune.checkpoint, "save", lambda state, path: path)
        return calls

    return setup


def test_a_quarter_gpu_trial_caps_its_cuda_memory_at_a_quarter(fake_trial):
    calls = fake_trial({"CPU": 1, "GPU": 0.25})
    cldst_tune.trainable(CONFIG, bench=None)
    assert calls["device"] == "cuda" and calls["fraction"] == [(0.25, 0)]
    assert [(r["device"], r["gpu_memory_fraction"]) for r in calls["reports"]] == [("cuda", 0.25)]


@pytest.mark.parametrize("resources, device", [({"CPU": 1}, "cpu"), ({"CPU": 1, "GPU": 1}, "cuda")])
def test_a_cpu_trial_or_a_whole_gpu_is_not_capped(fake_trial, resources, device):
    calls = fake_trial(resources)
    cldst_tune.trainable(CONFIG, bench=None)
    assert calls["device"] == device and calls["fraction"] == []
    assert [r["gpu_memory_fraction"] for r in calls["reports"]] == [None]


def test_an_overrun_of_the_share_fails_the_trial_naming_the_share(fake_trial):
    def overrun(cfg, bench, hooks, state):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nmore lines")

    fake_trial({"CPU": 1, "GPU": 0.25}, run=overrun)
    with pytest.raises(continual.TrainingError) as caught:
        cldst_tune.trainable(CONFIG, bench=None)
    message = str(caught.value)
    assert "--gpus-per-trial 0.25: 20.0 of 80.0 GiB" in message and "pass a larger --gpus-per-trial" in message
    assert "Tried to allocate 2.00 GiB" in message and "more lines" not in message


def test_an_out_of_memory_without_a_cap_is_left_as_it_is(fake_trial):
    def overrun(cfg, bench, hooks, state):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    fake_trial({"CPU": 1, "GPU": 1}, run=overrun)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        cldst_tune.trainable(CONFIG, bench=None)


@pytest.mark.parametrize("gpus, reuse", [(0.0, True), (0.25, False), (1.0, False)])
def test_only_cpu_trials_reuse_actors(monkeypatch, tmp_path, gpus, reuse):
    from ray import tune

    seen = {}

    class FakeTuner:
        can_restore = staticmethod(lambda path: False)

        def __init__(self, fn, param_space, tune_config, run_config):
            seen["reuse"], seen["keep"] = tune_config.reuse_actors, run_config.checkpoint_config.num_to_keep

        def fit(self):
            return None

    monkeypatch.setattr(tune, "Tuner", FakeTuner)
    args = full_grid.build_parser().parse_args(["--preset", "quick", "--gpus-per-trial", str(gpus)])
    exp = experiment.Experiment("packing", tmp_path / "results", str(tmp_path / "ray"))
    exp.results_dir.mkdir()
    common.run(args, exp, bench=None, param_space={})
    assert seen == {"reuse": reuse, "keep": common.CHECKPOINTS_KEPT}


def test_population_based_training_keeps_the_checkpoints_it_clones_and_other_sweeps_only_the_last():
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    pbt = PopulationBasedTraining(metric="avg_acc", mode="max", hyperparam_mutations={"lr": [1e-3, 1e-2]})
    assert common.checkpoints_kept(pbt) == common.PBT_CHECKPOINTS_KEPT >= 3  # Tune warns at num_to_keep <= 2
    assert common.checkpoints_kept(ASHAScheduler()) == common.checkpoints_kept(None) == common.CHECKPOINTS_KEPT
