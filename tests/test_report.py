"""mnist-bench report on a small stored fixture: every plot and table, a
self-contained HTML page, and plots without data skipped rather than crashing."""
import base64
import json
import os
from html.parser import HTMLParser

import pytest

from mnist_numba_bench.bench import report
from fixtures.make_results import XEON, write_fixture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fixture_runs(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def generated(fixture_runs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("report"))
    return report.generate(fixture_runs, out), out


class ImageCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.tables = [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))
        if tag == "table":
            self.tables += 1


def test_every_plot_is_drawn_as_png_and_svg(generated):
    result, _ = generated
    assert result["skipped"] == {}
    assert set(result["plots"]) == set(report.PLOT_TITLES)
    for paths in result["plots"].values():
        with open(paths["png"], "rb") as f:
            assert f.read(8) == PNG_MAGIC
        with open(paths["svg"], encoding="utf-8") as f:
            assert "<svg" in f.read(2000)


def test_html_embeds_every_image_and_table(generated):
    result, _ = generated
    with open(result["html"], encoding="utf-8") as f:
        page = ImageCollector()
        page.feed(f.read())
    assert len(page.srcs) == len(result["plots"])
    for src in page.srcs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:40]
        assert base64.b64decode(src[len(prefix):], validate=True)[:8] == PNG_MAGIC
    # the runs, the headline's two machines, and every table
    assert page.tables == 1 + 2 + len(report.TABLE_TITLES)


def test_markdown_has_every_table_and_links_every_plot(generated):
    result, out = generated
    with open(result["markdown"], encoding="utf-8") as f:
        md = f.read()
    for title in report.TABLE_TITLES.values():
        assert f"### {title}" in md
    for name in result["plots"]:
        assert f"](plots/{name}.png)" in md
        assert os.path.exists(os.path.join(out, "plots", f"{name}.png"))


def test_every_cell_is_listed_with_its_status(generated, fixture_runs):
    result, _ = generated
    n_cells = sum(1 for p in fixture_runs for line in open(p) if json.loads(line)["type"] == "cell")
    assert result["tables"]["cells"] == n_cells
    with open(result["markdown"], encoding="utf-8") as f:
        rows = [line for line in f if line.startswith("| ") and "fixture" in line]
    cell_rows = [r for r in rows if "numba-fused" in r or "torch-cuda" in r]
    assert any("INVALID" in r and "0.41" in r for r in cell_rows)
    assert any("unavailable" in r and "without CUDA" in r for r in cell_rows)
    assert any("noisy" in r for r in rows)
    assert any("synthetic data" in r for r in rows)


def test_headline_names_machine_run_and_speedups(generated):
    result, _ = generated
    with open(result["headline"], encoding="utf-8") as f:
        text = f.read()
    assert XEON["cpu_model"] in text and "4 cores" in text
    assert "20250101-120000-fixture-xeon-aaaaaa" in text and "aaaaaaaaaa" in text
    nielsen = next(line for line in text.splitlines() if line.startswith("| nielsen (batch 10, 4"))
    assert "invalid" in nielsen  # numba-fused failed validation: shown, not timed
    # numpy 6.0 s against numba 2.2 s in the fixture
    assert "(1.00x)" in nielsen and "(2.7" in nielsen


def test_percent_of_peak_uses_cores_clock_and_flops_per_cycle(fixture_runs):
    runs, cells, machines = report.load(fixture_runs)
    table = report.peak_table(cells, machines)
    row = table[(table["version"] == "numpy") & (table["shape"] == "1024x1024x1024")].iloc[0]
    assert row["peak_gflops"] == pytest.approx(4 * 2.1 * 64)  # 4 cores x 2.1 GHz x AVX-512 FMA
    assert row["pct_of_peak"] == pytest.approx(100 * row["gflops"] / (4 * 2.1 * 64))
    assert row["pct_of_blas"] == pytest.approx(100)
    naive = table[(table["version"] == "matmul_naive") & (table["shape"] == "1024x1024x1024")].iloc[0]
    assert naive["pct_of_blas"] < 1


def test_peak_from_recorded_clock_or_omitted():
    per_core, why = report.peak_per_core({"isa_flags": ["avx2", "fma"], "cpu_mhz": 3000.0,
                                          "cpu_model": "x"})
    assert per_core == pytest.approx(32 * 3.0) and "cpu MHz" in why
    per_core, why = report.peak_per_core({"isa_flags": ["avx512f"], "cpu_model": "Intel Xeon"})
    assert per_core is None and "frequency unknown" in why


def test_plots_without_data_are_skipped_with_a_reason(fixture_runs, tmp_path):
    epyc_only = [p for p in fixture_runs if "epyc" in p]
    result = report.generate(epyc_only, str(tmp_path))
    assert {"kernel_gflops", "time_to_accuracy", "thread_scaling"} <= set(result["skipped"])
    assert "speedup" in result["plots"]
    with open(result["html"], encoding="utf-8") as f:
        assert "skipped: no valid float32 kernel cells" in f.read()


def test_newer_run_supersedes_same_coordinates(fixture_runs, tmp_path):
    xeon = next(p for p in fixture_runs if "xeon" in p)
    lines = [json.loads(line) for line in open(xeon)]
    header, cell = dict(lines[0]), dict(lines[1])
    header.update(run_id="20250201-000000-fixture-xeon-cccccc", started="2025-02-01T00:00:00+00:00")
    newer = tmp_path / (header["run_id"] + ".jsonl")
    newer.write_text(json.dumps(header) + "\n" + json.dumps(cell) + "\n")
    _, cells, _ = report.load(fixture_runs + [str(newer)])
    same = cells[(cells["model"] == cell["model"]) & (cells["backend"] == cell["backend"]) &
                 (cells["batch_size"] == cell["batch_size"]) & (cells["threads"] == cell["threads"]) &
                 (cells["kind"] == "epoch")]
    assert sorted(same["superseded"]) == [False, True]
    assert not same[same["run_id"] == header["run_id"]]["superseded"].iloc[0]
    assert cells["superseded"].sum() == 1


def test_headline_row_comes_from_one_run(fixture_runs, tmp_path):
    """A newer run that re-timed only numpy (twice as fast) must not be divided into the
    first run's other backends: each row's ratios are measured side by side."""
    xeon = next(p for p in fixture_runs if "xeon" in p)
    lines = [json.loads(line) for line in open(xeon)]
    header = dict(lines[0])
    numpy_cell = next(c for c in lines[1:] if c.get("kind") == "epoch" and c["backend"] == "numpy"
                      and c["model"] == "nielsen" and c["batch_size"] == 10 and c["threads"] == 4)
    faster = dict(numpy_cell, samples_s=[v / 2 for v in numpy_cell["samples_s"]],
                  median_s=numpy_cell["median_s"] / 2)
    header.update(run_id="20250201-000000-fixture-xeon-dddddd", started="2025-02-01T00:00:00+00:00")
    newer = tmp_path / (header["run_id"] + ".jsonl")
    newer.write_text(json.dumps(header) + "\n" + json.dumps(faster) + "\n")
    _, cells, _ = report.load(fixture_runs + [str(newer)])
    rows = report.speedup_table(cells)
    nielsen = rows[(rows["model"] == "nielsen") & rows["machine"].str.contains("Xeon")].set_index("backend")
    assert nielsen.loc["numpy", "epoch_s"] == pytest.approx(numpy_cell["median_s"])
    assert nielsen.loc["numba", "speedup"] == pytest.approx(6.0 / 2.2, rel=0.1)


def test_default_results_takes_newest_run_per_machine(fixture_runs):
    results_dir = os.path.dirname(os.path.dirname(fixture_runs[0]))
    assert sorted(report.default_results(results_dir)) == sorted(fixture_runs)


def test_default_results_prefers_finished_runs(fixture_runs, tmp_path):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    xeon = next(p for p in fixture_runs if "xeon" in p)
    lines = [json.loads(line) for line in open(xeon)]
    (runs_dir / os.path.basename(xeon)).write_text(open(xeon).read())
    lines[0].update(run_id="20250301-000000-fixture-xeon-dddddd", status="running",
                    started="2025-03-01T00:00:00+00:00")
    (runs_dir / (lines[0]["run_id"] + ".jsonl")).write_text(
        "".join(json.dumps(r) + "\n" for r in lines[:3]))
    assert report.default_results(str(tmp_path)) == [str(runs_dir / os.path.basename(xeon))]


def test_cli_on_an_empty_store_is_a_one_line_error(tmp_path, capsys):
    from mnist_numba_bench.bench.cli import main
    assert main(["report", "--results-dir", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no run files" in capsys.readouterr().err
