"""Statistics of timing samples: medians with confidence intervals, paired ratios,
the comparison of two sets of samples, and the MLPerf time-to-accuracy score.

The intervals are distribution-free. A median's comes from order statistics
(the number of samples below the true median is Binomial(n, 1/2)); a ratio
between two cells of one run comes from their per-round ratios, paired by
round, which is what the interleaved rounds (bench/supervise.py) are for; a
shift between two runs (``shift``) is the Hodges-Lehmann estimate on log times
with the interval the Mann-Whitney U distribution gives.
"""
import math

import numpy as np

NOISY_IQR_RATIO = 0.10   # a cell whose IQR is over 10 % of its median is flagged noisy
NOISY_STEAL = 0.05       # ... or that lost over 5 % of the CPU to the hypervisor in a sample
CONFIDENCE = 0.95


def _binom_half_cdf(k, n):
    """P(B <= k) for B ~ Binomial(n, 1/2)."""
    from scipy.stats import binom
    return float(binom.cdf(k, n, 0.5))


def median_ci(samples, confidence=CONFIDENCE):
    """(low, high, coverage): the narrowest order-statistic interval [x_(j), x_(n+1-j)]
    whose coverage of the true median reaches ``confidence``; with too few samples
    for it, the whole range and the lower coverage it has (5 samples: 93.8 %)."""
    x = sorted(float(v) for v in samples)
    n = len(x)
    if n == 0:
        raise ValueError("no samples")
    if n == 1:
        return x[0], x[0], 0.0
    best = (x[0], x[-1], 1 - 2 * _binom_half_cdf(0, n))
    for j in range(2, n // 2 + 1):
        coverage = 1 - 2 * _binom_half_cdf(j - 1, n)
        if coverage < confidence:
            break
        best = (x[j - 1], x[n - j], coverage)
    return best


def summarize(samples) -> dict:
    """median, IQR (75th - 25th percentile, linear interpolation), min, mean, the
    median's confidence interval and the noisy flag of a list of timings in
    seconds; every sample must be a finite number >= 0."""
    a = np.asarray(samples, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("summarize needs a non-empty list of timing samples")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"timing samples must be finite and non-negative, got {a.tolist()}")
    q1, median, q3 = (float(v) for v in np.percentile(a, [25, 50, 75]))
    iqr = q3 - q1
    low, high, coverage = median_ci(a)
    noisy = bool(median > 0 and iqr / median > NOISY_IQR_RATIO)
    return {"median_s": median, "iqr_s": iqr, "min_s": float(a.min()), "mean_s": float(a.mean()),
            "ci_low_s": low, "ci_high_s": high, "ci_coverage": round(coverage, 4), "noisy": noisy}


def paired_ratio(base, other, confidence=CONFIDENCE):
    """Speed-up of ``other`` over ``base`` from samples paired by round:
    {"ratio": median of base[r] / other[r], "low", "high", "coverage", "rounds"},
    or None when fewer than two rounds pair up."""
    pairs = [(b, o) for b, o in zip(base, other) if b is not None and o is not None and o > 0]
    if len(pairs) < 2:
        return None
    ratios = [b / o for b, o in pairs]
    low, high, coverage = median_ci(ratios, confidence)
    return {"ratio": float(np.median(ratios)), "low": low, "high": high,
            "coverage": round(coverage, 4), "rounds": len(ratios)}


def ratio_ci_unpaired(base, other, confidence=CONFIDENCE):
    """Speed-up of ``other`` over ``base`` from unpaired samples (different runs):
    the ratio of medians, and the interval from the Hodges-Lehmann shift of log times."""
    est, low, high, _ = shift(other, base, 1 - confidence)
    return {"ratio": math.exp(-est), "low": math.exp(-high), "high": math.exp(-low)}


def u_null_counts(n1, n2):
    """How many of the C(n1+n2, n1) orderings give each U = 0 .. n1*n2 (no ties):
    the exact null distribution whose quantile bounds the Hodges-Lehmann interval
    (scipy gives the test's p-value, not this interval)."""
    table = {}
    for m in range(n1 + 1):
        for n in range(n2 + 1):
            if m == 0 or n == 0:
                table[m, n] = np.ones(1)
                continue
            c = np.zeros(m * n + 1)
            a = table[m - 1, n]
            c[n:n + len(a)] += a
            b = table[m, n - 1]
            c[:len(b)] += b
            table[m, n] = c
    return table[n1, n2]


def _u_critical(n1, n2, alpha):
    """The largest k with P(U <= k) <= alpha/2 under the null (exact below 40
    samples in all, normal approximation above), or -1 when none exists."""
    if n1 + n2 <= 40:
        counts = u_null_counts(n1, n2)
        cdf = np.cumsum(counts) / counts.sum()
        below = np.nonzero(cdf <= alpha / 2)[0]
        return int(below[-1]) if below.size else -1
    mu, sigma = n1 * n2 / 2, math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    from scipy.stats import norm
    z = float(norm.ppf(1 - alpha / 2))
    return int(math.floor(mu - z * sigma - 0.5))


def shift(x, y, alpha=0.01):
    """(estimate, low, high, resolvable) of the shift of log(x) over log(y): the
    Hodges-Lehmann estimate (median of every pairwise difference) and its
    1 - alpha interval from the U distribution; resolvable is False when the
    sample counts are too small for any interval at that level (the whole range
    of differences is returned then)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    d = np.sort((lx[:, None] - ly[None, :]).ravel())
    k = _u_critical(len(lx), len(ly), alpha)
    est = float(np.median(d))
    if k < 0:
        return est, float(d[0]), float(d[-1]), False
    return est, float(d[k]), float(d[len(d) - 1 - k]), True


def mlperf_score(times_to_target):
    """MLPerf's time-to-train score over seeds: drop the fastest and the slowest run,
    average the rest. A run that never reached the target counts as infinitely
    slow (None or inf): one such run is dropped as the slowest, two or more make
    the score None. Fewer than 3 runs cannot drop both ends: None as well."""
    t = [math.inf if v is None else float(v) for v in times_to_target]
    if len(t) < 3:
        return None
    kept = sorted(t)[1:-1]
    if any(math.isinf(v) for v in kept):
        return None
    return float(np.mean(kept))
