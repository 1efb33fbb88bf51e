"""Measure the report's verdicts (analysis/stats.py) on simulated sweeps with known effects, beside the
largest-std rule they replaced: `python -m analysis.calibration [--families 4000]` prints a Markdown table.
tests/test_stats.py checks the same simulations' error rates.

A simulated panel is the paper grid's: 2 inits x 4 growth criteria x 3 densities, run with the same
seeds. A run's final ACC is its configuration's true mean + its seed's offset (shared by every
configuration of that seed, as model init and class order are) + the run's own noise (sd SIGMA).
The panel's family is 39 comparisons (3 init claims, averaged over growth within each seed, and 36
growth pairs), adjusted with Holm. The old rule is kept here only to measure it: a margin was "real"
when larger than the largest seed std of the configurations compared.

Noise models: `gaussian` (seed offsets sd 3, run noise sd 1), `no offsets` (run noise only, the
setting of issue 17's table), `heavy tails` (run noise from Student t with 3 df, scaled to sd 1),
`lattice` (digits-like: each task's accuracy counts 70-74 test images, so ACC moves in steps of
about 0.28 points).
"""

from __future__ import annotations

import argparse
import itertools
import sys

import numpy as np

from analysis import stats

SIGMA = 1.0
TASK_IMAGES = np.array([72, 73, 71, 74, 70])
COMPARISONS = 39


def simulate(rng: np.random.Generator, families: int, seeds: int, noise: str, init_effect: float) -> np.ndarray:
    """Final ACC (families, seeds, init, growth, density); ERK (init 0) gets `init_effect` at the first density."""
    shape = (families, seeds, 2, 4, 3)
    offset = rng.normal(0.0, 3.0, size=shape[:2])[..., None, None, None]
    if noise == "no offsets":
        acc = rng.normal(0.0, SIGMA, size=shape)
    elif noise == "heavy tails":
        acc = offset + rng.standard_t(3, size=shape) * SIGMA / np.sqrt(3.0)
    elif noise == "lattice":  # per-task accuracy = correct images / test images; seeds share each task's difficulty
        difficulty = np.clip(rng.normal(0.96, 0.02, size=(families, seeds, 1, 1, 1, len(TASK_IMAGES))), 0, 1)
        acc = (rng.binomial(TASK_IMAGES, np.broadcast_to(difficulty, (*shape, len(TASK_IMAGES)))) / TASK_IMAGES)
        acc = acc.mean(axis=-1) * 100
    else:
        acc = offset + rng.normal(0.0, SIGMA, size=shape)
    acc[:, :, 0, :, 0] += init_effect
    return acc


def differences(acc: np.ndarray) -> np.ndarray:
    """Per-seed paired differences of the panel's 39 comparisons: (families, 39, seeds), init claims first."""
    init = (acc[:, :, 0] - acc[:, :, 1]).mean(axis=2)  # (F, seeds, density)
    columns = [init[:, :, d] for d in range(3)]
    for a, b in itertools.combinations(range(4), 2):
        columns += [acc[:, :, i, a, d] - acc[:, :, i, b, d] for i in range(2) for d in range(3)]
    return np.stack(columns, axis=1)


def holm_real(p_values: np.ndarray) -> np.ndarray:
    """(families, m) p-values -> which comparisons are `real` after Holm within each family."""
    return np.stack([stats.holm(p) < stats.ALPHA for p in p_values])


def old_rule(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(init claim real at density 0, growth best-vs-runner-up claim real for ERK at density 0) per family."""
    means, stds = acc.mean(axis=1), acc.std(axis=1, ddof=1)  # (F, init, growth, density)
    margin = np.abs(means[:, 0, :, 0].mean(axis=1) - means[:, 1, :, 0].mean(axis=1))
    init_real = margin > stds[:, :, :, 0].max(axis=(1, 2))
    erk = means[:, 0, :, 0]
    order = np.argsort(-erk, axis=1)
    best, second = order[:, 0], order[:, 1]
    rows = np.arange(len(acc))
    growth_real = erk[rows, best] - erk[rows, second] > np.maximum(stds[rows, 0, best, 0], stds[rows, 0, second, 0])
    return init_real, growth_real


def table(families: int, noises: list[str], seed_counts: list[int]) -> list[str]:
    lines = ["| noise | seeds | old rule: null init claim real | old rule: null growth claim real | Holm: any of 39 "
             "null claims real (familywise) | Holm: null init claim real | old rule: 2-sigma init effect found | "
             "Holm: 2-sigma init effect found (predicted by the mde column) | same effect, tested alone "
             "(predicted) |", "|" + "---|" * 9]
    print("\n".join(lines), flush=True)
    rng = np.random.default_rng(0)
    for noise, seeds in itertools.product(noises, seed_counts):
        null = simulate(rng, families, seeds, noise, 0.0)
        init_rule, growth_rule = old_rule(null)
        real = holm_real(stats.paired_test(differences(null)).p_value)
        sd_d = SIGMA / np.sqrt(2)  # ERK - uniform averaged over 4 criteria (Gaussian models)
        effect = simulate(rng, families, seeds, noise, 2 * sd_d)
        found_rule = old_rule(effect)[0].mean()
        p = stats.paired_test(differences(effect)).p_value
        found = holm_real(p)[:, 0].mean()
        alone = (p[:, 0] < stats.ALPHA).mean()
        predicted = float(stats.power(2 * sd_d, sd_d, seeds, stats.ALPHA / COMPARISONS))
        predicted_alone = float(stats.power(2 * sd_d, sd_d, seeds, stats.ALPHA))
        powers = (f"{found_rule:.1%} | {found:.1%} ({predicted:.1%}) | {alone:.1%} ({predicted_alone:.1%})"
                  if noise != "lattice" else "– | – | –")  # the lattice's spread is not SIGMA: no 2-sigma there
        lines.append(f"| {noise} | {seeds} | {init_rule.mean():.1%} | {growth_rule.mean():.1%} | "
                     f"{real.any(axis=1).mean():.1%} | {real[:, :3].mean():.2%} | {powers} |")
        print(lines[-1], flush=True)
    return lines


def sign_flip_floor(seed_counts: list[int]) -> str:
    """The smallest two-sided p-value an exact sign-flip test can give at n pairs."""
    return "; ".join(f"{n} seeds: {2.0 ** (1 - n):.4f}" for n in seed_counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=int, default=4000, help="simulated panels per cell (default 4000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5, 10])
    parser.add_argument("--noise", nargs="+", default=["gaussian", "no offsets", "heavy tails", "lattice"])
    args = parser.parse_args(argv)
    if args.families < 100 or min(args.seeds) < 2:
        parser.error("--families: at least 100; --seeds: each at least 2")
    print(f"{args.families} simulated panels per row; 2-sigma = twice the sd of the per-seed paired difference "
          f"(Gaussian models); alpha {stats.ALPHA}, Holm over {COMPARISONS}\n")
    table(args.families, args.noise, args.seeds)
    print(f"\nExact sign-flip test, smallest possible p: {sign_flip_floor(args.seeds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
