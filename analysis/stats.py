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
  n >= 2, and each claim keeps its own variance: pooling variances across claims was measured to
  break the error rate when variances differ (docs/guides/analysis.md).
- **The accuracy lattice.** Accuracies count test images, so differences move in steps of one image
  (`step`, in ACC points). Where the differences spread less than one step, their spread measures the
  lattice, not the seeds, and t is meaningless (arbitrarily large): such a comparison is a tie of
  counts, and the exact sign-flip p-value (`scipy.stats.permutation_test`) is used. The sign-flip test
  cannot go below p = 2 / 2^n (0.0625 at 5 seeds), so it is no general replacement for the t-test.
- **Multiplicity.** Within one family of claims, the sequentially rejective weighted-Bonferroni graph
  (Bretz, Maurer, Brannath and Posch 2009; adjusted p-values as in Bretz et al. 2011). With equal
  weights passed on equally it is Holm-Bonferroni; gated claims (a cell of a main effect) start with
  weight 0 and receive weight only from a rejected parent. Every such graph controls the familywise
  error rate strongly, under any dependence between the claims, and ours share runs.
- **Power.** The minimum detectable difference (80% power, two-sided) at the level the claim is
  first tested at, from the noncentral t distribution (`scipy.stats.nct`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import optimize, stats

ALPHA = 0.05  # familywise error rate of one family of claims
CONFIDENCE = 0.95  # of every interval
POWER = 0.8  # of the minimum detectable difference
REAL, NOT_ESTABLISHED, NOT_TESTED = "real", "not established", "not tested"
MAX_SEEDS = 10_000  # seeds_needed searches no further
RESOLUTION = 0.01  # ACC points: the smallest spread that is ever a spread (when the lattice step is unknown)
EXACT_UP_TO = 16  # pairs up to which the sign-flip test enumerates all 2^n sign patterns


@dataclass(frozen=True)
class PairedTest:
    """The paired t-test of differences (..., n) along the last axis; every field has the leading shape."""

    n: np.ndarray
    diff: np.ndarray  # mean difference
    sd: np.ndarray  # sample std (ddof=1) of the differences
    ci_low: np.ndarray  # the t-interval; NaN for a tie of counts (no t) and below 2 pairs
    ci_high: np.ndarray
    p_value: np.ndarray  # two-sided; NaN where n < 2
    tie: np.ndarray  # spread below one step of the accuracy lattice: p is the exact sign-flip p


def paired_test(differences: ArrayLike, step: float = 0.0) -> PairedTest:
    """The paired t-test and 95% t-interval of `differences` (..., n), one test per leading index; where the
    differences spread less than `step` (one test image, in ACC points), the exact sign-flip test."""
    d = np.asarray(differences, dtype=float)  # (..., n)
    n = np.full(d.shape[:-1], d.shape[-1])
    diff = d.mean(axis=-1)
    if d.shape[-1] < 2:  # one pair: no spread, so no test and no interval
        nan = np.full(d.shape[:-1], np.nan)
        return PairedTest(n, diff, nan, nan, nan, nan, np.zeros(d.shape[:-1], dtype=bool))
    sd = d.std(axis=-1, ddof=1)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # constant differences: handled below
        result = stats.ttest_1samp(d, 0.0, axis=-1)
        ci = result.confidence_interval(CONFIDENCE)
    tie = sd < max(step, RESOLUTION)
    p_value = np.array(result.pvalue, dtype=float)
    if tie.any():
        p_value[tie] = sign_flip_p(d[tie])
    return PairedTest(n, diff, sd, np.where(tie, np.nan, ci.low), np.where(tie, np.nan, ci.high), p_value, tie)


def sign_flip_p(differences: np.ndarray) -> np.ndarray:
    """The exact two-sided sign-flip permutation p-value of the mean of each row of `differences` (k, n) (a
    seeded Monte Carlo estimate above EXACT_UP_TO pairs): 2 / 2^n when all n share one sign, near 1 around 0."""
    exact = differences.shape[-1] <= EXACT_UP_TO
    return stats.permutation_test((differences,), np.mean, permutation_type="samples", vectorized=True, axis=-1,
                                  n_resamples=np.inf if exact else 2**EXACT_UP_TO, random_state=0).pvalue


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


def graphical(p_values: ArrayLike, weights: ArrayLike, transitions: ArrayLike,
              until: float = np.inf) -> np.ndarray:
    """Adjusted p-values of the sequentially rejective weighted-Bonferroni graph over one family (Bretz et al.
    2009, 2011): claim i starts at level alpha x weights[i]; when it is rejected, its weight passes to the others
    by row i of `transitions` (m, m; rows sum to at most 1), and the graph is updated. NaN (no test) leaves the
    family at the start, its weight passed on as if rejected. A claim is rejected at level alpha exactly when its
    adjusted p is below alpha; with equal weights and equal transitions this is Holm's procedure. `until` stops
    early, once no claim left can be rejected below it: those claims get the last adjusted p (a lower bound)."""
    p = np.asarray(p_values, dtype=float)
    w = np.array(weights, dtype=float)
    g = np.array(transitions, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    active = np.ones(p.shape, dtype=bool)

    def remove(j: int) -> None:  # pass j's weight on and reroute the edges through j (the graph update)
        active[j] = False
        w[active] += w[j] * g[j, active]
        loop = 1 - g[:, j] * g[j, :]  # (m,): 1 - g_lj g_jl, the weight l keeps after a round trip through j
        with np.errstate(divide="ignore", invalid="ignore"):
            rerouted = np.where(loop[:, None] > 0, (g + np.outer(g[:, j], g[j, :])) / loop[:, None], 0.0)
        np.fill_diagonal(rerouted, 0.0)
        g[:] = rerouted
        w[j] = 0.0
        g[j, :] = g[:, j] = 0.0

    for j in np.flatnonzero(np.isnan(p)):
        remove(j)
    floor = 0.0
    while active.any() and floor < until:
        candidates = np.flatnonzero(active)
        with np.errstate(divide="ignore"):
            ratio = np.where(w[candidates] > 0, p[candidates] / w[candidates], np.inf)
        j = candidates[np.argmin(ratio)]
        floor = max(floor, float(ratio.min()))
        adjusted[j] = min(1.0, floor)
        remove(j)
    adjusted[active] = min(1.0, floor)
    return adjusted


def holm_graph(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Holm's procedure as a graph: weights 1/m, each claim passing its weight equally to the others."""
    transitions = np.full((m, m), 1.0 / max(m - 1, 1))
    np.fill_diagonal(transitions, 0.0)
    return np.full(m, 1.0 / max(m, 1)), transitions


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


def compare(a: pd.Series, b: pd.Series, step: float = 0.0) -> dict:
    """The paired comparison of a against b. Each Series holds one metric indexed by seed, or by (seed, level
    of a factor the claim averages over). Runs are matched on the whole index; the matched differences are
    averaged within each seed (index level 0), and the seeds are the pairs tested (`step`: see paired_test).
    Runs without a match are dropped and counted."""
    a, b = _one_per_index(a), _one_per_index(b)
    matched = a.index.intersection(b.index)
    per_seed = (a[matched] - b[matched]).groupby(level=0).mean() if len(matched) else pd.Series(dtype=float)
    test = paired_test(per_seed.to_numpy()[None, :], step) if len(per_seed) else None
    row = {"n_pairs": len(per_seed), "n_run_pairs": len(matched), "n_unmatched": len(a) + len(b) - 2 * len(matched)}
    for field in ("diff", "sd", "ci_low", "ci_high", "p_value"):
        row[field] = float(getattr(test, field)[0]) if test is not None else float("nan")
    row["tie"] = bool(test.tie[0]) if test is not None else False
    return row


def leader_first(a_name: str, a: pd.Series, b_name: str, b: pd.Series, step: float = 0.0) -> dict:
    """`compare` with a and b ordered so that the mean difference a - b is >= 0; names in "a" and "b"."""
    row = compare(a, b, step)
    if row["diff"] < 0:  # the test is symmetric: b - a has the negated mean and the mirrored interval
        row.update(diff=-row["diff"], ci_low=-row["ci_high"], ci_high=-row["ci_low"])
        a_name, b_name = b_name, a_name
    return {"a": a_name, "b": b_name, **row}


def family(rows: pd.DataFrame, name: str, weights: ArrayLike | None = None,
           transitions: ArrayLike | None = None) -> pd.DataFrame:
    """`rows` (one comparison each, from `compare`) as the family `name`: adjusted p by the graph (Holm
    without one), the level each claim is first tested at (a gated claim's: what its parent passes it), the
    minimum detectable difference there, and the verdict (`real` only below ALPHA adjusted)."""
    rows = rows.copy()
    p = rows["p_value"].to_numpy(dtype=float)
    if weights is None:
        weights, transitions = holm_graph(len(rows))
    weights, transitions = np.asarray(weights, dtype=float), np.asarray(transitions, dtype=float)
    rows["family"] = name
    rows["family_size"] = int(np.isfinite(p).sum())
    rows["p_adjusted"] = graphical(p, weights, transitions)
    gated = (weights[:, None] * transitions).max(axis=0, initial=0.0)
    rows["level"] = ALPHA * np.where(weights > 0, weights, gated)
    spread = list(zip(rows["sd"], rows["n_pairs"], rows["level"], rows["tie"], rows["diff"], strict=True))
    rows["mde"] = [mde(sd, int(n), level) if not tie else float("nan") for sd, n, level, tie, _ in spread]
    # the seeds at which a true difference as large as the one seen would be found: an estimate, from this spread
    rows["seeds_needed"] = [seeds_needed(abs(d), sd, level) if n >= 2 and not tie else None
                            for sd, n, level, tie, d in spread]
    rows["verdict"] = np.where(rows["n_pairs"] < 2, NOT_TESTED,
                               np.where(rows["p_adjusted"] < ALPHA, REAL, NOT_ESTABLISHED))
    return rows


def _one_per_index(values: pd.Series) -> pd.Series:
    """Runs repeated under one index (the same configuration and seed in two experiments) count once, averaged."""
    values = values.dropna()
    if values.index.is_unique:
        return values
    return values.groupby(level=list(range(values.index.nlevels))).mean()
