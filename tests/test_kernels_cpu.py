"""Every CPU kernel version against its float64 reference, on odd shapes, float32 and
float64 (the KernelFamily checks), plus the contracts the kernels' callers rely on,
and the micro-kernel's compiled depth loop on each x86 path."""
import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from mnist_numba_bench.kernels import backprop, conv, matmul, update
from mnist_numba_bench.kernels.family import KernelFamily

MODULES = [matmul, backprop, conv, update]
FAMILIES = [(m.__name__.split(".")[-1], f) for m in MODULES for f in m.FAMILIES]


@pytest.mark.parametrize("fam", [f for _, f in FAMILIES], ids=[f.name for _, f in FAMILIES])
def test_every_version_matches_reference(fam):
    versions = [v for v in fam.versions if v != "torch_mm"]  # torch is not ours to check here
    checks = fam.validate(fam.check_shapes, fam.dtypes, versions)
    bad = [f"{c.version} {c.shape} {c.dtype}: {c.error}" for c in checks if not c.ok]
    assert not bad, "\n".join(bad)
    assert len(checks) == len(versions) * len(fam.check_shapes) * len(fam.dtypes)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_family_attribute_contract(module):
    for fam in module.FAMILIES:
        assert isinstance(fam, KernelFamily)
        assert fam.sweep_shapes and fam.dtypes and fam.versions


def test_matmul_sweep_holds_network_shapes():
    nn = {f.name: f for f in matmul.FAMILIES}["matmul_nn"].sweep_shapes
    for shape in [(1024, 1024, 1024), (60000, 784, 10), (10, 784, 30), (128, 784, 128),
                  (256, 1024, 1024)]:
        assert shape in nn
    assert (784, 60000, 10) in {f.name: f for f in matmul.FAMILIES}["matmul_tn"].sweep_shapes


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("form", ["nn", "nt", "tn"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 33, 257), (257, 1, 7), (130, 257, 31), (5, 300, 70)])
def test_matmul_forms_with_out(form, shape, parallel):
    m, k, n = shape
    rng = np.random.default_rng(1)
    a = rng.standard_normal((k, m) if form == "tn" else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if form == "nt" else (k, n)).astype(np.float32)
    want = {"nn": lambda: a @ b, "nt": lambda: a @ b.T, "tn": lambda: a.T @ b}[form]()
    fn = {"nn": matmul.matmul, "nt": matmul.matmul_nt, "tn": matmul.matmul_tn}[form]
    flat = np.full(m * n + 3, np.nan, np.float32)
    out = flat[2:2 + m * n].reshape(m, n)  # a view into a larger buffer, like the gradient views
    assert fn(a, b, out=out, parallel=parallel) is out
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    assert np.isnan(flat[:2]).all() and np.isnan(flat[-1])  # nothing written outside out


def test_matmul_zero_depth_gives_zeros():
    out = matmul.matmul(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32))
    assert out.shape == (3, 4) and not out.any()


@pytest.mark.parametrize("m,n", [(200, 200), (8, 300)])  # shapes of either loop nest
@pytest.mark.parametrize("driver", ["serial", "parallel"])
def test_packed_driver_zero_depth_clears_c(driver, m, n):
    c = np.full((m, n), np.nan, np.float32)
    matmul._f32[driver](np.zeros((m, 0), np.float32), False, np.zeros((0, n), np.float32), False, c, True)
    assert not c.any()


def _function_ir(cres):
    """The optimised LLVM IR of one compiled signature's own function (not its wrappers)."""
    import re
    return re.search(r"define[^\n]*@" + re.escape(cres.fndesc.mangled_name) + r"\(.*?\n}\n",
                     cres.library.get_llvm_str(), re.S).group(0)


def _refcount_calls(dispatcher):
    """NRT_incref / NRT_decref calls in the bodies of a dispatcher's compiled signatures."""
    bodies = [_function_ir(cres) for cres in dispatcher.overloads.values()]
    return sum(body.count("@NRT_incref(") + body.count("@NRT_decref(") for body in bodies)


def test_per_tile_functions_run_without_reference_counting():
    # compiled here, not loaded from the disk cache (which keeps no IR), by a
    # product with whole and edge tiles, packed on first use and from packed panels
    built = matmul.build(matmul.TILE, "_refcount_check", cache=False)
    a, b, c = np.ones((70, 300), np.float32), np.ones((300, 150), np.float32), np.empty((70, 150), np.float32)
    built["serial"](a, False, b, False, c, False)
    np.testing.assert_array_equal(c, 300)
    pieces = built["pieces"]
    for name in ("_micro", "_block"):
        assert pieces[name].overloads, name
        assert _refcount_calls(pieces[name]) == 0, name
    # and the check itself sees the reference counts of a function that has them
    assert _refcount_calls(pieces["_task"]) > 0
    from mnist_numba_bench.kernels import fused_epoch
    for name in ("_strided_tile", "_ten_rows_times_batch", "_weight_grad_panels", "_dot_rows_t", "_dot_rows_nt",
                 "_axpy_rows_t", "_hidden_backward_rows", "_hidden_backward_panels", "_sigmoid_layer_backward"):
        assert getattr(fused_epoch, name).targetoptions.get("_nrt") is False, name
    from mnist_numba_bench.kernels import backprop
    assert backprop.bias_act_span.targetoptions.get("_nrt") is False


def test_rows_contiguous_is_a_constant_for_c_layout():
    from numba import njit as plain_njit

    from mnist_numba_bench.kernels._numba import rows_contiguous
    check = plain_njit(lambda x: rows_contiguous(x))
    a = np.ones((6, 8), np.float32)
    assert check(a) and check(a[:, :3]) and not check(a[:, ::2])
    layouts = {sig[0].layout: _function_ir(check.overloads[sig]) for sig in check.signatures}
    assert set(layouts) == {"C", "A"}
    # the C-layout answer is folded: no stride is read or compared
    assert "icmp" not in layouts["C"] and "icmp" in layouts["A"]


@pytest.mark.parametrize("strided", [False, True])
def test_micro_tile_into_rows_and_into_strided_c(strided):
    # the tile's two paths: straight into C's rows, and through the stack tile
    # for a C whose items are not adjacent (only reachable from compiled callers)
    mr, nr, kc = matmul.MR, matmul.NR, 37
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((mr, kc)).astype(np.float32), rng.standard_normal((kc, nr)).astype(np.float32)
    ap, bp = np.ascontiguousarray(a.T).ravel(), b.ravel().copy()  # the packed panels
    big = np.full((mr + 2, 2 * (nr + 3)), np.nan, np.float32)
    c = big[:, ::2] if strided else big[:, :nr + 3]
    c[1:1 + mr, 2:2 + nr] = 1
    micro = matmul._f32["pieces"]["_micro"]
    micro(ap, 0, bp, 0, kc, c, 1, 2, True)
    np.testing.assert_allclose(c[1:1 + mr, 2:2 + nr], 1 + a @ b, rtol=1e-5, atol=1e-5)
    micro(ap, 0, bp, 0, kc, c, 1, 2, False)
    np.testing.assert_allclose(c[1:1 + mr, 2:2 + nr], a @ b, rtol=1e-5, atol=1e-5)
    assert np.isnan(c[0]).all() and np.isnan(c[:, :2]).all()


@pytest.mark.parametrize("bad,match", [
    (lambda a, b: (a[:, ::2], b[:392]), "C-contiguous"),
    (lambda a, b: (a, b[:100]), "inner dimensions"),
    (lambda a, b: (a, b.astype(np.float64)), "float32 or both float64"),
    (lambda a, b: (a.astype(np.int32), b.astype(np.int32)), "float32 or both float64"),
    (lambda a, b: (a[0], b), "2-D"),
])
def test_matmul_bad_input_is_a_clear_error(bad, match):
    a, b = np.ones((4, 784), np.float32), np.ones((784, 10), np.float32)
    with pytest.raises(ValueError, match=match):
        matmul.matmul(*bad(a, b))


def test_matmul_wrong_out_is_refused():
    a, b = np.ones((4, 8), np.float32), np.ones((8, 3), np.float32)
    for out in (np.empty((3, 4), np.float32), np.empty((4, 3), np.float64),
                np.empty((3, 4), np.float32).T):
        with pytest.raises(ValueError, match="out must be"):
            matmul.matmul(a, b, out=out)


@pytest.mark.parametrize("kernel", [backprop.softmax_xent_serial, backprop.softmax_xent_parallel])
def test_softmax_cross_entropy_is_stable_for_huge_logits(kernel):
    logits = np.array([[1e4, 0, -1e4], [-3e4, -3e4 + 1, -3e4]], np.float32)
    grad = np.empty_like(logits)
    loss = kernel(logits, np.array([0, 2]), grad)
    # row 0: certain and right, loss 0; row 1: -log(1 / (2 + e)) with the label on a 0-logit
    np.testing.assert_allclose(loss, np.log(2 + np.e) / 2, rtol=1e-6)
    p1 = np.array([1, np.e, 1]) / (2 + np.e)
    np.testing.assert_allclose(grad, np.array([[0, 0, 0], p1 - [0, 0, 1]]) / 2, atol=1e-7)


def test_softmax_cross_entropy_refuses_out_of_range_labels():
    with pytest.raises(ValueError, match="label"):
        backprop.softmax_xent_serial(np.zeros((2, 3), np.float32), np.array([0, 3]),
                                     np.empty((2, 3), np.float32))


@pytest.mark.parametrize("key", [0, 1, 2 ** 32 - 1, 2 ** 40 + 5])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5, 0.9])
def test_dropout_mask_is_the_suites_mask_bit_for_bit(rate, key):
    from mnist_numba_bench.models.ops import dropout_keep_mask
    x = np.ones((33, 257), np.float32)
    y, mask = np.empty_like(x), np.empty_like(x)
    base, threshold = backprop.dropout_constants(rate, key)
    backprop.dropout_parallel(x.ravel(), y.ravel(), mask.ravel(), base, threshold,
                              np.float32(1 / (1 - rate)))
    np.testing.assert_array_equal(mask != 0, dropout_keep_mask(x.shape, rate, key))


def test_adam_matches_torch_optim_adam():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(1001).astype(np.float32)
    grads = [rng.standard_normal(1001).astype(np.float32) for _ in range(4)]
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.Adam([tp], lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    for step, g in enumerate(grads, 1):
        update.adam_parallel(p, g, m, v, step, 1e-3, 0.9, 0.999, 1e-8)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=1e-6)


def test_conv_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="same C"):
        conv.conv2d(np.zeros((1, 2, 5, 5), np.float32), np.zeros((1, 3, 3, 3), np.float32),
                    np.zeros(1, np.float32))


@pytest.mark.parametrize("parallel", [False, True])
def test_conv_weight_gradient_stays_accurate_over_a_full_batch(parallel):
    # cnn's first layer at batch 256 sums 147,456 products per weight: the float32 sums
    # must stay as accurate as BLAS's blocked ones (the check_shapes are far smaller).
    rng = np.random.default_rng(0)
    x = rng.random((256, 1, 28, 28), dtype=np.float32)
    w = rng.standard_normal((32, 1, 5, 5)).astype(np.float32)
    dy = (rng.standard_normal((256, 32, 24, 24)) + 0.5).astype(np.float32)
    dw, db = np.empty_like(w), np.empty(32, np.float32)
    conv.conv2d_backward(x, w, dy, dw, db, need_dx=False, parallel=parallel)
    windows = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), (24, 24), axis=(2, 3))
    want_dw = np.einsum("nfij,ncuvij->fcuv", dy.astype(np.float64), windows, optimize=True)
    want_db = dy.astype(np.float64).sum(axis=(0, 2, 3))
    assert np.max(np.abs(dw - want_dw)) / np.max(np.abs(want_dw)) < 1e-6
    assert np.max(np.abs(db - want_db)) / np.max(np.abs(want_db)) < 1e-6


@pytest.mark.parametrize("tile", [dict(MR=4, NR=16), dict(MR=7, NR=48), dict(MR=13, NR=32), dict(MR=6, NR=64)],
                         ids=lambda t: f"{t['MR']}x{t['NR']}")
def test_implicit_conv_matches_reference_for_every_tile_the_tuner_may_pick(tile):
    # the implicit GEMM pads rows to MR and filters to NR: each geometry pads
    # differently (F = 33 and 70 straddle tiles; 3·9·9 pixels are not whole tiles)
    tile = conv.table_tile(tile)  # (the height the backends' kernels take for it)
    suffix = f"_test_{tile['MR']}x{tile['NR']}"
    kernels, _ = conv._build_implicit(tile, suffix)
    pack = matmul.build(dict(matmul.TILE, **tile), suffix)["pieces"]  # its packing only reads MR, NR
    rng = np.random.default_rng(1)
    for n, c, h, f, k in [(3, 5, 11, 33, 3), (2, 3, 8, 70, 2), (1, 1, 6, 1, 6)]:
        x = rng.standard_normal((n, c, h, h))
        w = rng.standard_normal((f, c, k, k))
        b = rng.standard_normal(f)
        oh = h - k + 1
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
        want_y = np.einsum("ncijuv,fcuv->nfij", windows, w) + b[None, :, None, None]
        dy = rng.standard_normal(want_y.shape)
        want_dw = np.einsum("nfij,ncijuv->fcuv", dy, windows)
        taps = conv._tap_offsets(c, h, h, k, k, tile["MR"])
        y = np.empty_like(want_y)
        kernels["_implicit_forward"](x, conv._pack_weights(w.reshape(f, -1), tile["NR"], pack), b, y,
                                     conv._tap_offsets(c, h, h, k, k, 1),
                                     conv._pixel_offsets(x.shape, oh, oh, tile["MR"]), 1)
        part = np.empty((2, taps.size, conv._padded(f, tile["NR"])))
        part_db = np.empty((2, f))
        kernels["_implicit_weight_grad"](x, dy, taps, conv._pixel_offsets(x.shape, oh, oh, 0), part, part_db)
        dx = np.empty_like(x)
        kernels["_implicit_input_grad"](conv._pack_weights_t(w.reshape(f, -1), taps.size, tile["MR"]), dy, k, k, dx, 1)
        want_dx = np.zeros_like(x)
        for i in range(k):
            for j in range(k):
                want_dx[:, :, i:i + oh, j:j + oh] += np.einsum("nfuv,fc->ncuv", dy, w[:, :, i, j])
        np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(part.sum(axis=0)[:c * k * k, :f].T.reshape(w.shape), want_dw, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(part_db.sum(axis=0), dy.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dx, want_dx, rtol=1e-10, atol=1e-10)


MICRO_KERNEL_ASM = os.path.join(os.path.dirname(__file__), "helpers", "micro_kernel_asm.py")


def _asm_report(script, cpu_name, tmp_path):
    """The JSON a helper script prints about the assembly it compiles, run in a
    fresh process with an empty cache (Numba shows no assembly of cached code),
    for the host or for the LLVM CPU ``cpu_name``."""
    env = dict(os.environ, MNIST_BENCH_CACHE=str(tmp_path))
    env.pop("NUMBA_CPU_FEATURES", None)
    if cpu_name:
        env["NUMBA_CPU_NAME"] = cpu_name
    else:
        env.pop("NUMBA_CPU_NAME", None)
    run = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.parametrize("cpu_name", [None, "haswell"], ids=["host", "avx2-haswell"])
def test_micro_kernel_depth_loop_is_full_width_fmas_without_spills(cpu_name, tmp_path):
    got = _asm_report(MICRO_KERNEL_ASM, cpu_name, tmp_path)
    if cpu_name:
        assert got["cpu_name"] == cpu_name and got["isa"] == "avx2"
    register = {512: "zmm", 256: "ymm", 128: "xmm"}[got["vector_bits"]]
    accumulators = got["MR"] * got["NR"] * 32 // got["vector_bits"]
    assert got["loops"], "no depth loop with FMAs found in the micro-kernel"
    for loop in got["loops"]:
        # every accumulator updated by one FMA per depth step, on the full vector width
        assert loop["fmas"] % accumulators == 0, loop
        assert loop["registers"] == [register], loop
        assert loop["stack_moves"] == [], f"accumulators spilled: {loop['stack_moves'][:4]}"


TABLE_KERNEL_ASM = os.path.join(os.path.dirname(__file__), "helpers", "table_kernel_asm.py")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
@pytest.mark.parametrize("cpu_name", [None, "haswell"], ids=["host", "avx2-haswell"])
def test_implicit_conv_depth_loop_keeps_its_registers_for_every_tile_the_tuner_may_pick(cpu_name, tmp_path):
    # the table kernel holds a pointer per row: a tall matmul tile (13 x 32,
    # derived for AVX-512) spilled its accumulators until table_tile cut it
    got = _asm_report(TABLE_KERNEL_ASM, cpu_name, tmp_path)
    assert got["tiles"]
    for tile in got["tiles"]:
        assert tile["MR"] <= got["table_max_rows"], tile
        loop = tile["depth_loop"]
        assert loop, f"no depth loop with FMAs found for {tile}"
        assert loop["fmas"] % (tile["MR"] * tile["NR"] * 32 // got["vector_bits"]) == 0, tile
        assert loop["stack_moves"] == [], f"{tile['given']} -> {tile['MR']} x {tile['NR']}: {loop['stack_moves'][:4]}"


# (m, k, n, a stored transposed, b stored transposed, the route): each of the shape
# dispatch's kernels, large enough for the parallel path (PARALLEL_MIN_WORK)
ROUTES = [(2000, 200, 10, True, False, matmul.NARROW_TN), (2000, 200, 10, True, True, matmul.NARROW_TN),
          (20000, 50, 10, False, False, matmul.NARROW_AXPY), (2000, 784, 10, False, False, matmul.NARROW_DOT),
          (2000, 784, 10, False, True, matmul.NARROW_DOT),
          (200, 4 * matmul.KC, 10, True, False, matmul.PACKED_SWAPPED),
          (200, 300, 200, False, True, matmul.PACKED), (200, 300, 200, True, False, matmul.PACKED)]


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("m,k,n,ta,tb,expected", ROUTES)
def test_every_route_from_python_and_from_compiled_code(m, k, n, ta, tb, expected, parallel):
    """The Python dispatch (a run compiles only the kernels its shapes take) and
    the compiled one (_gemm, for compiled callers) take the same kernel for a
    shape and agree with NumPy."""
    assert matmul.route(m, k, n, ta, tb, matmul.KC) == expected
    rng = np.random.default_rng(m + k + n)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    want = (a.T if ta else a) @ (b.T if tb else b)
    got = np.full((m, n), np.nan, np.float32)
    matmul.gemm_views(a.T if ta else a, b.T if tb else b, got, parallel)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.sqrt(k))
    compiled = np.full((m, n), np.nan, np.float32)
    matmul.gemm(a, ta, b, tb, compiled, parallel)
    np.testing.assert_allclose(compiled, want, rtol=1e-4, atol=1e-3 * np.sqrt(k))


CACHED_CALLER = '''
import sys
import numpy as np
from numba import prange
from mnist_numba_bench.kernels._numba import njit, njit_parallel


@njit_parallel
def double(x):
    for i in prange(x.size):
        x[i] *= 2.0


@njit
def caller(x):
    double(x)
    return x.sum()


x = np.ones(1000)
if sys.argv[1] == "parallel-only":
    double(x)
else:
    print(caller(x), sum(caller.stats.cache_hits.values()))
'''


def test_serial_caller_of_a_cached_parallel_kernel_loads_from_cache(tmp_path):
    """A parallel kernel compiled (and cached) on its own by one process, a serial
    caller compiled against the cached kernel by the next, the caller loaded from
    the cache by a third: Numba alone segfaults there (the caller calls the
    thread pool before anything starts it); importing the kernels starts it."""
    script = tmp_path / "cached_caller.py"
    script.write_text(CACHED_CALLER)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    runs = [subprocess.run([sys.executable, str(script), arg], env=env, capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
            for arg in ("parallel-only", "caller", "caller")]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    total, hits = runs[2].stdout.split()
    assert float(total) == 2000.0
    assert int(hits) >= 1  # the third process did load the caller from the cache


def test_float32_exp_is_accurate_and_keeps_nan():
    # the sigmoid's and the softmax's exp (a polynomial, so their loops vectorise)
    from mnist_numba_bench.kernels._numba import njit

    @njit
    def exps(x, out):
        for i in range(x.size):
            out[i] = backprop.exp_nonpositive(x[i])

    x = np.concatenate([np.linspace(-87, 0, 200_001), [np.nan, -np.inf, -90.0]]).astype(np.float32)
    got = np.empty_like(x)
    exps(x, got)
    want = np.exp(x[:-3].astype(np.float64))
    assert np.max(np.abs(got[:-3] - want) / want) < 1e-6
    assert np.isnan(got[-3]) and got[-2] == 0 and got[-1] == 0
    z = np.array([[np.nan, 50.0, -50.0, 0.0]], np.float32)
    backprop.bias_act_serial(z, np.zeros(4, np.float32), backprop.ACT["sigmoid"])
    assert np.isnan(z[0, 0]) and z[0, 1] == 1 and 0 < z[0, 2] < 1e-21 and z[0, 3] == 0.5
