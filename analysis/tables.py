"""Mean ± std over seeds per configuration, and the paper's comparison layout.

Only finished runs (status "ok") enter a mean; every trial is counted in its group's
n_ok / n_error / n_stopped / n_running columns. std is the sample std (ddof=1) and is NaN,
shown as "–", for a single run: one seed says nothing about the spread. Test ACC is the headline
(the paper's protocol); final validation ACC sits beside it where runs held a validation split.
Runs evaluated under different protocols never share a mean: the protocol is a key of every table.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from analysis import stats
from analysis.data import STATUSES, ok_runs, settings

# The grouping; a setting outside it joins the key only where it varies among runs that
# share these, so runs of different configurations never share a mean.
MAIN_KEYS = ["benchmark", "net", "protocol", "num_tasks", "classes_per_task", "update_frequency", "density",
             "sparse_init", "growth"]
# What varies inside one comparison table (rows init x growth, columns density).
WITHIN_PANEL = ["density", "sparse_init", "growth"]
METRICS = ["acc", "bwt", "fwt", "val_acc"]  # val_acc: NaN for runs without a validation split
LABELS = {"benchmark": "benchmark", "net": "net", "protocol": "protocol", "split": "tasks x classes",
          "update_frequency": "update every",
          "density": "density", "sparse_init": "init", "growth": "growth", "n_ok": "runs ok",
          "n_error": "error", "n_stopped": "stopped", "n_running": "running"}


def group_keys(runs: pd.DataFrame) -> list[str]:
    """MAIN_KEYS plus every other setting that varies among runs sharing the main keys."""
    grouped = runs.groupby(MAIN_KEYS, dropna=False)
    extras = [c for c in settings(runs) if c not in MAIN_KEYS and grouped[c].nunique(dropna=False).max() > 1]
    return panel_keys(MAIN_KEYS) + extras + WITHIN_PANEL


def panel_keys(keys: list[str]) -> list[str]:
    return [k for k in keys if k not in WITHIN_PANEL]


def table_keys(table: pd.DataFrame) -> list[str]:
    """The group keys of a `summary` table: its columns before the counts, the split label aside."""
    return [c for c in table.columns[: table.columns.get_loc("n_ok")] if c != "split"]


def summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its keys, trial counts by status, mean/std of each metric, and the 95%
    t-interval of the mean test ACC over seeds (acc_ci_low, acc_ci_high; NaN for one run)."""
    keys = group_keys(runs)
    ok = runs.index.isin(ok_runs(runs).index)
    work = runs[keys].copy()
    for metric in METRICS:
        work[metric] = runs[metric].where(ok)
    counts = {f"n_{status}": runs["status"] == status for status in STATUSES}
    counts["n_ok"] = ok  # an "ok" run without a final ACC could not enter the mean: do not count it there
    work = work.assign(**counts)
    aggs = {name: (name, "sum") for name in counts}
    for metric in METRICS:
        aggs[f"{metric}_mean"] = (metric, "mean")
        aggs[f"{metric}_std"] = (metric, "std")
    table = work.groupby(keys, dropna=False, sort=True).agg(**aggs).reset_index()
    table.insert(keys.index("classes_per_task") + 1, "split",
                 table["num_tasks"].astype(str) + "x" + table["classes_per_task"].astype(str))
    table["acc_ci_low"], table["acc_ci_high"] = stats.t_interval(table["acc_mean"], table["acc_std"], table["n_ok"])
    return table


def panels(table: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """Split a summary into (title, file-name slug, rows) per comparison panel (one task split each)."""
    keys = panel_keys(table_keys(table))
    out = []
    for values, rows in table.groupby(keys, dropna=False, sort=True):
        named = dict(zip(keys, values, strict=True))
        out.append((panel_title(named), panel_slug(named), rows))
    return out


def panel_title(named: dict) -> str:
    parts = [f"{named['benchmark']} · {named['net']} · {named['num_tasks']} tasks x {named['classes_per_task']} "
             f"classes · update every {named['update_frequency']} · protocol {named['protocol']}"]
    parts += [f"{key}={value}" for key, value in named.items() if key not in MAIN_KEYS]
    return " · ".join(parts)


def panel_slug(named: dict) -> str:
    parts = [named["benchmark"], named["net"], f"{named['num_tasks']}x{named['classes_per_task']}",
             f"uf{named['update_frequency']}", named["protocol"]]
    parts += [f"{key}-{value}" for key, value in named.items() if key not in MAIN_KEYS]
    return "_".join(str(p).replace("/", "-").replace(" ", "") for p in parts)


def comparison(rows: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout for one panel, numeric: rows init x growth, per density ACC mean, std and n (and
    validation ACC mean and std where present)."""
    values = ["acc_mean", "acc_std", "n_ok"] + (["val_acc_mean", "val_acc_std"] if has_validation(rows) else [])
    wide = rows.pivot_table(index=["sparse_init", "growth"], columns="density", values=values, dropna=False,
                            aggfunc="first")
    wide = wide.swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    wide.columns = [f"{stat}@{density:g}" for density, stat in wide.columns]
    return wide.reset_index()


def comparison_markdown(rows: pd.DataFrame) -> str:
    """The same layout for reading: one "mean ± std (n=k)" cell per density, "; val mean ± std" added inside
    the brackets where the runs held a validation split."""
    vals = [f"; val {mean_std(m, s)}" if pd.notna(m) else "" for m, s in
            zip(rows["val_acc_mean"], rows["val_acc_std"], strict=True)]
    cells = rows.assign(cell=[f"{mean_std(m, s)} (n={n}{val})" for m, s, n, val in
                              zip(rows["acc_mean"], rows["acc_std"], rows["n_ok"], vals, strict=True)])
    wide = cells.pivot(index=["sparse_init", "growth"], columns="density", values="cell").fillna("–")
    wide.columns = [f"density {d:g}" for d in wide.columns]
    return markdown(wide.reset_index().rename(columns=LABELS))


def summary_markdown(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["num_tasks", "classes_per_task"]
                       + [c for c in table.columns if c.endswith(("_mean", "_std", "_ci_low", "_ci_high"))])
    for metric in METRICS if has_validation(table) else METRICS[:-1]:
        shown[metric.upper().replace("VAL_ACC", "val ACC")] = [
            mean_std(m, s) for m, s in zip(table[f"{metric}_mean"], table[f"{metric}_std"], strict=True)]
    return markdown(shown.rename(columns=LABELS))


def has_validation(table: pd.DataFrame) -> bool:
    """Whether any configuration of a `summary` table has a final validation ACC."""
    return bool(table["val_acc_mean"].notna().any())


def write_tables(table: pd.DataFrame, folder: Path) -> list[Path]:
    """summary.{csv,md} and comparison_<panel>.{csv,md} under `folder`; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "summary.csv", folder / "summary.md"]
    table.to_csv(written[0], index=False)
    written[1].write_text(summary_markdown(table) + "\n")
    for title, slug, rows in panels(table):
        csv, md = folder / f"comparison_{slug}.csv", folder / f"comparison_{slug}.md"
        comparison(rows).to_csv(csv, index=False)
        md.write_text(f"**{title}**: final ACC (%)\n\n{comparison_markdown(rows)}\n")
        written += [csv, md]
    return written


def number(value: float) -> str:
    """Accuracy points as printed everywhere: two decimals, "–" when missing."""
    return "–" if pd.isna(value) else f"{value:.2f}"


def mean_std(mean: float, std: float) -> str:
    return "–" if pd.isna(mean) else f"{number(mean)} ± {number(std)}"


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; floats as %g, missing values as "–"."""
    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return f"{value:g}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
