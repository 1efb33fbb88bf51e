"""Seed-paired comparisons: the one place where the report decides that A is better than B.

Every verdict the report gives (init against init, growth criterion against growth criterion, PBT
against a static choice, the configurations that cannot be told apart from the chosen best) is made
here, and made the same way:

- **Pairing.** Runs with the same seed share the model init, the class order and (same init and
  density) the first mask draw, so their difference on that seed is free of the seed's offset. Where a
  claim averages over another factor (init compared across the growth criteria), runs are matched on
  the seed and that factor's level, and the matched differences are averaged within each seed. The
  seed is the unit drawn at random, so it is the unit the test counts: counting each (seed, growth)
  pair as independent would understate the spread whenever a seed's luck is shared across its growth
  criteria, as the shared first mask draw makes it.
- **Test.** The paired t-test: a one-sample t-test of the per-seed differences against 0
  (`scipy.stats.ttest_1samp`) with its 95% t-interval. It is exact under Gaussian seed noise at any
  n >= 2. The exact sign-flip permutation test assumes less, but cannot go below p = 2 / 2^n (0.0625
  at 5 seeds), so at the seed counts sweeps use it could never call anything real. Where every
  difference is the same number (std below RESOLUTION) the t statistic is undefined or meaningless,
  and the exact sign-flip p-value (`scipy.stats.permutation_test`) is used.
- **Multiplicity.** Holm-Bonferroni over one family of claims (scipy has no Holm; it is four lines).
  It controls the familywise error rate under any dependence between the claims, and ours share runs.
- **Power.** The minimum detectable difference (80% power, two-sided) at Holm's strictest level
  alpha / m, from the noncentral t distribution (`scipy.stats.nct`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import optimize, stats

ALPHA = 0.05  # familywise error rate of one report's claims
CONFIDENCE = 0.95  # of every interval
POWER = 0.8  # of the minimum detectable difference
REAL, NOT_ESTABLISHED, NO_TEST = "real", "not established", "no test"
MAX_SEEDS = 10_000  # seeds_needed searches no further
RESOLUTION = 0.01  # paired differences whose std is below this (ACC points) count as all equal
EXACT_UP_TO = 16  # pairs up to which the sign-flip test enumerates all 2^n sign patterns


@dataclass(frozen=True)
class PairedTest:
    """The paired t-test of differences (..., n) along the last axis; every field has the leading shape."""

    n: np.ndarray
    diff: np.ndarray  # mean difference
    sd: np.ndarray  # sample std (ddof=1) of the differences
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray  # two-sided; NaN where n < 2


def paired_test(differences: ArrayLike) -> PairedTest:
    """The paired t-test and 95% t-interval of `differences` (..., n), one test per leading index."""
    d = np.asarray(differences, dtype=float)  # (..., n)
    n = np.full(d.shape[:-1], d.shape[-1])
    diff = d.mean(axis=-1)
    if d.shape[-1] < 2:  # one pair: no spread, so no test and no interval
        nan = np.full(d.shape[:-1], np.nan)
        return PairedTest(n, diff, nan, nan, nan, nan)
    sd = d.std(axis=-1, ddof=1)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant differences: handled below
        result = stats.ttest_1samp(d, 0.0, axis=-1)
        ci = result.confidence_interval(CONFIDENCE)
    # Accuracies count test images, so two seeds can differ by the same count (equal up to the tasks' sizes):
    # such a spread measures the lattice, not the seeds, and would make t arbitrarily large.
    constant = sd < RESOLUTION
    p_value = np.array(result.pvalue, dtype=float)
    for index in map(tuple, np.argwhere(constant)):
        p_value[index] = sign_flip_p(d[index])
    sd = np.where(constant, 0.0, sd)  # no spread: no t-interval either
    return PairedTest(n, diff, sd, np.where(constant, np.nan, ci.low), np.where(constant, np.nan, ci.high), p_value)


def sign_flip_p(differences: np.ndarray) -> float:
    """The exact two-sided sign-flip permutation p-value of the mean of `differences` (n,) (a seeded Monte Carlo
    estimate above EXACT_UP_TO pairs): 2 / 2^n when all n share one sign, near 1 around 0."""
    exact = len(differences) <= EXACT_UP_TO
    return float(stats.permutation_test((differences,), np.mean, permutation_type="samples",
                                        n_resamples=np.inf if exact else 2**EXACT_UP_TO, random_state=0).pvalue)


def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of one family; NaN (no test) stays NaN and does not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    # the i-th smallest p is compared with alpha / (m - i): scale it by (m - i), keep the sequence monotone
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    return adjusted


def power(effect: ArrayLike, sd: ArrayLike, n: ArrayLike, alpha: float = ALPHA) -> np.ndarray:
    """Probability that the two-sided paired t-test at level `alpha` rejects, for a true mean difference
    `effect` with differences of std `sd` over `n` pairs (noncentral t)."""
    n = np.asarray(n, dtype=float)
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    noncentrality = np.asarray(effect, dtype=float) / np.asarray(sd, dtype=float) * np.sqrt(n)
    # the lower tail as the upper tail of -noncentrality: nct.cdf gives NaN there for some large values
    return stats.nct.sf(critical, df, noncentrality) + stats.nct.sf(critical, df, -noncentrality)


def mde(sd: float, n: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest true difference the paired t-test detects with probability `target`; NaN below 2 pairs
    and where the differences have no spread (the t-test does not apply there)."""
    if n < 2 or not np.isfinite(sd) or sd == 0:
        return float("nan")

    def short(effect: float) -> float:  # in units of sd
        return float(power(effect, 1.0, n, alpha)) - target

    high = 1.0
    while short(high) < 0:
        high *= 2
    return float(optimize.brentq(short, 0.0, high, xtol=1e-6)) * sd


def seeds_needed(effect: float, sd: float, alpha: float = ALPHA, target: float = POWER) -> int | None:
    """The fewest seeds (pairs) at which a true difference `effect` is detected with probability `target`;
    None when more than MAX_SEEDS would be needed, or the spread is unknown or 0."""
    if not np.isfinite(sd) or sd <= 0:
        return None
    n = np.arange(2, MAX_SEEDS + 1)
    enough = np.flatnonzero(power(effect, sd, n, alpha) >= target)
    return int(n[enough[0]]) if len(enough) else None


def t_interval(mean: ArrayLike, std: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The 95% t-interval of a mean over n seeds from its sample std (NaN below 2 seeds)."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        low, high = stats.t.interval(CONFIDENCE, n - 1, loc=np.asarray(mean, dtype=float),
                                     scale=np.asarray(std, dtype=float) / np.sqrt(n))
    return np.where(n >= 2, low, np.nan), np.where(n >= 2, high, np.nan)


def compare(a: pd.Series, b: pd.Series) -> dict:
    """The paired comparison of a against b. Each Series holds one metric indexed by seed, or by (seed,
    level of a factor the claim averages over). Runs are matched on the whole index; the matched
    differences are averaged within each seed (index level 0), and the seeds are the pairs tested.
    Runs without a match are dropped and counted."""
    a, b = _one_per_index(a), _one_per_index(b)
    matched = a.index.intersection(b.index)
    per_seed = (a[matched] - b[matched]).groupby(level=0).mean() if len(matched) else pd.Series(dtype=float)
    test = paired_test(per_seed.to_numpy()[None, :]) if len(per_seed) else None
    row = {"n_pairs": len(per_seed), "n_run_pairs": len(matched), "n_unmatched": len(a) + len(b) - 2 * len(matched)}
    for field in ("diff", "sd", "ci_low", "ci_high", "p_value"):
        row[field] = float(getattr(test, field)[0]) if test is not None else float("nan")
    return row


def leader_first(a_name: str, a: pd.Series, b_name: str, b: pd.Series) -> dict:
    """`compare` with a and b ordered so that the mean difference a - b is >= 0; names in "a" and "b"."""
    row = compare(a, b)
    if row["diff"] < 0:  # the test is symmetric: b - a has the negated mean and the mirrored interval
        row.update(diff=-row["diff"], ci_low=-row["ci_high"], ci_high=-row["ci_low"])
        a_name, b_name = b_name, a_name
    return {"a": a_name, "b": b_name, **row}


def family(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` (one comparison each, from `compare`) as one family of claims: Holm-adjusted p, the minimum
    detectable difference at Holm's strictest level, and the verdict (`real` only below ALPHA adjusted)."""
    rows = rows.copy()
    m = int(rows["p_value"].notna().sum())
    rows["p_adjusted"] = holm(rows["p_value"].to_numpy(dtype=float))
    strictest = ALPHA / max(m, 1)
    rows["mde"] = [mde(sd, int(n), strictest) for sd, n in zip(rows["sd"], rows["n_pairs"], strict=True)]
    rows["verdict"] = np.where(rows["n_pairs"] < 2, NO_TEST,
                               np.where(rows["p_adjusted"] < ALPHA, REAL, NOT_ESTABLISHED))
    return rows


def _one_per_index(values: pd.Series) -> pd.Series:
    """Runs repeated under one index (the same configuration and seed in two experiments) count once, averaged."""
    values = values.dropna()
    if values.index.is_unique:
        return values
    return values.groupby(level=list(range(values.index.nlevels))).mean()
