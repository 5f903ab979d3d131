"""Valid, stride-1 NCHW convolution and 2x2 max-pool, forward and backward (the cnn).

    mnist-bench kernels --families conv2d_forward,conv2d_backward,maxpool2

Three designs are kept as versions so the choice stays measured:
  implicit  implicit GEMM: the micro-kernel reads the patches straight from the
          input through two tables of offsets (output pixel, filter tap), so no
          patch matrix is built; the output and the gradients go through tiles
          that stay in cache: a task's block of output pixels (then written
          NCHW), a block of pixels of dy (transposed on the way) for the weight
          gradient, one sample's columns Wᵀ·dy for the input gradient (then
          scattered back at once); the backends' default;
  gemm    the batch's patches copied into one (C·KH·KW) x (N·OH·OW) matrix,
          then one packed GEMM with the weights (kernels.matmul) for the
          forward pass, the weight gradient and the input gradient (scattered
          back by col2im);
  direct  loops n, f, c, kh, kw over whole output rows: the innermost loop
          runs along an output row, contiguous in x and y; samples spread over
          threads, the weight gradient over output channels.
Every loop body is written once and compiled serial and parallel.
"""
import numba
import numpy as np
from numba import prange

from ..models.reference import NumpyOps
from ._numba import TARGET, TILE, njit, serial_and_parallel, specialize
from .family import KernelFamily
from .fma_codegen import fma_panel_rows, fma_table_rows
from .matmul import PACKING, TILE_F64, gemm_views


def _check_conv(x, w):
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x must be (N, C, H, W) and w (F, C, KH, KW) with the same C; "
                         f"got {x.shape} and {w.shape}")
    if x.shape[2] < w.shape[2] or x.shape[3] < w.shape[3]:
        raise ValueError(f"conv2d: kernel {w.shape[2:]} larger than the image {x.shape[2:]}")


# -- forward ---------------------------------------------------------------------------
@njit
def _conv_sample(x, w, b, y, n):
    f_, c_, kh_, kw_ = w.shape
    oh_, ow_ = y.shape[2], y.shape[3]
    for f in range(f_):
        for i in range(oh_):
            for j in range(ow_):
                y[n, f, i, j] = b[f]
        for c in range(c_):
            for kh in range(kh_):
                for kw in range(kw_):
                    wv = w[f, c, kh, kw]
                    for i in range(oh_):
                        xrow = x[n, c, i + kh, kw:kw + ow_]
                        yrow = y[n, f, i]
                        for j in range(ow_):
                            yrow[j] += wv * xrow[j]


def _conv2d_direct(x, w, b, y):
    for n in prange(x.shape[0]):
        _conv_sample(x, w, b, y, np.intp(n))


conv2d_direct_serial, conv2d_direct_parallel = serial_and_parallel(_conv2d_direct)


# -- im2col + GEMM over the whole batch ---------------------------------------------------
MIN_TASKS = 16
# The batch's patches become one (C·KH·KW) x (N·OH·OW) matrix, so a layer is ONE
# packed GEMM with the weights (F x C·KH·KW) -- long enough in every dimension
# for the micro-kernel -- instead of N small ones that repack the weights each
# time. The backward reuses the forward's columns for the weight gradient and
# scatters the input gradient back (col2im).
@njit
def _sample_runs(n_, c_):
    """Runs of samples per channel, so that channels x runs make at least
    MIN_TASKS tasks (a one-channel input still spreads over the threads)."""
    return max(1, min(n_, (MIN_TASKS + c_ - 1) // c_))


def _im2col(x, kh_, kw_, cols):
    """cols[(c·KH + kh)·KW + kw, n·P + i·OW + j] = x[n, c, i + kh, j + kw]; a task
    per input channel and run of samples, the samples in order: each plane
    x[n, c] is read once while its KH·KW rows of cols are written front to back
    (a task per row of cols read the whole channel KH·KW times over)."""
    n_, c_ = x.shape[0], x.shape[1]
    oh_, ow_ = x.shape[2] - kh_ + 1, x.shape[3] - kw_ + 1
    p_ = oh_ * ow_
    runs = _sample_runs(n_, c_)
    for t in prange(c_ * runs):
        c, run = t // runs, t % runs
        for n in range(run * n_ // runs, (run + 1) * n_ // runs):
            plane = x[n, c]
            for kh in range(kh_):
                for kw in range(kw_):
                    r = (c * kh_ + kh) * kw_ + kw
                    for i in range(oh_):
                        base = n * p_ + i * ow_
                        for j in range(ow_):
                            cols[r, base + j] = plane[i + kh, j + kw]


def _from_columns(y2, b, y):
    """y[n, f, p] = y2[f, n·P + p] + b[f]: the GEMM's output back to NCHW."""
    n_, f_ = y.shape[0], y.shape[1]
    p_ = y.shape[2] * y.shape[3]
    for n in prange(n_):
        for f in range(f_):
            yf = y[n, f].ravel()
            for q in range(p_):
                yf[q] = y2[f, n * p_ + q] + b[f]


def _to_columns(dy, dy2, db):
    """dy2[f, n·P + p] = dy[n, f, p], and db = the sum of dy over n and p (one
    partial sum per sample, added in float64: the batch's sum is ~10⁵ terms)."""
    n_, f_ = dy.shape[0], dy.shape[1]
    p_ = dy.shape[2] * dy.shape[3]
    for f in prange(f_):
        total = 0.0
        for n in range(n_):
            d = dy[n, f].ravel()
            s = dy.dtype.type(0)
            for q in range(p_):
                dy2[f, n * p_ + q] = d[q]
                s += d[q]
            total += s
        db[f] = total


@njit
def add_patches(plane, cols, c, kh_, kw_, col0):
    """plane (one channel of one sample of dx) = the sum of its patches' columns:
    plane[i + kh, j + kw] += cols[(c·KH + kh)·KW + kw, col0 + i·OW + j]."""
    ow_ = plane.shape[1] - kw_ + 1
    oh_ = plane.shape[0] - kh_ + 1
    plane[:] = 0
    for kh in range(kh_):
        for kw in range(kw_):
            r = (c * kh_ + kh) * kw_ + kw
            for i in range(oh_):
                base = col0 + i * ow_
                for j in range(ow_):
                    plane[i + kh, j + kw] += cols[r, base + j]


def _col2im(dcols, kh_, kw_, dx):
    """dx[n, c, i + kh, j + kw] += dcols[(c·KH + kh)·KW + kw, n·P + i·OW + j]; one
    task per input channel and run of samples (no two tasks add into the same
    element), the samples in order, so each of the channel's KH·KW rows of
    dcols is read front to back once (a task per (n, c) plane read them in
    pieces scattered over the whole matrix)."""
    n_, c_ = dx.shape[0], dx.shape[1]
    oh_, ow_ = dx.shape[2] - kh_ + 1, dx.shape[3] - kw_ + 1
    p_ = oh_ * ow_
    runs = _sample_runs(n_, c_)
    for t in prange(c_ * runs):
        c, run = t // runs, t % runs
        for n in range(run * n_ // runs, (run + 1) * n_ // runs):
            add_patches(dx[n, c], dcols, c, kh_, kw_, n * p_)


im2col_serial, im2col_parallel = serial_and_parallel(_im2col)
from_columns_serial, from_columns_parallel = serial_and_parallel(_from_columns)
to_columns_serial, to_columns_parallel = serial_and_parallel(_to_columns)
col2im_serial, col2im_parallel = serial_and_parallel(_col2im)


def im2col(x, kh, kw, parallel=False):
    n, c, h, w = x.shape
    cols = np.empty((c * kh * kw, n * (h - kh + 1) * (w - kw + 1)), x.dtype)
    (im2col_parallel if parallel else im2col_serial)(x, kh, kw, cols)
    return cols


def conv2d_gemm(x, w, b, parallel=False, cols=None):
    """(y, cols): the convolution as one GEMM over the batch's patch columns."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    cols = im2col(x, kh, kw, parallel) if cols is None else cols
    y2 = np.empty((f, cols.shape[1]), x.dtype)
    gemm_views(w.reshape(f, c * kh * kw), cols, y2, parallel)
    y = np.empty((n, f, h - kh + 1, wd - kw + 1), x.dtype)
    (from_columns_parallel if parallel else from_columns_serial)(y2, b, y)
    return y, cols


def conv2d_gemm_backward(x, w, dy, dw_out, db_out, need_dx=True, parallel=False, cols=None):
    """dL/dw = dY·colsᵀ, dL/db from dY, dL/dx = col2im(Wᵀ·dY); ``cols`` from the
    forward pass when the caller kept them."""
    f, c, kh, kw = w.shape
    cols = im2col(x, kh, kw, parallel) if cols is None else cols
    dy2 = np.empty((f, cols.shape[1]), dy.dtype)
    (to_columns_parallel if parallel else to_columns_serial)(dy, dy2, db_out)
    if c * kh * kw > f:
        # computed as dwᵀ = cols·dYᵀ: the long, deep patch matrix is then the A
        # operand, packed in row blocks by the tasks that use them (as colsᵀ,
        # the B operand, it was transposed into panels: slower, measured)
        dwt = np.empty((c * kh * kw, f), dy.dtype)
        gemm_views(cols, dy2.T, dwt, parallel)
        dw_out.reshape(f, c * kh * kw)[:] = dwt.T
    else:
        gemm_views(dy2, cols.T, dw_out.reshape(f, c * kh * kw), parallel)
    if not need_dx:
        return None
    w2 = w.reshape(f, c * kh * kw)
    dcols = np.empty(cols.shape, dy.dtype)
    gemm_views(w2.T, dy2, dcols, parallel)
    dx = np.empty(x.shape, dy.dtype)
    (col2im_parallel if parallel else col2im_serial)(dcols, kh, kw, dx)
    return dx


# -- implicit GEMM --------------------------------------------------------------------
# The tile of the packed GEMM (float32; float64 compiles the same bodies with its
# own), at most TABLE_MAX_ROWS rows (table_tile). Rows and columns are
# zero-padded to whole tiles, so no edge code runs.
MR, NR = TILE["MR"], TILE["NR"]
DW_DEPTH = 512   # output pixels per block of the weight gradient: dy's block stays in L2
# fma_table_rows keeps a pointer per row in a general-purpose register, beside
# the depth index and its end, the taps' table, the current tap's offset, B's
# pointer, the stack pointer and one scratch register. With more rows than the
# rest leaves, LLVM's depth loop spills -- on x86-64 from ten rows on, and then
# the vector accumulators too (the loop's assembly; tested) -- so a tall
# matmul tile (13 x 32, derived for AVX-512) is cut to this height here.
TABLE_MAX_ROWS = TARGET["general_registers"] - 7


def table_tile(tile):
    """The implicit GEMM's tile for a matmul tile: its NR, and its MR up to TABLE_MAX_ROWS."""
    return dict(tile, MR=max(1, min(tile["MR"], TABLE_MAX_ROWS)))


@njit
def _padded(n, multiple):
    return (n + multiple - 1) // multiple * multiple


@njit
def _tap_offsets(c_, h_, w_, kh_, kw_, multiple):
    """Each filter tap's offset in a sample (C, H, W), in the weights' (c, kh, kw)
    order; zeros past the last one, to a whole number of ``multiple``."""
    out = np.zeros(_padded(c_ * kh_ * kw_, multiple), np.int64)
    for c in range(c_):
        for kh in range(kh_):
            for kw in range(kw_):
                out[(c * kh_ + kh) * kw_ + kw] = (c * h_ + kh) * w_ + kw
    return out


@njit
def _pixel_offsets(x_shape, oh_, ow_, pad):
    """Each output pixel's patch corner in x (N, C, H, W), pixels n-major; ``pad``
    zeros after the last one (the rows of a padded tile read valid memory)."""
    n_, c_, h_, w_ = x_shape
    out = np.zeros(n_ * oh_ * ow_ + pad, np.int64)
    for n in range(n_):
        for i in range(oh_):
            for j in range(ow_):
                out[(n * oh_ + i) * ow_ + j] = (n * c_ * h_ + i) * w_ + j
    return out


def _implicit_forward(x, wp, b, y, taps, pixels, tasks):
    """y = conv(x, w) + b: each task multiplies its samples' output pixels
    (rows) by the weights into a tile buffer, then writes them NCHW with the
    bias."""
    n_, f_, oh_, ow_ = y.shape
    p_ = oh_ * ow_
    k_ = x.shape[1] * (x.shape[2] - oh_ + 1) * (x.shape[3] - ow_ + 1)
    fpad = wp.size // k_
    xf = x.reshape(x.size)
    for t in prange(tasks):
        s0, s1 = t * n_ // tasks, (t + 1) * n_ // tasks
        per = max(1, min(s1 - s0, 1024 // p_ + 1))  # samples per tile buffer: it stays in L2
        out = np.empty((_padded(per * p_, MR), fpad), y.dtype)
        for n0 in range(s0, s1, per):
            n1 = min(s1, n0 + per)
            rows = _padded((n1 - n0) * p_, MR)
            for j in range(fpad // NR):
                for r in range(0, rows, MR):
                    fma_table_rows(xf, pixels, n0 * p_ + r, taps, 0, wp, j * k_ * NR, NR, k_,
                                   out, r, j * NR, False, MR, NR)
            for n in range(n0, n1):
                for f in range(f_):
                    yf = y[n, f].reshape(p_)
                    bias = b[f]
                    for q in range(p_):
                        yf[q] = out[(n - n0) * p_ + q, f] + bias


def _implicit_weight_grad(x, dy, taps, pixels, part, part_db):
    """part[t] = task t's share of dWᵀ (patchesᵀ·dy over its output pixels),
    part_db[t] = its share of db: dy's pixels in blocks, each transposed into a
    buffer (pixels x filters, zero columns to a whole panel) that is the B
    operand while it is in cache; the patches are A's rows, read through the
    tables (taps as rows, pixels as depth)."""
    n_, f_, oh_, ow_ = dy.shape
    p_ = oh_ * ow_
    m_ = n_ * p_
    tasks, kpad, fpad = part.shape
    xf = x.reshape(x.size)
    dyf = dy.reshape(dy.size)
    for t in prange(tasks):
        m0, m1 = t * m_ // tasks, (t + 1) * m_ // tasks
        block = np.zeros((DW_DEPTH, fpad), dy.dtype)
        sums = np.zeros(f_, np.float64)
        for d0 in range(m0, m1, DW_DEPTH):
            kc = min(DW_DEPTH, m1 - d0)
            m = d0
            while m < d0 + kc:  # the block's pixels, a run per sample
                n, q0 = m // p_, m % p_
                q1 = min(p_, q0 + d0 + kc - m)
                base = n * f_ * p_
                # a pixel at a time, its filters gathered: the block's row is
                # written whole (a filter at a time wrote a line per pixel)
                for q in range(q0, q1):
                    row = block[m - d0 + q - q0]
                    for f in range(f_):
                        v = dyf[base + f * p_ + q]
                        row[f] = v
                        sums[f] += v
                m += q1 - q0
            for j in range(fpad // NR):
                for r in range(0, kpad, MR):
                    fma_table_rows(xf, taps, r, pixels, d0, block.reshape(block.size), j * NR, fpad, kc,
                                   part[t], r, j * NR, d0 > m0, MR, NR)
        if m1 == m0:
            part[t] = 0
        for f in range(f_):
            part_db[t, f] = sums[f]


def _implicit_input_grad(wa, dy, kh_, kw_, dx, tasks):
    """dx = the transposed convolution of dy: per sample, its columns Wᵀ·dy[n]
    (taps x pixels) in a buffer, scattered into dx[n] at once (col2im)."""
    n_, f_, oh_, ow_ = dy.shape
    c_ = dx.shape[1]
    p_ = oh_ * ow_
    ppad = _padded(p_, NR)
    kpad = wa.size // f_
    for t in prange(tasks):
        b = np.zeros((f_, ppad), dy.dtype)
        cols = np.empty((kpad, ppad), dy.dtype)
        bf = b.reshape(b.size)
        for n in range(t * n_ // tasks, (t + 1) * n_ // tasks):
            for f in range(f_):
                d = dy[n, f].reshape(p_)
                for q in range(p_):
                    b[f, q] = d[q]
            for j in range(ppad // NR):
                for r in range(0, kpad, MR):
                    fma_panel_rows(wa, (r // MR) * f_ * MR, bf, j * NR, ppad, f_, cols, r, j * NR, False, MR, NR)
            for c in range(c_):
                add_patches(dx[n, c], cols, c, kh_, kw_, 0)


_IMPLICIT_BODIES = (_implicit_forward, _implicit_weight_grad, _implicit_input_grad)


def _build_implicit(tile, suffix):
    """(serial, parallel) {name: dispatcher} of the implicit-GEMM bodies for a
    tile (one table_tile gives)."""
    constants = dict(MR=tile["MR"], NR=tile["NR"])
    names = [f.__name__ for f in _IMPLICIT_BODIES]
    return (specialize(list(_IMPLICIT_BODIES), suffix, constants),
            specialize(list(_IMPLICIT_BODIES), suffix + "_parallel", constants, parallel=names))


_IMPLICIT = {np.dtype(dt): (table_tile(t), _build_implicit(table_tile(t), suffix))
             for dt, t, suffix in ((np.float32, TILE, "_f32"), (np.float64, TILE_F64, "_f64"))}


def _implicit(dtype, parallel):
    """(tile, kernels, the matmul's packing routines) for a dtype, and the
    number of tasks for the threads."""
    tile, (serial, par) = _IMPLICIT[np.dtype(dtype)]
    return (tile, (par if parallel else serial), PACKING[np.dtype(dtype)],
            numba.get_num_threads() if parallel else 1)


def _pack_weights(w2, nr, pack):
    """The weights (F, K) as the B panels of patches·Wᵀ: K rows of nr filters a
    panel, zero columns to a whole panel (the matmul's packing of Bᵀ)."""
    f, k = w2.shape
    wp = np.empty(_padded(f, nr) * k, w2.dtype)
    pack["_pack_b"](w2, True, 0, k, 0, f, wp)
    return wp


def _pack_weights_t(w2, kpad, mr):
    """Wᵀ (K, F) as the A panels of Wᵀ·dy: F groups of mr taps a panel, zero taps
    to ``kpad`` (the layout of the matmul's packed A, at the implicit tile's MR)."""
    f, k = w2.shape
    padded = np.zeros((f, kpad), w2.dtype)
    padded[:, :k] = w2
    return np.ascontiguousarray(padded.reshape(f, kpad // mr, mr).transpose(1, 0, 2)).reshape(kpad * f)


def conv2d_implicit(x, w, b, parallel=False):
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    tile, k, pack, tasks = _implicit(x.dtype, parallel)
    wp = _pack_weights(w.reshape(f, c * kh * kw), tile["NR"], pack)
    y = np.empty((n, f, oh, ow), x.dtype)
    tasks = min(tasks, n)
    k["_implicit_forward"](x, wp, b, y, _tap_offsets(c, h, wd, kh, kw, 1),
                           _pixel_offsets(x.shape, oh, ow, tile["MR"]), tasks)
    return y


def conv2d_implicit_backward(x, w, dy, dw_out, db_out, need_dx=True, parallel=False):
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    tile, k, pack, tasks = _implicit(x.dtype, parallel)
    kdepth = c * kh * kw
    taps = _tap_offsets(c, h, wd, kh, kw, tile["MR"])
    part = np.empty((max(1, min(tasks, n * oh * ow // DW_DEPTH)), taps.size, _padded(f, tile["NR"])), x.dtype)
    part_db = np.empty((part.shape[0], f), np.float64)
    k["_implicit_weight_grad"](x, dy, taps, _pixel_offsets(x.shape, oh, ow, 0), part, part_db)
    dw_out.reshape(f, kdepth)[:] = part.sum(axis=0)[:kdepth, :f].T
    db_out[:] = part_db.sum(axis=0)
    if not need_dx:
        return None
    dx = np.empty(x.shape, dy.dtype)
    k["_implicit_input_grad"](_pack_weights_t(w.reshape(f, kdepth), taps.size, tile["MR"]), dy, kh, kw, dx,
                              min(tasks, n))
    return dx


METHODS = ("implicit", "gemm", "direct")
DEFAULT_METHOD = "implicit"


def conv2d(x, w, b, parallel=False, method=DEFAULT_METHOD):
    """(N,C,H,W) * (F,C,KH,KW) + b -> (N,F,H-KH+1,W-KW+1)."""
    _check_conv(x, w)
    if method == "implicit":
        return conv2d_implicit(x, w, b, parallel)
    if method == "gemm":
        return conv2d_gemm(x, w, b, parallel)[0]
    if method != "direct":
        raise ValueError(f"unknown conv method {method!r}; choose from {', '.join(METHODS)}")
    n, _, h, wd = x.shape
    f, c, kh, kw = w.shape
    y = np.empty((n, f, h - kh + 1, wd - kw + 1), x.dtype)
    (conv2d_direct_parallel if parallel else conv2d_direct_serial)(x, w, b, y)
    return y


# -- backward ------------------------------------------------------------------------
@njit
def _conv_dw_filter(x, dy, dw, db, f):
    n_, c_, _, _ = x.shape
    _, _, kh_, kw_ = dw.shape
    oh_, ow_ = dy.shape[2], dy.shape[3]
    s = dy[0, 0, 0, 0] * 0
    for n in range(n_):
        for i in range(oh_):
            for j in range(ow_):
                s += dy[n, f, i, j]
    db[f] = s
    for c in range(c_):
        for kh in range(kh_):
            for kw in range(kw_):
                s = dy[0, 0, 0, 0] * 0
                for n in range(n_):
                    for i in range(oh_):
                        xrow = x[n, c, i + kh, kw:kw + ow_]
                        dyrow = dy[n, f, i]
                        for j in range(ow_):
                            s += dyrow[j] * xrow[j]
                dw[f, c, kh, kw] = s


@njit
def _conv_dx_sample(w, dy, dx, n):
    # the forward's loop nest (_conv_forward_sample) run as its transpose: the same
    # walk over filters, channels and taps, scattering dy into dx
    f_, c_, kh_, kw_ = w.shape
    oh_, ow_ = dy.shape[2], dy.shape[3]
    dx[n] = 0
    for f in range(f_):
        for c in range(c_):
            for kh in range(kh_):
                for kw in range(kw_):
                    wv = w[f, c, kh, kw]
                    for i in range(oh_):
                        dxrow = dx[n, c, i + kh, kw:kw + ow_]
                        dyrow = dy[n, f, i]
                        for j in range(ow_):
                            dxrow[j] += wv * dyrow[j]


def _conv2d_backward(x, w, dy, dw, db, dx, need_dx):
    for f in prange(w.shape[0]):
        _conv_dw_filter(x, dy, dw, db, np.intp(f))
    if need_dx:
        for n in prange(x.shape[0]):
            _conv_dx_sample(w, dy, dx, np.intp(n))


conv2d_backward_serial, conv2d_backward_parallel = serial_and_parallel(_conv2d_backward)


def conv2d_backward(x, w, dy, dw_out, db_out, need_dx=True, parallel=False, method=DEFAULT_METHOD,
                    cols=None):
    """Writes dL/dw, dL/db into dw_out, db_out; returns dL/dx or None."""
    _check_conv(x, w)
    expected = (x.shape[0], w.shape[0], x.shape[2] - w.shape[2] + 1, x.shape[3] - w.shape[3] + 1)
    if dy.shape != expected:
        raise ValueError(f"conv2d_backward: dy has shape {dy.shape}, expected {expected}")
    if method == "implicit":
        return conv2d_implicit_backward(x, w, dy, dw_out, db_out, need_dx, parallel)
    if method == "gemm":
        return conv2d_gemm_backward(x, w, dy, dw_out, db_out, need_dx, parallel, cols)
    dx = np.empty(x.shape, x.dtype) if need_dx else np.empty((1, 1, 1, 1), x.dtype)
    (conv2d_backward_parallel if parallel else conv2d_backward_serial)(
        x, w, dy, dw_out, db_out, dx, need_dx)
    return dx if need_dx else None


# -- 2x2 max-pool ----------------------------------------------------------------------
@njit
def _pool_sample(x, y, arg, n):
    for c in range(y.shape[1]):
        for i in range(y.shape[2]):
            for j in range(y.shape[3]):
                best, k = x[n, c, 2 * i, 2 * j], 0
                # window order (0,0), (0,1), (1,0), (1,1); the first maximum wins, as in torch
                if x[n, c, 2 * i, 2 * j + 1] > best:
                    best, k = x[n, c, 2 * i, 2 * j + 1], 1
                if x[n, c, 2 * i + 1, 2 * j] > best:
                    best, k = x[n, c, 2 * i + 1, 2 * j], 2
                if x[n, c, 2 * i + 1, 2 * j + 1] > best:
                    best, k = x[n, c, 2 * i + 1, 2 * j + 1], 3
                y[n, c, i, j] = best
                arg[n, c, i, j] = k


def _maxpool2(x, y, arg):
    for n in prange(x.shape[0]):
        _pool_sample(x, y, arg, np.intp(n))


maxpool2_serial, maxpool2_parallel = serial_and_parallel(_maxpool2)


@njit
def _unpool_sample(dy, arg, dx, n):
    dx[n] = 0
    for c in range(dy.shape[1]):
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                k = arg[n, c, i, j]
                dx[n, c, 2 * i + k // 2, 2 * j + k % 2] = dy[n, c, i, j]


def _maxpool2_backward(dy, arg, dx):
    for n in prange(dy.shape[0]):
        _unpool_sample(dy, arg, dx, np.intp(n))


maxpool2_backward_serial, maxpool2_backward_parallel = serial_and_parallel(_maxpool2_backward)


def maxpool2(x, parallel=False):
    if x.ndim != 4:
        raise ValueError(f"maxpool2: x must be (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    y = np.empty((n, c, h // 2, w // 2), x.dtype)
    arg = np.empty(y.shape, np.int8)
    (maxpool2_parallel if parallel else maxpool2_serial)(x, y, arg)
    return y, arg


def maxpool2_backward(dy, arg, x_shape, parallel=False):
    if dy.shape != arg.shape or len(x_shape) != 4 or dy.shape[2] != x_shape[2] // 2:
        raise ValueError(f"maxpool2_backward: dy {dy.shape}, argmax {arg.shape} and input "
                         f"shape {tuple(x_shape)} do not belong together")
    dx = np.empty(x_shape, dy.dtype)
    (maxpool2_backward_parallel if parallel else maxpool2_backward_serial)(dy, arg, dx)
    return dx


# -- families ------------------------------------------------------------------------------
REF = NumpyOps()


def _conv_inputs(shape, dtype, rng):
    n, c, h, f, k = shape
    return (rng.standard_normal((n, c, h, h)).astype(dtype),
            rng.standard_normal((f, c, k, k)).astype(dtype),
            rng.standard_normal(f).astype(dtype))


def _conv_flops(shape):
    n, c, h, f, k = shape
    return 2.0 * n * f * c * k * k * (h - k + 1) ** 2


# shape = (N, C, H(=W), F, K): the cnn's two layers at batch 256, plus odd sizes.
CONV_SWEEP = [(256, 1, 28, 32, 5), (256, 32, 12, 64, 5)]
# (the last two: more filters than one tile's columns, and an odd number of pixels)
CONV_CHECK = [(1, 1, 5, 1, 5), (2, 3, 7, 4, 3), (3, 2, 9, 5, 5), (1, 1, 33, 2, 1), (3, 5, 11, 33, 3),
              (2, 3, 8, 70, 2)]


def _forward_family():
    fam = KernelFamily("conv2d_forward", lambda x, w, b: REF.conv2d(x, w, b), _conv_inputs,
                       outputs=("y",), flops=_conv_flops, depth=lambda s: s[1] * s[4] * s[4],
                       dtypes=("float32", "float64"), sweep_shapes=CONV_SWEEP, check_shapes=CONV_CHECK)
    for method in METHODS:
        for parallel in (False, True):
            fam.version(lambda x, w, b, m=method, p=parallel: conv2d(x, w, b, p, m),
                        name=f"{method}_{'parallel' if parallel else 'serial'}")
    fam.version(lambda x, w, b: REF.conv2d(x, w, b), name="numpy_einsum", library="numpy")
    return fam


def _backward_family():
    def make(shape, dtype, rng):
        x, w, _ = _conv_inputs(shape, dtype, rng)
        n, c, h, f, k = shape
        return x, w, rng.standard_normal((n, f, h - k + 1, h - k + 1)).astype(dtype)

    def reference(x, w, dy):
        dw, db = np.empty_like(w), np.empty(w.shape[0], w.dtype)
        dx = REF.conv2d_backward(x, w, dy, dw, db)
        return dw, db, dx

    def depth(s):  # dw sums over every output pixel of every sample
        n, c, h, f, k = s
        return n * (h - k + 1) ** 2

    fam = KernelFamily("conv2d_backward", reference, make, outputs=("dw", "db", "dx"),
                       flops=lambda s: 2 * _conv_flops(s), depth=depth,
                       dtypes=("float32", "float64"), sweep_shapes=CONV_SWEEP, check_shapes=CONV_CHECK)
    for method in METHODS:
        for parallel in (False, True):
            def version(x, w, dy, p=parallel, m=method):
                dw, db = np.empty_like(w), np.empty(w.shape[0], w.dtype)
                dx = conv2d_backward(x, w, dy, dw, db, True, p, m)
                return dw, db, dx
            fam.version(version, name=f"{method}_{'parallel' if parallel else 'serial'}")
    fam.version(reference, name="numpy_einsum", library="numpy")
    return fam


def _pool_family():
    def make(shape, dtype, rng):
        x = rng.standard_normal(shape).astype(dtype)
        x[..., ::3] = np.round(x[..., ::3])  # ties, so "first maximum wins" is exercised
        return (x,)

    def reference(x):
        y, arg = REF.maxpool2(x)
        return y, REF.maxpool2_backward(y * 2 + 1, arg, x.shape)

    fam = KernelFamily("maxpool2", reference, make, outputs=("y", "dx"),
                       nbytes=lambda s, itemsize: 2.0 * itemsize * int(np.prod(s)),
                       dtypes=("float32", "float64"), sweep_shapes=[(256, 32, 24, 24), (256, 64, 8, 8)],
                       check_shapes=[(1, 1, 2, 2), (2, 3, 7, 9), (3, 2, 24, 24)])
    for parallel in (False, True):
        def version(x, p=parallel):
            y, arg = maxpool2(x, p)
            return y, maxpool2_backward(y * 2 + 1, arg, x.shape, p)
        fam.version(version, name="numba_parallel" if parallel else "numba_serial")
    fam.version(reference, name="numpy", library="numpy")
    return fam


FAMILIES = [_forward_family(), _backward_family(), _pool_family()]
