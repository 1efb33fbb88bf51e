"""A sweep's experiment: where its results and its Ray Tune state go, what it claims to run, and everything checked
before Ray starts (paths, address, MLflow store, data).

The experiment is named by --name (default: the --config file's name without .toml, else the preset's). Its folder
is `--results` (default `results/<name>`, made absolute); it holds the Parquet datasets
`tasks/` and `runs/`, `sweep.json` (what the sweep runs, so a rerun with other options under the same name is
refused instead of silently resumed) and, for search.py, the Optuna study `optuna.db`. Ray Tune's own experiment
state and trial checkpoints go to `--storage` (default `<results parent>/ray`, absolute), under `<name>`: on a
multi-node cluster, give a path every node shares or a pyarrow URI (s3://, gs://, ...).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow
import pyarrow.fs

from cldst.cli import fail
from cldst.config import ConfigError, RunConfig
from cldst.data import Benchmark, DataError, load_benchmark
from cldst.results import KINDS, ResultsError, check_writable, remove_killed_writes
from cldst.splits import validation_indices
from sweeps import cluster


def is_remote(storage: str) -> bool:
    """A pyarrow URI (s3://, gs://, ...), not a path: remote storage that Tune uploads to."""
    return "://" in storage


@dataclass(frozen=True)
class Experiment:
    name: str
    results_dir: Path  # the Parquet datasets, sweep.json, optuna.db
    storage: str  # Ray Tune's storage_path (the Tune experiment is <storage>/<name>)

    @property
    def tune_path(self) -> str:
        return self.storage.rstrip("/") + "/" + self.name


def from_args(args: argparse.Namespace) -> Experiment:
    name = args.name or (Path(args.config).stem if getattr(args, "config", None) else args.preset)
    results_dir = Path(args.results or Path("results") / name).expanduser().resolve()
    storage = args.storage or str(results_dir.parent / "ray")
    if not is_remote(storage):
        storage = str(Path(storage).expanduser().resolve())
    return Experiment(name, results_dir, storage)


def check_paths(exp: Experiment) -> None:
    """Fail before anything starts if the results folder, or a local --storage, cannot be written (a file in
    the way, no permission, a read-only mount, a nearly full disk), or a remote --storage's bucket cannot be
    reached (no such bucket, no credentials, no route to the endpoint). Creates nothing."""
    try:
        check_writable(exp.results_dir)
    except ResultsError as err:
        fail(f"--results: {err}")
    if not is_remote(exp.storage):
        try:
            check_writable(exp.storage)
        except ResultsError as err:
            fail(f"--storage: {err}")
        return
    try:  # the filesystem Ray Tune will use: pyarrow's, from the URI and the AWS_* / GOOGLE_* environment
        filesystem, path = pyarrow.fs.FileSystem.from_uri(exp.storage)
        bucket = path.split("/", 1)[0]
        found = filesystem.get_file_info(bucket).type != pyarrow.fs.FileType.NotFound
    except (OSError, pyarrow.ArrowException) as err:
        fail(f"--storage: {exp.storage}: cannot be reached ({err})")
    if not found:
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "the provider's default endpoint")
        fail(f"--storage: {exp.storage}: no bucket {bucket!r} at {endpoint}; create it first")


def claim(exp: Experiment, spec: dict) -> None:
    """Record what this experiment runs; a rerun under the same name must run the same sweep, with its
    Parquet and its Ray Tune state where they were (else finished trials would be missing or run twice)."""
    from ray import tune

    path = exp.results_dir / "sweep.json"
    spec = json.loads(json.dumps(spec))
    saved = json.loads(path.read_text()) if path.exists() else spec
    if saved != spec:
        fail(f"{exp.results_dir} holds another sweep named {exp.name!r} (see {path}), changed: {changes(saved, spec)}; "
             f"rerun it with the same options to resume it, or pass another --name")
    restorable = tune.Tuner.can_restore(exp.tune_path)
    if restorable and not path.exists():
        fail(f"{exp.tune_path} holds a sweep whose results are not in {exp.results_dir}; pass its --results, "
             f"or another --name")
    if not restorable and any((exp.results_dir / kind).is_dir() for kind in KINDS):
        fail(f"{exp.results_dir} holds results, but {exp.tune_path} no Ray Tune state to resume them from; "
             f"pass its --storage, or another --name")
    exp.results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    remove_killed_writes(exp.results_dir)  # the temp files of a driver killed mid-write; this one writes no part yet


def changes(saved: dict, wanted: dict, prefix: str = "") -> str:
    """What differs between two sweep specs, as 'key: saved -> wanted' (nested keys dotted), the first three."""
    found = []
    for key in sorted(set(saved) | set(wanted)):
        old, new = saved.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            found += [changes(old, new, f"{prefix}{key}.")] if old != new else []
        elif key not in saved or key not in wanted or old != new:
            shown = [repr(spec[key]) if key in spec else "absent" for spec in (saved, wanted)]
            found.append(f"{prefix}{key}: {shown[0]} -> {shown[1]}")
    return ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")


def prepare(args: argparse.Namespace, first: RunConfig) -> tuple[Experiment, Benchmark]:
    """Everything that can fail before Ray starts: results and storage paths, the address, the data."""
    exp = from_args(args)
    check_paths(exp)
    cluster.check_address(args.address)
    check_mlflow(args)
    bench = load_data(first, args)
    try:  # every class of every task keeps a training and a validation image
        validation_indices(bench.train_y, first.val_fraction)
    except ConfigError as err:
        fail(f"--val-fraction: {str(err).removeprefix('val_fraction: ')}")
    return exp, bench


def check_mlflow(args: argparse.Namespace) -> None:
    """Open the --mlflow store now, so that a URI MLflow refuses (an unknown scheme; a `file:` store, which MLflow
    3.x keeps only with MLFLOW_ALLOW_FILE_STORE=true) fails before Ray starts. A good URI's store is created."""
    if not args.mlflow:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=args.mlflow)
    except MlflowException as err:
        fail(f"--mlflow: {args.mlflow}: {' '.join(str(err).split())}")


def load_data(first: RunConfig, args: argparse.Namespace) -> Benchmark:
    """The driver loads the data once (absolute path: trials run in their own folders); Tune ships it."""
    try:
        return load_benchmark(first.benchmark, Path(args.data_root).expanduser().resolve())
    except DataError as err:
        fail(str(err))
