"""Sequential looks for the grid's claims (`sweeps/full_grid.py --looks 2 4 8 --min-effect 1.0`): seeds are added
only while some primary claim of a split is still open.

At look k (every configuration has run the look's first n_k seeds), each split's primary claims (analysis/claims.py:
ERK against uniform and each growth pair, as main effects) are tested on final validation ACC (test ACC only where
the runs hold no validation split, which the sweep and the report then say) at the look's share of
alpha, alpha n_k / sum(n), split equally over the split's m claims. A claim is **decided** when
- it is `real`: its paired test rejects "no difference" at level alpha_k / m; or
- it is **smaller than `min_effect` points**: two one-sided tests reject "|difference| >= min_effect" at the same
  level (its 1 - 2 alpha_k / m interval lies inside +-min_effect).
A decided claim keeps its verdict; the grid stops once every claim is decided, or after the last look. For each
claim at most one of "no difference" and "|difference| >= min_effect" is true, so a union bound over the looks
and the claims keeps the chance that any decision is wrong at most alpha: the report's verdicts for such a sweep
are these, read from the same runs with the same split of alpha.

The stop is an early stop, so it reads validation ACC, as every choice in cldst does; the report's Findings on
test ACC come beside it, from every seed that ran.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis import claims, race_report, racing, stats
from analysis.data import Loaded, accuracy_step
from analysis.tables import WITHIN_PANEL

METRIC_NAMES = {"val_acc": "validation ACC", "acc": "test ACC (the runs held no validation split)"}


@dataclass(frozen=True)
class Look:
    seeds: int
    level: float  # this look's share of alpha
    decided: dict[str, str]  # claim -> verdict, for the claims decided at this look


@dataclass(frozen=True)
class SequentialLooks:
    plan: tuple[int, ...]
    looks: list[Look]  # the looks taken
    claims: list[str]  # every primary claim of the last look taken
    finished: bool
    next_seeds: int  # seeds every configuration must have run for the next look
    configurations: int

    @property
    def verdicts(self) -> dict[str, str]:
        return {claim: verdict for look in self.looks for claim, verdict in look.decided.items()}

    @property
    def open(self) -> list[str]:
        return [claim for claim in self.claims if claim not in self.verdicts]

    @property
    def contenders(self) -> list[int]:  # the grid never drops a configuration: every claim averages over them
        return list(range(self.configurations))


def frame(plan: race_report.Plan, values: np.ndarray, rows: dict[tuple[int, int], list[float]]) -> pd.DataFrame:
    """One row per run with a result: its configuration's fields, seed, final ACC of the metric the looks decide on
    (`values`, in the column "acc" that analysis/claims.py reads) and final accuracy row."""
    return pd.DataFrame([{**plan.configurations[c], "seed": plan.seeds[s], "acc": values[c, s],
                          "acc_matrix": [rows.get((c, s))] if rows.get((c, s)) is not None else None}
                         for c, s in zip(*np.nonzero(~np.isnan(values)), strict=True)])


def primary(runs: pd.DataFrame, level: float, min_effect: float) -> dict[str, str]:
    """Every primary claim of every split among `runs`, with its verdict at `level` ("" while open)."""
    out: dict[str, str] = {}
    split_fields = [c for c in runs.columns if c not in (*WITHIN_PANEL, "seed", "acc", "acc_matrix")]
    as_text = runs[split_fields].astype(str)  # a field may hold a list (a per-task schedule): group on its text
    for _key, split in runs.groupby([as_text[field] for field in split_fields], sort=True, dropna=False):
        found = claims.split_claims(split, "acc", accuracy_step(split["acc_matrix"]))
        found = found[found["parent"] < 0] if not found.empty else found
        for _, row in found.iterrows():
            name = _name(row, split.iloc[0], split_fields)
            each = level / len(found)
            out[name] = _verdict(row, each, min_effect)
    return out


def sequential(runs: pd.DataFrame, ended: np.ndarray, seeds: list[int], looks: list[int],
               min_effect: float) -> SequentialLooks:
    """Replay the looks on what has run: `ended` (configurations, seeds) True where a run ended (with a result or
    without); a look is taken once every configuration has ended its seeds. A pure function of the data, so the
    sweep and the report make the same decisions."""
    taken: list[Look] = []
    decided: set[str] = set()
    names: list[str] = []
    for n, level in zip(looks, racing.look_shares(looks), strict=True):
        if n > ended.shape[1] or not ended[:, :n].all():
            break
        verdicts = primary(runs[runs["seed"].isin(seeds[:n])], float(level), min_effect) if len(runs) else {}
        names = list(verdicts)
        new = {claim: verdict for claim, verdict in verdicts.items() if verdict and claim not in decided}
        decided |= set(new)
        taken.append(Look(n, float(level), new))
        if names and all(claim in decided for claim in names):
            break
    done = bool(taken) and ((names and all(c in decided for c in names)) or taken[-1].seeds == looks[-1])
    next_seeds = looks[len(taken)] if not done and len(taken) < len(looks) else (taken[-1].seeds if taken else 0)
    return SequentialLooks(tuple(looks), taken, names, bool(done), next_seeds, ended.shape[0])


def look_lines(result: SequentialLooks, fixed_runs: int, configurations: int) -> list[str]:
    """One line per look taken: the claims it decided, those still open, the runs used against the fixed design's."""
    lines = []
    for k, look in enumerate(result.looks, start=1):
        decided = "; ".join(f"{claim}: {verdict}" for claim, verdict in look.decided.items()) or "none"
        left = len(result.claims) - sum(len(earlier.decided) for earlier in result.looks[:k])
        lines.append(f"look {k}/{len(result.plan)} at {look.seeds} seeds (alpha {look.level:.3g}): decided {decided}; "
                     f"{left} open; runs {configurations * look.seeds} of the fixed design's {fixed_runs}")
    return lines


def sections(loaded: Loaded) -> list[str]:
    """The report's section for each grid run with --looks: its looks, each claim's verdict, the runs saved."""
    out = []
    for folder in loaded.experiment_dirs:
        path = Path(folder) / race_report.SWEEP_FILE
        spec = json.loads(path.read_text()) if path.is_file() else {}
        if spec.get("script") != "full_grid" or "looks" not in spec:
            continue
        plan = race_report.Plan.from_sweep(spec)
        mine = loaded.runs[loaded.runs["experiment"] == plan.experiment].to_dict("records")
        found = race_report.outcomes(mine, plan, value=spec["metric"])
        result = sequential(frame(plan, found.val, found.rows), ~np.isnan(found.val) | found.failed, plan.seeds,
                            plan.looks, spec["min_effect"])
        fixed = len(plan.configurations) * plan.looks[-1]
        lines = [f"## Sequential looks: {plan.experiment}", "",
                 f"{len(plan.configurations)} configurations, looks at {', '.join(map(str, plan.looks))} seeds; each "
                 f"split's primary claims tested on final {METRIC_NAMES[spec['metric']]} at each look's share of "
                 f"alpha {stats.ALPHA:g}; a "
                 f"claim is decided when `{stats.REAL}` or smaller than {spec['min_effect']:g} points "
                 "(docs/guides/analysis.md). These verdicts are the ones the sweep stopped on.", ""]
        lines += [f"- {line}" for line in look_lines(result, fixed, len(plan.configurations))] or ["- no look yet"]
        lines += ["", "| claim | verdict |", "|---|---|"]
        lines += [f"| {claim} | {result.verdicts.get(claim, 'open')} |" for claim in result.claims]
        out.append("\n".join(lines))
    return out


def _name(row: pd.Series, split: pd.Series, fields: list[str]) -> str:
    where = f"tasks {split['num_tasks']}" if "num_tasks" in fields else ""
    pair = " - ".join(sorted((row["a"], row["b"])))
    what = f"{row['topic']}: {pair}"
    return f"{where}, {what}" if where else what


def _verdict(row: pd.Series, level: float, min_effect: float) -> str:
    if row["n_pairs"] < 2:
        return ""
    if row["p_value"] < level:
        return stats.REAL
    if row["tie"] or not row["sd"] > 0:
        return ""
    margin = scipy_stats.t.ppf(1 - level, row["n_pairs"] - 1) * row["sd"] / np.sqrt(row["n_pairs"])
    return f"smaller than {min_effect:g} points" if abs(row["diff"]) + margin < min_effect else ""
