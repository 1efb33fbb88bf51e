"""Measurement 5: time per task and per run as the split goes 5 -> 10 -> 20 tasks (the same images per
run-epoch for every split, as CIFAR-100), and the engine's per-task bookkeeping against the task index.

Runs are `continual.run` with an on_task_end hook (so the checkpoint state is built, as a Tune trial
does). Bookkeeping is timed apart, on the same net: start_task + end_task, the checkpoint state
(`checkpoint.make_state`) and switching to every task's subnetwork (`use_task`, as evaluate_all does).

    python -m benchmarks.scaling [--quick] [--device auto|cpu|cuda] [--no-append]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks import common
from benchmarks.common import Record
from cldst import checkpoint
from cldst.config import RunConfig
from cldst.continual import Hooks, TaskResult, run
from cldst.data import Benchmark


def time_run(cfg: RunConfig, bench: Benchmark, device: torch.device) -> Record:
    ends: list[float] = []
    hooks = Hooks(on_task_end=lambda result, state: ends.append(time.perf_counter()))
    started = time.perf_counter()
    results: list[TaskResult] = run(cfg, bench, hooks)
    walls = [b - a for a, b in zip([started] + ends[:-1], ends, strict=True)]
    train = [r.train_seconds for r in results]
    # start/end task, the task's data, evaluate_all, the checkpoint state
    other = [w - t for w, t in zip(walls, train, strict=True)]
    t = cfg.num_tasks
    return {"net": cfg.net, "tasks": t, "train images per task": len(bench.train_y) // t,
            "train s per task": sum(train) / t, "eval + bookkeeping s per task": sum(other) / t,
            "first task other s": other[0], "last task other s": other[-1], "run s": sum(walls),
            "run train s": sum(train), "run eval + bookkeeping s": sum(other)}


def time_bookkeeping(net: str, num_tasks: int, device: torch.device, bench: Benchmark) -> Record:
    trainer = common.make_trainer(net, 64, device, bench, density=0.2, task=0, num_tasks=num_tasks)
    masking, config = trainer.masking, trainer.cfg.to_dict()
    task_ms, state_ms = [], []
    for task in range(num_tasks):
        common.sync(device)
        started = time.perf_counter()
        trainer.start_task(task)
        masking.end_task()
        common.sync(device)
        done = time.perf_counter()
        checkpoint.make_state(config, task + 1, trainer.model, masking.task_masks, [])
        common.sync(device)
        task_ms.append(1e3 * (done - started))
        state_ms.append(1e3 * (time.perf_counter() - done))
    merged = {name: p.detach().clone() for name, p in masking.params.items()}
    switch = common.time_synced(device, lambda: [masking.use_task(j, merged) for j in range(num_tasks)], 3)
    return {"net": net, "tasks": num_tasks, "start+end task ms, first": task_ms[0],
            "start+end task ms, last": task_ms[-1], "start+end task ms, run": sum(task_ms),
            "checkpoint state ms, first": state_ms[0], "checkpoint state ms, last": state_ms[-1],
            "checkpoint state ms, run": sum(state_ms), "use_task x T ms (one evaluate_all)": 1e3 * switch}


def main(argv: list[str] | None = None) -> dict[str, list[Record]]:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--net", default="resnet18")
    p.add_argument("--tasks", nargs="+", type=int, default=[5, 10, 20])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--rounds", type=int, default=None, help="runs per split, the fastest kept (default 2)")
    p.add_argument("--update-frequency", type=int, default=None, help="default 10 on CPU, 100 on CUDA")
    p.add_argument("--train-per-class", type=int, default=None, help="CIFAR-100 has 500 (the CUDA default)")
    p.add_argument("--test-per-class", type=int, default=None, help="CIFAR-100 has 100 (the CUDA default)")
    args: argparse.Namespace = p.parse_args(argv)
    device = common.pick_device(args.device)
    args.train_per_class = args.train_per_class or common.by_mode(args, device, 8, 32, 500)
    args.test_per_class = args.test_per_class or common.by_mode(args, device, 2, 10, 100)
    args.update_frequency = args.update_frequency or common.by_mode(args, device, 10, 10, 100)
    args.rounds = args.rounds or common.by_mode(args, device, 1, 2, 2)
    bench = common.synthetic_cifar100(args.train_per_class, args.test_per_class)
    configs = {t: RunConfig(benchmark="cifar100", net=args.net, num_tasks=t, epochs=args.epochs,
                            batch_size=args.batch, update_frequency=args.update_frequency,
                            device=device.type).resolve() for t in args.tasks}
    time_run(configs[args.tasks[0]], common.synthetic_cifar100(2, 1), device)  # warm-up: first calls, allocator
    runs: dict[int, Record] = {}
    books: dict[int, Record] = {}
    for _ in range(args.rounds):  # other work on the machine only ever adds time: keep each split's fastest
        for t, cfg in configs.items():
            found = time_run(cfg, bench, device)
            runs[t] = min(runs.get(t, found), found, key=lambda r: r["run s"])
            found = time_bookkeeping(args.net, t, device, bench)
            books[t] = min(books.get(t, found), found, key=lambda r: r["start+end task ms, run"])
    runs, books = list(runs.values()), list(books.values())
    for r in runs:
        r["run s / first split's"] = r["run s"] / runs[0]["run s"]
    notes = [f"runs: continual.run after one untimed warm-up run, the fastest of {args.rounds} per split; "
             f"{args.net}, batch {args.batch}, {args.epochs} epoch(s) per task, density 0.2, update every "
             f"{args.update_frequency} steps, synthetic CIFAR-100-shaped data with "
             f"{args.train_per_class} train / {args.test_per_class} test images per class (CIFAR-100: 500 / 100)",
             "per task, 'other' = wall time between task ends minus train_seconds: start_task, moving the task's "
             "data, end_task, evaluate_all (T test sets every task) and the checkpoint state",
             "bookkeeping: the engine alone through T tasks (no training); the checkpoint state copies every "
             "stored mask to the host each task, so it grows with the task index"]
    common.report("benchmarks.scaling", argv, args, device, "5. Scaling with the number of tasks",
                  [common.table(runs), common.table(books)], notes)
    return {"runs": runs, "bookkeeping": books}


if __name__ == "__main__":
    main()
