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
The nielsen epoch reads its input rows in place in any case (see the transposed
first-layer kernels below).
"""
import numpy as np

from numba import get_num_threads, prange

from ._numba import njit, njit_parallel
from .backprop import bias_act_serial, bias_grad_serial, quadratic
from .backprop import softmax_xent_serial
from ._numba import stack_array as _stack_array
from .matmul import PARALLEL_MIN_WORK, gemm_into
from .update import adam_serial, momentum_serial, sgd_serial

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


# -- the first layer in transposed form -----------------------------------------------
# With batch 10-128 and 10-128 hidden units, X·W1 has outputs too narrow to vectorise
# across (a 30- or 10-wide inner loop runs mostly scalar). Holding W1ᵀ (hidden x 784)
# for the epoch turns the forward pass into dot products and the weight gradient into
# axpys, both along 784 contiguous floats, with the mini-batch rows read in place
# (no gather). The working layout is [W1ᵀ, b1, W2, b2]; every flat buffer (params,
# grads, optimizer state) is permuted into it at the start of the epoch and back at
# the end, so the elementwise update kernels apply unchanged.
@njit
def _swap_first_block(src, dst, rows, cols):
    """dst = src with its leading rows x cols matrix transposed (the rest copied)."""
    a = src[:rows * cols].reshape((rows, cols))
    t = dst[:rows * cols].reshape((cols, rows))
    for r in range(rows):
        for c in range(cols):
            t[c, r] = a[r, c]
    dst[rows * cols:] = src[rows * cols:]


@njit
def _dot_rows_t(X, rows, WT, Z):
    """Z[i, j] = X[rows[i]] · WT[j]: four outputs per pass over a row of X."""
    h, k = WT.shape
    j = 0
    while j + 4 <= h:
        w0, w1, w2, w3 = WT[j], WT[j + 1], WT[j + 2], WT[j + 3]
        for i in range(rows.size):
            x = X[rows[i]]
            s0 = s1 = s2 = s3 = Z.dtype.type(0)
            for p in range(k):
                xp = x[p]
                s0 += xp * w0[p]
                s1 += xp * w1[p]
                s2 += xp * w2[p]
                s3 += xp * w3[p]
            Z[i, j], Z[i, j + 1], Z[i, j + 2], Z[i, j + 3] = s0, s1, s2, s3
        j += 4
    while j < h:
        w0 = WT[j]
        for i in range(rows.size):
            x = X[rows[i]]
            s0 = Z.dtype.type(0)
            for p in range(k):
                s0 += x[p] * w0[p]
            Z[i, j] = s0
        j += 1


@njit
def _axpy_rows_t(D, X, rows, GT):
    """GT[j] = sum_i D[i, j]·X[rows[i]] (= (Xᵀ·D)ᵀ): four samples per pass over GT[j]."""
    m = rows.size
    k = X.shape[1]
    for j in range(GT.shape[0]):
        g = GT[j]
        g[:] = 0
        i = 0
        while i + 4 <= m:
            d0, d1, d2, d3 = D[i, j], D[i + 1, j], D[i + 2, j], D[i + 3, j]
            x0, x1, x2, x3 = X[rows[i]], X[rows[i + 1]], X[rows[i + 2]], X[rows[i + 3]]
            for p in range(k):
                g[p] += d0 * x0[p] + d1 * x1[p] + d2 * x2[p] + d3 * x3[p]
            i += 4
        while i < m:
            d0 = D[i, j]
            x0 = X[rows[i]]
            for p in range(k):
                g[p] += d0 * x0[p]
            i += 1


@njit
def _two_layer_params(flat, d, h, c):
    w1 = _view2(flat, 0, d, h)
    b1 = flat[d * h:d * h + h]
    o = d * h + h
    w2 = _view2(flat, o, h, c)
    b2 = flat[o + h * c:o + h * c + c]
    return w1, b1, w2, b2


@njit
def _transpose_first_block(buf, rows, cols, tmp):
    """In place: buf's leading rows x cols matrix becomes its cols x rows transpose."""
    if buf.size:
        _swap_first_block(buf, tmp, rows, cols)
        buf[:] = tmp


@njit
def nielsen_epoch(X, onehot, order, starts, contiguous, flat, gflat, s1, s2, hidden, opt, step,
                  lr, beta, beta1, beta2, eps, parallel):
    """784 -> hidden -> 10, sigmoid layers, quadratic cost."""
    d, c = X.shape[1], onehot.shape[1]
    tmp = np.empty(flat.size, flat.dtype)
    for buf in (flat, gflat, s1, s2):
        _transpose_first_block(buf, d, hidden, tmp)
    w1t, gw1t = _view2(flat, 0, hidden, d), _view2(gflat, 0, hidden, d)
    _, b1, w2, b2 = _two_layer_params(flat, d, hidden, c)
    _, gb1, gw2, gb2 = _two_layer_params(gflat, d, hidden, c)
    nb = starts.size - 1
    m = 0
    for bi in range(nb):
        m = max(m, starts[bi + 1] - starts[bi])
    a1_buf, a2_buf = np.empty((m, hidden), X.dtype), np.empty((m, c), X.dtype)
    y_buf, d2_buf, d1_buf = np.empty((m, c), X.dtype), np.empty((m, c), X.dtype), np.empty((m, hidden), X.dtype)
    total = 0.0
    for bi in range(nb):
        lo, hi = starts[bi], starts[bi + 1]
        n = hi - lo
        rows = order[lo:hi]
        yb = _batch_rows(onehot, order, lo, hi, contiguous, y_buf)
        a1, a2, dz2, dz1 = a1_buf[:n], a2_buf[:n], d2_buf[:n], d1_buf[:n]
        _dot_rows_t(X, rows, w1t, a1)
        bias_act_serial(a1, b1, SIGMOID)
        gemm_into(a1, w2, a2, True, parallel)
        bias_act_serial(a2, b2, SIGMOID)
        total += quadratic(a2, yb, dz2)
        for i in range(n):
            for j in range(c):
                dz2[i, j] *= a2[i, j] * (1 - a2[i, j])
        gemm_into(a1.T, dz2, gw2, False, parallel)
        bias_grad_serial(dz2, gb2)
        gemm_into(dz2, w2.T, dz1, True, parallel)
        for i in range(n):
            for j in range(hidden):
                dz1[i, j] *= a1[i, j] * (1 - a1[i, j])
        _axpy_rows_t(dz1, X, rows, gw1t)
        bias_grad_serial(dz1, gb1)
        step += 1
        _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps)
    for buf in (flat, gflat, s1, s2):
        _transpose_first_block(buf, hidden, d, tmp)
    return total, step


# -- the mlp's products, tiled for its shapes ------------------------------------------
# Batch 128 x 784 -> 128: X·W1 and Xᵀ·dH are 26 MFLOP each per step. Packing them the
# GotoBLAS way costs as much as the product at this size, so the tiles below read the
# operands where they lie (W1's rows, the gathered batch, dH are all contiguous) with an
# MR x NR accumulator on the stack (16 zmm registers). The 10-wide products use W2
# transposed (10 x hidden): dot products and axpys along the hidden units.
TMR, TNR = 8, 32
TTILE = TMR * TNR  # a literal for _stack_array


@njit
def _tile(a, a0, a_row, a_col, b, b0, ldb, c, c0, ldc, k):
    """c[c0 + r·ldc + j] = sum_p a[a0 + r·a_row + p·a_col] · b[b0 + p·ldb + j] for one
    TMR x TNR tile, on flat (1-D, contiguous) operands. Covers A·B (a_row = lda,
    a_col = 1) and Aᵀ·B (a_row = 1, a_col = lda). The offsets are clamped at 0 so LLVM
    sees non-negative indices (no wraparound test per element) and vectorises over j."""
    acc = _stack_array(TTILE, c.dtype)
    a0, a_row, a_col = max(a0, 0), max(a_row, 0), max(a_col, 0)
    b0, ldb, c0, ldc = max(b0, 0), max(ldb, 0), max(c0, 0), max(ldc, 0)
    for x in range(TTILE):
        acc[x] = 0
    for p in range(k):
        for j in range(TNR):
            bv = b[b0 + p * ldb + j]
            for r in range(TMR):
                acc[r * TNR + j] += a[a0 + r * a_row + p * a_col] * bv
    for j in range(TNR):
        for r in range(TMR):
            c[c0 + r * ldc + j] = acc[r * TNR + j]


@njit
def _rows_ab(A, B, C, i0, i1, transpose_a):
    """C[i0:i1] = A·B (or Aᵀ·B) for that band of output rows: full tiles, then edges."""
    n = C.shape[1]
    k = A.shape[0] if transpose_a else A.shape[1]
    lda = A.shape[1]
    a_row, a_col = (1, lda) if transpose_a else (lda, 1)
    af, bf, cf = A.ravel(), B.ravel(), C.ravel()
    jn = n - n % TNR
    i = i0
    while i + TMR <= i1:
        for j in range(0, jn, TNR):
            _tile(af, i * a_row, a_row, a_col, bf, j, n, cf, i * n + j, n, k)
        i += TMR
    for r in range(i0, i1):
        for j in range(jn if r < i else 0, n):
            s = C.dtype.type(0)
            for p in range(k):
                s += (A[p, r] if transpose_a else A[r, p]) * B[p, j]
            C[r, j] = s


@njit
def _ab_serial(A, B, C, transpose_a):
    _rows_ab(A, B, C, 0, C.shape[0], transpose_a)


@njit_parallel
def _ab_parallel(A, B, C, transpose_a):
    m = C.shape[0]
    bands = (m + TMR - 1) // TMR
    nt = min(get_num_threads(), bands)
    per = (bands + nt - 1) // nt * TMR
    for t in prange(nt):
        _rows_ab(A, B, C, min(m, t * per), min(m, (t + 1) * per), transpose_a)


@njit
def _ab(A, B, C, transpose_a, parallel):
    """C = A·B, or Aᵀ·B when transpose_a (A stored (k, m)); all three C-contiguous."""
    if parallel and C.shape[0] * C.shape[1] * B.shape[0] >= PARALLEL_MIN_WORK:
        _ab_parallel(A, B, C, transpose_a)
    else:
        _ab_serial(A, B, C, transpose_a)


@njit
def _dot_rows_nt(A, BT, C):
    """C[i, j] = A[i] · BT[j] (BT holds B transposed): four outputs per pass over A[i]."""
    nj, k = BT.shape
    for i in range(A.shape[0]):
        a = A[i]
        if nj < 4:
            for j in range(nj):
                s = C.dtype.type(0)
                for p in range(k):
                    s += a[p] * BT[j, p]
                C[i, j] = s
            continue
        for jg in range(0, nj, 4):
            j = min(jg, nj - 4)  # the last group overlaps the one before instead of running short
            b0, b1, b2, b3 = BT[j], BT[j + 1], BT[j + 2], BT[j + 3]
            s0 = s1 = s2 = s3 = C.dtype.type(0)
            for p in range(k):
                x = a[p]
                s0 += x * b0[p]
                s1 += x * b1[p]
                s2 += x * b2[p]
                s3 += x * b3[p]
            C[i, j], C[i, j + 1], C[i, j + 2], C[i, j + 3] = s0, s1, s2, s3


@njit
def _relu_backward_rows(D, BT, H, C):
    """C[i] = (sum_j D[i, j]·BT[j]) where H[i] > 0, else 0: dL/dz1 from dL/dlogits, W2ᵀ
    and the ReLU outputs, one pass over each row of C."""
    nj, k = BT.shape
    for i in range(D.shape[0]):
        c, h = C[i], H[i]
        c[:] = 0
        j = 0
        while j + 4 <= nj:
            d0, d1, d2, d3 = D[i, j], D[i, j + 1], D[i, j + 2], D[i, j + 3]
            b0, b1, b2, b3 = BT[j], BT[j + 1], BT[j + 2], BT[j + 3]
            for p in range(k):
                c[p] += d0 * b0[p] + d1 * b1[p] + d2 * b2[p] + d3 * b3[p]
            j += 4
        while j < nj:
            d0, b0 = D[i, j], BT[j]
            for p in range(k):
                c[p] += d0 * b0[p]
            j += 1
        for p in range(k):
            if h[p] <= 0:
                c[p] = 0


@njit
def _outer_sum_t(H, D, GT):
    """GT[j] = sum_i D[i, j]·H[i] (= (Hᵀ·D)ᵀ): four samples per pass over GT[j]."""
    m = H.shape[0]
    for j in range(GT.shape[0]):
        g = GT[j]
        g[:] = 0
        i = 0
        while i + 4 <= m:
            d0, d1, d2, d3 = D[i, j], D[i + 1, j], D[i + 2, j], D[i + 3, j]
            h0, h1, h2, h3 = H[i], H[i + 1], H[i + 2], H[i + 3]
            for p in range(g.size):
                g[p] += d0 * h0[p] + d1 * h1[p] + d2 * h2[p] + d3 * h3[p]
            i += 4
        while i < m:
            d0, h0 = D[i, j], H[i]
            for p in range(g.size):
                g[p] += d0 * h0[p]
            i += 1


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
    w2t, gw2t = np.empty((c, hidden), X.dtype), np.empty((c, hidden), X.dtype)
    total = 0.0
    for bi in range(nb):
        lo, hi = starts[bi], starts[bi + 1]
        n = hi - lo
        xb = _batch_rows(X, order, lo, hi, contiguous, buf)
        yb = yb_buf[:n]
        for r in range(n):
            yb[r] = labels[order[lo + r]]
        h, logits, dlogits, dh = h_buf[:n], l_buf[:n], dl_buf[:n], dh_buf[:n]
        for p in range(hidden):
            for j in range(c):
                w2t[j, p] = w2[p, j]
        _ab(xb, w1, h, False, parallel)
        bias_act_serial(h, b1, RELU)
        _dot_rows_nt(h, w2t, logits)
        bias_act_serial(logits, b2, NONE)
        total += softmax_xent_serial(logits, yb, dlogits)
        _outer_sum_t(h, dlogits, gw2t)
        for p in range(hidden):
            for j in range(c):
                gw2[p, j] = gw2t[j, p]
        bias_grad_serial(dlogits, gb2)
        _relu_backward_rows(dlogits, w2t, h, dh)
        _ab(xb, dh, gw1, True, parallel)
        bias_grad_serial(dh, gb1)
        step += 1
        _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps)
    return total, step


EPOCHS = {"linear": linear_epoch, "nielsen": nielsen_epoch, "mlp": mlp_epoch}
