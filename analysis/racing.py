"""A race for the best configuration: seeds go to the configurations still in contention, look by look.

Every configuration in the race runs the same seeds up to the next planned look (`looks`: seed counts,
increasing). After the look, configurations are compared seed-paired on validation ACC: for every ordered pair
(i, j) of configurations still in the race, the one-sided paired t-test of "i is better than j" on their per-seed
differences (`analysis.stats.paired_test`, with its exact sign-flip p where the differences spread less than one
validation image, `step`, as accuracy lattices make them). j leaves the race when some configuration still in it
beats it at the look's level;
a configuration whose run failed (after Tune's retries) leaves too, against no one. The race ends when one
configuration is left (the declared best: every other was beaten by one in the race) or after the last look; the
configurations still in contention are then ranked by their mean, each with its paired 95% interval against the
leader.

The guarantee: **a true best configuration leaves the race with probability at most `alpha`** (so, with a unique
best, the declared best is wrong, or the set left misses the best, at most `alpha` of the time). It is a union
bound, valid whatever the other configurations do and however the looks' sets of contenders came about: a best
configuration b leaves only if some other configuration beats it at some look, and each of those (C - 1)
comparisons at look k is made at level alpha_k / (C - 1), where C is the number of configurations that started
and the looks' shares alpha_k sum to alpha. The shares grow with the look's seed count (alpha_k proportional to
n_k): an early look on few seeds has little power whatever its share, so it is given little.
It assumes only that each one-sided p-value is valid when i is no better than b (Gaussian seed noise for the t
test); `python -m benchmarks.racing` measures it on an accuracy lattice, seed offsets and unequal variances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from analysis import stats

ALPHA = stats.ALPHA


@dataclass(frozen=True)
class Look:
    seeds: int  # every configuration in the race at this look had run this many seeds
    level: float  # one-sided level of each paired comparison at this look
    contenders: tuple[int, ...]  # configurations in the race when the look was taken
    left: dict[int, int | None]  # configuration that left -> the one that beat it (None: a failed run)


@dataclass(frozen=True)
class Race:
    plan: tuple[int, ...]  # the planned looks (seed counts)
    looks: list[Look]  # the looks taken, in order
    contenders: tuple[int, ...]  # in the race after the looks taken, best mean first
    declared: int | None  # the one configuration left, if the race came down to one

    @property
    def finished(self) -> bool:
        return self.declared is not None or len(self.looks) == len(self.plan) or not self.contenders

    @property
    def next_seeds(self) -> int | None:
        """The seed count every contender must reach for the next look; None when the race has ended."""
        return None if self.finished else self.plan[len(self.looks)]

    @property
    def runs(self) -> int:
        """(configuration, seed) runs the looks taken used."""
        before, total = 0, 0
        for look in self.looks:
            total += len(look.contenders) * (look.seeds - before)
            before = look.seeds
        return total


def check_looks(looks: Sequence[int]) -> str | None:
    """Why `looks` is not a plan (one line), or None: seed counts, at least 2, strictly increasing."""
    if not looks:
        return "give at least one look"
    if looks[0] < 2:
        return f"a look needs at least 2 seeds (a paired test needs 2), got {looks[0]}"
    if any(b <= a for a, b in zip(looks, looks[1:], strict=False)):
        return f"looks must increase, got {' '.join(map(str, looks))}"
    return None


def look_shares(looks: Sequence[int], alpha: float = ALPHA) -> np.ndarray:
    """Each look's share of alpha, in proportion to its seed count (the shares sum to alpha)."""
    seeds = np.asarray(looks, dtype=float)
    return alpha * seeds / seeds.sum()


def look_levels(looks: Sequence[int], configurations: int, alpha: float = ALPHA) -> np.ndarray:
    """The one-sided level of each comparison at each look: the look's share of alpha, split over the
    (configurations - 1) comparisons a best configuration can lose (Bonferroni)."""
    return look_shares(looks, alpha) / max(configurations - 1, 1)


def one_sided_p(differences: ArrayLike, step: float = 0.0) -> np.ndarray:
    """p-value of "the mean difference is above 0" for each row of `differences` (..., n), from the two-sided
    paired test (t, or exact sign-flip where every difference is equal): both are symmetric."""
    test = stats.paired_test(differences, step)
    return np.where(test.diff > 0, test.p_value / 2, 1 - test.p_value / 2)


def beaten_by(values: np.ndarray, contenders: Sequence[int], level: float, step: float = 0.0) -> dict[int, int]:
    """Contenders that another contender beats at `level`, each with the one that beats it most surely.
    `values`: (configurations, n) validation ACC, seeds in the same order for every configuration."""
    ids = np.asarray(contenders)
    if len(ids) < 2:
        return {}
    winner, loser = (ids[k] for k in np.nonzero(~np.eye(len(ids), dtype=bool)))  # every ordered pair, (m,)
    p = one_sided_p(values[winner] - values[loser], step)  # (m,)
    out: dict[int, int] = {}
    for k in np.argsort(p, kind="stable"):
        if p[k] <= level and int(loser[k]) not in out:
            out[int(loser[k])] = int(winner[k])
    return out


def race(values: ArrayLike, looks: Sequence[int], failed: ArrayLike | None = None, alpha: float = ALPHA,
         step: float = 0.0) -> Race:
    """Replay the race on what has run: `values` (configurations, seeds) validation ACC, NaN where a run has no
    result (yet); `failed`, the same shape, True where a run ended without one; `step`, one validation image in
    ACC points (race_report.Outcomes.step). Looks are taken in order while every configuration in the race has
    ended all of the look's seeds; the replay is a pure function of the data, so a race rebuilt from its results
    makes the decisions it made live."""
    acc = np.asarray(values, dtype=float)  # (C, S)
    broken = np.zeros(acc.shape, dtype=bool) if failed is None else np.asarray(failed, dtype=bool)
    levels = look_levels(looks, len(acc), alpha)
    contenders, taken = list(range(len(acc))), []
    for n, level in zip(looks, levels, strict=True):
        if len(contenders) < 2 or n > acc.shape[1]:
            break
        ended = ~np.isnan(acc[contenders, :n]) | broken[contenders, :n]
        if not ended.all():
            break
        left: dict[int, int | None] = {c: None for c in contenders if broken[c, :n].any()}
        alive = [c for c in contenders if c not in left]
        left.update(beaten_by(acc[:, :n], alive, level, step))
        taken.append(Look(n, float(level), tuple(contenders), left))
        contenders = [c for c in contenders if c not in left]
    seeds = taken[-1].seeds if taken else 0
    means = acc[contenders, :seeds].mean(axis=1) if seeds else np.zeros(len(contenders))
    ranked = tuple(c for _, c in sorted(zip(-means, contenders, strict=True)))
    return Race(tuple(looks), taken, ranked, ranked[0] if len(ranked) == 1 and taken else None)


def standings(values: ArrayLike, result: Race, step: float = 0.0) -> list[dict]:
    """The configurations in contention, best mean first: n, mean, and the paired difference to the leader with
    its 95% t-interval (the leader's own row, and a tie of counts below `step`: NaN)."""
    acc = np.asarray(values, dtype=float)
    n = result.looks[-1].seeds if result.looks else 0
    if not result.contenders or n == 0:
        return []
    leader = acc[result.contenders[0], :n]
    rows = []
    for c in result.contenders:
        test = stats.paired_test(leader - acc[c, :n], step)
        lead = c == result.contenders[0]
        rows.append({"configuration": c, "n": n, "mean": float(acc[c, :n].mean()),
                     "behind": np.nan if lead else float(test.diff), "ci_low": np.nan if lead else float(test.ci_low),
                     "ci_high": np.nan if lead else float(test.ci_high)})
    return rows
