"""The per-task loop: isolation is exact, resume equals uninterrupted, runs are reproducible."""

import warnings

import pytest
import torch
from engine_runs import run_with_states, small_config

from cldst import checkpoint, continual
from cldst.config import GROWTHS
from cldst.data import load_benchmark
from cldst.masking import Masking
from cldst.models import build_model


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("synthetic")


def owned_union(state):
    task_masks = checkpoint.task_masks(state)
    return {name: torch.stack([m[name] for m in task_masks]).any(0) for name in task_masks[0]}


OPTIMIZERS = {
    "adam": dict(optimizer="adam"),
    "sgd+momentum+wd": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-3),
}


@pytest.mark.parametrize("growth", GROWTHS)
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.filterwarnings("ignore:momentum growth with --optimizer sgd")  # isolation must hold all the same
def test_isolation_is_exact(bench, growth, optimizer):
    cfg = small_config(growth=growth, **OPTIMIZERS[optimizer])
    results, states = run_with_states(cfg, bench)
    assert [r.bwt for r in results] == [0.0, 0.0, 0.0]
    for j in range(cfg.num_tasks):  # R[i][j] is the same number after every later task i
        assert len({r.acc[j] for r in results[j:]}) == 1
    for earlier, later in zip(states, states[1:], strict=False):
        owned = owned_union(earlier)
        for name, mask in owned.items():
            before, after = earlier["model"][name], later["model"][name]
            assert torch.equal(before[mask], after[mask]), f"{name}: a weight owned by an earlier task moved"
        done = earlier["next_task"] * cfg.classes_per_task  # head bias entries of earlier tasks' classes
        assert torch.equal(earlier["model"]["classifier.bias"][:done], later["model"]["classifier.bias"][:done])


def test_without_isolation_earlier_weights_move(bench):
    cfg = small_config(isolate=False)
    _, states = run_with_states(cfg, bench)
    owned = owned_union(states[0])
    moved = any(not torch.equal(states[0]["model"][n][m], states[-1]["model"][n][m]) for n, m in owned.items())
    assert moved


def test_shared_weight_enters_a_later_mask_with_its_real_value():
    torch.manual_seed(0)
    model = build_model("mlp", 1, 8, 4)
    masking = Masking(model, "uniform", True, 2)
    generator = torch.Generator().manual_seed(0)
    masking.start_task(0, generator, 0.5, "magnitude", "random")
    masking.end_task()
    trained = {n: p.detach().clone() for n, p in masking.params.items()}
    masking.start_task(1, generator, 0.5, "magnitude", "random")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        loss = model(torch.randn(8, 1, 8, 8))[:, 2:4].square().mean()
        optimizer.zero_grad()
        loss.backward()
        masking.after_backward()
        optimizer.step()
        masking.after_step(optimizer)
        masking.update(0.5, optimizer, generator)  # regrowth may pull owned weights into the mask
        for name, p in masking.params.items():
            shared = masking.mask[name] & masking.owned[name]
            assert shared.any()
            assert torch.equal(p.detach()[shared], trained[name][shared]), "a shared weight must keep its value"


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(bench, tmp_path):
    cfg = small_config(growth="momentum")
    full, states = run_with_states(cfg, bench)
    path = checkpoint.save(states[0], tmp_path / "after-task-0.pt")
    resumed, _ = run_with_states(cfg, bench, checkpoint.load(path, cfg.to_dict()))
    assert [r.acc for r in resumed] == [r.acc for r in full]
    assert [r.fwt_acc for r in resumed] == [r.fwt_acc for r in full]
    assert [r.capacity_used for r in resumed] == [r.capacity_used for r in full]


def test_same_seed_same_results_and_other_seed_differs(bench):
    first, _ = run_with_states(small_config(growth="random"), bench)
    again, _ = run_with_states(small_config(growth="random"), bench)
    other, _ = run_with_states(small_config(growth="random", seed=1), bench)
    assert [r.acc for r in first] == [r.acc for r in again]
    assert [r.capacity_used for r in first] != [r.capacity_used for r in other]


def test_checkpoint_of_another_configuration_is_refused(bench, tmp_path):
    cfg = small_config()
    _, states = run_with_states(small_config(epochs=1), bench)
    path = checkpoint.save(states[0], tmp_path / "c.pt")
    with pytest.raises(checkpoint.CheckpointError, match="epochs"):
        checkpoint.load(path, cfg.to_dict())


def test_task_statistics_are_consistent(bench):
    results, states = run_with_states(small_config(density=0.3), bench)
    for r in results:
        assert r.task_density == pytest.approx(0.3, abs=1e-3)
        assert 0 <= r.reused_fraction <= 1 and 0 < r.fired_fraction <= 1
    assert results[0].reused_fraction == 0.0
    capacity = [r.capacity_used for r in results]
    assert capacity == sorted(capacity) and capacity[0] == pytest.approx(0.3, abs=1e-3)
    total = sum(m.numel() for m in checkpoint.task_masks(states[-1])[0].values())
    owned = sum(int(m.sum()) for m in owned_union(states[-1]).values())
    assert capacity[-1] == owned / total


def test_nan_loss_is_a_training_error(bench):
    with pytest.raises(continual.TrainingError, match="loss became nan"):
        continual.run(small_config(lr=1e30, optimizer="sgd", momentum=0.0), bench)


@pytest.mark.parametrize("eval_head", ["task", "all"])
def test_learns_well_above_chance(bench, eval_head):
    results, _ = run_with_states(small_config(eval_head=eval_head, epochs=3), bench)
    assert results[-1].avg_acc > (70 if eval_head == "task" else 30)


def test_momentum_growth_under_sgd_warns(bench):
    """SGD's momentum buffer is masked every step, so momentum growth has nothing to rank: say so."""
    with pytest.warns(UserWarning, match="momentum growth with --optimizer sgd cannot rank inactive weights"):
        continual.run(small_config(growth=["random", "momentum", "random"], optimizer="sgd", epochs=1), bench)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        continual.run(small_config(growth="momentum", optimizer="adam", epochs=1), bench)
