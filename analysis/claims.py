"""The paper's questions of one benchmark split, as a family of seed-paired claims (analysis/stats.py).

The primary claims are main effects, each tested with its own per-seed contrast and its own variance:
- **init**: ERK against uniform, runs matched on (seed, growth criterion, density), the matched differences
  averaged within the seed over every growth x density cell both inits ran;
- **growth**, each pair of criteria: runs matched on (seed, init, density), the differences averaged within
  the seed over every init x density cell that both criteria ran.
Below each main effect sit its **cells**, which keep their rows and intervals: an init cell is one density
(its runs matched on seed and growth criterion, averaged within the seed), a growth cell the pair within one
init x density. Cells are gated: a cell is tested only with the weight its main effect passes on once it is
real (`CELL_SHARE` of it; the rest goes to the other primary claims, as in Holm's procedure), so the family's
error stays at ALPHA whatever the cells show. Where cells disagree with their main effect, the row says so
(`reversed_cells`, `heterogeneity_p`, both unadjusted): an average must not hide a reversal.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analysis import stats

INIT, GROWTH, INIT_CELL, GROWTH_CELL = "init", "growth", "init cell", "growth cell"


@dataclass(frozen=True)
class Question:
    """One factor's main effects and their cells: a cell fixes `cell_by`; within a cell, runs of the two levels
    are matched on the seed and `within`, whose differences are averaged within the seed. A real main effect
    passes `cell_share` of its weight to its cells."""

    factor: str
    topic: str
    cell_topic: str
    cell_by: tuple[str, ...]
    within: tuple[str, ...]
    cell_share: float


# The shares, measured (4000 simulated splits, equal variances): a growth effect of 2 sd in every cell is found by
# its main effect at 3 seeds 36.0%, 37.0% and 37.2% of the time at shares 0.5, 0.25 and 0.1, and its cell at 10
# seeds 93%, 85% and 67%: 0.25 keeps the primary claims at Holm's power and still finds the cells. The init cells
# (one per density, the paper's reading) take all of the init main effect's weight: with an ERK effect of 2 sd at
# every density, its density is found at 5 seeds 7.7%, 14.4% and 26.3% of the time at shares 0.25, 0.5 and 1,
# and a growth effect beside it 99.95%, 99.9% and 99.8%.
QUESTIONS = (Question("sparse_init", INIT, INIT_CELL, ("density",), ("growth",), 1.0),
             Question("growth", GROWTH, GROWTH_CELL, ("sparse_init", "density"), (), 0.25))
# Settings a sweep may cross that the paper compares too: each is a family of its own per split (the runs that
# differ only in it), its main effects paired on (seed, init, growth, density), its cells each init x growth x
# density, as growth's are.
COMPARED = tuple(Question(field, field, f"{field} cell", ("sparse_init", "growth", "density"), (), 0.25)
                 for field in ("prune", "death_rate", "optimizer"))
CELL_SHARE = {question.topic: question.cell_share for question in (*QUESTIONS, *COMPARED)}
# A cell passes this much of its weight back to the other primary claims and the rest to its siblings: once every
# sibling is rejected the whole weight flows back, where an edge-less last cell would lose it (Bretz et al. 2009's
# epsilon edges; the cells' own levels change by a factor 1 - 1e-6).
EPSILON = 1e-6


def split_graph(topics: Sequence[str], parents: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Weights and transitions of one split's family (stats.graphical). `parents[i]` is the row of the main
    effect that cell i belongs to (-1 for a primary claim, whose topic names its cells' share). Primary claims
    share the weight equally."""
    m = len(topics)
    primary = [i for i in range(m) if parents[i] < 0]
    cells_of = {i: [k for k in range(m) if parents[k] == i] for i in primary}
    weights, transitions = np.zeros(m), np.zeros((m, m))
    weights[primary] = 1.0 / max(len(primary), 1)
    for i in primary:
        others, cells = [j for j in primary if j != i], cells_of[i]
        share = (CELL_SHARE[topics[i]] if others else 1.0) if cells else 0.0
        transitions[i, others] = (1.0 - share) / max(len(others), 1)
        transitions[i, cells] = share / max(len(cells), 1)
        for k in cells:  # a rejected cell passes its weight to its siblings (Holm among them)
            siblings = [c for c in cells if c != k]
            back = (EPSILON if siblings else 1.0) if others else 0.0
            transitions[k, siblings] = (1.0 - back) / max(len(siblings), 1)
            transitions[k, others] = back / max(len(others), 1)
    return weights, transitions


def split_claims(runs: pd.DataFrame, metric: str, step: float,
                 questions: Sequence[Question] = QUESTIONS) -> pd.DataFrame:
    """One split's claims from its finished runs: rows of `stats.compare` with topic, density, sparse_init, a,
    b, parent (the row of a cell's main effect, -1 otherwise), reversed_cells and heterogeneity_p."""
    rows: list[dict] = []
    runs = runs.dropna(subset=["sparse_init", "growth", "density"])  # a setting that varied over tasks: no cell
    for question in questions:
        rows += _main_effects(runs, question, metric, step, first_row=len(rows))
    return pd.DataFrame(rows)


def decide(claims: pd.DataFrame, name: str) -> pd.DataFrame:
    """The split's claims adjusted as the family `name` (stats.family over split_graph)."""
    if claims.empty:
        return claims
    weights, transitions = split_graph(claims["topic"].tolist(), claims["parent"].tolist())
    return stats.family(claims, name, weights, transitions)


def _main_effects(runs: pd.DataFrame, question: Question, metric: str, step: float, first_row: int) -> list[dict]:
    """Every pair of the question's levels: its main effect (the leader named first), then its cells."""
    factor, cell_by, within = question.factor, list(question.cell_by), list(question.within)
    indexed = runs.set_index(["seed", *cell_by, *within])[[metric, factor]]
    rows: list[dict] = []
    for a_name, b_name in itertools.combinations(sorted(indexed[factor].unique()), 2):
        main = stats.leader_first(a_name, indexed.loc[indexed[factor] == a_name, metric],
                                  b_name, indexed.loc[indexed[factor] == b_name, metric], step)
        parent = first_row + len(rows)
        rows.append({"topic": question.topic, "density": np.nan, "sparse_init": "", "growth": "", "parent": -1,
                     **main})
        a, b = (indexed.loc[indexed[factor] == name, metric] for name in (main["a"], main["b"]))
        both = sorted(set(a.index.droplevel([0, *within])) & set(b.index.droplevel([0, *within])))
        if len(both) < 2:  # one cell: the main effect is that cell
            continue
        for key in both:
            where = dict(zip(cell_by, key if isinstance(key, tuple) else (key,), strict=True))
            rows.append({"topic": question.cell_topic, "density": where["density"],
                         "sparse_init": where.get("sparse_init", ""), "growth": where.get("growth", ""),
                         "parent": parent, "a": main["a"], "b": main["b"],
                         **stats.compare(_cell(a, cell_by, key), _cell(b, cell_by, key), step)})
        rows[parent - first_row].update(_heterogeneity(a - b, cell_by, rows[parent - first_row + 1:], main["diff"]))
    return rows


def _cell(values: pd.Series, cell_by: list[str], key: object) -> pd.Series:
    """The runs of one cell, indexed by seed and the factors averaged within it."""
    return values.xs(key if isinstance(key, tuple) else (key,), level=cell_by)


def _heterogeneity(differences: pd.Series, cell_by: list[str], cells: list[dict], diff: float) -> dict:
    """Cells whose unadjusted interval lies wholly on the other side of 0 from the main effect, and Friedman's
    test that the cells' per-seed differences differ (the seeds that ran every cell are its blocks; NaN below 3
    cells or 2 such seeds)."""
    reversed_cells = ["/".join(f"{c[k]:g}" if k == "density" else str(c[k]) for k in cell_by) for c in cells
                      if (diff > 0 and c["ci_high"] < 0) or (diff < 0 and c["ci_low"] > 0)]
    per_seed = differences.dropna().groupby(level=["seed", *cell_by]).mean()
    per_cell = per_seed.unstack(level=cell_by).dropna()  # (seeds that ran every cell, cells)
    p = float("nan")
    if per_cell.shape[1] >= 3 and per_cell.shape[0] >= 2 and per_cell.to_numpy().std() > 0:
        p = float(scipy_stats.friedmanchisquare(*per_cell.to_numpy().T).pvalue)
    return {"reversed_cells": ", ".join(reversed_cells), "heterogeneity_p": p}
