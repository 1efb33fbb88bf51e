"""The report's figures, drawn with matplotlib's object API (no pyplot, no display needed).

Each function writes one PNG and returns its path, or None when there is nothing to draw
(e.g. no finished run yet). Colour says the growth criterion and line style the sparse
init, the same in every figure, so a reader can compare them without the text.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.best import Best
from analysis.data import ok_runs
from analysis.tables import panel_keys, panel_title, panels, table_keys

GROWTH_COLOURS = {"random": "tab:blue", "unfired": "tab:orange", "momentum": "tab:green", "gradient": "tab:red"}
INIT_STYLES = {"ERK": ("-", "o"), "uniform": ("--", "s")}
PANEL_SIZE = (4.8, 3.4)
CURVE_KEYS = ["density", "sparse_init", "growth"]  # a panel per density, a curve per init x growth
VARIES = "varies"  # a run's setting that changed over its tasks (a schedule, a PBT member)
FRACTIONS = {"task_density", "capacity_used", "reused_fraction", "fired_fraction"}


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def wrap(title: str, width: int = 48) -> str:
    return "\n".join(textwrap.wrap(title, width))


def style(init: str, growth: str) -> dict:
    """Line keywords for one init x growth family (unknown names still get a distinct look)."""
    line, marker = INIT_STYLES.get(init, (":", "^"))
    return {"color": GROWTH_COLOURS.get(growth, "tab:gray"), "linestyle": line, "marker": marker,
            "label": f"{init} / {growth}"}


def acc_vs_density(table: pd.DataFrame, path: Path) -> Path | None:
    """Final ACC (mean ± std over seeds) against density, a line per init x growth, a panel per split."""
    drawn = [(title, rows[rows["acc_mean"].notna()]) for title, _slug, rows in panels(table)]
    drawn = [(title, rows) for title, rows in drawn if not rows.empty]
    if not drawn:
        return None
    fig = Figure(figsize=(PANEL_SIZE[0] * len(drawn), PANEL_SIZE[1] + 0.6), layout="constrained")
    for ax, (title, rows) in zip(fig.subplots(1, len(drawn), squeeze=False)[0], drawn, strict=True):
        for (init, growth), line in rows.groupby(["sparse_init", "growth"], sort=True):
            line = line.sort_values("density")
            ax.errorbar(line["density"], line["acc_mean"], yerr=line["acc_std"].fillna(0), capsize=3,
                        **style(init, growth))
        ax.set(title=wrap(title), xlabel="density (fraction of weights kept)", ylabel="final ACC (%)")
        densities = sorted(rows["density"].unique())
        if densities[-1] >= 4 * densities[0]:  # densities usually double: even spacing on a log axis
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(densities, labels=[f"{d:g}" for d in densities])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a PBT member whose growth varied over its tasks draws no line
            ax.legend(fontsize=8, title="init / growth", title_fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    fig.suptitle("Final accuracy vs density (error bars: std over seeds)")
    return save(fig, path)


def accuracy_matrices(bests: list[Best], path: Path) -> Path | None:
    """Heatmap of R[i, j] (accuracy on task j after learning task i) for the best run of each split."""
    if not bests:
        return None
    fig = Figure(figsize=(PANEL_SIZE[0] * len(bests), PANEL_SIZE[0] + 0.4), layout="constrained")
    axes = fig.subplots(1, len(bests), squeeze=False)[0]
    for ax, best in zip(axes, bests, strict=True):
        rows = best.run["acc_matrix"]
        matrix = np.full((len(rows), len(rows)), np.nan)
        for i, row in enumerate(rows):
            matrix[i, : len(row)] = row
        image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0, vmax=100, cmap="viridis")
        if len(rows) <= 12:
            for (i, j), value in np.ndenumerate(matrix):
                if not np.isnan(value):
                    ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8,
                            color="black" if value > 60 else "white")
        run = best.run
        ax.set(title=wrap(f"{best.panel}: best run {run['sparse_init']} / {run['growth']} / density "
                          f"{run['density']:g} / seed {run['seed']}, ACC {run['acc']:.2f}", width=38),
               xlabel="evaluated on task j", ylabel="after learning task i",
               xticks=range(len(rows)), yticks=range(len(rows)))
    fig.colorbar(image, ax=list(axes), label="accuracy (%)", shrink=0.8)
    return save(fig, path)


def over_tasks(tasks: pd.DataFrame, runs: pd.DataFrame, table: pd.DataFrame, metrics: dict[str, str],
               title: str, path: Path) -> Path | None:
    """Per-task metrics of finished runs (mean over seeds) against tasks learned.

    A row of panels per (split, metric) and a panel per density of that split; a curve per
    init x growth. Unfinished trials are left out: their curves stop early and would bend the mean.
    Fractions share the 0..1 axis, so splits and densities compare at a glance.
    """
    keys = panel_keys(table_keys(table))
    # Panels and curves follow each run's own settings, taken from its runs row: a tasks row holds its task's
    # value, which changes over a schedule or a PBT member's tasks. VARIES where the run's setting did.
    by_run = list(dict.fromkeys([*keys, *CURVE_KEYS]))
    tasks = tasks.drop(columns=by_run, errors="ignore").merge(
        ok_runs(runs)[["experiment", "trial_id", *by_run]], on=["experiment", "trial_id"])
    if tasks.empty:
        return None
    tasks[CURVE_KEYS] = tasks[CURVE_KEYS].astype(object).where(tasks[CURVE_KEYS].notna(), VARIES)
    groups = list(tasks.groupby(keys, dropna=False, sort=True))
    n_cols = max(rows["density"].nunique() for _values, rows in groups)
    n_rows = len(groups) * len(metrics)
    fig = Figure(figsize=(PANEL_SIZE[0] * n_cols, PANEL_SIZE[1] * n_rows + 0.6), layout="constrained")
    grid = fig.subplots(n_rows, n_cols, squeeze=False)
    for g, (values, split_rows) in enumerate(groups):
        name = panel_title(dict(zip(keys, values, strict=True)))
        given = set(split_rows["density"])
        densities = sorted(given - {VARIES}) + [VARIES] * (VARIES in given)
        for m, (metric, label) in enumerate(metrics.items()):
            row = grid[g * len(metrics) + m]
            for ax, density in zip(row, densities, strict=False):
                _curves(ax, split_rows[split_rows["density"] == density], metric)
                shown = density if density == VARIES else f"{density:g}"
                ax.set(title=wrap(f"{name} · density {shown}"), xlabel="tasks learned", ylabel=label)
                if metric in FRACTIONS:
                    ax.set_ylim(0, 1.02)
            for ax in row[len(densities):]:
                ax.set_axis_off()
    fig.legend(handles=_legend(tasks), loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle(title)
    return save(fig, path)


def _curves(ax: Axes, rows: pd.DataFrame, metric: str) -> None:
    for (init, growth), family in rows.groupby(["sparse_init", "growth"], sort=True):
        curve = family.groupby("task")[metric].mean()
        ax.plot(curve.index + 1, curve.values, **style(init, growth))
    ax.set_xticks(sorted(rows["task"].unique() + 1))
    ax.grid(alpha=0.3)


def _legend(tasks: pd.DataFrame) -> list[Line2D]:
    families = tasks[["sparse_init", "growth"]].drop_duplicates().sort_values(["sparse_init", "growth"])
    return [Line2D([], [], **style(init, growth)) for init, growth in families.itertuples(index=False)]


def avg_acc_over_tasks(tasks: pd.DataFrame, runs: pd.DataFrame, table: pd.DataFrame, path: Path) -> Path | None:
    return over_tasks(tasks, runs, table, {"avg_acc": "average ACC on tasks seen (%)"},
                      "Average accuracy over the tasks learned so far (mean over seeds)", path)


def capacity_over_tasks(tasks: pd.DataFrame, runs: pd.DataFrame, table: pd.DataFrame, path: Path) -> Path | None:
    return over_tasks(tasks, runs, table,
                      {"capacity_used": "capacity used (fraction)", "reused_fraction": "reused fraction"},
                      "How the backbone fills up: weights owned by any task, and share of each new mask "
                      "reused from earlier tasks", path)


def comparisons(rows: pd.DataFrame, path: Path) -> Path | None:
    """Forest plot of the report's comparisons (adjusted `findings.COLUMNS` rows): the mean seed-paired
    difference a - b with its 95% CI, the panels stacked in the report's order, each as tall as its
    comparisons (a tall figure reads as a list; the paper grid's 234 per benchmark stay legible).
    Filled: real; hollow: not established; cross: not tested (one seed, no interval)."""
    rows = rows[rows["n_pairs"] > 0]
    if rows.empty:
        return None
    groups = list(rows.groupby("panel", sort=False))
    heights = [len(part) + 4 for _panel, part in groups]  # + room for the title and the axis
    fig = Figure(figsize=(7.5, 0.2 * sum(heights) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (panel, part) in zip(axes, groups, strict=True):
        _forest(ax, part.iloc[::-1])  # first comparison at the top
        ax.set_title(wrap(panel, 90), fontsize=8)
    fig.suptitle("Seed-paired differences in final ACC (points), 95% CI; filled = real within its family", fontsize=10)
    return save(fig, path)


def _forest(ax: Axes, rows: pd.DataFrame) -> None:
    """One line per comparison, its label "density init: a - b" (the parts that apply)."""
    y = np.arange(len(rows))
    real = (rows["verdict"] == "real").to_numpy()
    tested = rows["p_value"].notna().to_numpy()
    spread = rows["ci_low"].notna().to_numpy()  # a tested comparison without spread has no interval
    diff = rows["diff"].to_numpy()
    ax.errorbar(diff[spread], y[spread], xerr=[diff[spread] - rows["ci_low"].to_numpy()[spread],
                                               rows["ci_high"].to_numpy()[spread] - diff[spread]],
                fmt="none", ecolor="0.35", elinewidth=1, capsize=2)
    ax.scatter(diff[real], y[real], color="tab:red", zorder=3, s=18, label="real")
    ax.scatter(diff[tested & ~real], y[tested & ~real], facecolors="white", edgecolors="0.2", zorder=3, s=18,
               label="not established")
    ax.scatter(diff[~tested], y[~tested], marker="x", color="0.5", zorder=3, s=18, label="not tested")
    labels = []
    for row in rows.itertuples():
        where = " ".join(str(part) for part in ("" if pd.isna(row.density) else f"{row.density:g}",
                                                row.sparse_init) if part)
        labels.append(f"{where + ': ' if where else ''}{row.a} - {row.b}")
    ax.set_yticks(y, labels=labels, fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.axvline(0, color="black", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("a - b (ACC points)", fontsize=8)
