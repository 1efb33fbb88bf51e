"""What keeping N task checkpoints per trial (`CheckpointConfig(num_to_keep=N)`) costs a sweep.

Ray Tune forces an experiment-state snapshot once a trial has saved num_to_keep checkpoints since the last
one (`_ExperimentCheckpointManager.on_trial_checkpoint`): it pickles the experiment state, waits for the
previous upload to the storage path to end, and starts a new one, all in the driver's loop. So num_to_keep=1
snapshots after every task report, 2 after every second, None only on Tune's own period (10 s and up).
Each setting runs the same quick-preset sweep, in its own process and local Ray, `--repeats` times, the
settings taken in turn; it reports the sweep's wall time, the snapshots taken, the driver's seconds inside
them, and the checkpoints left on disk. Needs Ray (unlike the other benchmarks).

With --storage (a folder, or s3://bucket/prefix: pyarrow reads AWS_ENDPOINT_URL and the AWS_* keys, so a local
S3 server works), it replays the driver's side of a sweep of --trials trials (144: the paper grid) that each
learn a task every --task-seconds, against that storage: Tune's own `_ExperimentCheckpointManager` and
storage syncer take the snapshots, from an experiment folder and state grown from one real quick sweep's trials,
while the replay plays Tune's part around them (a task report appends to the trial's result.json and
progress.csv, as Tune's loggers do; keeping num_to_keep checkpoints deletes the older ones from the storage, as
Tune's driver does; the trials' small checkpoints are uploaded beforehand, as the workers would). No trial runs:
144 concurrent trials do not fit a small machine, and only the driver's side is measured. Each setting, with
and without Tune's per-trial CSV/JSON/TensorBoard files, runs for --seconds; the backlog is the reports due but
not yet handled when it ends (the driver falling behind).

  python -m benchmarks.checkpoint_cost              # num_to_keep 1, 2 and None, 3 repeats each
  python -m benchmarks.checkpoint_cost --quick      # num_to_keep 1 and None, once each
  moto_server -p 5000 & AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
    python -m benchmarks.checkpoint_cost --storage s3://bucket/bench   # the bucket must exist
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks import common

REPO = Path(__file__).resolve().parents[1]
# 2 inits x 4 growths = 8 trials x 5 tasks of 1 epoch: 40 task checkpoints, each a few seconds apart.
SWEEP = ["--preset", "quick", "--density", "0.2", "--epochs", "1", "--num-tasks", "5"]


def keep_value(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def child(keep: int | None, folder: Path) -> dict:
    """One sweep in this process with num_to_keep=keep, timing every experiment snapshot the driver takes."""
    sys.path.insert(0, str(REPO))
    from ray.tune.execution import experiment_state

    from sweeps import common as sweep_common
    from sweeps import full_grid

    manager = experiment_state._ExperimentCheckpointManager
    original = manager.sync_up_experiment_state
    seen = {"snapshots": 0, "forced": 0, "seconds": 0.0}

    def timed_sync(self, save_fn, force=False, wait=False):
        forced, saved_before = force or self._should_force_sync_up, self._last_save_time
        started = time.perf_counter()
        original(self, save_fn, force=force, wait=wait)
        if self._last_save_time != saved_before:  # not skipped by the snapshot period
            seen["snapshots"] += 1
            seen["forced"] += forced
            seen["seconds"] += time.perf_counter() - started

    manager.sync_up_experiment_state = timed_sync
    sweep_common.CHECKPOINTS_KEPT = keep
    started = time.perf_counter()
    code = full_grid.main([*SWEEP, "--name", "cost", "--results", str(folder / "results"),
                           "--storage", str(folder / "ray")])
    wall = time.perf_counter() - started
    kept = len(list((folder / "ray" / "cost").glob("*/checkpoint_*")))
    return {"code": code, "wall": wall, **seen, "kept": kept}


def measure(keep: int | None, folder: Path) -> dict:
    """One sweep (child) in a process of its own, its Tune experiment left in `folder`/ray/cost."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.checkpoint_cost", "--child", str(keep),
                           "--folder", str(folder)], cwd=REPO, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"sweep with num_to_keep={keep} failed: {done.stderr.strip().splitlines()[-3:]}")
    result = json.loads(lines[-1])
    if result["code"] != 0:
        raise RuntimeError(f"sweep with num_to_keep={keep} ended with code {result['code']}")
    return result


def measured(keep: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="cldst-checkpoint-cost-") as tmp:
        return measure(keep, Path(tmp))


# ---------------------------------------------------------------- --storage: the driver's side at --trials trials

@dataclass
class Replay:
    """An experiment folder and state of `trials` trials, grown from a real sweep's (`template`), and the
    experiment-state snapshots Tune's driver takes of it on `storage` as the trials report tasks."""

    template: Path  # a finished sweep's Tune experiment folder (local storage)
    storage: str
    trials: int
    loggers: bool  # Tune's per-trial CSV/JSON/TensorBoard files in the experiment folder

    def __post_init__(self) -> None:
        import pyarrow.fs

        self.fs, self.root = pyarrow.fs.FileSystem.from_uri(self.storage)
        self.trial_dirs = sorted(p for p in self.template.iterdir() if p.is_dir())
        state = json.loads(next(self.template.glob("experiment_state-*.json")).read_text())
        entries = state["trial_data"]
        self.state = {**state, "trial_data": [entries[i % len(entries)] for i in range(self.trials)]}

    def save(self, staging: Path) -> None:
        """What TuneController.save_to_dir writes each snapshot: the trials' states, the searcher's."""
        (staging / "experiment_state-replay.json").write_text(json.dumps(self.state))
        for searcher in self.template.glob("basic-variant-state-*.json"):
            shutil.copy(searcher, staging / searcher.name)

    def run(self, keep: int | None, task_seconds: float, seconds: float) -> dict:
        from ray.train._internal.storage import _delete_fs_path, _FilesystemSyncer
        from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

        interval = task_seconds / self.trials  # between two reports of the sweep
        due = int(seconds / interval) + 1
        with tempfile.TemporaryDirectory(prefix="cldst-replay-") as tmp:
            staging = Path(tmp) / "staging"
            experiment = self.stage(staging, Path(tmp) / "uploads", due)
            storage = SimpleNamespace(experiment_driver_staging_path=str(staging), experiment_fs_path=experiment,
                                      syncer=_FilesystemSyncer(storage_filesystem=self.fs))
            manager = _ExperimentCheckpointManager(storage=storage, checkpoint_period="auto",
                                                   sync_every_n_trial_checkpoints=keep)
            kept: dict[int, list[str]] = {}
            seen = {"reports": 0, "snapshots": 0, "forced": 0, "seconds": 0.0}
            start = time.perf_counter()
            while (now := time.perf_counter() - start) < seconds:
                if seen["reports"] >= min(due, int(now / interval) + 1):
                    time.sleep(min(interval, seconds - now))
                    continue
                r = seen["reports"]
                trial = r % self.trials
                if self.loggers:
                    self.log_result(staging / f"trial_{trial:03d}")
                began, saved_before = time.perf_counter(), manager._last_save_time
                kept.setdefault(trial, []).append(f"{experiment}/trial_{trial:03d}/checkpoint_{r:06d}")
                while keep is not None and len(kept[trial]) > keep:  # Tune's driver deletes the older ones
                    _delete_fs_path(self.fs, kept[trial].pop(0))
                manager.on_trial_checkpoint(trial)
                forced = manager._should_force_sync_up
                manager.sync_up_experiment_state(lambda: self.save(staging))
                if manager._last_save_time != saved_before:  # not skipped by the snapshot period
                    seen["snapshots"] += 1
                    seen["forced"] += forced
                seen["seconds"] += time.perf_counter() - began
                seen["reports"] += 1
            storage.syncer.wait()
            upload = time.perf_counter()
            manager.sync_up_experiment_state(lambda: self.save(staging), force=True, wait=True)
            seen["upload"] = time.perf_counter() - upload
            _delete_fs_path(self.fs, experiment)
        return {**seen, "backlog": due - seen["reports"], "window": seconds}

    def stage(self, staging: Path, uploads: Path, reports: int) -> str:
        """The experiment folder of `trials` trials in `staging`, and in the storage with the small task
        checkpoints the workers upload for `reports` reports, before the clock starts; returns its path there."""
        from ray.train._internal.storage import _upload_to_fs_path

        staging.mkdir()
        for i in range(self.trials if self.loggers else 0):
            shutil.copytree(self.trial_dirs[i % len(self.trial_dirs)], staging / f"trial_{i:03d}",
                            ignore=shutil.ignore_patterns("checkpoint_*"))
        for r in range(reports):
            folder = uploads / f"trial_{r % self.trials:03d}" / f"checkpoint_{r:06d}"
            folder.mkdir(parents=True)
            (folder / "state.pt").write_bytes(b"0" * 4096)
        self.save(staging)
        experiment = f"{self.root}/replay-{time.time_ns()}"
        for folder in (uploads, staging):
            _upload_to_fs_path(str(folder), self.fs, experiment)
        return experiment

    @staticmethod
    def log_result(trial_dir: Path) -> None:
        """What Tune's JSON and CSV loggers append for one report: one more line in each file."""
        for name in ("result.json", "progress.csv"):
            path = trial_dir / name
            last = path.read_text().splitlines()[-1]
            with path.open("a") as f:
                f.write(last + "\n")


def sweeps(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """The real quick sweeps on a local --storage, `args.repeats` times per setting."""
    runs: dict[int | None, list[dict]] = {keep: [] for keep in args.keep}
    for _ in range(args.repeats):
        for keep in args.keep:  # in turn, so load from other work falls on every setting alike
            runs[keep].append(measured(keep))
    rows = []
    for keep, results in runs.items():
        walls = [r["wall"] for r in results]
        rows.append({"num_to_keep": str(keep), "sweep wall s (median)": statistics.median(walls),
                     "min-max s": f"{min(walls):.1f}-{max(walls):.1f}",
                     "snapshots (forced)": f"{results[0]['snapshots']} ({results[0]['forced']})",
                     "driver s in snapshots (median)": statistics.median(r["seconds"] for r in results),
                     "checkpoints kept": results[0]["kept"]})
    notes = [f"sweep: `python sweeps/full_grid.py {' '.join(SWEEP)}` (8 trials x 5 tasks = 40 task checkpoints), "
             f"local Ray and local --storage, {args.repeats} repeats per setting taken in turn",
             "snapshots: experiment-state snapshots the driver took (forced: by num_to_keep) in the first repeat; "
             "driver s: seconds the driver's loop spent inside them"]
    return rows, notes


def replays(args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Each num_to_keep, with and without Tune's per-trial files, replayed against --storage."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="cldst-checkpoint-cost-") as tmp:
        measure(1, Path(tmp))  # the real sweep whose trials the replay grows to --trials
        template = Path(tmp) / "ray" / "cost"
        for loggers in (True, False):
            replay = Replay(template, args.storage, args.trials, loggers)
            for keep in args.keep:
                seen = replay.run(keep, args.task_seconds, args.seconds)
                rows.append({"num_to_keep": str(keep), "Tune's trial files": "yes" if loggers else "no",
                             "reports handled (due)": f"{seen['reports']} ({seen['reports'] + seen['backlog']})",
                             "snapshots (forced)": f"{seen['snapshots']} ({seen['forced']})",
                             "driver s in snapshots": seen["seconds"],
                             "share of the driver's time %": 100 * seen["seconds"] / seen["window"],
                             "one snapshot's upload s": seen["upload"]})
    notes = [f"replay of the driver's side: {args.trials} trials, each reporting a task every {args.task_seconds:g} s "
             f"(a report every {args.task_seconds / args.trials:.2f} s), for {args.seconds:g} s per setting, "
             f"storage {args.storage}; the trials' folders and states are copies of those of one real sweep "
             f"(`python sweeps/full_grid.py {' '.join(SWEEP)}`, 8 trials)",
             "reports handled (due): task reports the driver got through, and those due by the end (more due "
             "than handled: the driver fell behind); driver s: in snapshots, and in deleting the checkpoints "
             "num_to_keep drops; one snapshot's upload: the whole experiment folder at the end, waited for"]
    return rows, notes


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", nargs="+", type=keep_value, default=[1, 2, None], help="num_to_keep values ('none')")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="num_to_keep 1 and None, 1 repeat: about a minute on a CPU")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to benchmarks/RESULTS.md")
    p.add_argument("--storage", help="replay the driver's side against this folder or URI (s3://bucket/prefix)")
    p.add_argument("--trials", type=int, default=144, help="with --storage: trials in the sweep (default 144)")
    p.add_argument("--task-seconds", type=float, default=60.0,
                   help="with --storage: seconds between two task reports of a trial (default 60)")
    p.add_argument("--seconds", type=float, default=60.0, help="with --storage: seconds per setting (default 60)")
    p.add_argument("--child", type=keep_value, help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.keep, args.repeats, args.seconds = [1, None], 1, 10.0
    if args.folder is not None:
        print(json.dumps(child(args.child, args.folder)), flush=True)
        return {}
    rows, notes = replays(args) if args.storage else sweeps(args)
    common.report("benchmarks.checkpoint_cost", sys.argv[1:] if argv is None else argv, args, torch.device("cpu"),
                  "Checkpoint cost" + (f" on {args.storage}" if args.storage else ""), [common.table(rows)], notes)
    return {"rows": rows}


if __name__ == "__main__":
    main()
