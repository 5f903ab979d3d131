"""The report's tables as Markdown and as HTML, the README headline, and the page.

Numbers read as people write them: thousands separators, four significant
digits, "full batch" for batch size 0. The HTML page is self-contained (plots
embedded as PNG, no network): every table can be sorted by clicking a column
header and filtered with the box above it, in a few lines of plain JavaScript.
"""
import html
import math
import re

import numpy as np

from .tables import BASELINE, batch_text, representative, speedup_table


# integer columns written without a thousands separator
PLAIN_INTEGERS = ("threads", "batch_size", "batch size", "run_id", "run")
# counts that a table may hold as floats (a column with a missing value)
COUNTS = ("images", "images per epoch", "train_samples", "backends", "backends timed", "cells")


def fmt(v, column=""):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if column in ("batch_size", "batch size") and isinstance(v, (int, np.integer, float)) and v == 0:
        return "full batch"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if column not in PLAIN_INTEGERS else str(int(v))
    if isinstance(v, (float, np.floating)) and column in COUNTS and float(v).is_integer():
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-3):
            return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def md_table(columns, rows) -> str:
    def cell(v, c):
        return fmt(v, c).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v, c) for v, c in zip(row, columns)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def html_table(columns, rows, interactive=True) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        flagged = any(isinstance(v, str) and re.search(r"INVALID|ERROR|unavailable", v) for v in row)
        cls = ' class="flagged"' if flagged else ""
        cells = []
        for v, c in zip(row, columns):
            sort = f' data-v="{float(v)}"' if isinstance(v, (int, float, np.integer, np.floating)) \
                and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v)) else ""
            cells.append(f"<td{sort}>{html.escape(fmt(v, c))}</td>")
        body.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    if interactive and len(rows) > 8:
        return ('<div class="tablebox"><input class="filter" placeholder="filter rows '
                '(every word must appear)" aria-label="filter rows">' + table + "</div>")
    return table


def frame_rows(df):
    return list(df.columns), [list(r) for r in df.itertuples(index=False)]


def run_text(header):
    git = header.get("git") or {}
    text = f"run `{header['run_id']}`, commit `{(git.get('commit') or 'unknown')[:10]}`"
    text += " with uncommitted changes" if git.get("dirty") else ""
    status = header.get("status")
    return text + (f", run status {status}" if status != "complete" else "")


def headline(cells, runs) -> str:
    """Markdown: epoch time per model x backend with the speed-up over numpy, its
    interval and the interval's real coverage, one table per machine, each naming
    the CPU, the runs, the commit."""
    st = speedup_table(cells)
    if st.empty:
        return "No valid numpy epoch cell to compare against: no headline table.\n"
    headers = {h["run_id"]: h for h in runs["header"]}
    rep = representative(cells)
    parts = []
    newest = st.groupby("machine").apply(lambda g: max(rep[rep["machine_label"] == g.name]["run_id"]),
                                         include_groups=False).sort_values(ascending=False)
    for machine in newest.index:
        g = st[st["machine"] == machine]
        backends = [BASELINE] + sorted(b for b in g["backend"].unique() if b != BASELINE)
        rows = []
        for model, mg in g.groupby("model"):
            synthetic = ", SYNTHETIC data" if mg["dataset"].iloc[0] == "synthetic" else ""
            samples = mg["train_samples"].dropna()
            samples = f", {int(samples.iloc[0]):,} samples" if len(samples) else ""
            row = [f"{model} ({batch_text(mg['batch_size'].iloc[0])}, {mg['threads'].iloc[0]} "
                   f"threads{samples}{synthetic})"]
            for b in backends:
                c = mg[mg["backend"] == b]
                if c.empty:
                    row.append("")
                elif c["epoch_s"].iloc[0] is None or math.isnan(c["epoch_s"].iloc[0]):
                    row.append(c["status"].iloc[0])
                else:
                    noisy = " ~" if "noisy" in c["flags"].iloc[0] else ""
                    lo, hi = c["speedup_low"].iloc[0], c["speedup_high"].iloc[0]
                    interval = "" if b == BASELINE or lo is None or math.isnan(lo) else \
                        f", {lo:.2f}-{hi:.2f}"
                    row.append(f"{c['epoch_s'].iloc[0]:.3g} s ({c['speedup'].iloc[0]:.2f}x"
                               f"{interval}){noisy}")
            rows.append(row)
        run_ids = sorted(set(rep[rep["machine_label"] == machine]["run_id"]))
        runs_text = "; ".join(run_text(headers[r]) for r in run_ids)
        datasets = ", ".join(sorted(set(g["dataset"].astype(str))))
        cover = sorted({round(100 * c) for c in g["coverage"].dropna() if c})
        cover_text = (f"{cover[0]} %" if len(cover) == 1 else f"{cover[0]}-{cover[-1]} %") if cover \
            else "unknown"
        parts.append(f"**{machine}** ({runs_text}; data: {datasets})\n\n" +
                     md_table(["model"] + backends, rows) +
                     f"\nMedian seconds per training epoch (speed-up over numpy and its interval, "
                     f"coverage {cover_text}: from the per-round ratios where the run interleaved the backends in "
                     "rounds, else from the two sets of samples). `~`: noisy (IQR over 10 % of the "
                     "median, or steal over 5 %); invalid: failed validation, never timed.\n")
    return "\n".join(parts)


def markdown_table_to_html(text) -> str:
    """The headline's Markdown (bold captions, pipe tables) as HTML, for the page."""
    out, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                rows.append([c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")])
            continue
        if rows:
            out.append(html_table(rows[0], rows[1:], interactive=False))
            rows = []
        if line.strip():
            escaped = html.escape(line)
            out.append("<p>" + re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped) + "</p>")
    return "\n".join(out)


SCRIPT = """
// the page's full height, for a full-page screenshot (report.screenshot)
window.addEventListener('load', function () {
  document.documentElement.dataset.height = document.documentElement.scrollHeight;
});
document.querySelectorAll('table').forEach(function (table) {
  var body = table.tBodies[0];
  table.querySelectorAll('th').forEach(function (th, col) {
    th.title = 'click to sort';
    th.addEventListener('click', function () {
      var up = th.dataset.order !== 'up';
      table.querySelectorAll('th').forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = up ? 'up' : 'down';
      var rows = Array.from(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var nx = x.dataset.v, ny = y.dataset.v, r;
        if (nx !== undefined && ny !== undefined) { r = parseFloat(nx) - parseFloat(ny); }
        else if (nx !== undefined) { r = -1; } else if (ny !== undefined) { r = 1; }
        else { r = x.textContent.localeCompare(y.textContent); }
        return up ? r : -r;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
document.querySelectorAll('.tablebox').forEach(function (box) {
  var input = box.querySelector('input'), rows = box.querySelectorAll('tbody tr');
  input.addEventListener('input', function () {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
    rows.forEach(function (row) {
      var text = row.textContent.toLowerCase();
      row.style.display = words.every(function (w) { return text.indexOf(w) >= 0; }) ? '' : 'none';
    });
  });
});
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mnist-numba-bench report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1500px; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; text-align: left; }}
td[data-v] {{ text-align: right; font-variant-numeric: tabular-nums; }}
th {{ background: #eee; cursor: pointer; position: sticky; top: 0; }}
th[data-order=up]::after {{ content: " \\25B2"; }}
th[data-order=down]::after {{ content: " \\25BC"; }}
tr.flagged td {{ background: #fde8e8; }}
.tablebox {{ max-height: 40em; overflow: auto; margin-bottom: 1.5em; }}
.filter {{ width: 30em; margin: 0.3em 0; padding: 2px 4px; }}
img {{ max-width: 100%; }}
figure {{ margin: 1em 0 2em 0; }}
.summary li {{ margin-bottom: 0.4em; }}
</style></head><body>
{body}
<script>{script}</script>
</body></html>
"""
