"""The Numba CUDA kernels and backends, checked on Numba's CUDA simulator
(tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 where there is no NVIDIA
driver). The simulator runs each CUDA thread as a Python thread, so shapes are
tiny but chosen to be non-square and not multiples of any tile.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import config, cuda, float32

from mnist_numba_bench.bench.backends import get_backend
from mnist_numba_bench.models.reference import NumpyOps
from mnist_numba_bench.bench.validate import validate
from mnist_numba_bench.kernels import cuda_matmul, cuda_nn, cuda_update
from mnist_numba_bench.models.ops import dropout_keep_mask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REF = NumpyOps()


# -- Numba's documentation example, verbatim ------------------------------------------
# From numba/cuda/tests/doc_examples/test_matmul.py (magictoken.ex_fast_matmul),
# shown in the "Examples / Matrix multiplication" page of Numba's CUDA docs.
# Controls threads per block and shared memory usage.
# The computation will be done on blocks of TPBxTPB elements.
# TPB should not be larger than 32 in this example
TPB = 16


@cuda.jit
def fast_matmul(A, B, C):
    """
    Perform matrix multiplication of C = A * B using CUDA shared memory.

    Reference: https://stackoverflow.com/a/64198479/13697228 by @RobertCrovella
    """
    # Define an array in the shared memory
    # The size and type of the arrays must be known at compile time
    sA = cuda.shared.array(shape=(TPB, TPB), dtype=float32)
    sB = cuda.shared.array(shape=(TPB, TPB), dtype=float32)

    x, y = cuda.grid(2)

    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    bpg = cuda.gridDim.x    # blocks per grid

    # Each thread computes one element in the result matrix.
    # The dot product is chunked into dot products of TPB-long vectors.
    tmp = float32(0.)
    for i in range(bpg):
        # Preload data into shared memory
        sA[ty, tx] = 0
        sB[ty, tx] = 0
        if y < A.shape[0] and (tx + i * TPB) < A.shape[1]:
            sA[ty, tx] = A[y, tx + i * TPB]
        if x < B.shape[1] and (ty + i * TPB) < B.shape[0]:
            sB[ty, tx] = B[ty + i * TPB, x]

        # Wait until all threads finish preloading
        cuda.syncthreads()

        # Computes partial product on the shared memory
        for j in range(TPB):
            tmp += sA[ty, j] * sB[j, tx]

        # Wait until all threads finish computing
        cuda.syncthreads()
    if y < C.shape[0] and x < C.shape[1]:
        C[y, x] = tmp


def numba_docs_example(a, b):
    """fast_matmul launched as the documentation launches it: one block per
    TPB×TPB tile of C, so gridDim.x = ceil(C rows / TPB), not ceil(K / TPB)."""
    c = cuda.device_array((a.shape[0], b.shape[1]), np.float32)
    grid = (math.ceil(c.shape[0] / TPB), math.ceil(c.shape[1] / TPB))
    fast_matmul[grid, (TPB, TPB)](cuda.to_device(a), cuda.to_device(b), c)
    return c.copy_to_host()


def _ab(m, n, k, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, k)).astype(np.float32),
            rng.standard_normal((k, n)).astype(np.float32))


def test_simulator_is_on():
    assert config.ENABLE_CUDASIM or os.path.exists("/dev/nvidiactl")


def test_docs_example_is_wrong_on_non_square_shape_where_ours_are_right():
    a, b = _ab(7, 5, 33)
    # Square and a multiple of the tile: the documentation example is right...
    sq_a, sq_b = _ab(16, 16, 16)
    assert np.allclose(numba_docs_example(sq_a, sq_b), sq_a @ sq_b, atol=1e-4)
    # ...on 7×33 · 33×5 its one block covers K = 0..15 only: 17 terms are missing.
    got = numba_docs_example(a, b)
    assert not np.allclose(got, a @ b, atol=1e-3)
    assert np.allclose(got, a[:, :TPB] @ b[:TPB], atol=1e-4)
    for version in cuda_matmul.VERSIONS:
        ours = cuda_matmul.launch(version, "nn", a, b).copy_to_host()
        assert np.allclose(ours, a @ b, atol=1e-4), version


# -- matmul family ---------------------------------------------------------------------
@pytest.mark.parametrize("family", cuda_matmul.FAMILIES, ids=lambda f: f.name)
def test_matmul_versions_production_tiles(family):
    """Every registered version and declared tile configuration (what the GPU
    runs) on an odd shape; the family holds each of them, and cuBLAS."""
    own = [v for v in family.versions.values() if v.library == "cuda"]
    assert {v.name.split("[")[0] for v in own} == set(cuda_matmul.VERSIONS)
    assert len(own) == sum(len(v.configs) for v in cuda_matmul.VERSIONS.values())
    assert {"cublas_fp32", "cublas_tf32"} <= set(family.versions)
    checks = family.validate([(7, 5, 33)], versions=[v.name for v in own])
    assert all(c.ok for c in checks), [(c.version, c.error) for c in checks if not c.ok]


@pytest.mark.parametrize("form", cuda_matmul.FORMS)
@pytest.mark.parametrize("version", cuda_matmul.VERSIONS)
def test_matmul_small_tiles_odd_shapes(form, version):
    """The registry's small configuration of every version: several output and K
    tiles walked by a grid of at most 2 blocks (the simulator's cap)."""
    family = {f.name: f for f in cuda_matmul.FAMILIES}[f"cuda_matmul_{form}"]
    small = cuda_matmul.VERSIONS[version].simulator
    for m, n, k in [(1, 1, 1), (17, 13, 9), (9, 3, 19), (33, 18, 21)]:
        rng = np.random.default_rng(m)
        a, b = family.make_inputs((m, n, k), np.dtype(np.float32), rng)
        got = cuda_matmul.launch(version, form, a, b, config=small).copy_to_host()
        want = family.reference(a.astype(np.float64), b.astype(np.float64))
        assert got.shape == want.shape
        assert np.allclose(got, want, rtol=1e-5, atol=1e-5), (m, n, k)


def test_matmul_bad_shapes_raise():
    a, b = _ab(3, 4, 5)
    with pytest.raises(ValueError, match="inner dimensions"):
        cuda_matmul.launch("v1_naive", "nn", a, b.T)
    with pytest.raises(ValueError, match="float32"):
        cuda_matmul.launch("v1_naive", "nn", a.astype(np.float64), b)
    with pytest.raises(ValueError, match="unknown matmul form"):
        cuda_matmul.launch("v1_naive", "tt", a, b)
    with pytest.raises(ValueError, match="unknown matmul version"):
        cuda_matmul.launch("v9", "nn", a, b)
    with pytest.raises(ValueError, match="out has shape"):
        cuda_matmul.launch("v1_naive", "nn", a, b, out=cuda.device_array((3, 5), np.float32))


def test_families_declare_sweep_shapes_and_dtypes():
    for module in (cuda_matmul, cuda_nn, cuda_update):
        for fam in module.FAMILIES:
            assert fam.sweep_shapes and fam.dtypes == ("float32",)
            ok, why = fam.available()
            if config.ENABLE_CUDASIM:   # timed only on a real GPU
                assert not ok and "CUDA simulator: correctness only, not timed" in why
            else:
                assert ok, why


# -- the other kernels against NumpyOps ----------------------------------------------------
def _host(a):
    return a.copy_to_host()


def _d(a):
    return cuda.to_device(np.ascontiguousarray(a))


@pytest.mark.parametrize("activation", ["none", "sigmoid", "relu"])
def test_dense_fused_and_activation_backward(activation):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 33)).astype(np.float32) * 3
    w = rng.standard_normal((33, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    a = cuda_nn.dense(_d(x), _d(w), _d(b), activation)
    want = REF.dense(x, w, b, activation)
    assert np.allclose(_host(a), want, rtol=1e-5, atol=1e-5)
    da = rng.standard_normal(want.shape).astype(np.float32)
    got = cuda_nn.activation_backward(a, _d(da), activation)
    assert np.allclose(_host(got), REF.activation_backward(want, da, activation), atol=1e-5)
    with pytest.raises(ValueError, match="unknown activation"):
        cuda_nn.dense(_d(x), _d(w), _d(b), "tanh")


def test_bias_grad_mul_take_rows():
    rng = np.random.default_rng(2)
    dz = rng.standard_normal((33, 13)).astype(np.float32)
    out = cuda.device_array(13, np.float32)
    cuda_nn.bias_grad(_d(dz), out=out)
    assert np.allclose(_host(out), dz.sum(axis=0), atol=1e-5)
    other = rng.standard_normal(dz.shape).astype(np.float32)
    assert np.allclose(_host(cuda_nn.mul(_d(dz), _d(other))), dz * other)
    idx = np.array([32, 0, 5, 5, 17])
    assert np.array_equal(_host(cuda_nn.take_rows(_d(dz), _d(idx))), dz[idx])
    labels = rng.integers(0, 10, 33)
    assert np.array_equal(_host(cuda_nn.take_rows(_d(labels), _d(idx))), labels[idx])


def test_softmax_cross_entropy_is_stable_and_matches():
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((37, 10)) * 5).astype(np.float32)
    logits[0] += 1000.0   # exp would overflow without the row max
    labels = rng.integers(0, 10, 37)
    loss, grad = cuda_nn.softmax_cross_entropy(_d(logits), _d(labels))
    want_loss, want_grad = REF.softmax_cross_entropy(logits, labels)
    assert np.isclose(_host(loss)[0], want_loss, rtol=1e-5)
    assert np.allclose(_host(grad), want_grad, atol=1e-6)
    with pytest.raises(ValueError, match="integer class indices"):
        cuda_nn.softmax_cross_entropy(_d(logits), _d(labels[:5]))


def test_quadratic_loss_into_a_loss_slot():
    rng = np.random.default_rng(4)
    a = rng.random((9, 10)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 9)]
    log = cuda.to_device(np.full(3, -1.0, np.float32))
    _, grad = cuda_nn.quadratic_loss(_d(a), _d(y), loss_out=log, slot=1)
    want_loss, want_grad = REF.quadratic_loss(a, y)
    assert np.allclose(_host(log), [-1.0, want_loss, -1.0], rtol=1e-5)
    assert np.allclose(_host(grad), want_grad, atol=1e-7)


@pytest.mark.parametrize("key", [0, 7, 0xFFFFFFFF])
def test_dropout_uses_the_suites_mask(key):
    x = np.random.default_rng(5).standard_normal((6, 37)).astype(np.float32)
    y, mask = cuda_nn.dropout(_d(x), 0.5, key)
    keep = dropout_keep_mask(x.shape, 0.5, key)
    assert np.array_equal(_host(mask) != 0, keep)   # bit-identical hash
    want_y, want_mask = REF.dropout(x, 0.5, key)
    assert np.array_equal(_host(mask), want_mask)
    assert np.allclose(_host(y), want_y)
    with pytest.raises(ValueError, match="dropout rate"):
        cuda_nn.dropout(_d(x), 1.0, key)


def test_conv2d_forward_backward():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 5, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 2)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    y = cuda_nn.conv2d(_d(x), _d(w), _d(b))
    want = REF.conv2d(x, w, b)
    assert np.allclose(_host(y), want, atol=1e-4)
    dy = rng.standard_normal(want.shape).astype(np.float32)
    dw, db = cuda.device_array(w.shape, np.float32), cuda.device_array(3, np.float32)
    dx = cuda_nn.conv2d_backward(_d(x), _d(w), _d(dy), dw, db)
    want_dw, want_db = np.zeros_like(w), np.zeros(3, np.float32)
    want_dx = REF.conv2d_backward(x, w, dy, want_dw, want_db)
    assert np.allclose(_host(dw), want_dw, atol=1e-4)
    assert np.allclose(_host(db), want_db, atol=1e-4)
    assert np.allclose(_host(dx), want_dx, atol=1e-4)
    assert cuda_nn.conv2d_backward(_d(x), _d(w), _d(dy), dw, db, need_dx=False) is None
    with pytest.raises(ValueError, match="channels"):
        cuda_nn.conv2d(_d(x[:, :1]), _d(w), _d(b))


def test_maxpool2_with_odd_edges_and_ties():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, (2, 3, 5, 7)).astype(np.float32)   # many ties
    y, arg = cuda_nn.maxpool2(_d(x))
    want_y, want_arg = REF.maxpool2(x)
    assert np.array_equal(_host(y), want_y)
    assert np.array_equal(_host(arg), want_arg)   # the first maximum wins
    dy = rng.standard_normal(want_y.shape).astype(np.float32)
    dx = cuda_nn.maxpool2_backward(_d(dy), arg, x.shape)
    assert np.array_equal(_host(dx), REF.maxpool2_backward(dy, want_arg, x.shape))


def test_updates_match_numpy_over_two_steps():
    rng = np.random.default_rng(8)
    n = 75
    g1, g2 = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    p0 = rng.standard_normal(n).astype(np.float32)
    host = [p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)]
    dev = [_d(a) for a in host]
    for step, g in enumerate((g1, g2), start=1):
        REF.adam_update(host[0], g, host[1], host[2], step, 1e-2, 0.9, 0.999, 1e-8)
        cuda_update.adam_update(dev[0], _d(g), dev[1], dev[2], step, 1e-2, 0.9, 0.999, 1e-8)
    for h, d in zip(host, dev):
        assert np.allclose(_host(d), h, rtol=1e-5, atol=1e-7)
    p, v = p0.copy(), np.zeros(n, np.float32)
    dp, dv = _d(p), _d(v)
    for g in (g1, g2):
        REF.momentum_update(p, g, v, 0.3, 0.9)
        cuda_update.momentum_update(dp, _d(g), dv, 0.3, 0.9)
        REF.sgd_update(p, g, 0.1)
        cuda_update.sgd_update(dp, _d(g), 0.1)
    assert np.allclose(_host(dp), p, atol=1e-6) and np.allclose(_host(dv), v, atol=1e-6)
    with pytest.raises(ValueError, match="counts from 1"):
        cuda_update.adam_update(dev[0], _d(g1), dev[1], dev[2], 0, 1e-2, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError, match="elements"):
        cuda_update.sgd_update(dp, _d(g1[:5]), 0.1)


# -- the backends ------------------------------------------------------------------------------
@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="a real GPU is present")
@pytest.mark.parametrize("name", ["numba-cuda", "numba-cuda-epoch"])
def test_backends_unavailable_on_the_simulator_by_default(name, monkeypatch):
    monkeypatch.delenv("MNIST_BENCH_ALLOW_CUDASIM", raising=False)
    ok, why = get_backend(name).available()
    assert not ok
    assert why == "no CUDA GPU (CUDA simulator: correctness only, not timed)"
    assert not validate(name, "nielsen").ok


@pytest.mark.parametrize("backend,model,batch", [
    ("numba-cuda", "linear", 4), ("numba-cuda", "nielsen", 2), ("numba-cuda", "mlp", 2),
    ("numba-cuda-epoch", "nielsen", 3), ("numba-cuda-epoch", "mlp", 2)])
def test_backend_matches_numpy_after_two_steps(backend, model, batch, monkeypatch):
    monkeypatch.setenv("MNIST_BENCH_ALLOW_CUDASIM", "1")
    result = validate(backend, model, steps=2, batch_size=batch)
    assert result.ok, result.error
    assert result.max_error < 1e-4


def test_epoch_losses_and_predict_match_numpy(monkeypatch):
    """The mean loss an epoch returns and predict(), for both CUDA trainers."""
    from mnist_numba_bench.bench.validate import validation_data
    from mnist_numba_bench.models import config_for, get_network
    from mnist_numba_bench.models.train import epoch_batches
    monkeypatch.setenv("MNIST_BENCH_ALLOW_CUDASIM", "1")
    net = get_network("nielsen")
    config = dict(config_for(net), batch_size=2)
    x, y, _ = validation_data(net, 3)   # batches of 2 and 1: the short last one too
    batches = epoch_batches(3, 2, 0, 0)
    results = {}
    for name in ("numpy", "numba-cuda", "numba-cuda-epoch"):
        trainer = get_backend(name).make_trainer(net, net.init_params(0), config, 0)
        trainer.set_data(x, y)
        results[name] = trainer.train_epoch(batches), trainer.predict(x[:2])
    for name in ("numba-cuda", "numba-cuda-epoch"):
        assert np.isclose(results[name][0], results["numpy"][0], rtol=1e-4)
        assert np.allclose(results[name][1], results["numpy"][1], atol=1e-4)


def test_cuda_trainers_reject_bad_input(monkeypatch):
    from mnist_numba_bench.models import config_for, get_network
    monkeypatch.setenv("MNIST_BENCH_ALLOW_CUDASIM", "1")
    net = get_network("mlp")
    trainer = get_backend("numba-cuda").make_trainer(net, net.init_params(0), config_for(net))
    with pytest.raises(ValueError, match="class indices"):
        trainer.set_data(np.zeros((2, 784), np.float32), np.array([3, 10]))
    assert not get_backend("numba-cuda-epoch").supports("cnn")[0]
    with pytest.raises(ValueError, match="sgd or momentum"):
        get_backend("numba-cuda-epoch").make_trainer(
            net, net.init_params(0), dict(config_for(net), optimizer="adam"))


def test_gpu_command_checks_every_cuda_version_on_the_simulator(tmp_path):
    """`mnist-bench gpu --smoke` under the simulator: every version of every CUDA
    family checked against its reference, stored as cells -- and none timed."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-m", "mnist_numba_bench.bench", "gpu", "--smoke",
                           "--results-dir", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mnist_numba_bench.bench.store import read_results
    _, cells = read_results([tmp_path])
    assert len(cells) >= 10 and set(cells["status"]) == {"unavailable"}
    assert cells["validation.ok"].all() and cells["median_s"].isna().all()
    assert cells["error"].str.contains("simulator").all()


def _nvvm_home():
    home = os.environ.get("CUDA_HOME", "")
    return home if os.path.exists(os.path.join(home, "nvvm", "lib64", "libnvvm.so")) else None


@pytest.mark.skipif(_nvvm_home() is None,
                    reason="needs NVVM: CUDA_HOME with nvvm/ (see tests/cuda_ptx_check.py)")
def test_kernels_compile_to_sm90_ptx_without_local_memory():
    """What the simulator cannot see: CUDA typing, and register arrays spilled."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "cuda_ptx_check.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# -- the device dispatch, off the simulator ---------------------------------------------
@pytest.mark.parametrize("form", ["nn", "nt", "tn"])
@pytest.mark.parametrize("m,n,k,want", [(4096, 4096, 64, "v5_prefetch_register_tiled"),
                                        (1024, 1024, 1024, "v5_prefetch_register_tiled"),
                                        (128, 128, 784, "v2_shared_tiled"),
                                        (10, 30, 784, "v2_shared_tiled")])
def test_auto_dispatch_on_a_real_device_picks_by_output_size(monkeypatch, form, m, n, k, want):
    """The branch a real GPU takes (the simulator returns before it), driven with the
    launch replaced: the version it names exists and gets the product's operands."""
    a = np.zeros((k, m) if form == "tn" else (m, k), np.float32)
    b = np.zeros((n, k) if form == "nt" else (k, n), np.float32)
    monkeypatch.setattr(cuda_matmul, "SIMULATOR", False)
    launched = []
    cuda_matmul.matmul_auto(form, a, b, launch=lambda *args, **kw: launched.append((args, kw)))
    (version, got_form, got_a, got_b, *_), kw = launched[0]
    assert (version, got_form, got_a is a, got_b is b) == (want, form, True, True)
    assert version in cuda_matmul.VERSIONS and kw["config"] is None
    assert cuda_matmul.auto_version(m, n, simulator=True)[0] == "v1_naive"
