"""The one comparison every check of the suite makes: named outputs against the
reference's, each output on its own.

A kernel version returns every buffer it writes (an in-place update returns p,
m and v; a loss kernel returns the loss and the gradient), the reference returns
the same names, and ``compare`` judges each pair separately, so a wrong small
output cannot hide behind a large correct one packed beside it.

Two measures per output, both must pass:
- element-wise: |got - want| / (|want| + rms(want)), the largest over the array.
  Dividing by |want| alone would fail near-zero entries of a sum whose terms are
  large; adding the output's own rms keeps the measure relative to its scale.
- relative L2: ||got - want|| / scale, scale = ||want|| unless the caller names
  another (backend validation divides by how far each parameter moved).

The tolerance grows with the reduction length ``depth`` (a dot product of k
terms accumulates rounding like sqrt(k) in any summation order): ``TOLERANCE
[dtype] * sqrt(depth)``.
"""
from dataclasses import dataclass, field

import numpy as np

# Per-element relative error allowed for a reduction of length 1. 64 ulp of float32
# covers fused/approximate transcendental functions (exp, log, sigmoid) and FMA
# contraction; a planted error of a percent is 1e5 times larger.
TOLERANCE = {"float32": 64 * float(np.finfo(np.float32).eps),
             "float64": 64 * float(np.finfo(np.float64).eps)}


@dataclass
class Comparison:
    ok: bool
    worst: float                       # the largest error over every output and measure
    errors: dict = field(default_factory=dict)   # output -> {"elementwise", "l2"}
    message: str = ""


def tolerance_for(dtype, depth=1) -> float:
    return TOLERANCE[np.dtype(dtype).name] * float(np.sqrt(max(1, depth)))


def _as_dict(outputs, names):
    if isinstance(outputs, dict):
        return outputs
    if not isinstance(outputs, (tuple, list)):
        outputs = (outputs,)
    if names is None:
        names = [f"out{i}" for i in range(len(outputs))]
    if len(outputs) != len(names):
        raise ValueError(f"{len(outputs)} outputs returned, expected {len(names)} ({', '.join(names)})")
    return dict(zip(names, outputs))


def compare(got, want, tolerance, names=None, scale=None, elementwise=True) -> Comparison:
    """Judge each output of ``got`` against the same-named output of ``want``.

    ``got``/``want``: dicts of arrays (or scalars), or tuples in the order ``names``
    gives. ``tolerance``: a float, or a dict per output. ``scale``: per-output
    divisor of the L2 error (default: the reference's own norm). ``elementwise``:
    also require the element-wise measure (kernels), or only the L2 one
    (parameters after training steps, where single elements may legitimately
    differ, e.g. a max-pool tie broken the other way).
    """
    got, want = _as_dict(got, names), _as_dict(want, names)
    missing = [k for k in want if k not in got]
    if missing:
        return Comparison(False, float("inf"), message=f"missing outputs: {', '.join(missing)}")
    errors, worst, problems = {}, 0.0, []
    for name, w in want.items():
        g = got[name]
        w64 = np.asarray(w, dtype=np.float64)
        g_arr = np.asarray(g)
        tol = tolerance[name] if isinstance(tolerance, dict) else tolerance
        if g_arr.shape != w64.shape:
            problems.append(f"{name}: shape {g_arr.shape}, expected {w64.shape}")
            worst = float("inf")
            continue
        g64 = g_arr.astype(np.float64)
        finite = np.isfinite(w64)
        if not np.array_equal(np.isfinite(g64), finite):
            problems.append(f"{name}: non-finite values where the reference has finite ones")
            worst = float("inf")
            continue
        diff = np.where(finite, g64 - w64, 0.0)
        wf = np.where(finite, w64, 0.0)
        norm = float(np.linalg.norm(wf.ravel()))
        divisor = (scale or {}).get(name, norm) if isinstance(scale, dict) else (scale or norm)
        divisor = max(divisor, 1e-30)
        l2 = float(np.linalg.norm(diff.ravel())) / divisor if diff.size else 0.0
        entry = {"l2": l2}
        if elementwise and diff.size:
            rms = norm / np.sqrt(diff.size)
            entry["elementwise"] = float(np.max(np.abs(diff) / (np.abs(wf) + rms + 1e-30)))
        errors[name] = entry
        bad = {m: e for m, e in entry.items() if not e <= tol}
        worst = max(worst, *entry.values())
        if bad:
            problems.append(f"{name}: " + ", ".join(f"{m} error {e:.3g}" for m, e in bad.items())
                            + f" > {tol:.3g}")
    if problems:
        return Comparison(False, worst, errors, "; ".join(problems))
    return Comparison(True, worst, errors)
