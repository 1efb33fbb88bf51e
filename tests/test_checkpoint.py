"""Checkpoint states on a tiny model, without training: what a state holds, the atomic save, and which
configurations may resume it (the engine's resume tests are in test_continual.py)."""

import os
import pickle

import pytest
import torch

from cldst import checkpoint
from cldst.config import RunConfig
from cldst.masking import pack_bits

CONFIG = RunConfig(benchmark="synthetic", num_tasks=3, classes_per_task=2, num_classes=6, device="cpu").resolve()


def tiny_state() -> tuple[torch.nn.Module, dict]:
    model = torch.nn.Linear(4, 3)
    mask = torch.tensor([[True, False, True, False]] * 3)
    return model, checkpoint.make_state(CONFIG.to_dict(), 1, model, [{"weight": pack_bits(mask)}], [{"task": 0}])


def test_a_state_holds_a_copy_of_the_weights_and_the_masks_as_bits():
    model, state = tiny_state()
    assert (state["format"], state["version"], state["next_task"]) == (checkpoint.FORMAT, checkpoint.VERSION, 1)
    assert state["config"] == CONFIG.to_dict() and state["results"] == [{"task": 0}]
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on after the state is made
    assert torch.equal(state["model"]["weight"], before)
    assert checkpoint.task_masks(state)[0]["weight"].tolist() == [[True, False, True, False]] * 3


def test_save_is_atomic_and_load_reads_it_back(tmp_path, monkeypatch):
    _, state = tiny_state()
    path = checkpoint.save(state, tmp_path / "run" / "deeper" / "c.pt")  # folders made as needed
    assert path == tmp_path / "run" / "deeper" / "c.pt" and [p.name for p in path.parent.iterdir()] == ["c.pt"]
    loaded = checkpoint.load(path, CONFIG.to_dict())
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"]) and loaded["next_task"] == 1

    def fails(obj, handle):
        handle.write(b"half a checkpoint")
        writing = [p.name for p in path.parent.iterdir() if p.name != "c.pt"]
        assert len(writing) == 1 and writing[0].startswith(".c.pt."), "written under a hidden name of its own"
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", fails)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(state, path)
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"], "the old checkpoint stays, no temp file"
    assert checkpoint.load(path, CONFIG.to_dict())["next_task"] == 1


class AsksForSystem:
    def __reduce__(self):
        return (os.system, ("true",))


def test_a_crafted_checkpoint_is_refused_naming_what_it_asks_for(tmp_path):
    path = tmp_path / "crafted.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": AsksForSystem()}, path)
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.load(path, CONFIG.to_dict())
    assert str(err.value) == (f"{path}: not a readable cldst checkpoint (it asks for {os.system.__module__}.system, "
                              f"which a cldst checkpoint never holds; refused without running it)")


def test_a_refusal_in_other_words_still_reads_as_one(tmp_path, monkeypatch):
    """torch's wording of a weights_only refusal varies across versions; one that names no global still says why."""
    def refuses(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed: unsupported operand")

    monkeypatch.setattr(checkpoint.torch, "load", refuses)
    with pytest.raises(checkpoint.CheckpointError, match=r"^c.pt: not a readable cldst checkpoint \(it asks for an "
                                                         r"object that is not a tensor or plain container, "):
        checkpoint.load("c.pt", CONFIG.to_dict())


def test_a_truncated_checkpoint_says_what_reading_it_raised(tmp_path):
    _, state = tiny_state()
    path = checkpoint.save(state, tmp_path / "c.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match=rf"^{path}: not a readable cldst checkpoint \(\w+: .+\)$"):
        checkpoint.load(path, CONFIG.to_dict())


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match=rf"^{tmp_path}/none.pt: no such checkpoint$"):
        checkpoint.load(tmp_path / "none.pt", CONFIG.to_dict())


@pytest.mark.parametrize("state", [[1, 2], {"format": "other"}, {}])
def test_what_is_not_a_cldst_checkpoint_is_refused(state):
    with pytest.raises(checkpoint.CheckpointError, match=r"^c.pt: not a cldst checkpoint$"):
        checkpoint.check_state(state, CONFIG.to_dict(), "c.pt")
    with pytest.raises(checkpoint.CheckpointError, match=r"^checkpoint: not a cldst checkpoint$"):  # no path given
        checkpoint.check_state(state, CONFIG.to_dict())


@pytest.mark.parametrize("version", [1, None])
def test_another_version_is_refused_with_both_versions_named(version):
    _, state = tiny_state()
    state = {**state, "version": version} if version else {k: v for k, v in state.items() if k != "version"}
    with pytest.raises(checkpoint.CheckpointError, match=rf"^c.pt: checkpoint version {version}, this cldst reads "
                                                         rf"version {checkpoint.VERSION} only "):
        checkpoint.check_state(state, CONFIG.to_dict(), "c.pt")


@pytest.mark.parametrize("change", [dict(device="cuda"), dict(precision="fp32"), dict(density=0.5),
                                    dict(growth="momentum"), dict(prune="SET"), dict(death_rate=0.2),
                                    dict(update_frequency=7)])
def test_runtime_and_per_task_settings_may_change_on_resume(change):
    _, state = tiny_state()
    assert checkpoint.check_state(state, {**CONFIG.to_dict(), **change}) is state


@pytest.mark.parametrize("name", ["seed", "lr", "net", "isolate"])
def test_any_other_setting_makes_the_checkpoint_foreign(name):
    _, state = tiny_state()
    config = CONFIG.to_dict()
    changed = {**config, name: "other"}
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.check_state(state, changed, "c.pt")
    assert str(err.value) == (f"c.pt: made with {name}={config[name]!r}, this run has {name}='other'; refusing to "
                              f"resume a different configuration")
    missing = {k: v for k, v in config.items() if k != name}  # a setting one side lacks differs too
    with pytest.raises(checkpoint.CheckpointError, match=f"made with {name}="):
        checkpoint.check_state(state, missing, "c.pt")
