"""The paper's questions asked of the data, and the sentences that answer them.

Per benchmark split (a comparison panel), the claims of analysis/claims.py: ERK against uniform as a main
effect over the growth x density cells both ran, each pair of growth criteria as a main effect over the init x
density cells both ran, and, gated below each main effect, its cells. Each split is one family
(analysis/stats.py, `claims.decide`);
`sentences()` turns the adjusted rows into findings that carry their numbers. Nothing here knows which answer to
expect.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from analysis import claims, stats
from analysis.data import accuracy_step, matching, ok_runs
from analysis.tables import number, panel_keys, panel_title, panels, table_keys

# findings.csv: the context of each comparison, then the comparison (docs/guides/analysis.md)
CONTEXT = ["benchmark", "net", "protocol", "num_tasks", "classes_per_task", "update_frequency"]
COLUMNS = [*CONTEXT, "topic", "density", "sparse_init", "a", "b", "n_pairs", "diff", "ci_low", "ci_high",
           "p_value", "p_adjusted", "mde", "verdict", "panel", "n_run_pairs", "n_unmatched", "sd", "family",
           "family_size", "level", "seeds_needed", "tie", "reversed_cells", "heterogeneity_p", "growth", "settings"]
# Differences below this print as 0.00: BWT at 0 is the isolation promise.
TIE = 0.005
ONE_POINT = 1.0  # the difference the per-split power statement asks about, in ACC points
# How a factor's levels are named in a sentence: a winner ("momentum growth"), one of them, several of them.
NAMES = {"growth": ("growth", "growth criterion", "growth criteria"),
         "prune": ("pruning", "prune criterion", "prune criteria"),
         "death_rate": ("death rate", "death rate", "death rates"),
         "optimizer": ("optimizer", "optimizer", "optimizers")}


@dataclass(frozen=True)
class Finding:
    panel: str  # title of the comparison panel (the split) the finding is about
    topic: str  # "init", "init cell", "growth", "growth cell", "family", "power" or "bwt"
    verdict: str  # stats.REAL / NOT_ESTABLISHED / NOT_TESTED; for bwt "none" / "forgetting"; "" otherwise
    text: str
    winner: str | None = None


def comparisons(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Every panel's claims (COLUMNS), each panel adjusted as its own family, named by the panel's title; then,
    for a compared setting a sweep crossed (claims.COMPARED), a family per split of the runs that differ only in
    it, named by that split's title and the setting."""
    keys = panel_keys(table_keys(table))
    finished = ok_runs(runs)
    out = []
    for title, _slug, panel in panels(table):
        mine = matching(finished, panel.iloc[0][keys])
        rows = claims.split_claims(mine, "acc", accuracy_step(mine["acc_matrix"])) if len(mine) else pd.DataFrame()
        if not rows.empty:
            out.append(claims.decide(rows, title).assign(panel=title, settings=split_settings(panel.iloc[0], keys),
                                                         **{k: panel.iloc[0][k] for k in CONTEXT}))
    for question, title, split in compared_splits(finished, keys):
        rows = claims.split_claims(split, "acc", accuracy_step(split["acc_matrix"]), (question,))
        if not rows.empty:
            held = [k for k in keys if k != question.factor]
            out.append(claims.decide(rows, title).assign(panel=title, settings=split_settings(split.iloc[0], held),
                                                         **split.iloc[0][CONTEXT].to_dict()))
    return pd.concat(out, ignore_index=True).reindex(columns=COLUMNS) if out else pd.DataFrame(columns=COLUMNS)


def split_settings(run: pd.Series, keys: list[str]) -> str:
    """The split's settings beyond CONTEXT (a crossed lr, a prune criterion, ...) as JSON, for findings.csv."""
    named = {k: run[k] for k in keys if k not in CONTEXT}
    return json.dumps({k: None if pd.isna(v) else v.item() if hasattr(v, "item") else v for k, v in named.items()},
                      sort_keys=True)


def compared_splits(finished: pd.DataFrame, keys: list[str]) -> list[tuple[claims.Question, str, pd.DataFrame]]:
    """For each compared setting (claims.COMPARED) that is a panel key, the splits of runs that differ only in it
    and hold two of its levels or more: (its question, the family's title, the split's runs)."""
    out = []
    for question in claims.COMPARED:
        if question.factor not in keys:  # not crossed in these runs
            continue
        others = [k for k in keys if k != question.factor]
        for values, split in finished.groupby(others, dropna=False, sort=True):
            if split[question.factor].nunique() >= 2:
                title = f"{panel_title(dict(zip(others, values, strict=True)))} · {question.factor} compared"
                out.append((question, title, split))
    return out


def sentences(rows: pd.DataFrame, table: pd.DataFrame, runs: pd.DataFrame) -> list[Finding]:
    """The findings of every panel, in panel order, from its adjusted rows (`comparisons`)."""
    out: list[Finding] = []
    keys = panel_keys(table_keys(table))
    finished = ok_runs(runs)
    for title, _slug, panel in panels(table):
        mine = rows[rows["panel"] == title]
        split_runs = matching(finished, panel.iloc[0][keys])
        if not mine.empty:
            out.append(_family_finding(title, mine))
        init_cells = mine[mine["topic"] == claims.INIT_CELL]
        out += [_init_finding(title, row, init_cells[(init_cells["a"] == row["a"]) & (init_cells["b"] == row["b"])])
                for _, row in mine[mine["topic"] == claims.INIT].iterrows()]
        main = mine[mine["topic"] == claims.GROWTH]
        if not main.empty:
            out.append(_growth_finding(title, main, split_runs.groupby("growth")["acc"].mean()))
        cells = mine[mine["topic"].isin([claims.INIT_CELL, claims.GROWTH_CELL]) & (mine["verdict"] == stats.REAL)]
        out += [_cell_finding(title, row) for _, row in cells.iterrows()]
        out += _power_finding(title, mine)
        out += _bwt_finding(title, split_runs["bwt"].dropna())
    for question, title, split in compared_splits(finished, keys):
        mine = rows[rows["panel"] == title]
        if mine.empty:
            continue
        main = mine[mine["topic"] == question.topic]
        out += [_family_finding(title, mine),
                _growth_finding(title, main, split.groupby(question.factor)["acc"].mean(), question.factor)]
        out += [_cell_finding(title, row) for _, row in mine[(mine["topic"] == question.cell_topic)
                                                            & (mine["verdict"] == stats.REAL)].iterrows()]
    return out


def evidence(row: pd.Series) -> str:
    """"95% CI 2.33 to 3.35, 10 seeds (40 run pairs), adjusted p < 0.001" for one adjusted row."""
    if row["n_pairs"] == 0:
        return "no seed run by both, so no test"
    seeds = f"{int(row['n_pairs'])} seed{'s' if row['n_pairs'] != 1 else ''}"
    if row["n_run_pairs"] != row["n_pairs"]:
        seeds += f" ({int(row['n_run_pairs'])} run pairs)"
    if row["n_unmatched"]:
        seeds += f"; {int(row['n_unmatched'])} run(s) without a pair left out"
    if row["verdict"] == stats.NOT_TESTED:
        return f"{seeds}: not tested"
    p = row["p_adjusted"]
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    if row["tie"]:
        return (f"{seeds}, spread below one test image: a tie of counts, so the exact sign-flip test, adjusted "
                f"{shown}")
    return f"95% CI {row['ci_low']:.2f} to {row['ci_high']:.2f}, {seeds}, adjusted {shown}"


def detectable(row: pd.Series) -> str:
    """Why a claim that is not real stays open, told apart from "no effect": its interval excludes every
    difference of ONE_POINT or more, or its seeds are too few for a difference of the size seen (the seeds that
    would find it with 80% power, and the difference these seeds would find: estimates from the spread seen)."""
    if pd.isna(row["mde"]) or pd.isna(row["ci_low"]):
        return ""
    df = f"{int(row['n_pairs']) - 1} degree{'s' if row['n_pairs'] != 2 else ''} of freedom"
    if -ONE_POINT < row["ci_low"] and row["ci_high"] < ONE_POINT:
        return f"; its 95% CI excludes any difference of {ONE_POINT:g} point or more"
    needed = row["seeds_needed"]
    needed = f"about {int(needed)} seeds" if not pd.isna(needed) else f"more than {stats.MAX_SEEDS} seeds"
    found = ("no difference on the 0-100 scale" if row["mde"] > 100 else
             f"a difference of about {row['mde']:.2f} points")
    return (f"; too few seeds to tell: a difference of {abs(row['diff']):.2f} points needs {needed} at this family's "
            f"level, and these seeds would find {found} (80% power; spread estimated with {df})")


def _open(row: pd.Series) -> str:
    """"cannot be told apart" only where the interval rules out a point; else "not established with n seeds"."""
    if not pd.isna(row["ci_low"]) and -ONE_POINT < row["ci_low"] and row["ci_high"] < ONE_POINT:
        return "cannot be told apart"
    return f"are not told apart with {int(row['n_pairs'])} seeds"


def _untested(row: pd.Series) -> str:
    return f"not tested ({int(row['n_pairs'])} seed{'s' if row['n_pairs'] != 1 else ''})"


def _family_finding(title: str, rows: pd.DataFrame) -> Finding:
    counts = rows.loc[rows["p_value"].notna(), "topic"].value_counts()
    if counts.empty:
        return Finding(title, "family", "", f"No claim of this split is tested yet: {_untested(rows.iloc[0])}.")
    questions = [q for q in (*claims.QUESTIONS, *claims.COMPARED) if q.topic in set(rows["topic"])]
    parts = [f"{counts.get(q.topic, 0)} {q.topic} main effect(s)" for q in questions]
    cells = [f"{counts[q.cell_topic]} {q.cell_topic}(s)" for q in questions if counts.get(q.cell_topic, 0)]
    if cells:
        parts.append(f"{' and '.join(cells)}, each tested only once its main effect is real")
    text = (f"This split is one family of {int(rows['family_size'].iloc[0])} tested claims ({', '.join(parts)}); "
            f"its familywise error rate is {stats.ALPHA:g}.")
    return Finding(title, "family", "", text)


def _init_finding(title: str, row: pd.Series, cells: pd.DataFrame) -> Finding:
    """ERK against uniform over the split's cells, with each density's difference beside it."""
    where = "Over this split's cells"
    if row["n_pairs"] == 0:
        return Finding(title, claims.INIT, row["verdict"], f"{row['a']} and {row['b']} initialisation were never run "
                       f"with the same seed, growth criterion and density: no comparison.")
    shown = ", ".join(f"{c['density']:g} {c['diff']:+.2f}" for _, c in cells.iterrows())
    per_density = f"; by density (point estimates): {shown}" if not cells.empty else ""
    if row["verdict"] == stats.NOT_TESTED:
        return Finding(title, claims.INIT, row["verdict"], f"{where}, {row['a']} against {row['b']} initialisation is "
                       f"{_untested(row)}: {row['a']} - {row['b']} = {row['diff']:+.2f} points{per_density}.")
    if row["verdict"] == stats.REAL:
        text = (f"{where}, {row['a']} initialisation beats {row['b']} by {row['diff']:.2f} points ({evidence(row)})"
                f"{per_density}{_disagreements(row.to_frame().T)}.")
        return Finding(title, claims.INIT, row["verdict"], text, row["a"])
    text = (f"{where}, {row['a']} and {row['b']} initialisation {_open(row)}: {row['a']} - {row['b']} = "
            f"{row['diff']:+.2f} points ({evidence(row)}){detectable(row)}{per_density}"
            f"{_disagreements(row.to_frame().T)}.")
    return Finding(title, claims.INIT, row["verdict"], text)


def _growth_finding(title: str, rows: pd.DataFrame, means: pd.Series, factor: str = "growth") -> Finding:
    """Main effects of growth (or another compared factor) over the split's cells. The leader is the level with
    the highest mean ACC among those no other level beats for real (on paired seeds); it wins only when it beats
    every other for real. Otherwise the finding names the set that cannot be told apart from it, and those
    behind it for real. A main effect whose cells disagree with it says so."""
    winner, one, several = NAMES[factor]
    means = means[means.index.isin(set(rows["a"]) | set(rows["b"]))]
    if (rows["verdict"] == stats.NOT_TESTED).all():
        ranked = ", ".join(f"{g} {means[g]:.2f}" for g in means.sort_values(ascending=False).index)
        return Finding(title, factor, stats.NOT_TESTED, f"{several.capitalize()} over this split's cells ({ranked}) "
                       f"are {_untested(rows.iloc[0])}.")
    real = rows[rows["verdict"] == stats.REAL]
    undominated = means.drop(index=[g for g in real["b"] if g in means.index])
    leader = (undominated if not undominated.empty else means).idxmax()
    against = rows[(rows["a"] == leader) | (rows["b"] == leader)]
    beaten = against[(against["verdict"] == stats.REAL) & (against["a"] == leader)]
    if len(beaten) == len(means) - 1:
        text = f"Over this split's cells, {leader} {winner} wins ({number(means[leader])} mean final ACC): " + \
               "; ".join(f"ahead of {row['b']} by {row['diff']:.2f} points ({evidence(row)})"
                         for _, row in beaten.sort_values("diff").iterrows())
        return Finding(title, factor, stats.REAL, text + _disagreements(rows) + ".", leader)
    behind = set(beaten["b"])
    untold = [g for g in means.sort_values(ascending=False).index if g not in behind]
    closest = against[against["verdict"] != stats.REAL].sort_values("p_value", na_position="last").iloc[0]
    ranked = ", ".join(f"{g} {means[g]:.2f}" for g in untold)
    text = (f"Over this split's cells, no {one} wins: {ranked} {_open(closest)} (closest call "
            f"{closest['a']} - {closest['b']} = {closest['diff']:+.2f} points, {evidence(closest)}"
            f"{detectable(closest)})")
    if behind:
        text += f"; behind {leader} for real: " + "; ".join(
            f"{row['b']} by {row['diff']:.2f} points ({evidence(row)})" for _, row in beaten.iterrows())
    return Finding(title, factor, closest["verdict"], text + _disagreements(rows) + ".")


def _disagreements(rows: pd.DataFrame) -> str:
    """Where a main effect's cells may disagree with it: cells whose interval lies on the other side of 0, and
    cells that differ (Friedman p < ALPHA). Both are unadjusted cautions, not claims: a cell's verdict is its
    gated test's."""
    notes = []
    for _, row in rows.iterrows():
        if isinstance(row["reversed_cells"], str) and row["reversed_cells"]:
            notes.append(f"{row['a']} - {row['b']} has its unadjusted 95% CI on the other side of 0 in "
                         f"{row['reversed_cells']}")
        elif row["heterogeneity_p"] < stats.ALPHA:
            notes.append(f"{row['a']} - {row['b']} differs between cells (unadjusted Friedman p = "
                         f"{row['heterogeneity_p']:.3f})")
    return "; but " + "; ".join(notes) + ": the average may hide a reversal" if notes else ""


def _cell_finding(title: str, row: pd.Series) -> Finding:
    if row["topic"] == claims.INIT_CELL:
        text = (f"At density {row['density']:g}, {row['a']} initialisation beats {row['b']} by {row['diff']:.2f} "
                f"points ({evidence(row)}).")
    elif row["topic"] == claims.GROWTH_CELL:
        text = (f"With {row['sparse_init']} initialisation at density {row['density']:g}, {row['a']} growth beats "
                f"{row['b']} by {row['diff']:.2f} points ({evidence(row)}).")
    else:  # a compared factor's cell: one init x growth x density
        factor = row["topic"].removesuffix(" cell")
        text = (f"With {row['sparse_init']} initialisation and {row['growth']} growth at density {row['density']:g}, "
                f"{row['a']} {NAMES[factor][0]} beats {row['b']} by {row['diff']:.2f} points ({evidence(row)}).")
    return Finding(title, row["topic"], stats.REAL, text, row["a"])


def _power_finding(title: str, rows: pd.DataFrame) -> list[Finding]:
    """Per primary topic, how many seeds this family's correction needs to find a 1-point difference, from the
    root mean square of the claims' paired spreads: an estimate, and ties of counts (no spread) left out."""
    parts = []
    for topic in (claims.INIT, claims.GROWTH):
        mine = rows[(rows["topic"] == topic) & (rows["n_pairs"] >= 2) & ~rows["tie"].astype(bool)]
        if mine.empty:
            continue
        spread = math.sqrt((mine["sd"] ** 2).mean())
        needed = stats.seeds_needed(ONE_POINT, spread, float(mine["level"].min()))
        count = f"about {needed} seeds" if needed else f"more than {stats.MAX_SEEDS} seeds"
        parts.append(f"{topic} claims: {count} (paired spread {spread:.2f} points, estimated from "
                     f"{int(mine['n_pairs'].max())} seeds)")
    if not parts:
        return []
    return [Finding(title, "power", "", f"To find a {ONE_POINT:g}-point difference with 80% power in this family of "
                    f"{int(rows['family_size'].iloc[0])}: " + "; ".join(parts) + ".")]


def _bwt_finding(title: str, bwt: pd.Series) -> list[Finding]:
    """Parameter isolation promises BWT = 0: say whether the finished runs kept it."""
    if bwt.empty:
        return []
    forgot = int((bwt < -TIE).sum())
    if bwt.abs().max() < TIE:
        return [Finding(title, "bwt", "none", f"Backward transfer is 0.00 in all {len(bwt)} finished runs: "
                        "no forgetting, as parameter isolation promises.")]
    text = (f"Backward transfer ranges from {bwt.min():.2f} to {bwt.max():.2f} points over {len(bwt)} finished "
            f"runs; {forgot} of them lost accuracy on earlier tasks (BWT < 0), which parameter isolation should "
            f"prevent.")
    return [Finding(title, "bwt", "forgetting" if forgot else "none", text)]
