"""The report's plots. Each function returns (matplotlib Figure, None) or (None,
why it has nothing to draw). Every legend sits inside its figure; every backend
keeps one colour and marker across all plots; intervals are drawn as bars."""
import math

import numpy as np

from .tables import (BASELINE, _seeds, batch_text, ceilings, compile_table, crossover_data,
                     roofline_table, speedup_table, thread_table)

PLOT_TITLES = {
    "crossover": "Images per second against batch size, every backend (medians with their order-statistic intervals)",
    "single_setting": "Images per second per backend, where one batch size was measured (medians with their intervals)",
    "speedup": "Speed-up over numpy per model (intervals: coverage per cell in the tables)",
    "roofline": "Kernels against the measured ceilings (roofline)",
    "time_to_accuracy": "Accuracy against wall time",
    "thread_scaling": "Thread scaling",
    "compile_vs_steady": "Compile time against steady-state time",
}
# Distinct colours in an order where neighbours differ in hue and lightness
# (Paul Tol's "muted" and "bright" sets, interleaved), then matplotlib's tab20.
PALETTE = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB",
           "#332288", "#DDCC77", "#117733", "#CC6677", "#88CCEE", "#882255", "#44AA99",
           "#999933", "#AA4499", "#000000"]
MARKERS = "osD^v<>pPX*h"


def _figure(n_rows, n_cols, width=5.0, height=3.6):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * n_cols, height * n_rows), layout="constrained")
    return fig, fig.subplots(n_rows, n_cols, squeeze=False)


def _grid(n_panels, columns=3, width=5.5, height=4.2):
    """A figure of n panels, at most ``columns`` a row; unused axes hidden."""
    cols = min(columns, n_panels)
    rows = (n_panels + cols - 1) // cols
    fig, axes = _figure(rows, cols, width, height)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.set_axis_off()
    return fig, flat[:n_panels]


# One family of hues per library, dark and light shades alternating within it,
# so numpy's backends read as blues, Numba's as oranges, torch's as greens and
# JAX's as purples, in every plot of every report; a backend's shade and marker
# come from its place in the registry, not from which backends a report holds.
FAMILIES = {
    "numpy": ["#08519c", "#6baed6", "#2171b5", "#9ecae1"],
    "numba": ["#a63603", "#fd8d3c", "#e6550d", "#7f2704", "#fdae6b"],
    "torch": ["#006d2c", "#74c476", "#31a354", "#00441b", "#a1d99b", "#238b45", "#c7e9c0"],
    "jax": ["#54278f", "#9e9ac8", "#807dba", "#3f007d"],
    "other": ["#525252", "#969696", "#252525", "#bdbdbd"],
}
FAMILY_MARKERS = "osD^vPX<>ph*"


def family_of(backend) -> str:
    base = str(backend).split(":")[0]
    return next((f for f in FAMILIES if f != "other" and (base == f or base.startswith(f + "-"))),
                "other")


def styles(cells):
    """One (colour, marker) per backend, the same in every plot of the report and
    of every other report: its library's family of hues (FAMILIES), its place
    in the backend registry within that family."""
    from ..backends import REGISTRY
    order = list(REGISTRY)
    names = sorted(set(cells["backend"]), key=lambda b: (b.split(":")[0] not in order,
                                                          order.index(b.split(":")[0])
                                                          if b.split(":")[0] in order else 0, b))
    out = {}
    for name in names:
        family = family_of(name)
        known = [b for b in order if family_of(b) == family]
        # a registered backend: its place among its library's; a plugin or a
        # backend with options: the places after them, in name order
        i = known.index(name) if name in known else len(known) + sum(family_of(n) == family for n in out)
        shades = FAMILIES[family]
        out[name] = (shades[i % len(shades)], FAMILY_MARKERS[i % len(FAMILY_MARKERS)])
    return out


def _plain_log(ax, axis="both"):
    """Log axes labelled 0.5, 1, 2, 1,000 rather than 5x10^-1."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x, pos=None):
            if not super().__call__(x, pos):
                return ""
            return f"{x:,.0f}" if x >= 1 else f"{x:g}"

    for a in ((ax.xaxis, ax.yaxis) if axis == "both" else (getattr(ax, axis + "axis"),)):
        a.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
        a.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def plot_crossover(cells):
    from matplotlib.ticker import NullFormatter
    e = crossover_data(cells)
    if e.empty:
        return None, "no valid epoch cells with a batch size and an image count"
    panels = [(p, g) for p, g in sweep_panels(e).items() if g["x"].nunique() >= 2]
    if not panels:
        return None, ("no sweep over two or more batch sizes (results at one batch size are in "
                      "the single-setting chart)")
    fig, axes = _grid(len(panels))
    st = styles(cells)
    for ax, ((machine, model, threads, n_images), g) in zip(axes, panels):
        for b, bg in g.groupby("backend"):
            bg = bg.sort_values("x")
            color, marker = st[b]
            yerr = [np.clip(bg["images_per_s"] - bg["images_low"], 0, None).fillna(0),
                    np.clip(bg["images_high"] - bg["images_per_s"], 0, None).fillna(0)]
            ax.errorbar(bg["x"], bg["images_per_s"], yerr=yerr, marker=marker, ms=5, capsize=3,
                        color=color, label=b, lw=1.4)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log(ax, "y")
        xs = sorted(g["x"].dropna().unique())
        ax.set_xticks(xs, [f"{int(x):,}" for x in xs])  # the measured batch sizes, no others
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel("training images per second")
        samples = g["train_samples"].dropna()
        images = f", {int(samples.iloc[0]):,} images" if len(samples) else ""
        threads_text = f"{threads} threads" if threads else "threads not recorded"
        ax.set_title(f"{model}, {threads_text}{images}\n{machine}", fontsize=8)
    # one legend for every panel, below them, where it covers no point
    from matplotlib.lines import Line2D
    drawn = sorted({b for _, g in panels for b in g["backend"]}, key=list(st).index)
    fig.legend(handles=[Line2D([], [], color=st[b][0], marker=st[b][1], label=b) for b in drawn],
               loc="outside lower center", ncols=min(len(drawn), 6), fontsize=8)
    fig.suptitle(PLOT_TITLES["crossover"], fontsize=10)
    return fig, None


def sweep_panels(e) -> dict:
    """(machine, model, threads, images) -> the crossover rows of the one run
    that swept the most batch sizes there (the newest on a tie), so no line joins
    points measured by different code on different days."""
    panels = {}
    for key, g in e.groupby(["machine_label", "model", "threads", "n_images"], sort=True):
        spread = g.groupby("run_id").agg(sizes=("x", "nunique"), order=("run_order", "max"))
        panels[key] = g[g["run_id"] == max(spread.index, key=lambda r: tuple(spread.loc[r]))]
    return panels


def plot_single_setting(cells):
    """Images per second per backend, as bars, where a run measured one batch
    size only (a crossover panel would be a column of dots)."""
    e = crossover_data(cells)
    if e.empty:
        return None, "no valid epoch cells"
    panels = [(k, g) for k, g in sweep_panels(e).items() if g["x"].nunique() == 1]
    if not panels:
        return None, "every setting was swept over two or more batch sizes (see the crossover plot)"
    fig, axes = _grid(len(panels), columns=3, width=5.5, height=0.9 + 0.32 * max(
        g["backend"].nunique() for _, g in panels))
    st = styles(cells)
    for ax, ((machine, model, threads, n_images), g) in zip(axes, panels):
        g = g.sort_values("images_per_s")
        y = np.arange(len(g))
        colours = [st[b][0] for b in g["backend"]]
        err = [np.clip(g["images_per_s"] - g["images_low"], 0, None).fillna(0),
               np.clip(g["images_high"] - g["images_per_s"], 0, None).fillna(0)]
        ax.barh(y, g["images_per_s"], xerr=err, color=colours, capsize=3)
        ax.set_yticks(y, list(g["backend"]), fontsize=8)
        # a linear axis: a bar's length is its throughput
        from matplotlib.ticker import FuncFormatter
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, pos: f"{x:,.0f}"))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("training images per second")
        bs = g["batch_size"].iloc[0]
        threads_text = f"{threads} threads" if threads else "threads not recorded"
        images = f", {int(n_images):,} images" if n_images else ""
        ax.set_title(f"{model}, {batch_text(bs)}, {threads_text}{images}\n{machine}", fontsize=8)
    fig.suptitle(PLOT_TITLES["single_setting"], fontsize=10)
    return fig, None


def plot_speedup(cells):
    st_table = speedup_table(cells)
    if st_table.empty or st_table[st_table["backend"] != BASELINE]["status"].count() == 0:
        return None, "no machine has epoch cells for numpy and another backend at one setting"
    machines = list(dict.fromkeys(st_table["machine"]))
    fig, axes = _figure(len(machines), 1, width=9, height=4)
    st = styles(cells)
    for ax, machine in zip(axes[:, 0], machines):
        g = st_table[st_table["machine"] == machine]
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
                    ax.text(x, 0.03, f"{b}: {c['status'].iloc[0]}", rotation=90, ha="center",
                            va="bottom", fontsize=7, color="firebrick",
                            transform=ax.get_xaxis_transform())
                    continue
                s, lo, hi = (float(v) for v in c[["speedup", "speedup_low", "speedup_high"]].iloc[0])
                lo, hi = (s if math.isnan(lo) else lo), (s if math.isnan(hi) else hi)
                ax.bar(x, s - 1, width, bottom=1, color=st[b][0],
                       label=None if b in labelled else b,
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
                      [f"{m}\n{batch_text(g[g['model'] == m]['batch_size'].iloc[0])}, "
                       f"{g[g['model'] == m]['threads'].iloc[0]} threads" for m in models])
        ax.set_ylabel("speed-up over numpy (x)")
        ax.set_title(machine, fontsize=9)
        ax.legend(fontsize=7, ncols=3, loc="best")
    fig.suptitle(PLOT_TITLES["speedup"] + "; hatched: noisy", fontsize=10)
    return fig, None


def plot_roofline(cells, machines):
    table = roofline_table(cells, machines)
    if table.empty:
        return None, "no valid kernel cells with FLOP and byte counts"
    roofs = ceilings(cells, machines)
    panels = sorted({(m, d, t, dev) for m, d, t, dev in zip(table["machine"], table["dtype"],
                                                           table["threads"], table["device"])}, key=str)
    fig, axes = _grid(len(panels), columns=2, width=6.5, height=4.8)
    families = sorted(set(table["kernel"]))
    markers = {f: MARKERS[i % len(MARKERS)] for i, f in enumerate(families)}
    colors = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(sorted(set(table["version"])))}
    from matplotlib.lines import Line2D
    for ax, (machine, dtype, threads, device) in zip(axes, panels):
        g = table[(table["machine"] == machine) & (table["dtype"] == dtype) &
                  (table["threads"] == threads) & (table["device"] == device) &
                  table["intensity"].notna()]
        for (family, version), fg in g.groupby(["kernel", "version"]):
            ax.scatter(fg["intensity"], fg["gflops"], marker=markers[family], s=28,
                       color=colors[version], alpha=0.85)
        roof = roofs.get((machine, threads, dtype, device), {})
        xs = np.logspace(np.log10(max(0.05, g["intensity"].min() / 2)),
                         np.log10(g["intensity"].max() * 2), 100) if not g.empty else np.logspace(-1, 3)
        if roof.get("peak"):
            ax.axhline(roof["peak"], color="firebrick", lw=1.5, ls="-")
            ax.text(xs[0], roof["peak"], f" peak {roof['peak']:,.0f} GFLOP/s ({roof['peak_source']})",
                    color="firebrick", fontsize=7, va="bottom")
        if roof.get("bandwidth"):
            ys = roof["bandwidth"] * xs
            if roof.get("peak"):
                ys = np.minimum(ys, roof["peak"])
            ax.plot(xs, ys, color="navy", lw=1.5, ls="--")
            ax.text(xs[0], roof["bandwidth"] * xs[0], f" {roof['bandwidth']:,.0f} GB/s "
                    f"({roof['bandwidth_source']})", color="navy", fontsize=7, va="bottom")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log(ax)
        ax.set_xlabel("arithmetic intensity (FLOP per byte the kernel must move)")
        ax.set_ylabel(f"GFLOP/s ({dtype})")
        ax.set_title(f"{dtype}, " + ("GPU" if device == "cuda" else f"{threads} threads") +
                     f"\n{machine}", fontsize=8)
        # one legend entry per family (its marker) and per version (its colour)
        handles = [Line2D([], [], ls="", marker=markers[f], color="black", label=f)
                   for f in sorted(set(g["kernel"]))]
        handles += [Line2D([], [], ls="", marker="s", color=colors[v], label=v)
                    for v in sorted(set(g["version"]))]
        ax.legend(handles=handles, fontsize=6, loc="lower right", ncols=2)
    fig.suptitle(PLOT_TITLES["roofline"], fontsize=10)
    return fig, None


def plot_time_to_accuracy(cells):
    t = cells[(cells["kind"] == "tta") & cells["usable"]]
    t = t[[any(s.get("epoch_log") for s in _seeds(c)) for _, c in t.iterrows()]]
    if t.empty:
        return None, "no valid time-to-accuracy cells with an epoch log"
    panels = sorted({(m, mo) for m, mo in zip(t["machine_label"], t["model"])})
    fig, axes = _grid(len(panels), width=5, height=3.6)
    st = styles(cells)
    for ax, (machine, model) in zip(axes, panels):
        g = t[(t["machine_label"] == machine) & (t["model"] == model)]
        for _, c in g.iterrows():
            score = c.get("score_s")
            label = c["backend"] + (f" (score {score:.3g} s)" if score is not None and not math.isnan(score) else "")
            for seed in _seeds(c):
                log = seed.get("epoch_log") or []
                ax.plot([e["elapsed_s"] for e in log], [e["accuracy"] for e in log],
                        marker=st[c["backend"]][1], ms=3, lw=1, alpha=0.7,
                        color=st[c["backend"]][0], label=label)
                label = None  # one legend entry per backend, not per seed
        targets = g["target_accuracy"].dropna() if "target_accuracy" in g else []
        if len(targets):
            ax.axhline(targets.iloc[0], color="gray", ls="--", lw=1, label=f"target {targets.iloc[0]:g}")
        synthetic = " (SYNTHETIC data: accuracy meaningless)" if g["synthetic"].any() else ""
        _label(ax, "wall time (s)", "test accuracy", f"{model}{synthetic}\n{machine}",
               fontsize=7, loc="lower right")
    fig.suptitle("Time to accuracy, every seed (score: MLPerf)", fontsize=10)
    return fig, None


def _label(ax, xlabel, ylabel, title, **legend):
    """An axes' labels, title and legend, the same in every panel plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=8)
    ax.legend(**legend)


def plot_thread_scaling(cells):
    tt = thread_table(cells)
    if tt.empty:
        return None, "no backend was measured at two or more thread counts"
    machines = list(dict.fromkeys(tt["machine"]))
    fig, axes = _grid(len(machines), width=5.5, height=4)
    st = styles(cells)
    model_markers = dict(zip(sorted(tt["model"].unique()), "osD^v<>"))
    for ax, machine in zip(axes, machines):
        g = tt[tt["machine"] == machine]
        for (model, b, bs), lg in g.groupby(["model", "backend", "batch_size"]):
            ax.plot(lg["threads"], lg["speedup"], marker=model_markers[model], color=st[b][0],
                    label=f"{model} {b} ({batch_text(bs)})")
        most = g["threads"].max()
        ax.plot([1, most], [1, most], color="gray", ls=":", label="ideal")
        ax.set_xticks(sorted(g["threads"].unique()))
        _label(ax, "threads", "speed-up over fewest threads (one run, one epoch size)", machine,
               fontsize=6, loc="upper left", ncols=2)
    fig.suptitle("Thread scaling of one epoch", fontsize=10)
    return fig, None


def plot_compile(cells):
    ct = compile_table(cells)
    if ct.empty:
        return None, "no valid epoch cell recorded a compile time"
    # each bar names its epoch's image count: a 2,560-image epoch is not a 50,000-image one
    labels = [f"{m.split(':')[0]} {mo} {b}" + (f" ({int(n):,} images)" if n == n and n else "")
              for m, mo, b, n in zip(ct["machine"], ct["model"], ct["backend"], ct["images"])]
    fig, axes = _figure(1, 1, width=8.5, height=0.45 * len(ct) + 2.2)
    ax = axes[0, 0]
    y = np.arange(len(ct))
    series = (("compile_cold_s", "cold: empty compile caches (first step where nothing caches)", "#CC3311"),
              ("compile_cached_s", "cache hit", "#EE7733"),
              ("epoch_s", "one steady-state epoch", "#0077BB"))
    for i, (col, name, color) in enumerate(series):
        values = ct[col].astype(float)
        drawn = values.notna()
        if drawn.any():
            ax.barh(y[drawn] + (1 - i) * 0.27, values[drawn], 0.27, color=color, label=name)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xscale("log")
    _plain_log(ax, "x")
    ax.set_xlabel("seconds")
    ax.legend(loc="lower right", fontsize=7, framealpha=0.9)
    fig.suptitle("Compile (JIT) time against steady-state epoch time", fontsize=10)
    return fig, None


def makers(cells, machines):
    return {"crossover": lambda: plot_crossover(cells),
            "single_setting": lambda: plot_single_setting(cells),
            "speedup": lambda: plot_speedup(cells),
            "roofline": lambda: plot_roofline(cells, machines),
            "time_to_accuracy": lambda: plot_time_to_accuracy(cells),
            "thread_scaling": lambda: plot_thread_scaling(cells),
            "compile_vs_steady": lambda: plot_compile(cells)}

