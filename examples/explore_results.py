"""Explore a sweep's results with pandas: load them, print a table, draw a figure.

Run it whole, `python examples/explore_results.py results/quick [OUT]` (the table and the figure land in OUT,
default <results>/explore), or cell by cell in an editor that runs `# %%` cells (VS Code, PyCharm, Jupytext).
It reads the Parquet only, through `analysis.load`: no torch, no Ray.
"""

# %% Where the results are, and where this writes
import sys
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

import analysis

RESULTS = Path(sys.argv[1] if len(sys.argv) > 1 else "results/quick")
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else RESULTS / "explore"
OUT.mkdir(parents=True, exist_ok=True)

# %% Load: one row per trial (`runs`), one row per task a trial learned (`tasks`)
runs = analysis.load(RESULTS)
tasks = analysis.load(RESULTS, kind="tasks")
print(f"{len(runs)} trials:", ", ".join(f"{n} {status}" for status, n in runs["status"].value_counts().items()))

# %% A table: final ACC and BWT of each configuration, mean and std over seeds, finished trials only
CONFIG = ["split", "density", "sparse_init", "growth"]
ok = analysis.ok_runs(runs)
table = (ok.groupby(CONFIG)
         .agg(acc_mean=("acc", "mean"), acc_std=("acc", "std"), bwt_mean=("bwt", "mean"), seeds=("seed", "nunique"))
         .round(2))
print(table.to_string())
table.to_csv(OUT / "acc_by_config.csv")

# %% A figure: average accuracy over the tasks learned, one line per configuration (mean over seeds)
curves = (tasks.merge(ok[["experiment", "trial_id"]])  # finished trials only
          .groupby([*CONFIG, "task"])["avg_acc"].mean().reset_index())
fig = Figure(figsize=(9, 4), layout="constrained")
ax = fig.subplots()
for (split, density, init, growth), rows in curves.groupby(CONFIG):
    ax.plot(rows["task"] + 1, rows["avg_acc"], marker="o", label=f"{split} d={density:g} {init}/{growth}")
ax.set(xlabel="tasks learned", ylabel="average accuracy (%)", title=f"{RESULTS.name}: average accuracy over tasks")
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
fig.legend(loc="outside right upper", fontsize="small")
fig.savefig(OUT / "avg_acc_over_tasks.png", dpi=120)
print(f"wrote {OUT / 'acc_by_config.csv'} and {OUT / 'avg_acc_over_tasks.png'}")
