"""mnist-bench profile: the breakdown's classification of py-spy frames, and a
short real run (skipped with the reason where py-spy is missing or cannot attach)."""
import argparse
import json
import os
import time

import pytest

from mnist_numba_bench.bench import profile

PY = ("profiled_epochs", "/work/main/bench/profile.py")
OPENBLAS = "/venv/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-32a4b2a6.so"
UMATH = "/venv/lib/python3.11/site-packages/numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"


# Stacks as py-spy --native reports them (seen in raw/speedscope output here).
@pytest.mark.parametrize("leaf_frames, numba_loaded, expected", [
    ([("sgemm_kernel_SKYLAKEX", OPENBLAS)], False, "blas"),
    ([("exec_blas", OPENBLAS)], False, "blas"),
    # Numba's JIT code has no file: an address in anonymous memory, then libm.
    ([("0x7f409d3a12ba", "?"), ("0x7f409e1b17fc", "/usr/lib/x86_64-linux-gnu/libm.so.6")], True, "numba"),
    ([("numba_sinf", "numba/mathnames.h")], True, "numba"),
    # named by the resolver: Numba's code even where its name says gemm
    ([("matmul._gemm_f32", "numba-jit")], True, "numba"),
    ([("0x7f409d3a12ba", "?")], False, "other"),
    ([("ufunc_generic_fastcall", UMATH), ("0x7f977eb8b80f", "/usr/lib/x86_64-linux-gnu/libc.so.6")],
     False, "numpy"),
    # a Python frame is the leaf: the interpreter itself is running
    ([("NumpyOps.matmul_tn", "/work/main/bench/backends/numpy_backend.py")], False, "python"),
    ([("_PyEval_EvalFrameDefault", "ceval.c")], False, "python"),
    ([("at::native::addmm_out", "/venv/lib/python3.11/site-packages/torch/lib/libtorch_cpu.so")],
     False, "torch"),
    ([("0x7f35bbc4524a", "/usr/lib/x86_64-linux-gnu/libc.so.6")], False, "other"),
])
def test_classify(leaf_frames, numba_loaded, expected):
    assert profile.classify([PY] + leaf_frames, numba_loaded) == expected


def test_missing_py_spy_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(profile.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(profile.ProfilerUnavailable, match=r"pip install -e \.\[profile\]"):
        profile.find_py_spy()


def test_resolver_names_jit_addresses_after_the_nearest_start_below():
    resolve = profile.resolver([(0x1000, "matmul._gemm_f32"), (0x5000, "update._momentum")])
    assert resolve("0x1000", "?") == ("matmul._gemm_f32", "numba-jit")
    assert resolve("0x4fff", "?") == ("matmul._gemm_f32", "numba-jit")
    assert resolve("0x5010", "") == ("update._momentum", "numba-jit")
    assert resolve("0x0fff", "?") == ("0x0fff", "?")  # below every start: stays an address
    far = hex(0x5000 + profile.NEAREST_LIMIT + 1)
    assert resolve(far, "?") == (far, "?")
    assert resolve("0x1000", "libc.so.6") == ("0x1000", "libc.so.6")  # a library's own frame
    assert resolve("exec_blas", "?") == ("exec_blas", "?")
    assert profile.resolver([])("0x1000", "?") == ("0x1000", "?")


def test_demangle_numba_names():
    assert profile.demangle("_ZN17mnist_numba_bench7kernels6matmul9_gemm_f32B3v12E5ArrayIf") == \
        "matmul._gemm_f32"
    assert profile.demangle("cpython.numba_helper") == "cpython.numba_helper"


def test_flamegraph_holds_only_the_given_stacks_each_with_its_share():
    root = ("profiled_epochs", "bench/profile.py")
    stacks = {(root, ("NumbaOps.matmul", "numba_backend.py"), ("matmul._gemm_f32", "numba-jit")): 0.75,
              (root, ("NumpyOps.add", "numpy_backend.py")): 0.25}
    svg = profile.flamegraph_svg(stacks, "a title")
    assert svg.startswith("<?xml") and svg.rstrip().endswith("</svg>")
    assert "matmul._gemm_f32 (numba-jit): 75.0% (numba)" in svg
    assert "NumpyOps.add (numpy_backend.py): 25.0% (python)" in svg
    assert "profiled_epochs (profile.py): 100.0%" in svg
    assert svg.count("<rect") == 4


def test_profiled_epochs_reuse_the_batch_orders_until_the_time_is_reached():
    class SleepyTrainer:
        def __init__(self):
            self.seen = []

        def train_epoch(self, batches):
            self.seen.append(batches)
            time.sleep(0.01)
            return float(len(self.seen))

        def synchronize(self):
            pass

    trainer = SleepyTrainer()
    loss, done = profile.profiled_epochs(trainer, ["a", "b"], seconds=0.055)
    # the two planned orders ran out before the time: they are trained again in turn
    assert done >= 6 and loss == done and trainer.seen[:4] == ["a", "b", "a", "b"]
    assert profile.profiled_epochs(SleepyTrainer(), ["a"], seconds=0.0) == (1.0, 1)


def test_few_samples_are_said_in_the_table():
    summary = {"model": "mlp", "backend": "numpy", "rate_hz": 100, "samples": 40,
               "epoch": {"epochs": 1, "samples": 10, "batch_size": 5, "batches": 2,
                         "epoch_s": 0.4, "dataset": "synthetic"},
               "categories": {}, "top_frames": []}
    assert "WARNING: only 40 samples" in profile.format_table(summary)
    assert "WARNING" not in profile.format_table(dict(summary, samples=profile.WARN_SAMPLES))


def args_for(out, **overrides):
    parser = argparse.ArgumentParser()
    profile.add_arguments(parser)
    argv = ["--model", "nielsen", "--backend", "numpy", "--dataset", "auto", "--no-download",
            "--train-limit", "2000", "--rate", "100", "--min-samples", "150", "--out", str(out)]
    args = parser.parse_args(argv)
    vars(args).update(overrides)
    return args


def profile_or_skip(args):
    try:
        profile.find_py_spy()
        assert profile.main(args) == 0
    except profile.ProfilerUnavailable as e:
        pytest.skip(str(e))


def read_outputs(stem):
    svg = open(f"{stem}.flamegraph.svg").read()
    with open(f"{stem}.speedscope.json") as f:
        profiled = json.load(f)
    with open(f"{stem}.breakdown.json") as f:
        summary = json.load(f)
    return svg, profiled, summary


def test_profile_numpy_epochs_from_one_recording(tmp_path, capsys):
    profile_or_skip(args_for(tmp_path))
    svg, profiled, summary = read_outputs(tmp_path / "nielsen-numpy")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # one recording; the flamegraph and the profiled speedscope hold the timed
    # epochs only, rooted at profiled_epochs: no setup, data loading or warm-up
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "nielsen-numpy.breakdown.json", "nielsen-numpy.flamegraph.svg",
        "nielsen-numpy.recording.speedscope.json", "nielsen-numpy.speedscope.json"]
    names = {fr["name"] for fr in profiled["shared"]["frames"]}
    assert profile.PROFILED_FUNCTION in names
    assert not names & {"run_child", "warmup_epoch", "load", "child_main"}
    assert all(profiled["shared"]["frames"][s[0]]["name"] == profile.PROFILED_FUNCTION
               for s in profiled["profiles"][0]["samples"])
    assert "warmup_epoch" not in svg and "run_child" not in svg
    # enough epochs for --min-samples (less the sampling jitter)
    assert summary["samples"] >= 0.8 * 150 and summary["epoch"]["epochs"] >= 1
    shares = {c: v["share"] for c, v in summary["categories"].items()}
    assert sum(shares.values()) == pytest.approx(1)
    # the numpy backend: BLAS, NumPy's C loops and the interpreter, no Numba or torch
    assert shares["blas"] > 0 and shares["numpy"] > 0 and shares["python"] > 0
    assert shares["numba"] == 0 and shares["torch"] == 0
    assert summary["epoch"]["batches"] == 200
    out = capsys.readouterr().out
    assert "where the time went" in out and "BLAS" in out


def test_profile_names_numba_frames(tmp_path, capsys):
    profile_or_skip(args_for(tmp_path, backend="numba"))
    svg, profiled, summary = read_outputs(tmp_path / "nielsen-numba")
    named = [fr for fr in summary["top_frames"] if fr["frame"].endswith("(numba-jit)")]
    assert named and all(fr["category"] == "numba" for fr in named)
    # the kernels this backend runs, by their Python names
    assert any(fr["frame"].startswith(("matmul.", "backprop.", "update.")) for fr in named), named
    assert "(numba-jit)" in svg
    assert summary["categories"]["numba"]["share"] > 0.2


def test_bad_arguments_fail_before_profiling(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        profile.main(args_for(tmp_path, model="resnet"))
    with pytest.raises(ValueError, match="--rate"):
        profile.main(args_for(tmp_path, rate=0))
    assert not os.listdir(tmp_path)
