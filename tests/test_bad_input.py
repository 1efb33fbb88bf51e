"""Bad input, one table per command line: `cldst train` / `cldst data`, sweeps/full_grid.py, sweeps/search.py,
sweeps/adaptive.py (their --set, --grid and --config too) and `python -m analysis.report`. Each case is a value a
user could plausibly type (out of range, wrong type, unknown name, a contradictory combination, an axis narrowed to
nothing) or a file they could plausibly pass (a missing, truncated or wrong-format dataset archive, a CIFAR pickle
that would run code, a checkpoint that is not one or belongs to another configuration). Every case must exit with
code 2 and one line on stderr that names the option, field or file, with no traceback, before anything is written
and before Ray starts.

The commands run in-process through their `main(argv)`; three run as a user runs them, in a subprocess.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
from analysis_fixture import Writer, config
from read_only import cases_of
from test_data import _cifar_members, _write_cifar, _write_tar, _WritesMarker

from analysis.report import main as report_main
from cldst import checkpoint
from cldst.cli import main as cldst_main
from sweeps import adaptive, full_grid, search

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- inputs the cases point at

@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Files a user could pass by mistake, made once; cases name them as {key} in their argv."""
    root = tmp_path_factory.mktemp("inputs")
    paths = {"inputs": root}

    def folder(name: str) -> Path:
        paths[name] = root / name
        paths[name].mkdir()
        return paths[name]

    folder("empty")
    archive = _write_cifar(folder("truncated"), "cifar100")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    (folder("not_gzip") / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08 not really a gzip archive")
    members = _cifar_members("cifar100")
    _write_tar(folder("no_test_batch") / "cifar-100-python.tar.gz", "cifar-100-python", {"train": members["train"]})
    paths["marker"] = root / "code-ran"
    _write_cifar(folder("malicious"), "cifar100", extra={b"payload": _WritesMarker(paths["marker"], "system")})

    # A real checkpoint (synthetic, 2 tasks x 1 epoch), then the wrong ones.
    run = root / "run"
    cldst_main(["train", "--dataset", "synthetic", "--num_tasks", "2", "--epochs", "1", "--out", str(run), "--quiet"])
    paths["ckpt"] = run / "checkpoint.pt"
    state = torch.load(paths["ckpt"], weights_only=True)
    paths["ckpt_v9"] = root / "v9.pt"
    torch.save({**state, "version": 9}, paths["ckpt_v9"])
    paths["ckpt_truncated"] = root / "truncated.pt"
    paths["ckpt_truncated"].write_bytes(paths["ckpt"].read_bytes()[:300])
    paths["not_ckpt"] = root / "weights.pt"
    torch.save({"model": state["model"]}, paths["not_ckpt"])  # a torch file, but not a cldst checkpoint
    paths["text"] = root / "notes.txt"
    paths["text"].write_text("not a checkpoint")
    paths["crafted"] = root / "crafted.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": _WritesMarker(paths["marker"], "system")}, paths["crafted"])

    # Results folders for analysis.report.
    writer = Writer(root / "results", "grid")
    writer.trial(config(seed=0), 80.0)
    paths["results"] = root / "results"
    sweeps = folder("sweeps")  # --config files
    for name, toml in TOML_FILES.items():
        paths[name] = sweeps / f"{name}.toml"
        paths[name].write_text(toml)
    only_stray = folder("only_stray")
    (only_stray / "exp" / "runs").mkdir(parents=True)
    (only_stray / "exp" / "runs" / "part-x.parquet").write_bytes(b"PAR1 cut short")
    return paths


TOML_FILES = {  # --config files a user could write by mistake
    "not_toml": "preset = quick\n",
    "unknown_key": 'presets = "quick"\n',
    "unknown_preset": 'preset = "nope"\n',
    "unknown_field": "[set]\nlrate = 0.1\n",
    "bad_value": '[set]\nlr = "fast"\n',
    "list_on_a_scalar": "[set]\nlr = [0.1, 0.2]\n",
    "set_and_grid": "[set]\nlr = 0.1\n[grid]\nlr = [0.1, 0.01]\n",
    "set_not_a_table": 'set = "lr=0.1"\n',
    "one_class_tasks": "[set]\nnum_tasks = 10\n",
    "grid": "[grid]\nlr = [0.1, 0.01]\n",
}


def listing(*folders: Path) -> list:
    return [sorted((p.relative_to(f), p.stat().st_size) for p in f.rglob("*")) for f in folders]


def fails_with_one_line(main, argv: list[str], named: str, tmp_path: Path, inputs: dict, capsys, monkeypatch) -> str:
    """Run `main(argv)` in tmp_path; assert exit code 2, one stderr line naming `named`, nothing written."""
    monkeypatch.chdir(tmp_path)  # default paths (results/, ray/) would land here
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    before = listing(tmp_path, inputs["inputs"])
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert named.lower() in lines[0].lower(), lines[0]
    assert listing(tmp_path, inputs["inputs"]) == before, "something was written"
    assert not inputs["marker"].exists(), "a crafted file ran code"
    assert not ray.is_initialized()
    return lines[0]


def expand(argv: str | list[str], tmp_path: Path, inputs: dict) -> list[str]:
    """A case's argv ("--out {tmp}/x", or a list where an argument is empty or holds a space), paths filled in."""
    args = argv.split() if isinstance(argv, str) else argv
    return [arg.format(tmp=tmp_path, closed_port=closed_port(), **inputs) for arg in args]


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: a connection to it is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- cldst train / cldst data

TRAIN = {  # argv after `cldst train` (--dataset digits unless given) -> what the error line must name
    # unknown names
    "dataset unknown": ("--dataset imagenet", "benchmark: 'imagenet'"),
    "dataset empty": (["--dataset", ""], "benchmark: ''"),
    "net unknown": ("--net alexnet", "net: 'alexnet'"),
    "net misspelt": ("--net ResNet-18", "net"),
    "sparse-init unknown": ("--sparse_init lottery", "sparse_init"),
    "prune unknown": ("--death threshold", "prune"),
    "growth unknown": ("--growth momentum_neuron", "growth"),
    "growth abbreviated": ("--growth grad", "growth"),
    "optimizer unknown": ("--optimizer rmsprop", "optimizer"),
    "eval-head unknown": ("--eval-head global", "eval_head"),
    "precision unknown": ("--precision fp16", "precision"),
    "device unknown": ("--device gpu", "device"),
    # out of range
    "density 0": ("--density 0", "density"),
    "density 1.5": ("--density 1.5", "density"),
    "density -1": ("--density -1", "density"),
    "density nan": ("--density nan", "density"),
    "density inf": ("--density inf", "density"),
    "death-rate negative": ("--death-rate -0.1", "death_rate"),
    "death-rate above 1": ("--death_rate 1.5", "death_rate"),
    "death-rate nan": ("--death-rate nan", "death_rate"),
    "update-frequency 0": ("--update-frequency 0", "update_frequency"),
    "update-frequency negative": ("--update_frequency -10", "update_frequency"),
    "lr 0": ("--lr 0", "lr"),
    "lr negative": ("--lr -1e-3", "lr"),
    "lr inf": ("--lr inf", "lr"),
    "momentum 1": ("--momentum 1", "momentum"),
    "momentum negative": ("--momentum -0.5", "momentum"),
    "weight-decay negative": ("--l2 -1", "weight_decay"),
    "weight-decay nan": ("--weight-decay nan", "weight_decay"),
    "epochs 0": ("--epochs 0", "epochs"),
    "epochs negative": ("--epochs -1", "epochs"),
    "batch-size 0": ("--batch-size 0", "batch_size"),
    "eval-batch-size 0": ("--eval-batch-size 0", "eval_batch_size"),
    "num-classes 0": ("--num-classes 0", "num_classes"),
    "num-classes negative": ("--num_classes -10", "num_classes"),
    "num-tasks 0": ("--num-tasks 0", "num_tasks"),
    "classes-per-task 0": ("--num_classes_per_task 0", "classes_per_task"),
    "seed negative": ("--seed -3", "seed"),
    "class-order-seed negative": ("--class-order-seed -1", "class_order_seed"),
    # wrong type
    "density text": ("--density dense", "--density"),
    "num-classes text": ("--num-classes ten", "--num-classes"),
    "num-classes fraction": ("--num-classes 2.5", "--num-classes"),
    "num-tasks text": ("--num_tasks five", "--num-tasks"),
    "classes-per-task text": ("--num-classes-per-task x", "--num-classes-per-task"),
    "update-frequency fraction": ("--update-frequency 2.5", "--update-frequency"),
    "epochs text": ("--epochs ten", "--epochs"),
    "epochs fraction": ("--epochs 2.5", "--epochs"),
    "batch-size text": ("--batch-size big", "--batch-size"),
    "lr text": ("--lr fast", "--lr"),
    "seed text": ("--seed one", "--seed"),
    "seed fraction": ("--seed 1.5", "--seed"),
    "class-order-seed text": ("--class-order-seed abc", "--class-order-seed"),
    "isolate not a bool": ("--isolate maybe", "--isolate"),
    "keep-best-epoch not a bool": ("--keep-best-epoch sometimes", "--keep-best-epoch"),
    "no-isolate with a value": ("--no-isolate false", "unrecognized arguments: false"),
    # contradictory combinations
    "classes != tasks x per task": ("--num_classes 10 --num_tasks 3 --num_classes_per_task 2", "num_classes"),
    "classes not divisible by tasks": ("--num-classes 10 --num-tasks 3", "num_classes"),
    "more classes than the benchmark": ("--num_tasks 6 --num_classes_per_task 2 --num_classes 12", "num_classes"),
    "split larger than the benchmark": ("--num_tasks 6 --num_classes_per_task 2", "num_classes: 12"),
    "cifar10 with 100 classes": ("--dataset cifar10 --num-classes 100", "num_classes: 100"),
    # the command line itself
    "unknown flag": ("--regularize True", "--regularize"),
    "flag without its value": ("--epochs", "--epochs"),
    # files: dataset archives
    "archive missing": ("--dataset cifar100 --data-root {empty}", "cifar-100-python.tar.gz"),
    "archive truncated": ("--dataset cifar100 --data-root {truncated}", "cifar-100-python.tar.gz"),
    "archive not gzip": ("--dataset cifar10 --data-root {not_gzip}", "cifar-10-python.tar.gz"),
    "archive lacks a batch": ("--dataset cifar100 --data-root {no_test_batch}", "lacks cifar-100-python/test"),
    "pickle that runs code": ("--dataset cifar100 --data-root {malicious}", "refusing to load"),
    "miniimagenet missing": ("--dataset miniImageNet --data-root {empty}", "miniImageNet100.zip"),
    # files: checkpoints (--resume); the real one is synthetic, 2 tasks, 1 epoch
    "checkpoint missing": ("--dataset synthetic --num_tasks 2 --epochs 1 --resume {tmp}/none.pt",
                           "no such checkpoint"),
    "checkpoint of another config": ("--dataset synthetic --num_tasks 2 --epochs 2 --resume {ckpt}", "epochs"),
    "checkpoint of another net": ("--dataset synthetic --num_tasks 2 --epochs 1 --net lenet5 --resume {ckpt}",
                                  "net"),
    "checkpoint of another version": ("--dataset synthetic --num_tasks 2 --epochs 1 --resume {ckpt_v9}",
                                      "checkpoint version 9"),
    "checkpoint truncated": ("--dataset synthetic --num_tasks 2 --epochs 1 --resume {ckpt_truncated}",
                             "not a readable cldst checkpoint"),
    "checkpoint that runs code": ("--dataset synthetic --num_tasks 2 --epochs 1 --resume {crafted}",
                                  "not a readable cldst checkpoint"),
    "weights, not a checkpoint": ("--dataset synthetic --num_tasks 2 --epochs 1 --resume {not_ckpt}",
                                  "not a cldst checkpoint"),
    "text, not a checkpoint": ("--dataset synthetic --num_tasks 2 --epochs 1 --resume {text}",
                               "not a readable cldst checkpoint"),
    # --out
    "out is a file": ("--out {text}", "exists and is not a directory"),
    "out under a file": ("--out {text}/run", "cannot be created"),
    "out read-only": ("--out /proc/cldst-run", "not writable"),
}


@pytest.mark.parametrize("case", cases_of(TRAIN))
def test_cldst_train(case, tmp_path, inputs, capsys, monkeypatch):
    argv, named = TRAIN[case]
    dataset = [] if "--dataset" in argv else ["--dataset", "digits"]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "out")]
    args = ["train", *dataset, *expand(argv, tmp_path, inputs), *out]
    fails_with_one_line(cldst_main, args, named, tmp_path, inputs, capsys, monkeypatch)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cldst_train_cuda_without_a_gpu(tmp_path, inputs, capsys, monkeypatch):
    fails_with_one_line(cldst_main, ["train", "--dataset", "digits", "--device", "cuda", "--out", str(tmp_path / "o")],
                        "device: 'cuda' requested", tmp_path, inputs, capsys, monkeypatch)


CLDST = {  # other `cldst` command lines
    "no command": ("", "command"),
    "unknown command": ("fit --dataset digits", "invalid choice: 'fit'"),
    "data: unknown action": ("data fetch cifar10", "invalid choice: 'fetch'"),
    "data: unknown dataset": ("data check imagenet21k", "benchmark: 'imagenet21k'"),
    "data: not downloadable": ("data download miniimagenet --data-root {tmp}/data", "only cifar10, cifar100"),
    "data: archive missing": ("data check cifar10 --data-root {empty}", "cifar-10-python.tar.gz"),
    "data: archive truncated": ("data check cifar100 --data-root {truncated}", "truncated or corrupt"),
}


@pytest.mark.parametrize("case", list(CLDST))
def test_cldst_other_commands(case, tmp_path, inputs, capsys, monkeypatch):
    argv, named = CLDST[case]
    fails_with_one_line(cldst_main, expand(argv, tmp_path, inputs), named, tmp_path, inputs, capsys, monkeypatch)


# ---------------------------------------------------------------- sweeps: the options both scripts share

SHARED = {  # argv after `--preset quick` (for search: also `--num-samples 2`)
    "preset unknown": ("--preset nope", "--preset"),
    "epochs 0": ("--epochs 0", "epochs"),
    "epochs text": ("--epochs ten", "--epochs"),
    "epochs fraction": ("--epochs 1.5", "--epochs"),
    "data-root missing": ("--preset paper-cifar100 --data-root {empty}", "cifar-100-python.tar.gz"),
    "data-root: pickle that runs code": ("--preset paper-cifar100 --data-root {malicious}", "refusing to load"),
    "address without port": ("--address nohost", "--address"),
    "address with text port": ("--address localhost:abc", "--address"),
    "address without host": ("--address :6379", "--address"),
    "address port out of range": ("--address 10.0.0.1:99999", "--address"),
    "address nobody listens on": ("--address 127.0.0.1:{closed_port}", "--address: cannot reach"),
    "name with a slash": ("--name a/b", "--name"),
    "name with a space": (["--name", "my sweep"], "--name: 'my sweep'"),
    "name empty": (["--name", ""], "--name: ''"),
    "gpus-per-trial negative": ("--gpus-per-trial -1", "--gpus-per-trial"),
    "gpus-per-trial nan": ("--gpus-per-trial nan", "--gpus-per-trial"),
    "gpus-per-trial too small": ("--gpus-per-trial 0.00001", "--gpus-per-trial"),
    "gpus-per-trial text": ("--gpus-per-trial half", "--gpus-per-trial"),
    "cpus-per-trial 0": ("--cpus-per-trial 0", "--cpus-per-trial"),
    "cpus-per-trial negative": ("--cpus-per-trial -1", "--cpus-per-trial"),
    "cpus-per-trial inf": ("--cpus-per-trial inf", "--cpus-per-trial"),
    "cpus-per-trial text": ("--cpus-per-trial one", "--cpus-per-trial"),
    "max-concurrent negative": ("--max-concurrent -1", "--max-concurrent"),
    "max-concurrent text": ("--max-concurrent two", "--max-concurrent"),
    "max-failures negative": ("--max-failures -1", "--max-failures"),
    "max-failures text": ("--max-failures x", "--max-failures"),
    "max-infra-retries negative": ("--max-infra-retries -1", "--max-infra-retries"),
    "dry-run with a value": ("--dry-run yes", "unrecognized arguments: yes"),
    "an option of cldst train": ("--lr 0.1", "unrecognized arguments: --lr"),
    "sparse-init unknown": ("--sparse-init lottery", "sparse_init"),
    "sparse-init narrowed to nothing": ("--sparse-init", "--sparse-init"),
    "growth unknown": ("--growth foo", "growth: 'foo'"),
    "growth narrowed to nothing": ("--growth", "--growth"),
    "update-frequency 0": ("--update-frequency 0", "update_frequency"),
    "update-frequency fraction": ("--update-frequency 2.5", "--update-frequency"),
    "update-frequency narrowed to nothing": ("--update-frequency", "--update-frequency"),
    "progress-every 0": ("--progress-every 0", "--progress-every: must be a number of seconds > 0"),
    "progress-every nan": ("--progress-every nan", "--progress-every"),
    "progress-every text": ("--progress-every often", "--progress-every"),
    "mlflow without a URI": ("--mlflow", "--mlflow"),
    "mlflow empty": (["--mlflow", ""], "--mlflow: must not be empty"),
    "wandb empty": (["--wandb", " "], "--wandb: must not be empty"),
    "val-fraction negative": ("--val-fraction -0.1", "--val-fraction: must be a number in [0, 1)"),
    "val-fraction 1": ("--val-fraction 1", "--val-fraction: must be a number in [0, 1)"),
    "val-fraction nan": ("--val-fraction nan", "--val-fraction"),
    "val-fraction text": ("--val-fraction tenth", "--val-fraction"),
    # digits: about 140 training images per class
    "val-fraction leaving a class no validation image": ("--val-fraction 0.001", "no validation image"),
    "val-fraction leaving a class no training image": ("--val-fraction 0.999", "no training image"),
}

FULL_GRID = {  # options only full_grid.py has, or takes differently
    "density 0": ("--density 0", "density: must be a number in (0, 1]"),
    "density 1.5": ("--density 0.1 1.5", "density"),
    "density nan": ("--density nan", "density"),
    "density text": ("--density abc", "--density"),
    "density narrowed to nothing": ("--density", "--density"),
    "num-tasks 0": ("--num-tasks 0", "num_tasks"),
    "num-tasks text": ("--num-tasks five", "--num-tasks"),
    "num-tasks too many for the classes": ("--num-tasks 5 20", "num_classes: 40, but benchmark digits"),
    "paper split on too few classes": ("--preset paper-cifar100 --num-tasks 200", "num_classes"),
    "num-tasks narrowed to nothing": ("--num-tasks", "--num-tasks"),
    "num-tasks leaving 1 class per task": ("--num-tasks 10", "num_tasks: 10 leaves classes_per_task 1 on digits"),
    "seeds and a grid of seeds": ("--seeds 0 1 --grid seed=2,3", "seed: given twice"),
    "seeds negative": ("--seeds 0 -1", "seed"),
    "seeds text": ("--seeds x", "--seeds"),
    "seeds narrowed to nothing": ("--seeds", "--seeds"),
}

SEARCH = {  # options only search.py has
    "density-range reversed": ("--density-range 0.3 0.1", "--density-range: LOW 0.3 is above HIGH 0.1"),
    "density-range from 0": ("--density-range 0 0.3", "density"),
    "density-range above 1": ("--density-range 0.1 2", "density"),
    "density-range one value": ("--density-range 0.1", "--density-range"),
    "density-range text": ("--density-range low high", "--density-range"),
    "density instead of density-range": ("--density 0.1", "--density"),
    "death-rate-range above 1": ("--death-rate-range 0.2 1.5", "death_rate"),
    "death-rate-range negative": ("--death-rate-range -0.1 0.5", "death_rate"),
    "death-rate-range reversed": ("--death-rate-range 0.7 0.1", "--death-rate-range"),
    "num-samples 0": ("--num-samples 0", "--num-samples"),
    "num-samples negative": ("--num-samples -3", "--num-samples"),
    "num-samples text": ("--num-samples many", "--num-samples"),
    "grace-period above the tasks": ("--grace-period 9", "--grace-period"),
    "grace-period 0": ("--grace-period 0", "--grace-period"),
    "reduction-factor 1": ("--reduction-factor 1", "--reduction-factor"),
    "reduction-factor below 1": ("--reduction-factor 0.5", "--reduction-factor"),
    "reduction-factor nan": ("--reduction-factor nan", "--reduction-factor"),
    "sampler unknown": ("--sampler cmaes", "--sampler"),
    "seed negative": ("--seed -1", "seed"),
    "seed text": ("--seed x", "--seed"),
    "num-tasks 0": ("--num-tasks 0", "num_tasks"),
    "num-tasks too many for the classes": ("--num-tasks 20", "num_classes"),
    "num-tasks two values": ("--num-tasks 5 10", "unrecognized arguments: 10"),
    "val-fraction 0 without select-on-test": ("--val-fraction 0", "--val-fraction: 0 leaves no validation data"),
    "select-on-test with a value": ("--select-on-test yes", "unrecognized arguments: yes"),
    "grid a per-task schedule": ("--grid density=0.2:0.1:0.1:0.1:0.1", "density: 0.2:0.1:0.1:0.1:0.1 is a per-task"),
    "density-range with density fixed": ("--set density=0.1 --density-range 0.1 0.2", "--density-range: not with"),
    "seed and set seed": ("--seed 1 --set seed=2", "seed: given twice"),
    "grid of splits": ("--grid num_tasks=5,2", "num_tasks: 5 2 given to --grid; the trials of a search share one"),
}


SETTINGS = {  # --set and --config, in every sweep script
    "set unknown field": ("--set lrate=0.1", "'lrate': not a RunConfig field (--set lrate=0.1); fields: benchmark"),
    "set without a value": ("--set lr", "--set: 'lr' is not FIELD=VALUE"),
    "set text for a number": ("--set lr=fast", "lr: 'fast' is not a number"),
    "set fraction for an integer": ("--set batch_size=2.5", "batch_size: '2.5' is not an integer"),
    "set not a bool": ("--set isolate=maybe", "isolate: 'maybe' is not true or false"),
    "set out of range": ("--set lr=0", "lr: must be a number in (0, inf], got 0.0"),
    "set unknown name": ("--set optimizer=rmsprop", "optimizer: 'rmsprop' is not one of adam, sgd"),
    "set schedule on a field that takes none": ("--set lr=0.1:0.2", "lr: '0.1:0.2' is not a number"),
    "set schedule of the wrong length": ("--set density=0.2:0.1", "density: 2 values but num_tasks is 5"),
    "set contradicting the protocol": ("--set protocol=paper --set eval_head=task",
                                       "eval_head: 'task' contradicts protocol 'paper'"),
    "set split of 1-class tasks": ("--set num_tasks=10", "num_tasks: 10 leaves classes_per_task 1 on digits"),
    "set 1 class per task": ("--set classes_per_task=1", "classes_per_task 1 on digits"),
    "set twice": ("--set lr=0.1 --set lr=0.2", "lr: given twice on the command line"),
    "set and its shorthand": ("--set epochs=2 --epochs 3", "epochs: given twice on the command line"),
    "config missing": ("--config {tmp}/none.toml", "none.toml: No such file or directory"),
    "config not TOML": ("--config {not_toml}", "not_toml.toml: not TOML"),
    "config unknown key": ("--config {unknown_key}", "unknown key 'presets'; the keys are preset, set, grid"),
    "config unknown preset": ("--config {unknown_preset}", "preset: 'nope'"),
    "config unknown field": ("--config {unknown_field}", "'lrate': not a RunConfig field ([set] of"),
    "config text for a number": ("--config {bad_value}", "lr: 'fast' is not a number"),
    "config list on a scalar field": ("--config {list_on_a_scalar}", "lr: [0.1, 0.2] in [set] of"),
    "config set and grid of one field": ("--config {set_and_grid}", "lr: in both [set] and [grid]"),
    "config set not a table": ("--config {set_not_a_table}", "[set] must be a table"),
    "config split of 1-class tasks": ("--config {one_class_tasks}", "num_tasks: 10 leaves classes_per_task 1"),
    "config a folder": ("--config {sweeps}", "--config: "),
}

GRID = {  # --grid, in full_grid.py and search.py
    "grid unknown field": ("--grid lrate=0.1,0.2", "'lrate': not a RunConfig field (--grid lrate=0.1,0.2)"),
    "grid without values": ("--grid lr", "--grid: 'lr' is not FIELD=VALUE"),
    "grid empty value": ("--grid lr=", "lr: '' is not a number"),
    "grid text for a number": ("--grid lr=0.1,fast", "lr: 'fast' is not a number"),
    "grid unknown name": ("--grid prune=magnitude,threshold", "prune: 'threshold' is not one of"),
    "grid contradicting the protocol": ("--set protocol=paper --grid precision=fp32,bf16",
                                        "precision: 'bf16' contradicts protocol 'paper'"),
    "grid split of 1-class tasks": ("--grid num_tasks=5,10", "num_tasks: 10 leaves classes_per_task 1"),
    "grid and set of one field": ("--grid lr=0.1,0.2 --set lr=0.1", "lr: given twice on the command line"),
    "grid and the axis option": ("--grid growth=random --growth momentum", "growth: given twice"),
    "grid schedule of the wrong length": ("--grid density=0.2:0.1,0.1", "density: "),
    "config grid of 1-class tasks": (["--config", "{grid}", "--grid", "num_tasks=10"], "num_tasks: 10 leaves"),
}


def sweep_case(table: dict, case: str, tmp_path: Path, inputs: dict) -> tuple[list[str], str]:
    argv, named = table[case]
    return ["--preset", "quick", *expand(argv, tmp_path, inputs)], named


ADAPTIVE = {  # what adaptive.py takes differently
    "config with a grid": ("--config {grid}", "lr: in [grid] of"),
    "grid": ("--grid lr=0.1,0.01", "unrecognized arguments: --grid"),
    "set and explore one field": ("--set growth=random --growth random momentum", "growth: fixed with --set"),
}


@pytest.mark.parametrize("case", [*SHARED, *FULL_GRID, *SETTINGS, *GRID])
def test_full_grid(case, tmp_path, inputs, capsys, monkeypatch):
    argv, named = sweep_case({**SHARED, **FULL_GRID, **SETTINGS, **GRID}, case, tmp_path, inputs)
    fails_with_one_line(full_grid.main, argv, named, tmp_path, inputs, capsys, monkeypatch)


@pytest.mark.parametrize("case", [*SETTINGS, *ADAPTIVE])
def test_adaptive(case, tmp_path, inputs, capsys, monkeypatch):
    argv, named = sweep_case({**SETTINGS, **ADAPTIVE}, case, tmp_path, inputs)
    fails_with_one_line(adaptive.main, argv, named, tmp_path, inputs, capsys, monkeypatch)


@pytest.mark.parametrize("case", [*SHARED, *SEARCH, *SETTINGS, *GRID])
def test_search(case, tmp_path, inputs, capsys, monkeypatch):
    argv, named = sweep_case({**SHARED, **SEARCH, **SETTINGS, **GRID}, case, tmp_path, inputs)
    fails_with_one_line(search.main, [*argv, "--num-samples", "2"] if "--num-samples" not in argv else argv,
                        named, tmp_path, inputs, capsys, monkeypatch)


def test_a_bad_ray_address_in_the_environment_is_named(tmp_path, inputs, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "head-node")  # the port forgotten
    with pytest.raises(SystemExit) as exit_info:
        full_grid.main(["--preset", "quick"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: RAY_ADDRESS: 'head-node' is not host:port")
    assert list(tmp_path.iterdir()) == [] and not ray.is_initialized()


# ---------------------------------------------------------------- python -m analysis.report

REPORT = {
    "results missing": ("{tmp}/missing", "no such results directory"),
    "results is a file": ("{text}", "notes.txt: a file, not a results directory"),
    "results hold no cldst results": ("{empty}", "no cldst results"),
    "results only unreadable files": ("{only_stray}", "found 1 result file(s) under"),
    "out is a file": ("{results} --out {text}", "--out: "),
    "out under a file": ("{results} --out {text}/report", "--out: "),
    "out read-only": ("{results} --out /proc/cldst-report", "--out: /proc/cldst-report: not writable"),
    "out without a folder": ("{results} --out", "--out"),
    "unknown option": ("{results} --format pdf", "--format"),
}


@pytest.mark.parametrize("case", cases_of(REPORT))
def test_analysis_report(case, tmp_path, inputs, capsys, monkeypatch):
    argv, named = REPORT[case]
    fails_with_one_line(report_main, expand(argv, tmp_path, inputs), named, tmp_path, inputs, capsys, monkeypatch)


# ---------------------------------------------------------------- as a user runs them

@pytest.mark.parametrize("command, named", [
    (["sweeps/full_grid.py", "--preset", "quick", "--density", "0"], "error: density: must be a number in (0, 1]"),
    (["sweeps/full_grid.py", "--preset", "quick", "--num-tasks", "10", "--dry-run"],
     "error: num_tasks: 10 leaves classes_per_task 1 on digits"),
    (["-m", "analysis.report", "missing-folder"], "analysis.report: error: missing-folder: no such results directory"),
])
def test_as_a_subprocess(command, named, tmp_path):
    done = subprocess.run([sys.executable, *[str(REPO / c) if c.endswith(".py") else c for c in command]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(named), done.stderr
    assert list(tmp_path.iterdir()) == []
