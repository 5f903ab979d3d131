"""Summary statistics of timing samples, and the MLPerf time-to-accuracy score."""
import math

import numpy as np

NOISY_IQR_RATIO = 0.10  # a cell whose IQR is over 10 % of its median is flagged noisy


def summarize(samples) -> dict:
    """median, IQR (75th - 25th percentile, linear interpolation), min, mean and the
    noisy flag of a list of timings in seconds; every sample must be a finite >= 0."""
    a = np.asarray(samples, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError("summarize needs a non-empty list of timing samples")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"timing samples must be finite and non-negative, got {a.tolist()}")
    q1, median, q3 = (float(v) for v in np.percentile(a, [25, 50, 75]))
    iqr = q3 - q1
    return {"median_s": median, "iqr_s": iqr, "min_s": float(a.min()), "mean_s": float(a.mean()),
            "noisy": bool(median > 0 and iqr / median > NOISY_IQR_RATIO)}


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
