"""`mnist-bench run` and `mnist-bench kernels`: validation gates timing, bad input
fails before any work, killed and interrupted runs keep their finished cells.
Kept fast: a tiny IDX dataset written here, a few hundred images, numpy backends."""
import gzip
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import store
from bench.backends import REGISTRY, _cache
from bench.backends.numpy_backend import NumpyBackend, NumpyOps
from models.train import OpsTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def mnist_bench(*args, tmp_path, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT, MNIST_BENCH_CACHE=str(tmp_path / "cache"))
    return subprocess.Popen([sys.executable, "-m", "bench", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def run_ok(*args, tmp_path):
    proc = mnist_bench(*args, tmp_path=tmp_path)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    runs, cells = store.read_results([tmp_path / "results"])
    assert len(runs) == 1 and runs["status"][0] == "complete"
    return runs, cells


@pytest.mark.parametrize("args, message", [
    (["--models", "nielsen,mlpp"], "unknown model 'mlpp'"),
    (["--backends", "numpy,numbaa"], "unknown backend 'numbaa'"),
    (["--set", "momentum=0.5"], "has no hyperparameter 'momentum'"),
    (["--batch-sizes", "10,x"], "--batch-sizes"),
    (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist: not a directory"),
    (["--models", "cnn", "--backends", "numpy-loop"], "nothing to run: numpy-loop cannot train cnn"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, tiny_data, args, message):
    base = ["run", "--results-dir", str(tmp_path / "results"), "--data-dir", tiny_data]
    proc = mnist_bench(*base, *args, tmp_path=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "results").exists()  # no run was started


def test_throughput_sweep_validates_then_times_every_cell(tmp_path, tiny_data):
    runs, cells = run_ok("run", "--backends", "numpy-loop,numpy",
                         "--batch-sizes", "10,50", "--threads", "1", "--repeats", "3",
                         "--data-dir", tiny_data, "--results-dir", str(tmp_path / "results"),
                         "--models", "nielsen,cnn", "--train-limit", "100", tmp_path=tmp_path)
    assert len(cells) == 2 * 2 * 2  # models x backends x batch sizes
    cnn_loop = cells[(cells["model"] == "cnn") & (cells["backend"] == "numpy-loop")]
    assert set(cnn_loop["status"]) == {"unavailable"} and all(cnn_loop["error"])
    ok = cells[cells["status"] == "ok"]
    assert len(ok) == 6
    for _, c in ok.iterrows():
        assert c["validation.ok"] and len(c["samples_s"]) == 3
        assert c["median_s"] == pytest.approx(float(np.median(c["samples_s"])))
        assert c["train_samples"] == 100 and c["compile.first_step_s"] > 0
        # numpy compiles nothing and reports nothing: cold_s is the harness's first step
        assert c["compile.cold_source"] == "first_step"
        assert c["compile.cold_s"] == c["compile.first_step_s"]
        assert c["samples_per_s"] == pytest.approx(100 / c["median_s"])
        assert c["env.OPENBLAS_NUM_THREADS"] == "1" and c["env.NUMBA_NUM_THREADS"] == "1"
    assert runs["settings.train_limit"][0] == 100


def test_time_to_accuracy_logs_every_epoch_and_scores_mlperf_style(tmp_path, tiny_data):
    _, cells = run_ok("run", "--mode", "tta", "--models", "mlp", "--backends", "numpy",
                      "--seeds", "0,1,2", "--target-accuracy", "0.5", "--epochs", "4",
                      "--data-dir", tiny_data, "--results-dir", str(tmp_path / "results"),
                      tmp_path=tmp_path)
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


def _wait_for_cells(path_dir, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = store.result_files([path_dir]) if path_dir.exists() else []
        if files and len(store.read_run(files[0])[1]) >= n:
            return files[0]
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    raise AssertionError(f"no {n} finished cells within {timeout} s")


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _sweep_args(tmp_path, tiny_data):
    return ["run", "--models", "nielsen,mlp", "--backends", "numpy,numpy-loop",
            "--batch-sizes", "10,20,30", "--repeats", "5", "--data-dir", tiny_data,
            "--results-dir", str(tmp_path / "results")]


def test_sigkilled_run_keeps_its_finished_cells(tmp_path, tiny_data):
    proc = mnist_bench(*_sweep_args(tmp_path, tiny_data), tmp_path=tmp_path)
    path = _wait_for_cells(tmp_path / "results", 1, proc)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    header, cells = store.read_run(path)  # complete, parseable JSON Lines
    assert header["status"] == "running" and header["finished"] is None
    assert 1 <= len(cells) < 12
    assert all(c["status"] == "ok" and c["samples_s"] for c in cells)
    # the worker died with the harness instead of running on as an orphan
    deadline = time.time() + 10
    while any(os.path.exists(f"/proc/{w}") for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{w}") for w in workers)


def test_ctrl_c_stops_cleanly_and_marks_the_run_interrupted(tmp_path, tiny_data):
    # A terminal's foreground job: SIGINT at its default. Where pytest itself was started
    # in the background by a non-interactive shell (as CI may be), SIGINT arrives ignored,
    # is inherited as ignored, and Python then installs no KeyboardInterrupt handler.
    proc = mnist_bench(*_sweep_args(tmp_path, tiny_data), tmp_path=tmp_path,
                       start_new_session=True,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    path = _wait_for_cells(tmp_path / "results", 1, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    header, cells = store.read_run(path)
    assert header["status"] == "interrupted" and header["finished"]
    assert len(cells) >= 1 and all(c["status"] == "ok" for c in cells)


# -- a planted wrong backend and a planted wrong kernel are never timed ---------

class ScaledGradientOps(NumpyOps):
    """Wrong by 1 % in one weight gradient: the kind of bug validation must catch."""

    def matmul_tn(self, a, b, out=None):
        r = super().matmul_tn(a, b, out=out)
        r *= np.float32(1.01)
        return r


class BrokenBackend(NumpyBackend):
    name = "broken"

    def make_trainer(self, network, init_params, config, seed=0):
        return OpsTrainer(ScaledGradientOps(), network, init_params, config, seed)


def test_planted_wrong_backend_is_stored_invalid_and_never_timed(tmp_path, monkeypatch):
    from bench.harness import measure_cell
    monkeypatch.setitem(REGISTRY, "broken", "tests.test_harness:BrokenBackend")
    monkeypatch.setitem(_cache, "broken", BrokenBackend())
    rng = np.random.default_rng(0)
    data = {"train_x": rng.random((60, 784), dtype=np.float32), "train_y": rng.integers(0, 10, 60),
            "test_x": rng.random((20, 784), dtype=np.float32), "test_y": rng.integers(0, 10, 20)}
    job = {"backend": "broken", "threads": 1, "mode": "throughput", "epochs": 1, "repeats": 2,
           "seeds": [0], "target_accuracy": 0.9, "overrides": {}, "dataset": "t",
           "synthetic": True}
    writer = store.RunWriter(tmp_path, store.default_header({}))
    for model, bs in (("nielsen", 10), ("mlp", 20)):
        cell = measure_cell(job, {"model": model, "batch_size": bs}, data)
        assert cell["status"] == "invalid" and "differ from numpy" in cell["error"]
        assert "samples_s" not in cell and "median_s" not in cell
        writer.add(cell)
    good = measure_cell(job | {"backend": "numpy"}, {"model": "mlp", "batch_size": 20}, data)
    assert good["status"] == "ok" and len(good["samples_s"]) == 2
    _, cells = store.read_results([writer.path])
    assert list(cells["status"]) == ["invalid", "invalid"]
    assert cells["median_s"].isna().all()


def test_planted_wrong_kernel_is_stored_invalid_and_never_timed():
    from bench.kernel_sweep import sweep_family
    from kernels.family import KernelFamily
    family = KernelFamily("toy_matmul", reference=lambda a, b: a @ b,
                          make_inputs=lambda s, dtype, rng: (rng.random((s[0], s[2])).astype(dtype),
                                                             rng.random((s[2], s[1])).astype(dtype)),
                          flops=lambda s: 2.0 * s[0] * s[1] * s[2])
    family.sweep_shapes, family.dtypes = [(1, 7, 33), (33, 7, 257)], ("float32",)
    family.version(lambda a, b: a @ b, name="blas")
    # right on the first shape, off by one element on the larger one
    family.version(lambda a, b: (a @ b) + (np.arange((a @ b).size).reshape(a.shape[0], -1) == 100),
                   name="off_by_one")
    cells = list(sweep_family(family, ["blas", "off_by_one"], family.sweep_shapes, 1, 3))
    assert [(c["backend"], c["status"]) for c in cells] == [
        ("blas", "ok"), ("blas", "ok"), ("off_by_one", "invalid"), ("off_by_one", "invalid")]
    for c in cells[:2]:
        assert len(c["samples_s"]) == 3 and c["gflops"] > 0 and c["validation"]["ok"]
    for c in cells[2:]:
        assert "samples_s" not in c and "[33, 7, 257]" in c["error"]


def test_unknown_kernel_family_is_one_line_before_any_work(tmp_path):
    proc = mnist_bench("kernels", "--families", "matmull", "--results-dir",
                       str(tmp_path / "results"), tmp_path=tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [err.strip()] and "unknown kernel family 'matmull'" in err
    assert not (tmp_path / "results").exists()


def test_the_epoch_timer_adds_nothing_measurable():
    """Inside the timer there is only the epoch loop and the sync: on a trainer that
    does nothing, the timer reads well under 1 % of the shortest epoch we time
    (nielsen on numpy, ~10 ms for 1,000 images)."""
    from bench.harness import timed_epoch

    class Idle:
        def train_epoch(self, batches):
            return 0.0

        def synchronize(self):
            pass

    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        timed_epoch(Idle(), None)
    assert (time.perf_counter() - t0) / n < 20e-6  # 1 % of 2 ms, with room for a busy machine
