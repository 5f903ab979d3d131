"""Every op's gradient, and every network's backprop, against central finite
differences in float64 (the NumPy reference ops, which every backend must match)."""
import numpy as np
import pytest

from mnist_numba_bench.models.reference import NumpyOps
from mnist_numba_bench.models import NETWORKS, get_network
from mnist_numba_bench.models.train import prepare_targets

ops = NumpyOps()
rng = np.random.default_rng(0)


def numeric_grad(f, x, coords, eps=1e-6):
    """Central differences of scalar f() w.r.t. the chosen coordinates of x (in place)."""
    out = []
    for c in coords:
        old = x[c]
        x[c] = old + eps
        up = f()
        x[c] = old - eps
        down = f()
        x[c] = old
        out.append((up - down) / (2 * eps))
    return np.array(out)


def some_coords(shape, k=12):
    return [tuple(int(rng.integers(0, n)) for n in shape) for _ in range(k)]


def assert_grad(analytic, f, x, k=12):
    coords = some_coords(x.shape, k)
    want = numeric_grad(f, x, coords)
    got = np.array([analytic[c] for c in coords])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("act", ["sigmoid", "relu", "none"])
def test_dense_and_activation_backward(act):
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 4)), rng.standard_normal(4)
    up = rng.standard_normal((5, 4))  # dL/da of a random linear loss L = sum(up * a)
    loss = lambda: float(np.sum(up * ops.dense(x, w, b, act)))
    dz = ops.activation_backward(ops.dense(x, w, b, act), up, act)
    assert_grad(ops.matmul_tn(x, dz), loss, w)
    assert_grad(ops.bias_grad(dz), loss, b)
    assert_grad(ops.matmul_nt(dz, w), loss, x)


def test_softmax_cross_entropy_gradient_and_stability():
    logits = rng.standard_normal((6, 10)) * 3
    labels = rng.integers(0, 10, 6)
    _, grad = ops.softmax_cross_entropy(logits, labels)
    assert_grad(grad, lambda: ops.softmax_cross_entropy(logits, labels)[0], logits)
    huge = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], np.float32)
    loss, grad = ops.softmax_cross_entropy(huge, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(1e4, rel=1e-6)  # sample 2 is off by 2e4 nats, mean 1e4


def test_quadratic_loss_gradient():
    a, y = rng.random((4, 10)), prepare_targets(get_network("nielsen"), rng.integers(0, 10, 4))
    y = y.astype(np.float64)
    _, grad = ops.quadratic_loss(a, y)
    assert_grad(grad, lambda: ops.quadratic_loss(a, y)[0], a)


def test_conv2d_gradients():
    x, w, b = rng.standard_normal((2, 3, 8, 7)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    up = rng.standard_normal((2, 4, 6, 6))
    loss = lambda: float(np.sum(up * ops.conv2d(x, w, b)))
    dw, db = np.zeros_like(w), np.zeros_like(b)
    dx = ops.conv2d_backward(x, w, up, dw, db)
    assert_grad(dw, loss, w)
    assert_grad(db, loss, b)
    assert_grad(dx, loss, x)


def test_conv2d_matches_direct_loops():
    x, w, b = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 2, 3)), rng.standard_normal(3)
    y = ops.conv2d(x, w, b)
    direct = np.zeros((1, 3, 4, 3))
    for f in range(3):
        for i in range(4):
            for j in range(3):
                direct[0, f, i, j] = np.sum(x[0, :, i:i + 2, j:j + 3] * w[f]) + b[f]
    np.testing.assert_allclose(y, direct, rtol=1e-12)


def test_maxpool_gradient_and_odd_sizes():
    x = rng.standard_normal((2, 3, 7, 6))  # odd height: the last row is dropped, as in torch
    y, arg = ops.maxpool2(x)
    assert y.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(y[0, 0, 0, 0], x[0, 0, :2, :2].max())
    up = rng.standard_normal(y.shape)
    dx = ops.maxpool2_backward(up, arg, x.shape)
    assert_grad(dx, lambda: float(np.sum(up * ops.maxpool2(x)[0])), x, k=20)


def test_dropout_mask_is_deterministic_scaled_and_near_rate():
    x = np.ones((64, 1024))
    y, mask = ops.dropout(x, 0.5, key=7)
    y2, _ = ops.dropout(x, 0.5, key=7)
    _, other = ops.dropout(x, 0.5, key=8)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(mask, other)
    assert set(np.unique(mask)) == {0.0, 2.0}
    assert abs((mask > 0).mean() - 0.5) < 0.01


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_backprop_matches_finite_differences(name):
    """The whole loss_and_grads of each network, in float64, against central differences."""
    net = get_network(name)
    p = {k: v.astype(np.float64) for k, v in net.init_params(1).items()}
    if name == "linear":  # zero init has a degenerate gradient: perturb it
        p = {k: v + 0.01 * rng.standard_normal(v.shape) for k, v in p.items()}
    n = 3
    x = rng.random((n,) + net.input_shape)
    y = prepare_targets(net, rng.integers(0, 10, n))
    y = y.astype(np.float64) if y.dtype.kind == "f" else y
    grads = {k: np.zeros_like(v) for k, v in p.items()}
    net.loss_and_grads(ops, p, x, y, grads, key=3)
    loss = lambda: net.loss_and_grads(ops, p, x, y, {k: np.zeros_like(v) for k, v in p.items()}, key=3)
    for k in p:
        assert_grad(grads[k], loss, p[k], k=6)


def test_update_rules_by_hand():
    p, g = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.25], np.float32)
    q = p.copy()
    ops.sgd_update(q, g, 0.1)
    np.testing.assert_allclose(q, p - 0.1 * g, rtol=1e-6)
    q, v = p.copy(), np.zeros(2, np.float32)
    ops.momentum_update(q, g, v, 0.3, 0.9)
    ops.momentum_update(q, g, v, 0.3, 0.9)
    v1 = 0.1 * g
    v2 = 0.9 * v1 + 0.1 * g
    np.testing.assert_allclose(q, p - 0.3 * v1 - 0.3 * v2, rtol=1e-6)
    q, m, s = p.copy(), np.zeros(2, np.float32), np.zeros(2, np.float32)
    ops.adam_update(q, g, m, s, 1, 1e-3, 0.9, 0.999, 1e-8)
    np.testing.assert_allclose(q, p - 1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-5)  # step 1: mhat/sqrt(vhat) = sign
