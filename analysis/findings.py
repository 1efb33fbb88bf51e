"""The paper's questions asked of the data, answered by seed-paired tests (analysis/stats.py).

Per comparison panel (one task split) and density: ERK against uniform, paired on (seed, growth
criterion) and averaged within each seed; per init and density, every pair of growth criteria, paired
on the seed. `comparisons()` gives one row per comparison; the report adjusts them as one family
(`stats.family`, Holm) together with the adaptive comparisons, and `sentences()` turns the adjusted
rows into findings that carry their numbers. Nothing here knows which answer to expect.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pandas as pd

from analysis import stats
from analysis.data import matching, ok_runs
from analysis.tables import number, panel_keys, panels, table_keys

# findings.csv: the context of each comparison, then the comparison (DESIGN.md "Comparisons")
CONTEXT = ["benchmark", "net", "protocol", "num_tasks", "classes_per_task", "update_frequency"]
COLUMNS = [*CONTEXT, "topic", "density", "sparse_init", "a", "b", "n_pairs", "diff", "ci_low", "ci_high",
           "p_value", "p_adjusted", "mde", "verdict", "panel", "n_run_pairs", "n_unmatched", "sd"]
# Differences below this print as 0.00: BWT at 0 is the isolation promise.
TIE = 0.005
ONE_POINT = 1.0  # the difference the per-panel power statement asks about, in ACC points


@dataclass(frozen=True)
class Finding:
    panel: str  # title of the comparison panel the finding is about
    topic: str  # "init", "growth", "power" or "bwt"
    verdict: str  # stats.REAL / NOT_ESTABLISHED / NO_TEST; for bwt "none" / "forgetting"; "" for power
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
    untold: tuple[str, ...] = ()  # the other configurations that cannot be told apart from it (same metric)
    ahead: tuple[str, ...] = ()  # those better than it for real on the seeds both ran (a mean over other seeds)
    compared: int = 0  # how many configurations it was compared with

    @property
    def on_validation(self) -> bool:
        return not pd.isna(self.val_mean)


def comparisons(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """One row per init and growth comparison of every panel of a `tables.summary` table, unadjusted
    (COLUMNS but p_adjusted, mde and verdict, which `stats.family` adds over the report's whole family)."""
    keys = panel_keys(table_keys(table))
    finished = ok_runs(runs)
    rows = []
    for title, _slug, panel in panels(table):
        mine = matching(finished, panel.iloc[0][keys])
        context = {"panel": title, **{k: panel.iloc[0][k] for k in CONTEXT}}
        for density, at_density in mine.groupby("density", sort=True):
            where = {**context, "density": density}
            rows += [{**where, "topic": "init", "sparse_init": "", **row}
                     for row in _pairwise(at_density, "sparse_init", ["seed", "growth"])]
            for init, same_init in at_density.groupby("sparse_init", sort=True):
                rows += [{**where, "topic": "growth", "sparse_init": init, **row}
                         for row in _pairwise(same_init, "growth", ["seed"])]
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("p_adjusted", "mde", "verdict")])


def _pairwise(runs: pd.DataFrame, factor: str, index: list[str]) -> list[dict]:
    """Every pair of `factor`'s levels among `runs`, compared on final ACC with runs matched on `index` (the
    seed first), the leader named first."""
    acc = runs.set_index(index)
    return [stats.leader_first(a, acc.loc[acc[factor] == a, "acc"], b, acc.loc[acc[factor] == b, "acc"])
            for a, b in itertools.combinations(sorted(runs[factor].unique()), 2)]


def sentences(rows: pd.DataFrame, table: pd.DataFrame, runs: pd.DataFrame) -> list[Finding]:
    """The findings of every panel, in panel order, from the adjusted rows (`stats.family`)."""
    out: list[Finding] = []
    keys = panel_keys(table_keys(table))
    finished = ok_runs(runs)
    family_size = int(rows["p_value"].notna().sum())
    for title, _slug, panel in panels(table):
        mine = rows[rows["panel"] == title]
        for density in sorted(mine["density"].unique()):
            at_density = mine[mine["density"] == density]
            out += [_init_finding(title, row) for _, row in at_density[at_density["topic"] == "init"].iterrows()]
            for init in sorted(at_density.loc[at_density["topic"] == "growth", "sparse_init"].unique()):
                means = panel[(panel["density"] == density) & (panel["sparse_init"] == init)].set_index("growth")
                out.append(_growth_finding(title, density, init, at_density[at_density["sparse_init"] == init],
                                           means["acc_mean"].dropna()))
        out += _power_finding(title, mine, family_size)
        out += _bwt_finding(title, matching(finished, panel.iloc[0][keys])["bwt"].dropna())
    return out


def evidence(row: pd.Series) -> str:
    """"95% CI 2.33 to 3.35, 10 seeds (40 run pairs), Holm-adjusted p < 0.001" for one adjusted row."""
    if row["n_pairs"] == 0:
        return "no seed run by both, so no test"
    seeds = f"{int(row['n_pairs'])} seed{'s' if row['n_pairs'] != 1 else ''}"
    if row["n_run_pairs"] != row["n_pairs"]:
        seeds += f" ({int(row['n_run_pairs'])} run pairs)"
    if row["n_unmatched"]:
        seeds += f"; {int(row['n_unmatched'])} run(s) without a pair left out"
    if row["verdict"] == stats.NO_TEST:
        return f"{seeds}: one pair gives no spread, so no test"
    p = row["p_adjusted"]
    shown = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    if row["sd"] == 0:
        return f"{seeds}, every one the same difference: no spread, so the exact sign-flip test, Holm-adjusted {shown}"
    return f"95% CI {row['ci_low']:.2f} to {row['ci_high']:.2f}, {seeds}, Holm-adjusted {shown}"


def detectable(row: pd.Series) -> str:
    """The power statement of a comparison that is not real."""
    if pd.isna(row["mde"]):
        return ""
    if row["mde"] > 100:
        return "; with this spread and these seeds no difference on the 0-100 scale would be found with 80% power"
    return f"; with this spread and these seeds only a difference of {row['mde']:.2f} points would be found " \
           f"with 80% power"


def _init_finding(title: str, row: pd.Series) -> Finding:
    where = f"At density {row['density']:g}"
    if row["n_pairs"] == 0:
        return Finding(title, "init", row["verdict"], f"{where}, {row['a']} and {row['b']} initialisation were "
                       f"never run with the same seed and growth criterion: no comparison.")
    if row["verdict"] == stats.REAL:
        text = f"{where}, {row['a']} initialisation beats {row['b']} by {row['diff']:.2f} points ({evidence(row)})."
        return Finding(title, "init", row["verdict"], text, row["a"])
    text = (f"{where}, {row['a']} and {row['b']} initialisation cannot be told apart: {row['a']} - {row['b']} = "
            f"{row['diff']:+.2f} points ({evidence(row)}){detectable(row)}.")
    return Finding(title, "init", row["verdict"], text)


def _growth_finding(title: str, density: float, init: str, rows: pd.DataFrame, means: pd.Series) -> Finding:
    """The leader is the criterion with the highest mean ACC among those no other criterion beats for real
    (on paired seeds). It wins only when it beats every other criterion for real; otherwise the finding
    names the set that cannot be told apart from it, and those behind it for real."""
    where = f"With {init} initialisation at density {density:g}"
    real = rows[rows["verdict"] == stats.REAL]
    undominated = means.drop(index=[g for g in real["b"] if g in means.index])
    leader = (undominated if not undominated.empty else means).idxmax()
    against = rows[(rows["a"] == leader) | (rows["b"] == leader)]
    beaten = against[(against["verdict"] == stats.REAL) & (against["a"] == leader)]
    if len(beaten) == len(means) - 1:
        text = f"{where}, {leader} growth wins ({number(means[leader])} final ACC): " + \
               "; ".join(f"ahead of {row['b']} by {row['diff']:.2f} points ({evidence(row)})"
                         for _, row in beaten.sort_values("diff").iterrows()) + "."
        return Finding(title, "growth", stats.REAL, text, leader)
    behind = set(beaten["b"])
    untold = [g for g in means.sort_values(ascending=False).index if g not in behind]
    closest = against[against["verdict"] != stats.REAL].sort_values("p_value", na_position="last").iloc[0]
    ranked = ", ".join(f"{g} {means[g]:.2f}" for g in untold)
    text = (f"{where}, no growth criterion wins: {ranked} cannot be told apart (closest call {closest['a']} - "
            f"{closest['b']} = {closest['diff']:+.2f} points, {evidence(closest)}{detectable(closest)})")
    if behind:
        text += f"; behind {leader} for real: {', '.join(sorted(behind))}"
    return Finding(title, "growth", closest["verdict"], text + ".")


def _power_finding(title: str, rows: pd.DataFrame, family_size: int) -> list[Finding]:
    """Per topic, how many seeds this report's correction needs to find a 1-point difference, from the panel's
    pooled paired spread (root mean square of the comparisons' stds)."""
    parts = []
    for topic, mine in rows.groupby("topic", sort=True):
        spread = math.sqrt((mine["sd"] ** 2).mean()) if mine["sd"].notna().any() else float("nan")
        if not spread > 0:
            parts.append(f"{topic}: no paired spread yet")
            continue
        needed = stats.seeds_needed(ONE_POINT, spread, stats.ALPHA / max(family_size, 1))
        count = f"about {needed} seeds" if needed else f"more than {stats.MAX_SEEDS} seeds"
        parts.append(f"{topic} comparisons (paired spread {spread:.2f} points, now {int(mine['n_pairs'].max())} "
                     f"seeds): {count}")
    if not parts:
        return []
    return [Finding(title, "power", "", f"To find a {ONE_POINT:g}-point difference with 80% power after Holm over "
                    f"this report's {family_size} tested comparisons: " + "; ".join(parts) + ".")]


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
    metric (seed-paired, Holm over that panel's comparisons with the chosen one)."""
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
        others = [(_label(row), matching(finished, row[keys]).set_index("seed")[metric])
                  for _, row in ranked.iloc[1:].iterrows()]
        chosen = members.set_index("seed")[metric]
        untold: tuple[str, ...] = ()
        ahead: tuple[str, ...] = ()
        if others:
            tested = stats.family(pd.DataFrame([{"b": label, **stats.compare(chosen, values)}
                                                for label, values in others]))
            untold = tuple(tested.loc[tested["verdict"] != stats.REAL, "b"])
            ahead = tuple(tested.loc[(tested["verdict"] == stats.REAL) & (tested["diff"] < 0), "b"])
        out.append(Best(title, {k: top[k] for k in keys}, top["acc_mean"], top["acc_std"], int(top["n_ok"]),
                        members.loc[members[metric].idxmax()], top["val_acc_mean"], top["val_acc_std"],
                        (float(low), float(high)), untold, ahead, len(others)))
    return out


def _label(row: pd.Series) -> str:
    return f"{row['sparse_init']}/{row['growth']} density {row['density']:g}"
