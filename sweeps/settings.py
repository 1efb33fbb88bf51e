"""What a sweep fixes and crosses, for any RunConfig field: `--set FIELD=VALUE`, `--grid FIELD=V1,V2,...` and
`--config sweep.toml`, each value parsed with its field's type, then every trial checked before Ray starts.

Layers, each over the one below it: the preset (sweeps/presets.py), the file, the command line. A script's shorthand
options (--growth, --seeds, --epochs, ...) are `--grid` or `--set` of their field. A field given in a layer replaces
it below, fixed or crossed. A per-task schedule separates its tasks with ':' (density=0.2:0.1:0.1:0.05:0.05),
since ',' separates a grid's values; `--set` also takes `cldst train`'s commas.

The file holds `preset = "NAME"`, a `[set]` table (field = value; an array is a per-task schedule) and a `[grid]`
table (field = [values]; an array inside it is a schedule).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

import tomllib

from cldst.cli import FIELD_TYPES, fail, parse_bool, value_parser
from cldst.config import BENCHMARK_CLASSES, PER_TASK_FIELDS, ConfigError, RunConfig, text
from sweeps.presets import DEFAULT_PRESET, PRESETS, Preset

KINDS = {int: "an integer", float: "a number", parse_bool: "true or false", str: "a name"}
FILE_KEYS = ("preset", "set", "grid")
# A task of one class scores 100% under a task head whatever the net learned: no split may make one.
MIN_CLASSES_PER_TASK = 2


@dataclass(frozen=True)
class Settings:
    fixed: dict = field(default_factory=dict)  # RunConfig field -> the value every trial takes
    grid: dict = field(default_factory=dict)  # RunConfig field -> the values the sweep crosses

    def over(self, below: Settings) -> Settings:
        """These settings over `below`: a field given here replaces it there, fixed or crossed (in its place)."""
        return Settings({**{k: v for k, v in below.fixed.items() if k not in self.grid}, **self.fixed},
                        {**{k: v for k, v in below.grid.items() if k not in self.fixed}, **self.grid})

    def fields(self) -> set[str]:
        return {*self.fixed, *self.grid}


def add_options(parser: argparse.ArgumentParser, crossing: bool = True) -> None:
    parser.add_argument("--set", dest="set_fields", action="append", default=[], metavar="FIELD=VALUE",
                        help="fix any RunConfig field for every trial (repeatable), e.g. --set lr=0.003, "
                             "--set density=0.2:0.1 (one value per task)")
    if crossing:
        parser.add_argument("--grid", dest="grid_fields", action="append", default=[], metavar="FIELD=V1,V2",
                            help="cross any RunConfig field over these values (repeatable), e.g. --grid "
                                 "prune=magnitude,Taylor_FO")
    parser.add_argument("--config", metavar="SWEEP.toml",
                        help="read preset, [set] and [grid] from this TOML file; the command line overrides it")


def parse_value(name: str, given: str, separators: str = ":") -> object:
    """`given` as field `name` takes it; a per-task field splits a schedule at `separators`."""
    if name in PER_TASK_FIELDS and separators:
        parts = re.split(f"[{re.escape(separators)}]", given)
        if len(parts) > 1:
            return tuple(parse_value(name, part, "") for part in parts)
    kind = value_parser(name)
    if "None" in FIELD_TYPES[name] and given.strip().lower() == "none":
        return None  # the benchmark's or the protocol's default
    try:
        return kind(given.strip())
    except (ValueError, argparse.ArgumentTypeError):
        raise ConfigError(f"{name}: {given!r} is not {KINDS[kind]}") from None


def field_name(given: str, where: str) -> str:
    name = given.strip().replace("-", "_")
    if name not in FIELD_TYPES:
        raise ConfigError(f"{name or given!r}: not a RunConfig field ({where}); fields: {', '.join(FIELD_TYPES)}")
    return name


def assignment(option: str, given: str) -> tuple[str, str]:
    """FIELD=VALUE -> (field, value text)."""
    name, equals, value = given.partition("=")
    if not equals:
        raise ConfigError(f"{option}: {given!r} is not FIELD=VALUE")
    return field_name(name, f"{option} {given}"), value


def grid_values(name: str, values: list) -> list:
    if not values:
        raise ConfigError(f"{name}: crossed over no value; give at least one")
    return list(dict.fromkeys(values))


def from_command_line(args: argparse.Namespace, shorthands: dict[str, tuple[str, str]]) -> Settings:
    """The command line's settings. `shorthands`: option dest -> (field, "set" or "grid")."""
    given = [(name, kind, getattr(args, dest), "--" + dest.replace("_", "-"))
             for dest, (name, kind) in shorthands.items() if getattr(args, dest) is not None]
    for option, kind, assignments in (("--set", "set", args.set_fields),
                                      ("--grid", "grid", getattr(args, "grid_fields", []))):
        for text_given in assignments:
            name, value = assignment(option, text_given)
            parsed = parse_value(name, value, ":,") if kind == "set" else \
                [parse_value(name, part) for part in value.split(",")]
            given.append((name, kind, parsed, f"{option} {text_given}"))
    layer, where = Settings(), {}
    for name, kind, value, option in given:
        if name in where:
            raise ConfigError(f"{name}: given twice on the command line ({where[name]}, {option}); give it once")
        where[name] = option
        if kind == "set":
            layer.fixed[name] = value
        else:
            layer.grid[name] = grid_values(name, list(value))
    return layer


def from_toml(name: str, value: object, where: str) -> object:
    if isinstance(value, list):
        if name not in PER_TASK_FIELDS:
            raise ConfigError(f"{name}: {value!r} in {where} is a list; only {', '.join(PER_TASK_FIELDS)} take "
                              f"one value per task")
        return tuple(from_toml(name, v, where) for v in value)
    if isinstance(value, dict):
        raise ConfigError(f"{name}: a table in {where}; give a value")
    return parse_value(name, str(value))


def from_file(path: str) -> tuple[str | None, Settings]:
    """The file's preset (None: not given) and settings."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as err:
        raise ConfigError(f"--config: {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config: {path}: not TOML ({err})") from None
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"--config: {path}: unknown key {unknown[0]!r}; the keys are {', '.join(FILE_KEYS)}")
    preset = data.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset: {preset!r} in {path} is not one of {', '.join(PRESETS)}")
    tables = {key: data.get(key, {}) for key in ("set", "grid")}
    for key, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"--config: {path}: [{key}] must be a table of field = value, got {table!r}")
    fixed = {field_name(k, f"[set] of {path}"): v for k, v in tables["set"].items()}
    grid = {field_name(k, f"[grid] of {path}"): v for k, v in tables["grid"].items()}
    both = sorted(set(fixed) & set(grid))
    if both:
        raise ConfigError(f"{both[0]}: in both [set] and [grid] of {path}; give it once")
    return preset, Settings({k: from_toml(k, v, f"[set] of {path}") for k, v in fixed.items()},
                            {k: grid_values(k, [from_toml(k, x, f"[grid] of {path}")
                                                for x in (v if isinstance(v, list) else [v])])
                             for k, v in grid.items()})


def resolve(args: argparse.Namespace, shorthands: dict[str, tuple[str, str]], crossing: bool = True) -> Settings:
    """The user's settings, the command line over the file; sets `args.preset` (command line, file, default).
    One line and exit 2 on bad input."""
    try:
        preset, in_file = from_file(args.config) if args.config else (None, Settings())
        if in_file.grid and not crossing:
            raise ConfigError(f"{next(iter(in_file.grid))}: in [grid] of {args.config}, but this sweep crosses "
                              f"nothing (it explores its own values); fix the field in [set]")
        given = from_command_line(args, shorthands).over(in_file)
    except ConfigError as err:
        fail(str(err))
    args.preset = args.preset or preset or DEFAULT_PRESET
    return given


def over_preset(preset: Preset, given: Settings) -> Settings:
    return given.over(Settings(dict(preset.fixed), dict(preset.axes)))


def check_configs(configs: list[dict]) -> list[RunConfig]:
    """Every config resolved and its split checked before anything starts; one line and exit 2 on the first bad."""
    try:
        resolved = [RunConfig.from_dict(config).resolve() for config in configs]
        for cfg in resolved:
            check_split(cfg)
    except ConfigError as err:
        fail(str(err))
    return resolved


def configurations(points: list[dict]) -> list[dict]:
    """Each point checked (check_configs) and resolved, without its seed: what a race or the looks compare."""
    return [{k: v for k, v in cfg.to_dict().items() if k != "seed"}
            for cfg in check_configs([{**point, "seed": 0} for point in points])]


def check_split(cfg: RunConfig) -> None:
    if cfg.classes_per_task < MIN_CLASSES_PER_TASK:
        most = BENCHMARK_CLASSES[cfg.benchmark] // MIN_CLASSES_PER_TASK
        raise ConfigError(f"num_tasks: {cfg.num_tasks} leaves classes_per_task {cfg.classes_per_task} on "
                          f"{cfg.benchmark}; a task needs at least {MIN_CLASSES_PER_TASK} classes (a 1-class task "
                          f"scores 100% under a task head), so at most {most} tasks")


def differing(cfg: RunConfig) -> dict:
    """The settings of `cfg` that differ from its benchmark's defaults."""
    defaults = RunConfig(benchmark=cfg.benchmark).resolve().to_dict()
    return {k: v for k, v in cfg.to_dict().items() if v != defaults[k]}


def describe(cfg: RunConfig, crossed: list[str], left_out: tuple[str, ...] = ()) -> str:
    """The crossed settings, then every other one that differs from the benchmark's defaults (but `left_out`)."""
    rest = {k: v for k, v in differing(cfg).items() if k not in crossed and k not in left_out}
    shown = [*(f"{k}={text(getattr(cfg, k))}" for k in crossed), *(f"{k}={text(v)}" for k, v in rest.items())]
    return " ".join(shown)
