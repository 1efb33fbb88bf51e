"""Measurement 10: the race for the best configuration (analysis/racing.py) on simulated results with known effects.

24 configurations: the best, three runners-up `gap` sd behind it, and twenty more from gap + 1 to gap + 6 sd
behind. A run's validation ACC is the configuration's mean, plus its seed's offset (shared by every configuration
on that seed: pairing removes it), plus noise of the configuration's own sd (0.6 to 1.4, so unequal variances),
rounded to the lattice of 5 tasks of 72 validation images each. 1 sd is 1 ACC point.

Measured: how often the race declares a wrong best when the top two are tied (the race's guarantee: at most
alpha); and, for gaps of 0.5, 1 and 2 sd, how often it declares the true best and the runs it uses, against fixed
designs (every configuration on n seeds, one look at level alpha: the same test) of 5, 10 and 40 seeds, and
against the smallest fixed design whose power reaches the race's.

    python -m benchmarks.racing [--reps N] [--tied-reps N] [--no-append]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from analysis import racing

CONFIGURATIONS, RUNNERS_UP = 24, 3
BEST = 90.0  # validation ACC of the best configuration
SEED_OFFSET_SD = 2.0  # a seed's luck, shared by every configuration
NOISE_SD = (0.6, 1.4)  # per-configuration sd of a run around its configuration's mean (their mean: 1)
BEHIND = (1.0, 6.0)  # the twenty others: this many sd further behind than the runners-up
LATTICE = 100 / (72 * 5)  # ACC points between two runs' ACC: 5 tasks of 72 validation images
GAPS = (0.5, 1.0, 2.0)
PLANS = ((5, 10, 20, 40), (4, 8, 16, 32, 64))
FIXED = (5, 10, 40)
MAX_FIXED = 256  # seeds beyond which the search for a fixed design of the race's power gives up


def means(gap: float, tied: bool = False) -> np.ndarray:
    """(configurations,) true mean validation ACC: best first; `tied`: the first runner-up equals the best."""
    behind = np.concatenate([np.full(RUNNERS_UP, gap), gap + np.linspace(*BEHIND, CONFIGURATIONS - 1 - RUNNERS_UP)])
    if tied:
        behind[0] = 0.0
    return BEST - np.concatenate([[0.0], behind])


def draw(rng: np.random.Generator, mean: np.ndarray, seeds: int) -> np.ndarray:
    """(configurations, seeds) validation ACC on the lattice."""
    sd = rng.permutation(np.linspace(*NOISE_SD, len(mean)))  # (C,)
    offset = rng.normal(0.0, SEED_OFFSET_SD, seeds)  # (S,)
    acc = mean[:, None] + offset[None, :] + sd[:, None] * rng.normal(size=(len(mean), seeds))
    return np.clip(np.round(acc / LATTICE) * LATTICE, 0.0, 100.0)


def simulate(mean: np.ndarray, looks: Sequence[int], reps: int, seed: int = 0) -> dict:
    """Races on `reps` simulated experiments: the share that declared configuration 0 (the true best), that
    declared another, that ranked configuration 0 first at the end, and the mean runs used."""
    rng = np.random.default_rng(seed)
    right = wrong = first = runs = 0
    for _ in range(reps):
        result = racing.race(draw(rng, mean, looks[-1]), looks, step=LATTICE)  # as the live race: ties of counts
        right += result.declared == 0
        wrong += result.declared not in (None, 0)
        first += result.contenders[:1] == (0,)
        runs += result.runs
    return {"declared best": right / reps, "declared another": wrong / reps, "best ranked first": first / reps,
            "runs": runs / reps}


def fixed_reaching(mean: np.ndarray, power: float, reps: int, seed: int = 0) -> int | None:
    """The fewest seeds at which a fixed design declares the true best at least `power` of the time (its power
    grows with the seeds: doubled, then bisected); None beyond MAX_FIXED."""
    def enough(n: int) -> bool:
        return simulate(mean, (n,), reps, seed)["declared best"] >= power

    low, high = 1, 2
    while not enough(high):
        low, high = high, high * 2
        if high > MAX_FIXED:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def binomial_interval(share: float, reps: int) -> str:
    """share with its 95% simulation error (normal approximation, +-1.96 binomial standard errors)."""
    half = 1.96 * np.sqrt(max(share * (1 - share), 1 / reps) / reps)
    return f"{100 * share:.1f}% +- {100 * half:.1f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=1000, help="simulated experiments per power row (default 1000)")
    p.add_argument("--tied-reps", type=int, default=4000,
                   help="simulated experiments per wrong-declaration row (default 4000)")
    p.add_argument("--no-append", action="store_true", help="print only; do not append to benchmarks/RESULTS.md")
    p.add_argument("--quick", action="store_true", help="100 simulated experiments per row: a smoke run of seconds")
    return p


def main(argv: list[str] | None = None) -> dict:
    import torch

    from benchmarks import common

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.quick:
        args.reps, args.tied_reps = 100, 100
    tied, power = [], []
    for plan in PLANS:
        for gap in GAPS:
            out = simulate(means(gap, tied=True), plan, args.tied_reps)
            tied.append({"looks": " ".join(map(str, plan)), "other runners-up (sd behind)": gap,
                         "wrong declarations": binomial_interval(out["declared best"] + out["declared another"],
                                                                 args.tied_reps), "runs": out["runs"]})
    for gap in GAPS:
        designs = [(" ".join(map(str, plan)), plan) for plan in PLANS] + [(f"fixed {n}", (n,)) for n in FIXED]
        for name, looks in designs:
            out = simulate(means(gap), looks, args.reps)
            row = {"gap (sd)": gap, "design": name, "declares the best": out["declared best"],
                   "declares another": out["declared another"], "best ranked first": out["best ranked first"],
                   "runs": out["runs"], "fixed design of equal power": "", "race / fixed runs": ""}
            if len(looks) > 1 and out["declared best"] > 0:
                n = fixed_reaching(means(gap), out["declared best"], args.reps)
                row["fixed design of equal power"] = f"> {MAX_FIXED} seeds" if n is None else \
                    f"{n} seeds, {n * CONFIGURATIONS} runs"
                row["race / fixed runs"] = "" if n is None else f"{out['runs'] / (n * CONFIGURATIONS):.2f}"
            power.append(row)
    notes = [f"{CONFIGURATIONS} configurations: the best at {BEST:g}, {RUNNERS_UP} runners-up `gap` sd behind, the "
             f"others gap + {BEHIND[0]:g} to gap + {BEHIND[1]:g} sd behind; noise sd {NOISE_SD[0]:g} to "
             f"{NOISE_SD[1]:g} (1 sd = 1 ACC point), seed offsets of sd {SEED_OFFSET_SD:g} shared by every "
             f"configuration, ACC on a lattice of {LATTICE:.3f} points (5 tasks x 72 images)",
             f"alpha {racing.ALPHA:g}; tied: the best and the first runner-up have the same mean, any declaration "
             f"is wrong; {args.tied_reps} simulated experiments per tied row, {args.reps} per power row",
             "fixed design: every configuration on n seeds, one look (the same test at level alpha); of equal power: "
             "the fewest seeds at which it declares the true best at least as often as the race"]
    common.report("benchmarks.racing", argv, args, torch.device("cpu"), "10. Racing for the best configuration",
                  ["Wrong declarations, the top two tied:\n\n" + common.table(tied),
                   "Finding the true best:\n\n" + common.table(power)], notes)
    return {"tied": tied, "power": power}


if __name__ == "__main__":
    main()
