"""The per-task loop: isolation is exact, resume equals uninterrupted, runs are reproducible."""

import time
import warnings
from collections import defaultdict

import numpy as np
import pytest
import torch
from engine_runs import run_with_states, small_config

from cldst import checkpoint, continual, metrics
from cldst.batches import TaskData, batch_bounds
from cldst.config import GROWTHS, ConfigError
from cldst.data import load_benchmark, select_classes, task_indices
from cldst.masking import Masking, death_rate_at, pack_bits
from cldst.models import Net, build_model


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("synthetic")


def task_images(bench, cfg, task: int) -> int:
    """How many training images task `task` of `cfg` has."""
    return len(task_indices(select_classes(bench, cfg.num_classes, cfg.class_order_seed).train_y, task,
                            cfg.classes_per_task))


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


def test_without_isolation_earlier_weights_move_and_the_recorded_bwt_is_the_formula(bench):
    cfg = small_config(isolate=False)
    started = time.perf_counter()
    results, states = run_with_states(cfg, bench)
    assert 0 < sum(r.train_seconds for r in results) < time.perf_counter() - started
    owned = owned_union(states[0])
    moved = any(not torch.equal(states[0]["model"][n][m], states[-1]["model"][n][m]) for n, m in owned.items())
    assert moved
    # BWT after task t: mean over j < t of R[t][j] - R[j][j], written out here rather than read from metrics
    expected = [0.0] + [sum(results[t].acc[j] - results[j].acc[j] for j in range(t)) / t for t in (1, 2)]
    assert [r.bwt for r in results] == pytest.approx(expected)
    assert results[-1].bwt != 0.0, "without isolation the run forgets: the last BWT cannot be 0"
    # each task's row holds its subnetwork's accuracy on every later task (forward transfer), and its speed
    assert [len(r.fwt_acc) for r in results] == [2, 1, 0]
    assert {(r.val_acc, r.val_avg_acc) for r in results} == {(None, None)}  # no validation split asked for
    for r in results:
        assert r.images_per_second * r.train_seconds == pytest.approx(cfg.epochs * task_images(bench, cfg, r.task))


def test_sgd_is_nesterov_whenever_it_has_momentum_and_each_optimizer_takes_its_settings():
    model = torch.nn.Linear(2, 2)
    sgd = continual.make_optimizer(small_config(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-3), model)
    assert type(sgd) is torch.optim.SGD
    assert {k: sgd.defaults[k] for k in ("lr", "momentum", "nesterov", "weight_decay")} == {
        "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-3}
    assert continual.make_optimizer(small_config(optimizer="sgd", momentum=0.0), model).defaults["nesterov"] is False
    adam = continual.make_optimizer(small_config(optimizer="adam", lr=1e-3, weight_decay=1e-4), model)
    assert type(adam) is torch.optim.Adam and (adam.defaults["lr"], adam.defaults["weight_decay"]) == (1e-3, 1e-4)


def test_the_engines_sgd_loop_leaves_no_momentum_outside_the_mask(bench, monkeypatch):
    """After every step of the real training loop, SGD's momentum is 0 wherever the task's mask is off (as the
    reference), so a weight the next update regrows does not start with momentum it gathered while inactive."""
    engine_step, outside, inside = continual.train_step, [], []

    def observed_step(model, optimizer, masking, *args):
        out = engine_step(model, optimizer, masking, *args)
        for name, p in masking.params.items():
            buffer = optimizer.state[p]["momentum_buffer"]
            outside.append(int((buffer[~masking.mask[name]] != 0).sum()))
            inside.append(int((buffer[masking.mask[name]] != 0).sum()))
        return out

    monkeypatch.setattr(continual, "train_step", observed_step)
    run_with_states(small_config(optimizer="sgd", lr=0.05, momentum=0.9, epochs=1), bench)
    assert sum(inside) > 0 and sum(outside) == 0


def one_hot_tasks(num_tasks: int, classes_per_task: int) -> list[TaskData]:
    """Task t's held-out set: one 1 x C image per class c of the task, 255 at pixel c and 0 elsewhere."""
    classes = num_tasks * classes_per_task
    sets = []
    for t in range(num_tasks):
        labels = np.arange(t * classes_per_task, (t + 1) * classes_per_task)
        images = np.zeros((len(labels), 1, classes, 1), np.uint8)  # (N, H, W, C)
        images[np.arange(len(labels)), 0, labels, 0] = 255
        sets.append(TaskData(images, labels, torch.device("cpu"), (0.0,), (1.0,)))
    return sets


@pytest.mark.parametrize("eval_head", ["task", "all"])
def test_forward_transfer_reads_the_current_tasks_subnetwork_and_head(eval_head):
    """A hand-built 3-task case: a linear head over one-hot images, so logits are a column of the weight.
    Task 1's subnetwork maps class 4 -> its head's first class and 5 -> its second (FWT on task 2: 100%),
    while head 2's rows, also inside task 1's mask, map them the other way round (through head 2: 0%)."""
    cfg = small_config(eval_head=eval_head)
    model = Net(torch.nn.Flatten(), 6, 6, head_bias=False)
    weight = torch.zeros(6, 6)  # (class, pixel)
    for row, pixel, value in [(0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0), (3, 3, 1.0), (2, 4, 1.0), (3, 5, 1.0),
                              (5, 4, 0.5), (4, 5, 0.5)]:
        weight[row, pixel] = value
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
    masking = Masking(model, "uniform", True, 2)
    task_0, task_1 = torch.zeros(6, 6, dtype=torch.bool), torch.zeros(6, 6, dtype=torch.bool)
    task_0[:2], task_1[2:] = True, True
    masking.load_task_masks([{"classifier.weight": pack_bits(m)} for m in (task_0, task_1)])
    acc, fwt_acc = continual.evaluate_all(cfg, model, masking, one_hot_tasks(3, 2), 1, torch.device("cpu"), True)
    assert acc == [100.0, 100.0]
    assert fwt_acc == [100.0]
    assert metrics.forward_transfer([[], fwt_acc]) == 100.0
    assert torch.equal(model.classifier.weight, weight), "evaluation leaves the merged weights as it found them"


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


def test_resume_after_any_task_equals_an_uninterrupted_run(bench, tmp_path):
    """After task 1, what the run owns is the union of two tasks' masks: resuming there is the harder case."""
    cfg = small_config(growth="momentum")
    full, states = run_with_states(cfg, bench)
    for done in range(1, cfg.num_tasks):
        path = checkpoint.save(states[done - 1], tmp_path / f"after-task-{done - 1}.pt")
        resumed, resumed_states = run_with_states(cfg, bench, checkpoint.load(path, cfg.to_dict()))
        assert [r.acc for r in resumed] == [r.acc for r in full], f"resumed after task {done - 1}"
        assert [r.fwt_acc for r in resumed] == [r.fwt_acc for r in full]
        assert [r.capacity_used for r in resumed] == [r.capacity_used for r in full]
        final, expected = resumed_states[-1]["model"], states[-1]["model"]
        assert all(torch.equal(final[name], expected[name]) for name in expected), f"after task {done - 1}"


@pytest.mark.slow  # three whole runs; resuming equals an uninterrupted run is the quick tier's determinism check
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
    with pytest.raises(continual.TrainingError, match="^loss became nan in task 0, epoch 0$"):
        continual.run(small_config(lr=1e30, optimizer="sgd", momentum=0.0), bench)


@pytest.mark.parametrize("eval_head", ["task", "all"])
def test_learns_well_above_chance(bench, eval_head):
    results, _ = run_with_states(small_config(eval_head=eval_head, epochs=3), bench)
    assert results[-1].avg_acc > (70 if eval_head == "task" else 30)


def test_momentum_growth_under_sgd_warns(bench):
    """SGD's momentum buffer is masked every step, so momentum growth has nothing to rank: say so."""
    with pytest.warns(UserWarning) as warned:
        continual.run(small_config(growth=["random", "momentum", "random"], optimizer="sgd", epochs=1), bench)
    assert [str(w.message) for w in warned] == [
        "momentum growth with --optimizer sgd cannot rank inactive weights: their momentum buffer is masked to 0 after "
        "every step (as in the reference), so every candidate scores 0 and the regrown weights are a tie-break. Use "
        "--optimizer adam, or another growth criterion."]
    assert warned[0].filename == __file__  # it points at the caller's line, not at cldst
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        continual.run(small_config(growth="momentum", optimizer="adam", epochs=1), bench)
        continual.run(small_config(growth="random", optimizer="sgd", epochs=1), bench)


def test_on_the_cpu_the_weights_keep_the_default_memory_format(bench):
    """channels_last is for CUDA's convolutions; on the CPU every weight stays contiguous (resnet18: its 3x3
    convolutions over many channels would not be in channels_last)."""
    formats = set()

    class FirstStepDone(Exception):
        pass

    def record(task, step, loss, optimizer, masking):  # the format is set before training: one step shows it
        formats.update(p.is_contiguous() for p in masking.params.values())
        raise FirstStepDone

    with pytest.raises(FirstStepDone):
        continual.run(small_config(net="resnet18", epochs=1, num_tasks=1, num_classes=2), bench,
                      continual.Hooks(on_step=record))
    assert formats == {True}


def test_cuda_without_a_cuda_device_is_refused_and_auto_picks_cuda_only_where_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as refused:
        continual.select_device("cuda")
    assert str(refused.value) == "device: 'cuda' requested but no CUDA device is available"
    assert continual.select_device("auto") == continual.select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a device object needs no GPU
    assert continual.select_device("auto") == torch.device("cuda")


@pytest.mark.parametrize(("epochs", "factors"), [(1, [1]), (2, [1, 0.01]), (4, [1, 1, 0.1, 0.01])])
def test_each_task_starts_at_lr_and_drops_it_tenfold_at_half_and_three_quarters_of_its_epochs(bench, epochs, factors):
    """Milestones int(0.5 x epochs) and int(0.75 x epochs); one at epoch 0 is left out (docs/experiments/
    differences.md, "A one-epoch task keeps its learning rate"); two at the same epoch drop lr a hundredfold."""
    cfg = small_config(epochs=epochs, num_tasks=2, num_classes=4, optimizer="sgd", lr=0.08, momentum=0.9)
    lrs = {0: [], 1: []}

    def record(task, step, loss, optimizer, masking):
        lrs[task].append(optimizer.param_groups[0]["lr"])

    continual.run(cfg, bench, continual.Hooks(on_step=record))
    per_epoch = len(lrs[0]) // epochs
    assert per_epoch > 0 and len(lrs[0]) == epochs * per_epoch
    for task in (0, 1):  # a fresh optimizer and schedule per task
        assert lrs[task] == pytest.approx([0.08 * f for f in factors for _ in range(per_epoch)])


def test_every_step_is_counted_updates_come_every_update_frequency_steps_and_only_the_tasks_rows_learn(bench):
    """Steps 1..N per task (N = epochs x batches), an update after every third with the cosine death rate of
    its step and its changes, a loss that reaches only the task's own classifier rows and no weight an earlier
    task owns, and each epoch's loss the mean over its images."""
    cfg = small_config(update_frequency=3, epochs=2)
    steps, updates, step_losses, epoch_losses = (defaultdict(list) for _ in range(4))  # by task
    foreign_grads, train_accs = [], []

    def on_step(task, step, loss, optimizer, masking):
        steps[task].append(step)
        step_losses[task].append(float(loss.detach()))
        grad = masking.params["classifier.weight"].grad  # (classes, features)
        rows = torch.ones(cfg.num_classes, dtype=torch.bool)
        rows[task * cfg.classes_per_task:(task + 1) * cfg.classes_per_task] = False
        foreign_grads.append(float(grad[rows].abs().sum()))
        # and no gradient reaches a weight an earlier task owns (it would feed the optimizer's state)
        foreign_grads.extend(float(p.grad[masking.owned[name]].abs().sum()) for name, p in masking.params.items())

    def on_update(task, step, rate, optimizer, masking, changes):
        assert changes and set(changes) <= set(masking.params), "the update's removed and regrown sets"
        updates[task].append((step, rate))

    def on_epoch_end(task, epoch, loss, train_acc):
        epoch_losses[task].append(loss)
        train_accs.append(train_acc)

    continual.run(cfg, bench, continual.Hooks(on_step=on_step, on_update=on_update, on_epoch_end=on_epoch_end))
    for task in range(cfg.num_tasks):
        images = task_images(bench, cfg, task)
        total = cfg.epochs * len(batch_bounds(images, cfg.batch_size))
        assert steps[task] == list(range(1, total + 1))
        assert updates[task] == [(s, pytest.approx(death_rate_at(s, total, cfg.death_rate)))
                                 for s in range(3, total + 1, 3)]
        sizes = [end - start for start, end in batch_bounds(images, cfg.batch_size)]
        per_epoch = len(sizes)
        assert epoch_losses[task] == pytest.approx([
            sum(loss * size for loss, size in zip(step_losses[task][e * per_epoch:(e + 1) * per_epoch], sizes,
                                                  strict=True)) / images for e in range(cfg.epochs)])
    assert set(foreign_grads) == {0.0}
    # training accuracy counts every image of the epoch: the second epochs reach 95-99%, where one batch of 32
    # of a task's 240 images could give at most 13.3%; and a count of whole images
    assert all(0 <= acc <= 100 for acc in train_accs) and min(train_accs[1::2]) > 50
    images = task_images(bench, cfg, 0)  # every task has as many
    assert all(acc * images / 100 == pytest.approx(round(acc * images / 100)) for acc in train_accs)


@pytest.mark.parametrize("protocol", ["clean", "paper"])
def test_the_epoch_with_the_best_training_accuracy_is_kept(bench, protocol):
    """Task 0's weights are zeroed through its last epoch, so its training accuracy falls to chance there: the
    task keeps epoch 1's weights (restored from its snapshot) and records epoch 1."""
    cfg = small_config(epochs=3, protocol=protocol)
    accs, per_epoch = [], len(batch_bounds(task_images(bench, cfg, 0), cfg.batch_size))

    def ruin_the_last_epoch(task, step, loss, optimizer, masking):
        if task == 0 and step > 2 * per_epoch:
            for p in masking.params.values():
                p.data.zero_()

    def on_epoch_end(task, epoch, loss, train_acc):
        if task == 0:
            accs.append(train_acc)

    results = continual.run(cfg, bench, continual.Hooks(on_step=ruin_the_last_epoch, on_epoch_end=on_epoch_end))
    assert accs[2] < 60 < accs[1] and results[0].best_epoch == 1
    assert results[0].acc[0] > 80  # epoch 1's weights, not the zeroed ones


def test_on_the_cpu_bf16_changes_nothing(bench):
    """bf16 autocast applies on CUDA only: on the CPU a bf16 run trains and evaluates exactly as fp32."""
    bf16, fp32 = (continual.run(small_config(epochs=1, num_tasks=2, num_classes=4, precision=p), bench)
                  for p in ("bf16", "fp32"))
    assert [(r.acc, r.fwt_acc, r.best_epoch) for r in bf16] == [(r.acc, r.fwt_acc, r.best_epoch) for r in fp32]


def test_the_paper_protocols_test_crops_are_the_same_at_every_evaluation(bench):
    """Under `paper` the test images are cropped and flipped with a generator seeded per task, so evaluating
    the same weights twice gives the same accuracy; crops drawn anew each time would not."""
    cfg = small_config(protocol="paper")
    torch.manual_seed(0)
    model = build_model(cfg.net, bench.channels, bench.image_size, cfg.num_classes)
    data = TaskData(bench.test_x, bench.test_y, torch.device("cpu"), bench.mean, bench.std, 2, True, False)
    first, again = (continual.accuracy(cfg, model, data, 0, 0, torch.device("cpu")) for _ in range(2))
    uncropped = TaskData(bench.test_x, bench.test_y, torch.device("cpu"), bench.mean, bench.std, 0, False, False)
    whole = continual.accuracy(cfg, model, uncropped, 0, 0, torch.device("cpu"))
    assert first == again != whole  # the crops were applied
    in_batches_of_7 = small_config(protocol="paper", eval_batch_size=7)
    assert continual.accuracy(in_batches_of_7, model, uncropped, 0, 0, torch.device("cpu")) == whole


@pytest.mark.parametrize("protocol", ["clean", "paper"])
def test_training_accuracy_is_over_the_tasks_head_or_under_paper_over_all_classes(bench, monkeypatch, protocol):
    """The accuracy that picks the best epoch: the argmax of the task's head against its target, or under `paper`
    the reference's argmax over every class against the label. On tasks 1 and 2 the earlier heads take some of
    the argmax over every class, so the two counts differ there."""
    cfg = small_config(protocol=protocol)
    engine_step, counts, recorded = continual.train_step, defaultdict(lambda: [0, 0]), []

    def observed_step(model, optimizer, masking, x, target, head, autocast):
        loss, logits = engine_step(model, optimizer, masking, x, target, head, autocast)
        task = head.start // cfg.classes_per_task
        counts[task, len(recorded)][0] += int((logits[:, head].argmax(1) == target).sum())
        counts[task, len(recorded)][1] += int((logits.argmax(1) == target + head.start).sum())
        return loss, logits

    def on_epoch_end(task, epoch, loss, train_acc):
        recorded.append(train_acc)

    monkeypatch.setattr(continual, "train_step", observed_step)
    continual.run(cfg, bench, continual.Hooks(on_epoch_end=on_epoch_end))
    images = [task_images(bench, cfg, task) for task, _ in counts]
    expected = [100.0 * count[protocol == "paper"] / n for count, n in zip(counts.values(), images, strict=True)]
    assert recorded == expected
    assert any(head != every for head, every in counts.values()), "the two accuracies differ somewhere"


def test_between_equally_accurate_epochs_the_first_is_kept_even_at_zero_accuracy(bench, monkeypatch):
    """Every epoch of every task is made 0% accurate (the logits the step returns favour a wrong class): the
    first epoch is still the best one, and no later epoch of the same accuracy replaces it."""
    engine_step = continual.train_step

    def always_wrong(model, optimizer, masking, x, target, head, autocast):
        loss, logits = engine_step(model, optimizer, masking, x, target, head, autocast)
        wrong = logits.detach().clone()
        wrong[torch.arange(len(target)), target + head.start] = wrong.min() - 1.0
        return loss, wrong

    monkeypatch.setattr(continual, "train_step", always_wrong)
    recorded = []
    results = continual.run(small_config(epochs=3), bench,
                            continual.Hooks(on_epoch_end=lambda task, epoch, loss, acc: recorded.append(acc)))
    assert set(recorded) == {0.0} and len(recorded) == 9
    assert [r.best_epoch for r in results] == [0, 0, 0]


def test_a_one_image_test_set_is_0_or_100_percent_accurate():
    """An identity head over one-hot images predicts each image's class: one image, one right answer, 100%."""
    cfg = small_config()
    model = Net(torch.nn.Flatten(), 6, 6, head_bias=False)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.eye(6))
    one_image = one_hot_tasks(3, 2)[1]
    one_image.x, one_image.y = one_image.x[1:], one_image.y[1:]
    assert len(one_image) == 1
    assert continual.accuracy(cfg, model, one_image, 1, 1, torch.device("cpu")) == 100.0
