"""The report's tables, as pandas DataFrames built from the loaded cells.

Ratios between backends are taken within one run: where two cells share a run
and a group their samples were taken in the same interleaved rounds, and the
ratio is the median of the per-round ratios with its order-statistic interval
(bench/stats.paired_ratio); otherwise (older runs) the interval comes from the
Hodges-Lehmann shift of the two sets of samples.
"""
import math
import re

import numpy as np

from ..stats import paired_ratio, ratio_ci_unpaired

BASELINE = "numpy"
# Kernel versions counted as "the BLAS" (NumPy's matmul, cuBLAS) under whatever
# name the family gives them.
BLAS_VERSION = re.compile(r"numpy|blas|mkl", re.IGNORECASE)
# TF32 matmuls are not float32 arithmetic: never a float32 ceiling or a BLAS best.
REDUCED_PRECISION = re.compile(r"tf32", re.IGNORECASE)
# The families that measure the machine's ceilings (kernels/ceilings.py; the GPU's
# copy bandwidth), by what they measure.
PEAK_FAMILIES = ("fma_peak",)
BANDWIDTH_FAMILIES = ("stream_triad", "cuda_copy")
# Theoretical peak fp32 FLOPs per cycle per core by the widest ISA, where no
# fma_peak cell was measured on a machine (an assumption, stated in the report:
# two FMA units per core).
FLOPS_PER_CYCLE = (
    ("avx512f", 64, "AVX-512: 2 FMA units x 16 fp32 lanes x 2 FLOPs"),
    ("fma", 32, "AVX2 + FMA: 2 FMA units x 8 fp32 lanes x 2 FLOPs"),
    ("avx", 16, "AVX: 1 add + 1 multiply unit x 8 fp32 lanes"),
    ("asimd", 16, "NEON: 2 FMA units x 4 fp32 lanes x 2 FLOPs"),
    ("sse4_2", 8, "SSE: 1 add + 1 multiply unit x 4 fp32 lanes"),
)


def coverage_text(coverage) -> str:
    """An interval's label with its real coverage: a 3-round median's interval
    covers 75 %, and says so."""
    return f"{100 * float(coverage):.0f} % intervals"


def batch_text(batch_size):
    return f"batch {batch_size}" if batch_size else "full batch"


# -- ratios -------------------------------------------------------------------------

def _samples(cell):
    s = cell.get("samples_s")
    return [v for v in s if v is not None] if isinstance(s, list) else []


def ratio(base, other):
    """{"ratio", "low", "high", "paired"}: how many times faster ``other`` is than
    ``base`` (base time / other time), with its interval; None without samples."""
    a, b = base.get("samples_s"), other.get("samples_s")
    if not isinstance(a, list) or not isinstance(b, list) or not _samples(base) or not _samples(other):
        return None
    paired = (base["run_id"] == other["run_id"] and base.get("group") == other.get("group")
              and base.get("group") is not None and len(a) == len(b))
    if paired:
        r = paired_ratio(a, b)
        if r:
            return dict(r, paired=True)
    # unpaired (runs without rounds): the ratio of medians, the Hodges-Lehmann interval
    r = float(np.median(_samples(base)) / np.median(_samples(other)))
    if len(_samples(base)) < 2 or len(_samples(other)) < 2:
        return {"ratio": r, "low": np.nan, "high": np.nan, "paired": False, "coverage": None}
    ci = ratio_ci_unpaired(_samples(base), _samples(other))
    return {"ratio": r, "low": min(ci["low"], r), "high": max(ci["high"], r), "paired": False,
            "coverage": 0.95}


# -- the epoch tables -------------------------------------------------------------------

def _write_up_batch(model):
    from ...models import NETWORKS
    cls = NETWORKS.get(model)
    return cls.defaults.get("batch_size") if cls else None


def settings(epoch):
    """Every (machine, model, batch size, threads, dataset, images per epoch) that
    epoch cells were measured at, with the run that measured the most backends
    there (the newest on a tie): rows of one run only, so every ratio in a row is
    side by side. A 2,048-image epoch and a 50,000-image one are two settings."""
    picks = {}
    epoch = epoch.assign(images=epoch["train_samples"].fillna(0).astype(int))
    for key, g in epoch.groupby(["machine", "model", "batch_size", "threads", "dataset", "images"]):
        usable = g[g["status"] == "ok"]
        if usable.empty:
            continue
        run = max(set(usable["run_id"]), key=lambda r: (g[g["run_id"] == r]["backend"].nunique(),
                                                         g[g["run_id"] == r]["run_order"].max()))
        picks[key] = g[g["run_id"] == run]
    return picks


def representative(cells):
    """Epoch cells at one setting per (machine, model), from one run: the write-up's
    batch size where numpy measured it (else the most measured one), the most
    threads numpy ran with there, that dataset; of the runs that timed numpy there,
    the one that timed the most backends. Invalid and unavailable cells of that run
    are kept so that tables can show them."""
    import pandas as pd
    from .load import flags
    epoch = cells[cells["kind"] == "epoch"]
    base = epoch[(epoch["backend"] == BASELINE) & (epoch["status"] == "ok")]
    picks = []
    for (machine, model), group in base.groupby(["machine", "model"]):
        wanted = _write_up_batch(model)
        counts = group["batch_size"].value_counts()
        best = max(group.to_dict("records"),
                   key=lambda r: (r["batch_size"] == wanted, counts[r["batch_size"]], r["threads"]))
        same = epoch[(epoch["machine"] == machine) & (epoch["model"] == model) &
                     (epoch["batch_size"] == best["batch_size"]) &
                     (epoch["threads"] == best["threads"]) & (epoch["dataset"] == best["dataset"])]
        timed_numpy = set(same[(same["backend"] == BASELINE) & (same["status"] == "ok")]["run_id"])
        run = max(timed_numpy, key=lambda r: (same[same["run_id"] == r]["backend"].nunique(),
                                              same[same["run_id"] == r]["run_order"].max()))
        pick = same[same["run_id"] == run].assign(superseded=False)
        picks.append(pick.assign(usable=pick["status"] == "ok", flags=flags(pick)))
    return pd.concat(picks) if picks else cells.iloc[0:0]


def speedup_table(cells):
    """Speed-up of each backend over numpy at the representative setting, with its
    interval and that interval's coverage (paired by round where the run
    interleaved them)."""
    import pandas as pd
    rows = []
    for (machine, model), group in representative(cells).groupby(["machine_label", "model"]):
        base = group[(group["backend"] == BASELINE) & group["usable"]].iloc[0]
        for _, c in group.iterrows():
            row = {"machine": machine, "model": model, "batch_size": c["batch_size"],
                   "train_samples": c.get("train_samples"), "threads": c["threads"],
                   "dataset": c["dataset"], "backend": c["backend"], "status": c["status"],
                   "flags": c["flags"], "epoch_s": None, "speedup": None, "speedup_low": None,
                   "speedup_high": None, "paired": None, "coverage": None}
            if c["usable"]:
                r = ratio(base, c)
                row.update(epoch_s=c["median_s"], speedup=r["ratio"], speedup_low=r["low"],
                           speedup_high=r["high"], paired=r["paired"], coverage=r.get("coverage"))
            rows.append(row)
    return pd.DataFrame(rows)


def recommendation_table(cells):
    """For each machine x model x batch size x threads: the fastest validated
    backend, its margin over the runner-up with the margin's interval, and "no
    clear winner" where that interval reaches 1."""
    import pandas as pd
    epoch = cells[(cells["kind"] == "epoch") & ~cells["superseded"]]
    rows = []
    for (machine, model, bs, threads, dataset, _), g in settings(epoch).items():
        ok = g[g["status"] == "ok"].sort_values("median_s")
        if ok.empty:
            continue
        best = ok.iloc[0]
        row = {"machine": best["machine_label"], "model": model, "batch_size": bs,
               "threads": threads, "dataset": dataset, "fastest": best["backend"],
               "images": best.get("train_samples"),
               "epoch_s": best["median_s"], "images_per_s": best.get("samples_per_s"),
               "runner_up": None, "margin": None, "margin_low": None, "margin_high": None,
               "margin_coverage": None, "verdict": "only one backend measured", "backends": len(ok),
               "run_id": best["run_id"]}
        if len(ok) > 1:
            second = ok.iloc[1]
            r = ratio(second, best)  # runner-up's time over the winner's
            clear = r is not None and not (isinstance(r["low"], float) and math.isnan(r["low"])) \
                and r["low"] > 1
            row.update(runner_up=second["backend"], margin=r["ratio"] if r else None,
                       margin_low=r["low"] if r else None, margin_high=r["high"] if r else None,
                       margin_coverage=r.get("coverage") if r else None,
                       verdict="fastest" if clear else "no clear winner")
        rows.append(row)
    columns = ["machine", "model", "batch_size", "images", "threads", "dataset", "fastest", "epoch_s",
               "images_per_s", "runner_up", "margin", "margin_low", "margin_high", "margin_coverage",
               "verdict", "backends", "run_id"]
    out = pd.DataFrame(rows, columns=columns)
    # the machine with the newest run first (run ids start with their UTC start time)
    newest = out.groupby("machine")["run_id"].max().rank(ascending=False, method="first")
    out["_machine_order"] = out["machine"].map(newest)
    out = out.sort_values(["_machine_order", "model", "threads", "batch_size"])
    return out.drop(columns="_machine_order").reset_index(drop=True)


# The answer's columns, as a reader names them.
ANSWER_COLUMNS = {"machine": "machine", "model": "model", "batch_size": "batch size",
                  "images": "images per epoch", "threads": "threads", "dataset": "data",
                  "fastest": "fastest", "epoch_s": "time per epoch (s)",
                  "images_per_s": "images per second", "runner_up": "runner-up",
                  "margin": "speed-up over the runner-up", "interval": "interval",
                  "verdict": "verdict", "backends": "backends timed", "run_id": "run"}


# The recommendation table's columns, as a reader names them.
RECOMMENDATION_COLUMNS = dict(ANSWER_COLUMNS, margin_low="interval low", margin_high="interval high",
                              margin_coverage="interval coverage")


def newest_runs(cells) -> dict:
    """machine label -> the id of its newest run with epoch cells."""
    epoch = cells[cells["kind"] == "epoch"]
    if epoch.empty:
        return {}
    newest = epoch.sort_values("run_order").groupby("machine_label")["run_id"].last()
    return newest.to_dict()


def answer_table(rec, newest):
    """The recommendation rows of the newest run of each machine, with the
    columns as a reader names them and the margin's interval as one text."""
    import pandas as pd
    rows = rec[[newest.get(m) == r for m, r in zip(rec["machine"], rec["run_id"])]]
    if rows.empty:
        return pd.DataFrame(columns=list(ANSWER_COLUMNS.values()))
    rows = rows.assign(interval=[
        "" if low != low or low is None else
        f"{low:.2f}-{high:.2f}x" + (f" ({coverage_text(cov)})" if cov == cov and cov else "")
        for low, high, cov in zip(rows["margin_low"], rows["margin_high"], rows["margin_coverage"])])
    return rows[list(ANSWER_COLUMNS)].rename(columns=ANSWER_COLUMNS).reset_index(drop=True)


def crossover_data(cells):
    """Epoch cells for the crossover plot: usable, with x = batch size (full batch at
    the training-set size), images/s with its interval, and the panel keys
    ``n_images`` and ``threads``."""
    e = cells[(cells["kind"] == "epoch") & cells["usable"]].copy()
    if e.empty:
        return e
    full = e["train_samples"] if "train_samples" in e else [None] * len(e)
    e["x"] = [bs if bs else (int(n) if n == n and n else None) for bs, n in zip(e["batch_size"], full)]
    e = e[[x is not None and x > 0 for x in e["x"]]]
    # images per epoch: as recorded, else the full-batch x (a full batch is every image)
    n = e["train_samples"].astype(float).fillna(e["samples_per_s"] * e["median_s"])
    e["images_per_s"] = n / e["median_s"]
    e["images_low"] = n / e["ci_high_s"]
    e["images_high"] = n / e["ci_low_s"]
    # one panel per epoch size as well: a 2,048-image epoch is not a 50,000-image
    # one; threads 0 where a cell did not record them (imported GPU files)
    e = e[e["images_per_s"].notna()]
    return e.assign(n_images=e["train_samples"].fillna(0).astype(int),
                    threads=e["threads"].fillna(0).astype(int))


# -- kernel tables: the roofline ------------------------------------------------------

def peak_per_core(machine: dict):
    """(theoretical fp32 GFLOP/s of one core, or None, and how that figure was reached)."""
    flags_ = set(machine.get("isa_flags") or [])
    match = next((entry for entry in FLOPS_PER_CYCLE if entry[0] in flags_), None)
    if match is None:
        return None, "no SIMD flags recorded: theoretical peak omitted"
    _, per_cycle, why = match
    mhz, source = machine.get("cpu_mhz") or machine.get("max_mhz"), "cpu MHz recorded with the run"
    if not mhz:
        found = re.search(r"@\s*([\d.]+)\s*GHz", machine.get("cpu_model") or "")
        if found:
            mhz, source = float(found.group(1)) * 1000, "nominal clock in the CPU model name"
    if not mhz:
        return None, ("clock frequency unknown (neither cpu_mhz in the machine metadata nor "
                      "'@ x GHz' in the CPU model name): theoretical peak omitted")
    return per_cycle * mhz / 1000, (f"{per_cycle} FLOP/cycle/core ({why}) x {mhz / 1000:.2f} GHz "
                                    f"({source}); turbo and AVX-512 down-clocking ignored")


def peak_gflops(machine, threads, dtype="float32"):
    per_core, _ = peak_per_core(machine)
    cores = machine.get("cores") or 1
    if per_core is None:
        return None
    return per_core * min(threads or cores, cores) / (2 if dtype == "float64" else 1)


def _key(c):
    return c["machine_label"], c["threads"], c["dtype"], c["device"]


def ceilings(cells, machines):
    """{(machine label, threads, dtype, device): {"peak", "peak_source", "bandwidth", ...}}.
    CPU: the measured FMA peak and triad bandwidth where the machine has those
    cells, else the theoretical peak and no bandwidth. GPU: the best float32
    cuBLAS matmul measured (a measured compute ceiling; TF32 lines excluded) and
    the device-to-device copy bandwidth.

    A ceiling is the best of every measurement of it on the machine, superseded
    runs included: a busy spell of a shared machine only ever slows the FMA loop,
    the triad or cuBLAS down, so the newest reading alone could put a kernel
    timed in a quiet spell above "100 % of the peak"."""
    k = cells[(cells["kind"] == "kernel") & cells["usable"]]
    ok = cells[(cells["kind"] == "kernel") & (cells["status"] == "ok")]
    measured = ok[ok["model"].isin(PEAK_FAMILIES + BANDWIDTH_FAMILIES)]
    out = {}

    def raise_to(entry, field, value, source):
        if value == value and value and value > entry.get(field, 0):
            entry[field], entry[field + "_source"] = value, source

    runs_of = measured.groupby(["machine_label", "threads", "dtype", "device", "model"])["run_id"] \
        .nunique().to_dict() if not measured.empty else {}
    for _, c in measured.iterrows():
        entry = out.setdefault(_key(c), {})
        n = runs_of.get(_key(c) + (c["model"],), 1)
        best = f"measured: {c['model']}.{c['backend']}" + (f", the best of {n} runs" if n > 1 else "")
        if c["model"] in PEAK_FAMILIES:
            raise_to(entry, "peak", c.get("gflops"), best)
        else:
            raise_to(entry, "bandwidth", c.get("gbytes_per_s"), best)
    for _, c in k.iterrows():
        out.setdefault(_key(c), {})
    for _, c in ok.iterrows():
        if c["device"] == "cuda" and c["model"] not in PEAK_FAMILIES + BANDWIDTH_FAMILIES \
                and BLAS_VERSION.search(c["backend"]) \
                and not REDUCED_PRECISION.search(c["backend"]):
            raise_to(out.setdefault(_key(c), {}), "peak", c.get("gflops"), f"measured: best {c['backend']} matmul")
    # bandwidth is one figure per machine, thread count and device, whatever the dtype
    for (machine, threads, dtype, device), entry in list(out.items()):
        other = out.get((machine, threads, "float32" if dtype == "float64" else "float64", device), {})
        if "bandwidth" not in entry and "bandwidth" in other:
            entry.update(bandwidth=other["bandwidth"], bandwidth_source=other["bandwidth_source"])
    for _, c in k.iterrows():
        entry = out[_key(c)]
        if "peak" not in entry and c["device"] == "cpu":
            peak = peak_gflops(machines[c["run_id"]], c["threads"], c["dtype"])
            if peak:
                entry.update(peak=peak, peak_source="theoretical (no fma_peak cell on this machine)")
    return out


def roofline_table(cells, machines):
    """Every kernel cell with a FLOP count: arithmetic intensity, GFLOP/s, the roof
    at its intensity (the smaller of the measured peak and bandwidth x intensity),
    its % of that roof, and its % of the best BLAS version of the same shape."""
    import pandas as pd
    k = cells[(cells["kind"] == "kernel") & cells["usable"] & cells["gflops"].notna()]
    k = k[~k["model"].isin(PEAK_FAMILIES)]
    roofs = ceilings(cells, machines)
    rows = []
    for _, c in k.iterrows():
        same = k[(k["machine"] == c["machine"]) & (k["model"] == c["model"]) &
                 (k["shape_label"] == c["shape_label"]) & (k["dtype"] == c["dtype"]) &
                 (k["threads"] == c["threads"])]
        blas = same[same["backend"].str.contains(BLAS_VERSION) &
                    ~same["backend"].str.contains(REDUCED_PRECISION)]["gflops"]
        roof = roofs.get(_key(c), {})
        intensity = c["flops"] / c["bytes"] if c.get("bytes") == c.get("bytes") and c.get("bytes") else None
        limit = roof.get("peak")
        source = roof.get("peak_source")
        if limit and c["gflops"] > limit:
            # a theoretical peak from a clock the cores did not run at, or a measured
            # one from a slower spell than this kernel's: a "% of peak" over 100
            # would be false, so there is none
            limit, source = None, (f"{source}: below this measured rate, so not a ceiling here "
                                   f"(measure one: mnist-bench kernels --families fma_peak)")
        bound = "compute"
        if intensity and roof.get("bandwidth") and limit:
            if roof["bandwidth"] * intensity < limit:
                limit, bound = roof["bandwidth"] * intensity, "memory"
        rows.append({"machine": c["machine_label"], "device": c["device"], "kernel": c["model"],
                     "version": c["backend"], "shape": c["shape_label"], "dtype": c["dtype"],
                     "threads": c["threads"], "gflops": c["gflops"], "intensity": intensity,
                     "blas_best_gflops": blas.max() if len(blas) else None,
                     "pct_of_blas": 100 * c["gflops"] / blas.max() if len(blas) else None,
                     "peak_gflops": roof.get("peak"), "peak_source": source,
                     "bandwidth_gb_s": roof.get("bandwidth"), "roof_gflops": limit,
                     "bound": bound if limit else None,
                     "pct_of_roof": 100 * c["gflops"] / limit if limit else None,
                     "flags": c["flags"]})
    return pd.DataFrame(rows)


def bandwidth_table(cells, machines):
    """Kernels with no FLOP count but a byte count (updates, triad, copies): GB/s and
    % of the machine's measured bandwidth."""
    import pandas as pd
    k = cells[(cells["kind"] == "kernel") & cells["usable"] & cells["gbytes_per_s"].notna() &
              cells["gflops"].isna()]
    roofs = ceilings(cells, machines)
    rows = []
    for _, c in k.iterrows():
        roof = roofs.get(_key(c), {})
        bw = roof.get("bandwidth")
        rows.append({"machine": c["machine_label"], "kernel": c["model"], "version": c["backend"],
                     "shape": c["shape_label"], "dtype": c["dtype"], "threads": c["threads"],
                     "gb_per_s": c["gbytes_per_s"], "bandwidth_gb_s": bw,
                     "pct_of_bandwidth": 100 * c["gbytes_per_s"] / bw if bw else None,
                     "flags": c["flags"]})
    return pd.DataFrame(rows)


# -- the rest -----------------------------------------------------------------------------

def _seeds(cell):
    seeds = cell.get("seeds")
    return [s for s in seeds if isinstance(s, dict)] if isinstance(seeds, list) else []


def tta_table(cells):
    import pandas as pd
    t = cells[(cells["kind"] == "tta") & ~cells["superseded"]]
    rows = []
    for _, c in t.iterrows():
        seeds = _seeds(c)
        reached = [s["time_to_accuracy_s"] for s in seeds if s.get("time_to_accuracy_s") is not None]
        finals = [s.get("final_accuracy") for s in seeds]
        rows.append({"machine": c["machine_label"], "model": c["model"], "backend": c["backend"],
                     "batch_size": c["batch_size"], "threads": c["threads"],
                     "target_accuracy": c.get("target_accuracy"),
                     "seeds_reaching_target": f"{len(reached)}/{len(seeds)}",
                     "score_s": c.get("score_s"), "epoch_median_s": c["median_s"],
                     "final_accuracy_median": float(np.median(finals))
                     if seeds and all(f is not None for f in finals) else None,
                     "status": c["status"], "flags": c["flags"]})
    return pd.DataFrame(rows)


def thread_table(cells):
    """Each (model, backend, batch size) measured at two or more thread counts:
    speed-up over its own run with the fewest threads."""
    import pandas as pd
    e = cells[(cells["kind"] == "epoch") & cells["usable"]]
    rows = []
    # like with like: one run, one epoch size (a 1-thread 50,000-image epoch over a
    # 2-thread 10,000-image one is no speed-up)
    for keys, g in e.groupby(["machine_label", "model", "backend", "batch_size", "dataset", "run_id",
                              "train_samples"], dropna=False):
        if g["threads"].nunique() < 2:
            continue
        g = g.sort_values("threads")
        t0, base = g["threads"].iloc[0], g["median_s"].iloc[0]
        for _, c in g.iterrows():
            rows.append({"machine": keys[0], "model": keys[1], "backend": keys[2],
                         "batch_size": keys[3], "images": keys[6], "run_id": keys[5],
                         "threads": c["threads"], "epoch_s": c["median_s"],
                         "speedup": base / c["median_s"],
                         "efficiency": base / c["median_s"] / (c["threads"] / t0), "flags": c["flags"]})
    return pd.DataFrame(rows)


def compile_table(cells):
    """Compile figures against steady state at the representative settings, with
    where each figure came from (a probe in this run, a stored probe, a first step)."""
    import pandas as pd
    rep = representative(cells)
    if "compile.cold_s" not in rep:
        return pd.DataFrame()
    rep = rep[rep["usable"] & rep["compile.cold_s"].notna()]
    return pd.DataFrame([{"machine": c["machine_label"], "model": c["model"], "backend": c["backend"],
                          "batch_size": c["batch_size"], "threads": c["threads"],
                          "images": c.get("train_samples"),
                          "compile_cold_s": c["compile.cold_s"],
                          "compile_cached_s": c.get("compile.cache_hit_s"),
                          "epoch_s": c["median_s"],
                          "cold_compile_in_epochs": c["compile.cold_s"] / c["median_s"],
                          "how": c.get("compile.cold_source") or "",
                          "figures_from": c.get("compile.figures_from") or "",
                          "flags": c["flags"]} for _, c in rep.iterrows()])


def machines_table(cells):
    """The same coordinates measured on more than one machine, side by side: each
    machine's median and its time relative to the first machine's."""
    import pandas as pd
    usable = cells[cells["usable"]]
    if usable["machine_label"].nunique() < 2:
        return pd.DataFrame()
    keyed = usable.assign(coords=[
        f"{k} {m} {b} " + (s if k == "kernel" else batch_text(bs)) + f" t={t}" + (f" {d}" if k == "kernel" else "")
        for k, m, b, s, bs, t, d in zip(usable["kind"], usable["model"], usable["backend"],
                                        usable["shape_label"], usable["batch_size"],
                                        usable["threads"], usable["dtype"])])
    shared = keyed.groupby("coords")["machine_label"].nunique()
    keyed = keyed[keyed["coords"].isin(shared[shared > 1].index)]
    if keyed.empty:
        return pd.DataFrame()
    pivot = keyed.pivot_table(index="coords", columns="machine_label", values="median_s", aggfunc="min")
    first = pivot.columns[0]
    for m in pivot.columns[1:]:
        pivot[f"{m} / {first}"] = pivot[m] / pivot[first]
    return pivot.reset_index().rename(columns={"coords": "cell"})


CELL_COLUMNS = ("run_id", "machine", "kind", "model", "backend", "batch_size", "threads", "dataset",
                "shape_label", "dtype", "status", "validation.max_error", "median_s", "ci_low_s",
                "ci_high_s", "iqr_s", "samples_per_s", "gflops", "gbytes_per_s", "accuracy",
                "flags", "error")


def cell_table(cells):
    t = cells.sort_values(["machine", "kind", "model", "backend", "batch_size", "threads"],
                          na_position="first", key=lambda s: s.astype(str))
    return t[[c for c in CELL_COLUMNS if c in t]].rename(columns={"shape_label": "shape",
                                                                  "validation.max_error": "max_error"})


# -- what the report says -------------------------------------------------------------

def _backend_runs(rows):
    """Consecutive batch sizes won by the same backend: [(backend, first, last, rows)]."""
    spans = []
    for _, r in rows.iterrows():
        winner = r["fastest"] if r["verdict"] == "fastest" else \
            f"{r['fastest']} (the only backend measured)" if r["verdict"] == "only one backend measured" \
            else "no clear winner"
        if spans and spans[-1][0] == winner:
            spans[-1][2] = r["batch_size"]
            spans[-1][3].append(r)
        else:
            spans.append([winner, r["batch_size"], r["batch_size"], [r]])
    return spans


def summary(cells, machines, rec=None, machine=None, roof=None) -> list:
    """Sentences on who wins where, by how much and how sure, from the data
    (``rec``: the recommendation rows to speak of, default all of them;
    ``machine``: the kernels of that machine label only; ``roof``: the roofline
    table where the caller has it already, default computed here)."""
    out = []
    rec = recommendation_table(cells) if rec is None else rec
    rec = rec.assign(_images=rec["images"].fillna(0).astype(int))
    for (machine, model, threads, images), g in rec.groupby(["machine", "model", "threads", "_images"],
                                                            sort=False):
        g = g.sort_values("batch_size", key=lambda s: s.replace(0, 10 ** 9))
        parts = []
        for winner, first, last, rows in _backend_runs(g):
            sizes = batch_text(first) if first == last else f"batch {first}-{last}" if last else \
                f"batch {first} to full batch"
            if winner == "no clear winner":
                parts.append(f"{sizes}: no clear winner ({', '.join(sorted({r['fastest'] + '/' + str(r['runner_up']) for r in rows}))})")
                continue
            margins = [r["margin"] for r in rows if r["margin"] == r["margin"] and r["margin"]]
            lows = [r["margin_low"] for r in rows if r["margin_low"] == r["margin_low"] and r["margin_low"]]
            cover = [r["margin_coverage"] for r in rows
                     if r.get("margin_coverage") == r.get("margin_coverage") and r.get("margin_coverage")]
            span = (f"{min(margins):.2f}-{max(margins):.2f}x" if len(margins) > 1 else f"{margins[0]:.2f}x") \
                if margins else ""
            label = coverage_text(min(cover)) if cover else "intervals"
            parts.append(f"{sizes}: {winner}" + (f", {span} the runner-up ({label} from "
                                                  f"{min(lows):.2f}x)" if margins and lows else ""))
        epoch_size = f", {images:,}-image epochs" if images else ""
        out.append(f"{model} on {machine}, {threads} threads{epoch_size} -- " + "; ".join(parts) + ".")
    roof = roofline_table(cells, machines) if roof is None else roof
    mm = roof[roof["kernel"].str.contains("matmul") & (roof["dtype"] == "float32") &
              ~roof["version"].str.contains(REDUCED_PRECISION)] if not roof.empty else roof
    if machine is not None and not mm.empty:
        mm = mm[mm["machine"] == machine]
    for machine, g in (mm.groupby("machine") if not mm.empty else ()):
        # the largest square shape of each family: where a kernel can reach its roof
        square = g[g["shape"].apply(lambda t: len(set(t.split("x"))) == 1)]
        parts = []
        for family, fg in square.groupby("kernel"):
            fg = fg[fg["shape"] == max(fg["shape"], key=lambda t: int(t.split("x")[0]))]
            own = fg[~fg["version"].str.contains(BLAS_VERSION) & ~fg["version"].str.contains("torch")]
            if own.empty:
                continue
            best = own.loc[own["gflops"].idxmax()]
            text = f"{family} {best['shape']}: {best['version']} {best['gflops']:,.0f} GFLOP/s"
            if best["pct_of_blas"] == best["pct_of_blas"] and best["pct_of_blas"] is not None:
                text += f" = {best['pct_of_blas'] / 100:.2f}x the BLAS ({best['blas_best_gflops']:,.0f})"
            if best["pct_of_roof"] == best["pct_of_roof"] and best["pct_of_roof"] \
                    and isinstance(best["peak_source"], str):
                ceiling = "peak" if best["device"] == "cpu" else "cuBLAS fp32 ceiling"
                text += f", {best['pct_of_roof']:.0f} % of the {best['peak_source'].split(':')[0]} {ceiling}"
            parts.append(text)
        if parts:
            out.append(f"matmul on {machine} (best hand-written version): " + "; ".join(parts) + ".")
    return out
