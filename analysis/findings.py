"""The paper's questions asked of the data, answered in sentences built from the numbers.

Per comparison panel (one task split): at each density, does ERK or uniform initialisation
win and by how much; per init and density, which growth criterion wins; whether backward
transfer stayed at zero. A margin is only called real when it beats the seed-to-seed spread
(NOISE_RULE); nothing here knows which answer to expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.data import matching, ok_runs
from analysis.tables import mean_std, panel_keys, panels, table_keys

NOISE_RULE = ("A margin counts as real only if it is larger than the largest seed-to-seed standard deviation "
              "(sample std over seeds) among the configurations compared; otherwise it is called within noise. "
              "Where a configuration compared has a single seed, the spread is unknown and no margin is called real.")
# Differences below this print as 0.00: they are ties, not wins.
TIE = 0.005


@dataclass(frozen=True)
class Finding:
    panel: str  # title of the comparison panel the finding is about
    topic: str  # "init", "growth" or "bwt"
    verdict: str  # "real", "within noise", "spread unknown", "tie", or for bwt "none" / "forgetting"
    text: str
    winner: str | None = None
    margin: float = 0.0


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

    @property
    def on_validation(self) -> bool:
        return not pd.isna(self.val_mean)


def findings(runs: pd.DataFrame, table: pd.DataFrame) -> list[Finding]:
    """Every finding for every panel of a `tables.summary` table, in panel order."""
    out: list[Finding] = []
    keys = panel_keys(table_keys(table))
    finished = ok_runs(runs)
    for title, _slug, rows in panels(table):
        mine = matching(finished, rows.iloc[0][keys])
        rows = rows[rows["acc_mean"].notna()]
        for density, at_density in rows.groupby("density", sort=True):
            out += _init_finding(title, density, at_density)
            for init, same_init in at_density.groupby("sparse_init", sort=True):
                out += _growth_finding(title, density, init, same_init)
        out += _bwt_finding(title, mine["bwt"].dropna())
    return out


def best_configs(runs: pd.DataFrame, table: pd.DataFrame) -> list[Best]:
    """Per panel, the configuration with the highest mean final validation ACC, among those that have one;
    in a panel without any, the highest mean test ACC. More runs, then the lower std, break ties."""
    keys, out = table_keys(table), []
    finished = ok_runs(runs)
    for title, _slug, rows in panels(table):
        on_val = rows["val_acc_mean"].notna().any()  # never choose on test data where validation exists
        metric = "val_acc" if on_val else "acc"
        rows = rows[rows[f"{metric}_mean"].notna()]
        if rows.empty:
            continue
        top = rows.assign(neg_std=-rows[f"{metric}_std"].fillna(float("inf"))).sort_values(
            [f"{metric}_mean", "n_ok", "neg_std"], ascending=False).iloc[0]
        members = matching(finished, top[keys])
        out.append(Best(title, {k: top[k] for k in keys}, top["acc_mean"], top["acc_std"], int(top["n_ok"]),
                        members.loc[members[metric].idxmax()], top["val_acc_mean"], top["val_acc_std"]))
    return out


def verdict(margin: float, stds: list[float]) -> tuple[str, str]:
    """(verdict, phrase) for a margin against the seed stds of the configurations it compares."""
    if any(pd.isna(s) for s in stds):
        return "spread unknown", "the seed spread is unknown (single seed), so this may be noise"
    spread = max(stds)
    if margin > spread:
        return "real", f"larger than the seed spread ({spread:.2f})"
    return "within noise", f"within noise (seed spread {spread:.2f})"


def _init_finding(title: str, density: float, rows: pd.DataFrame) -> list[Finding]:
    """ERK vs uniform at one density, over the growth criteria both were run with."""
    by_init = {init: part.set_index("growth") for init, part in rows.groupby("sparse_init", sort=True)}
    if len(by_init) != 2:
        return []
    (a, rows_a), (b, rows_b) = by_init.items()
    growths = sorted(set(rows_a.index) & set(rows_b.index))
    if not growths:
        return []
    mean_a, mean_b = rows_a.loc[growths, "acc_mean"].mean(), rows_b.loc[growths, "acc_mean"].mean()
    (win, win_mean, win_rows), (lose, lose_mean, lose_rows) = sorted(
        [(a, mean_a, rows_a), (b, mean_b, rows_b)], key=lambda item: item[1], reverse=True)
    margin = win_mean - lose_mean
    scope = (f"with {growths[0]} growth" if len(growths) == 1
             else f"mean over the growth criteria {', '.join(growths)}")
    if margin < TIE:
        return [Finding(title, "init", "tie", f"At density {density:g}, {a} and {b} initialisation tie at "
                        f"{win_mean:.2f} final ACC ({scope}).")]
    label, phrase = verdict(margin, list(rows_a.loc[growths, "acc_std"]) + list(rows_b.loc[growths, "acc_std"]))
    ahead = ""
    if len(growths) > 1:
        wins = int((win_rows.loc[growths, "acc_mean"] > lose_rows.loc[growths, "acc_mean"]).sum())
        ahead = f"; {win} is ahead with {wins} of {len(growths)}"
    text = (f"At density {density:g}, {win} initialisation beats {lose} by {margin:.2f} points of final ACC "
            f"({win_mean:.2f} vs {lose_mean:.2f}, {scope}{ahead}): {phrase}.")
    return [Finding(title, "init", label, text, win, margin)]


def _growth_finding(title: str, density: float, init: str, rows: pd.DataFrame) -> list[Finding]:
    """The best growth criterion for one init and density, against the runner-up."""
    if len(rows) < 2:
        return []
    ranked = rows.sort_values("acc_mean", ascending=False)
    best, second = ranked.iloc[0], ranked.iloc[1]
    margin = best["acc_mean"] - second["acc_mean"]
    where = f"With {init} initialisation at density {density:g}"
    if margin < TIE:
        return [Finding(title, "growth", "tie", f"{where}, {best['growth']} and {second['growth']} growth tie at "
                        f"{best['acc_mean']:.2f} final ACC.")]
    label, phrase = verdict(margin, [best["acc_std"], second["acc_std"]])
    text = (f"{where}, {best['growth']} growth wins: {mean_std(best['acc_mean'], best['acc_std'])} "
            f"(n={best['n_ok']}) vs {mean_std(second['acc_mean'], second['acc_std'])} (n={second['n_ok']}) for "
            f"{second['growth']}, {margin:.2f} points ahead: {phrase}.")
    if len(ranked) > 2:
        text += f" Ranking: {_ranking(ranked)}."
    return [Finding(title, "growth", label, text, best["growth"], margin)]


def _ranking(ranked: pd.DataFrame) -> str:
    """"a 90.00 > b 89.00 = c 89.00": equal where the printed means are equal."""
    text, previous = "", None
    for growth, mean in zip(ranked["growth"], ranked["acc_mean"], strict=True):
        shown = f"{mean:.2f}"
        text += ("" if previous is None else " = " if shown == previous else " > ") + f"{growth} {shown}"
        previous = shown
    return text


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
