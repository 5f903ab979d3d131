"""The answer on the console after `mnist-bench run`, as torch.utils.benchmark's
Compare prints it: one row per model x batch size (and thread count), one column
per backend, each cell the median time per epoch and the speed-up over numpy with
its interval, the fastest of the row marked ``*`` and noisy cells ``~``. The same
table as CSV, Markdown or JSON with ``--format``."""
import json
import math

from .load import load
from .tables import BASELINE, batch_text, ratio

FORMATS = ("table", "csv", "markdown", "json")


def answer_rows(path) -> list:
    """[{model, batch_size, threads, dataset, images, backend, status, epoch_s,
    speedup, low, high, coverage, fastest, noisy}] of one run file's epoch cells."""
    _, cells, _ = load([path])
    epoch = cells[cells["kind"] == "epoch"]
    rows = []
    for (model, bs, threads, dataset), g in epoch.groupby(["model", "batch_size", "threads", "dataset"],
                                                           sort=True):
        ok = g[g["status"] == "ok"]
        base = ok[ok["backend"] == BASELINE]
        fastest = ok.sort_values("median_s")["backend"].iloc[0] if len(ok) else None
        for _, c in g.sort_values("backend").iterrows():
            row = {"model": model, "batch_size": int(bs), "threads": int(threads), "dataset": dataset,
                   "images": c.get("train_samples"), "backend": c["backend"], "status": c["status"],
                   "epoch_s": None, "speedup": None, "low": None, "high": None, "coverage": None,
                   "fastest": False, "noisy": bool(c.get("noisy"))}
            if c["status"] == "ok":
                row.update(epoch_s=float(c["median_s"]), fastest=c["backend"] == fastest and len(ok) > 1)
                if len(base):
                    r = ratio(base.iloc[0], c)
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
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines) + f"\n\n{note}"
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(header, widths))]
    lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in body]
    return "\n".join(lines) + f"\n{note}"
