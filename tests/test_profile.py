"""mnist-bench profile: the breakdown's classification of py-spy frames, and a
short real run (skipped with the reason where py-spy is missing or cannot attach)."""
import argparse
import json
import os

import pytest

from mnist_numba_bench.bench import profile

PY = ("profiled_epoch", "/work/main/bench/profile.py")
OPENBLAS = "/venv/lib/python3.11/site-packages/numpy.libs/libscipy_openblas64_-32a4b2a6.so"
UMATH = "/venv/lib/python3.11/site-packages/numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so"


# Stacks as py-spy --native reports them (seen in raw/speedscope output here).
@pytest.mark.parametrize("leaf_frames, numba_loaded, expected", [
    ([("sgemm_kernel_SKYLAKEX", OPENBLAS)], False, "blas"),
    ([("exec_blas", OPENBLAS)], False, "blas"),
    # Numba's JIT code has no file: an address in anonymous memory, then libm.
    ([("0x7f409d3a12ba", "?"), ("0x7f409e1b17fc", "/usr/lib/x86_64-linux-gnu/libm.so.6")], True, "numba"),
    ([("numba_sinf", "numba/mathnames.h")], True, "numba"),
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


def args_for(out, **overrides):
    parser = argparse.ArgumentParser()
    profile.add_arguments(parser)
    argv = ["--model", "nielsen", "--backend", "numpy", "--dataset", "auto", "--no-download",
            "--train-limit", "20000", "--rate", "500", "--out", str(out)]
    args = parser.parse_args(argv)
    vars(args).update(overrides)
    return args


def test_profile_a_short_numpy_epoch(tmp_path, capsys):
    try:
        profile.find_py_spy()
        assert profile.main(args_for(tmp_path)) == 0
    except profile.ProfilerUnavailable as e:
        pytest.skip(str(e))
    stem = tmp_path / "nielsen-numpy"
    svg = (tmp_path / "nielsen-numpy.flamegraph.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and profile.PROFILED_FUNCTION in svg
    with open(f"{stem}.speedscope.json") as f:
        assert json.load(f)["profiles"][0]["samples"]
    with open(f"{stem}.breakdown.json") as f:
        summary = json.load(f)
    assert summary["samples"] >= 20  # ~0.3 s epoch at 500 Hz
    shares = {c: v["share"] for c, v in summary["categories"].items()}
    assert sum(shares.values()) == pytest.approx(1)
    # the numpy backend: BLAS, NumPy's C loops and the interpreter, no Numba or torch
    assert shares["blas"] > 0 and shares["numpy"] > 0 and shares["python"] > 0
    assert shares["numba"] == 0 and shares["torch"] == 0
    assert summary["epoch"]["batches"] == 2000
    out = capsys.readouterr().out
    assert "where the time went" in out and "BLAS" in out


def test_bad_arguments_fail_before_profiling(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        profile.main(args_for(tmp_path, model="resnet"))
    with pytest.raises(ValueError, match="--rate"):
        profile.main(args_for(tmp_path, rate=0))
    assert not os.listdir(tmp_path)
