"""Whole training epochs compiled into one function each: linear, and one
two-layer epoch for nielsen and mlp.

The batch loop, the gather of each mini-batch, forward, loss, backward and the
optimizer update all run inside one @njit call: no Python between steps (the
extreme of "no Python in the loop"). The arithmetic is the one of the ops path
(models.networks + NumpyOps): float32 throughout, the same update kernels on
flat buffers, so the fused epoch reaches the same weights as ``numpy`` (the
tests check it, and every cell is validated against numpy before it is timed).

Batches arrive as one index array ``order`` cut at ``starts`` (batch b is
order[starts[b]:starts[b+1]]); ``contiguous`` says order is 0..n-1 (full-batch
gradient descent), in which case rows are used in place instead of gathered.
"""
import numba
import numpy as np
from numba import prange

from ._numba import (FASTMATH_IN_ORDER, TARGET, njit, njit_leaf, prefetch_lines, prefetch_lines_outer,
                     rows_contiguous, serial_and_parallel, specialize)
from .backprop import (bias_act_span, bias_grad_serial, check_labels, exp_nonpositive, quadratic, sigmoid,
                       xent_row)
from .matmul import MR as MMR
from .matmul import NR as MNR
from .fma_codegen import fma_panel_rows, fma_strided_rows
from .matmul import PARALLEL_MIN_WORK, axpy_columns
from .matmul import dot_rows
from .update import adam_parallel, adam_serial, momentum_parallel, momentum_serial, sgd_parallel, sgd_serial

OPTIMIZER_CODES = {"sgd": 0, "momentum": 1, "adam": 2}
SIGMOID, RELU = 1, 2


@njit
def _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps, parallel=False):
    if parallel:
        if opt == 0:
            sgd_parallel(flat, gflat, lr)
        elif opt == 1:
            momentum_parallel(flat, gflat, s1, lr, beta)
        else:
            adam_parallel(flat, gflat, s1, s2, step, lr, beta1, beta2, eps)
    elif opt == 0:
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
        # element by element: a row assignment (xb[r] = ...) goes through Numba's
        # overlap-safe array copy, which is much slower
        src, dst = X[order[lo + r]], xb[r]
        for p in range(src.size):
            dst[p] = src[p]
    return xb


@njit
def _view2(flat, offset, rows, cols):
    return flat[offset:offset + rows * cols].reshape((rows, cols))


@njit
def _largest_batch(starts):
    """The rows of an epoch's largest batch (starts: the batches' bounds in the order)."""
    m = 0
    for bi in range(starts.size - 1):
        m = max(m, starts[bi + 1] - starts[bi])
    return m


# -- linear: one pass over X ---------------------------------------------------------------
LIN_ROWS = 65    # rows per block: 65 x 784 floats stay in L2 from forward to gradient; five-row tiles
LIN_TASKS = 8    # fixed work split: serial and parallel runs add the partial sums in one order
# Column chunks of the ten-row weight-gradient tile (_ten_rows_times_batch): with
# 32 vector registers, ten rows x one vector (NARROW_COLS) of accumulators: ten
# rows x three vectors need 33 registers with their B row and spilled, ten x two
# did not spill and still ran slower than ten x one in the nielsen and linear
# epochs (the depth is a batch of 10 or a 65-row block, and every tile loads and
# stores its C rows). The dot products run five rows x five classes
# (_dot5). With 16 registers, two five-row halves against PAIR_COLS columns each,
# and five rows x two classes.
_LANES = TARGET["vector_bits"] // 32
NARROW_COLS = _LANES
WIDE_REGISTERS = TARGET["vector_registers"] >= 32
PAIR_COLS = 2 * NARROW_COLS


@njit
def _dot5x5(x0, x1, x2, x3, x4, W, j):
    """The 25 dot products of five rows x with W's rows j..j+4, in one pass over them:
    25 accumulators from ten loads a step (dot_rows, four columns a pass, loads
    five values per four products). Row-major: x0·w0 .. x0·w4, x1·w0, ..."""
    w0, w1, w2, w3, w4 = W[j], W[j + 1], W[j + 2], W[j + 3], W[j + 4]
    z = x0.dtype.type(0)
    a0 = a1 = a2 = a3 = a4 = b0 = b1 = b2 = b3 = b4 = c0 = c1 = c2 = c3 = c4 = z
    d0 = d1 = d2 = d3 = d4 = e0 = e1 = e2 = e3 = e4 = z
    for p in range(x0.size):
        u0, u1, u2, u3, u4 = w0[p], w1[p], w2[p], w3[p], w4[p]
        v = x0[p]
        a0 += v * u0
        a1 += v * u1
        a2 += v * u2
        a3 += v * u3
        a4 += v * u4
        v = x1[p]
        b0 += v * u0
        b1 += v * u1
        b2 += v * u2
        b3 += v * u3
        b4 += v * u4
        v = x2[p]
        c0 += v * u0
        c1 += v * u1
        c2 += v * u2
        c3 += v * u3
        c4 += v * u4
        v = x3[p]
        d0 += v * u0
        d1 += v * u1
        d2 += v * u2
        d3 += v * u3
        d4 += v * u4
        v = x4[p]
        e0 += v * u0
        e1 += v * u1
        e2 += v * u2
        e3 += v * u3
        e4 += v * u4
    return (a0, a1, a2, a3, a4, b0, b1, b2, b3, b4, c0, c1, c2, c3, c4,
            d0, d1, d2, d3, d4, e0, e1, e2, e3, e4)


@njit
def _dot5x2(x0, x1, x2, x3, x4, W, j):
    """_dot5x5 against two rows of W (j, j+1): ten accumulators, for ISAs with
    16 vector registers (_dot5x5's 25 accumulators and their operands spill
    there). Five rows of x still stream at once: two rows x five classes (as
    many accumulators) left the reads of rows from memory the bottleneck."""
    w0, w1 = W[j], W[j + 1]
    z = x0.dtype.type(0)
    a0 = a1 = b0 = b1 = c0 = c1 = d0 = d1 = e0 = e1 = z
    for p in range(x0.size):
        u0, u1 = w0[p], w1[p]
        v = x0[p]
        a0 += v * u0
        a1 += v * u1
        v = x1[p]
        b0 += v * u0
        b1 += v * u1
        v = x2[p]
        c0 += v * u0
        c1 += v * u1
        v = x3[p]
        d0 += v * u0
        d1 += v * u1
        v = x4[p]
        e0 += v * u0
        e1 += v * u1
    return (a0, a1, b0, b1, c0, c1, d0, d1, e0, e1)


# The dot products of five rows x against DOT_COLS rows of W from j on, in one
# pass (the tile from the vector registers: 5 x 5 with 32, 5 x 2 with 16).
DOT_COLS = 5 if WIDE_REGISTERS else 2
_dot5 = _dot5x5 if WIDE_REGISTERS else _dot5x2


@njit
def _store5(out, i, j, sums):
    """out[i:i+5, j:j+DOT_COLS] = _dot5's sums."""
    for r in range(5):
        for q in range(DOT_COLS):
            out[i + r, j + q] = sums[DOT_COLS * r + q]


@njit
def _linear_rows(X, r0, r1, Wt, b, labels, scale, G, gb, iota):
    """For rows r0:r1 of X: logits,
    softmax cross-entropy gradient, and G (classes x d) += dLᵀ·X[rows], gb += sum dL;
    ten classes (linear_epoch's 784 -> 10: the gradient's micro-kernel is ten rows).
    Returns the rows' summed loss. The gradient is the micro-kernel's product with
    dL as its A panel (rows x classes, exactly the packed layout) and X's rows as
    its B rows (ldb = d, _ten_rows_times_batch), so the block is read from memory
    once; the next block's rows are prefetched during it (``iota``: 0, 1, ...,
    at least X's rows, the table of them, sliced rather than made per block)."""
    c, d = Wt.shape
    n = r1 - r0
    xb = X[r0:r1]
    logits = np.empty((n, c), X.dtype)
    i = 0
    while i + 5 <= n:
        for j in range(0, c, DOT_COLS):
            _store5(logits, i, j, _dot5(xb[i], xb[i + 1], xb[i + 2], xb[i + 3], xb[i + 4], Wt, j))
        i += 5
    while i < n:
        dot_rows(xb, Wt, logits, i)
        i += 1
    for i in range(n):
        for j in range(c):
            logits[i, j] += b[j]
    dl = np.empty((n, c), X.dtype)
    total = 0.0
    yb = labels[r0:r1]
    for i in range(n):
        total += xent_row(logits, yb, dl, i, scale)
    for i in range(n):
        for j in range(c):
            gb[j] += dl[i, j]
    _ten_rows_times_batch(dl.ravel(), 0, xb, G, 0, True, X, iota[r1:min(r1 + n, X.shape[0])])
    return total


def _linear_pass(X, labels, Wt, b, scale, G, gb, losses, iota):
    """Every block of rows, the blocks split into LIN_TASKS tasks with their own
    partial gradients (G[t], gb[t], losses[t]) and summed in task order."""
    n = X.shape[0]
    blocks = (n + LIN_ROWS - 1) // LIN_ROWS
    per = (blocks + LIN_TASKS - 1) // LIN_TASKS
    for t in prange(LIN_TASKS):
        G[t] = 0
        gb[t] = 0
        total = 0.0
        for blk in range(t * per, min(blocks, (t + 1) * per)):
            r0 = blk * LIN_ROWS
            total += _linear_rows(X, r0, min(n, r0 + LIN_ROWS), Wt, b, labels, scale, G[t], gb[t], iota)
        losses[t] = total


_linear_pass_serial, _linear_pass_parallel = serial_and_parallel(_linear_pass)


@njit
def linear_epoch(X, labels, order, starts, contiguous, flat, gflat, s1, s2, opt, step,
                 lr, beta, beta1, beta2, eps, parallel):
    """784 -> 10 softmax regression. Returns (sum of batch losses, optimizer steps taken)."""
    d, c = X.shape[1], 10
    w, b = _view2(flat, 0, d, c), flat[d * c:d * c + c]
    gw, gb = _view2(gflat, 0, d, c), gflat[d * c:d * c + c]
    nb = starts.size - 1
    biggest = _largest_batch(starts)
    buf = np.empty((0 if contiguous else biggest, d), X.dtype)
    yb_buf = np.empty(biggest, labels.dtype)
    iota = np.arange(biggest)  # the rows of a batch, as _linear_rows' prefetch table
    Wt = np.empty((c, d), X.dtype)
    G = np.empty((LIN_TASKS, c, d), X.dtype)
    gbs = np.empty((LIN_TASKS, c), X.dtype)
    losses = np.empty(LIN_TASKS)
    total = 0.0
    for bi in range(nb):
        lo, hi = starts[bi], starts[bi + 1]
        xb = _batch_rows(X, order, lo, hi, contiguous, buf)
        yb = yb_buf[:hi - lo]
        for r in range(hi - lo):
            yb[r] = labels[order[lo + r]]
        for p in range(d):
            for j in range(c):
                Wt[j, p] = w[p, j]
        scale = X.dtype.type(1.0 / (hi - lo))
        if parallel and (hi - lo) * d * c >= PARALLEL_MIN_WORK:
            _linear_pass_parallel(xb, yb, Wt, b, scale, G, gbs, losses, iota)
        else:
            _linear_pass_serial(xb, yb, Wt, b, scale, G, gbs, losses, iota)
        for j in range(c):
            gb[j] = 0
            for p in range(d):
                gw[p, j] = 0
        for t in range(LIN_TASKS):
            for j in range(c):
                gb[j] += gbs[t, j]
                for p in range(d):
                    gw[p, j] += G[t, j, p]
            total += losses[t] / (hi - lo)
        step += 1
        _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps)
    return total, step


# -- the 10-wide second layer of nielsen and mlp, against W2 held transposed (10 x hidden) --
@njit_leaf
def _dot_rows_nt(A, BT, C):
    """C = A·BTᵀ (BT holds B transposed): dot products along rows of both."""
    for i in range(A.shape[0]):
        dot_rows(A, BT, C, i)


@njit_leaf
def _hidden_backward_rows(D, BT, A, act, C):
    """C[i, :h] = (sum_j D[i, j]·BT[j]) · act'(A[i]) (act' from the layer's output:
    sigmoid a(1-a), ReLU a > 0): dL/dz1 from dL/dz2 and W2ᵀ, one pass per row."""
    nj, k = BT.shape
    for i in range(D.shape[0]):
        c, a = C[i], A[i]
        c[:k] = 0
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
        if act == SIGMOID:
            for p in range(k):
                c[p] *= a[p] * (1 - a[p])
        else:
            for p in range(k):
                c[p] = 0 if a[p] <= 0 else c[p]  # a select: a store under a branch stays scalar


@njit_leaf
def _sigmoid_layer_backward(D, A, BT, G, C):
    """nielsen's output layer backward: G = Dᵀ·A (W2ᵀ's gradient, 10 x k) and
    C = (D·BT)·A(1 - A) (dL/dz1 through the hidden sigmoid, n x k), from D =
    dL/dz2 (n x 10, C-contiguous: read flat as the micro-kernel's A), A = the
    hidden layer's output (n x k) and BT = W2ᵀ (10 x k). Through the micro-kernel
    in chunks of NARROW_COLS columns, the last one ending at k: where k is not a
    whole number of vectors it overlaps the chunk before, whose columns it
    writes again with the same values (a store, never +=), so a row of 30 is two
    vectors rather than one and fourteen scalar steps. Rows of C past the last
    five, k < NARROW_COLS and other class counts take the row-by-row kernels."""
    n, k = A.shape
    if D.shape[1] != 10 or k < NARROW_COLS:
        for j in range(D.shape[1]):
            axpy_columns(A, D, G, j)
        _hidden_backward_rows(D, BT, A, SIGMOID, C)
        return
    df = D.reshape(D.size)
    tiled = n - n % 5
    p0 = 0
    while p0 < k:
        q = min(p0, k - NARROW_COLS)
        fma_panel_rows(df, 0, A, q, k, n, G, 0, q, False, 10, NARROW_COLS)
        for i in range(0, tiled, 5):
            fma_strided_rows(df, i * 10, 1, 10, BT, q, k, 10, C, i, q, False, 5, NARROW_COLS)
        p0 += NARROW_COLS
    af, cf = A[:tiled].reshape(tiled * k), C[:tiled].reshape(tiled * k)
    for p in range(af.size):
        cf[p] *= af[p] * (1 - af[p])
    if tiled < n:
        _hidden_backward_rows(D[tiled:], BT, A[tiled:], SIGMOID, C[tiled:])


# -- nielsen: the first layer in transposed form ----------------------------------------
# With batch 10 and 30 hidden units a step is ~1 MFLOP. Holding W1ᵀ (hidden x
# 784) for the epoch turns the forward pass into dot products along 784
# contiguous floats (five samples x five hidden units a pass, the batch rows
# read in place), and makes the weight gradient W1ᵀ's rows = the micro-kernel's
# depth loop over the batch: ten hidden units x one vector a tile, the gathered
# batch as its B rows (where the hidden units are not a multiple of ten, axpys
# along the rows instead). The working layout is [W1ᵀ, b1, W2ᵀ, b2]; every flat buffer (params, grads, optimizer
# state) is permuted into it at the start of the epoch and back at the end, so
# the elementwise update kernels apply unchanged.
@njit_leaf
def _dot_rows_t(X, rows, WT, Z):
    """Z[i, j] = X[rows[i]] · WT[j], the batch's rows read in place (no gathered
    copy): five samples x DOT_COLS weight rows a pass (_dot5), so WT (94 KB at 30
    x 784, an L2 resident) is read once per five samples rather than once per
    sample; samples and weight rows left over, one sample at a time."""
    h = WT.shape[0]
    m = rows.size
    i = 0
    while i + 5 <= m:
        x0, x1, x2, x3, x4 = X[rows[i]], X[rows[i + 1]], X[rows[i + 2]], X[rows[i + 3]], X[rows[i + 4]]
        for j in range(0, h - DOT_COLS + 1, DOT_COLS):
            _store5(Z, i, j, _dot5(x0, x1, x2, x3, x4, WT, j))
        i += 5
    full, covered = m - m % 5, h - h % DOT_COLS  # samples and weight rows done in tiles
    for r in range(m):
        x = X[rows[r]]
        for j in range(covered if r < full else 0, h):
            s0 = Z.dtype.type(0)
            w = WT[j]
            for p in range(x.size):
                s0 += x[p] * w[p]
            Z[r, j] = s0


@njit_leaf
def _axpy_rows_t(D, X, rows, GT, WT, lr):
    """GT[j] = sum_i D[i, j]·X[rows[i]] (= (Xᵀ·D)ᵀ), five samples per pass over
    GT[j], the first pass writing it without a read; with ``lr`` > 0 (plain SGD)
    WT[j] -= lr·GT[j] right after, while GT[j] is in L1 (WT[j] is not read
    again this step). Each loop reads at most six rows and writes one: passes
    over ten sample rows writing two rows of GT at once measured slower here."""
    m = rows.size
    h, k = GT.shape
    lr = WT.dtype.type(lr)
    for j in range(h):
        g = GT[j]
        if m < 5:
            g[:] = 0
        i = 0
        while i + 5 <= m:
            d0, d1, d2, d3, d4 = D[i, j], D[i + 1, j], D[i + 2, j], D[i + 3, j], D[i + 4, j]
            x0, x1, x2, x3, x4 = X[rows[i]], X[rows[i + 1]], X[rows[i + 2]], X[rows[i + 3]], X[rows[i + 4]]
            if i == 0:
                for p in range(k):
                    g[p] = d0 * x0[p] + d1 * x1[p] + d2 * x2[p] + d3 * x3[p] + d4 * x4[p]
            else:
                for p in range(k):
                    g[p] += d0 * x0[p] + d1 * x1[p] + d2 * x2[p] + d3 * x3[p] + d4 * x4[p]
            i += 5
        while i < m:
            d0, x0 = D[i, j], X[rows[i]]
            for p in range(k):
                g[p] += d0 * x0[p]
            i += 1
        if lr > 0:
            w = WT[j]
            for p in range(k):
                w[p] -= lr * g[p]


@njit_leaf
def _prefetch_rows_lines(X, order, row, row_end, line, lines, count, outer):
    """Prefetch the next ``count`` lines of rows order[row:row_end] of X, from
    line ``line`` of order[row], into every cache level (prefetch_lines) or,
    ``outer``, into the outer ones (prefetch_lines_outer); returns where the
    next call goes on from."""
    while count > 0 and row < row_end:
        take = min(count, lines - line)
        if outer:
            prefetch_lines_outer(X, order[row], line, take)
        else:
            prefetch_lines(X, order[row], line, take)
        line += take
        count -= take
        if line == lines:
            row, line = row + 1, 0
    return row, line


@njit_leaf
def _ten_rows_times_batch(ap, a0, xb, C, row0, accumulate, ahead, ahead_rows):
    """C[row0:row0+10] = (or, with ``accumulate``, +=) the ten-row A panel at ap[a0:]
    (one group of ten values per row of xb: the batch is the depth) times xb's
    rows, through the micro-kernel's depth loop (fma_panel_rows): 10 x one vector
    tiles stored straight into C's rows (with 16 registers: two five-row halves
    against two vectors, then 10 x one vector), then the columns left over one at
    a time. The weight gradients of the fused linear and nielsen epochs.

    The rows ahead_rows of ``ahead`` (a C-contiguous 2-D array; the table may be
    empty) are asked of memory, into the outer caches, a share of their lines
    after each tile: the linear epoch passes its next block of X, nielsen its
    next batch's rows, which then arrive while this pass computes from the
    caches rather than while the next forward pass waits for them. xb's rows
    must be contiguous (the micro-kernel reads them flat, d apart)."""
    m, d = xb.shape
    if not rows_contiguous(xb) or (m > 1 and xb.strides[0] != d * xb.itemsize):
        raise ValueError("ten-row weight-gradient tile: the batch's rows must be one contiguous block")
    # column chunks: with 32 registers ten rows x one vector; with 16, the panel's
    # halves (five rows each, its values ten apart along the depth) against two
    # vectors of columns, 10 accumulators and 7 loads a step, where the ten rows
    # against one vector took 11 loads for 10
    width = NARROW_COLS if WIDE_REGISTERS else PAIR_COLS
    chunks = d // width
    lines = (ahead.shape[1] * ahead.itemsize + 63) // 64
    per_chunk = (ahead_rows.size * lines + chunks - 1) // max(chunks, 1)
    row, line = 0, 0
    for q in range(chunks):
        row, line = _prefetch_rows_lines(ahead, ahead_rows, row, ahead_rows.size, line, lines, per_chunk, True)
        j0 = q * width
        if WIDE_REGISTERS:
            fma_panel_rows(ap, a0, xb, j0, d, m, C, row0, j0, accumulate, 10, NARROW_COLS)
        else:
            for half in range(2):
                fma_strided_rows(ap, a0 + 5 * half, 10, 1, xb, j0, d, m, C, row0 + 5 * half, j0, accumulate,
                                 5, PAIR_COLS)
    j0 = chunks * width
    while j0 + NARROW_COLS <= d:
        fma_panel_rows(ap, a0, xb, j0, d, m, C, row0, j0, accumulate, 10, NARROW_COLS)
        j0 += NARROW_COLS
    for j in range(j0, d):
        for r in range(10):
            s0 = C.dtype.type(0)
            for i in range(m):
                s0 += ap[a0 + i * 10 + r] * xb[i, j]
            C[row0 + r, j] = C[row0 + r, j] + s0 if accumulate else s0


@njit_leaf
def _weight_grad_panels(D, xb, GT, dp, scale, accumulate, ahead, ahead_rows):
    """GT = scale·(xbᵀ·D)ᵀ, or with ``accumulate`` GT += that: D's columns packed in
    panels of ten (``dp``, scaled; the batch is the depth), each panel times the
    gathered batch xb (_ten_rows_times_batch, asking for its share of the rows
    ahead_rows of ``ahead``) into ten rows of GT. GT's rows must be a multiple of
    ten (nielsen's 30 hidden units). Plain SGD passes W1ᵀ, -lr and accumulate:
    the step is taken in the gradient's own stores."""
    m, h = D.shape
    scale = dp.dtype.type(scale)
    for q in range(h // 10):
        for i in range(m):
            for r in range(10):
                dp[(q * m + i) * 10 + r] = scale * D[i, q * 10 + r]
    panels, k = h // 10, ahead_rows.size
    for q in range(panels):
        _ten_rows_times_batch(dp, q * m * 10, xb, GT, q * 10, accumulate, ahead,
                              ahead_rows[q * k // panels:(q + 1) * k // panels])


@njit
def _bias_sigmoid(z, b):
    """z <- sigmoid(z + b) for a C-contiguous z (rows x len(b)): the bias row by
    row, then the sigmoid over all of z at once. Row by row, a row of nielsen's
    30 hidden units (or 10 outputs) ran its values past the last whole vector
    as scalar code, its exponentials included, once per row."""
    n, h = z.shape
    for i in range(n):
        for j in range(h):
            z[i, j] += b[j]
    zf = z.ravel()
    for k in range(zf.size):
        zf[k] = sigmoid(zf[k])


@njit
def _transpose_block(buf, offset, rows, cols):
    """In place: the rows x cols matrix at buf[offset:] becomes its cols x rows transpose."""
    if buf.size:
        a = buf[offset:offset + rows * cols].copy().reshape((rows, cols))
        t = buf[offset:offset + rows * cols].reshape((cols, rows))
        for r in range(rows):
            for c in range(cols):
                t[c, r] = a[r, c]


@njit
def nielsen_epoch(X, onehot, order, starts, contiguous, flat, gflat, s1, s2, hidden, opt, step,
                  lr, beta, beta1, beta2, eps, parallel):
    """784 -> hidden -> 10, sigmoid layers, quadratic cost. ``parallel`` is in the
    signature every fused epoch shares (numba-fused calls them alike) and unused:
    a step of nielsen's 10-image batches is too small to split between threads."""
    d, c = X.shape[1], onehot.shape[1]
    # both weight matrices held transposed for the epoch (W1ᵀ's rows are the
    # forward's dot products, W2ᵀ's the output layer's), with their gradients
    # and optimizer state: the elementwise updates do not mind the layout
    w2_at = hidden * d + hidden
    for buf in (flat, gflat, s1, s2):
        _transpose_block(buf, 0, d, hidden)
        _transpose_block(buf, w2_at, hidden, c)
    w1t, gw1t = _view2(flat, 0, hidden, d), _view2(gflat, 0, hidden, d)
    w2t, gw2t = _view2(flat, w2_at, c, hidden), _view2(gflat, w2_at, c, hidden)
    first = hidden * d
    _, b1, _, b2 = _two_layer_params(flat, d, hidden, c)
    _, gb1, _, gb2 = _two_layer_params(gflat, d, hidden, c)
    nb = starts.size - 1
    m = _largest_batch(starts)
    a1_buf, a2_buf = np.empty((m, hidden), X.dtype), np.empty((m, c), X.dtype)
    y_buf, d2_buf, d1_buf = np.empty((m, c), X.dtype), np.empty((m, c), X.dtype), np.empty((m, hidden), X.dtype)
    panels = hidden % 10 == 0
    x_buf = np.empty((0 if contiguous else m, d), X.dtype)
    dp = np.empty(m * hidden, X.dtype)
    total = 0.0
    for bi in range(nb):
        lo, hi = starts[bi], starts[bi + 1]
        n = hi - lo
        rows = order[lo:hi]
        yb = _batch_rows(onehot, order, lo, hi, contiguous, y_buf)
        a1, a2, dz2, dz1 = a1_buf[:n], a2_buf[:n], d2_buf[:n], d1_buf[:n]
        _dot_rows_t(X, rows, w1t, a1)
        _bias_sigmoid(a1, b1)
        _dot_rows_nt(a1, w2t, a2)
        _bias_sigmoid(a2, b2)
        total += quadratic(a2, yb, dz2)
        a2f, dz2f = a2.ravel(), dz2.ravel()
        for k in range(a2f.size):
            dz2f[k] *= a2f[k] * (1 - a2f[k])
        _sigmoid_layer_backward(dz2, a1, w2t, gw2t, dz1)
        bias_grad_serial(dz2, gb2)
        # plain SGD takes W1ᵀ's step in the gradient pass (its gradient is then not
        # kept: gflat's W1 block is scratch to the fused epoch); the rest in _update
        sgd = opt == 0
        if panels:  # the batch gathered once, the gradient through the micro-kernel
            xb = _batch_rows(X, order, lo, hi, contiguous, x_buf)
            # the next batch's rows, read in place by the next forward pass, asked
            # of memory during this gradient
            ahead = order[hi:starts[bi + 2]] if bi + 1 < nb else order[:0]
            if sgd:
                _weight_grad_panels(dz1, xb, w1t, dp, -lr, True, X, ahead)
            else:
                _weight_grad_panels(dz1, xb, gw1t, dp, 1.0, False, X, ahead)
        else:
            _axpy_rows_t(dz1, X, rows, gw1t, w1t, lr if sgd else 0.0)
        bias_grad_serial(dz1, gb1)
        step += 1
        if sgd:
            sgd_serial(flat[first:], gflat[first:], lr)
        else:
            _update(flat, gflat, s1, s2, opt, step, lr, beta, beta1, beta2, eps)
    for buf in (flat, gflat, s1, s2):
        _transpose_block(buf, 0, hidden, d)
        _transpose_block(buf, w2_at, c, hidden)
    return total, step


# -- mlp (and any 784 -> hidden -> 10 network): the first layer in panels -------------------
# The first layer's products (X·W1, 784 deep, and Xᵀ·dH) are the work: W1 -- and
# with it its gradient and optimizer state, which the elementwise updates treat
# alike -- lives in the micro-kernel's packed B panels (NR columns each, zero
# columns up to a whole panel) from the start of the epoch to its end. Nothing
# else is packed: the micro-kernel reads the gathered batch in place, along its
# rows for X·W1 and down its columns for Xᵀ·dH (fma_strided_rows), and dH's rows
# as B's, and writes W1's gradient straight into its panels. (Packing the batch
# twice per step cost more than both products.) The 10-wide second layer goes
# with the panels too, so that no pass between the two loops re-splits the work
# by rows: each forward task multiplies its panels of H by W2's rows for them
# (the logits in parts, one per panel), and each gradient task takes dL/dz1, b1's
# and W2's gradients for its own hidden units; between the loops one serial pass
# adds the parts and takes the softmax.
@njit_leaf
def _hidden_backward_panels(dz2f, n, w2t, c0, c1, a, act, C, edge, gb, with_gb):
    """C[:n, :c1 - c0] = dL/dz1's columns c0:c1 = (dL/dz2 · W2ᵀ) · act'(a), mlp's
    hidden layer: the product through the micro-kernel (dL/dz2's rows read in
    place as its A rows, the ten classes as the depth; W2ᵀ's rows as its B
    rows), then act' in one pass, which with ``with_gb`` also leaves the
    columns' sums (b1's gradient) in gb[c0:c1]. dz2f: dL/dz2's rows (10 floats
    each) with MR - 1 rows of slack after the n, which the edge tile reads and
    drops; c0 and c1 on panel boundaries."""
    c, hp = w2t.shape
    wf = w2t.reshape(w2t.size)
    c0, width = max(c0, 0), max(c1 - c0, 0)  # (provably non-negative: the loops below vectorise)
    for j0 in range(0, width, MNR):
        i0 = 0
        while i0 < n:
            rows = _tile_height(n - i0)
            _strided_tile(dz2f, i0 * c, 1, c, wf, c0 + j0, hp, c, C, i0, j0, rows, edge)
            i0 += rows
    gbs = gb[c0:c0 + width]
    if with_gb:
        for p in range(width):
            gbs[p] = 0
    for i in range(n):
        ci, ai = C[i], a[i, c0:c0 + width]
        if act == SIGMOID:
            for p in range(width):
                ci[p] *= ai[p] * (1 - ai[p])
        else:
            # a select, not a store under a branch: that loop stayed scalar
            for p in range(width):
                ci[p] = 0 if ai[p] <= 0 else ci[p]
        if with_gb:
            for p in range(width):
                gbs[p] += ci[p]


@njit
def _two_layer_params(flat, d, h, c):
    w1 = _view2(flat, 0, d, h)
    b1 = flat[d * h:d * h + h]
    o = d * h + h
    w2 = _view2(flat, o, h, c)
    b2 = flat[o + h * c:o + h * c + c]
    return w1, b1, w2, b2


@njit
def _to_panels(buf, rows, cols, panels_buf, inverse):
    """buf's leading rows x cols matrix <-> ceil(cols/NR) panels of rows x NR, the
    columns past cols zero."""
    a = buf[:rows * cols]
    for t in range((cols + MNR - 1) // MNR):
        for p in range(rows):
            for j in range(MNR):
                col = t * MNR + j
                if col >= cols:
                    if not inverse:
                        panels_buf[(t * rows + p) * MNR + j] = 0
                elif inverse:
                    a[p * cols + col] = panels_buf[(t * rows + p) * MNR + j]
                else:
                    panels_buf[(t * rows + p) * MNR + j] = a[p * cols + col]


# A short tile for the end of a run of rows: SHORT_MR x NR accumulators still
# cover the FMA units' latency (8 ymm on AVX2, 16 zmm on AVX-512). EDGE_MR is the
# kernel every tile but a full one takes (the short one, or MR where MR is no taller).
SHORT_MR = 4
EDGE_MR = min(SHORT_MR, MMR)
# The logits' parts: a panel's columns of H times W2's rows for them, ten classes
# padded to LOGIT_COLS, through the micro-kernel: LOGIT_MR rows a tile, as many as
# the registers hold accumulators for (with the B row's vectors and a broadcast)
# up to MR, then single rows. One part per panel, added in panel order: the same
# sums whatever the thread count.
LOGIT_COLS = 16
_LOGIT_VECTORS = max(1, LOGIT_COLS // _LANES)
LOGIT_MR = max(1, min(MMR, (TARGET["vector_registers"] - _LOGIT_VECTORS - 1) // _LOGIT_VECTORS))


@njit
def _tile_height(left):
    """The rows of the next tile when ``left`` rows of a run remain: MR, or at
    most EDGE_MR where the run ends in a remainder that a whole MR tile would
    pad (128 rows: twenty tiles of six, then two of four, where 22 of six
    compute four rows in the last only to drop them)."""
    if left >= MMR and not MMR < left <= 2 * EDGE_MR:
        return MMR
    return min(left, EDGE_MR)


@njit_leaf
def _strided_tile(A, a0, a_step, a_row, B, b0, ldb, kc, C, ci, cj, rows, edge):
    """C[ci:ci+rows, cj:cj+NR] = the micro-kernel's product with A read in place
    (fma_strided_rows), for a tile _tile_height gives: MR rows (an MR x NR
    kernel), or at most EDGE_MR (the EDGE_MR x NR kernel; fewer rows than that
    go through ``edge``, its other rows -- A's slack, which the caller keeps
    inside A -- dropped). Each element is the same chain of multiply-adds along
    the depth whichever kernel computes it."""
    if rows == MMR:
        fma_strided_rows(A, a0, a_step, a_row, B, b0, ldb, kc, C, ci, cj, False, MMR, MNR)
        return
    if rows == EDGE_MR:
        fma_strided_rows(A, a0, a_step, a_row, B, b0, ldb, kc, C, ci, cj, False, EDGE_MR, MNR)
        return
    fma_strided_rows(A, a0, a_step, a_row, B, b0, ldb, kc, edge, 0, 0, False, EDGE_MR, MNR)
    for r in range(rows):
        for j in range(MNR):
            C[ci + r, cj + j] = edge[r, j]


@njit
def task_grid(panels, threads):
    """(groups, splits): the tasks of the first layer's two products for a pool of
    ``threads``: groups of W1's panels, each group split over the rows (forward)
    and the features (backward) when there are more threads than panels."""
    groups = min(panels, max(1, threads))
    return groups, (max(1, threads) + groups - 1) // groups


@njit
def _share(i, parts, lo, hi):
    """[a, b): the i-th of ``parts`` near-equal runs of lo..hi-1."""
    return lo + i * (hi - lo) // parts, lo + (i + 1) * (hi - lo) // parts


@njit
def _tile_block(i, parts, count):
    """The i-th of ``parts`` blocks of ``count`` rows or features, in whole tiles
    of MR but the last."""
    a, b = _share(i, parts, 0, (count + MMR - 1) // MMR)
    return a * MMR, min(count, b * MMR)


@njit
def _task_share(task, groups, splits, panels, count):
    """Task (g, s) of the grid: its group g of W1's panels [t0, t1) (near-equal
    runs) and the s-th block [i0, i1) of ``count`` rows or features (_tile_block)."""
    g, s = task // splits, task % splits
    t0, t1 = _share(g, groups, 0, panels)
    i0, i1 = _tile_block(s, splits, count)
    return t0, t1, i0, i1


def _hidden_panels(xb, n, d, Wp, H, panels, groups, splits, edges, b1, act, w2p, parts, X, order, lo, hi):
    """H (n x panels·NR) = act(xb · W1 + b1), the gathered batch read in place (at
    least MR - 1 rows of slack after it) times W1's panels Wp (panels of d x NR),
    and the logits' parts: parts[t] (n x LOGIT_COLS) = H's panel t times its
    rows of W2 (w2p: hp x LOGIT_COLS, zero past the hidden units and classes).
    Task (g, s) computes its group g of panels for the s-th block of rows (whole
    tiles but the last, whose edge tile reads and drops the slack rows); the
    backward pass (_batch_t_times) gives the same tasks the same panels, so a
    panel of W1 -- read here, stepped there -- stays with one thread instead of
    crossing between caches every step (Numba's thread pool hands a loop's
    iterations out in equal contiguous runs, so task i of two loops of the same
    length runs on the same thread). Each task also prefetches its share of
    the next batch's rows (order[lo:hi] of X), gathered during the backward pass."""
    tasks = groups * splits
    hp = panels * MNR
    hf, wf = H.reshape(H.size), w2p.reshape(w2p.size)
    for task in prange(tasks):
        t0, t1, r0, r1 = _task_share(task, groups, splits, panels, n)
        # the rows of the next batch this task's thread gathers (_batch_t_times),
        # asked of memory a share of their lines after each tile
        ahead, ahead_end = _share(task, tasks, lo, hi)
        lines = (X.shape[1] * X.itemsize + 63) // 64
        tiles = max(1, (t1 - t0) * ((r1 - r0 + MMR - 1) // MMR))
        per_tile = ((ahead_end - ahead) * lines + tiles - 1) // tiles
        line = 0
        for t in range(t0, t1):
            i0 = r0
            while i0 < r1:
                rows = _tile_height(r1 - i0)
                _strided_tile(xb, i0 * d, 1, d, Wp, t * d * MNR, MNR, d, H, i0, t * MNR, rows, edges[task])
                i0 += rows
                ahead, line = _prefetch_rows_lines(X, order, ahead, ahead_end, line, lines, per_tile, False)
        for i in range(r0, r1):
            bias_act_span(hf, i * hp + t0 * MNR, b1, t0 * MNR, (t1 - t0) * MNR, act)
        for t in range(t0, t1):
            part = parts[t]
            i0 = r0
            while i0 + LOGIT_MR <= r1:
                fma_strided_rows(hf, i0 * hp + t * MNR, 1, hp, wf, t * MNR * LOGIT_COLS, LOGIT_COLS, MNR, part, i0,
                                 0, False, LOGIT_MR, LOGIT_COLS)
                i0 += LOGIT_MR
            for i in range(i0, r1):
                fma_strided_rows(hf, i * hp + t * MNR, 1, hp, wf, t * MNR * LOGIT_COLS, LOGIT_COLS, MNR, part, i,
                                 0, False, 1, LOGIT_COLS)
        _prefetch_rows_lines(X, order, ahead, ahead_end, line, lines, (ahead_end - ahead) * lines, False)


_hidden_panels_serial, _hidden_panels_parallel = serial_and_parallel(_hidden_panels)


@njit(fastmath=FASTMATH_IN_ORDER)
def _logits_softmax(parts, n, b2p, yb, z, dz2):
    """The logits z (n x LOGIT_COLS) = b2p + the parts (in panel order), then
    softmax cross-entropy against yb with dL/dz2's ten columns into dz2. b2p
    holds b2 and then -inf, the parts zeros past the ten classes, so the padding
    classes get probability exactly 0. The parts add and the exponentials run
    over the whole batch in flat loops, which vectorise (exp_nonpositive is
    plain arithmetic); row by row, LLVM unrolled the sixteen classes and
    vectorised across the parts, or left the exponentials scalar. The sums keep
    their written order (FASTMATH_IN_ORDER). Returns the batch's mean loss."""
    c, w = dz2.shape[1], LOGIT_COLS
    scale = dz2.dtype.type(1.0 / n)
    zf = z.reshape(z.size)
    for i in range(n):
        for j in range(w):
            zf[i * w + j] = b2p[j]
    for t in range(parts.shape[0]):
        pt = parts[t].reshape(parts.shape[1] * w)
        for k in range(n * w):
            zf[k] += pt[k]
    total = 0.0
    for i in range(n):
        mx = zf[i * w]
        for j in range(1, w):
            mx = max(mx, zf[i * w + j])
        for j in range(w):
            zf[i * w + j] -= mx
        total -= zf[i * w + yb[i]]
    for k in range(n * w):
        zf[k] = exp_nonpositive(zf[k])
    for i in range(n):
        s = dz2.dtype.type(0)
        for j in range(w):
            s += zf[i * w + j]
        inv = scale / s
        for j in range(c):
            dz2[i, j] = zf[i * w + j] * inv
        dz2[i, yb[i]] -= scale
        total += np.log(s)
    return total / n


def _batch_t_times(xb, n, d, D, G, panels, groups, splits, edges, W, S1, S2, opt, step, lr, beta, beta1,
                   beta2, eps, X, order, lo, hi, x_next, dz2f, w2t, H, act, gw2t, gb1):
    """The way back through the output layer, then W1's gradient in panels, and
    W1's optimizer step. Task (g, s) runs its group g of W1's panels (the
    forward pass's, so they stay with their threads), hidden units c0:c1: dL/dz1
    for them into its own D[task] (_hidden_backward_panels, from dL/dz2's rows
    dz2f, W2 transposed in w2t and the hidden layer's output H), and for s = 0
    their gradients of b1 (gb1[c0:c1]) and W2 (gw2t[:, c0:c1], transposed: the
    ten classes of dL/dz2 as two five-row A panels, H's rows as the B rows). Then
    G's rows t·d .. t·d + d - 1 (NR wide) = xbᵀ · dL/dz1's panel t, the batch as
    the depth: the panel's MR features of each sample are MR consecutive floats
    of its row in xb (Aᵀ read in place, one more slack row after the n), D's
    rows are B's rows. No packing of either operand. The s-th block of the
    features, a block of MR features through each of the group's panels in turn
    (its lines of xb read from L2 once and reused from L1); it then steps its
    rows of those panels of W (and of the optimizer's state S1, S2) while their
    gradient is in cache, and gathers its share of the next batch (rows
    order[lo:hi] of X) into x_next."""
    g_flat = G.reshape(G.size)
    tasks = groups * splits
    for task in prange(tasks):
        t0, t1, f_lo, f_hi = _task_share(task, groups, splits, panels, d)
        c0, c1 = t0 * MNR, t1 * MNR
        dt, first = D[task], task % splits == 0
        _hidden_backward_panels(dz2f, n, w2t, c0, c1, H, act, dt, edges[task], gb1, first)
        if first:
            hf = H.reshape(H.size)
            for j0 in range(c0, c1, MNR):
                for half in range(2):
                    fma_strided_rows(dz2f, 5 * half, 10, 1, hf, j0, H.shape[1], n, gw2t, 5 * half, j0, False, 5, MNR)
        df, ldd = dt.reshape(dt.size), dt.shape[1]
        f0 = f_lo
        while f0 < f_hi:
            rows = _tile_height(f_hi - f0)
            for t in range(t0, t1):
                _strided_tile(xb, f0, d, 1, df, (t - t0) * MNR, ldd, n, G, t * d + f0, 0, rows, edges[task])
            f0 += rows
        for t in range(t0, t1):
            p0, p1 = (t * d + f_lo) * MNR, (t * d + f_hi) * MNR
            # (an optimizer's unused state is empty, and so is its slice)
            _update(W[p0:p1], g_flat[p0:p1], S1[p0:p1], S2[p0:p1], opt, step, lr, beta, beta1, beta2, eps,
                    False)
        q0, q1 = _share(task, tasks, lo, hi)
        _batch_rows(X, order, q0, q1, False, x_next[q0 - lo:])


_batch_t_times_serial, _batch_t_times_parallel = serial_and_parallel(_batch_t_times)


# The passes the steps below call: the serial ones here; the parallel build of
# the steps (specialize, after them) replaces both with their parallel twins.
_hidden_pass, _gradient_pass = _hidden_panels_serial, _batch_t_times_serial


def _two_layer_steps(X, targets, order, starts, m, flat, gflat, s1, s2, hidden, act, threads,
                     opt, step, lr, beta, beta1, beta2, eps):
    """The epoch of two_layer_epoch (m: its largest batch's rows), compiled
    twice: with the serial passes, or with the parallel ones and their tasks
    cut for a pool of ``threads``. (The
    two-layer epochs stay apart because their first layers differ: panels here,
    a transposed W1 and dot products in nielsen_epoch.)"""
    d, c = X.shape[1], 10
    check_labels(targets, targets.shape[0], c)  # once: the steps' rows index by them
    dh = d * hidden
    panels = (hidden + MNR - 1) // MNR
    hp = panels * MNR
    w1p, gw1p = np.empty(panels * d * MNR, X.dtype), np.zeros(panels * d * MNR, X.dtype)
    s1p, s2p = np.empty(panels * d * MNR if s1.size else 0, X.dtype), np.empty(panels * d * MNR if s2.size else 0, X.dtype)
    for buf, pbuf in ((flat, w1p), (s1, s1p), (s2, s2p)):
        if buf.size:
            _to_panels(buf, d, hidden, pbuf, False)
    gw1_panels = gw1p.reshape((panels * d, MNR))
    _, b1, w2, b2 = _two_layer_params(flat, d, hidden, c)
    _, gb1, gw2, gb2 = _two_layer_params(gflat, d, hidden, c)
    nb = starts.size - 1
    # the gathered batch, MR rows of slack (the edge tiles read and drop them), the
    # products taking it flat; two of them: the gradient pass gathers the next
    # batch into the other one
    x_bufs = np.zeros((2, ((m + MMR - 1) // MMR + 1) * MMR, d), X.dtype)
    if nb:
        _batch_rows(X, order, starts[0], starts[1], False, x_bufs[0])
    groups, splits = task_grid(panels, threads)
    tasks = groups * splits
    edges = np.empty((tasks, MMR, MNR), X.dtype)
    # the hidden layer at the padded width hp, on contiguous arrays: the padding's
    # weights (W1's panel columns, b1's and W2's rows) are zero, so its units
    # contribute exactly nothing forward and get no gradient
    h_buf, z_buf = np.empty((m, hp), X.dtype), np.empty((m, LOGIT_COLS), X.dtype)
    parts = np.empty((panels, m, LOGIT_COLS), X.dtype)
    b2p = np.full(LOGIT_COLS, -np.inf, X.dtype)
    # dL/dz2 with MR rows of slack: _hidden_backward_panels' edge tile reads them;
    # dL/dz1 a task's panels wide, a buffer per task
    dz_buf = np.zeros((m + MMR, c), X.dtype)
    dz2f = dz_buf.reshape(dz_buf.size)
    dh_bufs = np.zeros((tasks, m, ((panels + groups - 1) // groups) * MNR), X.dtype)
    w2t, gw2t = np.zeros((c, hp), X.dtype), np.empty((c, hp), X.dtype)
    w2p = np.zeros((hp, LOGIT_COLS), X.dtype)
    b1p, gb1p = np.zeros(hp, X.dtype), np.empty(hp, X.dtype)
    total = 0.0
    for bi in range(nb):
        lo, hi = starts[bi], starts[bi + 1]
        n = hi - lo
        # this batch was gathered during the last step's gradient pass; the next
        # one is gathered during this one's, its rows prefetched in the forward pass
        x_now, x_next = x_bufs[bi % 2], x_bufs[(bi + 1) % 2]
        xb = x_now.reshape(x_now.size)
        next_lo, next_hi = (hi, starts[bi + 2]) if bi + 1 < nb else (hi, hi)
        yb = targets[order[lo:hi]]
        h, dz2 = h_buf[:n], dz_buf[:n]
        for p in range(hidden):
            b1p[p] = b1[p]
            for j in range(c):
                w2t[j, p] = w2[p, j]
                w2p[p, j] = w2[p, j]
        b2p[:c] = b2
        _hidden_pass(xb, n, d, w1p, h, panels, groups, splits, edges, b1p, act, w2p, parts, X, order, next_lo,
                     next_hi)
        total += _logits_softmax(parts, n, b2p, yb, z_buf, dz2)
        bias_grad_serial(dz2, gb2)
        step += 1
        _gradient_pass(xb, n, d, dh_bufs, gw1_panels, panels, groups, splits, edges, w1p, s1p, s2p, opt, step,
                       lr, beta, beta1, beta2, eps, X, order, next_lo, next_hi, x_next, dz2f, w2t, h, act, gw2t, gb1p)
        for p in range(hidden):
            gb1[p] = gb1p[p]
            for j in range(c):
                gw2[p, j] = gw2t[j, p]
        _update(flat[dh:], gflat[dh:], s1[dh:], s2[dh:], opt, step, lr, beta, beta1, beta2, eps, False)
    for buf, pbuf in ((flat, w1p), (gflat, gw1p), (s1, s1p), (s2, s2p)):
        if buf.size:
            _to_panels(buf, d, hidden, pbuf, True)
    return total, step


_TWO_LAYER_STEPS = {
    parallel: specialize([_two_layer_steps], "_parallel" if parallel else "_serial", dict(
        _hidden_pass=_hidden_panels_parallel if parallel else _hidden_panels_serial,
        _gradient_pass=_batch_t_times_parallel if parallel else _batch_t_times_serial))["_two_layer_steps"]
    for parallel in (False, True)}


def two_layer_epoch(X, targets, order, starts, contiguous, flat, gflat, s1, s2, hidden, act, threads,
                    opt, step, lr, beta, beta1, beta2, eps, parallel):
    """784 -> hidden -> 10 with hidden activation ``act`` and a softmax output
    under cross-entropy; ``threads``: the size of the thread pool the parallel
    passes run on (their tasks are cut for it). The serial build runs where the
    largest batch's product is too small to wake the pool (PARALLEL_MIN_WORK)
    or ``parallel`` is off; deciding here, before either is called, compiles
    only the build a run uses. Returns (sum of batch losses, optimizer steps
    taken)."""
    m = _largest_batch(starts)
    hp = -(-hidden // MNR) * MNR
    par = bool(parallel) and m * X.shape[1] * hp >= PARALLEL_MIN_WORK
    return _TWO_LAYER_STEPS[par](X, targets, order, starts, m, flat, gflat, s1, s2, hidden, act,
                                 threads if par else 1, opt, step, lr, beta, beta1, beta2, eps)


# network -> (epoch function, the arguments it takes after the optimizer state):
EPOCHS = {"linear": (linear_epoch, lambda net: ()),
          "nielsen": (nielsen_epoch, lambda net: (net.hidden,)),
          "mlp": (two_layer_epoch, lambda net: (net.hidden, RELU, numba.get_num_threads()))}
