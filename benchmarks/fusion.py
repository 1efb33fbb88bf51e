"""Measurement 8: how many small trials one device carries, fused or packed: aggregate images/s and peak
memory of one trial alone, of K trials fused into one model, of the same K trials as packed processes
(`benchmarks.packing`), and optionally of one `torch.compile`d trial (`--compile-mode reduce-overhead`: with
CUDA graphs); then the projected device-hours of the paper grid at the best option.

Fused (HFTA, Wang et al., MLSys 2021): the K members' parameters are stacked on a leading member dimension
(`torch.func.stack_module_state`) and the forward and backward are `vmap`ped over members, so every
convolution of K members runs as one grouped convolution. Each member is one trial as the engine runs it
(task 1 of 10, so task 0's weights are owned and frozen; density 0.2): its own weights, masks, Adam moments
and batch. The engine's per-step masking (`Masking.after_backward`, `Masking.after_step`) runs unchanged on
the stacked tensors: it is fused elementwise `_foreach` ops, which a leading member dimension leaves
correct. No row times the prune-and-regrow of every update_frequency steps (`benchmarks.throughput`: under
2% of a step at update frequency 100).

Correctness, first and on the same device: K members with different seeds (so different weights and masks)
take one fused step, and each member's loss, gradients and weights after the step must equal those of the
same member taking the engine's `train_step` alone. The check runs in float64: in fp32, mobilenetv2's
batch-statistics BatchNorm over the 1x1 maps of a small batch amplifies rounding, so fused and alone (the
same sums, associated differently) differed by up to 30% relative in some layers' gradients, while resnet18
agreed to 1e-5. In float64 the gradients agree to ~1e-15 and the loss (which `train_step` takes in fp32)
to ~1e-7, whereas a swapped member or a skipped gradient freeze is off by O(1).

Prints each row as it is measured, then the tables (appended to benchmarks/RESULTS.md unless --no-append); no
cell starts after --budget-s, a cell that runs out of memory or fails is a row saying so; exits 1 if the check fails.

    python -m benchmarks.fusion [--quick] [--device auto|cpu|cuda] [--no-append] [--budget-s S] [--compile]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from benchmarks import common, packing
from benchmarks.common import Record, Trainer
from cldst.batches import TaskData
from cldst.continual import make_optimizer, train_step
from cldst.data import Benchmark
from cldst.masking import Masking
from cldst.models import NETS

DENSITY = 0.2
TOLERANCE = 1e-6  # largest relative error (per tensor, max |a - b| / max |b|) the check accepts: see above
ERRORS = ("loss", "gradients", "weights after the step")  # what the check compares
# Budget a cell needs left to start, beyond 0 s: K processes each start torch and CUDA and tune cuDNN before they
# time anything; compiling a step takes about a minute.
RESERVE_S = {"packed": 30.0, "compiled": 120.0}


@dataclass
class StackedMasking:
    """The fields `Masking.after_backward` and `Masking.after_step` read, each tensor (K, ...): the engine's
    own methods then freeze, mask and isolate all members at once."""

    isolated_params: list[Tensor]
    grad_keep: list[Tensor]
    tensors: list[Tensor]
    trainable: list[Tensor]
    frozen_values: list[Tensor]
    in_mask: list[Tensor]
    isolate: bool


class Fused:
    """K trials of one net as one model: stacked parameters, a vmapped forward and backward, and the engine's
    optimizer and masking on the stacks."""

    def __init__(self, members: list[Trainer]):
        first = members[0]
        self.head, self.autocast = first.head, first.autocast
        self.base = copy.deepcopy(first.model).to("meta")  # the architecture; the weights are self.params
        params, buffers = stack_module_state([m.model for m in members])  # name -> (K, ...)
        assert not buffers, "cldst's BatchNorm keeps no running statistics, so vmap has no buffer to update"
        self.stacked = nn.ParameterList(params.values())
        self.params = dict(zip(params, self.stacked, strict=True))
        # Adam (and weight decay) is elementwise, so one optimizer over the stacks is K members' optimizers.
        self.optimizer = make_optimizer(first.cfg, self.stacked)
        name_of = {id(p): name for name, p in first.model.named_parameters()}
        isolated = [self.params[name_of[id(p)]] for p in first.masking.isolated_params]

        def stack(field: str) -> list[Tensor]:
            return [torch.stack(ts) for ts in zip(*(getattr(m.masking, field) for m in members), strict=True)]

        self.masking = StackedMasking(isolated, stack("grad_keep"), [p.detach() for p in isolated],
                                      stack("trainable"), stack("frozen_values"), stack("in_mask"),
                                      first.masking.isolate)

    def member_loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        """One member's loss as `train_step` takes it: x (B, C, H, W), y (B,) relative to the head."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = functional_call(self.base, params, (x,))  # (B, num_classes)
        return F.cross_entropy(logits[:, self.head].float(), y)

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """Every member's training step on its own batch, x (K, B, C, H, W), y (K, B); the (K,) losses."""
        losses = vmap(self.member_loss)(self.params, x, y)  # (K,)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # members share nothing: member i's gradient is that of its own loss
        Masking.after_backward(self.masking)  # type: ignore[arg-type]  # the engine's code on (K, ...) stacks
        self.optimizer.step()
        Masking.after_step(self.masking)  # type: ignore[arg-type]
        return losses.detach()


def draw(data: TaskData, k: int, batch: int, head: slice, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """K members' batches in one gather, crop, flip and normalise: (K, B, C, H, W) images and (K, B) targets
    relative to the head. Drawn with replacement, so any K x B fits the task's images."""
    idx = torch.randint(len(data), (k * batch,), device=data.x.device, generator=generator)
    x = data.normalise(data.augment(data.x[idx], generator))  # (K * B, C, H, W)
    return x.view(k, batch, *x.shape[1:]), (data.y[idx] - head.start).view(k, batch)


# ---------------------------------------------------------------- correctness

@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def relative(a: Tensor, b: Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(torch.finfo(b.dtype).tiny))


def check_members(net: str, k: int, batch: int, device: torch.device, bench: Benchmark) -> list[Trainer]:
    """K float64 trials on task 1 that differ in seed, so in weights, masks and owned weights; fp32 loss as
    the engine, no bf16 autocast (it would round the two sides differently)."""
    with default_dtype(torch.float64):
        members = [common.make_trainer(net, batch, device, bench, density=DENSITY, seed=i) for i in range(k)]
    for m in members:
        m.autocast = False
    return members


def member_errors(fused: Fused, losses: Tensor, members: list[Trainer], x: Tensor, y: Tensor) -> dict[str, float]:
    """Largest relative error over members of the fused step's loss, gradients and stepped weights against
    `train_step` of members[i] alone on x[i], y[i] (members[i] must be the fused member i, not yet stepped)."""
    errors = dict.fromkeys(ERRORS, 0.0)
    for i, m in enumerate(members):
        loss, _ = train_step(m.model, m.optimizer, m.masking, x[i], y[i], m.head, m.autocast)
        errors["loss"] = max(errors["loss"], relative(losses[i], loss))
        for name, p in m.model.named_parameters():
            stacked = fused.params[name]
            errors["gradients"] = max(errors["gradients"], relative(stacked.grad[i], p.grad))
            errors["weights after the step"] = max(errors["weights after the step"], relative(stacked[i].detach(), p))
    return errors


def check(net: str, k: int, batch: int, device: torch.device, bench: Benchmark) -> Record:
    """The check on 8x8 crops (or the net's smallest input): it tests the computation, not the image size.
    A crash fails the check, in its row, and leaves the measurements to run."""
    side = max(8, NETS[net][1])
    bench = dataclasses.replace(bench, train_x=bench.train_x[:, :side, :side], test_x=bench.test_x[:, :side, :side])
    try:
        members = check_members(net, k, batch, device, bench)
        fused = Fused(members)
        x, y = draw(members[0].data, k, batch, members[0].head, members[0].generator)
        x = x.double()  # (K, B, C, H, W)
        errors: dict[str, object] = member_errors(fused, fused.step(x, y), members, x, y)
        verdict = "pass" if max(errors.values()) <= TOLERANCE else "FAIL"
    except Exception as err:
        errors, verdict = dict.fromkeys(ERRORS, ""), f"FAIL: {type(err).__name__}: {err}"[:200]
    return {"net": net, "members": k, "batch": batch, **{f"max rel. error, {n}": e for n, e in errors.items()},
            "pass/fail": verdict}


# ---------------------------------------------------------------- the cells

@dataclass(frozen=True)
class Cell:
    net: str
    batch: int
    option: str  # single, fused, packed or compiled
    trials: int

    def __str__(self) -> str:
        return f"{self.net} b{self.batch} {self.option} x{self.trials}"


def fresh(device: torch.device) -> None:
    """Free what the last cell left and restart the peak-memory count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def rate(device: torch.device, step: Callable[[], object], images: int, warmup: int, steps: int,
         seconds: float) -> float:
    """Images/s of `step` after `warmup` calls, in the fastest of the chunks of `steps` calls timed until `seconds`
    have passed: other work on the machine only ever slows a chunk (as the packed rows keep their best round)."""
    for _ in range(warmup):
        step()
    common.sync(device)
    chunks = [common.time_calls(device, step, steps)]
    while sum(chunks) < seconds:
        chunks.append(common.time_calls(device, step, steps))
    return images * steps / min(chunks)


def measure(cell: Cell, device: torch.device, bench: Benchmark, args: argparse.Namespace, single: float | None
            ) -> tuple[float, float | None]:
    """(aggregate images/s, peak GB on the device; None on a CPU) of one cell."""
    if cell.option == "packed":  # steps per process so that a round lasts about `seconds` even with no gain
        per_process = math.ceil(args.seconds * (single or 0) / (cell.batch * cell.trials))
        out = packing.pack(cell.trials, cell.net, cell.batch, device, args.warmup, max(args.steps, per_process),
                           args.rounds)
        gb = out["peak MB per trial"] * cell.trials / 1024 if device.type == "cuda" else None  # the largest x K
        return out["aggregate img/s"], gb
    fresh(device)
    trainer = common.make_trainer(cell.net, cell.batch, device, bench, density=DENSITY)
    if cell.option == "fused":
        fused, data, head, generator = Fused([trainer] * cell.trials), trainer.data, trainer.head, trainer.generator
        del trainer  # members start as copies of one trial: a step's cost does not depend on the values
        fresh(device)

        def step() -> Tensor:
            return fused.step(*draw(data, cell.trials, cell.batch, head, generator))
    else:
        if cell.option == "compiled":
            trainer.model = torch.compile(trainer.model, mode=args.compile_mode)
        step = trainer.step
    ips = rate(device, step, cell.trials * cell.batch, args.warmup, args.steps, args.seconds)
    return ips, torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def run_cells(cells: list[Cell], device: torch.device, bench: Benchmark, args: argparse.Namespace, started: float
              ) -> tuple[list[Record], list[Cell]]:
    """Measure the cells in order, printing each row as it comes; skip those the budget has no time for."""
    rows: list[Record] = []
    skipped: list[Cell] = []
    for cell in cells:
        left = args.budget_s - (time.perf_counter() - started)
        if left <= RESERVE_S.get(cell.option, 0.0):
            skipped.append(cell)
            print(f"fusion: skipped {cell}: {left:.0f} s of the budget left", flush=True)
            continue
        single = next((r["aggregate img/s"] for r in rows if r["net"] == cell.net and r["batch"] == cell.batch
                       and r["option"] == "single" and isinstance(r["aggregate img/s"], float)), None)
        cell_started = time.perf_counter()
        try:
            ips, gb = measure(cell, device, bench, args, single)
        except torch.cuda.OutOfMemoryError:
            ips, gb = "OOM", None
        except Exception as err:  # a failed cell is a row: the rest of the run still measures
            ips, gb = f"failed: {type(err).__name__}: {err}"[:120], None
        fresh(device)
        row: Record = {"net": cell.net, "batch": cell.batch, "option": cell.option, "trials": cell.trials,
                       "aggregate img/s": ips,
                       "img/s per trial": ips / cell.trials if isinstance(ips, float) else "",
                       "x single": ips / single if isinstance(ips, float) and single else "",
                       "peak GB": "n/a" if gb is None else gb, "cell s": time.perf_counter() - cell_started}
        rows.append(row)
        print("fusion: " + ", ".join(f"{k} {common.fmt(v)}" for k, v in row.items()), flush=True)
    return rows, skipped


def projection(rows: list[Record], kind: str) -> list[Record]:
    """Per (net, batch): the fastest option and the paper grid's device-hours at it and at a single trial."""
    out = []
    for net, batch in dict.fromkeys((r["net"], r["batch"]) for r in rows):
        done = [r for r in rows if (r["net"], r["batch"]) == (net, batch) and isinstance(r["aggregate img/s"], float)]
        if not done:
            continue
        best = max(done, key=lambda r: r["aggregate img/s"])
        single = next((r["aggregate img/s"] for r in done if r["option"] == "single"), math.nan)
        out.append({"net": net, "batch": batch, "best option": f"{best['option']} x{best['trials']}",
                    "aggregate img/s": best["aggregate img/s"],
                    f"{kind}-hours per seed, best": packing.GRID_IMAGES / best["aggregate img/s"] / 3600,
                    f"{kind}-hours per seed, single trial": packing.GRID_IMAGES / single / 3600})
    return out


def main(argv: list[str] | None = None) -> dict[str, list]:
    argv = sys.argv[1:] if argv is None else argv
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--nets", nargs="+", default=None, help="default resnet18 mobilenetv2 (--quick: resnet18)")
    p.add_argument("--batches", nargs="+", type=int, default=None, help="default 64 128 (--quick: 8)")
    p.add_argument("--members", nargs="+", type=int, default=None,
                   help="K, trials fused or packed (default 1 4 16 48 on CUDA, 1 2 4 on a CPU, --quick: 1 2)")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per cell (default 2 on CUDA)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds of packed trials (default 2)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="no cell starts after this many seconds (default 200 on CUDA, none on a CPU)")
    p.add_argument("--compile", action="store_true", help="also time one torch.compile'd trial per net and batch")
    p.add_argument("--compile-mode", default="default", help="torch.compile's mode, e.g. reduce-overhead (CUDA graphs)")
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    nets = args.nets or (["resnet18"] if args.quick else ["resnet18", "mobilenetv2"])
    batches = args.batches or common.by_mode(args, device, [8], [64, 128], [64, 128])
    members = args.members or common.by_mode(args, device, [1, 2], [1, 2, 4], [1, 4, 16, 48])
    args.warmup = args.warmup if args.warmup is not None else common.by_mode(args, device, 1, 2, 5)
    args.steps = args.steps or common.by_mode(args, device, 1, 2, 10)
    args.seconds = args.seconds if args.seconds is not None else common.by_mode(args, device, 0.0, 5.0, 2.0)
    args.rounds = args.rounds or common.by_mode(args, device, 1, 2, 2)
    args.budget_s = args.budget_s or common.by_mode(args, device, math.inf, math.inf, 200.0)
    started = time.perf_counter()
    bench = common.synthetic_cifar100(train_per_class=64, test_per_class=1)  # task 1: 640 images
    checks = []
    for net in nets:
        checks.append(check(net, 3, 4, device, bench))
        print("fusion check: " + ", ".join(f"{k} {common.fmt(v)}" for k, v in checks[-1].items()), flush=True)
    cells = [Cell(net, batch, option, k) for batch in batches for net in nets
             for option, ks in (("single", [1]), ("fused", members)) for k in ks]
    cells += [Cell(net, batch, "packed", k) for batch in batches for net in nets for k in members if k > 1]
    cells += [Cell(net, batch, "compiled", 1) for batch in batches for net in nets if args.compile]
    rows, skipped = run_cells(cells, device, bench, args, started)
    kind = "GPU" if device.type == "cuda" else "CPU (this machine)"
    notes = [f"check: {len(checks)} net(s), 3 members of different seeds, batch 4 of 8x8 crops (or the net's "
             f"smallest input), float64; pass: every relative error <= {TOLERANCE:g}",
             f"single: one trial, the engine's train_step in this process; fused: K members vmapped, one "
             f"{'bf16-autocast ' if device.type == 'cuda' else ''}step with the engine's masking and Adam on the "
             "stacks, input drawn for all members in one gather; packed: `benchmarks.packing.pack`, K processes "
             f"sharing the device; compiled: one trial, its net under torch.compile (mode {args.compile_mode})",
             f"timing: {args.warmup} warm-up steps, then chunks of {args.steps} steps until {args.seconds:g} s, "
             f"the fastest kept (packed: {args.rounds} rounds sized to last ~{args.seconds:g} s each, the best); "
             "density 0.2, task 1 of 10, no prune-and-regrow in any row",
             "peak GB: torch.cuda.max_memory_allocated over the cell (packed: K x the largest process's, without "
             "the CUDA contexts); n/a on a CPU",
             f"projection: {packing.GRID_IMAGES:.3g} images per seed ({packing.GRID_TRIALS} trials x "
             f"{packing.CIFAR100_TRAIN:,} CIFAR-100 train images x {packing.EPOCHS} epochs, as benchmarks.packing) "
             "/ aggregate img/s / 3600; evaluation left out",
             f"{time.perf_counter() - started:.0f} s in all; budget {args.budget_s:g} s"
             + (f"; skipped for lack of budget: {', '.join(map(str, skipped))}" if skipped else "")]
    projected = projection(rows, kind)
    common.report("benchmarks.fusion", argv, args, device, "8. Fusion",
                  [common.table(checks), common.table(rows), common.table(projected)], notes)
    return {"check": checks, "cells": rows, "projection": projected, "skipped": skipped}


if __name__ == "__main__":
    sys.exit(0 if all(row["pass/fail"] == "pass" for row in main()["check"]) else 1)
