"""The answer on the console after `mnist-bench run` and `mnist-bench kernels`, as
torch.utils.benchmark's Compare prints it: one row per model x batch size (a
kernel family's shape x dtype) and thread count, one column per backend
(version), each cell the median time and the speed-up over numpy (the family's
BLAS version) with its interval, the fastest of the row marked ``*`` and noisy
cells ``~``. The same table as CSV, Markdown or JSON with ``--format``."""
import json
import math

from .load import load
from .tables import BASELINE, BLAS_VERSION, batch_text, ratio

FORMATS = ("table", "csv", "markdown", "json")


def answer_rows(path) -> list:
    """[{model, batch_size, threads, dataset, images, backend, status, epoch_s,
    speedup, low, high, coverage, fastest, noisy}] of one run file's epoch cells."""
    _, cells, _ = load([path])
    epoch = cells[cells["kind"] == "epoch"]
    groups = ((key, g.sort_values("backend")) for key, g in
              epoch.groupby(["model", "batch_size", "threads", "dataset"], sort=True))
    return _compared(groups, lambda ok: ok[ok["backend"] == BASELINE], "epoch_s",
                     lambda key, c: {"model": key[0], "batch_size": int(key[1]), "threads": int(key[2]),
                                     "dataset": key[3], "images": c.get("train_samples"),
                                     "backend": c["backend"]})


def _compared(groups, baseline_of, time_key, describe) -> list:
    """One row per cell of each group: ``describe(key, cell)``, its status, its
    median as ``time_key``, its speed-up over the group's baseline cell with the
    interval, whether it is the fastest of the group, whether it is noisy."""
    rows = []
    for key, g in groups:
        ok = g[g["status"] == "ok"]
        base = baseline_of(ok)
        fastest = ok.sort_values("median_s")["backend"].iloc[0] if len(ok) else None
        for _, c in g.iterrows():
            row = dict(describe(key, c), status=c["status"], **{time_key: None}, speedup=None, low=None,
                       high=None, coverage=None, fastest=False, noisy=bool(c.get("noisy")))
            if c["status"] == "ok":
                row.update({time_key: float(c["median_s"])},
                           fastest=c["backend"] == fastest and len(ok) > 1)
                r = ratio(base.iloc[0], c) if len(base) else None
                if r:
                    row.update(speedup=r["ratio"], low=_num(r["low"]), high=_num(r["high"]),
                               coverage=r.get("coverage"))
            rows.append(row)
    return rows


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _cell_text(r) -> str:
    if r["status"] != "ok":
        return r["status"]
    text = f"{r['epoch_s']:.3g} s"
    if r["speedup"] is not None:
        text += f" {r['speedup']:.2f}x"
        if r["low"] is not None and r["backend"] != BASELINE:
            text += f" [{r['low']:.2f}-{r['high']:.2f}]"
    return text + ("*" if r["fastest"] else "") + ("~" if r["noisy"] else "")


def render(rows, fmt="table") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps(rows, indent=1)
    if fmt == "csv":
        import csv
        import io
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    backends = sorted({r["backend"] for r in rows}, key=lambda b: (b != BASELINE, b))
    settings = list(dict.fromkeys((r["model"], r["batch_size"], r["threads"], r["dataset"], r["images"])
                                  for r in rows))
    header = ["model", "batch", "threads", "images"] + backends
    body = []
    for model, bs, threads, dataset, images in settings:
        cells = {r["backend"]: _cell_text(r) for r in rows
                 if (r["model"], r["batch_size"], r["threads"], r["dataset"]) == (model, bs, threads, dataset)}
        body.append([model, batch_text(bs).replace("batch ", ""), str(threads),
                     f"{int(images):,}" if images == images and images else ""]
                    + [cells.get(b, "") for b in backends])
    coverage = sorted({round(100 * r["coverage"]) for r in rows if r["coverage"]})
    note = (f"median seconds per epoch; speed-up over {BASELINE} [interval, "
            f"{'/'.join(map(str, coverage)) or '?'} % coverage]; * fastest, ~ noisy")
    return _grid(header, body, fmt) + ("\n\n" if fmt == "markdown" else "\n") + note


def kernel_rows(path) -> list:
    """[{family, shape, dtype, threads, version, status, seconds, gflops, speedup,
    low, high, coverage, fastest, noisy}] of one run file's kernel cells; the
    speed-up is over the family's BLAS version where the run timed one."""
    _, cells, _ = load([path])
    kernel = cells[cells["kind"] == "kernel"]
    groups = kernel.groupby(["model", "shape_label", "dtype", "threads"], sort=False)
    return _compared(groups, lambda ok: ok[ok["backend"].str.contains(BLAS_VERSION)], "seconds",
                     lambda key, c: {"family": key[0], "shape": key[1], "dtype": key[2],
                                     "threads": int(key[3]), "version": c["backend"],
                                     "gflops": _num(c.get("gflops")) if c["status"] == "ok" else None})


def _kernel_text(r) -> str:
    if r["status"] != "ok":
        return r["status"]
    seconds = r["seconds"]
    text = f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"
    if r["gflops"]:
        text += f" {r['gflops']:,.0f} GF/s"
    if r["speedup"] is not None:
        text += f" {r['speedup']:.2f}x"
        if r["low"] is not None and not BLAS_VERSION.search(r["version"]):
            text += f" [{r['low']:.2f}-{r['high']:.2f}]"
    return text + ("*" if r["fastest"] else "") + ("~" if r["noisy"] else "")


def render_kernels(rows, fmt="table") -> str:
    """One table per family: rows shape x dtype x threads, columns its versions."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if fmt in ("json", "csv"):
        return render(rows, fmt)
    blocks = []
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        versions = sorted(dict.fromkeys(r["version"] for r in mine),
                          key=lambda v: not BLAS_VERSION.search(v))  # the baseline first
        settings = list(dict.fromkeys((r["shape"], r["dtype"], r["threads"]) for r in mine))
        header = [family, "dtype", "threads"] + versions
        body = []
        for shape, dtype, threads in settings:
            cells = {r["version"]: _kernel_text(r) for r in mine
                     if (r["shape"], r["dtype"], r["threads"]) == (shape, dtype, threads)}
            body.append([shape, dtype, str(threads)] + [cells.get(v, "") for v in versions])
        blocks.append(_grid(header, body, fmt))
    coverage = sorted({round(100 * r["coverage"]) for r in rows if r["coverage"]})
    note = (f"median time per call, GFLOP/s; speed-up over the family's BLAS version [interval, "
            f"{'/'.join(map(str, coverage)) or '?'} % coverage]; * fastest, ~ noisy")
    return "\n\n".join(blocks) + ("\n\n" if fmt == "markdown" else "\n") + note


def _grid(header, body, fmt) -> str:
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(header, widths))]
    return "\n".join(lines + ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in body])
