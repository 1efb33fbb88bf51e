"""The paper's questions asked of the data, and the sentences that answer them.

Per benchmark split (a comparison panel), the claims of analysis/claims.py: ERK against uniform as a main
effect over the growth x density cells both ran, each pair of growth criteria as a main effect over the init x
density cells both ran, and, gated below each main effect, its cells. Each split is one family
(analysis/stats.py, `claims.decide`);
`sentences()` turns the adjusted rows into findings that carry their numbers, and `best_configs()` chooses
each split's best configuration and says which others cannot be told apart from it. Nothing here knows which
answer to expect.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pandas as pd

from analysis import claims, stats
from analysis.data import accuracy_step, matching, ok_runs
from analysis.tables import number, panel_keys, panels, table_keys

# findings.csv: the context of each comparison, then the comparison (docs/guides/analysis.md)
CONTEXT = ["benchmark", "net", "protocol", "num_tasks", "classes_per_task", "update_frequency"]
COLUMNS = [*CONTEXT, "topic", "density", "sparse_init", "a", "b", "n_pairs", "diff", "ci_low", "ci_high",
           "p_value", "p_adjusted", "mde", "verdict", "panel", "n_run_pairs", "n_unmatched", "sd", "family",
           "family_size", "level", "seeds_needed", "tie", "reversed_cells", "heterogeneity_p"]
# Differences below this print as 0.00: BWT at 0 is the isolation promise.
TIE = 0.005
ONE_POINT = 1.0  # the difference the per-split power statement asks about, in ACC points


@dataclass(frozen=True)
class Finding:
    panel: str  # title of the comparison panel (the split) the finding is about
    topic: str  # "init", "init cell", "growth", "growth cell", "family", "power" or "bwt"
    verdict: str  # stats.REAL / NOT_ESTABLISHED / NOT_TESTED; for bwt "none" / "forgetting"; "" otherwise
    text: str
    winner: str | None = None


@dataclass(frozen=True)
class Best:
    """The best configuration of a panel, chosen on mean final validation ACC where the runs held a
    validation split (else on test ACC, which the report flags), and its best seed's rerun command."""

    panel: str
    config: dict
    acc_mean: float  # test ACC: reported beside the choice, never the ground for it when validation exists
    acc_std: float
    n_ok: int
    run: pd.Series  # the best seed of that configuration, by the same metric
    val_mean: float = float("nan")
    val_std: float = float("nan")
    acc_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95% t-interval of the test ACC over seeds
    untold: tuple[str, ...] = ()  # the others not told apart from it (same metric), each with its mean gap to it
    ahead: tuple[str, ...] = ()  # those better than it for real on the seeds both ran (a mean over other seeds)
    compared: int = 0  # how many configurations it was compared with
    pairs: int = 0  # the tested pairs of the split's configurations: the family its verdicts are corrected in; 0:
    # one seed, so nothing was tested

    @property
    def on_validation(self) -> bool:
        return not pd.isna(self.val_mean)


def comparisons(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Every panel's claims (COLUMNS), each panel adjusted as its own family, named by the panel's title."""
    keys = panel_keys(table_keys(table))
    finished = ok_runs(runs)
    out = []
    for title, _slug, panel in panels(table):
        mine = matching(finished, panel.iloc[0][keys])
        rows = claims.split_claims(mine, "acc", accuracy_step(mine["acc_matrix"])) if len(mine) else pd.DataFrame()
        if not rows.empty:
            out.append(claims.decide(rows, title).assign(panel=title, **{k: panel.iloc[0][k] for k in CONTEXT}))
    return pd.concat(out, ignore_index=True).reindex(columns=COLUMNS) if out else pd.DataFrame(columns=COLUMNS)


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
    parts = [f"{counts.get(claims.INIT, 0)} init main effect(s)", f"{counts.get(claims.GROWTH, 0)} growth main "
             "effect(s)"]
    cells = [f"{counts[topic]} {topic}(s)" for topic in (claims.INIT_CELL, claims.GROWTH_CELL) if counts.get(topic, 0)]
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
    per_density = ("; by density: " + ", ".join(f"{c['density']:g} {c['diff']:+.2f}" for _, c in cells.iterrows())
                   if not cells.empty else "")
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


def _growth_finding(title: str, rows: pd.DataFrame, means: pd.Series) -> Finding:
    """Growth main effects over the split's cells. The leader is the criterion with the highest mean ACC among
    those no other criterion beats for real (on paired seeds); it wins only when it beats every other for real.
    Otherwise the finding names the set that cannot be told apart from it, and those behind it for real. A main
    effect whose cells disagree with it says so."""
    means = means[means.index.isin(set(rows["a"]) | set(rows["b"]))]
    if (rows["verdict"] == stats.NOT_TESTED).all():
        ranked = ", ".join(f"{g} {means[g]:.2f}" for g in means.sort_values(ascending=False).index)
        return Finding(title, claims.GROWTH, stats.NOT_TESTED, f"Growth criteria over this split's cells ({ranked}) "
                       f"are {_untested(rows.iloc[0])}.")
    real = rows[rows["verdict"] == stats.REAL]
    undominated = means.drop(index=[g for g in real["b"] if g in means.index])
    leader = (undominated if not undominated.empty else means).idxmax()
    against = rows[(rows["a"] == leader) | (rows["b"] == leader)]
    beaten = against[(against["verdict"] == stats.REAL) & (against["a"] == leader)]
    if len(beaten) == len(means) - 1:
        text = f"Over this split's cells, {leader} growth wins ({number(means[leader])} mean final ACC): " + \
               "; ".join(f"ahead of {row['b']} by {row['diff']:.2f} points ({evidence(row)})"
                         for _, row in beaten.sort_values("diff").iterrows())
        return Finding(title, claims.GROWTH, stats.REAL, text + _disagreements(rows) + ".", leader)
    behind = set(beaten["b"])
    untold = [g for g in means.sort_values(ascending=False).index if g not in behind]
    closest = against[against["verdict"] != stats.REAL].sort_values("p_value", na_position="last").iloc[0]
    ranked = ", ".join(f"{g} {means[g]:.2f}" for g in untold)
    text = (f"Over this split's cells, no growth criterion wins: {ranked} {_open(closest)} (closest call "
            f"{closest['a']} - {closest['b']} = {closest['diff']:+.2f} points, {evidence(closest)}"
            f"{detectable(closest)})")
    if behind:
        text += f"; behind {leader} for real: " + "; ".join(
            f"{row['b']} by {row['diff']:.2f} points ({evidence(row)})" for _, row in beaten.iterrows())
    return Finding(title, claims.GROWTH, closest["verdict"], text + _disagreements(rows) + ".")


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
    else:
        text = (f"With {row['sparse_init']} initialisation at density {row['density']:g}, {row['a']} growth beats "
                f"{row['b']} by {row['diff']:.2f} points ({evidence(row)}).")
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


def best_configs(runs: pd.DataFrame, table: pd.DataFrame) -> list[Best]:
    """Per panel, the configuration with the highest mean final validation ACC, among those that have one;
    in a panel without any, the highest mean test ACC. More runs, then the lower std, break ties. Beside
    it: its test ACC's 95% interval, and the configurations that cannot be told apart from it on the same
    metric. The best is chosen on the data, so its comparisons are read off a family valid after that choice:
    every pair of the panel's configurations, seed-paired, Holm over all of them."""
    keys, out = table_keys(table), []
    finished = ok_runs(runs)
    for title, _slug, rows in panels(table):
        on_val = rows["val_acc_mean"].notna().any()  # never choose on test data where validation exists
        metric = "val_acc" if on_val else "acc"
        rows = rows[rows[f"{metric}_mean"].notna()]
        if rows.empty:
            continue
        ranked = rows.assign(neg_std=-rows[f"{metric}_std"].fillna(float("inf"))).sort_values(
            [f"{metric}_mean", "n_ok", "neg_std"], ascending=False)
        top = ranked.iloc[0]
        members = matching(finished, top[keys])
        low, high = stats.t_interval(top["acc_mean"], top["acc_std"], top["n_ok"])
        configs = [matching(finished, row[keys]) for _, row in ranked.iterrows()]
        step = accuracy_step(pd.concat(configs)[f"{metric}_matrix" if on_val else "acc_matrix"])
        values = [(_label(row), config.set_index("seed")[metric])
                  for (_, row), config in zip(ranked.iterrows(), configs, strict=True)]
        pairs = pd.DataFrame([{"i": i, "j": j, **stats.compare(values[i][1], values[j][1], step)}
                              for i, j in itertools.combinations(range(len(values)), 2)])
        untold: tuple[str, ...] = ()
        ahead: tuple[str, ...] = ()
        tested = int(pairs["p_value"].notna().sum()) if len(pairs) else 0
        if tested:
            pairs["real"] = stats.holm(pairs["p_value"].to_numpy(dtype=float)) < stats.ALPHA
            mine = pairs[pairs["i"] == 0]  # the chosen one is first in `ranked`
            untold = tuple(f"{values[row.j][0]} ({0.0 - row.diff:+.2f})" for row in mine[~mine["real"]].itertuples())
            ahead = tuple(values[j][0] for j in mine.loc[mine["real"] & (mine["diff"] < 0), "j"])
        out.append(Best(title, {k: top[k] for k in keys}, top["acc_mean"], top["acc_std"], int(top["n_ok"]),
                        members.loc[members[metric].idxmax()], top["val_acc_mean"], top["val_acc_std"],
                        (float(low), float(high)), untold, ahead, len(values) - 1, tested))
    return out


def _label(row: pd.Series) -> str:
    return f"{row['sparse_init']}/{row['growth']} density {row['density']:g}"
