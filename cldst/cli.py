"""`cldst` console entry point: `cldst train ...` runs one experiment, `cldst data ...` manages datasets,
`cldst results compact DIR` merges a results folder's finished trials into a few files.

Bad input exits with code 2 and one line naming the problem, before anything is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

from cldst.config import PER_TASK_FIELDS, RunConfig, flag_for, text

# Every spelling the reference's code and README use, besides our dashed names.
ALIASES = {
    "net": ["--net_name", "--net-name"],
    "num_classes": ["--num_classes"],
    "num_tasks": ["--num_tasks"],
    "classes_per_task": ["--num_classes_per_task", "--classes-per-task"],
    "class_order_seed": ["--class_order_seed"],
    "sparse_init": ["--sparse_init", "--init"],
    "prune": ["--death"],
    "death_rate": ["--death_rate"],
    "update_frequency": ["--update_frequency"],
    "weight_decay": ["--l2", "--weight_decay"],
    "batch_size": ["--batch_size"],
    "eval_batch_size": ["--eval_batch_size"],
    "eval_head": ["--eval_head"],
    "keep_best_epoch": ["--keep_best_epoch"],
}
HELP = {
    "benchmark": "cifar100 (default), cifar10, miniimagenet, tinyimagenet, mnist, fashion-mnist, digits (bundled), "
                 "synthetic",
    "net": "resnet18, mobilenetv2, vgg16, lenet5, mlp (default: the benchmark's)",
    "num_classes": "classes used; must equal tasks x classes per task (default: the benchmark's, or their product)",
    "num_tasks": "tasks in the split; give it or --num-classes-per-task and the other follows",
    "classes_per_task": "classes in each task; give it or --num-tasks and the other follows",
    "class_order_seed": "permute the class order with this seed (default: label order)",
    "sparse_init": "uniform or ERK", "prune": "magnitude, SET or Taylor_FO (a comma list: one per task)",
    "growth": "random, unfired (random_unfired), momentum or gradient (a comma list: one per task)",
    "density": "fraction of maskable weights in each task's mask (a comma list: one per task)",
    "death_rate": "initial prune rate (a comma list: one per task)",
    "update_frequency": "batches between prune-and-regrow updates (a comma list: one per task)",
    "isolate": "freeze weights owned by earlier tasks (default: on)",
    "keep_best_epoch": "keep the epoch with the best training accuracy (default: on)",
    "protocol": "clean (default): task heads, no test-time augmentation; paper: evaluate as the reference does",
    "eval_head": "task: argmax over the task's classes; all: over all classes (default: the protocol's)",
    "precision": "bf16 autocast on CUDA or fp32 (default: the protocol's, bf16 for clean)",
    "val_fraction": "hold out this share of each class's training images for validation (default 0)",
    "device": "auto, cpu or cuda",
    "optimizer": "adam or sgd (Nesterov, with --momentum)",
    "lr": "learning rate, x0.1 at 50%% and 75%% of the epochs (default: the benchmark's)",
    "momentum": "SGD's momentum (default 0.9)",
    "weight_decay": "L2 weight decay (default 0)",
    "epochs": "epochs per task (default: the benchmark's)",
    "batch_size": "training batch size (default: the benchmark's)",
    "eval_batch_size": "evaluation batch size; BatchNorm uses batch statistics at test time, as the reference",
    "seed": "seeds the run: on the CPU the same seed gives identical results (default 0)",
}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        fail(f"{self.prog}: {message}")


def fail(message: str, code: int = 2) -> None:
    # One line, always: some library messages (torch's unpickling refusal, Arrow's) run over several.
    message = " ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


FIELD_TYPES = {f.name: str(f.type) for f in fields(RunConfig)}  # "float | tuple[float, ...] | None", ...


def parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def value_parser(name: str) -> Callable[[str], object]:
    """How one value of RunConfig field `name` is read from text: by the first type of its annotation."""
    kind = str(FIELD_TYPES[name]).split(" |")[0]
    return {"int": int, "float": float, "bool": parse_bool}.get(kind, str)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RunConfig field (plus the reference's spellings); unset flags stay None."""
    for f in fields(RunConfig):
        names = [flag_for(f.name), *ALIASES.get(f.name, [])]
        if f.type == "bool":
            parser.add_argument(*names, dest=f.name, nargs="?", const=True, type=parse_bool, help=HELP.get(f.name))
            parser.add_argument("--no-" + flag_for(f.name)[2:], dest=f.name, action="store_false")
            continue
        kind = value_parser(f.name)
        if f.name in PER_TASK_FIELDS:
            kind = per_task(kind)
        parser.add_argument(*names, dest=f.name, type=kind, metavar=f.name.upper(), help=HELP.get(f.name))


def per_task(kind: type) -> Callable[[str], object]:
    """A per-task flag: one value (every task) or a comma list, one value per task."""
    def parse(given: str) -> object:
        try:
            values = tuple(kind(part.strip()) for part in given.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} or a comma list, got {given!r}") from None
        return values[0] if len(values) == 1 else values
    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cldst", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    train = commands.add_parser("train", help="run one task-incremental DST experiment")
    add_config_flags(train)
    train.add_argument("--data-root", "--data_root", default="./data", help="dataset folder (default ./data)")
    train.add_argument("--out", help="write Parquet results and the final checkpoint here")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue a run from its task checkpoint")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    train.add_argument("--trace", metavar="FILE", help="write a step trace here: one JSON line per optimizer step "
                       "and per prune-and-regrow update (cldst/trace.py)")
    data = commands.add_parser("data", help="download or check a dataset")
    data.add_argument("action", choices=["download", "check"])
    data.add_argument("name", help="benchmark name")
    data.add_argument("--data-root", "--data_root", default="./data")
    results = commands.add_parser("results", help="maintain a results folder")
    results.add_argument("action", choices=["compact"], help="compact: merge finished trials' part files")
    results.add_argument("folders", nargs="+", metavar="DIR", help="an experiment folder, or a folder of them")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from cldst.checkpoint import CheckpointError
    from cldst.config import ConfigError
    from cldst.data import DataError
    from cldst.results import ResultsError
    try:
        if args.command == "train":
            train(args)
        elif args.command == "data":
            data_command(args)
        else:
            results_command(args)
    except (ConfigError, DataError, CheckpointError, ResultsError) as err:
        fail(str(err))


def data_command(args: argparse.Namespace) -> None:
    from cldst import data
    name = RunConfig(benchmark=args.name).resolve().benchmark
    if args.action == "download":
        print(f"downloaded and verified {data.download(name, args.data_root)}")
        return
    bench = data.load_benchmark(name, args.data_root)
    print(f"{name}: train {bench.train_x.shape}, test {bench.test_x.shape}, {bench.num_classes} classes")


def results_command(args: argparse.Namespace) -> None:
    from cldst.compaction import compact
    from cldst.results import experiment_dirs
    experiments = [path for folder in args.folders for path in experiment_dirs(folder)]  # all checked first
    for experiment_dir in experiments:
        done = compact(experiment_dir)
        print(done.summary())
        for _path, reason in done.skipped:
            print(f"warning: left out, not merged: {reason}", file=sys.stderr)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The resolved RunConfig of parsed `cldst train` flags (flags not given keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name) is not None}
    return RunConfig(**values).resolve()


def train(args: argparse.Namespace) -> None:
    from cldst import checkpoint, continual, data, metrics, results, trace
    cfg = config_from_args(args)
    continual.select_device(cfg.device)
    bench = data.load_benchmark(cfg.benchmark, args.data_root)
    state = checkpoint.load(args.resume, cfg.to_dict()) if args.resume else None
    if args.out:
        results.check_writable(args.out)
    config = cfg.to_dict()
    trial_id = "train-" + hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    out = Path(args.out) if args.out else None
    common = results.common_columns(config, out.name if out else "", trial_id, socket.gethostname())
    print(f"cldst train: {cfg.benchmark} / {cfg.net}, {cfg.num_tasks} tasks x {cfg.classes_per_task} classes, "
          f"{cfg.sparse_init} init, {text(cfg.prune)} prune, {text(cfg.growth)} growth, density {text(cfg.density)}, "
          f"update every {text(cfg.update_frequency)}, {cfg.epochs} epochs, protocol {cfg.protocol}"
          + (f", validation {cfg.val_fraction:g}" if cfg.val_fraction else "") + (f"; results -> {out}" if out else ""))

    def on_epoch_end(task: int, epoch: int, loss: float, train_acc: float) -> None:
        if not args.quiet:
            print(f"  task {task} epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f}, train acc {train_acc:.2f}%")

    # Every task learned, those before a --resume included: an error row needs the whole matrix so far.
    done = [continual.TaskResult(**r) for r in state["results"]] if state else []

    def on_task_end(result: continual.TaskResult, state: dict) -> None:
        done.append(result)
        row = ", ".join(f"{a:.1f}" for a in result.acc)
        val = f" val {result.val_avg_acc:.2f}" if result.val_acc else ""
        print(f"task {result.task}: acc [{row}] avg {result.avg_acc:.2f} bwt {result.bwt:+.2f}{val} "
              f"| {result.images_per_second:.0f} img/s, {result.train_seconds:.1f}s", flush=True)
        if out:
            results.upsert_task_rows(out, trial_id, [results.task_row(common, asdict(result))])
            checkpoint.save(state, out / "checkpoint.pt")

    hooks = continual.Hooks(on_epoch_end, on_task_end)
    step_trace = trace.Trace(args.trace) if args.trace else None
    if step_trace is not None:
        hooks.on_step, hooks.on_update = step_trace.step, step_trace.update
    started = time.perf_counter()
    try:
        task_results = continual.run(cfg, bench, hooks, state)
    except continual.TrainingError as err:
        if out:
            # the same one line as a sweep's error rows: "<type>: <message>"
            write_run(out, trial_id, common, done, "error", f"{type(err).__name__}: {err}",
                      time.perf_counter() - started, error_type=type(err).__name__)
        fail(str(err), code=1)
    finally:
        if step_trace is not None:
            step_trace.close()
    summary = metrics.summary([r.acc for r in task_results], [r.fwt_acc for r in task_results])
    matrix = metrics.full_matrix(summary["acc_matrix"], [r.fwt_acc for r in task_results])
    print("accuracy matrix (row i: after task i; above the diagonal: forward transfer):")
    for row in matrix:
        print("  " + " ".join("   -  " if v != v else f"{v:6.2f}" for v in row))
    val = f"  (validation ACC {task_results[-1].val_avg_acc:.2f})" if task_results[-1].val_acc else ""
    print(f"ACC {summary['acc']:.2f}  BWT {summary['bwt']:+.2f}  FWT {summary['fwt']:.2f}{val}")
    print("incremental accuracy: " + ", ".join(f"{a:.2f}" for a in summary["incremental_acc"]))
    if out:
        write_run(out, trial_id, common, task_results, "ok", None, time.perf_counter() - started)
        print(f"results in {out}/tasks and {out}/runs, checkpoint {out}/checkpoint.pt")


def write_run(out: Path, trial_id: str, common: dict, task_results: list, status: str, error: str | None,
              seconds: float, error_type: str | None = None) -> None:
    """The run's row. An error here is the run's own (the training raised): no infrastructure sits between."""
    from cldst import results
    failure = results.FAILURES[1] if status == "error" else None
    row = results.run_row(common, [asdict(r) for r in task_results], status, error, seconds, failure, error_type)
    results.write_part(out, "runs", trial_id, [row])
