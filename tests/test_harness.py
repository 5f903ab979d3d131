"""`mnist-bench run` and `mnist-bench kernels`: validation gates timing, bad input
is refused before any work, samples are interleaved in rounds across worker
processes, the thread pools are verified, and an interrupted or killed run keeps
what it finished."""
import gzip
import os
import platform
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from mnist_numba_bench.bench import store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPERS = os.path.join(ROOT, "tests", "helpers")


def write_idx(path, array, magic):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """300 training and 100 test images in the four IDX files: learnable prototypes."""
    d = tmp_path_factory.mktemp("tiny-mnist")
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (10, 28, 28))
    for stem, n in (("train", 300), ("t10k", 100)):
        labels = rng.integers(0, 10, n)
        images = 0.6 * protos[labels] + rng.integers(0, 100, (n, 28, 28))
        write_idx(d / f"{stem}-images-idx3-ubyte.gz", np.clip(images, 0, 255), 0x803)
        write_idx(d / f"{stem}-labels-idx1-ubyte.gz", labels, 0x801)
    return str(d)


def mnist_bench(*args, tmp_path, env=None, **kw):
    full = dict(os.environ, MNIST_BENCH_CACHE=str(tmp_path / "cache"),
                PYTHONPATH=os.pathsep.join(filter(None, [HELPERS, os.environ.get("PYTHONPATH")])),
                MNIST_BENCH_PLUGINS="bench_test_plugins")
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "mnist_numba_bench.bench", *args], env=full,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def run_ok(*args, tmp_path, results="results", env=None, timeout=300):
    proc = mnist_bench(*args, "--results-dir", str(tmp_path / results), tmp_path=tmp_path, env=env)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return store.read_results([tmp_path / results])


@pytest.mark.parametrize("args, message", [
    (["--models", "nielsen,mlpp"], "unknown model 'mlpp'"),
    (["--backends", "numpy,numbaa"], "unknown backend 'numbaa'"),
    (["--set", "momentum=0.5"], "has no hyperparameter 'momentum'"),
    (["--batch-sizes", "10,x"], "--batch-sizes"),
    (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist: not a directory"),
    (["--models", "cnn", "--backends", "numpy-loop"], "nothing to run: numpy-loop cannot train cnn"),
    (["--set", "batch_size=10"], "use --batch-sizes 10"),
    (["--set", "lr=nan"], "lr='nan': must be a finite number"),
    (["--set", "lr=-0.5"], "the learning rate must be positive"),
    (["--models", "mlp", "--set", "beta=1.5"], "beta lies in [0, 1)"),
    (["--set", "epochs=3"], "--epochs sets their minimum"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, tiny_data, args, message):
    base = ["run", "--results-dir", str(tmp_path / "results"), "--data-dir", tiny_data]
    proc = mnist_bench(*base, *args, tmp_path=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "results").exists()  # no run was started


def test_throughput_sweep_validates_then_times_every_cell_in_rounds(tmp_path, tiny_data):
    runs, cells = run_ok("run", "--backends", "numpy-loop,numpy", "--batch-sizes", "10,50",
                         "--threads", "1", "--rounds", "4", "--data-dir", tiny_data,
                         "--models", "nielsen,cnn", "--train-limit", "100", tmp_path=tmp_path)
    assert len(runs) == 1 and runs["status"][0] == "complete"
    # numpy-loop runs one sample at a time: timed at nielsen's own batch size only
    assert len(cells) == 2 * 2 + 2
    cnn_loop = cells[(cells["model"] == "cnn") & (cells["backend"] == "numpy-loop")]
    assert set(cnn_loop["status"]) == {"unavailable"} and all(cnn_loop["error"])
    ok = cells[cells["status"] == "ok"]
    assert len(ok) == 5
    for _, c in ok.iterrows():
        assert c["validation.ok"] and len(c["samples_s"]) == 4 and c["rounds_done"] == 4
        # the rounds shared among three worker processes in turn (the default)
        assert list(c["worker_processes"]) == [0, 1, 3]
        assert c["median_s"] == pytest.approx(float(np.median(c["samples_s"])))
        assert c["ci_low_s"] <= c["median_s"] <= c["ci_high_s"]
        assert c["train_samples"] == 100 and c["compile.first_step_s"] > 0
        # numpy compiles nothing: its cold figure is the first step, and says so
        assert c["compile.cold_s"] == c["compile.first_step_s"]
        assert "first step" in c["compile.cold_source"]
        assert c["samples_per_s"] == pytest.approx(100 / c["median_s"])
        pools = c["env.pools"]
        assert pools and all(p["num_threads"] == 1 for p in pools)
        assert c["env.env"]["OPENBLAS_NUM_THREADS"] == "1"
        if platform.machine() == "x86_64":  # XLA's subnormal handling, for every backend
            assert c["env.subnormals"] == "flush-to-zero"
        # the other worker was stopped while this one timed: it used no CPU
        assert c["noise.idle_workers_cpu_s"] <= 0.02 * len(c["samples_s"])
    assert runs["settings.train_limit"][0] == 100 and runs["settings.round_order_seed"][0] > 0


def test_compile_figures_are_measured_once_and_then_reused(tmp_path, tiny_data):
    args = ("run", "--backends", "numba", "--models", "linear", "--rounds", "2",
            "--data-dir", tiny_data, "--train-limit", "64")
    _, first = run_ok(*args, tmp_path=tmp_path, results="a")
    _, second = run_ok(*args, tmp_path=tmp_path, results="b")
    a, b = first.iloc[0], second.iloc[0]
    assert a["compile.figures_from"] == "measured in this run"
    assert b["compile.figures_from"].startswith("stored: measured")
    assert a["compile.cold_s"] == b["compile.cold_s"] > a["compile.cache_hit_s"] > 0
    assert a["compile.code_version"] == b["compile.code_version"]


def test_time_to_accuracy_samples_one_seed_per_round_and_scores_mlperf_style(tmp_path, tiny_data):
    _, cells = run_ok("run", "--mode", "tta", "--models", "mlp", "--backends", "numpy",
                      "--seeds", "0,1,2", "--target-accuracy", "0.5", "--epochs", "4",
                      "--data-dir", tiny_data, tmp_path=tmp_path)
    cell = cells.iloc[0]
    assert cell["kind"] == "tta" and cell["status"] == "ok"
    seeds = cell["seeds"]
    assert [s["seed"] for s in seeds] == [0, 1, 2]
    for s in seeds:
        log = s["epoch_log"]
        assert len(log) == s["epochs"] and 1 <= len(log) <= 4
        assert all(b["elapsed_s"] > a["elapsed_s"] for a, b in zip(log, log[1:]))
        assert log[-1]["elapsed_s"] == pytest.approx(sum(e["train_s"] + e["eval_s"] for e in log))
        if s["time_to_accuracy_s"] is not None:
            assert log[-1]["accuracy"] >= 0.5
    times = sorted(s["time_to_accuracy_s"] for s in seeds)
    assert cell["score_s"] == pytest.approx(times[1])  # drop fastest and slowest of three


def test_a_cell_whose_pools_differ_from_its_thread_count_is_an_error(tmp_path, tiny_data):
    _, cells = run_ok("run", "--backends", "numpy-wrong-threads,numpy", "--threads", "1",
                      "--models", "linear", "--rounds", "2", "--data-dir", tiny_data,
                      tmp_path=tmp_path)
    by = {c["backend"]: c for _, c in cells.iterrows()}
    assert by["numpy"]["status"] == "ok"
    wrong = by["numpy-wrong-threads"]
    assert wrong["status"] == "error" and "openblas (blas) runs 2 threads" in wrong["error"]
    assert not wrong["samples_s"] or wrong["samples_s"] != wrong["samples_s"]  # never timed


def _wait_for_cells(path_dir, n, proc, timeout=120, samples=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = store.result_files([path_dir]) if path_dir.exists() else []
        if files:
            done = [c for c in store.read_run(files[0])[1] if len(c.get("samples_s") or []) >= samples]
            if len(done) >= n:
                return files[0]
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    raise AssertionError(f"no {n} cells with {samples} samples within {timeout} s")


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _sweep_args(tmp_path, tiny_data):
    return ["run", "--models", "nielsen,mlp", "--backends", "numpy,numba", "--batch-sizes",
            "10,20,30", "--rounds", "40", "--data-dir", tiny_data,
            "--results-dir", str(tmp_path / "results")]


def test_sigkilled_run_keeps_every_finished_round(tmp_path, tiny_data):
    proc = mnist_bench(*_sweep_args(tmp_path, tiny_data), tmp_path=tmp_path)
    path = _wait_for_cells(tmp_path / "results", 12, proc, samples=2)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    header, cells = store.read_run(path)  # complete, parseable JSON Lines
    assert header["status"] == "running" and header["finished"] is None
    assert len(cells) == 12
    assert all(c["status"] == "unverified" and "not yet verified" in c["error"]
               and 2 <= len(c["samples_s"]) < 40 for c in cells)
    # every round is whole: no cell is two samples ahead of another
    assert max(len(c["samples_s"]) for c in cells) - min(len(c["samples_s"]) for c in cells) <= 1
    deadline = time.time() + 10  # the workers died with the harness, no orphans
    while any(os.path.exists(f"/proc/{w}") for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert workers and not any(os.path.exists(f"/proc/{w}") for w in workers)


def test_ctrl_c_stops_cleanly_and_marks_the_run_interrupted(tmp_path, tiny_data):
    # A terminal's foreground job: SIGINT at its default. Where pytest itself was started
    # in the background by a non-interactive shell (as CI may be), SIGINT arrives ignored,
    # is inherited as ignored, and Python then installs no KeyboardInterrupt handler.
    proc = mnist_bench(*_sweep_args(tmp_path, tiny_data), tmp_path=tmp_path,
                       start_new_session=True,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    path = _wait_for_cells(tmp_path / "results", 12, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    header, cells = store.read_run(path)
    assert header["status"] == "interrupted" and header["finished"]
    assert len(cells) == 12 and all(c["status"] == "unverified" and c["samples_s"] for c in cells)


def test_sigterm_closes_the_run_interrupted_and_removes_its_temporary_files(tmp_path, tiny_data):
    import glob
    import tempfile
    from mnist_numba_bench.bench.harness import TMP_PREFIX
    proc = mnist_bench(*_sweep_args(tmp_path, tiny_data), tmp_path=tmp_path)
    path = _wait_for_cells(tmp_path / "results", 12, proc)
    mine = os.path.join(tempfile.gettempdir(), f"{TMP_PREFIX}{proc.pid}-*")
    assert glob.glob(mine)  # the run's data copies exist while it runs
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    header, cells = store.read_run(path)
    assert header["status"] == "interrupted" and len(cells) == 12
    assert not glob.glob(mine)
    deadline = time.time() + 10
    while any(os.path.exists(f"/proc/{w}") for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{w}") for w in workers)


def test_unknown_kernel_family_is_one_line_before_any_work(tmp_path):
    proc = mnist_bench("kernels", "--families", "matmull", "--results-dir",
                       str(tmp_path / "results"), tmp_path=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [err.strip()] and "unknown kernel family 'matmull'" in err
    assert not (tmp_path / "results").exists()


def test_kernel_sweep_interleaves_versions_in_their_own_library_workers(tmp_path):
    proc = mnist_bench("kernels", "--families", "matmul_nt", "--versions",
                       "numpy_blas,v3_packed,torch_mm", "--shapes", "33x65x47", "--dtypes",
                       "float32", "--rounds", "3", "--threads", "1", "--results-dir",
                       str(tmp_path / "results"), tmp_path=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    _, cells = store.read_results([tmp_path / "results"])
    assert set(cells["status"]) == {"ok"} and len(cells) == 3
    # the answer on the console: the family's versions as columns, the shape a row,
    # each with its speed-up over the BLAS version, the fastest marked
    header, row = [line.split() for line in out.splitlines()[:2]]
    assert header == ["matmul_nt", "dtype", "threads", "numpy_blas", "v3_packed", "torch_mm"]
    assert row[:3] == ["33x65x47", "float32", "1"] and "1.00x" in out
    assert out.splitlines()[1].count("*") == 1 and "speed-up over the family's BLAS version" in out
    assert set(cells["library"]) == {"numpy", "numba", "torch"}
    assert len(set(cells["group"])) == 1  # one group: paired rounds
    for _, c in cells.iterrows():
        assert len(c["samples_s"]) == 3 and c["gflops"] > 0 and c["loops"] >= 1
        assert c["validation.shapes"] == 11  # every check shape and the timed one
        assert c["noise.idle_workers_cpu_s"] <= 0.06


def test_the_epoch_timer_adds_nothing_measurable():
    """Inside the timer there is only the epoch loop and the sync: on a trainer that
    does nothing, the timer reads well under 1 % of the shortest epoch we time
    (nielsen on numpy, ~2 ms for 256 images)."""
    from mnist_numba_bench.bench.epochs import timed_epochs

    class Idle:
        def train_epoch(self, batches):
            return 0.0

        def synchronize(self):
            pass

    seconds = [timed_epochs(Idle(), [None])[0] for _ in range(20_000)]
    assert float(np.median(seconds)) < 20e-6  # 1 % of 2 ms, with room for a busy machine


@pytest.mark.skipif(platform.machine() != "x86_64", reason="MXCSR is x86-64's")
def test_flushing_subnormals_reaches_threads_started_after_it():
    code = ("from mnist_numba_bench.bench.fpenv import flush_subnormals, state\n"
            "import numba, numpy as np\n"
            "print(state())\n"
            "flush_subnormals()\n"
            "@numba.njit(parallel=True)\n"
            "def nonzero(a):\n"
            "    n = 0\n"
            "    for i in numba.prange(a.size):\n"
            "        n += a[i] * np.float32(1.0) != 0\n"
            "    return n\n"
            "print(state(), nonzero(np.full(4096, 1e-39, np.float32)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, NUMBA_NUM_THREADS="2"), timeout=120)
    assert out.returncode == 0, out.stderr
    # a fresh process computes IEEE; after the call the main thread and Numba's pool flush
    assert out.stdout.split() == ["ieee", "flush-to-zero", "0"]


def test_freeze_heap_moves_the_libraries_out_of_the_collectors_sight():
    # in a process of its own: the freeze lasts until the process exits
    code = ("import gc, numpy; from mnist_numba_bench.bench.measure import freeze_heap; "
            "before = len(gc.get_objects()); freeze_heap(); "
            "print(gc.get_freeze_count() >= before // 2, len(gc.get_objects()) < before // 10); "
            "from mnist_numba_bench.bench.measure import objects_of; "
            "print(len(objects_of(type(numpy))) > 5, gc.get_freeze_count() >= before // 2)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    # and objects_of still finds what was frozen (the imported modules), leaving it frozen
    assert out.stdout.split() == ["True"] * 4, out.stderr[-500:]
