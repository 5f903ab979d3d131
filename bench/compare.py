"""`mnist-bench compare A B`: two runs side by side, each matched cell with a
verdict and its reason.

Cells are matched on their coordinates (MATCH_KEY). For a matched pair of valid
cells, B/A is the Hodges-Lehmann estimate of the ratio of their times (the
median of every pairwise log-ratio) with its 1 - alpha interval from the
Mann-Whitney U distribution, and a one-sided Mann-Whitney test gives p:

- slower: B/A >= --threshold and p < --alpha (a regression);
- faster: B/A <= 1/--threshold and p < --alpha;
- same:   the whole interval lies within [1/threshold, threshold];
- too noisy: none of these -- the interval reaches past the threshold without
  the test deciding (the reason says by how much), or the sample counts are
  too small for any interval at alpha.

Either condition alone of "slower" is noise: a big ratio from two or three
scattered samples, or a tiny but consistent shift. Cells not valid on both
sides (invalid, error, unavailable) are listed with their status and never
compared as timings; a cell valid in A but invalid or crashing in B is a
correctness regression ("broken").

Exit status: 0 when nothing regressed, 1 on a regression or breakage (for CI),
2 on bad input.
"""
import math
import os

import numpy as np

from .stats import shift

MATCH_KEY = ("kind", "model", "backend", "batch_size", "threads", "dataset", "train_samples",
             "shape", "dtype")


# -- the rank test ----------------------------------------------------------------

def mann_whitney_greater(x, y) -> float:
    """One-sided p-value that ``x`` tends to be larger than ``y``: scipy's
    Mann-Whitney U (exact without ties for small samples, else the normal
    approximation with tie and continuity corrections), the one statistic path."""
    from scipy.stats import mannwhitneyu
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0 or len(y) == 0:
        raise ValueError("the rank test needs at least one sample on each side")
    if np.all(np.concatenate([x, y]) == x[0]):  # every sample equal: no evidence either way
        return 1.0
    return float(mannwhitneyu(x, y, alternative="greater").pvalue)


# -- loading two runs ---------------------------------------------------------------

def resolve_run(name, results_dir="results") -> str:
    """The run file ``name`` means: a path, a run id, or a unique prefix of one."""
    if os.path.isfile(name):
        return name
    runs_dir = os.path.join(results_dir, "runs")
    exact = os.path.join(runs_dir, name + ".jsonl")
    if os.path.isfile(exact):
        return exact
    found = sorted(f for f in (os.listdir(runs_dir) if os.path.isdir(runs_dir) else [])
                   if f.startswith(name) and f.endswith(".jsonl"))
    if len(found) == 1:
        return os.path.join(runs_dir, found[0])
    if len(found) > 1:
        raise ValueError(f"run {name!r} is ambiguous in {runs_dir}: {', '.join(found[:5])}")
    raise ValueError(f"run {name!r}: neither a file nor a run id in {runs_dir}")


def match_value(v):
    """Hashable, comparable form of one coordinate (lists -> tuples, NaN/None -> None)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return tuple(match_value(x) for x in v)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (np.integer, np.floating)):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)  # pandas turns integer columns with gaps into floats
    return v


def load_run(path, skip_bad=False):
    """(run header, {match key: cell row}) of one run file."""
    from .store import read_results
    runs, cells = read_results([path], skip_bad)
    if len(runs) != 1:
        raise ValueError(f"{path}: holds {len(runs)} runs; compare takes one run per side")
    by_key = {}
    for row in cells.to_dict("records"):
        key = tuple(match_value(row.get(k)) for k in MATCH_KEY)
        if key in by_key:
            raise ValueError(f"{path}: two cells with the same coordinates {key}")
        by_key[key] = row
    return runs.iloc[0]["header"], by_key


# -- the comparison -------------------------------------------------------------------

def _samples(row):
    s = row.get("samples_s")
    return [float(v) for v in s] if isinstance(s, (list, tuple, np.ndarray)) else []


def compare_cells(a, b, threshold=1.10, alpha=0.01) -> dict:
    """Verdict for one matched pair of cells (either may be None: only in one run)."""
    out = {"a_status": a["status"] if a is not None else "absent",
           "b_status": b["status"] if b is not None else "absent",
           "a_median_s": None, "b_median_s": None, "ratio": None, "ratio_low": None,
           "ratio_high": None, "p_slower": None, "p_faster": None, "verdict": "", "note": ""}
    if a is None or b is None:
        out["verdict"] = "only in A" if b is None else "only in B"
        return out
    if out["a_status"] != "ok" or out["b_status"] != "ok":
        if out["a_status"] == "ok" and out["b_status"] in ("invalid", "error"):
            out["verdict"] = "broken"
            out["note"] = f"valid in A, {out['b_status']} in B: {b.get('error')}"
        else:
            out["verdict"] = "not compared"
            out["note"] = "; ".join(f"{side} {row['status']}: {row.get('error')}"
                                    for side, row in (("A", a), ("B", b)) if row["status"] != "ok")
        return out
    sa, sb = _samples(a), _samples(b)
    if not sa or not sb:
        out["verdict"] = "not compared"
        out["note"] = "no timing samples stored"
        return out
    out["a_median_s"], out["b_median_s"] = float(np.median(sa)), float(np.median(sb))
    est, low, high, resolvable = shift(sb, sa, alpha)
    ratio, r_low, r_high = math.exp(est), math.exp(low), math.exp(high)
    out.update(ratio=ratio, ratio_low=r_low, ratio_high=r_high)
    out["p_slower"] = mann_whitney_greater(sb, sa)
    out["p_faster"] = mann_whitney_greater(sa, sb)
    interval = f"B/A {ratio:.3f} ({100 * (1 - alpha):g} % interval {r_low:.3f}-{r_high:.3f})"
    if not resolvable:
        out["verdict"] = "too noisy"
        out["note"] = (f"{len(sa)} vs {len(sb)} samples cannot reach p < {alpha:g} "
                       f"(smallest possible p {1 / math.comb(len(sa) + len(sb), len(sa)):.3g})")
    elif ratio >= threshold and out["p_slower"] < alpha:
        out["verdict"] = "slower"
        out["note"] = f"{interval}, p {out['p_slower']:.2g}"
    elif ratio <= 1 / threshold and out["p_faster"] < alpha:
        out["verdict"] = "faster"
        out["note"] = f"{interval}, p {out['p_faster']:.2g}"
    elif r_low >= 1 / threshold and r_high <= threshold:
        out["verdict"] = "same"
        out["note"] = interval
    else:
        out["verdict"] = "too noisy"
        out["note"] = f"{interval} reaches past ±{100 * (threshold - 1):.0f} % without p < {alpha:g}"
    return out


def compare_runs(path_a, path_b, threshold=1.10, alpha=0.01, skip_bad=False):
    """(header A, header B, list of rows: the match key's fields plus the verdict)."""
    if threshold <= 1:
        raise ValueError(f"--threshold must be above 1 (a ratio of medians), not {threshold}")
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha must be between 0 and 1, not {alpha}")
    header_a, cells_a = load_run(path_a, skip_bad)
    header_b, cells_b = load_run(path_b, skip_bad)
    rows = []
    for key in sorted(set(cells_a) | set(cells_b), key=lambda k: tuple(map(str, k))):
        rows.append({**dict(zip(MATCH_KEY, key)),
                     **compare_cells(cells_a.get(key), cells_b.get(key), threshold, alpha)})
    return header_a, header_b, rows


# -- command line ---------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("a", metavar="A", help="the baseline run: a results file or a run id")
    parser.add_argument("b", metavar="B", help="the run to judge: a results file or a run id")
    parser.add_argument("--threshold", type=float, default=1.10,
                        help="smallest ratio of medians B/A that counts as a regression (default 1.10)")
    # 0.01 rather than 0.05: a run has dozens of cells, and CI should not cry wolf
    # on one in twenty noisy ones; 5 samples a side still reach it (p >= 1/252).
    parser.add_argument("--alpha", type=float, default=0.01,
                        help="significance level of the one-sided Mann-Whitney U test (default 0.01)")
    parser.add_argument("--results-dir", default="results", help="where run ids are looked up")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave malformed cell lines out, each with a warning, instead of "
                             "refusing the file")
    parser.add_argument("--all", action="store_true",
                        help="list every cell, not only the ones whose verdict is not 'same'")


def _describe(header):
    m = header.get("machine") or {}
    git = header.get("git") or {}
    commit = (git.get("commit") or "no commit")[:10] + ("+dirty" if git.get("dirty") else "")
    return f"{header['run_id']} ({m.get('cpu_model')}, {m.get('cores')} cores, {commit})"


def _coords(row):
    parts = [row["kind"], row["model"], row["backend"]]
    if row["kind"] == "kernel":
        parts.append("x".join(map(str, row["shape"] or ())) + f" {row['dtype']}")
    else:
        parts.append(f"bs={row['batch_size']}")
    parts.append(f"t={row['threads']}")
    return " ".join(str(p) for p in parts)


def format_rows(rows, show_all=False) -> str:
    def fmt(v, width, spec=".4g"):
        return format(v, f"{width}{spec}") if v is not None else "-".rjust(width)
    lines = [f"{'cell':<44} {'A median':>10} {'B median':>10} {'B/A':>6} {'p':>7}  verdict"]
    for r in rows:
        if not show_all and r["verdict"] == "same":
            continue
        p = r["p_slower"] if (r["ratio"] or 1) >= 1 else r["p_faster"]
        lines.append(f"{_coords(r)[:44]:<44} {fmt(r['a_median_s'], 10)} "
                     f"{fmt(r['b_median_s'], 10)} {fmt(r['ratio'], 6, '.2f')} {fmt(p, 7, '.3g')}  "
                     f"{r['verdict']}{': ' + r['note'] if r['note'] else ''}")
    return "\n".join(lines)


def main(args):
    path_a = resolve_run(args.a, args.results_dir)
    path_b = resolve_run(args.b, args.results_dir)
    header_a, header_b, rows = compare_runs(path_a, path_b, args.threshold, args.alpha, args.skip_bad)
    print(f"A: {_describe(header_a)}\nB: {_describe(header_b)}")
    if (header_a.get("machine") or {}).get("cpu_model") != (header_b.get("machine") or {}).get("cpu_model"):
        print("note: different CPUs -- the ratios compare the machines as well as the code")
    print(format_rows(rows, args.all))
    counts = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    print("\n" + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) +
          f" (slower: B/A >= {args.threshold:g} and one-sided Mann-Whitney p < {args.alpha:g}; "
          f"same: the {100 * (1 - args.alpha):g} % interval of B/A within ±{100 * (args.threshold - 1):.0f} %)")
    failed = counts.get("slower", 0) + counts.get("broken", 0)
    if failed:
        print(f"FAIL: {failed} cells regressed")
        return 1
    return 0
