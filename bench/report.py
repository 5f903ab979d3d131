"""`mnist-bench report`: the results store as tables and plots.

Reads run files (results/SCHEMA.md) with bench.store.read_results, aggregates
with pandas and draws with matplotlib, then writes into the output directory:

- ``report.html``: one self-contained page, every plot embedded as a base64 PNG;
- ``report.md``: the same tables in Markdown, plots linked as PNG files;
- ``headline.md``: epoch time per model x backend with the speed-up over numpy,
  per machine, for the README;
- ``plots/<name>.png`` and ``plots/<name>.svg``.

Every cell appears in the cell table with its validation status; invalid,
errored, unavailable, noisy, synthetic-data and superseded cells are marked
there, and the plots say which cells they leave out. A plot without data is
skipped with a note. ``generate(paths, out_dir)`` is the API the harness calls.
"""
import base64
import html
import io
import math
import os
import re
import textwrap

import numpy as np

BASELINE = "numpy"
# Kernel versions counted as "the BLAS" for the measured ceiling: NumPy's matmul
# (OpenBLAS/MKL underneath) under whatever name the kernel family gives it.
BLAS_VERSION = re.compile(r"numpy|blas|mkl", re.IGNORECASE)
# Peak fp32 FLOPs per cycle per core, by the widest ISA the machine has. An
# assumption, stated in the report: two FMA units per core (Xeon Gold/Platinum,
# Zen 4; many client parts and some Xeon Silver have one, half of this).
FLOPS_PER_CYCLE = (
    ("avx512f", 64, "AVX-512: 2 FMA units x 16 fp32 lanes x 2 FLOPs"),
    ("fma", 32, "AVX2 + FMA: 2 FMA units x 8 fp32 lanes x 2 FLOPs"),
    ("avx", 16, "AVX: 1 add + 1 multiply unit x 8 fp32 lanes"),
    ("asimd", 16, "NEON: 2 FMA units x 4 fp32 lanes x 2 FLOPs"),
    ("sse4_2", 8, "SSE: 1 add + 1 multiply unit x 4 fp32 lanes"),
)
PLOT_TITLES = {
    "speedup": "Speed-up over numpy per model",
    "epoch_vs_batch": "Epoch time against batch size",
    "kernel_gflops": "Kernel GFLOP/s against size, with ceilings",
    "time_to_accuracy": "Accuracy against wall time",
    "thread_scaling": "Thread scaling",
    "compile_vs_steady": "Compile time against steady-state time",
}


# -- loading ------------------------------------------------------------------------

def _int_or_none(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def _shape_label(shape):
    return "x".join(str(int(d)) for d in shape) if isinstance(shape, (list, tuple, np.ndarray)) else ""


def load(result_paths):
    """(runs, cells) with the report's own columns: ``machine_label``, ``shape_label``,
    ``superseded`` (a newer run on the same machine measured the same coordinates),
    ``usable`` (ok and not superseded) and ``flags``."""
    import pandas as pd

    from .compare import MATCH_KEY, _key_value
    from .store import read_results
    runs, cells = read_results(list(result_paths))
    if cells.empty:
        raise ValueError(f"no cells in {', '.join(map(str, result_paths))}: nothing to report")
    runs = runs.sort_values("started").reset_index(drop=True)
    machines = {h["run_id"]: h.get("machine") or {} for h in runs["header"]}
    order = {run_id: i for i, run_id in enumerate(runs["run_id"])}
    cells = cells.copy()
    # object columns: integer coordinates stay integers next to the None of kernel cells
    for column in ("batch_size", "threads"):
        cells[column] = pd.Series([_int_or_none(v) for v in cells[column]], index=cells.index,
                                  dtype=object)
    cells["shape_label"] = [_shape_label(s) for s in cells["shape"]]
    cells["machine_label"] = [machine_label(machines[r]) for r in cells["run_id"]]
    cells["run_order"] = [order[r] for r in cells["run_id"]]
    quartiles = [np.percentile(v, [25, 75]) if isinstance(v, list) and v else (np.nan, np.nan)
                 for v in cells["samples_s"]]
    cells["q1_s"], cells["q3_s"] = [q[0] for q in quartiles], [q[1] for q in quartiles]
    cells["noisy"] = cells["noisy"].fillna(False).astype(bool)
    cells["synthetic"] = cells["synthetic"].fillna(False).astype(bool)
    keys = [(m,) + tuple(_key_value(row[k]) for k in MATCH_KEY)
            for m, (_, row) in zip(cells["machine"], cells.iterrows())]
    newest = {}
    for key, run_order in zip(keys, cells["run_order"]):
        newest[key] = max(newest.get(key, -1), run_order)
    cells["superseded"] = [ro < newest[k] for k, ro in zip(keys, cells["run_order"])]
    cells["usable"] = (cells["status"] == "ok") & ~cells["superseded"]
    cells["flags"] = _flags(cells)
    return runs, cells, machines


def _flags(cells):
    """Each cell's marks for tables, from its status and the noisy / synthetic /
    superseded columns."""
    return [", ".join(f for f, on in (("INVALID", s == "invalid"), ("ERROR", s == "error"),
                                      ("unavailable", s == "unavailable"), ("noisy", n),
                                      ("synthetic data", syn), ("superseded", sup)) if on)
            for s, n, syn, sup in zip(cells["status"], cells["noisy"], cells["synthetic"],
                                      cells["superseded"])]


def machine_label(machine: dict) -> str:
    label = f"{machine.get('hostname')}: {machine.get('cpu_model')}, {machine.get('cores')} cores"
    gpu = machine.get("gpu") or {}
    return label + (f", {gpu['name']}" if gpu.get("name") else "")


def default_results(results_dir="results") -> list:
    """The newest run of each machine for each kind of cell (epoch, tta, kernel) in
    ``results_dir/runs``: a kernel sweep and a training sweep are separate runs.
    Runs still marked ``running`` count only where no finished one has that kind."""
    from .store import read_results
    runs_dir = os.path.join(results_dir, "runs")
    if not os.path.isdir(runs_dir) or not any(f.endswith(".jsonl") for f in os.listdir(runs_dir)):
        raise ValueError(f"no run files in {runs_dir}: run `mnist-bench run` first or name "
                         f"result files")
    runs, cells = read_results([runs_dir])
    if cells.empty:
        return list(runs["path"])
    # sort key: finished runs after running ones, then by start time; the last wins
    order = {r: (status != "running", started)
             for r, status, started in zip(runs["run_id"], runs["status"], runs["started"])}
    cells = cells.assign(order=[order[r] for r in cells["run_id"]])
    newest = cells.sort_values("order").groupby(["machine", "kind"])["run_id"].last()
    paths = dict(zip(runs["run_id"], runs["path"]))
    return sorted({paths[r] for r in newest})


# -- peak -----------------------------------------------------------------------------

def peak_per_core(machine: dict):
    """(fp32 GFLOP/s of one core, or None, and how that figure was reached)."""
    flags = set(machine.get("isa_flags") or [])
    match = next((entry for entry in FLOPS_PER_CYCLE if entry[0] in flags), None)
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


def peak_gflops(machine, threads):
    per_core, _ = peak_per_core(machine)
    cores = machine.get("cores") or 1
    return None if per_core is None else per_core * min(threads or cores, cores)


# -- tables ------------------------------------------------------------------------------

def _write_up_batch(model):
    from ..models import NETWORKS
    cls = NETWORKS.get(model)
    return cls.defaults.get("batch_size") if cls else None


def representative(cells):
    """Epoch cells at one setting per (machine, model), all from one run so that every
    ratio in a row was measured side by side: the write-up's batch size where numpy
    measured it (else the most measured one), the most threads numpy ran with there,
    that dataset; of the runs that timed numpy there, the one that timed the most
    backends (the newest on a tie). Invalid and unavailable cells of that run are kept
    so that tables can show them; a newer run elsewhere does not supersede them here."""
    import pandas as pd
    epoch = cells[cells["kind"] == "epoch"]
    base = epoch[(epoch["backend"] == BASELINE) & (epoch["status"] == "ok")]
    picks = []
    for (machine, model), group in base.groupby(["machine", "model"]):
        wanted = _write_up_batch(model)
        counts = group["batch_size"].value_counts()
        ranked = group.assign(pref=[(bs == wanted, counts[bs], th)
                                    for bs, th in zip(group["batch_size"], group["threads"])])
        best = max(ranked.to_dict("records"), key=lambda r: r["pref"])
        same = epoch[(epoch["machine"] == machine) & (epoch["model"] == model) &
                     (epoch["batch_size"] == best["batch_size"]) &
                     (epoch["threads"] == best["threads"]) &
                     (epoch["dataset"] == best["dataset"])]
        timed_numpy = set(same[(same["backend"] == BASELINE) & (same["status"] == "ok")]["run_id"])
        run = max(timed_numpy, key=lambda r: (same[same["run_id"] == r]["backend"].nunique(),
                                              same[same["run_id"] == r]["run_order"].max()))
        pick = same[same["run_id"] == run].assign(superseded=False)
        picks.append(pick.assign(usable=pick["status"] == "ok", flags=_flags(pick)))
    return pd.concat(picks) if picks else cells.iloc[0:0]


def speedup_table(cells):
    """Speed-up of each backend over numpy at the representative setting, with the
    range between quartiles: numpy's Q1 / backend's Q3 .. numpy's Q3 / backend's Q1."""
    import pandas as pd
    rows = []
    for (machine, model), group in representative(cells).groupby(["machine_label", "model"]):
        base = group[(group["backend"] == BASELINE) & group["usable"]].iloc[0]
        b_q1, b_q3 = np.percentile(base["samples_s"], [25, 75])
        for _, c in group.iterrows():
            row = {"machine": machine, "model": model, "batch_size": c["batch_size"],
                   "train_samples": c.get("train_samples"),
                   "threads": c["threads"], "dataset": c["dataset"], "backend": c["backend"],
                   "status": c["status"], "flags": c["flags"], "epoch_s": None, "speedup": None,
                   "speedup_low": None, "speedup_high": None}
            if c["usable"]:
                q1, q3 = np.percentile(c["samples_s"], [25, 75])
                row.update(epoch_s=c["median_s"], speedup=base["median_s"] / c["median_s"],
                           speedup_low=b_q1 / q3, speedup_high=b_q3 / q1)
            rows.append(row)
    return pd.DataFrame(rows)


def peak_table(cells, machines):
    import pandas as pd
    k = cells[(cells["kind"] == "kernel") & cells["usable"] & cells["gflops"].notna()]
    rows = []
    for _, c in k.iterrows():
        same = k[(k["machine"] == c["machine"]) & (k["model"] == c["model"]) &
                 (k["shape_label"] == c["shape_label"]) & (k["dtype"] == c["dtype"])]
        blas = same[same["backend"].str.contains(BLAS_VERSION)]["gflops"]
        machine = machines[c["run_id"]]
        peak = peak_gflops(machine, c["threads"])
        rows.append({"machine": c["machine_label"], "kernel": c["model"], "version": c["backend"],
                     "shape": c["shape_label"], "dtype": c["dtype"], "threads": c["threads"],
                     "gflops": c["gflops"], "blas_best_gflops": blas.max() if len(blas) else None,
                     "pct_of_blas": 100 * c["gflops"] / blas.max() if len(blas) else None,
                     "peak_gflops": peak, "pct_of_peak": 100 * c["gflops"] / peak if peak else None,
                     "flags": c["flags"]})
    return pd.DataFrame(rows)


def _seeds(cell):
    """A tta cell's seeds, each with its epoch log (SCHEMA.md keeps one log per seed)."""
    seeds = cell.get("seeds")
    return [s for s in seeds if isinstance(s, dict)] if isinstance(seeds, list) else []


def tta_table(cells):
    import pandas as pd
    t = cells[(cells["kind"] == "tta") & ~cells["superseded"]]
    rows = []
    for _, c in t.iterrows():
        seeds = _seeds(c)
        reached = [s["time_to_accuracy_s"] for s in seeds if s.get("time_to_accuracy_s") is not None]
        rows.append({"machine": c["machine_label"], "model": c["model"], "backend": c["backend"],
                     "batch_size": c["batch_size"], "threads": c["threads"],
                     "target_accuracy": c.get("target_accuracy"),
                     "seeds_reaching_target": f"{len(reached)}/{len(seeds)}",
                     "score_s": c.get("score_s"), "epoch_median_s": c["median_s"],
                     "final_accuracy_median": float(np.median([s["final_accuracy"] for s in seeds]))
                     if seeds and all(s.get("final_accuracy") is not None for s in seeds) else None,
                     "status": c["status"], "flags": c["flags"]})
    return pd.DataFrame(rows)


def thread_table(cells):
    """Each (model, backend, batch size) measured at two or more thread counts:
    speed-up over its own run with the fewest threads."""
    import pandas as pd
    e = cells[(cells["kind"] == "epoch") & cells["usable"]]
    rows = []
    for keys, g in e.groupby(["machine_label", "model", "backend", "batch_size", "dataset"]):
        if g["threads"].nunique() < 2:
            continue
        g = g.sort_values("threads")
        t0, base = g["threads"].iloc[0], g["median_s"].iloc[0]
        for _, c in g.iterrows():
            rows.append({"machine": keys[0], "model": keys[1], "backend": keys[2],
                         "batch_size": keys[3], "threads": c["threads"], "epoch_s": c["median_s"],
                         "speedup": base / c["median_s"],
                         "efficiency": base / c["median_s"] / (c["threads"] / t0), "flags": c["flags"]})
    return pd.DataFrame(rows)


def compile_table(cells):
    import pandas as pd
    rep = representative(cells)
    rep = rep[rep["usable"] & rep["compile.cold_s"].notna()] if "compile.cold_s" in rep else rep.iloc[0:0]
    return pd.DataFrame([{"machine": c["machine_label"], "model": c["model"], "backend": c["backend"],
                          "batch_size": c["batch_size"], "threads": c["threads"],
                          "compile_cold_s": c["compile.cold_s"],
                          "compile_cached_s": c.get("compile.cache_hit_s"),
                          "epoch_s": c["median_s"],
                          "cold_compile_in_epochs": c["compile.cold_s"] / c["median_s"],
                          "flags": c["flags"]} for _, c in rep.iterrows()])


CELL_COLUMNS = ("run_id", "machine", "kind", "model", "backend", "batch_size", "threads", "dataset",
                "shape_label", "dtype", "status", "validation.max_error", "median_s", "iqr_s",
                "samples_per_s", "gflops", "gbytes_per_s", "accuracy", "flags", "error")


def cell_table(cells):
    t = cells.sort_values(["machine", "kind", "model", "backend", "batch_size", "threads"],
                          na_position="first", key=lambda s: s.astype(str))
    return t[[c for c in CELL_COLUMNS if c in t]].rename(columns={"shape_label": "shape",
                                                                  "validation.max_error": "max_error"})


def _run_text(header):
    git = header.get("git") or {}
    text = f"run `{header['run_id']}`, commit `{(git.get('commit') or 'unknown')[:10]}`"
    text += " with uncommitted changes" if git.get("dirty") else ""
    status = header.get("status")
    return text + (f", run status {status}" if status != "complete" else "")


def _batch_text(batch_size):
    return f"batch {batch_size}" if batch_size else "full batch"


def headline(cells, runs):
    """Markdown: epoch time per model x backend with the speed-up over numpy, one
    table per machine, each naming the CPU, the run and the commit."""
    st = speedup_table(cells)
    if st.empty:
        return "No valid numpy epoch cell to compare against: no headline table.\n"
    headers = {h["run_id"]: h for h in runs["header"]}
    rep = representative(cells)
    parts = []
    for machine, g in st.groupby("machine", sort=False):
        backends = [BASELINE] + sorted(b for b in g["backend"].unique() if b != BASELINE)
        rows = []
        for model, mg in g.groupby("model"):
            synthetic = ", SYNTHETIC data" if mg["dataset"].iloc[0] == "synthetic" else ""
            batch = _batch_text(mg["batch_size"].iloc[0])
            samples = mg["train_samples"].dropna()
            samples = f", {int(samples.iloc[0]):,} samples" if len(samples) else ""
            row = [f"{model} ({batch}, {mg['threads'].iloc[0]} threads{samples}{synthetic})"]
            for b in backends:
                c = mg[mg["backend"] == b]
                if c.empty:
                    row.append("")
                elif c["epoch_s"].iloc[0] is None or math.isnan(c["epoch_s"].iloc[0]):
                    row.append(c["status"].iloc[0])
                else:
                    noisy = " ~" if "noisy" in c["flags"].iloc[0] else ""
                    row.append(f"{c['epoch_s'].iloc[0]:.3g} s ({c['speedup'].iloc[0]:.2f}x){noisy}")
            rows.append(row)
        run_ids = sorted(set(rep[rep["machine_label"] == machine]["run_id"]))
        runs_text = "; ".join(_run_text(headers[r]) for r in run_ids)
        datasets = ", ".join(sorted(set(g["dataset"].astype(str))))
        parts.append(f"**{machine}** ({runs_text}; data: {datasets})\n\n" +
                     md_table(["model"] + backends, rows) +
                     "\nMedian seconds per training epoch (speed-up over numpy). `~`: noisy "
                     "(IQR over 10 % of the median); invalid: failed validation, never timed.\n")
    return "\n".join(parts)


# -- plots --------------------------------------------------------------------------------

def _figure(n_rows, n_cols, width=5.0, height=3.6):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    return fig, axes


def _colors(cells):
    """One colour per backend, the same in every plot of the report."""
    from matplotlib import colormaps
    palette = colormaps["tab20"].colors  # tab10 repeats after ten backends
    return {n: palette[i % len(palette)] for i, n in enumerate(sorted(set(cells["backend"])))}


def _plain_log(ax, axis="both"):
    """Log axes labelled 0.5, 1, 2 rather than 5x10^-1."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        # LogFormatter decides which ticks get a label; the label is the plain number
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    for a in ((ax.xaxis, ax.yaxis) if axis == "both" else (getattr(ax, axis + "axis"),)):
        a.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
        # intermediate ticks labelled only where the axis spans under two decades
        a.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _left_out_note(ax, cells):
    """Say on the plot which cells of this panel are not drawn, and why."""
    bad = cells[cells["status"] != "ok"]
    if not bad.empty:
        text = "not drawn: " + "; ".join(f"{', '.join(sorted(set(g['backend'])))} ({status})"
                                         for status, g in bad.groupby("status"))
        ax.text(0.01, 0.01, textwrap.fill(text, 70), transform=ax.transAxes, fontsize=7,
                color="firebrick", va="bottom")


def plot_speedup(cells):
    st = speedup_table(cells)
    if st.empty or st[st["backend"] != BASELINE]["status"].count() == 0:
        return None, "no machine has epoch cells for numpy and another backend at one setting"
    machines = list(dict.fromkeys(st["machine"]))
    fig, axes = _figure(len(machines), 1, width=8, height=3.8)
    colors = _colors(cells)
    for ax, machine in zip(axes[:, 0], machines):
        g = st[st["machine"] == machine]
        models = sorted(g["model"].unique())
        others = sorted(b for b in g["backend"].unique() if b != BASELINE)
        width = 0.8 / max(1, len(others))
        labelled = set()
        for i, b in enumerate(others):
            for j, model in enumerate(models):
                c = g[(g["backend"] == b) & (g["model"] == model)]
                if c.empty:
                    continue
                x = j + (i - (len(others) - 1) / 2) * width
                if c["speedup"].isna().iloc[0]:
                    ax.text(x, 0.03, f"{b}: {c['status'].iloc[0]}", rotation=90, ha="center", va="bottom",
                            fontsize=7, color="firebrick", transform=ax.get_xaxis_transform())
                    continue
                s, lo, hi = c[["speedup", "speedup_low", "speedup_high"]].iloc[0]
                # bars grow from 1x: up for a speed-up, down for a slow-down (log scale)
                ax.bar(x, s - 1, width, bottom=1, color=colors[b], label=None if b in labelled else b,
                       hatch="//" if "noisy" in c["flags"].iloc[0] else None,
                       yerr=[[s - lo], [hi - s]], capsize=3)
                ax.annotate(f"{s:.2g}x", (x, hi if s >= 1 else lo), ha="center", fontsize=7,
                            va="bottom" if s >= 1 else "top",
                            xytext=(0, 2 if s >= 1 else -2), textcoords="offset points")
                labelled.add(b)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        _plain_log(ax, "y")
        ax.margins(y=0.15)
        ax.set_xlim(-0.5, len(models) - 0.5)
        ax.set_xticks(range(len(models)),
                      [f"{m}\n{_batch_text(g[g['model'] == m]['batch_size'].iloc[0])}, "
                       f"{g[g['model'] == m]['threads'].iloc[0]} threads" for m in models])
        ax.set_ylabel("speed-up over numpy (x)")
        ax.set_title(machine, fontsize=9)
        ax.legend(fontsize=7, ncols=2)
    fig.suptitle("Speed-up over numpy (median; whiskers: quartile range; hatched: noisy)", fontsize=10)
    return fig, None


def plot_epoch_vs_batch(cells):
    e = cells[(cells["kind"] == "epoch") & ~cells["superseded"]]
    # full-batch cells (batch size 0) sit at the training-set size, where recorded
    full = e["train_samples"] if "train_samples" in e else [None] * len(e)
    e = e.assign(x=[bs if bs else _int_or_none(n) for bs, n in zip(e["batch_size"], full)])
    e = e[[x is not None and x > 0 for x in e["x"]]]
    if e["usable"].sum() == 0:
        return None, "no valid epoch cells with a batch size"
    panels = sorted({(m, mo) for m, mo in zip(e["machine_label"], e["model"])})
    machines = list(dict.fromkeys(m for m, _ in panels))
    models = sorted({mo for _, mo in panels})
    fig, axes = _figure(len(machines), len(models))
    colors = _colors(cells)
    for r, machine in enumerate(machines):
        for c, model in enumerate(models):
            ax = axes[r, c]
            g = e[(e["machine_label"] == machine) & (e["model"] == model)]
            ok = g[g["usable"]]
            if ok.empty:
                ax.set_axis_off()
                ax.set_title(f"{model}: no valid cells", fontsize=8)
                continue
            threads = ok["threads"].max()
            for b, bg in ok[ok["threads"] == threads].groupby("backend"):
                bg = bg.sort_values("x")
                ax.errorbar(bg["x"], bg["median_s"], marker="o", ms=4, capsize=2, color=colors[b],
                            yerr=[bg["median_s"] - bg["q1_s"], bg["q3_s"] - bg["median_s"]], label=b)
            noisy = ok[(ok["threads"] == threads) & ok["noisy"]]
            if len(noisy):
                ax.scatter(noisy["x"], noisy["median_s"], s=80, facecolors="none",
                           edgecolors="red", zorder=3, label="noisy (IQR > 10 % of median)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain_log(ax)
            ax.set_xlabel("batch size" + (" (full batch at the training-set size)"
                                          if (ok["batch_size"] == 0).any() else ""))
            ax.set_ylabel("seconds per epoch")
            ax.set_title(f"{model}, {threads} threads\n{machine}", fontsize=8)
            ax.legend(fontsize=7)
            _left_out_note(ax, g[g["threads"] == threads])
    fig.suptitle("Epoch time against batch size (median, bars: quartiles)", fontsize=10)
    return fig, None


def _size(shape):
    """A kernel call's size as one number: the geometric mean of its dims (n for n x n x n)."""
    return float(np.exp(np.mean(np.log(np.asarray(shape, float)))))


def plot_kernel_gflops(cells, machines):
    # float32, the dtype the networks train in; float64 cells are in the tables
    k = cells[(cells["kind"] == "kernel") & cells["usable"] & cells["gflops"].notna() &
              (cells["dtype"] == "float32")]
    if k.empty:
        return None, "no valid float32 kernel cells with GFLOP/s"
    k = k.assign(size=[_size(s) for s in k["shape"]])
    panels = sorted({(m, f) for m, f in zip(k["machine_label"], k["model"])})
    machine_rows = list(dict.fromkeys(m for m, _ in panels))
    families = sorted({f for _, f in panels})
    fig, axes = _figure(len(machine_rows), len(families), width=6, height=4)
    colors = _colors(cells)
    for r, machine in enumerate(machine_rows):
        for c, family in enumerate(families):
            ax = axes[r, c]
            g = k[(k["machine_label"] == machine) & (k["model"] == family)]
            if g.empty:
                ax.set_axis_off()
                continue
            several = g.groupby("backend")["threads"].nunique().max() > 1
            for (b, th), bg in g.groupby(["backend", "threads"]):
                bg = bg.sort_values("size")
                ax.plot(bg["size"], bg["gflops"], marker="o", ms=4, color=colors[b],
                        label=f"{b} ({th} threads)" if several else b)
            blas = g[g["backend"].str.contains(BLAS_VERSION)]
            if not blas.empty:
                ceiling = blas.groupby("size")["gflops"].max()
                ax.plot(ceiling.index, ceiling.values, color="gray", ls="--", lw=3, alpha=0.6,
                        zorder=0, label="measured BLAS ceiling (best BLAS version)")
            info = machines[g["run_id"].iloc[0]]
            per_core, why = peak_per_core(info)
            if per_core is None:
                ax.text(0.01, 0.99, "theoretical peak omitted: " + why.split(":")[0], fontsize=7,
                        transform=ax.transAxes, va="top", color="firebrick")
            else:
                cores = info.get("cores") or 1
                for th in sorted(set(g["threads"]), key=str):
                    peak = peak_gflops(info, th)
                    ax.axhline(peak, color="firebrick", ls=":", lw=1.2)
                    ax.text(g["size"].min(), peak, f" peak, {min(th or cores, cores)} cores: "
                            f"{peak:.0f} GFLOP/s", fontsize=7, va="bottom", color="firebrick")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            _plain_log(ax, "y")
            ax.set_xlabel("size n (geometric mean of the shape; n x n x n matmul)")
            ax.set_ylabel("GFLOP/s (fp32)")
            ax.set_title(f"{family}\n{machine}", fontsize=8)
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Kernel GFLOP/s against size, with BLAS and peak ceilings", fontsize=10)
    return fig, None


def plot_time_to_accuracy(cells):
    t = cells[(cells["kind"] == "tta") & cells["usable"]]
    t = t[[any(s.get("epoch_log") for s in _seeds(c)) for _, c in t.iterrows()]]
    if t.empty:
        return None, "no valid time-to-accuracy cells with an epoch log"
    panels = sorted({(m, mo) for m, mo in zip(t["machine_label"], t["model"])})
    fig, axes = _figure(1, len(panels))
    colors = _colors(cells)
    for ax, (machine, model) in zip(axes[0], panels):
        g = t[(t["machine_label"] == machine) & (t["model"] == model)]
        for _, c in g.iterrows():
            score = c.get("score_s")
            label = c["backend"] + (f" (score {score:.3g} s)" if score is not None and not math.isnan(score) else "")
            for seed in _seeds(c):
                log = seed.get("epoch_log") or []
                ax.plot([e["elapsed_s"] for e in log], [e["accuracy"] for e in log], marker="o",
                        ms=3, lw=1, alpha=0.7, color=colors[c["backend"]], label=label)
                label = None  # one legend entry per backend, not per seed
        targets = g["target_accuracy"].dropna() if "target_accuracy" in g else []
        if len(targets):
            ax.axhline(targets.iloc[0], color="gray", ls="--", lw=1, label=f"target {targets.iloc[0]:g}")
        synthetic = " (SYNTHETIC data: accuracy meaningless)" if g["synthetic"].any() else ""
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{model}{synthetic}\n{machine}", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Time to accuracy, every seed (score: MLPerf)", fontsize=10)
    return fig, None


def plot_thread_scaling(cells):
    tt = thread_table(cells)
    if tt.empty:
        return None, "no backend was measured at two or more thread counts"
    machines = list(dict.fromkeys(tt["machine"]))
    fig, axes = _figure(1, len(machines), width=5.5, height=4)
    colors = _colors(cells)
    markers = dict(zip(sorted(tt["model"].unique()), "osD^v<>"))
    for ax, machine in zip(axes[0], machines):
        g = tt[tt["machine"] == machine]
        for (model, b, bs), lg in g.groupby(["model", "backend", "batch_size"]):
            ax.plot(lg["threads"], lg["speedup"], marker=markers[model], color=colors[b],
                    label=f"{model} {b} (batch {bs})")
        most = g["threads"].max()
        ax.plot([1, most], [1, most], color="gray", ls=":", label="ideal")
        ax.set_xticks(sorted(g["threads"].unique()))
        ax.set_xlabel("threads")
        ax.set_ylabel("speed-up over fewest threads")
        ax.set_title(machine, fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle("Thread scaling of one epoch", fontsize=10)
    return fig, None


def plot_compile(cells):
    ct = compile_table(cells)
    if ct.empty:
        return None, "no valid epoch cell recorded a compile time"
    labels = [f"{m.split(':')[0]} {mo} {b}" for m, mo, b in zip(ct["machine"], ct["model"], ct["backend"])]
    fig, axes = _figure(1, 1, width=8, height=0.45 * len(ct) + 1.5)
    ax = axes[0, 0]
    y = np.arange(len(ct))
    series = (("compile_cold_s", "cold: compile with an empty cache (or first step where nothing caches)", "tab:red"),
              ("compile_cached_s", "first call, compile cache warm", "tab:orange"),
              ("epoch_s", "one steady-state epoch", "tab:blue"))
    for i, (col, name, color) in enumerate(series):
        values = ct[col].astype(float)
        drawn = values.notna()  # a missing cached-compile figure is no bar, not a zero
        if not drawn.any():
            continue
        ax.barh(y[drawn] + (1 - i) * 0.27, values[drawn], 0.27, color=color, label=name)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xscale("log")
    _plain_log(ax, "x")
    ax.set_xlabel("seconds")
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("Compile (JIT) time against steady-state epoch time", fontsize=10)
    return fig, None


# -- rendering ---------------------------------------------------------------------------------

def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def md_table(columns, rows) -> str:
    def cell(v):
        return _fmt(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(columns, rows) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        flagged = any(isinstance(v, str) and re.search(r"INVALID|ERROR|unavailable", v) for v in row)
        cls = ' class="flagged"' if flagged else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _frame_rows(df):
    return list(df.columns), [list(r) for r in df.itertuples(index=False)]


TABLE_TITLES = {
    "speedup": "Speed-up over numpy (representative setting per machine and model)",
    "percent_of_peak": "Kernel GFLOP/s, % of the measured BLAS best and of the theoretical peak",
    "time_to_accuracy": "Time to accuracy",
    "thread_scaling": "Thread scaling",
    "compile": "Compile time against steady-state epoch time",
    "cells": "Every cell with its validation status",
}


def generate(result_paths, out_dir) -> dict:
    """Write the report of the run files (or directories) ``result_paths`` into
    ``out_dir``; returns the paths written, the plots skipped and why, and notes."""
    runs, cells, machines = load(result_paths)
    plots_dir = os.path.join(out_dir, "plots")
    os.makedirs(plots_dir, exist_ok=True)

    tables = {"speedup": speedup_table(cells), "percent_of_peak": peak_table(cells, machines),
              "time_to_accuracy": tta_table(cells), "thread_scaling": thread_table(cells),
              "compile": compile_table(cells), "cells": cell_table(cells)}
    makers = {"speedup": lambda: plot_speedup(cells),
              "epoch_vs_batch": lambda: plot_epoch_vs_batch(cells),
              "kernel_gflops": lambda: plot_kernel_gflops(cells, machines),
              "time_to_accuracy": lambda: plot_time_to_accuracy(cells),
              "thread_scaling": lambda: plot_thread_scaling(cells),
              "compile_vs_steady": lambda: plot_compile(cells)}
    plots, skipped, png_data = {}, {}, {}
    for name, make in makers.items():
        fig, reason = make()
        if fig is None:
            skipped[name] = reason
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        png_data[name] = buf.getvalue()
        plots[name] = {"png": os.path.join(plots_dir, name + ".png"),
                       "svg": os.path.join(plots_dir, name + ".svg")}
        with open(plots[name]["png"], "wb") as f:
            f.write(png_data[name])
        fig.savefig(plots[name]["svg"], format="svg")

    notes = []
    for machine in {machine_label(m): m for m in machines.values()}.values():
        per_core, why = peak_per_core(machine)
        notes.append(f"theoretical peak on {machine_label(machine)}: {why}" + (
            "; cores as recorded (logical CPUs: with SMT two share one core's FMA units, so the "
            "peak is up to 2x too high)" if per_core else ""))
    superseded = int(cells["superseded"].sum())
    if superseded:
        notes.append(f"{superseded} cells superseded by a newer run of the same machine and "
                     f"coordinates: listed in the cell table, left out of plots and aggregates")
    counts = cells["status"].value_counts().to_dict()
    notes.append("cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                 f", {int(cells['noisy'].sum())} noisy, {int(cells['synthetic'].sum())} on synthetic data")
    run_rows = [[h["run_id"], machine_label(h.get("machine") or {}),
                 ((h.get("git") or {}).get("commit") or "")[:10], h.get("status"), h.get("started"), n]
                for h, n in zip(runs["header"], runs["n_cells"])]
    run_columns = ["run", "machine", "commit", "status", "started", "cells"]

    head_md = headline(cells, runs)
    headline_path = os.path.join(out_dir, "headline.md")
    with open(headline_path, "w", encoding="utf-8") as f:
        f.write(head_md)

    md = ["# mnist-numba-bench report\n", "## Runs\n", md_table(run_columns, run_rows), "## Notes\n"]
    md += [f"- {n}" for n in notes] + [""]
    md += [f"- plot {PLOT_TITLES[n]} skipped: {why}" for n, why in skipped.items()]
    md += ["", "## Headline\n", head_md]
    page = [f"<h1>mnist-numba-bench report</h1><h2>Runs</h2>{html_table(run_columns, run_rows)}",
            "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) +
            "".join(f"<li>plot <em>{html.escape(PLOT_TITLES[n])}</em> skipped: {html.escape(why)}</li>"
                    for n, why in skipped.items()) + "</ul>"]
    page.append("<h2>Headline</h2>" + _markdown_table_to_html(head_md))
    md.append("## Plots\n")
    page.append("<h2>Plots</h2>")
    for name in plots:
        md.append(f"### {PLOT_TITLES[name]}\n\n![{PLOT_TITLES[name]}](plots/{name}.png)\n")
        b64 = base64.b64encode(png_data[name]).decode("ascii")
        page.append(f'<figure><img alt="{html.escape(PLOT_TITLES[name])}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{html.escape(PLOT_TITLES[name])}</figcaption></figure>")
    md.append("## Tables\n")
    page.append("<h2>Tables</h2>")
    for name, df in tables.items():
        md.append(f"### {TABLE_TITLES[name]}\n")
        page.append(f"<h3>{html.escape(TABLE_TITLES[name])}</h3>")
        if df.empty:
            md.append("No data.\n")
            page.append("<p>No data.</p>")
            continue
        columns, rows = _frame_rows(df)
        md.append(md_table(columns, rows))
        page.append(html_table(columns, rows))

    md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
    with open(md_path, "w", encoding="utf-8") as f:
        f.write("\n".join(md))
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(HTML_PAGE.format(body="\n".join(page)))
    return {"html": html_path, "markdown": md_path, "headline": headline_path, "plots": plots,
            "skipped": skipped, "tables": {n: len(df) for n, df in tables.items()}, "notes": notes}


def _markdown_table_to_html(text) -> str:
    """The headline's Markdown (bold captions, pipe tables) as HTML, for the page."""
    out, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                rows.append([c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")])
            continue
        if rows:
            out.append(html_table(rows[0], rows[1:]))
            rows = []
        if line.strip():
            escaped = html.escape(line)
            out.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped) + "</p>")
    return "\n".join(out)


HTML_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mnist-numba-bench report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1400px; }}
table {{ border-collapse: collapse; font-size: 12px; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
th {{ background: #eee; }}
tr.flagged td {{ background: #fde8e8; }}
img {{ max-width: 100%; }}
figure {{ margin: 1em 0 2em 0; }}
</style></head><body>
{body}
</body></html>
"""


# -- command line ------------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("results", nargs="*", metavar="RESULTS",
                        help="run files or directories (default: the newest run of each machine "
                             "for each kind of cell in RESULTS_DIR/runs)")
    parser.add_argument("--out", default=os.path.join("results", "report"),
                        help="output directory (default results/report)")
    parser.add_argument("--results-dir", default="results", help="the results store (default results/)")


def main(args):
    paths = args.results or default_results(args.results_dir)
    out = generate(paths, args.out)
    print(f"report of {', '.join(paths)} -> {out['html']}, {out['markdown']}, {out['headline']}")
    print(f"plots: {', '.join(out['plots']) or 'none'} (PNG and SVG in {os.path.join(args.out, 'plots')})")
    for name, why in out["skipped"].items():
        print(f"  skipped {name}: {why}")
    for note in out["notes"]:
        print(f"  note: {note}")
    return 0
