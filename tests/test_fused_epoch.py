"""The fused epoch's transposed first-layer kernels against NumPy on odd shapes, and the
working-layout round trip of every flat buffer under each optimizer."""
import numpy as np
import pytest

from mnist_numba_bench.kernels import fused_epoch as fe

SHAPES = [(1, 1, 1), (7, 33, 5), (10, 784, 30), (33, 257, 7), (3, 5, 257)]


@pytest.mark.parametrize("m,k,h", SHAPES)
def test_dot_rows_t_matches_numpy(m, k, h):
    rng = np.random.default_rng(m * k * h)
    x = rng.standard_normal((m + 4, k)).astype(np.float32)
    rows = rng.permutation(m + 4)[:m]  # scattered rows, read in place
    wt = rng.standard_normal((h, k)).astype(np.float32)
    z = np.full((m, h), np.nan, np.float32)
    fe._dot_rows_t(x, rows, wt, z)
    np.testing.assert_allclose(z, x[rows] @ wt.T, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("lr", [0.0, 0.25])
@pytest.mark.parametrize("m,k,h", SHAPES + [(10, 784, 30), (15, 33, 3), (20, 7, 2)])
def test_axpy_rows_t_matches_numpy(m, k, h, lr):
    """The weight gradient, and with lr > 0 the plain-SGD step taken in the same
    pass (the weights untouched at lr 0)."""
    rng = np.random.default_rng(m + k + h)
    x = rng.standard_normal((m + 4, k)).astype(np.float32)
    rows = rng.permutation(m + 4)[:m]
    d = rng.standard_normal((m, h)).astype(np.float32)
    gt = np.full((h, k), np.nan, np.float32)  # stale contents must not leak into the sum
    wt = rng.standard_normal((h, k)).astype(np.float32)
    before = wt.copy()
    fe._axpy_rows_t(d, x, rows, gt, wt, lr)
    want = (x[rows].T @ d).T
    np.testing.assert_allclose(gt, want, rtol=1e-4, atol=1e-4 * np.sqrt(m))
    np.testing.assert_allclose(wt, before - np.float32(lr) * want, rtol=1e-4, atol=1e-4 * np.sqrt(m))


def test_transpose_block_round_trip():
    rng = np.random.default_rng(0)
    buf = rng.standard_normal(4 + 7 * 3 + 5).astype(np.float32)
    orig = buf.copy()
    fe._transpose_block(buf, 4, 7, 3)
    np.testing.assert_array_equal(buf[4:25].reshape(3, 7), orig[4:25].reshape(7, 3).T)
    np.testing.assert_array_equal(buf[:4], orig[:4])
    np.testing.assert_array_equal(buf[25:], orig[25:])
    fe._transpose_block(buf, 4, 3, 7)
    np.testing.assert_array_equal(buf, orig)


@pytest.mark.parametrize("overrides", [{"optimizer": "momentum", "lr": 0.5},
                                       {"optimizer": "adam", "lr": 1e-3, "eps": 1e-4}],
                         ids=["momentum", "adam"])
def test_fused_nielsen_with_optimizer_state_matches_numpy(overrides):
    """Optimizer state is permuted into the working layout and back each epoch; over two
    epochs (state carried across the round trip) the weights must equal numpy's."""
    from mnist_numba_bench.models import config_for, get_network
    net = get_network("nielsen")
    config = dict(config_for(net), batch_size=7, beta=0.9, beta1=0.9, beta2=0.999, eps=1e-8)
    config.update(overrides)
    (want, init), got, _ = numpy_and_fused(net, config, 40, rtol=1e-4)
    for k in want:
        moved = np.abs(want[k] - init[k]).max()
        assert moved > 0
        np.testing.assert_allclose(got[k], want[k], atol=1e-3 * moved)


def test_fused_full_batch_linear_over_several_epochs():
    """Full-batch gradient descent uses the rows in place; two epochs equal numpy's."""
    from mnist_numba_bench.models import config_for, get_network
    net = get_network("linear")
    (want, _), got, (x, trainers) = numpy_and_fused(net, config_for(net), 50, rtol=1e-5)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)
    np.testing.assert_allclose(trainers[1].predict(x), trainers[0].predict(x), atol=1e-5)


def numpy_and_fused(net, config, n, rtol, epochs=2):
    """numpy's and numba-fused's trainers side by side over ``epochs`` epochs of n
    validation images, their losses equal to ``rtol`` every epoch: ((numpy's
    parameters, the init), numba-fused's parameters, (inputs, trainers))."""
    from mnist_numba_bench.bench.backends import get_backend
    from mnist_numba_bench.bench.validate import validation_data
    from mnist_numba_bench.models.train import epoch_batches
    x, y, _ = validation_data(net, n)
    trainers = [get_backend(b).make_trainer(net, net.init_params(0), config, 0)
                for b in ("numpy", "numba-fused")]
    for t in trainers:
        t.set_data(x, y)
    for epoch in range(epochs):
        losses = [t.train_epoch(epoch_batches(n, config["batch_size"], 0, epoch)) for t in trainers]
        np.testing.assert_allclose(losses[1], losses[0], rtol=rtol)
    return (trainers[0].params(), net.init_params(0)), trainers[1].params(), (x, trainers)


# The mlp epoch's kernels: the batch gathered from X, its products with W1's panels
# forward (the batch read along its rows) and backward (down its columns, dH's rows
# as B), no operand packed but W1; the edge tiles on every shape below.
PANEL_SHAPES = [(1, 1, 1), (7, 33, 5), (13, 784, 32), (33, 257, 7), (17, 9, 65), (96, 784, 128),
                (128, 784, 128)]


def test_tile_heights_cover_a_run_exactly():
    """The tiles down a run of rows: MR at a time, short ones (SHORT_MR) only at
    the end, together exactly the run; 128 rows on a six-row tile without a
    padded tile (twenty of six, two of four). For whatever MR the tile has (a
    derived tile is not the tuned one)."""
    def plan(left):
        heights = []
        while left:
            heights.append(int(fe._tile_height(left)))
            left -= heights[-1]
        return heights
    for left in range(1, 80):
        heights = plan(left)
        assert sum(heights) == left and all(h == fe.MMR or 0 < h <= fe.EDGE_MR for h in heights)
        whole = next((i for i, h in enumerate(heights) if h != fe.MMR), len(heights))
        tail = heights[whole:]  # short tiles only at the end, for what MR tiles leave
        assert all(h <= fe.EDGE_MR for h in tail) and sum(tail) <= max(fe.MMR - 1, 2 * fe.EDGE_MR)
    if fe.MMR == 6 and fe.SHORT_MR == 4:
        assert plan(128) == [6] * 20 + [4, 4] and plan(784) == [6] * 130 + [4]


@pytest.mark.parametrize("parallel,threads", [(False, 1), (True, 1), (True, 2), (True, 5)],
                         ids=["serial", "parallel-1", "parallel-2", "parallel-5"])
@pytest.mark.parametrize("n,d,h", PANEL_SHAPES)
def test_batch_panel_products_match_numpy(n, d, h, parallel, threads):
    mr, nr = fe.MMR, fe.MNR
    rng = np.random.default_rng(n * 1000 + d + h)
    x = rng.standard_normal((n + 5, d)).astype(np.float32)
    order = rng.permutation(n + 5).astype(np.int64)
    lo = 3  # the batch starts part-way into the order
    rows = order[lo:lo + n]
    # the slack rows hold NaN: a product that used them would show it
    x_buf = np.full(((-(-n // mr) + 1) * mr, d), np.nan, np.float32)
    fe._batch_rows(x, order, lo, lo + n, False, x_buf)
    np.testing.assert_array_equal(x_buf[:n], x[rows])
    xb = x_buf.ravel()
    panels = -(-h // nr)
    w = rng.standard_normal((d, h)).astype(np.float32)
    wp = np.empty(panels * d * nr, np.float32)
    fe._to_panels(w.ravel().copy(), d, h, wp, False)
    # tasks for a pool of ``threads``: groups of panels, each split over the rows and
    # features when there are more threads than panels (5 threads: 1, 2, 3 splits)
    groups, splits = fe.task_grid(panels, threads)
    edges = np.empty((groups * splits, mr, nr), np.float32)
    # the forward pass (a group of panels for a block of rows per task) with the
    # logits in parts (one per panel), then the softmax over all rows
    act = fe.RELU if h % 2 else fe.SIGMOID
    c = 10
    hp = panels * nr
    b1 = np.zeros(hp, np.float32)
    b1[:h] = rng.standard_normal(h)
    w2t = np.zeros((c, hp), np.float32)
    w2t[:, :h] = rng.standard_normal((c, h)) / np.sqrt(h)
    w2p = np.zeros((hp, fe.LOGIT_COLS), np.float32)
    w2p[:, :c] = w2t.T
    b2 = rng.standard_normal(c).astype(np.float32)
    b2p = np.full(fe.LOGIT_COLS, -np.inf, np.float32)
    b2p[:c] = b2
    labels = rng.integers(0, c, n)
    hid = np.full((n, hp), np.nan, np.float32)
    parts = np.full((panels, n, fe.LOGIT_COLS), np.nan, np.float32)
    z = np.full((n, fe.LOGIT_COLS), np.nan, np.float32)
    dz_buf = np.zeros((n + mr, c), np.float32)
    hidden = fe._hidden_panels_parallel if parallel else fe._hidden_panels_serial
    # (with the next batch's rows, order[1:n+2], prefetched on the way)
    hidden(xb, n, d, wp, hid, panels, groups, splits, edges, b1, act, w2p, parts, x, order, 1, n + 2)
    loss = fe._logits_softmax(parts, n, b2p, labels, z, dz_buf[:n])
    z1 = x[rows].astype(np.float64) @ w + b1[:h]
    a1 = np.maximum(z1, 0) if act == fe.RELU else 1 / (1 + np.exp(-z1))
    np.testing.assert_allclose(hid[:, :h], a1, rtol=1e-4, atol=1e-4 * np.sqrt(d))
    np.testing.assert_array_equal(hid[:, h:], 0 if act == fe.RELU else 0.5)  # zero-weight padding units
    logits = a1 @ w2t[:, :h].T.astype(np.float64) + b2
    np.testing.assert_allclose(parts.sum(0)[:, :c] + b2, logits, rtol=1e-4, atol=1e-4 * np.sqrt(d))
    np.testing.assert_array_equal(parts[:, :, c:], 0)  # the padding classes
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(n), labels]).mean(), rel=1e-4, abs=1e-5)
    dz2 = (p - np.eye(c)[labels]) / n
    np.testing.assert_allclose(dz_buf[:n], dz2, rtol=1e-3, atol=1e-6)
    # the gradient pass: back through the output layer (dL/dz1 for each task's
    # panels, b1's and W2's gradients), W1's gradient and its optimizer step
    # (sgd, momentum or adam by the shape), the next batch gathered
    dh_bufs = np.full((groups * splits, n, -(-panels // groups) * nr), np.nan, np.float32)
    gw2t, gb1 = (np.full(shape, np.nan, np.float32) for shape in ((c, hp), hp))
    gp = np.full((panels * d, nr), np.nan, np.float32)
    opt = (n + d + h) % 3
    s1, s2 = (rng.random(wp.size).astype(np.float32) if k < opt else np.empty(0, np.float32)
              for k in range(2))
    hyper = (3, 0.1, 0.9, 0.9, 0.999, 1e-8)  # step, lr, beta, beta1, beta2, eps
    expected = [a.copy() for a in (wp, s1, s2)]
    backward = fe._batch_t_times_parallel if parallel else fe._batch_t_times_serial
    x_next = np.full_like(x_buf, np.nan)
    backward(xb, n, d, dh_bufs, gp, panels, groups, splits, edges, wp, s1, s2, opt, *hyper, x, order, 1, n + 2,
             x_next, dz_buf.ravel(), w2t, hid, act, gw2t, gb1)
    np.testing.assert_array_equal(x_next[:n + 1], x[order[1:n + 2]])
    assert np.isnan(x_next[n + 1:]).all()
    deriv = (a1 > 0) if act == fe.RELU else a1 * (1 - a1)
    dh = dz_buf[:n].astype(np.float64) @ w2t[:, :h] * deriv
    for task in range(groups * splits):  # each task's dL/dz1: its group's panels
        t0, t1, _, _ = fe._task_share(task, groups, splits, panels, d)
        cols = slice(t0 * nr, min(h, t1 * nr))
        np.testing.assert_allclose(dh_bufs[task, :, :cols.stop - cols.start], dh[:, cols], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(gb1[:h], dh.sum(0), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(gw2t[:, :h], (a1.T @ dz_buf[:n]).T, rtol=1e-3, atol=1e-6)
    g = np.empty(d * h, np.float32)
    fe._to_panels(g, d, h, gp.ravel(), True)
    np.testing.assert_allclose(g.reshape(d, h), x[rows].T @ dh, rtol=1e-4, atol=1e-4 * np.sqrt(n))
    # each panel stepped with its own gradient: the whole-buffer step, element for element
    fe._update(*expected[:1], gp.ravel(), *expected[1:], opt, *hyper, False)
    for got, want in zip((wp, s1, s2), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("m,h,c", [(1, 1, 1), (7, 33, 3), (128, 128, 10), (5, 17, 5)])
@pytest.mark.parametrize("act", ["sigmoid", "relu"])
def test_narrow_second_layer_kernels_match_numpy(m, h, c, act):
    rng = np.random.default_rng(m + h + c)
    hid = rng.standard_normal((m, h)).astype(np.float32)  # about half negative: ReLU mask matters
    if act == "sigmoid":
        hid = 1 / (1 + np.exp(-hid))
    w2t = rng.standard_normal((c, h)).astype(np.float32)
    d = rng.standard_normal((m, c)).astype(np.float32)
    logits, dz = (np.full(s, np.nan, np.float32) for s in ((m, c), (m, h)))
    fe._dot_rows_nt(hid, w2t, logits)
    np.testing.assert_allclose(logits, hid @ w2t.T, rtol=1e-4, atol=1e-4 * np.sqrt(h))
    fe._hidden_backward_rows(d, w2t, hid, fe.SIGMOID if act == "sigmoid" else fe.RELU, dz)
    deriv = hid * (1 - hid) if act == "sigmoid" else (hid > 0)
    np.testing.assert_allclose(dz, (d @ w2t) * deriv, rtol=1e-4, atol=1e-4 * np.sqrt(c))


@pytest.mark.parametrize("n,k,c", [(10, 30, 10), (7, 30, 10), (1, 16, 10), (12, 17, 10), (5, 33, 10),
                                   (10, 64, 10), (3, 5, 10), (7, 30, 3)])
def test_sigmoid_layer_backward_matches_numpy(n, k, c):
    """nielsen's output layer backward (W2ᵀ's gradient and dL/dz1): the
    micro-kernel's overlapping column chunks (k off a whole number of vectors),
    five-row tiles and rows left over, and the row-by-row fallback (k below a
    vector, classes other than 10)."""
    rng = np.random.default_rng(n * 100 + k + c)
    a = (1 / (1 + np.exp(-rng.standard_normal((n, k))))).astype(np.float32)
    d = rng.standard_normal((n, c)).astype(np.float32)
    w2t = rng.standard_normal((c, k)).astype(np.float32)
    g, dz = np.full((c, k), np.nan, np.float32), np.full((n, k), np.nan, np.float32)
    fe._sigmoid_layer_backward(d, a, w2t, g, dz)
    a64, d64 = a.astype(np.float64), d.astype(np.float64)
    np.testing.assert_allclose(g, d64.T @ a64, rtol=1e-5, atol=1e-5 * np.sqrt(n))
    np.testing.assert_allclose(dz, (d64 @ w2t.astype(np.float64)) * a64 * (1 - a64), rtol=1e-5,
                               atol=1e-5 * np.sqrt(c))


@pytest.mark.parametrize("model,batch_size", [("linear", 0), ("linear", 64), ("linear", 100), ("mlp", 100)],
                         ids=["linear-full-batch", "linear-bs64", "linear-bs100-short-last", "mlp-bs100-short-last"])
def test_fused_epoch_matches_numpy_and_adds_in_one_order(model, batch_size):
    """numpy's weights after two epochs, and bit-identical weights from the
    serial and the parallel build: the linear epoch splits its blocks of rows
    into a fixed number of tasks; the mlp's splits by W1's panels, and its
    logits add one part per panel in panel order (100-row batches: the mlp's
    parallel build, PARALLEL_MIN_WORK)."""
    from mnist_numba_bench.bench.backends import get_backend
    from mnist_numba_bench.bench.backends.numba_fused import NumbaFusedTrainer
    from mnist_numba_bench.bench.validate import param_error, validation_data
    from mnist_numba_bench.models import config_for, get_network
    from mnist_numba_bench.models.train import epoch_batches
    net = get_network(model)
    config = dict(config_for(net), batch_size=batch_size)
    x, y, _ = validation_data(net, 300)
    init = net.init_params(0)
    trainers = [get_backend("numpy").make_trainer(net, init, config, 0),
                NumbaFusedTrainer(net, init, config, 0, parallel=False),
                NumbaFusedTrainer(net, init, config, 0, parallel=True)]
    for t in trainers:
        t.set_data(x, y)
        for epoch in range(2):
            t.train_epoch(epoch_batches(len(x), batch_size, 0, epoch))
    want, serial, parallel = (t.params() for t in trainers)
    err, message = param_error(serial, want, init)
    assert err < 2e-3, message
    for k in want:
        np.testing.assert_array_equal(serial[k], parallel[k])


def _script_output(tmp_path, name, source, env=None):
    """The last line a Python script prints, run in a process of its own (a fresh
    compile target, cache or thread pool); its failure fails the test."""
    import subprocess
    import sys
    script = tmp_path / name
    script.write_text(source)
    run = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


ONE_BUILD = """
import json
import numpy as np
from mnist_numba_bench.bench.backends import get_backend
from mnist_numba_bench.kernels import fused_epoch as fe
from mnist_numba_bench.models import config_for, get_network
from mnist_numba_bench.models.train import epoch_batches
net = get_network("mlp")
trainer = get_backend("numba-fused").make_trainer(net, net.init_params(0), config_for(net, {"batch_size": 8}), 0)
rng = np.random.default_rng(0)
trainer.set_data(rng.random((32, 784), dtype=np.float32), rng.integers(0, 10, 32))
trainer.train_epoch(epoch_batches(32, 8, 0, 0))
print(json.dumps({par: len(fe._TWO_LAYER_STEPS[par].signatures) for par in (False, True)}))
"""


def test_fused_mlp_compiles_only_the_build_a_run_uses(tmp_path):
    """Batches of 8 rows are too small for the thread pool: the run takes the
    serial build, and the parallel one (the larger compile) never compiles."""
    import json
    assert json.loads(_script_output(tmp_path, "one_build.py", ONE_BUILD)) == {"false": 1, "true": 0}


FRESH_OR_CACHED = """
import hashlib
import numpy as np
from mnist_numba_bench.bench.backends import get_backend
from mnist_numba_bench.models import config_for, get_network
net = get_network("mlp")
trainer = get_backend("numba-fused").make_trainer(net, net.init_params(0), config_for(net, {"batch_size": 104}), 0)
rng = np.random.default_rng(0)
trainer.set_data(rng.random((137, 784), dtype=np.float32), rng.integers(0, 10, 137))
order = rng.permutation(137)
trainer.train_epoch([order[:104], order[104:]])  # a short batch: loops over rows end part-way
print(hashlib.sha256(trainer.flat.tobytes()).hexdigest())
"""


def test_fused_mlp_weights_are_the_same_compiled_or_loaded_from_the_cache(tmp_path):
    """The same epoch in a process that compiles the kernels and in one that loads
    them from Numba's cache: bit-identical weights. (Reductions compiled with
    reassociation allowed took their sums in a different order once inlined
    differently, and the loaded code disagreed with the freshly compiled one.)"""
    import os
    env = dict(os.environ, MNIST_BENCH_CACHE=str(tmp_path / "cache"), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    compiled, loaded = (_script_output(tmp_path, "fresh_or_cached.py", FRESH_OR_CACHED, env) for _ in range(2))
    assert compiled == loaded


@pytest.mark.parametrize("rows", [1, 3, 7, 23, 64])
def test_linear_rows_match_numpy(rows):
    """One block of the fused linear epoch (its ten classes; five rows x five
    classes a pass, dot products for the rows left over): loss, weight and bias
    gradients against NumPy."""
    classes = 10
    rng = np.random.default_rng(rows * classes)
    d = 37
    x = rng.standard_normal((rows + 3, d)).astype(np.float32)
    wt = (rng.standard_normal((classes, d)) * 0.3).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    labels = rng.integers(0, classes, rows + 3)
    scale = np.float32(1.0 / rows)
    g = np.zeros((classes, d), np.float32)
    gb = np.zeros(classes, np.float32)
    loss = fe._linear_rows(x, 2, 2 + rows, wt, b, labels, scale, g, gb, np.arange(len(x)))
    xb, yb = x[2:2 + rows].astype(np.float64), labels[2:2 + rows]
    z = xb @ wt.T.astype(np.float64) + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want_loss = -np.log(p[np.arange(rows), yb]).sum()
    dl = p.copy()
    dl[np.arange(rows), yb] -= 1
    dl *= float(scale)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
    np.testing.assert_allclose(g, dl.T @ xb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gb, dl.sum(0), rtol=1e-4, atol=1e-6)


def test_ten_row_tile_refuses_rows_that_are_not_one_block():
    """The weight-gradient tile reads the batch flat: a strided view (every other
    column here) is refused with a clear error rather than read wrong."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 66)).astype(np.float32)
    dl = rng.standard_normal((7, 10)).astype(np.float32)
    c = np.zeros((10, 33), np.float32)
    with pytest.raises(ValueError, match="contiguous block"):
        fe._ten_rows_times_batch(dl.ravel(), 0, x[:, ::2], c, 0, False, x, np.zeros(0, np.int64))
    fe._ten_rows_times_batch(dl.ravel(), 0, np.ascontiguousarray(x[:, ::2]), c, 0, False, x, np.array([6, 0]))
    np.testing.assert_allclose(c, dl.T @ x[:, ::2], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("m,d,h", [(1, 5, 10), (7, 37, 20), (10, 784, 30), (13, 100, 10)])
def test_weight_grad_panels_match_numpy(m, d, h, accumulate):
    """nielsen's first-layer weight gradient through the micro-kernel's depth
    loop: the gradient (scale 1, stored), and plain SGD's step (scale -lr, added
    to the weights), on batches and widths off the tiles' sizes."""
    rng = np.random.default_rng(m * d + h)
    dz = rng.standard_normal((m, h)).astype(np.float32)
    xb = rng.standard_normal((m, d)).astype(np.float32)
    gt = rng.standard_normal((h, d)).astype(np.float32)
    before = gt.copy()
    scale = -0.3 if accumulate else 1.0
    ahead = rng.standard_normal((m + 3, d)).astype(np.float32)  # rows the next step wants, asked for
    fe._weight_grad_panels(dz, xb, gt, np.empty(m * h, np.float32), scale, accumulate, ahead,
                           rng.permutation(m + 3)[:m])
    want = scale * (xb.T.astype(np.float64) @ dz).T + (before if accumulate else 0)
    np.testing.assert_allclose(gt, want, rtol=1e-4, atol=1e-4 * np.sqrt(m))


TEN_ROWS_ON_AVX2 = '''
import json
import numpy as np
from mnist_numba_bench.kernels import fused_epoch as fe
from mnist_numba_bench.kernels._numba import TARGET
worst = 0.0
for m, d in [(1, 1), (7, 33), (10, 784), (64, 784), (13, 100)]:
    rng = np.random.default_rng(m * 1000 + d)
    xb = rng.standard_normal((m, d)).astype(np.float32)
    dl = rng.standard_normal((m, 10)).astype(np.float32)
    c = rng.standard_normal((10, d)).astype(np.float32)
    want = c + dl.T.astype(np.float64) @ xb
    fe._ten_rows_times_batch(dl.ravel(), 0, xb, c, 0, True, xb, np.arange(m // 2, m))  # some rows ahead
    worst = max(worst, float(np.abs(c - want).max() / (1 + np.abs(want).max())))
for rows in (1, 4, 5, 7, 64, 65):  # the logits' five-row tiles and rows left over
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows + 3, 37)).astype(np.float32)
    wt = (rng.standard_normal((10, 37)) * 0.3).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    labels = rng.integers(0, 10, rows + 3)
    g, gb = np.zeros((10, 37), np.float32), np.zeros(10, np.float32)
    loss = fe._linear_rows(x, 2, 2 + rows, wt, b, labels, np.float32(1.0 / rows), g, gb, np.arange(len(x)))
    xb, yb = x[2:2 + rows].astype(np.float64), labels[2:2 + rows]
    z = xb @ wt.T.astype(np.float64) + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    dl = p.copy()
    dl[np.arange(rows), yb] -= 1
    dl /= rows
    worst = max(worst, abs(loss + np.log(p[np.arange(rows), yb]).sum()) / rows,
                float(np.abs(g - dl.T @ xb).max()), float(np.abs(gb - dl.sum(0)).max()))
for m, h in [(1, 30), (5, 30), (7, 31), (10, 30), (12, 3)]:  # nielsen's forward: tiles and leftovers
    rng = np.random.default_rng(m * 100 + h)
    x = rng.standard_normal((40, 37)).astype(np.float32)
    rows = rng.permutation(40)[:m]
    wt = rng.standard_normal((h, 37)).astype(np.float32)
    z = np.empty((m, h), np.float32)
    fe._dot_rows_t(x, rows, wt, z)
    want = x[rows].astype(np.float64) @ wt.T.astype(np.float64)
    worst = max(worst, float(np.abs(z - want).max() / (1 + np.abs(want).max())))
for n, k in [(10, 30), (7, 30), (1, 8), (12, 17), (5, 33)]:  # nielsen's output layer backward
    rng = np.random.default_rng(n * 100 + k)
    a = (1 / (1 + np.exp(-rng.standard_normal((n, k))))).astype(np.float32)
    d = rng.standard_normal((n, 10)).astype(np.float32)
    w2t = rng.standard_normal((10, k)).astype(np.float32)
    g, dz = np.full((10, k), np.nan, np.float32), np.full((n, k), np.nan, np.float32)
    fe._sigmoid_layer_backward(d, a, w2t, g, dz)
    a64, d64 = a.astype(np.float64), d.astype(np.float64)
    worst = max(worst, float(np.abs(g - d64.T @ a64).max()),
                float(np.abs(dz - (d64 @ w2t.astype(np.float64)) * a64 * (1 - a64)).max()))
print(json.dumps({"isa": TARGET["isa"], "wide": bool(fe.WIDE_REGISTERS), "dot_cols": fe.DOT_COLS,
                  "worst": worst}))
'''


def test_linear_and_nielsen_tiles_on_the_avx2_path(tmp_path):
    """The fused linear and nielsen weight-gradient tile, the linear block (its
    loss, logits five rows x two classes, gradients), nielsen's output layer
    backward and its forward dot
    products as compiled for AVX2 (16 registers), in a process compiling for
    Haswell, against NumPy on odd shapes."""
    import json
    import os
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", MNIST_BENCH_CACHE=str(tmp_path))
    env.pop("NUMBA_CPU_FEATURES", None)
    got = json.loads(_script_output(tmp_path, "ten_rows.py", TEN_ROWS_ON_AVX2, env))
    assert got["isa"] == "avx2" and not got["wide"] and got["dot_cols"] == 2
    assert got["worst"] < 1e-5


@pytest.mark.parametrize("n", [1, 5, 7, 128])
@pytest.mark.parametrize("act", ["sigmoid", "relu"])
@pytest.mark.parametrize("panels", [(0, 2), (1, 2), (2, 3)], ids=["first-two", "middle", "last"])
def test_hidden_backward_panels_match_numpy(n, act, panels):
    """mlp's dL/dz1 for a group of panels (hidden units c0:c1, of three panels)
    through the micro-kernel (dL/dz2's rows in place, edge rows through the tile;
    the slack rows hold NaN, which an edge that kept them would show) against
    NumPy, with either activation's derivative, and b1's gradient for them."""
    mr, nr = fe.MMR, fe.MNR
    hp = 3 * nr
    c0, c1 = panels[0] * nr, panels[1] * nr
    rng = np.random.default_rng(n)
    dz = np.full((n + mr, 10), np.nan, np.float32)
    dz[:n] = rng.standard_normal((n, 10))
    w2t = rng.standard_normal((10, hp)).astype(np.float32)
    a = rng.random((n, hp), dtype=np.float32) - (0.5 if act == "relu" else 0.0)
    out = np.full((n, c1 - c0 + nr), np.nan, np.float32)  # wider than the group: the rest left alone
    gb = np.full(hp, np.nan, np.float32)
    code = fe.SIGMOID if act == "sigmoid" else fe.RELU
    fe._hidden_backward_panels(dz.ravel(), n, w2t, c0, c1, a, code, out, np.empty((mr, nr), np.float32), gb, True)
    grad = dz[:n].astype(np.float64) @ w2t[:, c0:c1]
    want = grad * a[:, c0:c1] * (1 - a[:, c0:c1]) if act == "sigmoid" else grad * (a[:, c0:c1] > 0)
    np.testing.assert_allclose(out[:, :c1 - c0], want, rtol=1e-5, atol=1e-5)
    assert np.isnan(out[:, c1 - c0:]).all()
    np.testing.assert_allclose(gb[c0:c1], want.sum(0), rtol=1e-4, atol=1e-5)
    assert np.isnan(gb[:c0]).all() and np.isnan(gb[c1:]).all()


def test_mlp_fused_epoch_refuses_a_label_outside_the_classes():
    from mnist_numba_bench.bench.backends import get_backend
    from mnist_numba_bench.models import config_for, get_network
    from mnist_numba_bench.models.train import epoch_batches
    net = get_network("mlp")
    trainer = get_backend("numba-fused").make_trainer(net, net.init_params(0), config_for(net, {}), 0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 64)
    labels[17] = 10  # the kernels index a row of ten by it
    trainer.set_data(rng.random((64, 784), dtype=np.float32), labels)
    with pytest.raises(ValueError, match="outside"):
        trainer.train_epoch(epoch_batches(64, 16, 0, 0))
