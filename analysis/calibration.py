"""Measure the report's verdicts on simulated sweeps with known effects: `python -m analysis.calibration
[--families 4000] [--seeds 3 5 10] [--noise ...] [--alternatives]` prints a Markdown table; tests/test_stats.py
asserts the same simulations' error rates at sizes that run in seconds.

A simulated split is the paper grid's: 2 inits x 4 growth criteria x 3 densities, every configuration run with
the same seeds. A run's final ACC is its configuration's true mean + its seed's offset (sd 3, shared by every
configuration of that seed, as model init and class order are) + the run's own noise (sd 1 unless the noise
model says otherwise). The split's family is decided exactly as the report decides it: the claims of
analysis/claims.py (the init main effect and its 3 density cells, 6 growth main effects and their 36 cells), the
report's per-claim paired test (analysis/stats.py) and the report's graph. The best configuration's set is the
report's too: every pair of the 24 configurations, Holm over all 276, read off for the one with the highest mean.

Effects are in units of "sd": the std of a cell's per-seed paired difference under equal variances (a growth
cell: sqrt(2) points; an init cell, ERK - uniform at one density averaged over 4 criteria: sqrt(2) / 2 points). A
growth effect puts criterion 0 ahead of the three others in every cell, and is found when its main effect against
criterion 1 is `real`; an init effect puts ERK ahead at every density, and is found when the init main effect is
`real`. An init effect at the first density only is found when that density's cell is.
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np
from scipy import stats as scipy_stats

from analysis import claims, stats

SIGMA, OFFSET_SD = 1.0, 3.0
TASK_IMAGES = np.array([72, 73, 71, 74, 70])  # digits-like test sets: accuracy counts these
STEP = 100.0 / (len(TASK_IMAGES) * TASK_IMAGES.max())  # one test image of the largest task, in ACC points
CELL_SD = SIGMA * np.sqrt(2)  # std of a cell's per-seed paired difference under equal variances
INIT_SD = CELL_SD / 2  # ERK - uniform averaged over the 4 criteria
NOISES = ("equal variances", "sd 3x by density", "shared mask draw", "sd 3x by growth", "sd 3x by init",
          "lattice 96%", "lattice 99.5%")
LATTICE = {"lattice 96%": (0.96, 0.02), "lattice 99.5%": (0.995, 0.003)}  # per-task accuracy: mean, sd over seeds
PAIRS = list(itertools.combinations(range(4), 2))
TOPICS = [claims.INIT] + [claims.INIT_CELL] * 3 + [topic for _ in PAIRS
                                                   for topic in [claims.GROWTH] + [claims.GROWTH_CELL] * 6]
PARENTS = [-1] + [0] * 3 + [p for k in range(len(PAIRS)) for p in [-1] + [4 + 7 * k] * 6]
INIT_MAIN, INIT_CELL_0 = 0, 1  # rows of the init main effect and its first cell (density 0)
GROWTH_01, CELL_01 = 4, 5  # rows of the main effect of criteria 0 and 1, and its first cell (ERK, density 0)


def simulate(rng: np.random.Generator, families: int, seeds: int, noise: str, growth: float = 0.0,
             init: float = 0.0, erk_only: bool = False, init_densities: int = 3) -> np.ndarray:
    """Final ACC (families, seeds, init, growth, density): criterion 0 ahead by `growth` points in every cell (in
    ERK's cells only with `erk_only`), ERK ahead by `init` points at the first `init_densities` densities."""
    shape = (families, seeds, 2, 4, 3)
    if noise in LATTICE:  # per task, correct images / test images; a seed sets each task's difficulty
        mean, sd = LATTICE[noise]
        difficulty = np.clip(rng.normal(mean, sd, size=(families, seeds, 1, 1, 1, len(TASK_IMAGES))), 0, 1)
        acc = rng.binomial(TASK_IMAGES, np.broadcast_to(difficulty, (*shape, len(TASK_IMAGES)))) / TASK_IMAGES
        acc = acc.mean(axis=-1) * 100
    else:
        run_sd = {"sd 3x by density": np.array([1.0, 2.0, 3.0]),
                  "sd 3x by growth": np.array([1.0, 1.0, 1.0, 3.0])[:, None],
                  "sd 3x by init": np.array([1.0, 3.0])[:, None, None]}.get(noise, 1.0) * SIGMA
        acc = rng.normal(0.0, OFFSET_SD, size=shape[:2])[..., None, None, None] + rng.normal(0.0, 1.0, shape) * run_sd
        if noise == "shared mask draw":  # a (seed, init, density) cell's first mask draw, shared by its criteria
            acc += rng.normal(0.0, SIGMA, size=(families, seeds, 2, 1, 3))
    acc[:, :, : 1 if erk_only else 2, 0, :] += growth
    acc[:, :, 0, :, :init_densities] += init
    return acc


def contrasts(acc: np.ndarray) -> np.ndarray:
    """Per-seed contrasts of the split's claims in the report's order (F, 46, seeds): the init main effect and its
    3 cells (densities ascending), then for each growth pair its main effect and its 6 cells (ERK then uniform,
    densities ascending)."""
    init = (acc[:, :, 0] - acc[:, :, 1]).mean(axis=2)  # (F, S, D)
    rows = [init.mean(axis=2)] + [init[:, :, d] for d in range(3)]
    for a, b in PAIRS:
        cell = acc[:, :, :, a] - acc[:, :, :, b]  # (F, S, I, D)
        rows += [cell.mean(axis=(2, 3))] + [cell[:, :, i, d] for i in range(2) for d in range(3)]
    return np.stack(rows, axis=1)


def real(acc: np.ndarray, step: float) -> np.ndarray:
    """Which claims of each simulated split the report calls `real` (F, 46)."""
    p = stats.paired_test(contrasts(acc), step).p_value
    weights, transitions = claims.split_graph(TOPICS, PARENTS)
    return np.stack([stats.graphical(row, weights, transitions, until=stats.ALPHA) < stats.ALPHA for row in p])


def behind_the_best(acc: np.ndarray, step: float) -> np.ndarray:
    """Per simulated split, whether some configuration is called behind the best one for real (F,)."""
    values = acc.reshape(*acc.shape[:2], -1)  # (F, S, 24)
    pairs = list(itertools.combinations(range(values.shape[-1]), 2))
    p = stats.paired_test(np.stack([values[..., i] - values[..., j] for i, j in pairs], axis=1), step).p_value
    best = values.mean(axis=1).argmax(axis=1)
    involved = np.array([[best_f in pair for pair in pairs] for best_f in best])
    return np.array([(stats.holm(row) < stats.ALPHA)[mine].any() for row, mine in zip(p, involved, strict=True)])


def pooled_real(acc: np.ndarray) -> np.ndarray:
    """The primary claims called `real` when their variance is pooled (F, 9): one sd over the 9 claims' per-seed
    contrasts, 9 (n - 1) degrees of freedom, Holm over the 9. Measured only, to show why each claim keeps its own."""
    primary = contrasts(acc)[:, [i for i, parent in enumerate(PARENTS) if parent < 0]]  # (F, 7, S)
    n = primary.shape[-1]
    df = primary.shape[1] * (n - 1)
    pooled = np.sqrt(((primary - primary.mean(axis=-1, keepdims=True)) ** 2).sum(axis=(1, 2)) / df)  # (F,)
    t = primary.mean(axis=-1) / (pooled[:, None] / np.sqrt(n))
    p = 2 * scipy_stats.t.sf(np.abs(t), df)
    return np.stack([stats.holm(row) < stats.ALPHA for row in p])


def alternatives(families: int, seed_counts: list[int]) -> list[str]:
    """Familywise false-`real` rates on null splits of what the report does not do: pooling the primary claims'
    variance, and taking only spreads below RESOLUTION (not one test image) as ties."""
    lines = ["| noise | seeds | pooled variance: any primary claim real | ties below 0.01 points only: any claim "
             "real |", "|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    rng = np.random.default_rng(1)
    for noise, seeds in itertools.product(NOISES, seed_counts):
        acc = simulate(rng, families, seeds, noise)
        pooled = f"{pooled_real(acc).any(axis=1).mean():.1%}" if noise not in LATTICE else "–"
        fine = f"{real(acc, 0.0).any(axis=1).mean():.1%}" if noise in LATTICE else "–"
        lines.append(f"| {noise} | {seeds} | {pooled} | {fine} |")
        print(lines[-1], flush=True)
    return lines


def still_null() -> np.ndarray:
    """The claims (46,) that stay null when criterion 0 moves ahead in ERK's cells only (`erk_only`): all but the
    init claims (ERK - uniform averaged over growth moves too) and, of each pair with criterion 0, its main effect
    and its 3 ERK cells."""
    null = np.ones(len(TOPICS), dtype=bool)
    null[:4] = False
    for k, (a, _b) in enumerate(PAIRS):
        if a == 0:
            null[4 + 7 * k: 4 + 7 * k + 4] = False
    return null


def step_of(noise: str) -> float:
    return STEP if noise in LATTICE else 0.0


def row(rng: np.random.Generator, families: int, seeds: int, noise: str) -> list[str]:
    """One table row: error rates, then power (– on the lattice, whose spread is not SIGMA)."""
    step = step_of(noise)
    null = real(simulate(rng, families, seeds, noise), step).any(axis=1).mean()
    partial = real(simulate(rng, families, seeds, noise, growth=2 * CELL_SD, erk_only=True), step)
    best = behind_the_best(simulate(rng, families, seeds, noise), step).mean()
    cells = [f"{null:.1%}", f"{partial[:, still_null()].any(axis=1).mean():.1%}", f"{best:.1%}"]
    if noise in LATTICE:
        return cells + ["–"] * 7
    for sd in (1, 2):
        found = real(simulate(rng, families, seeds, noise, growth=sd * CELL_SD), step)
        cells.append(f"{found[:, GROWTH_01].mean():.1%}")
    cells.append(f"{found[:, CELL_01].mean():.1%}")
    for sd in (1, 2):
        found = real(simulate(rng, families, seeds, noise, init=sd * INIT_SD), step)
        cells.append(f"{found[:, INIT_MAIN].mean():.1%}")
    cells.append(f"{found[:, INIT_CELL_0].mean():.1%}")
    one = real(simulate(rng, families, seeds, noise, init=2 * INIT_SD, init_densities=1), step)
    return cells + [f"{one[:, INIT_CELL_0].mean():.1%}"]


HEADER = ["noise", "seeds", "all null: any claim real", "growth effect in ERK's cells: any true-null claim real",
          "all null: a configuration called behind the best", "growth 1 sd found", "growth 2 sd found",
          "growth 2 sd: its cell found", "init 1 sd found", "init 2 sd found", "init 2 sd: its density found",
          "init 2 sd at one density only: its density found"]


def table(families: int, noises: list[str], seed_counts: list[int]) -> list[str]:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    print("\n".join(lines), flush=True)
    rng = np.random.default_rng(0)
    for noise, seeds in itertools.product(noises, seed_counts):
        lines.append(f"| {noise} | {seeds} | " + " | ".join(row(rng, families, seeds, noise)) + " |")
        print(lines[-1], flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Error rates and power of the report's verdicts on simulated "
                                                 "splits with known effects (a Markdown table).")
    parser.add_argument("--families", type=int, default=4000, help="simulated splits per cell (default 4000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 10], help="seed counts (default 3 5 10)")
    listed = ", ".join(NOISES).replace("%", "%%")  # argparse formats help strings with %
    parser.add_argument("--noise", nargs="+", default=list(NOISES), choices=NOISES, metavar="NOISE",
                        help=f"noise models (default all): {listed}")
    parser.add_argument("--alternatives", action="store_true",
                        help="instead, the error rates of pooled variances and of ties below 0.01 points only")
    args = parser.parse_args(argv)
    if args.families < 100 or min(args.seeds) < 2:
        parser.error("--families: at least 100; --seeds: each at least 2")
    print(f"{args.families} simulated splits per row; alpha {stats.ALPHA} per family; 1 sd: {CELL_SD:.2f} points "
          f"for growth, {INIT_SD:.2f} for init; the lattice's step {STEP:.3f} points\n")
    if args.alternatives:
        alternatives(args.families, args.seeds)
    else:
        table(args.families, args.noise, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
