"""Every fault and bad input ends in one line and a non-zero exit, never a
traceback, and the store holds afterwards exactly what it held before.

Each case runs the command line in this process (bench.cli.main) against a
store holding one valid run; bad arguments, unusable paths, malformed store
and import files, injected operating-system errors (a full disk, a denied
write: root ignores file modes, so they are injected at the call), damaged
caches and a bug in the code. The cases are grouped by kind in the ids.
"""
import errno
import json
import os
import shutil

import pytest

from mnist_numba_bench.bench import cli, store

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE_RUN = None


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A working directory with a store of one valid run (results/), a file where a
    directory is expected (a-file), an empty directory, and the suite's caches
    pointed inside."""
    from fixtures.make_results import write_fixture
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MNIST_BENCH_CACHE", str(tmp_path / "cache"))
    paths = write_fixture(tmp_path / "results")
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "empty").mkdir()
    return {"dir": tmp_path, "runs": paths, "first": paths[0]}


def snapshot(folder):
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.relpath(os.path.join(root, f), folder)] = fh.read()
    return out


def one_line_failure(capsys, argv, code=2, contains=""):
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith(("note:", "warning:", "WARNING:"))]
    assert rc == code, (argv, rc, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert contains in lines[0], (contains, lines[0])
    return lines[0]


def bad_run_file(home, name, lines):
    path = home["dir"] / "bad" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


HEADER = json.dumps({"type": "run", "schema_version": 3, "run_id": "20260101-000000-x-aaaaaa",
                     "started": "2026-01-01T00:00:00+00:00", "status": "complete"})
CELL = {"type": "cell", "kind": "epoch", "model": "mlp", "backend": "numpy", "batch_size": 128,
        "threads": 2, "status": "ok", "validation": {"ok": True}, "samples_s": [0.1, 0.11, 0.12]}

# -- bad arguments: (argv, what the line says) ------------------------------------------
SYN = ["--dataset", "synthetic", "--train-limit", "200"]
RUN_CASES = [
    (["--models", ""], "--models: empty list"),
    (["--backends", ""], "--backends: empty list"),
    (["--models", "mlpp"], "unknown model 'mlpp'"),
    (["--backends", "numbaa"], "unknown backend 'numbaa'"),
    (["--batch-sizes", "-1"], "below 0"),
    (["--batch-sizes", "10,x"], "not a comma-separated list"),
    (["--batch-sizes", "100000"] + SYN, "larger than the 200 training images"),
    (["--threads", "0"], "below 1"),
    (["--threads", "64"], "this machine has"),
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--processes", "0"], "--processes must be at least 1"),
    (["--compile-probes", "0"], "--compile-probes must be at least 1"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--train-limit", "0"], "--train-limit must be at least 1"),
    (["--target-accuracy", "2"], "--target-accuracy"),
    (["--set", "lr=nan"], "must be a finite number"),
    (["--set", "lr=-1"], "the learning rate must be positive"),
    (["--set", "lr=fast"], "expected float"),
    (["--set", "batch_size=10"], "use --batch-sizes 10"),
    (["--set", "epochs=2"], "--epochs sets their minimum"),
    (["--set", "momentum=0.5"], "has no hyperparameter 'momentum'"),
    (["--set", "lr"], "expected KEY=VALUE"),
    (["--models", "mlp", "--set", "beta=1.5"], "beta lies in [0, 1)"),
    (["--models", "mlp", "--set", "optimizer=rmsprop"], "choose from sgd, momentum, adam"),
    (["--models", "mlp", "--set", "optimizer=adam"], "has no beta1, beta2, eps"),
    (["--seeds", "1,2"], "several --seeds are for --mode tta"),
    (["--seeds", "x"], "--seeds"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist: not a directory"),
    (["--data-dir", "empty"], "missing"),
    (["--data-dir", "empty", "--dataset", "synthetic"], "drop --dataset"),
    (["--quick", "--backends", "numpy"], "--quick sets --backends itself"),
    (["--quick", "--models", "mlp"], "--quick sets --models itself"),
    (["--quick", "--rounds", "3"], "--quick sets --rounds itself"),
    (["--replay-budget", "-1"], "--replay-budget"),
    (["--results-dir", "a-file"] + SYN, "a-file"),
    (["--report", "a-file/report"] + SYN, "--report a-file/report"),
    (["--backends", "numba-fused:matmul=v2_blocked"], "takes no option 'matmul'"),
    (["--backends", "numba:tile=3"], "takes no option 'tile'"),
    (["--backends", "numba:oops"], "options go as KEY=VALUE"),
    (["--models", "cnn", "--backends", "numpy-loop"], "nothing to run"),
    (["--mode", "tta", "--target-accuracy", "0"], "--target-accuracy"),
    (["--mode", "nope"], "invalid choice"),
]
KERNEL_CASES = [
    (["--families", ""], "--families: empty list"),
    (["--families", "matmull"], "unknown kernel family 'matmull'"),
    (["--families", "matmul_nn", "--versions", "v9"], "unknown kernel version 'v9'"),
    (["--families", "matmul_nn", "--versions", ""], "--versions: empty list"),
    (["--families", "matmul_nn", "--shapes", "0x0x0"], "every dimension must be at least 1"),
    (["--families", "matmul_nn", "--shapes=-5x4x4"], "every dimension must be at least 1"),
    (["--families", "matmul_nn", "--shapes", "axbxc"], "is not like 1024x1024x1024"),
    (["--families", "matmul_nn", "--shapes", "10x10"], "takes 3 dimensions"),
    (["--families", "matmul_nn", "--shapes", "1000000x1000000x1000000"], "GiB are available"),
    (["--families", "matmul_nn", "--dtypes", "float16"], "not float32 or float64"),
    (["--families", "matmul_nn", "--threads", "64"], "this machine has"),
    (["--families", "matmul_nn", "--threads", "0"], "below 1"),
    (["--families", "matmul_nn", "--rounds", "0"], "--rounds must be at least 1"),
    (["--families", "matmul_nn", "--sizes", "x"], "--sizes"),
    (["--families", "matmul_nn", "--sizes", "3"], "no kernel version and shape matches"),
    (["--families", "matmul_nn", "--results-dir", "a-file"], "a-file"),
]
OTHER_CASES = [
    (["tune", "--tile", "0x0"], "both sizes must be at least 1"),
    (["tune", "--tile", "13"], "is not like 13x32"),
    (["tune", "--rounds", "1"], "--rounds must be at least 3"),
    (["tune", "--tile", "100x512"], "does not fit"),
    (["profile", "--model", "mlp", "--backend", "numpy", "--batch-size", "-1"], "--batch-size"),
    (["profile", "--model", "mlpp", "--backend", "numpy"], "unknown model 'mlpp'"),
    (["profile", "--model", "mlp", "--backend", "numpyy"], "unknown backend 'numpyy'"),
    (["profile", "--model", "mlp", "--backend", "numpy", "--rate", "0"], "--rate"),
    (["profile", "--model", "mlp", "--backend", "numpy", "--train-limit", "0"], "--train-limit"),
    (["profile", "--model", "cnn", "--backend", "numpy-loop"], "does not train 'cnn'"),
    (["data", "download", "--dataset", "foo"], "only mnist and fashion-mnist"),
    (["data", "info", "--data-dir", "/nonexistent"], "not a directory"),
    (["data", "info", "--data-dir", "empty"], "missing"),
    (["data", "info", "--data-dir", "a-file"], "not a directory"),
    (["data", "verify", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["compare", "nope-1", "nope-2"], "neither a file nor a run id"),
    (["compare", "2025", "2025"], "is ambiguous"),
    (["report", "/nonexistent/runs"], "no such results file or directory"),
    (["import", "/nonexistent.json"], "no such file"),
    (["nope"], "invalid choice"),
]


@pytest.mark.parametrize("argv, says", RUN_CASES, ids=[f"run-args-{i}" for i in range(len(RUN_CASES))])
def test_run_bad_arguments(home, capsys, argv, says):
    before = snapshot(home["dir"] / "results")
    one_line_failure(capsys, ["run", *argv], contains=says)
    assert snapshot(home["dir"] / "results") == before


@pytest.mark.parametrize("argv, says", KERNEL_CASES, ids=[f"kernels-args-{i}" for i in range(len(KERNEL_CASES))])
def test_kernels_bad_arguments(home, capsys, argv, says):
    before = snapshot(home["dir"] / "results")
    one_line_failure(capsys, ["kernels", *argv], contains=says)
    assert snapshot(home["dir"] / "results") == before


@pytest.mark.parametrize("argv, says", OTHER_CASES, ids=[f"{c[0][0]}-args-{i}" for i, c in enumerate(OTHER_CASES)])
def test_other_commands_bad_arguments(home, capsys, argv, says):
    before = snapshot(home["dir"] / "results")
    line = one_line_failure(capsys, argv, contains=says)
    assert line
    assert snapshot(home["dir"] / "results") == before


def test_compare_threshold_and_alpha(home, capsys):
    a = home["first"]
    one_line_failure(capsys, ["compare", a, a, "--threshold", "0.9"], contains="--threshold must be above 1")
    one_line_failure(capsys, ["compare", a, a, "--alpha", "2"], contains="--alpha must be between 0 and 1")


# -- malformed store files: report and compare refuse them with the file and line ------
MALFORMED = [
    ("header-without-run-id", [json.dumps({"type": "run", "schema_version": 3})], ":1: the run header has no run_id"),
    ("not-json", ["{oops"], ":1: not valid JSON"),
    ("first-line-a-cell", [json.dumps(CELL)], ":1: not a results file"),
    ("newer-schema", [HEADER.replace('"schema_version": 3', '"schema_version": 99')], ":1: schema version 99"),
    ("array-line", [HEADER, "[1, 2, 3]"], ":2: a list, not a JSON object"),
    ("bare-cell", [HEADER, json.dumps({"type": "cell"})], ":2: kind None"),
    ("string-samples", [HEADER, json.dumps(dict(CELL, samples_s=["0.1", "0.2"]))], ":2: samples_s is not a list of numbers"),
    ("cell-without-status", [HEADER, json.dumps({k: v for k, v in CELL.items() if k != "status"})], ":2: status None"),
    ("ok-without-samples", [HEADER, json.dumps(dict(CELL, samples_s=[]))], ":2: "),
    ("invalid-without-error", [HEADER, json.dumps(dict(CELL, status="invalid"))], ":2: a cell with status 'invalid' needs an error"),
    ("unknown-kind", [HEADER, json.dumps(dict(CELL, kind="nap"))], ":2: kind 'nap'"),
    ("truncated-line", [HEADER, json.dumps(CELL)[:40]], ":2: not valid JSON"),
    ("cell-without-model", [HEADER, json.dumps({k: v for k, v in CELL.items() if k != "model"})], ":2: no model"),
]


@pytest.mark.parametrize("name, lines, says", MALFORMED, ids=[f"store-{m[0]}" for m in MALFORMED])
@pytest.mark.parametrize("command", ["report", "compare"])
def test_malformed_store_files_are_refused_with_file_and_line(home, capsys, command, name, lines, says):
    path = bad_run_file(home, f"{name}.jsonl", lines)
    before = snapshot(home["dir"] / "results")
    argv = ["report", path, "--out", "out"] if command == "report" else ["compare", path, home["first"]]
    one_line_failure(capsys, argv, contains=f"{path}{says}")
    assert snapshot(home["dir"] / "results") == before


def test_empty_file_is_not_a_results_file(home, capsys):
    path = bad_run_file(home, "empty.jsonl", [])
    one_line_failure(capsys, ["report", path, "--out", "out"], contains="empty")


def test_skip_bad_leaves_bad_lines_out_and_counts_them(home, capsys):
    good = json.loads(open(home["first"]).readline())
    lines = [l.rstrip("\n") for l in open(home["first"])] + ["[1]", json.dumps({"type": "cell"})]
    path = bad_run_file(home, "with-bad-lines.jsonl", lines)
    assert good["run_id"]
    rc = cli.main(["report", path, "--out", "out", "--skip-bad"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.err.count("left out") == 2 and "Traceback" not in captured.err
    assert "2 malformed cell lines left out" in captured.out


# -- import: checked whole before anything is written ----------------------------------
def _bench_file(home, name, payload):
    path = home["dir"] / name
    path.write_text(json.dumps(payload))
    return str(path)


GOOD_BENCH = {"name": "test_epoch[mlp-numpy-bs128]", "fullname": "x::test_epoch[mlp-numpy-bs128]",
              "stats": {"median": 0.1, "iqr": 0.001, "rounds": 3, "data": [0.1, 0.1, 0.11]},
              "extra_info": {"kind": "epoch", "model": "mlp", "backend": "numpy", "batch_size": 128,
                             "threads": 2, "validation": {"ok": True}}}
IMPORTS = [
    ("benchmarks-a-dict", {"benchmarks": {"a": 1}}, "'benchmarks' is not a list"),
    ("benchmarks-strings", {"benchmarks": ["a", "b"]}, "'benchmarks' is not a list"),
    ("benchmarks-null", {"benchmarks": None}, "'benchmarks' is not a list"),
    ("no-benchmarks", {"machine_info": {}}, "no 'benchmarks'"),
    ("string-median", {"benchmarks": [dict(GOOD_BENCH, stats={"median": "fast"})]}, "has no median time"),
    ("empty-stats", {"benchmarks": [dict(GOOD_BENCH, stats={})]}, "has no median time"),
    ("bad-data", {"benchmarks": [dict(GOOD_BENCH, stats=dict(GOOD_BENCH["stats"], data=["x"]))]},
     "stats.data is not a list of times"),
    ("second-invalid", {"benchmarks": [GOOD_BENCH, dict(GOOD_BENCH, stats={"median": None})]}, "has no median time"),
    ("invalid-cell", {"benchmarks": [dict(GOOD_BENCH, extra_info=dict(GOOD_BENCH["extra_info"],
                                                                        validation={"ok": False}))]},
     "nothing imported"),
    ("not-ours", {"benchmarks": [dict(GOOD_BENCH, extra_info={})]}, "comes from the bench/ suites"),
    ("a-list", [1, 2], "not a pytest-benchmark JSON file"),
]


@pytest.mark.parametrize("name, payload, says", IMPORTS, ids=[f"import-{i[0]}" for i in IMPORTS])
def test_import_is_checked_and_whole(home, capsys, name, payload, says):
    path = _bench_file(home, f"{name}.json", payload)
    before = snapshot(home["dir"] / "results")
    one_line_failure(capsys, ["import", path], contains=says)
    assert snapshot(home["dir"] / "results") == before


@pytest.mark.parametrize("name, payload", [("gpu_bench_matmul.json", {}), ("gpu_bench_adam.json", {"rows": 3}),
                                           ("sweep.json", {"a": 1}), ("gpu_bench_epochs.json", [])],
                         ids=["import-gpu-empty", "import-gpu-rows", "import-gpu-sweep", "import-gpu-list"])
def test_import_of_gpu_files_is_checked(home, capsys, name, payload):
    path = _bench_file(home, name, payload)
    before = snapshot(home["dir"] / "results")
    one_line_failure(capsys, ["import", path], contains="not a file of the earlier GPU script")
    assert snapshot(home["dir"] / "results") == before


def test_import_into_a_file_is_refused(home, capsys):
    path = _bench_file(home, "ok.json", {"benchmarks": [GOOD_BENCH]})
    one_line_failure(capsys, ["import", path, "--results-dir", "a-file"], contains="a-file")


def test_a_good_import_still_lands(home, capsys):
    path = _bench_file(home, "ok.json", {"benchmarks": [GOOD_BENCH]})
    assert cli.main(["import", path]) == 0
    assert len(store.result_files([str(home["dir"] / "results")])) == len(home["runs"]) + 1


# -- operating-system errors, injected where root would not meet them ------------------
def _fail_writes(monkeypatch, code):
    real = store.write_atomic

    def failing(path, text):
        real(path + ".partial-check", "")  # the directory itself is writable
        os.remove(path + ".partial-check")
        raise OSError(code, os.strerror(code), path)
    monkeypatch.setattr(store, "write_atomic", failing)


@pytest.mark.parametrize("code, says", [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "permission denied"),
                                        (errno.EROFS, "read-only"), (errno.EDQUOT, "quota")],
                         ids=["os-full-disk", "os-denied", "os-read-only", "os-quota"])
def test_import_meets_a_failing_disk_in_one_line(home, capsys, monkeypatch, code, says):
    path = _bench_file(home, "ok.json", {"benchmarks": [GOOD_BENCH]})
    before = snapshot(home["dir"] / "results")
    _fail_writes(monkeypatch, code)
    one_line_failure(capsys, ["import", path], contains=says)
    after = snapshot(home["dir"] / "results")
    assert {k: v for k, v in after.items() if k in before} == before
    assert not any(".tmp" in k for k in after)


def test_a_full_disk_leaves_no_temporary_behind(tmp_path, monkeypatch):
    real_open = open

    def full(path, *a, **kw):
        f = real_open(path, *a, **kw)
        if ".tmp" in str(path):
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return f
    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OSError):
        store.write_atomic(str(tmp_path / "x.jsonl"), "data\n")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_report_into_a_full_disk_is_one_line(home, capsys, monkeypatch):
    import matplotlib.figure

    def full(self, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", str(a[0]) if a else "plot")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    one_line_failure(capsys, ["report", home["first"], "--out", "out"], contains="the disk is full")


def test_report_into_a_file_is_refused(home, capsys):
    one_line_failure(capsys, ["report", home["first"], "--out", "a-file"], contains="--out a-file")


def test_an_unexpected_error_is_one_line_and_a_log(home, capsys, monkeypatch):
    from mnist_numba_bench.bench import compare

    def bug(*a, **kw):
        raise RuntimeError("a bug")
    monkeypatch.setattr(compare, "compare_runs", bug)
    line = one_line_failure(capsys, ["compare", home["first"], home["first"]], code=1,
                            contains="internal error: RuntimeError: a bug (traceback in ")
    log = line.rsplit("traceback in ", 1)[1].rstrip(")")
    assert "Traceback" in open(log).read() and "a bug" in open(log).read()


# -- caches that break are rebuilt -------------------------------------------------------
def test_a_damaged_parsed_data_cache_is_parsed_again(home, tmp_path, capsys):
    from mnist_numba_bench.bench import data
    from test_data import write_set  # the data tests' IDX writer
    folder = tmp_path / "idx"
    write_set(folder)
    first = data.load_directory(str(folder))
    parsed = os.path.join(data.cache_dir(), "parsed")
    for f in os.listdir(parsed):
        with open(os.path.join(parsed, f), "r+b") as fh:
            fh.truncate(20)
    again = data.load_directory(str(folder))
    assert "damaged parsed-data cache" in capsys.readouterr().err
    assert (again.train_x == first.train_x).all()
    third = data.load_directory(str(folder))  # healed: no warning now
    assert "damaged" not in capsys.readouterr().err and (third.test_y == first.test_y).all()


@pytest.mark.parametrize("content", ["[1, 2]", "{oops", '{"k": 3}'], ids=["cache-list", "cache-garbage", "cache-not-records"])
def test_a_corrupt_compile_times_file_is_moved_aside(home, capsys, content):
    from mnist_numba_bench.bench.compile_times import CompileTimes
    path = home["dir"] / "compile-times.json"
    path.write_text(content)
    times = CompileTimes(str(path))
    assert times.records == {} and "moved to" in capsys.readouterr().err
    assert (home["dir"] / "compile-times.json.corrupt").read_text() == content
    times.put("k", {"cold_s": 1.0})
    assert CompileTimes(str(path)).get("k") == {"cold_s": 1.0}


def test_compile_times_measured_again_replace_the_stored_figures(tmp_path):
    """--measure-compile measures a stored key again: the new figure replaces it
    (putting a key the store already held raised TypeError after the probes)."""
    from mnist_numba_bench.bench.compile_times import CompileTimes
    path = str(tmp_path / "compile_times.json")
    times = CompileTimes(path)
    times.put("k", {"cold_s": 1.0})
    times.put("k", {"cold_s": 2.0})
    CompileTimes(path).put("k", {"cold_s": 3.0})
    assert CompileTimes(path).get("k") == {"cold_s": 3.0}


def test_two_runs_sharing_compile_times_keep_both_figures(tmp_path):
    from mnist_numba_bench.bench.compile_times import CompileTimes
    path = str(tmp_path / "compile-times.json")
    a, b = CompileTimes(path), CompileTimes(path)  # both read the empty file
    a.put("a", {"cold_s": 1.0})
    b.put("b", {"cold_s": 2.0})
    assert set(CompileTimes(path).records) == {"a", "b"}


def test_stale_temporary_directories_of_killed_runs_are_removed(tmp_path, monkeypatch):
    import tempfile
    from mnist_numba_bench.bench import harness
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    dead = tmp_path / f"{harness.TMP_PREFIX}999999999-x"
    alive = tmp_path / f"{harness.TMP_PREFIX}{os.getpid()}-y"
    dead.mkdir()
    alive.mkdir()
    harness.remove_stale_tmpdirs()
    assert not dead.exists() and alive.exists()
    shutil.rmtree(alive)


def test_a_broken_numba_cache_is_moved_aside_and_compiled_again(tmp_path, capsys):
    """A real Numba cache index passes the check; garbage in it moves the cache aside
    (the run's workers then compile afresh instead of failing their cells)."""
    import subprocess
    import sys
    from mnist_numba_bench.bench.compile_times import heal_caches, numba_index_broken
    base = tmp_path / "compiled"
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "cached_fn.py").write_text(
        "from numba import njit\n@njit(cache=True)\ndef f(x):\n    return x + 1\n")
    code = "import sys; sys.path.insert(0, sys.argv[1]); import cached_fn; print(cached_fn.f(1))"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(base / "numba"))
    for _ in range(2):  # compile and store, then load from the cache
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "mod")], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "2", out.stderr
    indexes = [os.path.join(r, f) for r, _, fs in os.walk(base / "numba") for f in fs if f.endswith(".nbi")]
    assert indexes and all(numba_index_broken(p) == "" for p in indexes)
    assert heal_caches(str(base)) == []
    with open(indexes[0], "wb") as f:
        f.write(b"\x00garbage")
    moved = heal_caches(str(base), log=lambda m: print(m, file=sys.stderr))
    assert len(moved) == 1 and not (base / "numba").exists()
    assert "a broken Numba cache" in capsys.readouterr().err
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "mod")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "2" and (base / "numba").exists()  # compiled again
