"""The per-task loop: train with isolation, prune and regrow, merge, evaluate, checkpoint.

`run()` learns the tasks of one RunConfig in sequence and calls named hooks around the
loop (Avalanche style): `on_epoch_end` for progress, `on_task_end` with the task's
result and a checkpoint state from which the run resumes at the next task.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cldst import checkpoint as ckpt
from cldst import metrics
from cldst.batches import TaskData, batch_bounds
from cldst.config import PER_TASK_FIELDS, ConfigError, RunConfig
from cldst.data import Benchmark, select_classes, task_indices
from cldst.masking import Masking, death_rate_at
from cldst.models import build_model
from cldst.splits import evaluation_order, hold_out_validation

# The reference multiplies SGD's momentum buffer by the mask after every step (so do we): every inactive
# weight then scores 0, and the regrown weights are a tie-break, not a ranking.
MOMENTUM_UNDER_SGD = ("momentum growth with --optimizer sgd cannot rank inactive weights: their momentum buffer is "
                      "masked to 0 after every step (as in the reference), so every candidate scores 0 and the "
                      "regrown weights are a tie-break. Use --optimizer adam, or another growth criterion.")


class TrainingError(RuntimeError):
    """Training went wrong in a way a retry will not fix (e.g. the loss became NaN)."""


@dataclass
class TaskResult:
    task: int
    acc: list[float]  # R[task][j] for j <= task, in % (test data)
    fwt_acc: list[float]  # this task's subnetwork on later tasks (the reference's FWT entries)
    avg_acc: float
    bwt: float
    val_acc: list[float] | None  # the same row on the validation split; None without one
    val_avg_acc: float | None
    task_density: float
    capacity_used: float
    reused_fraction: float
    fired_fraction: float
    train_seconds: float
    images_per_second: float
    best_epoch: int
    # the settings this task trained with (they may differ from task to task: config.PER_TASK_FIELDS)
    density: float
    growth: str
    prune: str
    death_rate: float
    update_frequency: int


@dataclass
class Hooks:
    on_epoch_end: Callable[[int, int, float, float], None] | None = None  # (task, epoch, loss, train_acc %)
    on_task_end: Callable[[TaskResult, dict], None] | None = None  # (result, checkpoint state)
    # a step trace (cldst.trace): (task, step, loss, optimizer, masking) after every optimizer step, and
    # (task, step, death rate, optimizer, masking, {layer: (removed, regrown)}) after every update
    on_step: Callable[[int, int, torch.Tensor, torch.optim.Optimizer, Masking], None] | None = None
    on_update: Callable[[int, int, float, torch.optim.Optimizer, Masking, dict], None] | None = None


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def task_seed(seed: int, task: int) -> int:
    """Every random draw of task t comes from this seed, so a resumed run redraws them exactly."""
    return seed * 1_000_003 + task


def eval_seed(seed: int, task: int) -> int:
    """The seed of task `task`'s test-time augmentation (paper protocol): the same crops at every evaluation."""
    return task_seed(seed, task) + 500_009


def run(cfg: RunConfig, bench: Benchmark, hooks: Hooks | None = None, state: dict | None = None) -> list[TaskResult]:
    """Learn cfg.num_tasks tasks in sequence; resume after the last task in `state` if given."""
    hooks = hooks or Hooks()
    device = select_device(cfg.device)
    if cfg.optimizer == "sgd" and any(cfg.task_value("growth", t) == "momentum" for t in range(cfg.num_tasks)):
        warnings.warn(MOMENTUM_UNDER_SGD, stacklevel=2)
    bench, val_bench = hold_out_validation(bench, cfg.val_fraction)
    bench = select_classes(bench, cfg.num_classes, cfg.class_order_seed)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.net, bench.channels, bench.image_size, cfg.num_classes).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    masking = Masking(model, cfg.sparse_init, cfg.isolate, cfg.classes_per_task)
    results: list[TaskResult] = []
    if state is not None:
        model.load_state_dict(state["model"])
        masking.load_task_masks(state["task_masks"])
        results = [TaskResult(**r) for r in state["results"]]

    def eval_sets(b: Benchmark) -> list[TaskData]:
        """Each task's held-out images in a fixed, seeded order (never class-sorted)."""
        sets = []
        for t in range(cfg.num_tasks):
            idx = task_indices(b.test_y, t, cfg.classes_per_task)
            idx = idx[evaluation_order(len(idx), cfg.seed, t)]
            sets.append(TaskData(b.test_x[idx], b.test_y[idx], device, bench.mean, bench.std, b.crop_padding,
                                 b.flip, channels_last))
        return sets

    tests = eval_sets(bench)
    vals = eval_sets(select_classes(val_bench, cfg.num_classes, cfg.class_order_seed)) if val_bench else None
    for task in range(len(results), cfg.num_tasks):
        idx = task_indices(bench.train_y, task, cfg.classes_per_task)
        train = TaskData(bench.train_x[idx], bench.train_y[idx], device, bench.mean, bench.std, bench.crop_padding,
                         bench.flip, channels_last)
        seconds, best_epoch = learn_task(cfg, model, masking, train, task, hooks, device)
        stats = masking.end_task()
        acc, fwt_acc = evaluate_all(cfg, model, masking, tests, task, device, forward=True)
        val_acc = evaluate_all(cfg, model, masking, vals, task, device, forward=False)[0] if vals else None
        rows = [r.acc for r in results] + [acc]
        result = TaskResult(task=task, acc=acc, fwt_acc=fwt_acc, avg_acc=metrics.average_accuracy(acc),
                            bwt=metrics.bwt_after(rows, task), val_acc=val_acc,
                            val_avg_acc=metrics.average_accuracy(val_acc) if val_acc else None, train_seconds=seconds,
                            images_per_second=cfg.epochs * len(train) / seconds, best_epoch=best_epoch, **stats,
                            **{name: cfg.task_value(name, task) for name in PER_TASK_FIELDS})
        results.append(result)
        if hooks.on_task_end is not None:
            hooks.on_task_end(result, ckpt.make_state(cfg.to_dict(), task + 1, model, masking.task_masks,
                                                      [asdict(r) for r in results]))
    return results


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def learn_task(cfg: RunConfig, model: nn.Module, masking: Masking, train: TaskData, task: int, hooks: Hooks,
               device: torch.device) -> tuple[float, int]:
    """Train one task's subnetwork; returns (train seconds, the epoch kept)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(task_seed(cfg.seed, task))
    optimizer = make_optimizer(cfg, model)  # a fresh optimizer per task, as the reference
    # x0.1 at 50% and 75% of the epochs; a milestone at epoch 0 would start the task at lr/100
    milestones = [m for m in (int(cfg.epochs * 0.5), int(cfg.epochs * 0.75)) if m > 0]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    update_frequency, death_rate = cfg.task_value("update_frequency", task), cfg.task_value("death_rate", task)
    masking.start_task(task, generator, *(cfg.task_value(name, task) for name in ("density", "prune", "growth")))
    total_steps = len(batch_bounds(len(train), cfg.batch_size)) * cfg.epochs
    head = slice(task * cfg.classes_per_task, (task + 1) * cfg.classes_per_task)
    autocast = device.type == "cuda" and cfg.precision == "bf16"
    all_classes = cfg.protocol == "paper"  # the reference's best epoch: argmax over all classes vs the label
    best_acc, best_epoch, best = -1.0, -1, None
    step = 0
    model.train()
    _sync(device)
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for x, y in train.train_batches(cfg.batch_size, generator):
            target = y - head.start
            loss, logits = train_step(model, optimizer, masking, x, target, head, autocast)  # logits: (B, classes)
            step += 1
            if hooks.on_step is not None:
                hooks.on_step(task, step, loss, optimizer, masking)
            if step % update_frequency == 0:
                rate, changes = death_rate_at(step, total_steps, death_rate), None if hooks.on_update is None else {}
                masking.update(rate, optimizer, generator, changes)
                if hooks.on_update is not None:
                    hooks.on_update(task, step, rate, optimizer, masking, changes)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum() if all_classes else (logits[:, head].argmax(1) == target).sum()
        scheduler.step()
        mean_loss = loss_sum.item() / len(train)  # one host sync per epoch
        train_acc = 100.0 * correct.item() / len(train)
        if not math.isfinite(mean_loss):
            raise TrainingError(f"loss became {mean_loss} in task {task}, epoch {epoch}")
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(task, epoch, mean_loss, train_acc)
        if train_acc > best_acc or not cfg.keep_best_epoch:
            best_acc, best_epoch = train_acc, epoch
            # A snapshot is needed only if a later epoch might do worse.
            best = masking.snapshot() if cfg.keep_best_epoch and epoch < cfg.epochs - 1 else None
    if best is not None:
        masking.restore(best)  # the reference keeps the epoch with the best training accuracy
    _sync(device)
    return time.perf_counter() - started, best_epoch


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, masking: Masking | None, x: torch.Tensor,
               target: torch.Tensor, head: slice, autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on the task's head slice with isolation (`masking=None`: plain dense
    training, the same step without the engine). Returns (loss, logits over all classes); no host sync."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)  # (B, num_classes)
    loss = F.cross_entropy(logits[:, head].float(), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if masking is not None:
        masking.after_backward()
    optimizer.step()
    if masking is not None:
        masking.after_step(optimizer)
    return loss, logits


@torch.no_grad()
def evaluate_all(cfg: RunConfig, model: nn.Module, masking: Masking, sets: list[TaskData], task: int,
                 device: torch.device, forward: bool) -> tuple[list[float], list[float]]:
    """Accuracy of each task j <= `task` with its own mask and head, and (`forward`) of this task's
    subnetwork on each later task (the reference's forward transfer)."""
    model.eval()  # no dropout in these nets and BatchNorm uses batch statistics in both modes, but say it
    merged = {name: p.detach().clone() for name, p in masking.params.items()}
    acc = []
    for j in range(task + 1):
        masking.use_task(j, merged)
        acc.append(accuracy(cfg, model, sets[j], head_task=j, data_task=j, device=device))
    fwt_acc = []
    if forward:
        masking.use_task(task, merged)
        fwt_acc = [accuracy(cfg, model, sets[j], head_task=task, data_task=j, device=device)
                   for j in range(task + 1, cfg.num_tasks)]
    for name, p in masking.params.items():
        p.copy_(merged[name])
    return acc, fwt_acc


def accuracy(cfg: RunConfig, model: nn.Module, data: TaskData, head_task: int, data_task: int,
             device: torch.device) -> float:
    """Accuracy (%) on `data_task`'s held-out set with its labels mapped onto `head_task`'s classes.

    eval_head "task": argmax over head_task's logits (task-incremental protocol);
    "all": argmax over all classes, as the reference evaluates. The paper protocol also crops and
    flips the images, with a generator seeded per data task so every evaluation sees the same crops.
    """
    cpt = cfg.classes_per_task
    autocast = device.type == "cuda" and cfg.precision == "bf16"
    generator = None
    if cfg.protocol == "paper":
        generator = torch.Generator(device=device)
        generator.manual_seed(eval_seed(cfg.seed, data_task))
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in data.eval_batches(cfg.eval_batch_size, generator):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)  # (B, num_classes)
        if cfg.eval_head == "task":
            pred, target = logits[:, head_task * cpt:(head_task + 1) * cpt].argmax(1), y - data_task * cpt
        else:
            pred, target = logits.argmax(1), y - (data_task - head_task) * cpt
        correct += (pred == target).sum()
    return 100.0 * correct.item() / max(len(data), 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
