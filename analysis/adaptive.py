"""Adaptive DST (sweeps/adaptive.py, population-based training): lineages, schedules and the honest comparison.

A PBT member may continue from another member's checkpoint; its tasks rows then name that member in
`parent_trial_id`. `lineage()` rebuilds, from the tasks rows alone, which member learned each task of the
model a member ended with, and so the settings each of its tasks trained with (`schedule()`).

The comparison, per adaptive experiment (one seed): the PBT members with the best final validation ACC,
against two static choices made on validation data among the grid runs (same data, net, epochs, split,
validation fraction and seed; settings within the values PBT explored) that the report also loaded:
(a) the configuration with the best final validation ACC, (b) first-task tuning: the configuration with
the best validation ACC after task 0, kept for every task. A tie at the top (digits' first task is often
100% on validation) counts as the mean of the tied runs: the expected result of picking one at random.
Test ACC is reported beside each choice, never used to make it. `comparisons()` pairs the methods by seed
(and capacity weights against each other); the report tests them as a family per adaptive setting (analysis/stats.py).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import stats
from analysis.data import Loaded, ok_runs
from analysis.figures import GROWTH_COLOURS, save
from analysis.findings import COLUMNS, CONTEXT, detectable, evidence
from analysis.tables import markdown
from cldst import lineage as lineage_of
from cldst.config import PER_TASK_FIELDS

SWEEP_FILE = "sweep.json"
SAME_RUN = ["benchmark", "net", "num_tasks", "classes_per_task", "epochs", "batch_size", "lr", "optimizer",
            "protocol", "val_fraction", "seed"]
CHOSEN = ["sparse_init", "growth", "density", "death_rate", "update_frequency"]
METHODS = ("PBT (best member)", "(a) best static, on validation", "(b) first-task tuning")


@dataclass(frozen=True)
class Adaptive:
    experiment: str
    spec: dict  # its sweep.json
    runs: pd.DataFrame  # its finished members
    tasks: pd.DataFrame  # its tasks rows

    @property
    def seed(self) -> int:
        return int(self.spec["fixed"]["seed"])

    @property
    def setting(self) -> str:
        """The experiment without its seed and capacity weight: what runs at several weights share."""
        fixed = {k: v for k, v in self.spec["fixed"].items() if k != "seed"}
        explored = "; ".join(f"{k} {'/'.join(map(str, v))}" for k, v in sorted(self.spec["choices"].items()))
        return ", ".join(f"{k} {v}" for k, v in sorted(fixed.items())) + f"; {explored}; population " \
            f"{self.spec['population']}"

    @property
    def label(self) -> str:
        """The experiment without its seed: what its seeds are a sample of."""
        return f"{self.setting}, capacity weight {self.spec['capacity_weight']:g}"


def experiments(loaded: Loaded) -> list[Adaptive]:
    """The experiments among `loaded` that sweeps/adaptive.py ran (their sweep.json says so)."""
    out = []
    for folder in loaded.experiment_dirs:
        try:
            spec = json.loads((folder / SWEEP_FILE).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(spec, dict) and spec.get("script") == "adaptive":
            mine = loaded.runs["experiment"] == folder.name
            out.append(Adaptive(folder.name, spec, ok_runs(loaded.runs[mine]),
                                loaded.tasks[loaded.tasks["experiment"] == folder.name]))
    return out


def static_part(loaded: Loaded) -> Loaded:
    """`loaded` without its adaptive experiments (all of it when nothing else was loaded): the grid tables
    pool runs by configuration, and a PBT member whose settings never changed would count as one more run."""
    names = {exp.experiment for exp in experiments(loaded)}
    if not names or loaded.runs["experiment"].isin(names).all():
        return loaded
    return Loaded(runs=loaded.runs[~loaded.runs["experiment"].isin(names)],
                  tasks=loaded.tasks[~loaded.tasks["experiment"].isin(names)],
                  experiment_dirs=[d for d in loaded.experiment_dirs if d.name not in names], skipped=loaded.skipped)


def lineage(tasks: pd.DataFrame, trial_id: str) -> pd.DataFrame:
    """The tasks rows of the model `trial_id` ended with, task 0 first, each from the member that learned
    that task for it (column `learned_by`). `tasks`: one experiment's tasks rows (Parquet alone)."""
    rows = lineage_of.by_trial(tasks.to_dict("records"))
    chain = pd.DataFrame(lineage_of.lineage(lambda trial: rows.get(trial, {}), trial_id))
    return chain.assign(learned_by=chain["trial_id"]) if not chain.empty else chain


def schedule(tasks: pd.DataFrame, trial_id: str) -> pd.DataFrame:
    """The settings each task of `trial_id`'s final model trained with, and who learned it."""
    return lineage(tasks, trial_id)[["task", *PER_TASK_FIELDS, "learned_by", "parent_trial_id"]]


def best_member(exp: Adaptive) -> pd.Series:
    """The finished member with the highest final validation ACC (ties: the lower trial id)."""
    return exp.runs.sort_values(["val_acc", "trial_id"], ascending=[False, True]).iloc[0]


def static_runs(loaded: Loaded, exp: Adaptive) -> pd.DataFrame:
    """Finished grid runs comparable to `exp`: the same run settings and seed, with settings PBT could choose."""
    adaptive = {e.experiment for e in experiments(loaded)}
    runs = ok_runs(loaded.runs[~loaded.runs["experiment"].isin(adaptive)])
    if exp.runs.empty or runs.empty:
        return runs.iloc[0:0]
    reference = exp.runs.iloc[0]
    same = pd.Series(True, index=runs.index)
    for column in SAME_RUN:
        same &= runs[column] == reference[column]
    for column in CHOSEN:
        same &= runs[column].isin(exp.spec["choices"][column])
    return runs[same]


def _tied_mean(runs: pd.DataFrame, score: pd.Series) -> tuple[float, float, int]:
    """(mean val ACC, mean test ACC, count) of the runs whose `score` ties for the top."""
    top = runs[np.isclose(score, score.max(), rtol=0, atol=1e-9)]
    return float(top["val_acc"].mean()), float(top["acc"].mean()), len(top)


def compare(loaded: Loaded) -> pd.DataFrame:
    """One row per adaptive experiment: the three methods' final validation and test ACC, and tasks trained."""
    rows = []
    for exp in experiments(loaded):
        if exp.runs.empty:
            continue
        best = best_member(exp)
        num_tasks = int(best["num_tasks"])
        update_frequency = exp.spec["choices"].get("update_frequency", [])
        row = {"experiment": exp.experiment, "label": exp.label, "setting": exp.setting,
               "capacity_weight": float(exp.spec["capacity_weight"]), "seed": exp.seed, "member": best["trial_id"],
               **{k: best[k] for k in CONTEXT if k != "update_frequency"},
               "update_frequency": update_frequency[0] if len(update_frequency) == 1 else None,
               "pbt_tasks": exp.spec["population"] * num_tasks}
        row["pbt_val"], row["pbt_acc"], row["pbt_tied"] = _tied_mean(exp.runs, exp.runs["val_acc"])
        static = static_runs(loaded, exp)
        if not static.empty:
            row["a_val"], row["a_acc"], row["a_tied"] = _tied_mean(static, static["val_acc"])
            first = loaded.tasks[loaded.tasks["task"] == 0].set_index(["experiment", "trial_id"])["val_avg_acc"]
            after_first = first.reindex(pd.MultiIndex.from_frame(static[["experiment", "trial_id"]])).to_numpy()
            row["b_val"], row["b_acc"], row["b_tied"] = _tied_mean(static, pd.Series(after_first, static.index))
            row["a_tasks"], row["b_tasks"] = len(static) * num_tasks, len(static) + num_tasks - 1
        rows.append(row)
    return pd.DataFrame(rows)


def summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per adaptive setting (its seeds pooled): each method's mean ± sample std of final val and test ACC."""
    out = []
    for label, seeds in comparison.groupby("label", sort=True):
        for method, prefix in zip(METHODS, ("pbt", "a", "b"), strict=True):
            if f"{prefix}_acc" not in seeds or seeds[f"{prefix}_acc"].isna().all():
                continue
            out.append({"setting": label, "method": method, "seeds": int(seeds[f"{prefix}_acc"].notna().sum()),
                        "tasks trained per seed": int(seeds[f"{prefix}_tasks"].max()),
                        "val ACC": seeds[f"{prefix}_val"].mean(), "val std": seeds[f"{prefix}_val"].std(),
                        "test ACC": seeds[f"{prefix}_acc"].mean(), "test std": seeds[f"{prefix}_acc"].std()})
    return pd.DataFrame(out)


def comparisons(comparison: pd.DataFrame) -> pd.DataFrame:
    """Seed-paired comparisons on test ACC (findings.COLUMNS, unadjusted; topic "adaptive", a - b) of a `compare`
    frame: per adaptive setting, PBT against (a) and against (b); per setting run at several capacity weights,
    each pair of weights."""
    rows = []
    for label, seeds in comparison.groupby("label", sort=True) if not comparison.empty else []:
        by_seed = seeds.set_index("seed")
        for method, prefix in zip(METHODS[1:], ("a", "b"), strict=True):
            if f"{prefix}_acc" in by_seed:
                rows.append({**_context(seeds, label), "a": METHODS[0], "b": method,
                             **stats.compare(by_seed["pbt_acc"], by_seed[f"{prefix}_acc"])})
    for setting, runs in comparison.groupby("setting", sort=True) if not comparison.empty else []:
        by_weight = {w: part.set_index("seed")["pbt_acc"] for w, part in runs.groupby("capacity_weight")}
        for low, high in itertools.combinations(sorted(by_weight), 2):
            rows.append({**_context(runs, setting), "a": f"PBT, capacity weight {high:g}",
                         "b": f"PBT, capacity weight {low:g}", **stats.compare(by_weight[high], by_weight[low])})
    return pd.DataFrame(rows).reindex(columns=[c for c in COLUMNS if c not in ("p_adjusted", "mde", "verdict",
                                                                            "family_size", "level")])


def _context(seeds: pd.DataFrame, panel: str) -> dict:
    """The findings.csv context of one adaptive comparison: no density or init of its own; its family is its
    adaptive setting (every capacity weight of it)."""
    return {**seeds.iloc[0][CONTEXT].to_dict(), "panel": panel, "topic": "adaptive", "sparse_init": "",
            "family": f"adaptive: {seeds.iloc[0]['setting']}"}


def verdict_lines(rows: pd.DataFrame) -> list[str]:
    """One line per adjusted adaptive comparison (`stats.family`, a family per adaptive setting)."""
    lines = []
    for _, row in rows.iterrows():
        if row["n_pairs"] == 0:
            continue
        line = f"{row['panel']}: {row['a']} - {row['b']} = {row['diff']:+.2f} test ACC points ({evidence(row)}): "
        if row["verdict"] == stats.REAL:
            line += f"real, {row['a']} {'better' if row['diff'] > 0 else 'worse'}"
        else:
            line += f"{row['verdict']}{detectable(row)}"
        lines.append(line)
    return lines


def settings_figure(exp: Adaptive, path: Path) -> Path | None:
    """Density per task of every finished member's final model (a line each, the best in black), coloured
    at each task by the growth criterion that task trained with."""
    if exp.runs.empty:
        return None
    best = best_member(exp)["trial_id"]
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    levels = np.unique(exp.tasks["density"].dropna())
    gap = float(np.diff(levels).min()) if len(levels) > 1 else 0.05
    for number, trial in enumerate(sorted(exp.runs["trial_id"])):
        chain = schedule(exp.tasks, trial)
        # members on the same density stay visible, within a third of the gap between density values
        jitter = (number / max(len(exp.runs) - 1, 1) - 0.5) * gap / 3
        ax.plot(chain["task"], chain["density"] + jitter, color="black" if trial == best else "0.75",
                lw=2 if trial == best else 0.8, zorder=3 if trial == best else 1)
        ax.scatter(chain["task"], chain["density"] + jitter, c=[GROWTH_COLOURS.get(g, "grey") for g in chain["growth"]],
                   s=22, zorder=4)
    for growth, colour in GROWTH_COLOURS.items():
        ax.scatter([], [], c=colour, label=growth)
    ax.legend(title="growth", fontsize=8)
    ax.set(xlabel="task", ylabel="density the task trained with",
           title=f"{exp.experiment}: settings per task of the final population (best member in black)")
    ax.title.set_fontsize(9)
    ax.set_xticks(sorted(exp.tasks["task"].unique()))
    return save(fig, path)


def sections(loaded: Loaded, out: Path, comparison: pd.DataFrame, verdicts: pd.DataFrame,
             progress: Callable[[str], None] = lambda _line: None) -> list[str]:
    """The report's adaptive section (empty when no adaptive experiment was loaded); `comparison`: `compare`'s
    frame, `verdicts`: the adjusted rows of `comparisons(comparison)`."""
    found = [exp for exp in experiments(loaded) if not exp.runs.empty]
    if not found:
        return []
    table = summary(comparison)
    lines = ["## Adaptive DST (population-based training)", "",
             "Members ranked after each task on validation ACC over the tasks so far (minus the capacity weight x "
             "capacity used, in %); the bottom quantile copies a top member's checkpoint and explores new settings. "
             "(a) and (b) are chosen among the grid runs loaded beside it, per seed, on validation ACC; test ACC is "
             "never used to choose. Tasks trained: PBT population x tasks; (a) every grid run; (b) each grid "
             "configuration's first task, then the kept one's remaining tasks.", ""]
    if not table.empty:
        lines += [markdown(table.round(2)), ""]
        lines += ["Seed-paired on test ACC (the same seed's choices; see Findings for the test and the correction):",
                  "", *[f"- {line}" for line in verdict_lines(verdicts)], ""]
    lines += ["Per seed:", "", markdown(comparison.drop(columns=["label", "setting", *CONTEXT]).round(2)), ""]
    for exp in found:
        best = best_member(exp)
        chain = schedule(exp.tasks, best["trial_id"])
        lines += [f"### {exp.experiment}: schedule of the best member {best['trial_id']} (final validation ACC "
                  f"{best['val_acc']:.2f}, test ACC {best['acc']:.2f}, sparse_init {best['sparse_init']})", "",
                  markdown(chain.round(4)), ""]
        png = settings_figure(exp, out / "figures" / f"adaptive_settings_{exp.experiment}.png")
        if png:
            progress(f"wrote {png.relative_to(out)}")
            lines += [f"![population settings per task](figures/{png.name})", ""]
    return ["\n".join(lines).rstrip()]
