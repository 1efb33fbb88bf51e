"""Measurement 2: the cost of one prune-and-regrow update per growth criterion (ms, and in training
steps' worth), and the cost of evaluating all tasks after task t (`continual.evaluate_all`).

    python -m benchmarks.update_cost [--quick] [--device auto|cpu|cuda] [--no-append]
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks import common
from benchmarks.common import GROWTHS, Record
from cldst.continual import evaluate_all
from cldst.data import Benchmark

CIFAR100_TEST_IMAGES = 10_000
# (prune, growth): every growth criterion with the default prune, then the other prune criteria
CRITERIA = [("magnitude", g) for g in GROWTHS] + [("SET", "random"), ("Taylor_FO", "random")]


def update_rows(net: str, batch: int, density: float, device: torch.device, bench: Benchmark,
                args: argparse.Namespace) -> tuple[list[Record], common.Trainer, float]:
    trainer = common.make_trainer(net, batch, device, bench, density=density)
    step = common.interleaved(device, {"step": trainer.step}, args.warmup, args.steps, args.chunk)["step"]
    rows = []
    for prune, growth in CRITERIA:
        # both are read only by update(): the same as a task started with them
        trainer.masking.prune, trainer.masking.growth = prune, growth
        trainer.step()  # fresh gradients and optimizer state, as the loop has when it updates
        trainer.update()  # warm-up
        seconds = common.time_synced(device, trainer.update, args.repeats)
        rows.append({"net": net, "batch": batch, "density": density, "prune": prune, "growth": growth,
                     "death rate": trainer.death_rate, "update ms": 1e3 * seconds, "step ms": 1e3 * step,
                     "steps' worth": seconds / step})
    return rows, trainer, step


def eval_rows(trainer: common.Trainer, step: float, device: torch.device, bench: Benchmark,
              args: argparse.Namespace) -> list[Record]:
    """evaluate_all after tasks t of the run's split: each task j <= t with its mask and head, and task t's
    subnetwork on every later task (forward transfer), so all T test sets every time."""
    cfg, masking = trainer.cfg, trainer.masking
    tests = [common.task_data(bench, t, cfg.classes_per_task, device, train=False) for t in range(cfg.num_tasks)]
    images = sum(len(t) for t in tests)
    masking.end_task()  # task 1 ends; tasks 0 and 1 own weights
    rows = []
    for task in sorted({1, cfg.num_tasks // 2, cfg.num_tasks - 1}):
        while len(masking.task_masks) <= task:
            trainer.start_task(len(masking.task_masks))
            masking.end_task()
        evaluate_all(cfg, trainer.model, masking, tests, task, device, forward=True)  # warm-up
        seconds = common.time_synced(device, lambda t=task: evaluate_all(cfg, trainer.model, masking, tests, t,
                                                                          device, forward=True), args.repeats)
        rows.append({"net": cfg.net, "tasks": cfg.num_tasks, "after task": task,
                     "masks stored": len(masking.task_masks),
                     "test images": images, "eval ms": 1e3 * seconds, "training steps' worth": seconds / step,
                     "ms per 1k images": 1e6 * seconds / images,
                     "projected s for 10k test images": seconds * CIFAR100_TEST_IMAGES / images})
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[Record]]:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["resnet18", "mobilenetv2"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--density", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=None, help="timed updates / evaluations per row")
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--test-per-class", type=int, default=None, help="CIFAR-100 has 100 (the CUDA default)")
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    args.warmup = args.warmup if args.warmup is not None else common.by_mode(args, device, 1, 2, 20)
    args.steps = args.steps or common.by_mode(args, device, 2, 5, 100)
    args.chunk = args.chunk or common.by_mode(args, device, 1, 1, 20)
    args.repeats = args.repeats or common.by_mode(args, device, 1, 3, 10)
    args.test_per_class = args.test_per_class or common.by_mode(args, device, 2, 10, 100)
    # 500 train images per class, as CIFAR-100: a task of 5,000 images, 20 epochs (the death-rate schedule)
    bench = common.synthetic_cifar100(train_per_class=500, test_per_class=args.test_per_class)
    updates, evals = [], []
    for net in args.nets:
        rows, trainer, step = update_rows(net, args.batch, args.density, device, bench, args)
        updates += rows
        evals += eval_rows(trainer, step, device, bench, args)
        del trainer
    notes = [f"update: fastest of {args.repeats} timed prune-and-regrow after 1 warm-up, task 1 of 10, Adam state "
             f"live, at the loop's death rate for that step; step: {args.warmup} warm-up + fastest of "
             f"{args.steps} steps of the same trainer; steps' worth = update / step (amortised over update "
             "frequency N: steps' worth / N of a step)",
             f"eval: fastest of {args.repeats} calls of continual.evaluate_all on a 10-task split with "
             f"{args.test_per_class} synthetic test images per class (CIFAR-100 has 100), eval batch 128"]
    common.report("benchmarks.update_cost", argv, args, device, "2. Update and evaluation cost",
                  [common.table(updates), common.table(evals)], notes)
    return {"updates": updates, "evals": evals}


if __name__ == "__main__":
    main()
