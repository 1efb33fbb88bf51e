"""`cldst train`: the reference's flags parse, results are written and resumed. Bad input (exit 2, one line,
nothing written) is tests/test_bad_input.py."""

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


def test_a_run_that_fails_writes_an_error_row_of_its_own_failure(tmp_path, capsys):
    """lr 1e30 makes the loss NaN in the first epoch: exit 1, and the runs row says the failure is the run's own."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exited:
        main(["train", "--dataset", "synthetic", "--num_tasks", "2", "--epochs", "1", "--lr", "1e30", "--optimizer",
              "sgd", "--momentum", "0", "--out", str(out), "--quiet"])
    assert exited.value.code == 1
    (run,) = load(out).runs.to_pylist()
    assert (run["status"], run["failure"], run["error_type"], run["infra_retries"]) == ("error", "own",
                                                                                      "TrainingError", 0)
    assert run["error"] == "TrainingError: loss became nan in task 0, epoch 0"  # as a sweep's error rows say it


def test_console_entry_point_runs_as_a_module():
    done = subprocess.run([sys.executable, "-m", "cldst", "train", "--density", "2"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: density: must be a number in (0, 1], got 2.0"


def test_a_per_task_schedule_parses_from_comma_lists():
    argv = "--dataset digits --density 0.2,0.1,0.1,0.05,0.05 --growth random,momentum,unfired,gradient,random"
    cfg = config_from_args(build_parser().parse_args(["train", *argv.split()]))
    assert cfg.density == (0.2, 0.1, 0.1, 0.05, 0.05) and cfg.task_value("growth", 2) == "unfired"
    assert config_from_args(build_parser().parse_args(["train", "--density", "0.3"])).density == 0.3


@pytest.mark.parametrize("flags, message", [
    ("--density 0.2,0.1", "density: 2 values but num_tasks is 5"),
    ("--growth random,bogus,random,random,random", "growth (task 1): 'bogus' is not one of"),
    ("--update-frequency 10,x", "expected a int or a comma list, got '10,x'"),
    ("--death-rate 0.5,0.5,2,0.5,0.5", "death_rate (task 2): must be a number in [0, 1]"),
    ("--protocol exam", "protocol: 'exam' is not one of clean, paper"),
    ("--val-fraction 1", "val_fraction: must be a number in [0, 1)"),
    ("--val-fraction 0.001", "val_fraction: 0.001 leaves class 0"),
])
def test_bad_schedules_and_protocols_exit_2_with_one_line(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--dataset", "digits", "--out", str(out), *flags.split()])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not out.exists()
