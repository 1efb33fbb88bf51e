"""RunConfig: every knob of one task-incremental DST run, its defaults and validation.

Fields left as None take the benchmark's default (the reference's cifar100.py defaults for
CIFAR, miniImageNet100.py's for miniImageNet, small settings for digits/synthetic), so
`cldst train --dataset miniImageNet` behaves like the reference's miniImageNet script.
`resolve()` fills them in; the resolved config is what gets saved with every result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields

BENCHMARK_CLASSES = {"cifar10": 10, "cifar100": 100, "miniimagenet": 100, "tinyimagenet": 200, "mnist": 10,
                     "fashion-mnist": 10, "digits": 10, "synthetic": 10}
NETS = ("resnet18", "mobilenetv2", "vgg16", "lenet5", "mlp")
SPARSE_INITS = ("uniform", "ERK")
PRUNES = ("magnitude", "SET", "Taylor_FO")
GROWTHS = ("random", "unfired", "momentum", "gradient")
OPTIMIZERS = ("adam", "sgd")
EVAL_HEADS = ("task", "all")
PRECISIONS = ("bf16", "fp32")
# clean: each task's own head, no test-time augmentation, best epoch by task-head training accuracy.
# paper: evaluated as the reference evaluates (argmax over all classes, seeded test-time crop and flip,
# best epoch by all-class training accuracy, fp32), with the engine otherwise unchanged.
PROTOCOLS = ("clean", "paper")
PROTOCOL_SETTINGS = {"clean": {"eval_head": "task", "precision": "bf16"},
                     "paper": {"eval_head": "all", "precision": "fp32"}}
DEVICES = ("auto", "cpu", "cuda")

# Other spellings users type (the reference's README and code disagree), lower-cased.
ALIASES = {
    "benchmark": {"miniimagenet100": "miniimagenet", "mini-imagenet": "miniimagenet",
                  "tiny-imagenet-200": "tinyimagenet", "tiny-imagenet": "tinyimagenet",
                  "fashionmnist": "fashion-mnist", "fashion_mnist": "fashion-mnist"},
    "growth": {"random_unfired": "unfired"},
    "prune": {"set": "SET", "taylor_fo": "Taylor_FO", "taylor-fo": "Taylor_FO"},
    "sparse_init": {"erk": "ERK"},
}

BENCHMARK_DEFAULTS = {
    "cifar100": dict(net="mobilenetv2", num_tasks=10, classes_per_task=10, epochs=20, batch_size=64,
                     density=0.2, update_frequency=400, lr=1e-3),
    "cifar10": dict(net="mobilenetv2", num_tasks=5, classes_per_task=2, epochs=20, batch_size=64,
                    density=0.2, update_frequency=400, lr=1e-3),
    "miniimagenet": dict(net="resnet18", num_tasks=10, classes_per_task=10, epochs=100, batch_size=128,
                         density=0.1, update_frequency=50, lr=1e-3),
    # A few hundred images per task: a sparse net needs a larger step to learn in a few epochs.
    "digits": dict(net="mlp", num_tasks=5, classes_per_task=2, epochs=3, batch_size=32,
                   density=0.2, update_frequency=10, lr=1e-2),
    "synthetic": dict(net="mlp", num_tasks=5, classes_per_task=2, epochs=2, batch_size=32,
                      density=0.2, update_frequency=5, lr=1e-2),
    # The reference reads these through cifar100.py, so its defaults, with lenet5 for 28x28 grey and,
    # for Tiny-ImageNet, the resnet18 of its ImageNet-derived script; 10 tasks over all 200 classes.
    "mnist": dict(net="lenet5", num_tasks=5, classes_per_task=2, epochs=20, batch_size=64,
                  density=0.2, update_frequency=400, lr=1e-3),
    "fashion-mnist": dict(net="lenet5", num_tasks=5, classes_per_task=2, epochs=20, batch_size=64,
                          density=0.2, update_frequency=400, lr=1e-3),
    "tinyimagenet": dict(net="resnet18", num_tasks=10, classes_per_task=20, epochs=20, batch_size=64,
                         density=0.2, update_frequency=400, lr=1e-3),
}


# Settings that may differ from task to task: one value means every task, a sequence gives one per task
# (`--density 0.2,0.1,0.1`). A checkpoint may be resumed with other values of these for the tasks to come.
PER_TASK_FIELDS = ("density", "growth", "prune", "death_rate", "update_frequency")


class ConfigError(ValueError):
    """An invalid configuration; the message names the field, the value and what is allowed."""


@dataclass(frozen=True)
class RunConfig:
    benchmark: str = "cifar100"
    net: str | None = None
    num_classes: int | None = None
    num_tasks: int | None = None
    classes_per_task: int | None = None
    class_order_seed: int | None = None  # None: classes in label order (the reference's); else a seeded permutation
    sparse_init: str = "uniform"
    prune: str | tuple[str, ...] = "magnitude"
    growth: str | tuple[str, ...] = "random"
    density: float | tuple[float, ...] | None = None
    death_rate: float | tuple[float, ...] = 0.5
    update_frequency: int | tuple[int, ...] | None = None
    isolate: bool = True
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int | None = None
    batch_size: int | None = None
    eval_batch_size: int = 128  # the reference's test loader; BatchNorm uses batch statistics at test time
    keep_best_epoch: bool = True  # the reference keeps the epoch with the best training accuracy
    protocol: str = "clean"
    eval_head: str | None = None  # None: the protocol's (task for clean, all for paper)
    precision: str | None = None  # None: the protocol's (bf16 for clean, fp32 for paper); CUDA only, CPU runs fp32
    val_fraction: float = 0.0  # share of each class's training images held out for validation (model selection)
    device: str = "auto"
    seed: int = 0

    def resolve(self) -> RunConfig:
        """Canonical names, benchmark defaults filled in, then validated."""
        schedules = {name: _as_schedule(getattr(self, name)) for name in PER_TASK_FIELDS}
        cfg = dataclasses.replace(self, **schedules)
        canon = {name: _canonical(name, getattr(cfg, name)) for name in ALIASES}
        cfg = dataclasses.replace(cfg, **canon)
        _check_choice("benchmark", cfg.benchmark, tuple(BENCHMARK_CLASSES))
        classes_given = cfg.num_classes is not None
        if not classes_given:
            cfg = dataclasses.replace(cfg, num_classes=BENCHMARK_CLASSES[cfg.benchmark])
        cfg = _derive_split(cfg)
        filled = {k: v for k, v in BENCHMARK_DEFAULTS[cfg.benchmark].items() if getattr(cfg, k) is None}
        cfg = dataclasses.replace(cfg, **filled)
        _check_choice("protocol", cfg.protocol, PROTOCOLS)
        for name, value in PROTOCOL_SETTINGS[cfg.protocol].items():
            given = getattr(cfg, name)
            if given is None:
                cfg = dataclasses.replace(cfg, **{name: value})
            elif cfg.protocol == "paper" and given != value:
                raise ConfigError(f"{name}: {given!r} contradicts protocol 'paper', which evaluates with "
                                  f"{name} {value!r}; leave {name} out, or use protocol 'clean'")
        if not classes_given and _is_count(cfg.num_tasks) and _is_count(cfg.classes_per_task):
            # The split the user asked for decides how many of the benchmark's classes are used.
            cfg = dataclasses.replace(cfg, num_classes=cfg.num_tasks * cfg.classes_per_task)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        _check_choice("benchmark", self.benchmark, tuple(BENCHMARK_CLASSES))
        _check_choice("net", self.net, NETS)
        _check_choice("sparse_init", self.sparse_init, SPARSE_INITS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("protocol", self.protocol, PROTOCOLS)
        _check_choice("eval_head", self.eval_head, EVAL_HEADS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("device", self.device, DEVICES)
        for name in ("num_classes", "num_tasks", "classes_per_task", "epochs", "batch_size", "eval_batch_size"):
            _check_int(name, getattr(self, name), low=1)
        for name in PER_TASK_FIELDS:
            values = getattr(self, name)
            if isinstance(values, tuple) and len(values) != self.num_tasks:
                raise ConfigError(f"{name}: {len(values)} values but num_tasks is {self.num_tasks}; give one value "
                                  f"(every task) or one per task")
            for task, value in enumerate(values if isinstance(values, tuple) else [values]):
                label = f"{name} (task {task})" if isinstance(values, tuple) else name
                if name in ("growth", "prune"):
                    _check_choice(label, value, GROWTHS if name == "growth" else PRUNES)
                elif name == "update_frequency":
                    _check_int(label, value, low=1)
                else:
                    _check_float(label, value, 0.0, 1.0, low_open=name == "density")
        _check_int("seed", self.seed, low=0)
        if self.class_order_seed is not None:
            _check_int("class_order_seed", self.class_order_seed, low=0)
        _check_float("val_fraction", self.val_fraction, 0.0, 1.0, high_open=True)
        _check_float("lr", self.lr, 0.0, math.inf, low_open=True)
        _check_float("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _check_float("weight_decay", self.weight_decay, 0.0, math.inf)
        for name in ("isolate", "keep_best_epoch"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.num_classes != self.num_tasks * self.classes_per_task:
            raise ConfigError(
                f"num_classes: {self.num_classes} != num_tasks ({self.num_tasks}) x classes_per_task "
                f"({self.classes_per_task}) = {self.num_tasks * self.classes_per_task}")
        available = BENCHMARK_CLASSES[self.benchmark]
        if self.num_classes > available:
            raise ConfigError(f"num_classes: {self.num_classes}, but benchmark {self.benchmark} "
                              f"has only {available} classes")

    def task_value(self, name: str, task: int) -> object:
        """The value of per-task setting `name` for task `task`."""
        value = getattr(self, name)
        return value[task] if isinstance(value, tuple) else value

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RunConfig:
        """Build from a dict (a Tune config, a checkpoint); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown setting (known: {', '.join(sorted(known))})")
        return cls(**values)


def _as_schedule(value: object) -> object:
    """A per-task value as given: a scalar, or a sequence as a tuple (one value: that value)."""
    if isinstance(value, (list, tuple)):
        return value[0] if len(value) == 1 else tuple(value)
    return value


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _derive_split(cfg: RunConfig) -> RunConfig:
    """Given one of num_tasks / classes_per_task, the other follows from num_classes."""
    tasks, per_task, classes = cfg.num_tasks, cfg.classes_per_task, cfg.num_classes
    if not _is_count(classes):
        return cfg
    if tasks is None and _is_count(per_task) and classes % per_task == 0:
        return dataclasses.replace(cfg, num_tasks=classes // per_task)
    if per_task is None and _is_count(tasks) and classes % tasks == 0:
        return dataclasses.replace(cfg, classes_per_task=classes // tasks)
    return cfg


def _canonical(field: str, value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_canonical(field, v) for v in value)
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ALIASES[field]:
        return ALIASES[field][lowered]
    allowed = {"benchmark": tuple(BENCHMARK_CLASSES), "growth": GROWTHS, "prune": PRUNES,
               "sparse_init": SPARSE_INITS}[field]
    matches = [a for a in allowed if a.lower() == lowered]
    return matches[0] if matches else value


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}: must be an integer >= {low}, got {value!r}")


def _check_float(name: str, value: object, low: float, high: float,
                 low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"{name}: must be a number in {lo}, {hi}, got {value!r}")


# The primary `cldst train` flag of a field where it is not the field name with dashes.
PRIMARY_FLAGS = {"benchmark": "--dataset", "classes_per_task": "--num-classes-per-task", "sparse_init": "--sparse-init"}


def text(value: object) -> str:
    """A setting as a flag takes it: floats as %g, a per-task schedule as a comma list."""
    if isinstance(value, (tuple, list)):
        return ",".join(text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def flag_for(name: str) -> str:
    return PRIMARY_FLAGS.get(name, "--" + name.replace("_", "-"))


def command_line(config: dict) -> str:
    """The `cldst train` command that reruns this (resolved) config exactly."""
    defaults = RunConfig()
    parts = ["cldst", "train"]
    for f in fields(RunConfig):
        value = config.get(f.name, getattr(defaults, f.name))
        if value is None or f.name == "device":
            continue
        if isinstance(value, bool):
            if value != getattr(defaults, f.name):
                parts.append(flag_for(f.name) if value else "--no-" + flag_for(f.name)[2:])
            continue
        parts += [flag_for(f.name), text(value)]
    return " ".join(parts)
