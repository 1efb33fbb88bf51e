"""Evaluation protocols and per-task schedules: evaluation independent of file order, the paper protocol
reproducible and isolated, validation held out, and each task trained with its own settings."""

import dataclasses

import numpy as np
import pytest
import torch
from engine_runs import run_with_states, small_config

from cldst import checkpoint, continual
from cldst.config import ConfigError, RunConfig
from cldst.data import Benchmark, load_benchmark
from cldst.splits import validation_indices

COLOURS = np.array([[230, 25, 25], [25, 230, 25], [25, 25, 230], [230, 230, 25]], dtype=np.float64)


def colour_coded(per_class: int, size: int = 8) -> Benchmark:
    """Four classes, each a solid colour plus noise, stored class by class (as the miniImageNet folders are)."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(4), n)  # class-sorted on purpose
        x = COLOURS[y][:, None, None, :] + rng.normal(0, 20, size=(len(y), size, size, 3))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    (train_x, train_y), (test_x, test_y) = split(per_class), split(per_class // 2)
    return Benchmark("synthetic", train_x, train_y, test_x, test_y, 4, (0.5,) * 3, (0.3,) * 3, 0, False)


def config(**overrides) -> RunConfig:
    values = dict(benchmark="synthetic", net="resnet18", num_tasks=2, classes_per_task=2, num_classes=4, epochs=2,
                  batch_size=16, update_frequency=4, device="cpu")
    return RunConfig(**{**values, **overrides}).resolve()


def test_evaluation_does_not_depend_on_file_order():
    bench = colour_coded(per_class=32)
    fast = dict(epochs=1, update_frequency=1000)  # resnet18 is slow on a CPU: one epoch, no prune-and-regrow
    small = continual.run(config(eval_batch_size=4, **fast), bench)
    large = continual.run(config(eval_batch_size=64, **fast), bench)
    # class-sorted batches of 4 would hold one class each: batch statistics would normalise the colour away
    # (chance is 50%); in a fixed shuffled order small batches score about as well as large ones
    assert small[-1].avg_acc >= 80 and large[-1].avg_acc >= 80
    assert abs(small[-1].avg_acc - large[-1].avg_acc) <= 10


@pytest.fixture(scope="module")
def synthetic():
    return load_benchmark("synthetic")


def test_paper_protocol_is_reproducible_and_isolated(synthetic):
    cfg = small_config(protocol="paper")
    assert (cfg.eval_head, cfg.precision) == ("all", "fp32")
    first, states = run_with_states(cfg, synthetic)
    again, _ = run_with_states(cfg, synthetic)
    assert [r.acc for r in first] == [r.acc for r in again] and [r.best_epoch for r in first] == [
        r.best_epoch for r in again]
    clean, _ = run_with_states(small_config(), synthetic)
    assert [r.acc for r in first] != [r.acc for r in clean]
    for earlier, later in zip(states, states[1:], strict=False):
        masks = checkpoint.task_masks(earlier)
        for name in masks[0]:
            owned = torch.stack([m[name] for m in masks]).any(0)
            assert torch.equal(earlier["model"][name][owned], later["model"][name][owned])


def test_paper_protocol_refuses_a_contradicting_setting():
    with pytest.raises(ConfigError, match="eval_head: 'task' contradicts protocol 'paper'"):
        small_config(protocol="paper", eval_head="task")


def test_validation_split_is_disjoint_stratified_and_fixed(synthetic):
    train, val = validation_indices(synthetic.train_y, 0.25)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(synthetic.train_y)
    counts = np.bincount(synthetic.train_y[val])
    assert set(counts) == {round(0.25 * c) for c in np.bincount(synthetic.train_y)}
    again_train, again_val = validation_indices(synthetic.train_y, 0.25)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)


@pytest.mark.parametrize("fraction", [0.001, 0.999])
def test_a_fraction_that_empties_a_side_of_a_class_is_refused(synthetic, fraction):
    with pytest.raises(ConfigError, match="val_fraction"):
        validation_indices(synthetic.train_y, fraction)


def test_validation_metrics_are_recorded_and_isolated(synthetic):
    results, _ = run_with_states(small_config(val_fraction=0.2), synthetic)
    for r in results:
        assert len(r.val_acc) == r.task + 1 and r.val_avg_acc == pytest.approx(np.mean(r.val_acc))
    for j in range(3):  # isolation holds on validation too: BWT there is exactly 0
        assert len({r.val_acc[j] for r in results[j:]}) == 1
    plain, _ = run_with_states(small_config(), synthetic)
    assert plain[0].val_acc is None and plain[0].val_avg_acc is None


def test_each_task_trains_with_its_own_settings(synthetic):
    cfg = small_config(density=(0.1, 0.3, 0.2), update_frequency=(1000, 2, 3), growth=("random", "momentum", "unfired"))
    results, _ = run_with_states(cfg, synthetic)
    assert [round(r.task_density, 2) for r in results] == [0.1, 0.3, 0.2]
    assert [r.growth for r in results] == ["random", "momentum", "unfired"]
    # task 0 never updates its mask, so only its own weights ever fired; task 1's regrowth fires others
    assert results[0].fired_fraction == pytest.approx(results[0].task_density)
    assert results[1].fired_fraction > results[1].task_density


def test_a_checkpoint_resumes_with_new_settings_for_the_tasks_to_come(synthetic):
    cfg = small_config()
    _, states = run_with_states(cfg, synthetic)
    changed = dataclasses.replace(cfg, density=0.3, growth="gradient")
    state = checkpoint.check_state(states[0], changed.to_dict())
    resumed, _ = run_with_states(changed, synthetic, state)
    assert [r.density for r in resumed] == [0.2, 0.3, 0.3] and resumed[2].growth == "gradient"
    with pytest.raises(checkpoint.CheckpointError, match="lr"):
        checkpoint.check_state(states[0], dataclasses.replace(cfg, lr=0.5).to_dict())


@pytest.mark.parametrize("overrides, message", [
    (dict(density=(0.1, 0.2)), "density: 2 values but num_tasks is 3"),
    (dict(growth=("random", "sideways", "random")), "growth \\(task 1\\): 'sideways' is not one of"),
    (dict(death_rate=(0.5, 1.5, 0.5)), "death_rate \\(task 1\\): must be a number in"),
])
def test_bad_schedules_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        small_config(**overrides)
