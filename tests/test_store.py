"""The results store (bench/store.py) and the statistics (bench/stats.py)."""
import json
import math
import os

import pytest

from mnist_numba_bench.bench import importers, store
from mnist_numba_bench.bench.stats import mlperf_score, summarize


def header(hostname="box-a", commit="abc123", settings=None):
    return {"command": ["mnist-bench", "run"], "git": {"commit": commit, "dirty": False},
            "machine": {"hostname": hostname, "cpu_model": "test cpu", "cores": 2,
                        "isa_flags": ["avx2"], "memory_gb": 8.0, "gpu": None},
            "versions": {"python": "3.x", "numpy": "2.x"}, "settings": settings or {"repeats": 3}}


OK_CELL = {"kind": "epoch", "model": "mlp", "backend": "numpy", "batch_size": 128, "threads": 2,
           "dataset": "synthetic", "synthetic": True, "status": "ok",
           "validation": {"ok": True, "max_error": 1e-7, "steps": 3},
           "compile": {"cold_s": 0.5, "cache_hit_s": None},
           "samples_s": [1.0, 1.2, 1.1], "median_s": 1.1, "iqr_s": 0.1, "noisy": False,
           "gflops": float("nan"), "accuracy": 0.9}
INVALID_CELL = {"kind": "epoch", "model": "mlp", "backend": "broken", "status": "invalid",
                "error": "parameters differ", "validation": {"ok": False, "max_error": 3.0}}
KERNEL_CELL = {"kind": "kernel", "model": "matmul", "backend": "matmul_naive", "threads": 1,
               "shape": [7, 33, 257], "dtype": "float32", "status": "ok",
               "validation": {"ok": True, "max_error": 0.0, "shapes": 1},
               "samples_s": [1e-3, 2e-3], "median_s": 1.5e-3, "gflops": 12.5}


def test_round_trip_keeps_every_field_and_merges_runs(tmp_path):
    a = store.RunWriter(tmp_path, header("box-a", "aaa"))
    a.put(OK_CELL)
    a.put(INVALID_CELL)
    a.close("complete")
    b = store.RunWriter(tmp_path / "elsewhere", header("box-b", "bbb"))
    b.put(KERNEL_CELL)  # left "running", as a killed run would be

    runs, cells = store.read_results([tmp_path])  # a directory, searched recursively
    assert sorted(runs["machine.hostname"]) == ["box-a", "box-b"]
    assert dict(zip(runs["run_id"], runs["status"])) == {a.run_id: "complete", b.run_id: "running"}
    assert set(runs["schema_version"]) == {store.SCHEMA_VERSION}
    assert len(cells) == 3
    ok = cells[cells["backend"] == "numpy"].iloc[0]
    assert ok["samples_s"] == [1.0, 1.2, 1.1]
    assert bool(ok["validation.ok"])
    assert ok["compile.cold_s"] == 0.5
    assert ok["run_id"] == a.run_id and ok["machine"] == "box-a" and ok["git_commit"] == "aaa"
    assert ok["gflops"] is None or math.isnan(ok["gflops"])  # NaN was stored as null
    kernel = cells[cells["kind"] == "kernel"].iloc[0]
    assert kernel["shape"] == [7, 33, 257] and kernel["machine"] == "box-b"
    assert kernel["git_commit"] == "bbb"
    for column in store.CELL_COLUMNS:
        assert column in cells
    # the file on disk is plain JSON Lines: header first, no NaN tokens
    lines = open(a.path).read().splitlines()
    assert json.loads(lines[0])["type"] == "run" and "NaN" not in "".join(lines)


def test_reading_the_same_file_twice_counts_it_once(tmp_path):
    w = store.RunWriter(tmp_path, header())
    w.put(OK_CELL)
    runs, cells = store.read_results([tmp_path, w.path])
    assert len(runs) == 1 and len(cells) == 1


def test_store_refuses_an_unvalidated_time(tmp_path):
    w = store.RunWriter(tmp_path, header())
    with pytest.raises(ValueError, match="without a passed validation"):
        w.put({**OK_CELL, "validation": {"ok": False}})
    with pytest.raises(ValueError, match="without a passed validation"):
        w.put({k: v for k, v in OK_CELL.items() if k != "validation"})
    with pytest.raises(ValueError, match="without timing samples"):
        w.put({**OK_CELL, "samples_s": []})
    with pytest.raises(ValueError, match="needs an error"):
        w.put({**INVALID_CELL, "error": ""})
    with pytest.raises(ValueError, match="kind"):
        w.put({**OK_CELL, "kind": "bogus"})
    assert store.read_run(w.path)[1] == []  # nothing refused reached the file


def test_every_write_leaves_a_complete_file(tmp_path, monkeypatch):
    w = store.RunWriter(tmp_path, header())
    for i in range(3):
        w.put({**OK_CELL, "batch_size": i})
        assert len(store.read_run(w.path)[1]) == i + 1
    # A crash between writing the temporary file and renaming it: the run file
    # still holds exactly the cells finished before.
    def crash(src, dst):
        raise OSError("simulated crash before the rename")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        w.put({**OK_CELL, "batch_size": 99})
    assert [c["batch_size"] for c in store.read_run(w.path)[1]] == [0, 1, 2]
    # readers never pick up the stray temporary file
    assert store.result_files([tmp_path]) == [w.path]


def test_malformed_files_give_one_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "run", "schema_version": 1, "run_id": "x"}\n{"type": "cell", \n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        store.read_results([bad])
    bad.write_text('{"type": "cell"}\n')
    with pytest.raises(ValueError, match="not a results file"):
        store.read_results([bad])
    bad.write_text('{"type": "run", "schema_version": 99, "run_id": "x"}\n')
    with pytest.raises(ValueError, match="schema version 99"):
        store.read_results([bad])
    with pytest.raises(FileNotFoundError):
        store.read_results([tmp_path / "missing"])


def test_import_pytest_benchmark_keeps_only_validated_suite_results(tmp_path):
    ours = {"group": "epoch mlp bs=128", "name": "test_epoch[mlp-numpy-bs128]",
            "fullname": "bench/test_bench_epochs.py::test_epoch[mlp-numpy-bs128]",
            "extra_info": {"kind": "epoch", "model": "mlp", "backend": "numpy", "batch_size": 128,
                           "threads": 2, "samples": 1000, "flops": 4e9,
                           "validation": {"ok": True, "max_error": 0.0, "steps": 3}},
            "stats": {"median": 0.5, "iqr": 0.01, "rounds": 3, "data": [0.49, 0.5, 0.51]}}
    foreign = {"group": None, "name": "test_other", "fullname": "x.py::test_other",
               "extra_info": {}, "stats": {"median": 1.0, "iqr": 0.0, "rounds": 1}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"machine_info": {"node": "box-c", "cpu": {"brand_raw": "cpu"}},
                                "commit_info": {"id": "ccc", "dirty": True},
                                "benchmarks": [ours, foreign], "datetime": "t", "version": "5"}))
    out, stored, skipped = importers.import_pytest_benchmark(path, tmp_path)
    assert (stored, skipped) == (1, ["x.py::test_other"])
    runs, cells = store.read_results([out])
    cell = cells.iloc[0]
    assert runs["machine.hostname"][0] == "box-c" and cell["git_commit"] == "ccc"
    assert cell["source"] == "pytest-benchmark" and cell["samples_s"] == [0.49, 0.5, 0.51]
    assert cell["gflops"] == pytest.approx(8.0) and cell["samples_per_s"] == pytest.approx(2000)
    path.write_text(json.dumps({"benchmarks": [foreign]}))
    with pytest.raises(ValueError, match="none of its 1 benchmarks"):
        importers.import_pytest_benchmark(path, tmp_path)


def test_summary_statistics_of_known_samples():
    s = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (s["median_s"], s["iqr_s"], s["min_s"], s["mean_s"]) == (3.0, 2.0, 1.0, 3.0)
    assert s["noisy"] is True  # IQR 2 is 67 % of the median
    s = summarize([1.00, 1.02, 0.99, 1.01])  # percentiles 25/75 -> 0.9975, 1.0125
    assert s["median_s"] == pytest.approx(1.005) and s["iqr_s"] == pytest.approx(0.015)
    assert s["noisy"] is False
    assert summarize([2.0])["iqr_s"] == 0.0
    for bad in ([], [1.0, float("nan")], [-1.0]):
        with pytest.raises(ValueError):
            summarize(bad)


def test_mlperf_score_drops_fastest_and_slowest():
    assert mlperf_score([5.0, 1.0, 3.0, 4.0, 2.0]) == pytest.approx(3.0)
    assert mlperf_score([10.0, 1.0, 2.0]) == 2.0
    assert mlperf_score([1.0, 2.0, 3.0, None]) == 2.5  # one miss is dropped as the slowest
    assert mlperf_score([1.0, None, None]) is None    # a kept seed never reached the target
    assert mlperf_score([1.0, 2.0]) is None           # cannot drop both ends
