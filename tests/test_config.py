"""RunConfig: benchmark defaults, spellings, validation, and the rerun command."""

import shlex

import pytest

from cldst.cli import build_parser, config_from_args
from cldst.config import ConfigError, RunConfig, command_line


def test_benchmark_defaults_follow_the_reference_scripts():
    cifar = RunConfig().resolve()
    assert (cifar.benchmark, cifar.net, cifar.num_tasks, cifar.epochs, cifar.batch_size, cifar.density,
            cifar.update_frequency, cifar.lr) == ("cifar100", "mobilenetv2", 10, 20, 64, 0.2, 400, 1e-3)
    mini = RunConfig(benchmark="miniImageNet").resolve()
    assert (mini.net, mini.epochs, mini.batch_size, mini.density, mini.update_frequency) == (
        "resnet18", 100, 128, 0.1, 50)


def test_one_of_the_split_sizes_derives_the_other():
    assert RunConfig(num_tasks=20).resolve().classes_per_task == 5
    assert RunConfig(classes_per_task=20).resolve().num_tasks == 5
    assert RunConfig(benchmark="digits", num_tasks=3).resolve().num_classes == 6


def test_from_dict_refuses_unknown_settings():
    with pytest.raises(ConfigError, match="dropout: unknown setting"):
        RunConfig.from_dict({"dropout": 0.1})


@pytest.mark.parametrize("values, field", [
    (dict(death_rate=1.5), "death_rate"), (dict(lr=0.0), "lr"), (dict(momentum=1.0), "momentum"),
    (dict(batch_size=0), "batch_size"), (dict(isolate="yes"), "isolate"), (dict(density=float("nan")), "density"),
    (dict(epochs=2.5), "epochs"), (dict(device="tpu"), "device"), (dict(eval_head="best"), "eval_head"),
])
def test_invalid_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        RunConfig(**values).resolve()


@pytest.mark.parametrize("values", [
    dict(benchmark="digits", isolate=False, growth="momentum"),
    dict(benchmark="cifar100", sparse_init="ERK", density=0.05, class_order_seed=3, weight_decay=5e-4),
])
def test_command_line_reruns_the_same_config(values):
    cfg = RunConfig(**values).resolve()
    argv = shlex.split(command_line(cfg.to_dict()))[1:]
    assert config_from_args(build_parser().parse_args(argv)) == cfg
