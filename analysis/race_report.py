"""A race experiment (sweeps/race.py) read back from its results: the race replayed, and its report section.

A race's `sweep.json` holds its configurations (resolved RunConfig fields, without the seed), the seeds in the
order the looks take them, and the looks. Each runs row belongs to the configuration its `config_json` names, on
its seed; a row a restarted driver wrote for a trial it lost (error "lost: ...", sweeps/search_state.py) is left
out, since the race ran that configuration and seed again. Replaying the race on these rows (analysis/racing.py)
gives the decisions the sweep made: the race ranks on validation ACC; test ACC is shown beside, never used.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import racing, tables
from analysis.data import Loaded, accuracy_step

SWEEP_FILE = "sweep.json"
LOST_PREFIX = "lost:"  # the error of a runs row written for a trial a driver lost (sweeps.search_state.LOST)


@dataclass(frozen=True)
class Plan:
    experiment: str
    configurations: list[dict]  # resolved RunConfig fields, without the seed
    seeds: list[int]  # seed of each seed index: a look at n seeds runs seeds[:n]
    looks: list[int]

    @classmethod
    def from_sweep(cls, spec: dict) -> Plan:
        return cls(spec["experiment"], spec["configurations"], spec["seeds"], spec["looks"])


@dataclass(frozen=True)
class Outcomes:
    val: np.ndarray  # (configurations, seeds) final validation ACC; NaN: no result (yet)
    test: np.ndarray  # (configurations, seeds) final test ACC, for reading beside
    failed: np.ndarray  # (configurations, seeds) True: the run ended without a result
    # (configuration, seed index) -> the run's final accuracy row (%, per task) of the metric `val` holds
    rows: dict[tuple[int, int], list[float]] = field(default_factory=dict)

    @property
    def ended(self) -> int:
        return int((~np.isnan(self.val) | self.failed).sum())

    @property
    def step(self) -> float:
        """One evaluation image in ACC points, from the final rows (analysis.data.accuracy_step); 0 if unknown."""
        return accuracy_step([[row] for row in self.rows.values()])


def key(config: dict) -> str:
    """A configuration's identity: its RunConfig fields but the seed, as canonical JSON."""
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)


def outcomes(rows: Iterable[dict], plan: Plan, value: str = "val_acc") -> Outcomes:
    """The plan's table of results from runs rows (dicts with config_json, seed, status, error, val_acc, acc); `val`
    holds the `value` column (the grid's looks decide on test ACC, "acc")."""
    index = {key(config): c for c, config in enumerate(plan.configurations)}
    column = {seed: s for s, seed in enumerate(plan.seeds)}
    shape = (len(plan.configurations), len(plan.seeds))
    val, test, failed = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, dtype=bool)
    final_rows = {}
    matrix = f"{value}_matrix"  # val_acc_matrix, acc_matrix: the matrix whose mean last row is `value`
    for row in rows:
        c, s = index.get(key(json.loads(row["config_json"]))), column.get(row["seed"])
        lost = isinstance(row["error"], str) and row["error"].startswith(LOST_PREFIX)
        if c is None or s is None or lost:
            continue
        if row["status"] == "ok" and pd.notna(row[value]):
            val[c, s], test[c, s], failed[c, s] = row[value], row["acc"], False
            if row.get(matrix) is not None:
                final_rows[(c, s)] = list(row[matrix][-1])
        elif row["status"] in ("error", "stopped") and np.isnan(val[c, s]):
            failed[c, s] = True
    return Outcomes(val, test, failed, final_rows)


def replay(rows: Iterable[dict], plan: Plan) -> tuple[racing.Race, Outcomes]:
    found = outcomes(rows, plan)
    return racing.race(found.val, plan.looks, found.failed, step=found.step), found


def names(configurations: list[dict]) -> list[str]:
    """Each configuration by the fields in which the configurations differ, in alphabetical order (as sweep.json
    holds them): "density=0.1 growth=momentum"."""
    varying = sorted(k for k in configurations[0] if len({json.dumps(c.get(k)) for c in configurations}) > 1)
    return [" ".join(f"{k}={c[k]}" for k in varying) or "the one configuration" for c in configurations]


def final_rows(result: racing.Race, found: Outcomes, labels: list[str]) -> pd.DataFrame:
    """The configurations in contention, best mean validation ACC first, with the paired 95% interval of how far
    each is behind the leader, and the mean test ACC beside."""
    rows = racing.standings(found.val, result, found.step)
    frame = pd.DataFrame([{
        "configuration": labels[r["configuration"]], "seeds": r["n"], "val ACC": round(r["mean"], 2),
        "behind the leader": round(r["behind"], 2), "95% interval": "–" if np.isnan(r["ci_low"]) else
        f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
        "test ACC": round(float(np.nanmean(found.test[r["configuration"], :r["n"]])), 2)} for r in rows])
    return frame


def outcome_line(result: racing.Race, found: Outcomes, labels: list[str]) -> str:
    fixed = len(labels) * result.plan[-1]
    runs = (f"{found.ended} runs of the fixed design's {fixed} ({len(labels)} x {result.plan[-1]} seeds), "
            f"{fixed - found.ended} saved")
    if result.declared is not None:
        return f"declared best: {labels[result.declared]}; {runs}"
    if not result.finished:
        return f"unfinished: {len(result.contenders)} configurations in the race; {runs}"
    return f"no configuration beat every other: {len(result.contenders)} in contention after the last look; {runs}"


def look_lines(result: racing.Race, labels: list[str]) -> list[str]:
    """One line per look taken: who was in the race, who left, and against whom."""
    lines = []
    for k, look in enumerate(result.looks, start=1):
        gone = "; ".join(f"{labels[c]} (a run failed)" if by is None else f"{labels[c]} (beaten by {labels[by]})"
                         for c, by in look.left.items()) or "none"
        lines.append(f"look {k}/{len(result.plan)} at {look.seeds} seeds (level {look.level:.2g}): "
                     f"{len(look.contenders)} in the race, {len(look.left)} left: {gone}")
    return lines


def sections(loaded: Loaded) -> list[str]:
    """The report's section for each race experiment among `loaded`: its looks, who left at which look and against
    whom, and the final set (or the declared best)."""
    out = []
    for folder in loaded.experiment_dirs:
        spec_path = Path(folder) / SWEEP_FILE
        spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
        if spec.get("script") != "race":
            continue
        plan = Plan.from_sweep(spec)
        rows = loaded.runs[loaded.runs["experiment"] == plan.experiment].to_dict("records")
        result, found = replay(rows, plan)
        labels = names(plan.configurations)
        lines = [f"## Race: {plan.experiment}", "",
                 f"{len(labels)} configurations raced on final validation ACC (test ACC beside, never used), looks "
                 f"at {', '.join(map(str, plan.looks))} seeds (seeds {', '.join(map(str, plan.seeds))}). "
                 f"A configuration left when another still in the race beat it in a one-sided seed-paired test at "
                 f"the look's level (alpha {racing.ALPHA:g} over the looks and the {len(labels) - 1} comparisons a "
                 f"best configuration can lose): a true best leaves at most {racing.ALPHA:.0%} of the time.", "",
                 f"**{outcome_line(result, found, labels)}**", ""]
        lines += [f"- {line}" for line in look_lines(result, labels)] or ["- no look taken yet"]
        table = final_rows(result, found, labels)
        if not table.empty:
            lines += ["", "In contention at the end, best mean validation ACC first:" if result.declared is None
                      else "The declared best:", "", tables.markdown(table)]
        out.append("\n".join(lines))
    return out
