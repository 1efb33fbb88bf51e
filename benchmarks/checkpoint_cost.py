"""What keeping N task checkpoints per trial (`CheckpointConfig(num_to_keep=N)`) costs a sweep.

Ray Tune forces an experiment-state snapshot once a trial has saved num_to_keep checkpoints since the last
one (`_ExperimentCheckpointManager.on_trial_checkpoint`): it pickles the experiment state, waits for the
previous upload to the storage path to end, and starts a new one, all in the driver's loop. So num_to_keep=1
snapshots after every task report, 2 after every second, None only on Tune's own period (10 s and up).
Each setting runs the same quick-preset sweep, in its own process and local Ray, `--repeats` times, the
settings taken in turn; it reports the sweep's wall time, the snapshots taken, the driver's seconds inside
them, and the checkpoints left on disk. Needs Ray (unlike the other benchmarks).

  python -m benchmarks.checkpoint_cost              # num_to_keep 1, 2 and None, 3 repeats each
  python -m benchmarks.checkpoint_cost --quick      # num_to_keep 1 and None, once each
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def measure(keep: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="cldst-checkpoint-cost-") as tmp:
        done = subprocess.run([sys.executable, "-m", "benchmarks.checkpoint_cost", "--child", str(keep),
                               "--folder", tmp], cwd=REPO, capture_output=True, text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"sweep with num_to_keep={keep} failed: {done.stderr.strip().splitlines()[-3:]}")
    result = json.loads(lines[-1])
    if result["code"] != 0:
        raise RuntimeError(f"sweep with num_to_keep={keep} ended with code {result['code']}")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", nargs="+", type=keep_value, default=[1, 2, None], help="num_to_keep values ('none')")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="num_to_keep 1 and None, 1 repeat: about a minute on a CPU")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to benchmarks/RESULTS.md")
    p.add_argument("--child", type=keep_value, help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.keep, args.repeats = [1, None], 1
    if args.folder is not None:
        print(json.dumps(child(args.child, args.folder)), flush=True)
        return {}
    runs: dict[int | None, list[dict]] = {keep: [] for keep in args.keep}
    for _ in range(args.repeats):
        for keep in args.keep:  # in turn, so load from other work falls on every setting alike
            runs[keep].append(measure(keep))
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
    common.report("benchmarks.checkpoint_cost", sys.argv[1:] if argv is None else argv, args, torch.device("cpu"),
                  "Checkpoint cost", [common.table(rows)], notes)
    return {"rows": rows}


if __name__ == "__main__":
    main()
