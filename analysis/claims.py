"""The paper's questions of one benchmark split, as a family of seed-paired claims (analysis/stats.py).

The primary claims are main effects, each tested with its own per-seed contrast and its own variance:
- **init**, at each density: ERK against uniform, runs matched on (seed, growth criterion), the matched
  differences averaged within the seed;
- **growth**, each pair of criteria: runs matched on (seed, init, density), the differences averaged within
  the seed over every init x density cell that both criteria ran.
Below each growth main effect sit its **growth cells** (the pair within one init x density), which keep their
rows and intervals. They are gated: a cell is tested only with the weight its main effect passes on once it
is real (`CELL_SHARE` of it; the rest goes to the other primary claims, as in Holm's procedure), so the
family's error stays at ALPHA whatever the cells show. Where cells disagree with their main effect, the row
says so (`reversed_cells`, `heterogeneity_p`): an average must not hide a reversal.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis import stats

INIT, GROWTH, CELL = "init", "growth", "growth cell"
# Of a real growth main effect's weight, the share its cells receive (the rest goes to the other primary
# claims). Measured (4000 simulated splits, equal variances): a growth effect of 2 sd in every cell is found by its
# main effect at 3 seeds 36.0%, 37.0% and 37.2% of the time at shares 0.5, 0.25 and 0.1, and its cell at 10
# seeds 93%, 85% and 67%. 0.25 keeps the primary claims at Holm's power and still finds the cells.
CELL_SHARE = 0.25
CELL_INDEX = ["seed", "sparse_init", "density"]


def split_graph(topics: Sequence[str], parents: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Weights and transitions of one split's family (stats.graphical). `parents[i]` is the row of the main
    effect that cell i belongs to (-1 for a primary claim). Primary claims share the weight equally."""
    m = len(topics)
    primary = [i for i in range(m) if topics[i] != CELL]
    cells_of = {i: [k for k in range(m) if parents[k] == i] for i in primary}
    weights, transitions = np.zeros(m), np.zeros((m, m))
    weights[primary] = 1.0 / max(len(primary), 1)
    for i in primary:
        others, cells = [j for j in primary if j != i], cells_of[i]
        share = (CELL_SHARE if others else 1.0) if cells else 0.0
        transitions[i, others] = (1.0 - share) / max(len(others), 1)
        transitions[i, cells] = share / max(len(cells), 1)
        for k in cells:  # a rejected cell passes its weight to its siblings (Holm among them)
            transitions[k, [c for c in cells if c != k]] = 1.0 / max(len(cells) - 1, 1)
    return weights, transitions


def split_claims(runs: pd.DataFrame, metric: str, step: float) -> pd.DataFrame:
    """One split's claims from its finished runs: rows of `stats.compare` with topic, density, sparse_init, a,
    b, parent (the row of a cell's main effect, -1 otherwise), reversed_cells and heterogeneity_p."""
    rows: list[dict] = []
    runs = runs.dropna(subset=["sparse_init", "growth", "density"])  # a setting that varied over tasks: no cell
    for density, at_density in runs.groupby("density", sort=True):
        indexed = at_density.set_index(["seed", "growth"])[[metric, "sparse_init"]]
        rows += [{"topic": INIT, "density": density, "sparse_init": "", "parent": -1, **row}
                 for row in _pairwise(indexed, "sparse_init", metric, step)]
    cells = runs.set_index(CELL_INDEX)[[metric, "growth"]]
    for main in _pairwise(cells, "growth", metric, step):
        a, b = cells[cells["growth"] == main["a"]][metric], cells[cells["growth"] == main["b"]][metric]
        both = sorted(set(a.droplevel(0).index) & set(b.droplevel(0).index))
        parent = len(rows)
        rows.append({"topic": GROWTH, "density": np.nan, "sparse_init": "", "parent": -1, **main})
        if len(both) < 2:  # one cell: the main effect is that cell
            continue
        for init, density in both:
            cell = stats.compare(a.xs((init, density), level=[1, 2]), b.xs((init, density), level=[1, 2]), step)
            rows.append({"topic": CELL, "density": density, "sparse_init": init, "parent": parent,
                         "a": main["a"], "b": main["b"], **cell})
        rows[parent].update(_heterogeneity(a, b, rows[parent + 1:], main["diff"]))
    return pd.DataFrame(rows)


def decide(claims: pd.DataFrame, name: str) -> pd.DataFrame:
    """The split's claims adjusted as the family `name` (stats.family over split_graph)."""
    if claims.empty:
        return claims
    weights, transitions = split_graph(claims["topic"].tolist(), claims["parent"].tolist())
    return stats.family(claims, name, weights, transitions)


def _pairwise(indexed: pd.DataFrame, factor: str, metric: str, step: float) -> list[dict]:
    """Every pair of `factor`'s levels, compared on `metric` with runs matched on the index (the seed first),
    the leader named first."""
    levels = sorted(indexed[factor].unique())
    return [stats.leader_first(a, indexed.loc[indexed[factor] == a, metric], b,
                               indexed.loc[indexed[factor] == b, metric], step)
            for a, b in itertools.combinations(levels, 2)]


def _heterogeneity(a: pd.Series, b: pd.Series, cells: list[dict], diff: float) -> dict:
    """Cells whose interval lies wholly on the other side of 0 from the main effect, and Friedman's test that
    the cells' per-seed differences differ (the seeds that ran every cell are its blocks; NaN below 3 cells or
    2 such seeds)."""
    reversed_cells = [f"{c['sparse_init']}/{c['density']:g}" for c in cells
                      if (diff > 0 and c["ci_high"] < 0) or (diff < 0 and c["ci_low"] > 0)]
    per_cell = (a - b).dropna().unstack(level=[1, 2]).dropna()  # (seeds that ran every cell, cells)
    p = float("nan")
    if per_cell.shape[1] >= 3 and per_cell.shape[0] >= 2 and per_cell.to_numpy().std() > 0:
        p = float(scipy_stats.friedmanchisquare(*per_cell.to_numpy().T).pvalue)
    return {"reversed_cells": ", ".join(reversed_cells), "heterogeneity_p": p}
