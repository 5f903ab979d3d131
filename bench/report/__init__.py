"""`mnist-bench report`: the results store as an answer.

Reads run files (results/SCHEMA.md), aggregates them with pandas (tables.py),
draws with matplotlib (plots.py) and writes (render.py) into the output folder:

- ``report.html``: one self-contained page that opens with the answer of the
  newest run of each machine (in words generated from the data, then the
  fastest validated backend per model x batch size x threads with its margin
  over the runner-up and that margin's interval, or "no clear winner", in
  columns named as a reader names them), the crossover plot (or, for results
  at a single batch size, a bar chart); then what every run says, the headline,
  every plot embedded as PNG, every table sortable and filterable;
- ``tables/<name>.csv``: every table of the page, values unformatted;
- ``report.md``: the same in Markdown, plots linked as PNG files;
- ``headline.md``: epoch time per model x backend with the speed-up over numpy,
  per machine, for the README;
- ``plots/<name>.png`` and ``plots/<name>.svg``.

CPU and GPU runs of any number of machines sit side by side; the machine table
puts the same cells on different machines next to each other.
"""
import base64
import html
import io
import os
import shutil
import subprocess
import sys

from .load import default_results, load, machine_label
from .plots import PLOT_TITLES, makers
from .render import (PAGE, SCRIPT, frame_rows, headline, html_table, markdown_table_to_html, md_table,
                     run_text)
from .tables import (RECOMMENDATION_COLUMNS, answer_table, bandwidth_table, cell_table, compile_table, machines_table,
                     newest_runs, peak_per_core, recommendation_table, roofline_table, speedup_table,
                     summary, thread_table, tta_table)

__all__ = ["generate", "load", "default_results", "peak_per_core", "speedup_table",
           "roofline_table", "recommendation_table", "PLOT_TITLES", "TABLE_TITLES"]

TABLE_TITLES = {
    "answer": "The answer: the newest run of each machine",
    "recommendation": "Recommendation: the fastest validated backend per model, batch size and threads",
    "speedup": "Speed-up over numpy (representative setting per machine and model)",
    "roofline": "Kernels: GFLOP/s, % of the roof at their arithmetic intensity and of the best BLAS",
    "bandwidth": "Memory-bound kernels: GB/s and % of the measured bandwidth",
    "time_to_accuracy": "Time to accuracy",
    "thread_scaling": "Thread scaling",
    "compile": "Compile time against steady-state epoch time, and where each figure came from",
    "machines": "The same cells on different machines",
    "cells": "Every cell with its validation status",
}


def generate(result_paths, out_dir, skip_bad=False) -> dict:
    """Write the report of the run files (or directories) ``result_paths`` into
    ``out_dir``; returns the paths written, the plots skipped and why, and notes.
    ``skip_bad``: leave malformed cell lines out (each warned about, and counted
    in the report) instead of refusing the file."""
    from ..errors import writable_dir
    from ..store import write_atomic
    runs, cells, machines = load(result_paths, skip_bad)
    plots_dir = writable_dir(os.path.join(out_dir, "plots"), "--out")
    tables_dir = writable_dir(os.path.join(out_dir, "tables"), "--out")
    rec = recommendation_table(cells)
    newest = newest_runs(cells)
    tables = {"answer": answer_table(rec, newest),
              "recommendation": rec.drop(columns=["run_id"]).rename(columns=RECOMMENDATION_COLUMNS),
              "speedup": speedup_table(cells), "roofline": roofline_table(cells, machines),
              "bandwidth": bandwidth_table(cells, machines), "time_to_accuracy": tta_table(cells),
              "thread_scaling": thread_table(cells), "compile": compile_table(cells),
              "machines": machines_table(cells), "cells": cell_table(cells)}
    plots, skipped, png = {}, {}, {}
    for name, make in makers(cells, machines).items():
        fig, reason = make()
        if fig is None:
            skipped[name] = reason
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        png[name] = buf.getvalue()
        plots[name] = {"png": os.path.join(plots_dir, name + ".png"),
                       "svg": os.path.join(plots_dir, name + ".svg")}
        with open(plots[name]["png"], "wb") as f:
            f.write(png[name])
        fig.savefig(plots[name]["svg"], format="svg")

    notes = []
    for machine in {machine_label(m): m for m in machines.values()}.values():
        per_core, why = peak_per_core(machine)
        if per_core:
            notes.append(f"theoretical peak on {machine_label(machine)} (used only where no "
                         f"fma_peak cell was measured): {why}")
    superseded = int(cells["superseded"].sum())
    if superseded:
        notes.append(f"{superseded} cells superseded by a newer run of the same machine and "
                     f"coordinates: listed in the cell table, left out of plots and aggregates")
    counts = cells["status"].value_counts().to_dict()
    notes.append("cells: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                 f", {int(cells['noisy'].sum())} noisy, {int(cells['synthetic'].sum())} on synthetic data")
    said = summary(cells, machines, rec, roof=tables["roofline"])
    headers = {h["run_id"]: h for h in runs["header"]}
    run_rows = [[h["run_id"], machine_label(h.get("machine") or {}),
                 ((h.get("git") or {}).get("commit") or "")[:10], h.get("status"), h.get("started"), n]
                for h, n in zip(runs["header"], runs["n_cells"])]
    run_columns = ["run", "machine", "commit", "status", "started", "cells"]

    # every table also as CSV beside the page, its values unformatted
    csv_paths = {}
    for name, df in list(tables.items()) + [("runs", pd_frame(run_columns, run_rows))]:
        csv_paths[name] = os.path.join(tables_dir, name + ".csv")
        write_atomic(csv_paths[name], df.to_csv(index=False))

    head_md = headline(cells, runs)
    headline_path = os.path.join(out_dir, "headline.md")
    write_atomic(headline_path, head_md)

    # -- the first screen: the answer of the newest run of each machine ------------
    md = ["# mnist-numba-bench report\n"]
    page = ["<h1>mnist-numba-bench report</h1>"]
    answer = tables["answer"]
    md.append(f"## {TABLE_TITLES['answer']}\n")
    page.append(f"<h2>{html.escape(TABLE_TITLES['answer'])}</h2>")
    if answer.empty:
        md.append("No epoch cells.\n")
        page.append("<p>No epoch cells.</p>")
    answered = []
    for machine, run_id in sorted(newest.items(), key=lambda kv: kv[1], reverse=True):
        rows = answer[answer["machine"] == machine].drop(columns=["machine", "run"])
        if rows.empty:
            continue
        answered.append(machine)
        words = summary(cells, machines, rec[(rec["machine"] == machine) & (rec["run_id"] == run_id)],
                        machine=machine, roof=tables["roofline"])
        header = headers.get(run_id, {"run_id": run_id})
        about = run_text(header) + (f", started {header['started']}" if header.get("started") else "")
        md += [f"### {machine}\n", about + "\n"] + [f"- {w}" for w in words] + ["", md_table(*frame_rows(rows))]
        page.append(f"<h3>{html.escape(machine)}</h3><p class=about>{html.escape(about.replace('`', ''))}</p>"
                    "<ul class=summary>" + "".join(f"<li>{html.escape(w)}</li>" for w in words) + "</ul>")
        page.append(html_table(*frame_rows(rows)))
    if not answer.empty:
        page.append(_csv_link("answer"))
        md.append("Reading it: *speed-up over the runner-up* is the runner-up's time over the "
                  "fastest one's, the median of per-round ratios; *no clear winner* where its "
                  "interval reaches 1. All backends: the crossover plot, the headline and the "
                  "tables below; CSV in `tables/`.\n")
        page.append("<p class=note>Reading it: <em>speed-up over the runner-up</em> is the "
                    "runner-up's time over the fastest one's, the median of per-round ratios; "
                    "<em>no clear winner</em> where its interval reaches 1. Every backend: the "
                    "plots, the headline and the tables below.</p>")
    for name in ("crossover", "single_setting"):
        if name in plots:
            md.append(f"![{PLOT_TITLES[name]}](plots/{name}.png)\n")
            page.append(_figure(name, png[name]))

    # -- the rest: every setting, every run ------------------------------------------
    md += ["## What every run says\n"] + [f"- {s}" for s in said] + [""]
    page.append("<h2>What every run says</h2><ul class=summary>" +
                "".join(f"<li>{html.escape(s)}</li>" for s in said) + "</ul>")
    md.append(f"## {TABLE_TITLES['recommendation']}\n")
    page.append(f"<h2>{html.escape(TABLE_TITLES['recommendation'])}</h2>")
    if tables["recommendation"].empty:
        md.append("No epoch cells.\n")
        page.append("<p>No epoch cells.</p>")
    else:
        md.append(md_table(*frame_rows(tables["recommendation"])))
        page.append(html_table(*frame_rows(tables["recommendation"])) + _csv_link("recommendation"))
    md += ["## Headline\n", head_md, "## Runs\n", md_table(run_columns, run_rows), "## Notes\n"]
    md += [f"- {n}" for n in notes] + [""]
    md += [f"- plot {PLOT_TITLES[n]} skipped: {why}" for n, why in skipped.items()]
    page.append("<h2>Headline</h2>" + markdown_table_to_html(head_md))
    page.append(f"<h2>Runs</h2>{html_table(run_columns, run_rows)}{_csv_link('runs')}")
    page.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) +
                "".join(f"<li>plot <em>{html.escape(PLOT_TITLES[n])}</em> skipped: {html.escape(why)}</li>"
                        for n, why in skipped.items()) + "</ul>")
    md.append("## Plots\n")
    page.append("<h2>Plots</h2>")
    for name in plots:
        if name in ("crossover", "single_setting"):
            continue
        md.append(f"### {PLOT_TITLES[name]}\n\n![{PLOT_TITLES[name]}](plots/{name}.png)\n")
        page.append(_figure(name, png[name]))
    md.append("## Tables\n")
    page.append("<h2>Tables</h2>")
    for name, df in tables.items():
        if name in ("answer", "recommendation"):
            continue
        md.append(f"### {TABLE_TITLES[name]}\n")
        page.append(f"<h3>{html.escape(TABLE_TITLES[name])}</h3>")
        if df.empty:
            md.append("No data.\n")
            page.append("<p>No data.</p>")
            continue
        md.append(md_table(*frame_rows(df)) + f"\n[CSV](tables/{name}.csv)\n")
        page.append(html_table(*frame_rows(df)) + _csv_link(name))

    md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
    write_atomic(md_path, "\n".join(md))
    write_atomic(html_path, PAGE.format(body="\n".join(page), script=SCRIPT))
    return {"html": html_path, "markdown": md_path, "headline": headline_path, "plots": plots,
            "csv": csv_paths, "answered": answered, "skipped": skipped, "tables": {n: len(df) for n, df in tables.items()},
            "notes": notes, "summary": said, "runs": list(runs["run_id"]),
            "skipped_lines": int(runs["skipped_lines"].sum()) if "skipped_lines" in runs else 0}


def pd_frame(columns, rows):
    import pandas as pd
    return pd.DataFrame(rows, columns=columns)


def _csv_link(name):
    return f'<p class=csv><a href="tables/{name}.csv">{name}.csv</a></p>'


def _figure(name, data):
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{html.escape(PLOT_TITLES[name])}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(PLOT_TITLES[name])}</figcaption></figure>")


# the tallest screenshot drawn (a 17,500-pixel page was drawn whole here); a
# longer page is cut there, and the command says so
MAX_SCREENSHOT_HEIGHT = 32_000


def screenshot(html_path, png_path, width=1400, max_height=MAX_SCREENSHOT_HEIGHT):
    """Render the whole page in headless Chromium (Debian's ``chromium``) to look
    at it as a reader would: the page is loaded once to read its full height at
    this width (the page records it on load), then drawn at that height (at most
    ``max_height`` pixels). Returns the PNG's path."""
    import re
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not browser:
        raise ValueError("no headless browser: install Debian's chromium to take a screenshot")
    profile = os.path.join(os.path.dirname(os.path.abspath(png_path)), ".chromium-profile")
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--hide-scrollbars"]
    url = "file://" + os.path.abspath(html_path)
    try:
        dom = subprocess.run(base + [f"--window-size={width},1000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
        found = re.search(r'data-height="(\d+)"', dom.stdout)
        if not found:
            raise ValueError(f"chromium could not measure {html_path}: {dom.stderr.strip()[-200:]}")
        full = int(found.group(1))
        height = min(full, max_height)
        if full > max_height:
            print(f"warning: the page is {full:,} pixels tall; the screenshot shows the first "
                  f"{max_height:,}", file=sys.stderr)
        run = subprocess.run(base + [f"--window-size={width},{height}",
                                     f"--screenshot={os.path.abspath(png_path)}", url],
                             capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if run.returncode != 0 or not os.path.exists(png_path):
        raise ValueError(f"chromium could not render {html_path}: {run.stderr.strip()[-200:]}")
    return png_path


def add_arguments(parser):
    parser.add_argument("results", nargs="*", metavar="RESULTS",
                        help="run files or directories (default: the newest run of each machine "
                             "for each kind of cell in RESULTS_DIR/runs)")
    parser.add_argument("--out", default=os.path.join("results", "report"),
                        help="output directory (default results/report)")
    parser.add_argument("--results-dir", default="results", help="the results store (default results/)")
    parser.add_argument("--screenshot", default=None, metavar="PNG",
                        help="also render the whole of report.html in headless Chromium into PNG")
    parser.add_argument("--skip-bad", action="store_true",
                        help="leave malformed cell lines out, each with a warning, instead of "
                             "refusing the file")


def main(args):
    paths = args.results or default_results(args.results_dir)
    out = generate(paths, args.out, args.skip_bad)
    skipped = int(out.get("skipped_lines", 0))
    if skipped:
        print(f"warning: {skipped} malformed cell lines left out (--skip-bad)")
    print(f"report of {len(out['runs'])} runs -> {out['html']}, {out['markdown']}, {out['headline']}")
    print(f"plots: {', '.join(out['plots']) or 'none'} (PNG and SVG in {os.path.join(args.out, 'plots')})")
    for name, why in out["skipped"].items():
        print(f"  skipped {name}: {why}")
    for line in out["summary"]:
        print(f"  {line}")
    if args.screenshot:
        print(f"screenshot: {screenshot(out['html'], args.screenshot)}")
    return 0
