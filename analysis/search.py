"""Results of an Optuna search (sweeps/search.py): history and parameter importances.

A search experiment is one whose folder holds `optuna.db`, the study's SQLite storage, the
study named after the experiment. The history comes from the Parquet runs (per trial, in the order
trials finished, the value the search selected on: final validation ACC, or final test ACC for a
search run with --select-on-test, without a validation split, or from before there was one).
Importances come from Optuna when it is importable and can evaluate the study; otherwise from a
plain fallback computed from the Parquet, labelled as such, so the rest of the report never depends on Optuna.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from analysis.data import Loaded, ok_runs, settings
from analysis.figures import save

STUDY_FILE, SWEEP_FILE = "optuna.db", "sweep.json"
FALLBACK = "fallback: spread (max - min) of the mean {name} across each parameter's values, from the Parquet runs"
VALUE_NAMES = {"val_acc": "final validation ACC", "acc": "final test ACC"}


@dataclass(frozen=True)
class Search:
    experiment: str
    study: Path  # the Optuna SQLite storage
    runs: pd.DataFrame  # this experiment's trials, in the order they finished
    metric: str = "val_acc"  # the runs column the search selected on: val_acc, or acc (test)
    why_test: str = ""  # why it selected on test ACC, for the reader


def searches(loaded: Loaded) -> list[Search]:
    """The experiments among `loaded` that come from an Optuna search."""
    out = []
    for folder in loaded.experiment_dirs:
        if (folder / STUDY_FILE).is_file():
            runs = loaded.runs[loaded.runs["experiment"] == folder.name].sort_values("created_at")
            out.append(Search(folder.name, folder / STUDY_FILE, runs.reset_index(drop=True),
                              *selected_on(folder, runs)))
    return out


def selected_on(folder: Path, runs: pd.DataFrame) -> tuple[str, str]:
    """(runs column, why it is test ACC) of what the search selected on: as its sweep.json records it, else
    validation ACC when its finished runs have one (a search that recorded nothing and has no validation
    ACC selected on test ACC: it predates the validation split)."""
    try:
        recorded = json.loads((folder / SWEEP_FILE).read_text()).get("metric")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded == "avg_acc":
        return "acc", "--select-on-test"
    if recorded is None and ok_runs(runs)["val_acc"].isna().all():
        return "acc", "no validation split"
    return "val_acc", ""


def history(search: Search) -> pd.DataFrame:
    """One row per ended trial in finishing order: its final test ACC and the value the search selected on
    (both NaN unless ok), and the best of that value so far."""
    ended = search.runs[search.runs["status"] != "running"]
    finished = ended.index.isin(ok_runs(ended).index)
    acc, value = ended["acc"].where(finished), ended[search.metric].where(finished)
    return pd.DataFrame({"order": range(1, len(ended) + 1), "trial_id": ended["trial_id"].to_numpy(),
                         "status": ended["status"].to_numpy(), "acc": acc.to_numpy(), "value": value.to_numpy(),
                         "best_so_far": value.cummax().ffill().to_numpy()})


@dataclass(frozen=True)
class Importances:
    values: pd.Series  # importance per parameter, largest first
    by_optuna: bool
    source: str  # how they were computed, for the reader


def importances(search: Search) -> Importances:
    """Optuna's parameter importances of the study, or the labelled fallback when that fails."""
    try:
        import optuna

        study = optuna.load_study(study_name=search.experiment, storage=f"sqlite:///{search.study}")
        found = optuna.importance.get_param_importances(study)
        if not found:
            raise ValueError("the study has no parameter to rank")
        return Importances(pd.Series(found, dtype=float).sort_values(ascending=False), True,
                           "Optuna get_param_importances on the study (default evaluator)")
    # Optuna is optional and a study may be unreadable mid-sweep: any failure means the fallback.
    except Exception as err:
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        return Importances(spread_importances(search.runs, search.metric), False,
                           f"{FALLBACK.format(name=VALUE_NAMES[search.metric])} (Optuna not used: {reason})")


def spread_importances(runs: pd.DataFrame, metric: str = "val_acc") -> pd.Series:
    """Per setting that varies among the ok runs: max - min of the mean `metric` over its values."""
    finished = ok_runs(runs)
    if finished.empty:
        return pd.Series(dtype=float)
    spread = {}
    for name in settings(finished):
        means = finished.groupby(name, dropna=False)[metric].mean()
        if len(means) > 1:
            spread[name] = means.max() - means.min()
    return pd.Series(spread, dtype=float).sort_values(ascending=False)


def history_figure(search: Search, path: Path) -> Path | None:
    """The selected-on value per trial in finishing order, failed trials marked, with the best-so-far line."""
    steps = history(search)
    if steps["value"].isna().all():
        return None
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ok = steps[steps["value"].notna()]
    ax.plot(ok["order"], ok["value"], "o", color="tab:blue", label="trial (status ok)")
    ax.step(steps["order"], steps["best_so_far"], where="post", color="tab:orange", label="best so far")
    failed = steps[steps["value"].isna()]
    if not failed.empty:
        ax.plot(failed["order"], [ok["value"].min()] * len(failed), "x", color="tab:red",
                label="error / stopped (no final value)")
    ax.set(title=f"Search history of {search.experiment}: {len(ok)} of {len(steps)} trials finished ok",
           xlabel="trial (in finishing order)", ylabel=f"{VALUE_NAMES[search.metric]} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def importance_figure(search: Search, found: Importances, path: Path) -> Path | None:
    """Horizontal bars, most important parameter on top; the title says how they were computed."""
    if found.values.empty:
        return None
    fig = Figure(figsize=(7, 1.2 + 0.45 * len(found.values)), layout="constrained")
    ax = fig.subplots()
    ordered = found.values.iloc[::-1]
    ax.barh(list(ordered.index), ordered.to_numpy(), color="tab:green")
    ax.set(xlabel="importance (Optuna, sums to 1)" if found.by_optuna
           else f"spread of the mean {VALUE_NAMES[search.metric]} (points)",
           title=f"Parameter importances of {search.experiment}\n"
                 + ("Optuna get_param_importances" if found.by_optuna else "fallback from Parquet (Optuna not used)"))
    ax.grid(alpha=0.3, axis="x")
    return save(fig, path)
