"""What every benchmark shares: the command line, the device, synthetic CIFAR-shaped data, the
training-step driver (dense = the same step without the engine), timing, tables and RESULTS.md.

Only torch, numpy and cldst's torch-only modules are imported, so `python -m benchmarks.<name>`
runs on a GPU machine that has neither Ray nor pyarrow.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cldst.batches import TaskData, batch_bounds
from cldst.config import RunConfig
from cldst.continual import make_optimizer, select_device, task_seed, train_step
from cldst.data import Benchmark, task_indices
from cldst.masking import Masking, death_rate_at
from cldst.models import build_model

RESULTS = Path(__file__).with_name("RESULTS.md")
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
GROWTHS = ("random", "unfired", "momentum", "gradient")
Batch = tuple[Tensor, Tensor]


# ---------------------------------------------------------------- command line and device

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny step counts: finishes in about a minute on a CPU")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-append", action="store_true", help="print only; do not append to benchmarks/RESULTS.md")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: by mode and device)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: by mode and device)")
    return p


def by_mode(args: argparse.Namespace, device: torch.device, quick: object, cpu: object, cuda: object) -> object:
    """The default of a size knob: --quick, else the full size for this device kind."""
    return quick if args.quick else cuda if device.type == "cuda" else cpu


def pick_device(name: str) -> torch.device:
    return select_device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> str:
    cores = os.cpu_count() or 1
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    host = f"{cpu}, {cores} CPU cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), {host}"
    gpu = "no GPU" if not torch.cuda.is_available() else "GPU present but not used"
    return f"CPU only ({gpu}): {host}"


# ---------------------------------------------------------------- data

def synthetic_cifar100(train_per_class: int, test_per_class: int, seed: int = 0) -> Benchmark:
    """Random uint8 images of CIFAR-100's shape (32x32x3, 100 classes), CIFAR-100's augmentation."""
    rng = np.random.default_rng(seed)

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(100, dtype=np.int64), per_class)
        return rng.integers(0, 256, size=(len(y), 32, 32, 3), dtype=np.uint8), y

    (train_x, train_y), (test_x, test_y) = split(train_per_class), split(test_per_class)
    return Benchmark("synthetic-cifar100", train_x, train_y, test_x, test_y, 100, CIFAR100_MEAN, CIFAR100_STD,
                     crop_padding=4, flip=True)


def task_data(bench: Benchmark, task: int, classes_per_task: int, device: torch.device, train: bool = True) -> TaskData:
    x, y = (bench.train_x, bench.train_y) if train else (bench.test_x, bench.test_y)
    idx = task_indices(y, task, classes_per_task)
    return TaskData(x[idx], y[idx], device, bench.mean, bench.std, bench.crop_padding, bench.flip,
                    channels_last=device.type == "cuda")


def device_batches(data: TaskData, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """The loop's input path: device-resident epochs of batched crop/flip/normalise, forever."""
    while True:
        yield from data.train_batches(batch_size, generator)


# ---------------------------------------------------------------- the training-step driver

@dataclass
class Trainer:
    """One network training one task with cldst's step (`continual.train_step`); masking=None is
    plain dense training of the same net on the same batches."""

    cfg: RunConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    masking: Masking | None
    data: TaskData
    batches: Iterator[Batch]
    generator: torch.Generator
    head: slice
    autocast: bool
    steps: int = 0
    images: int = 0

    @property
    def total_steps(self) -> int:
        return len(batch_bounds(len(self.data), self.cfg.batch_size)) * self.cfg.epochs

    def step(self) -> None:
        x, y = next(self.batches)
        train_step(self.model, self.optimizer, self.masking, x, y - self.head.start, self.head, self.autocast)
        self.steps += 1
        self.images += y.shape[0]

    @property
    def death_rate(self) -> float:
        """The loop's death rate at this step (at the first update, if none has come yet)."""
        return death_rate_at(max(self.steps, self.cfg.update_frequency), self.total_steps, self.cfg.death_rate)

    def start_task(self, task: int) -> None:
        """The engine's start of task `task` with the run's density and criteria, as `learn_task` calls it."""
        assert self.masking is not None, "a dense trainer has no masks"
        self.masking.start_task(task, self.generator, self.cfg.density, self.cfg.prune, self.cfg.growth)

    def update(self) -> None:
        """One prune-and-regrow, as the loop does every update_frequency steps."""
        assert self.masking is not None, "a dense trainer has no masks to update"
        self.masking.update(self.death_rate, self.optimizer, self.generator)

    def run_steps(self, n: int) -> None:
        """n steps on learn_task's schedule: prune-and-regrow every update_frequency steps."""
        for _ in range(n):
            self.step()
            if self.masking is not None and self.steps % self.cfg.update_frequency == 0:
                self.update()


def make_trainer(net: str, batch_size: int, device: torch.device, bench: Benchmark, density: float | None = None,
                 growth: str = "random", prune: str = "magnitude", update_frequency: int = 100, task: int = 1,
                 num_tasks: int = 10, batches: Iterator[Batch] | None = None, seed: int = 0) -> Trainer:
    """A trainer on task `task`; with DST, tasks 0..task-1 have been through start_task/end_task first, so
    for task > 0 they own weights and isolation is live. density=None: dense. `batches` replaces the
    device-resident input path. `seed`: the run's seed (initial weights, masks, batches)."""
    cfg = RunConfig(benchmark="cifar100", net=net, num_tasks=num_tasks, density=density or 0.2, growth=growth,
                    prune=prune, update_frequency=update_frequency, batch_size=batch_size,
                    device=device.type, seed=seed).resolve()
    torch.manual_seed(cfg.seed)
    model = build_model(net, bench.channels, bench.image_size, cfg.num_classes).to(device)
    if device.type == "cuda":  # as continual.run
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    generator = torch.Generator(device=device)
    generator.manual_seed(task_seed(cfg.seed, task))
    masking = None if density is None else Masking(model, cfg.sparse_init, cfg.isolate, cfg.classes_per_task)
    data = task_data(bench, task, cfg.classes_per_task, device)
    batches = batches if batches is not None else device_batches(data, batch_size, generator)
    head = slice(task * cfg.classes_per_task, (task + 1) * cfg.classes_per_task)
    autocast = device.type == "cuda" and cfg.precision == "bf16"
    model.train()
    trainer = Trainer(cfg, model, make_optimizer(cfg, model), masking, data, batches, generator, head, autocast)
    if masking is not None:
        for earlier in range(task):
            trainer.start_task(earlier)
            masking.end_task()
        trainer.start_task(task)
    return trainer


# ---------------------------------------------------------------- timing

def time_calls(device: torch.device, fn: Callable[[], None], n: int) -> float:
    """Seconds for n calls of fn: CUDA events on a GPU, the wall clock on a CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - started


def interleaved(device: torch.device, fns: dict[str, Callable[[], None]], warmup: int, steps: int,
                chunk: int) -> dict[str, float]:
    """Seconds per call of each fn: the fastest of its chunks of `chunk` calls, the chunks taken in turn
    (A B C A B C ...). Other load on the machine only ever adds time, so the fastest chunk is the best
    estimate of a variant's own cost, and taking turns exposes every variant to the machine alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    chunk = max(1, min(chunk, steps))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, steps // chunk)):
        for name, fn in fns.items():
            times[name].append(time_calls(device, fn, chunk) / chunk)
    return {name: min(t) for name, t in times.items()}


def time_synced(device: torch.device, fn: Callable[[], None], repeats: int) -> float:
    """Seconds of a call that ends in a host sync (or is charged as if it did): the fastest of `repeats`."""
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - started)
    return min(times)


def peak_memory_bytes(device: torch.device) -> int:
    """Peak device memory allocated (CUDA), or this process's peak resident set size (CPU): VmHWM where
    /proc has it (ru_maxrss would also count the forked parent's pages from before a spawn's exec)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        import resource  # POSIX; ru_maxrss is KiB on Linux, bytes on macOS

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == "darwin" else rss * 1024


def tensor_bytes(tensors: object) -> int:
    """Bytes held by the distinct storages of the tensors in a (nested) list/dict/tuple."""
    seen: dict[int, int] = {}

    def visit(obj: object) -> None:
        if isinstance(obj, Tensor):
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value)

    visit(tensors)
    return sum(seen.values())


def collect(queue: Any, procs: list[Any], count: int) -> list[Any]:
    """`count` results that spawned processes put on `queue`, then join them; if one of them fails first,
    end the others (they may be waiting at a barrier) and raise."""
    results: list[Any] = []
    while len(results) < count:
        try:
            results.append(queue.get(timeout=1.0))
        except Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                for p in procs:
                    if p.is_alive():
                        p.terminate()
                raise RuntimeError(f"a benchmark process failed with exit code {failed[0]}") from None
    for p in procs:
        p.join()
    return results


# ---------------------------------------------------------------- tables and RESULTS.md

Record = dict[str, object]


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def table(records: list[Record]) -> str:
    """A markdown table; the columns are the first record's keys."""
    headers = list(records[0]) if records else []
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(fmt(r[h]) for h in headers) + " |" for r in records])


def report(module: str, argv: list[str], args: argparse.Namespace, device: torch.device, title: str,
           tables: list[str], notes: list[str]) -> str:
    """Print the section and, unless --no-append, append it to RESULTS.md with date, machine,
    torch version and the exact command."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = shlex.join(["python", "-m", module, *argv])
    head = [f"### {title} ({now})", "", f"- command: `{command}`", f"- machine: {machine(device)}",
            f"- torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}",
            "- load average at the end (1, 5, 15 min; other users' work on the machine skews CPU timings): "
            + ", ".join(f"{x:.1f}" for x in os.getloadavg())]
    text = "\n".join(head + [f"- {note}" for note in notes] + [""] + [t + "\n" for t in tables])
    print(text)
    if not args.no_append:
        with RESULTS.open("a") as f:
            f.write("\n" + text)
    return text
