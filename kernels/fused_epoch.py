"""Whole training epochs compiled into one function each: linear, nielsen, mlp.

The batch loop, the gather of each mini-batch, forward, loss, backward and the
optimizer update all run inside one @njit call: no Python between steps (the
extreme of "no Python in the loop"). The arithmetic is the one of the ops path
(models.networks + NumpyOps): same kernels order, float32 throughout, gradients
written into one flat buffer that the same update kernels then apply, so the
fused epoch reaches the same weights as ``numpy``.

Batches arrive as one index array ``order`` cut at ``starts`` (batch b is
order[starts[b]:starts[b+1]]); ``contiguous`` says order is 0..n-1 (full-batch
gradient descent), in which case rows are used in place instead of gathered.
"""
import numpy as np

from kernels._numba import njit
from kernels.backprop import bias_act_serial, bias_grad_serial, quadratic_serial, sigmoid
from kernels.backprop import softmax_xent_serial
from kernels.matmul import gemm_into
from kernels.update import adam_serial, momentum_serial, sgd_serial

OPTIMIZER_CODES = {"sgd": 0, "momentum": 1, "adam": 2}
SIGMOID, RELU, NONE = 1, 2, 0


@njit
def _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps):
    if opt == 0:
        sgd_serial(flat, gflat, lr)
    elif opt == 1:
        momentum_serial(flat, gflat, s1, lr, beta)
    else:
        adam_serial(flat, gflat, s1, s2, step, lr, beta1, beta2, eps)


@njit
def _batch_rows(X, order, lo, hi, contiguous, buf):
    """The mini-batch's rows: a view when they are consecutive, else gathered into buf."""
    if contiguous:
        return X[lo:hi]
    xb = buf[:hi - lo]
    for r in range(hi - lo):
        xb[r] = X[order[lo + r]]
    return xb


@njit
def _view2(flat, offset, rows, cols):
    return flat[offset:offset + rows * cols].reshape((rows, cols))


@njit
def linear_epoch(X, labels, order, starts, contiguous, flat, gflat, s1, s2, opt, step,
                 lr, beta, beta1, beta2, eps, parallel):
    """784 -> 10 softmax regression. Returns (sum of batch losses, optimizer steps taken)."""
    d, c = X.shape[1], 10
    w, b = _view2(flat, 0, d, c), flat[d * c:d * c + c]
    gw, gb = _view2(gflat, 0, d, c), gflat[d * c:d * c + c]
    nb = starts.size - 1
    biggest = 0
    for bi in range(nb):
        biggest = max(biggest, starts[bi + 1] - starts[bi])
    buf = np.empty((0 if contiguous else biggest, d), X.dtype)
    logits_buf = np.empty((biggest, c), X.dtype)
    grad_buf = np.empty((biggest, c), X.dtype)
    yb_buf = np.empty(biggest, labels.dtype)
    total = 0.0
    for bi in range(nb):
        lo, hi = starts[bi], starts[bi + 1]
        xb = _batch_rows(X, order, lo, hi, contiguous, buf)
        yb = yb_buf[:hi - lo]
        for r in range(hi - lo):
            yb[r] = labels[order[lo + r]]
        logits, dlogits = logits_buf[:hi - lo], grad_buf[:hi - lo]
        gemm_into(xb, w, logits, True, parallel)
        bias_act_serial(logits, b, NONE)
        total += softmax_xent_serial(logits, yb, dlogits)
        gemm_into(xb.T, dlogits, gw, False, parallel)
        bias_grad_serial(dlogits, gb)
        step += 1
        _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps)
    return total, step


@njit
def _two_layer_params(flat, d, h, c):
    w1 = _view2(flat, 0, d, h)
    b1 = flat[d * h:d * h + h]
    o = d * h + h
    w2 = _view2(flat, o, h, c)
    b2 = flat[o + h * c:o + h * c + c]
    return w1, b1, w2, b2


@njit
def nielsen_epoch(X, onehot, order, starts, contiguous, flat, gflat, s1, s2, hidden, opt, step,
                  lr, beta, beta1, beta2, eps, parallel):
    """784 -> hidden -> 10, sigmoid layers, quadratic cost."""
    d, c = X.shape[1], onehot.shape[1]
    w1, b1, w2, b2 = _two_layer_params(flat, d, hidden, c)
    gw1, gb1, gw2, gb2 = _two_layer_params(gflat, d, hidden, c)
    nb = starts.size - 1
    m = 0
    for bi in range(nb):
        m = max(m, starts[bi + 1] - starts[bi])
    buf = np.empty((0 if contiguous else m, d), X.dtype)
    a1_buf, a2_buf = np.empty((m, hidden), X.dtype), np.empty((m, c), X.dtype)
    y_buf, d2_buf, d1_buf = np.empty((m, c), X.dtype), np.empty((m, c), X.dtype), np.empty((m, hidden), X.dtype)
    total = 0.0
    for bi in range(nb):
        lo, hi = starts[bi], starts[bi + 1]
        n = hi - lo
        xb = _batch_rows(X, order, lo, hi, contiguous, buf)
        yb = _batch_rows(onehot, order, lo, hi, contiguous, y_buf)
        a1, a2, dz2, dz1 = a1_buf[:n], a2_buf[:n], d2_buf[:n], d1_buf[:n]
        gemm_into(xb, w1, a1, True, parallel)
        bias_act_serial(a1, b1, SIGMOID)
        gemm_into(a1, w2, a2, True, parallel)
        bias_act_serial(a2, b2, SIGMOID)
        total += quadratic_serial(a2, yb, dz2)
        for i in range(n):
            for j in range(c):
                dz2[i, j] *= a2[i, j] * (1 - a2[i, j])
        gemm_into(a1.T, dz2, gw2, False, parallel)
        bias_grad_serial(dz2, gb2)
        gemm_into(dz2, w2.T, dz1, True, parallel)
        for i in range(n):
            for j in range(hidden):
                dz1[i, j] *= a1[i, j] * (1 - a1[i, j])
        gemm_into(xb.T, dz1, gw1, False, parallel)
        bias_grad_serial(dz1, gb1)
        step += 1
        _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps)
    return total, step


@njit
def mlp_epoch(X, labels, order, starts, contiguous, flat, gflat, s1, s2, hidden, opt, step,
              lr, beta, beta1, beta2, eps, parallel):
    """784 -> hidden ReLU -> 10, softmax cross-entropy."""
    d, c = X.shape[1], 10
    w1, b1, w2, b2 = _two_layer_params(flat, d, hidden, c)
    gw1, gb1, gw2, gb2 = _two_layer_params(gflat, d, hidden, c)
    nb = starts.size - 1
    m = 0
    for bi in range(nb):
        m = max(m, starts[bi + 1] - starts[bi])
    buf = np.empty((0 if contiguous else m, d), X.dtype)
    h_buf, l_buf = np.empty((m, hidden), X.dtype), np.empty((m, c), X.dtype)
    dl_buf, dh_buf = np.empty((m, c), X.dtype), np.empty((m, hidden), X.dtype)
    yb_buf = np.empty(m, labels.dtype)
    total = 0.0
    for bi in range(nb):
        lo, hi = starts[bi], starts[bi + 1]
        n = hi - lo
        xb = _batch_rows(X, order, lo, hi, contiguous, buf)
        yb = yb_buf[:n]
        for r in range(n):
            yb[r] = labels[order[lo + r]]
        h, logits, dlogits, dh = h_buf[:n], l_buf[:n], dl_buf[:n], dh_buf[:n]
        gemm_into(xb, w1, h, True, parallel)
        bias_act_serial(h, b1, RELU)
        gemm_into(h, w2, logits, True, parallel)
        bias_act_serial(logits, b2, NONE)
        total += softmax_xent_serial(logits, yb, dlogits)
        gemm_into(h.T, dlogits, gw2, False, parallel)
        bias_grad_serial(dlogits, gb2)
        gemm_into(dlogits, w2.T, dh, True, parallel)
        for i in range(n):
            for j in range(hidden):
                if h[i, j] <= 0:
                    dh[i, j] = 0
        gemm_into(xb.T, dh, gw1, False, parallel)
        bias_grad_serial(dh, gb1)
        step += 1
        _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps)
    return total, step


EPOCHS = {"linear": linear_epoch, "nielsen": nielsen_epoch, "mlp": mlp_epoch}


def batch_index(batches, n):
    """Shared batch order -> (order, starts, contiguous) for the fused epochs."""
    if len(batches) == 1 and isinstance(batches[0], slice):
        s = batches[0]
        start, stop, stride = s.indices(n)
        if stride != 1:
            raise ValueError(f"batch slices must have step 1, got {s}")
        return np.arange(start, stop, dtype=np.int64), np.array([0, stop - start], np.int64), start == 0
    parts = [np.arange(*b.indices(n)) if isinstance(b, slice) else np.asarray(b, np.int64)
             for b in batches]
    order = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    if order.size and (order.min() < 0 or order.max() >= n):
        raise ValueError(f"batch indices must lie in [0, {n}), got [{order.min()}, {order.max()}]")
    starts = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=starts[1:])
    return order, starts, False
