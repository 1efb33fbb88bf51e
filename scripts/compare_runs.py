"""Seed-paired before/after comparison of `cldst train` runs, for docs/parity.md.

    python scripts/compare_runs.py BEFORE AFTER [--configs A B] [--head-task 1]

BEFORE and AFTER each hold one `cldst train --out` folder per run, named CONFIG_SEED (A_0, A_1, ...),
and optionally scripts/head_rows.py's records beside them (head_CONFIG_SEED.json). Prints Markdown:
final ACC per configuration before and after, the paired difference (analysis/stats.py: paired t-test,
95% CI, Holm over the configurations), and the density of one task's own classifier rows after each
of its updates, mean over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis import stats  # noqa: E402
from analysis.tables import markdown, mean_std  # noqa: E402
from cldst import results  # noqa: E402


def final_acc(folder: Path, config: str) -> pd.Series:
    """Final ACC by seed of the runs CONFIG_SEED under `folder` that finished."""
    acc = {}
    for run in sorted(folder.glob(f"{config}_*")):
        rows = results.load(run).runs.to_pylist()
        if rows and rows[0]["status"] == "ok":
            acc[int(run.name.rsplit("_", 1)[1])] = rows[0]["acc"]
    return pd.Series(acc, dtype=float).rename_axis("seed")


def head_rows(folder: Path, config: str, task: int) -> pd.DataFrame:
    """Mean over seeds of the task's own-row density and the other rows' active weights, per update."""
    records = [dict(r, seed=path.stem) for path in sorted(folder.glob(f"head_{config}_*.json"))
               for r in json.loads(path.read_text()) if r["task"] == task]
    if not records:
        return pd.DataFrame()
    return pd.DataFrame(records).groupby("update")[["own_density", "other_rows_active"]].mean()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--configs", nargs="+", default=["A", "B"])
    parser.add_argument("--head-task", type=int, default=1)
    args = parser.parse_args(argv)
    rows = []
    for config in args.configs:
        before, after = final_acc(args.before, config), final_acc(args.after, config)
        row = stats.compare(after, before)
        rows.append({"config": config, "before": mean_std(before.mean(), before.std()),
                     "after": mean_std(after.mean(), after.std()), **row,
                     "per seed (before / after)": ", ".join(f"{before.get(s, float('nan')):.2f} / "
                                                            f"{after.get(s, float('nan')):.2f}" for s in after.index)})
    table = stats.family(pd.DataFrame(rows), "configurations")
    shown = table.assign(**{"after - before": [f"{d:+.2f} ({lo:.2f} to {hi:.2f})" for d, lo, hi in
                                               zip(table["diff"], table["ci_low"], table["ci_high"], strict=True)]})
    print(markdown(shown[["config", "before", "after", "n_pairs", "after - before", "p_value", "p_adjusted",
                          "verdict", "per seed (before / after)"]].round(4)))
    for config in args.configs:
        before, after = head_rows(args.before, config, args.head_task), head_rows(args.after, config, args.head_task)
        if before.empty or after.empty:
            continue
        joined = before.add_suffix(" before").join(after.add_suffix(" after")).reset_index()
        print(f"\n{config}, task {args.head_task}: own classifier rows' density and other rows' active weights "
              f"after each update (mean over seeds)\n")
        print(markdown(joined.round(4)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
