"""Prove cldst on a device in one command: every net, init and growth criterion trains, isolation is exact,
mask counts are exact, a resumed run equals an uninterrupted one, bf16 agrees with fp32, and a packed sweep
runs end to end.

  python -m benchmarks.gpu_check                      # on CUDA: a few minutes, no network
  python -m benchmarks.gpu_check --device cpu --quick # the same checks on the CPU in about a minute
  bash scripts/gpu_all.sh                             # on a GPU machine: this check (--quick), throughput and
                                                      # fusion (with packing) in under 8 minutes, one command

Prints a line per check as it finishes (so a run cut off still tells something), then one table (check,
setting, result, pass/fail, seconds), appends it to benchmarks/RESULTS.md unless --no-append, and exits 1 if
any check failed. Runs go through the engine's public entry point `continual.run` (bf16 autocast and
channels_last on CUDA, as every real run) on generated CIFAR-shaped data.

- **isolation**: every accuracy of an earlier task is unchanged by later tasks (so BWT is exactly 0), and
  every weight and head-bias entry owned by earlier tasks is bit-identical in each later task's checkpoint.
- **counts**: every finished task's mask holds exactly `layer_counts` active weights per layer, after the
  prune-and-regrow updates of that task (update_frequency is set so that every task has some).
- **resume**: a run resumed from a checkpoint file equals the uninterrupted run bit for bit (accuracy rows,
  mask statistics, the best epoch, the final weights and masks). On CUDA both runs use deterministic
  algorithms (`torch.use_deterministic_algorithms(True, warn_only=True)`), else atomics in the backward
  pass would make any two runs differ, resumed or not.
- **precision**: bf16 against `precision="fp32"`, same seed (see `precision_tolerance`). On the CPU both
  run fp32, so they must be identical.
- **sweep**: `sweeps/full_grid.py --preset quick`, 4 trials, in a subprocess. On CUDA with
  `--gpus-per-trial 0.25` on one GPU, each trial's report must show it trained on CUDA under a 0.25
  memory cap; on the CPU the same 4-trial sweep with no GPU share (it proves the command, the driver and
  the Parquet, not the packing). Without Ray installed the row reads "skipped: ray not installed".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# cuBLAS reads this when its first handle is made: needed for deterministic GEMMs in the resume check.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from cldst import checkpoint, continual  # noqa: E402
from cldst.checkpoint import task_masks  # noqa: E402
from cldst.config import NETS, SPARSE_INITS, RunConfig  # noqa: E402
from cldst.data import Benchmark  # noqa: E402
from cldst.masking import layer_counts  # noqa: E402
from cldst.models import NETS as MODELS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
Row = dict[str, object]
Outcome = tuple[str, bool | None]  # (what was found, passed; None: skipped)


@dataclass(frozen=True)
class Sizes:
    """One run's size: tasks of 2 classes, every task gets (images / batch * epochs) // update_frequency updates;
    images are image_size square, or the net's smallest input if larger (vgg16: 32)."""

    train_per_class: int
    test_per_class: int
    epochs: int
    batch_size: int
    update_frequency: int
    num_tasks: int
    image_size: int


# --quick: 1 update per task, as small as a run gets: the big nets take seconds each on a 2-core CPU.
QUICK = Sizes(train_per_class=8, test_per_class=4, epochs=1, batch_size=8, update_frequency=2, num_tasks=2,
              image_size=16)
FULL = Sizes(train_per_class=128, test_per_class=64, epochs=2, batch_size=32, update_frequency=4, num_tasks=3,
             image_size=32)  # 4 updates per task
PRECISION = Sizes(train_per_class=256, test_per_class=128, epochs=3, batch_size=32, update_frequency=8, num_tasks=3,
                  image_size=32)


# ---------------------------------------------------------------- what runs

def run_settings(quick: bool) -> list[tuple[str, str, str]]:
    """(net, sparse_init, growth) of the training runs: the full product, or (--quick) every net once with
    the inits and growths rotating over them, plus every init x growth on the mlp."""
    if not quick:
        return [(net, init, growth) for net in NETS for init in SPARSE_INITS for growth in common.GROWTHS]
    big = [net for net in NETS if net != "mlp"]
    rotated = [(net, SPARSE_INITS[i % 2], common.GROWTHS[i % 4]) for i, net in enumerate(big)]
    return rotated + [("mlp", init, growth) for init in SPARSE_INITS for growth in common.GROWTHS]


def generated_benchmark(sizes: Sizes, net: str, seed: int = 0) -> Benchmark:
    """Low-contrast class prototypes plus noise, 3 channels: learnable in a few steps but not trivially, so
    accuracies vary between runs and precisions."""
    rng = np.random.default_rng(seed)
    side, num_classes = max(sizes.image_size, MODELS[net][1]), 2 * sizes.num_tasks
    prototypes = 128 + rng.uniform(-6, 6, size=(num_classes, side, side, 3))

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
        x = prototypes[y] + rng.normal(0, 64, size=(len(y), side, side, 3))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    (train_x, train_y), (test_x, test_y) = split(sizes.train_per_class), split(sizes.test_per_class)
    mean = tuple(float(m) for m in train_x.mean(axis=(0, 1, 2)) / 255)
    std = tuple(float(s) for s in train_x.std(axis=(0, 1, 2)) / 255)
    return Benchmark("generated", train_x, train_y, test_x, test_y, num_classes, mean, std, crop_padding=0,
                     flip=False)


def config(net: str, sparse_init: str, growth: str, sizes: Sizes, device: torch.device,
           precision: str = "bf16") -> RunConfig:
    return RunConfig(benchmark="cifar10", net=net, num_classes=2 * sizes.num_tasks, num_tasks=sizes.num_tasks,
                     classes_per_task=2, sparse_init=sparse_init, growth=growth, density=0.2,
                     update_frequency=sizes.update_frequency, epochs=sizes.epochs, batch_size=sizes.batch_size,
                     eval_batch_size=64, precision=precision, device=device.type).resolve()


def train(cfg: RunConfig, bench: Benchmark, state: dict | None = None) -> tuple[list[continual.TaskResult], list[dict]]:
    """The run's task results and the checkpoint state handed over after each task it learned."""
    states: list[dict] = []
    results = continual.run(cfg, bench, continual.Hooks(on_task_end=lambda _result, s: states.append(s)), state)
    return results, states


# ---------------------------------------------------------------- the checks on one run

def isolation_problems(cfg: RunConfig, results: list[continual.TaskResult], states: list[dict]) -> list[str]:
    problems = []
    for i, result in enumerate(results):
        changed = [j for j in range(i) if result.acc[j] != results[j].acc[j]]
        if changed or result.bwt != 0:
            problems.append(f"after task {i}: accuracy of tasks {changed} changed, BWT {result.bwt:g}")
    for t in range(1, len(states)):
        before, after = states[t - 1]["model"], states[t]["model"]
        masks = task_masks(states[t - 1])
        for name, weight in after.items():
            if name == "classifier.bias":
                owned = torch.zeros_like(weight, dtype=torch.bool)
                owned[: t * cfg.classes_per_task] = True
            elif name in masks[0]:
                owned = torch.stack([m[name] for m in masks]).any(0)
            else:
                continue
            moved = int((weight[owned] != before[name][owned]).sum())
            if moved:
                problems.append(f"task {t} moved {moved} weights of {name} owned by earlier tasks")
    return problems


def count_problems(cfg: RunConfig, states: list[dict]) -> list[str]:
    masks = task_masks(states[-1])
    expected = layer_counts({name: tuple(m.shape) for name, m in masks[0].items()}, cfg.density, cfg.sparse_init)
    return [f"task {t} {name}: {int(m.sum())} active, expected {expected[name]}"
            for t, task_mask in enumerate(masks) for name, m in task_mask.items() if int(m.sum()) != expected[name]]


def updates_per_task(cfg: RunConfig, bench: Benchmark) -> int:
    images = len(bench.train_y) // cfg.num_classes * cfg.classes_per_task
    return math.ceil(images / cfg.batch_size) * cfg.epochs // cfg.update_frequency


def check_run(net: str, sparse_init: str, growth: str, sizes: Sizes, device: torch.device) -> Outcome:
    cfg, bench = config(net, sparse_init, growth, sizes, device), generated_benchmark(sizes, net)
    results, states = train(cfg, bench)
    problems = isolation_problems(cfg, results, states) + count_problems(cfg, states)
    layers = len(task_masks(states[-1])[0])
    result = (f"BWT 0, owned weights bit-identical over {cfg.num_tasks} tasks; counts exact in {layers} layers "
              f"after {updates_per_task(cfg, bench)} updates/task; ACC {results[-1].avg_acc:.1f}")
    return "; ".join(problems[:3]) or result, not problems


# ---------------------------------------------------------------- resume, precision, sweep

@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic CUDA kernels while the block runs. warn_only: the one op the nets use that torch flags,
    the 1x1 adaptive average pool's backward, takes its non-atomic path (the input divides the output), and
    any nondeterminism left would show as a mismatch, which is what the check measures."""
    if device.type != "cuda":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have a deterministic implementation")
            yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def comparable(result: continual.TaskResult) -> dict:
    """Everything a task result holds except its timings."""
    return {k: v for k, v in dataclasses.asdict(result).items() if k not in ("train_seconds", "images_per_second")}


def differences(results: list[continual.TaskResult], states: list[dict], other: list[continual.TaskResult],
                other_states: list[dict]) -> list[str]:
    """Where two runs of the same config differ: task results (but timings), final weights, final masks."""
    problems = [f"task {a['task']} result differs" for a, b in zip(map(comparable, results), map(comparable, other),
                                                                   strict=True) if a != b]
    final, other_final = states[-1], other_states[-1]
    problems += [f"{name} differs" for name, weight in final["model"].items()
                 if not torch.equal(weight, other_final["model"][name])]
    masks, other_masks = task_masks(final), task_masks(other_final)
    return problems + [f"task {t} mask {name} differs" for t, m in enumerate(masks) for name in m
                       if not torch.equal(m[name], other_masks[t][name])]


def check_resume(net: str, sizes: Sizes, device: torch.device, folder: Path) -> Outcome:
    """Resume at the last task boundary but one, from a checkpoint written to and read from a file. On a mismatch
    the uninterrupted run is replayed, to tell a resume that lost state from a device that does not repeat itself."""
    cfg, bench = config(net, "ERK", "momentum", sizes, device), generated_benchmark(sizes, net)
    with deterministic(device):
        results, states = train(cfg, bench)
        path = checkpoint.save(states[-2], folder / f"{net}.pt")  # the last task is learned again on resume
        problems = differences(results, states, *train(cfg, bench, checkpoint.load(path, cfg.to_dict())))
        if problems and differences(results, states, *train(cfg, bench)):
            problems.insert(0, "training is not bitwise reproducible on this device even without a resume "
                               "(a second uninterrupted run differs too)")
    return "; ".join(problems[:3]) or "bit-identical accuracy rows, weights and masks", not problems


def precision_tolerance(acc: float, test_images: int) -> float:
    """ACC points two equally good runs may differ by. bf16 changes the rounding of every step, so the bf16 run
    is another model of the same quality, not the fp32 model plus a small error; two models of accuracy p
    measured on n test images differ by binomial noise alone with standard deviation 100 * sqrt(2p(1-p)/n).
    Allowed: 3 of those (two-sided 99.7%), and at least 2 points, for a p near 0 or 1 where the binomial
    estimate is too tight."""
    p = min(max(acc / 100, 1 / test_images), 1 - 1 / test_images)
    return max(2.0, 300 * math.sqrt(2 * p * (1 - p) / test_images))


def check_precision(net: str, sizes: Sizes, device: torch.device) -> Outcome:
    bench = generated_benchmark(sizes, net, seed=1)
    acc = {precision: train(config(net, "uniform", "random", sizes, device, precision), bench)[0][-1].avg_acc
           for precision in ("bf16", "fp32")}
    diff = acc["bf16"] - acc["fp32"]
    if device.type != "cuda":  # continual.run autocasts on CUDA only
        return f"ACC {acc['fp32']:.2f} both (the CPU runs fp32 for both: must be identical), difference {diff:+.2f}", \
            diff == 0
    tolerance = precision_tolerance(acc["fp32"], sizes.num_tasks * 2 * sizes.test_per_class)
    return (f"ACC bf16 {acc['bf16']:.2f}, fp32 {acc['fp32']:.2f}: difference {diff:+.2f} (tolerance "
            f"{tolerance:.1f})", abs(diff) <= tolerance)


def check_sweep(gpus: float, device: torch.device, folder: Path) -> Outcome:
    if importlib.util.find_spec("ray") is None:
        return "skipped: ray not installed", None
    name, cpus = "gpu_check", min(1.0, (os.cpu_count() or 4) / 4)  # all 4 trials at once
    command = [sys.executable, "sweeps/full_grid.py", "--preset", "quick", "--sparse-init", *SPARSE_INITS,
               "--growth", "random", "momentum", "--density", "0.2", "--num-tasks", "2", "--epochs", "1",
               "--name", name, "--results", str(folder / name), "--storage", str(folder / "ray"),
               "--gpus-per-trial", f"{gpus:g}", "--cpus-per-trial", f"{cpus:g}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    if device.type == "cuda":  # one GPU: the four trials must share it
        env["CUDA_VISIBLE_DEVICES"] = str(device.index if device.index is not None else torch.cuda.current_device())
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return f"exit {done.returncode}: {' | '.join(tail)}", False
    results = [p.read_text().strip() for p in (folder / "ray" / name).glob("*/result.json")]
    reports = [json.loads(text.splitlines()[-1]) for text in results if text]  # each trial's last report
    want = ("cuda", 0.25) if gpus else ("cpu", None)
    placed = [(r.get("device"), r.get("gpu_memory_fraction")) for r in reports]
    ok = len(reports) == 4 and all(r["tasks_done"] == 2 for r in reports) and set(placed) == {want}
    if not ok:
        return f"{len(reports)} trials reported; (device, memory cap) per trial: {placed}", False
    return f"4 trials ok on {want[0]}" + (f", each capped at {want[1]:g} of its memory" if gpus else ""), True


# ---------------------------------------------------------------- main

def timed(check: str, setting: str, fn: Callable[[], Outcome]) -> Row:
    started = time.perf_counter()
    try:
        result, passed = fn()
    except Exception as err:  # a crash is a failed check, reported in the table with the others
        result, passed = f"{type(err).__name__}: {err}"[:300], False
    verdict = "skip" if passed is None else "pass" if passed else "FAIL"
    seconds = round(time.perf_counter() - started, 1)
    print(f"gpu_check: {verdict} {check}, {setting}: {result} ({seconds} s)", flush=True)
    return {"check": check, "setting": setting, "result": result, "pass/fail": verdict, "seconds": seconds}


def run_checks(device: torch.device, quick: bool) -> list[Row]:
    sizes = QUICK if quick else FULL
    rows = [timed("isolation + counts", " ".join(s), lambda s=s: check_run(*s, sizes, device))
            for s in run_settings(quick)]
    precision_net, precision_sizes = ("mlp", QUICK) if quick else ("resnet18", PRECISION)
    gpus = 0.25 if device.type == "cuda" else 0.0
    with tempfile.TemporaryDirectory(prefix="cldst-gpu-check-") as tmp:
        folder = Path(tmp)
        rows += [timed("resume", f"{net} ERK momentum, {sizes.num_tasks} tasks, the last resumed from a checkpoint",
                       lambda net=net: check_resume(net, sizes, device, folder))
                 for net in (("mlp", "lenet5") if quick else NETS)]
        rows.append(timed("bf16 vs fp32", f"{precision_net}, {precision_sizes.num_tasks} tasks x "
                                          f"{precision_sizes.epochs} epochs, same seed",
                          lambda: check_precision(precision_net, precision_sizes, device)))
        rows.append(timed("sweep", f"sweeps/full_grid.py --preset quick, 4 trials, --gpus-per-trial {gpus:g}"
                                   + (" on one GPU" if gpus else " (CPU: no GPU to share)"),
                          lambda: check_sweep(gpus, device, folder)))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every net once and every init x growth on the mlp, "
                                                        "tiny runs: about a minute on a CPU")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--no-append", action="store_true", help="print only; do not append to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    started = time.perf_counter()
    rows = run_checks(device, args.quick)
    failed = sum(r["pass/fail"] == "FAIL" for r in rows)
    notes = [f"{len(rows)} checks: {failed} failed, {sum(r['pass/fail'] == 'skip' for r in rows)} skipped, "
             f"{time.perf_counter() - started:.0f} s in all",
             f"runs: bf16 autocast and channels_last on CUDA (the CPU runs fp32), density 0.2, tasks of 2 classes "
             f"of generated {(QUICK if args.quick else FULL).image_size}x{(QUICK if args.quick else FULL).image_size}"
             f"x3 images (vgg16: 32x32)"]
    common.report("benchmarks.gpu_check", sys.argv[1:] if argv is None else argv, args, device, "GPU check",
                  [common.table(rows)], notes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
