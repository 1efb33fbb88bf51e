"""Each split's best configuration, chosen on validation ACC, and the others it cannot be told apart from.

The best is chosen on the data, so its comparisons are read off a family that stays valid after the choice:
every pair of the split's configurations, seed-paired, Holm over all of them (analysis/stats.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pandas as pd

from analysis import stats
from analysis.data import accuracy_step, matching, ok_runs
from analysis.tables import panels, table_keys


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
