"""`cldst train`: the reference's flags parse; bad input exits 2 with one line and writes nothing."""

import subprocess
import sys

import pytest

from cldst.cli import build_parser, config_from_args, main
from cldst.results import load

REFERENCE_COMMANDS = {  # the reference README's four commands, `python cifar100.py` -> `cldst train`
    "5-task momentum": ("--dataset cifar100 --num_tasks 5 --num_classes 100 --num_classes_per_task 20 "
                        "--sparse_init uniform --growth momentum --density 0.1 --epochs 100 --update_frequency 100",
                        dict(num_tasks=5, classes_per_task=20, sparse_init="uniform", growth="momentum",
                             density=0.1, epochs=100, update_frequency=100, net="mobilenetv2")),
    "10-task ERK random": ("--dataset cifar100 --num_tasks 10 --num_classes 100 --num_classes_per_task 10 "
                           "--sparse_init ERK --growth random --density 0.2 --epochs 100 --update_frequency 400",
                           dict(num_tasks=10, sparse_init="ERK", growth="random", density=0.2, update_frequency=400)),
    "20-task unfired": ("--dataset cifar100 --num_tasks 20 --num_classes 100 --num_classes_per_task 5 "
                        "--sparse_init uniform --growth unfired --density 0.05 --epochs 25 --update_frequency 100",
                        dict(num_tasks=20, classes_per_task=5, growth="unfired", density=0.05, epochs=25)),
    "miniImageNet gradient": ("--dataset miniImageNet --num_tasks 10 --num_classes 100 --num_classes_per_task 10 "
                              "--sparse_init ERK --growth gradient --density 0.2 --epochs 100 --update_frequency 400",
                              dict(benchmark="miniimagenet", net="resnet18", growth="gradient", batch_size=128)),
}


@pytest.mark.parametrize("name", list(REFERENCE_COMMANDS))
def test_reference_readme_commands_parse(name):
    argv, expected = REFERENCE_COMMANDS[name]
    cfg = config_from_args(build_parser().parse_args(["train", *argv.split()]))
    for field, value in expected.items():
        assert getattr(cfg, field) == value, field


@pytest.mark.parametrize("argv, field, value", [
    ("--init ERK --death SET --growth random_unfired --net_name vgg16 --l2 0.1", "growth", "unfired"),
    ("--init erk --death set", "sparse_init", "ERK"),
    ("--init erk --death taylor_fo", "prune", "Taylor_FO"),
    ("--net-name vgg16 --batch-size 32", "net", "vgg16"),
    ("--l2 0.1", "weight_decay", 0.1),
    ("--no-isolate", "isolate", False),
    ("--isolate false", "isolate", False),
    ("--isolate", "isolate", True),
    ("--eval-head all", "eval_head", "all"),
])
def test_flag_spellings(argv, field, value):
    cfg = config_from_args(build_parser().parse_args(["train", *argv.split()]))
    assert getattr(cfg, field) == value


BAD_INPUT = {
    "density 0": ("--density 0", "density"),
    "density 1.5": ("--density 1.5", "density"),
    "density -1": ("--density -1", "density"),
    "density text": ("--density dense", "--density"),
    "classes mismatch": ("--num_classes 10 --num_tasks 3 --num_classes_per_task 2", "num_classes"),
    "too many classes": ("--num_tasks 6 --num_classes_per_task 2 --num_classes 12", "num_classes"),
    "unknown init": ("--sparse_init lottery", "sparse_init"),
    "unknown growth": ("--growth momentum_neuron", "growth"),
    "unknown prune": ("--death threshold", "prune"),
    "unknown dataset": ("--dataset imagenet", "benchmark"),
    "unknown net": ("--net alexnet", "net"),
    "unknown flag": ("--regularize True", "--regularize"),
    "bad bool": ("--isolate maybe", "--isolate"),
    "zero epochs": ("--epochs 0", "epochs"),
    "negative seed": ("--seed -3", "seed"),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(name, tmp_path, capsys):
    argv, named = BAD_INPUT[name]
    dataset = [] if "--dataset" in argv else ["--dataset", "digits"]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *dataset, *argv.split(), "--out", str(out), "--data-root", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "Traceback" not in err
    assert not out.exists()


def test_missing_and_corrupt_archives_are_clear_errors(tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "cifar100", "--data-root", str(tmp_path), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "cifar-100-python.tar.gz" in err and "cldst data download cifar100" in err
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08 not really a gzip archive")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(out)])
    assert exit_info.value.code == 2
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err
    assert not out.exists()


def test_a_foreign_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--dataset", "synthetic", "--num_tasks", "2", "--epochs", "1", "--out", str(out), "--quiet"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "synthetic", "--num_tasks", "2", "--epochs", "2",
              "--resume", str(out / "checkpoint.pt")])
    assert exit_info.value.code == 2
    assert "epochs" in capsys.readouterr().err


def test_train_writes_parquet_and_resumes_without_duplicates(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--num_tasks", "3", "--epochs", "1", "--out", str(out), "--quiet"]
    main(argv)
    printed = capsys.readouterr().out
    assert "task 2: acc [" in printed and "ACC" in printed and "BWT +0.00" in printed
    first = load(out)
    assert first.tasks.num_rows == 3 and first.runs.num_rows == 1
    assert first.runs.column("status").to_pylist() == ["ok"]
    main([*argv, "--resume", str(out / "checkpoint.pt")])  # nothing left to learn: rewrites, never duplicates
    again = load(out)
    assert again.tasks.num_rows == 3 and again.runs.num_rows == 1
    assert again.runs.column("acc").to_pylist() == first.runs.column("acc").to_pylist()


def test_console_entry_point_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "cldst", "train", "--density", "2"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: density: must be a number in (0, 1], got 2.0"
