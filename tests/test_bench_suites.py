"""Smoke check of the pytest-benchmark suites in bench/ (which CI does not run):
they collect, an epoch and a kernel benchmark pass under pytest-benchmark's
options, its own compare and histogram read their JSON, and it imports into the
store."""
import json
import os
import shutil
import subprocess
import sys

from mnist_numba_bench.bench import importers, store, suites

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


EPOCH_CASE = "bench/test_bench_epochs.py::test_epoch[nielsen-numpy-bs10]"
KERNEL_CASE = "bench/test_bench_kernels.py::test_kernel[matmul_nn-numpy_blas-64x64x64-float32]"


def test_mixed_suites_honour_the_options_compare_histogram_and_import(tmp_path):
    """An epoch case and a kernel case in one JSON file: pytest-benchmark's own
    --benchmark-min-rounds / --benchmark-max-time / --benchmark-warmup decide the
    rounds; every param is plain JSON under the names both suites share, so
    `pytest-benchmark compare --group-by=param:backend` and its histogram work on
    the mix; and the file imports into the store."""
    out = tmp_path / "bench.json"
    r = pytest_run(EPOCH_CASE, KERNEL_CASE, "--benchmark-only", "--bench-samples", "100",
                   "--benchmark-min-rounds=3", "--benchmark-max-time=0.3", "--benchmark-warmup=on",
                   "--benchmark-warmup-iterations=2", "--benchmark-save-data",
                   f"--benchmark-json={out}", "-q")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "2 passed" in r.stdout
    doc = json.loads(out.read_text())
    by_kind = {b["extra_info"]["kind"]: b for b in doc["benchmarks"]}
    for b in by_kind.values():
        assert set(b["params"]) == set(suites.PARAMS)
        assert len(b["extra_info"]["warmup_samples_s"]) == 2  # set aside, not in the stats
        assert b["stats"]["rounds"] == len(b["extra_info"]["samples_s"])
    epoch, kernel = by_kind["epoch"], by_kind["kernel"]
    assert epoch["params"]["backend"] == "numpy" and epoch["params"]["batch_size"] == 10
    assert kernel["params"]["family"] == "matmul_nn" and kernel["params"]["shape"] == "64x64x64"
    # an epoch sample lasts at least 0.15 s: the 3 minimum rounds pass 0.3 s already;
    # a 64-cubed matmul sample is far shorter, so max-time asks for more rounds
    assert epoch["stats"]["rounds"] == 3
    assert kernel["stats"]["rounds"] > 3

    compare = shutil.which("pytest-benchmark", path=os.path.dirname(sys.executable)) or "pytest-benchmark"
    c = subprocess.run([compare, "compare", str(out), "--group-by=param:backend",
                        f"--histogram={tmp_path / 'hist'}"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert c.returncode == 0, c.stdout[-2000:] + c.stderr[-2000:]
    assert "backend=numpy" in c.stdout and "backend=numba" not in c.stdout
    drawn = sorted(p.name for p in tmp_path.glob("hist*.svg"))
    assert drawn == ["hist-backend=numpy.svg"], drawn
    assert b"<svg" in (tmp_path / drawn[0]).read_bytes()[:2000]

    path, stored, skipped = importers.import_pytest_benchmark(out, tmp_path / "results")
    assert (stored, skipped) == (2, [])
    _, cells = store.read_results([path])
    epoch_cell = cells[cells["kind"] == "epoch"].iloc[0]
    assert (epoch_cell["model"], epoch_cell["backend"]) == ("nielsen", "numpy")
    assert bool(epoch_cell["validation.ok"]) and len(epoch_cell["samples_s"]) == 3
    assert epoch_cell["samples_per_s"] > 0
