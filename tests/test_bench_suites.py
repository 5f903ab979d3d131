"""Smoke check of the pytest-benchmark suites in bench/ (which CI does not run):
they collect, one tiny epoch benchmark passes, and its JSON imports into the store."""
import os
import subprocess
import sys

from mnist_numba_bench.bench import importers, store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_bench_suites_collect():
    r = pytest_run("bench/", "--collect-only", "-q")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    assert any("test_epoch[mlp-numpy-bs128]" in i for i in ids)
    assert any("test_bench_kernels.py::test_kernel[" in i for i in ids)


def test_one_tiny_benchmark_passes_and_imports(tmp_path):
    out = tmp_path / "bench.json"
    r = pytest_run("bench/test_bench_epochs.py::test_epoch[nielsen-numpy-bs10]",
                   "--benchmark-only", "--bench-samples", "100", "--benchmark-save-data",
                   f"--benchmark-json={out}", "-q")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout
    path, stored, skipped = importers.import_pytest_benchmark(out, tmp_path / "results")
    assert (stored, skipped) == (1, [])
    _, cells = store.read_results([path])
    cell = cells.iloc[0]
    assert (cell["model"], cell["backend"], cell["kind"]) == ("nielsen", "numpy", "epoch")
    assert bool(cell["validation.ok"]) and len(cell["samples_s"]) == 5  # ROUNDS, warm-up excluded
    assert cell["samples_per_s"] > 0
