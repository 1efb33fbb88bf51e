"""Measurement 3: the memory of a full 5-, 10- and 20-task run's state (weights, all task masks, the
engine's working set, optimizer) against the dense model alone: exact bytes (summed tensor storages)
and the measured peak (CUDA max_memory_allocated, or peak RSS on a CPU) of a fresh process per row.

    python -m benchmarks.memory [--quick] [--device auto|cpu|cuda] [--no-append]
"""

from __future__ import annotations

import argparse
import io
import math
import multiprocessing as mp
import sys

import torch

from benchmarks import common
from benchmarks.common import Record
from cldst import checkpoint
from cldst.config import RunConfig
from cldst.continual import run
from cldst.models import build_model

MB = 2**20


def state_bytes(net: str, num_tasks: int, batch: int, device: torch.device) -> Record:
    """Exact bytes of a run's state once its last task has been learned, by the engine's own calls."""
    bench = common.synthetic_cifar100(train_per_class=math.ceil(batch * num_tasks / 100), test_per_class=1)
    trainer = common.make_trainer(net, batch, device, bench, density=0.2, task=num_tasks - 1, num_tasks=num_tasks)
    trainer.run_steps(2)
    engine = trainer.masking
    params = list(trainer.model.parameters())
    weights = common.tensor_bytes(params)
    working = common.tensor_bytes([params] + [v for k, v in vars(engine).items() if k != "task_masks"]) - weights
    snapshot = common.tensor_bytes(engine.snapshot())
    engine.end_task()
    state = checkpoint.make_state(trainer.cfg.to_dict(), num_tasks, trainer.model, engine.task_masks, [])
    saved = io.BytesIO()
    torch.save(state, saved)  # the task checkpoint a trial reports after its last task, as written to disk
    return {"weights": weights, "task masks": common.tensor_bytes(engine.task_masks), "engine": working,
            "snapshot": snapshot, "optimizer": common.tensor_bytes(list(trainer.optimizer.state.values())),
            "maskable": engine.total, "owned": common.tensor_bytes(engine.owned), "checkpoint": saved.tell()}


def peak_bytes(kind: str, net: str, num_tasks: int, batch: int, device_name: str) -> int:
    """Peak memory of this process after: idle (torch imported), model (the dense model built),
    dense (3 dense training steps with Adam), run (continual.run of num_tasks tasks)."""
    device = common.pick_device(device_name)
    # every task holds about one batch, so the peaks compare at one batch size
    bench = common.synthetic_cifar100(train_per_class=math.ceil(batch * num_tasks / 100), test_per_class=2)
    if kind == "model":
        build_model(net, bench.channels, bench.image_size, 100).to(device)
    elif kind == "dense":
        common.make_trainer(net, batch, device, bench, num_tasks=num_tasks).run_steps(3)
    elif kind == "run":
        run(RunConfig(benchmark="cifar100", net=net, num_tasks=num_tasks, epochs=2, batch_size=batch,
                      update_frequency=2, device=device_name).resolve(), bench)
    common.sync(device)
    return common.peak_memory_bytes(device)


def _child(queue: mp.Queue, *args: object) -> None:
    queue.put(peak_bytes(*args))


def in_fresh_process(*args: object) -> int:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue, *args))
    process.start()
    return common.collect(queue, [process], 1)[0]


def row(net: str, state: str, parts: dict[str, int], tasks: int, maskable: int, peak: int, idle: int,
        dense_model: int, owned: int = 0, saved: int | None = None) -> Record:
    total = sum(parts.values())
    between = parts["weights"] + parts["task masks"] + owned  # what a trial holds between tasks
    return {"net": net, "state": state, **{f"{k} MB": v / MB for k, v in parts.items()},
            "mask bytes/weight/task": parts["task masks"] / (maskable * tasks) if tasks else 0.0,
            "state MB": total / MB, "state / dense model": total / dense_model,
            "between tasks / dense model": between / dense_model,
            "checkpoint MB": "-" if saved is None else saved / MB,  # a dense row has no task checkpoint
            "measured peak MB": peak / MB, "peak above idle MB": (peak - idle) / MB}


def measure(net: str, args: argparse.Namespace, device: torch.device) -> list[Record]:
    idle = in_fresh_process("idle", net, 10, args.batch, device.type)
    runs = {t: state_bytes(net, t, args.batch, device) for t in args.tasks}
    first = runs[args.tasks[0]]
    keys = ("weights", "task masks", "engine", "snapshot", "optimizer")
    zero = dict.fromkeys(keys, 0)
    model, optimizer = first["weights"], first["optimizer"]
    rows = [row(net, "dense model alone", zero | {"weights": model}, 0, 1,
                in_fresh_process("model", net, 10, args.batch, device.type), idle, model),
            row(net, "dense training (Adam)", zero | {"weights": model, "optimizer": optimizer}, 0, 1,
                in_fresh_process("dense", net, 10, args.batch, device.type), idle, model)]
    for t, found in runs.items():
        peak = in_fresh_process("run", net, t, args.batch, device.type)
        rows.append(row(net, f"{t}-task run", {k: found[k] for k in keys}, t, found["maskable"], peak, idle, model,
                        found["owned"], found["checkpoint"]))
    return rows


def main(argv: list[str] | None = None) -> dict[str, list[Record]]:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=["resnet18", "mobilenetv2"])
    p.add_argument("--tasks", nargs="+", type=int, default=None, help="default 5 10 20 (--quick: 2 5)")
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    nets = args.nets[:1] if args.quick else args.nets
    args.tasks = args.tasks or ([2, 5] if args.quick else [5, 10, 20])
    rows = [r for net in nets for r in measure(net, args, device)]
    peak = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM) of the process"
    notes = [f"exact bytes: distinct tensor storages; measured: {peak}, one fresh (spawned) process per row; "
             "'peak above idle' subtracts a process that only imported torch",
             "exact: the engine taken through tasks 0..T-1 (start_task, 2 steps, end_task), density 0.2, Adam",
             f"measured runs: continual.run on synthetic CIFAR-shaped data, density 0.2, Adam, 2 epochs per task "
             f"(so a best-epoch snapshot is held), about one batch of {args.batch} per task, update every 2 steps",
             "engine = the Masking working set of the current task (bools: owned, mask, fired, trainable, gradient "
             "keep; one float copy: the owned values); snapshot = the best epoch's subnetwork (values inside the "
             "mask, mask and fired mask as bits), held during a task; optimizer = Adam state (2 x weights), "
             "rebuilt per task",
             "finished task masks are packed bits: 1/8 byte per maskable weight per task; 'between tasks' = "
             "weights + task masks + the owned mask (what a trial holds and resumes from); 'checkpoint' = "
             "torch.save of the real task checkpoint after the last task"]
    common.report("benchmarks.memory", argv, args, device, "3. Memory", [common.table(rows)], notes)
    return {"memory": rows}


if __name__ == "__main__":
    main()
