"""Parquet results with known values for the analysis tests, written with cldst's own writer.

`GRID` is the truth the tests assert against: final ACC and BWT per seed for each
(split, density, init, growth). Around it the grid experiment holds one failed trial, one
early-stopped trial (both carry an ACC that must stay out of the means) and one trial still
running (tasks rows only). `flip=True` swaps ERK <-> uniform and random <-> momentum, so every
finding must come out the other way round.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from cldst.config import RunConfig
from cldst.results import common_columns, write_part

START = datetime(2024, 5, 1, tzinfo=timezone.utc)
FLIP = {"ERK": "uniform", "uniform": "ERK", "random": "momentum", "momentum": "random"}

# (num_tasks, density, sparse_init, growth) -> [(ACC, BWT) for seeds 0, 1, ...]
GRID = {
    (5, 0.1, "ERK", "random"): [(80.0, -0.5), (82.0, -1.0), (84.0, -1.5)],  # 82 ± 2
    (5, 0.1, "ERK", "momentum"): [(85.0, 0.0), (86.0, 0.0), (87.0, 0.0)],  # 86 ± 1
    (5, 0.1, "uniform", "random"): [(70.0, 0.0), (71.0, 0.0), (72.0, 0.0)],  # 71 ± 1
    (5, 0.1, "uniform", "momentum"): [(74.0, 0.0), (75.0, 0.0), (76.0, 0.0)],  # 75 ± 1
    (5, 0.2, "ERK", "random"): [(90.0, 0.0), (92.0, 0.0)],  # 91 ± 1.414
    (5, 0.2, "ERK", "momentum"): [(91.5, 0.0), (92.5, 0.0)],  # 92 ± 0.707
    (5, 0.2, "uniform", "random"): [(88.0, 0.0), (92.0, 0.0)],  # 90 ± 2.828
    (5, 0.2, "uniform", "momentum"): [(91.0, 0.0), (93.0, 0.0)],  # 92 ± 1.414
    (2, 0.1, "ERK", "random"): [(95.0, 0.0)],  # one seed: spread unknown
    (2, 0.1, "uniform", "random"): [(93.0, 0.0)],
}


def config(num_tasks: int = 5, density: float = 0.1, sparse_init: str = "ERK", growth: str = "random",
           seed: int = 0, benchmark: str = "digits", val_fraction: float = 0.0, protocol: str = "clean") -> dict:
    return RunConfig(benchmark=benchmark, num_tasks=num_tasks, density=density, sparse_init=sparse_init,
                     growth=growth, seed=seed, val_fraction=val_fraction, protocol=protocol).resolve().to_dict()


def accuracy_rows(acc: float, bwt: float, tasks: int) -> list[list[float]]:
    """A lower-triangular accuracy matrix whose final ACC is `acc` and BWT is `bwt`."""
    rows = [[acc - bwt] * (i + 1) for i in range(tasks - 1)]
    return rows + [[acc] * tasks]


class Writer:
    """Writes trials of one experiment, numbering them and spacing their timestamps."""

    def __init__(self, root: Path, experiment: str) -> None:
        self.dir = Path(root) / experiment
        self.experiment = experiment
        self.count = 0

    def trial(self, cfg: dict, acc: float | None, bwt: float = 0.0, status: str | None = "ok",
              tasks_done: int | None = None, val: float | None = None) -> str:
        """One trial; status None means still running (tasks rows, no runs row); `val`: its final validation
        ACC (validation rows as the test rows, BWT 0), None without a validation split."""
        trial_id = f"{self.experiment}_{self.count:03d}"
        self.count += 1
        total = cfg["num_tasks"]
        done = total if tasks_done is None else tasks_done
        matrix = accuracy_rows(acc if acc is not None else 50.0, bwt, total)[:done]
        val_matrix = accuracy_rows(val, 0.0, total)[:done] if val is not None else [None] * done
        common = common_columns(cfg, self.experiment, trial_id, node="node-1")
        density = [RunConfig.from_dict(cfg).task_value("density", t) for t in range(total)]  # a schedule too
        stamp = START + timedelta(minutes=10 * self.count)
        tasks = [dict(common, task=t, acc=matrix[t], fwt_acc=[10.0] * (total - t - 1),
                      avg_acc=sum(matrix[t]) / (t + 1), bwt=0.0 if t == 0 else bwt, val_acc=val_matrix[t],
                      val_avg_acc=val_matrix[t][0] if val is not None else None, parent_trial_id=None, discarded=False,
                      ranked_among=None,
                      task_density=density[t], capacity_used=min(1.0, density[t] * (t + 1) * 0.9),
                      reused_fraction=0.0 if t == 0 else 0.1 * t, fired_fraction=0.5,
                      train_seconds=1.0, images_per_second=1000.0, created_at=stamp + timedelta(seconds=t))
                 for t in range(done)]
        write_part(self.dir, "tasks", trial_id, tasks)
        if status is not None:
            run = dict(common, status=status, error="RuntimeError: boom" if status == "error" else None,
                       failure="own" if status == "error" else None,
                       error_type="RuntimeError" if status == "error" else None, infra_retries=0, tasks_done=done,
                       acc_matrix=matrix, acc=acc, bwt=bwt, fwt=10.0,
                       val_acc=val if val is not None and status == "ok" else None,
                       val_acc_matrix=val_matrix if val is not None else None,
                       incremental_acc=[acc] * total if acc is not None else None,
                       total_seconds=float(done), created_at=stamp + timedelta(minutes=1))
            write_part(self.dir, "runs", trial_id, [run])
        return trial_id


def build_grid(root: Path, flip: bool = False) -> Path:
    """The grid experiment under `root` (see the module docstring); returns its folder."""
    swap = (lambda name: FLIP[name]) if flip else (lambda name: name)
    out = Writer(root, "grid")
    for (tasks, density, init, growth), values in GRID.items():
        for seed, (acc, bwt) in enumerate(values):
            out.trial(config(tasks, density, swap(init), swap(growth), seed), acc, bwt)
    out.trial(config(5, 0.1, swap("ERK"), swap("random"), seed=3), acc=5.0, status="error", tasks_done=2)
    out.trial(config(5, 0.1, swap("uniform"), swap("momentum"), seed=3), acc=10.0, status="stopped",
              tasks_done=3)
    out.trial(config(5, 0.2, swap("ERK"), swap("momentum"), seed=2), acc=None, status=None, tasks_done=2)
    return out.dir


# A search experiment in created_at order: (density, growth, ACC); best so far 60, 70, 70, 80, 80.
SEARCH = [(0.1, "random", 60.0), (0.2, "random", 70.0), (0.1, "momentum", 65.0), (0.2, "momentum", 80.0),
          (0.05, "random", 50.0)]


def build_search(root: Path, study: bool = True) -> Path:
    """An Optuna search experiment on `synthetic`, with its `optuna.db` when `study` is set."""
    out = Writer(root, "search")
    for density, growth, acc in SEARCH:
        out.trial(config(5, density, "ERK", growth, benchmark="synthetic"), acc)
    out.trial(config(5, 0.3, "ERK", "random", benchmark="synthetic"), acc=None, status="error", tasks_done=1)
    if study:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        db = optuna.create_study(study_name="search", storage=f"sqlite:///{out.dir / 'optuna.db'}",
                                 direction="maximize")
        space = {"density": optuna.distributions.FloatDistribution(0.05, 0.3),
                 "growth": optuna.distributions.CategoricalDistribution(["random", "momentum"])}
        for density, growth, acc in SEARCH:
            db.add_trial(optuna.trial.create_trial(params={"density": density, "growth": growth},
                                                   distributions=space, value=acc))
    return out.dir
