"""Matmul in the three forms backprop needs: A·B, A·Bᵀ and Aᵀ·B.

    mnist-bench kernels --families matmul_nn,matmul_nt,matmul_tn   # check, then time

Every version works on *logical* operands A (m, k) and B (k, n): the Bᵀ and Aᵀ
forms pass ``b.T`` / ``a.T``, which are views (Fortran-ordered), never copies;
v3 takes them as (stored array, transposed flag), so one machine code serves
every form. Inputs must be C-contiguous in
storage (a gathered mini-batch or a view of the flat parameter buffer always
is); anything else is refused with a ValueError rather than silently copied.

Versions (llm.c style; each checked against the float64 reference before it is
timed, serial and parallel from one body):
  v1_naive    three loops i-p-j, no blocking.
  v2_blocked  the same loops cut into cache blocks.
  v3_packed   GotoBLAS/BLIS structure: B packed into KC x NR panels, A into
              MR x KC panels, both zero-padded so any shape works; an MR x NR
              micro-kernel whose accumulators live in registers; the tile and
              blocks come from the compile target (kernels/target.py: e.g.
              13 x 32 on AVX-512, 6 x 16 on AVX2) or from `mnist-bench tune`.
              Outputs narrower than NARROW columns take a row-axpy kernel
              (shallow A·B), dot products (A·Bᵀ, and A·B with B transposed from
              DOT_MIN_DEPTH) or the transposed problem Cᵀ = Bᵀ·Aᵀ (deep Aᵀ·B;
              shallow ones sum rows of A into Cᵀ), so n = 10 is not padded to NR.
  numpy_blas  np.matmul: OpenBLAS as installed (the baseline).
  torch_mm    torch.mm on CPU tensors sharing the arrays' memory.

A version is one function ``(A, B, C, parallel)`` on logical operands and one
``VERSIONS`` entry; the kernel family, the sweep and the backends (NumbaOps'
``matmul`` option) find it by name. ``_gemm`` is the one shape dispatch: ``gemm``
from compiled code (the fused epochs), ``gemm_views`` from Python (the ops, the
convolutions).

How the micro-kernel keeps its accumulators in registers: Numba gives LLVM no
aliasing guarantees between arrays, so a tile held in an np.empty array could
alias the operands and is reloaded and stored at every depth step. The tile is
a stack array (kernels/_numba.stack_array), which provably aliases nothing;
once the loops over it are unrolled, LLVM turns it into MR x NR/lanes vector
registers. Indices must also be provably non-negative: with runtime offsets,
Numba's negative-index wraparound defeats LLVM's alias checks and the loops run
scalar (hence the ``max(x, 0)`` on every offset).
"""
import numpy as np
from numba import prange

from ._numba import TILE, njit, rows_contiguous, serial_and_parallel, specialize, stack_array
from .family import KernelFamily, operands
from .fma_codegen import fma_panel, fma_panel_rows, fma_strided_rows_packing

# The geometry of this process (float32). float64 compiles the same bodies with
# half of NR (the same registers hold half the lanes).
MR, NR, KC, MC, NC = (TILE[k] for k in ("MR", "NR", "KC", "MC", "NC"))
TILE_ELEMS = MR * NR     # a literal for stack_array
NARROW = 32              # outputs with fewer columns skip the NR-wide padding
# A·B with narrow B and at least this depth copies B transposed (k x n floats) and
# takes dot products along A's rows: the row-axpy's inner loop is only n < NARROW
# wide and runs mostly scalar.
DOT_MIN_DEPTH = 64
MIN_ROW_BLOCKS = 4       # the parallel driver splits even short products this many ways
# build() compiles _gemm twice, with PARALLEL replaced by False and by True
# (specialize); this default is the serial one.
PARALLEL = False
PARALLEL_MIN_WORK = 1 << 21  # multiply-adds below which waking the thread pool costs more


# -- v1, v2 --------------------------------------------------------------------
def _naive(A, B, C, parallel):
    m, k = A.shape
    n = B.shape[1]
    for i in prange(m):
        for j in range(n):
            C[i, j] = 0
        for p in range(k):
            a = A[i, p]
            for j in range(n):
                C[i, j] += a * B[p, j]


def _blocked(A, B, C, parallel):
    m, k = A.shape
    n = B.shape[1]
    bm, bk, bn = 64, 256, 1024
    for ib in prange((m + bm - 1) // bm):
        i0 = ib * bm
        for i in range(i0, min(m, i0 + bm)):
            for j in range(n):
                C[i, j] = 0
        for p0 in range(0, k, bk):
            for j0 in range(0, n, bn):
                for i in range(i0, min(m, i0 + bm)):
                    for p in range(p0, min(k, p0 + bk)):
                        a = A[i, p]
                        for j in range(j0, min(n, j0 + bn)):
                            C[i, j] += a * B[p, j]


# -- v3: packing and the micro-kernel ------------------------------------------------
def _pack_b(B, tb, p0, kc, j0, nc, Bp):
    """op(B)[p0:p0+kc, j0:j0+nc] -> consecutive kc x NR panels (zero-padded) in Bp,
    op(B) = Bᵀ when ``tb``. The loop runs along B's stored rows either way: for
    B, each row's stretch across all the panels at once (one pass down B, not one
    per panel: a panel's NR floats of every row touch a page per row)."""
    p0, kc, j0, nc = max(p0, 0), max(kc, 0), max(j0, 0), max(nc, 0)  # see the module's note on indices
    if not tb:
        full = nc // NR
        for p in range(kc):
            src = B[p0 + p]
            for t in range(full):
                row = t * kc * NR + p * NR
                for j in range(NR):  # a constant trip count: vector copies
                    Bp[row + j] = src[j0 + t * NR + j]
        w = nc - full * NR
        if w > 0:
            for p in range(kc):
                row = full * kc * NR + p * NR
                for j in range(w):
                    Bp[row + j] = B[p0 + p, j0 + full * NR + j]
                for j in range(w, NR):
                    Bp[row + j] = 0
        return
    for jp in range(0, nc, NR):
        base = (jp // NR) * kc * NR
        w = min(NR, nc - jp)
        for j in range(w):
            for p in range(kc):
                Bp[base + p * NR + j] = B[j0 + jp + j, p0 + p]
        for j in range(w, NR):
            for p in range(kc):
                Bp[base + p * NR + j] = 0


def _pack_a(A, ta, i0, mc, p0, kc, Ap):
    """op(A)[i0:i0+mc, p0:p0+kc] -> consecutive MR x kc panels in Ap, each kc groups
    of MR values (rows past mc are 0), op(A) = Aᵀ when ``ta``. Only the short
    products (fewer than 2·MIN_ROW_BLOCKS·MR rows) and the last rows of a block
    pack this way, O(m·k) against the product's O(m·n·k): written plainly, as one
    loop nest, for the sake of every library that links it."""
    i0, mc, p0, kc = max(i0, 0), max(mc, 0), max(p0, 0), max(kc, 0)  # see the module's note on indices
    for ip in range(0, mc, MR):
        base = (ip // MR) * kc * MR
        h = min(MR, mc - ip)
        for p in range(kc):
            for r in range(MR):
                if r >= h:
                    Ap[base + p * MR + r] = 0
                elif ta:
                    Ap[base + p * MR + r] = A[p0 + p, i0 + ip + r]
                else:
                    Ap[base + p * MR + r] = A[i0 + ip + r, p0 + p]


def _micro(Ap, a0, Bp, b0, kc, C, ci, cj, accumulate):
    """C[ci:ci+MR, cj:cj+NR] (+)= the A panel at Ap[a0:] · the B panel at Bp[b0:]:
    straight into C where its rows are contiguous, else through a stack tile."""
    a0, b0, ci, cj = max(a0, 0), max(b0, 0), max(ci, 0), max(cj, 0)
    if rows_contiguous(C):
        fma_panel_rows(Ap, a0, Bp, b0, NR, kc, C, ci, cj, accumulate, MR, NR)
        return
    acc = stack_array(TILE_ELEMS, C.dtype)
    fma_panel(Ap, a0, Bp, b0, NR, kc, acc, MR, NR)
    if accumulate:
        for r in range(MR):
            for j in range(NR):
                C[ci + r, cj + j] += acc[r * NR + j]
    else:
        for r in range(MR):
            for j in range(NR):
                C[ci + r, cj + j] = acc[r * NR + j]


def _block(Ap, Bp, C, i0, mc, j0, nc, kc, accumulate, edge):
    """C[i0:i0+mc, j0:j0+nc] (+)= packed A rows · packed B columns. One B panel
    (kc x NR) stays in L1 while the A panels stream from L2; edge tiles go
    through the MR x NR scratch tile ``edge`` so the micro-kernel keeps its shape."""
    for jp in range(0, nc, NR):
        w = min(NR, nc - jp)
        for ip in range(0, mc, MR):
            h = min(MR, mc - ip)
            a0, b0 = (ip // MR) * kc * MR, (jp // NR) * kc * NR
            if h == MR and w == NR:
                _micro(Ap, a0, Bp, b0, kc, C, i0 + ip, j0 + jp, accumulate)
                continue
            # non-literal arguments: one compiled signature of _micro, not two
            _micro(Ap, a0, Bp, b0, kc, edge, np.intp(0), np.intp(0), np.bool_(False))
            for r in range(h):
                for j in range(w):
                    if accumulate:
                        C[i0 + ip + r, j0 + jp + j] += edge[r, j]
                    else:
                        C[i0 + ip + r, j0 + jp + j] = edge[r, j]


def _pack_a_block(A, ta, Ap, Bp, C, i0, mc, p0, j0, nc, kc, accumulate, edge):
    """_pack_a then _block, with A packed during its first use: the block's
    products with the first B panel read A's rows in place (its stored rows
    or, ``ta``, columns) and write the packed panels as they go, so A is read
    from memory once and no packing pass of its own runs."""
    if nc < NR or not rows_contiguous(C):
        _pack_a(A, ta, i0, mc, p0, kc, Ap)
        _block(Ap, Bp, C, i0, mc, j0, nc, kc, accumulate, edge)
        return
    i0, mc, p0, j0, kc = max(i0, 0), max(mc, 0), max(p0, 0), max(j0, 0), max(kc, 0)
    lda = A.shape[1]
    af = A.reshape(A.size)
    step, row = (lda, 1) if ta else (1, lda)
    full = mc // MR * MR
    for ip in range(0, full, MR):
        fma_strided_rows_packing(af, (i0 + ip) * row + p0 * step, step, row, Ap, (ip // MR) * kc * MR,
                                 Bp, 0, NR, kc, C, i0 + ip, j0, accumulate, MR, NR)
    if full < mc:  # the last rows, fewer than MR: packed (zero rows below), then as _block's edges
        a0 = (full // MR) * kc * MR
        _pack_a(A, ta, i0 + full, mc - full, p0, kc, Ap[a0:])
        _block(Ap[a0:], Bp, C, i0 + full, mc - full, j0, min(NR, nc), kc, accumulate, edge)
    if nc > NR:
        _block(Ap, Bp[kc * NR:], C, i0, mc, j0 + NR, nc - NR, kc, accumulate, edge)


# the three kinds of task the packed GEMM hands to the thread pool (_task); as
# variables, not compile-time literals, so that _task compiles once for all
PACK_B, ROW_BLOCK, COLUMN_SLICE = range(3)


def _task(kind, t, tasks, split, A, ta, B, tb, C, packed, p0, kc, j0, nc):
    """Task ``t`` of ``tasks`` of one parallel step of _packed, for depth p0:p0+kc:
    PACK_B packs B's panels t*split.. (of columns j0:j0+nc) into the shared
    ``packed``; ROW_BLOCK packs its rows of A (the row panels dealt out evenly)
    and multiplies them by those panels, no two tasks writing one row of C;
    COLUMN_SLICE packs its ``split`` columns of B and multiplies them by all of
    A, packed in ``packed`` (no two tasks writing one column of C)."""
    m = A.shape[1] if ta else A.shape[0]
    if kind == PACK_B:
        panels = (nc + NR - 1) // NR
        t0, t1 = t * split, min(panels, (t + 1) * split)
        _pack_b(B, tb, p0, kc, j0 + t0 * NR, min(nc, t1 * NR) - t0 * NR, packed[t0 * kc * NR:t1 * kc * NR])
        return
    edge = np.empty((MR, NR), C.dtype)
    if kind == ROW_BLOCK:
        row_panels = (m + MR - 1) // MR
        i0 = t * row_panels // tasks * MR
        rows = min(m, (t + 1) * row_panels // tasks * MR) - i0
        Ap = np.empty(kc * ((rows + MR - 1) // MR * MR), C.dtype)
        _pack_a_block(A, ta, Ap, packed, C, i0, rows, p0, j0, nc, kc, p0 > 0, edge)
        return
    n = B.shape[0] if tb else B.shape[1]
    c0 = t * split
    width = min(split, n - c0)
    own = np.empty(kc * ((width + NR - 1) // NR * NR), C.dtype)
    _pack_b(B, tb, p0, kc, c0, width, own)
    _block(packed, own, C, np.intp(0), m, c0, width, kc, p0 > 0, edge)


def _packed(A, ta, B, tb, C, threads):
    """C = op(A)·op(B) (see _pack_a, _pack_b), GotoBLAS loop order: NC columns of
    B, KC deep, packed once and shared; blocks of rows of A packed by the task
    that multiplies them (the parallel axis). A product with too few rows for
    that (the convolutions' F x C·K·K times C·K·K x N·P) packs all of A once and
    splits B's columns instead. Each step's tasks (_task) run on the thread pool
    if ``threads`` (in the parallel build), else in turn: every step goes
    through the one loop below, so the pool's loop body -- a compile of its
    own, with all the code it calls -- is compiled once, and a product too small
    for the pool needs no serial driver of its own."""
    m, k = (A.shape[1], A.shape[0]) if ta else (A.shape[0], A.shape[1])
    n = B.shape[0] if tb else B.shape[1]
    if k == 0:
        for i in range(m):  # a loop, not C[:] = 0, which the parallel build would make a pool loop
            for j in range(n):
                C[i, j] = 0
        return
    kc_max = min(KC, k)
    slices = m < 2 * MIN_ROW_BLOCKS * MR and n >= 2 * MIN_ROW_BLOCKS * NR
    if slices:  # all of A packed per depth block, B's columns split
        tasks = MIN_ROW_BLOCKS * ((n + MIN_ROW_BLOCKS * NC - 1) // (MIN_ROW_BLOCKS * NC))
        width = ((n + tasks - 1) // tasks + NR - 1) // NR * NR
        tasks = (n + width - 1) // width
        packed = np.empty(kc_max * ((m + MR - 1) // MR * MR), C.dtype)
        n_ib, nc_step = 0, n
    else:  # B's panels packed per column and depth block, blocks of rows split
        packed = np.empty(kc_max * ((min(NC, n) + NR - 1) // NR * NR), C.dtype)
        tasks, width = 0, 0
        # a multiple of MIN_ROW_BLOCKS row blocks of about MC rows, the row panels
        # (MR rows) dealt out evenly: every thread count that divides
        # MIN_ROW_BLOCKS gets the same share (a short last block would idle the
        # threads that do not take it)
        row_panels = (m + MR - 1) // MR
        n_ib = MIN_ROW_BLOCKS * ((m + MIN_ROW_BLOCKS * MC - 1) // (MIN_ROW_BLOCKS * MC))
        n_ib = min(n_ib, row_panels)
        nc_step = NC
    for j0 in range(0, n, nc_step):
        nc = min(nc_step, n - j0)
        for p0 in range(0, k, KC):
            kc = min(KC, k - p0)
            for step in range(1 if slices else 2):
                if slices:
                    _pack_a(A, ta, np.intp(0), m, p0, kc, packed)
                    kind, count, split = COLUMN_SLICE, tasks, width
                elif step == 0:  # B's panels in MIN_ROW_BLOCKS runs, one task each
                    panels = (nc + NR - 1) // NR
                    per_task = (panels + MIN_ROW_BLOCKS - 1) // MIN_ROW_BLOCKS
                    kind, count, split = PACK_B, (panels + per_task - 1) // per_task, per_task
                else:  # (ROW_BLOCK reads no split; n_ib stands in)
                    kind, count, split = ROW_BLOCK, n_ib, n_ib
                if threads:
                    for t in prange(count):
                        _task(kind, np.intp(t), count, split, A, ta, B, tb, C, packed, p0, kc, j0, nc)
                else:
                    for t in range(count):
                        _task(kind, t, count, split, A, ta, B, tb, C, packed, p0, kc, j0, nc)


# -- narrow outputs: dot products and axpys along contiguous rows -------------------
@njit
def dot_rows(A, Bt, C, i):
    """C[i, :] = A[i] · Btᵀ, four output columns per pass over the row of A."""
    n, k = Bt.shape
    a = A[i]
    j = 0
    while j + 4 <= n:
        b0, b1, b2, b3 = Bt[j], Bt[j + 1], Bt[j + 2], Bt[j + 3]
        s0 = s1 = s2 = s3 = C.dtype.type(0)
        for p in range(k):
            x = a[p]
            s0 += x * b0[p]
            s1 += x * b1[p]
            s2 += x * b2[p]
            s3 += x * b3[p]
        C[i, j], C[i, j + 1], C[i, j + 2], C[i, j + 3] = s0, s1, s2, s3
        j += 4
    while j < n:
        b0 = Bt[j]
        s0 = C.dtype.type(0)
        for p in range(k):
            s0 += a[p] * b0[p]
        C[i, j] = s0
        j += 1


@njit
def _axpy_row(A, B, C, i):
    """C[i, :] = sum_p A[i, p] · B[p, :]: for narrow B with contiguous rows."""
    c = C[i]
    c[:] = 0
    for p in range(A.shape[1]):
        a = A[i, p]
        b = B[p]
        for j in range(c.shape[0]):
            c[j] += a * b[j]


@njit
def axpy_columns(At, D, Gt, j):
    """Gt[j] = sum_i D[i, j]·At[i]: column j of Atᵀ·D as axpys along At's contiguous
    rows, four per pass over Gt[j]. (The fused epochs' weight gradients too.)"""
    g = Gt[j]
    g[:] = 0
    k = At.shape[0]
    i = 0
    while i + 4 <= k:
        d0, d1, d2, d3 = D[i, j], D[i + 1, j], D[i + 2, j], D[i + 3, j]
        a0, a1, a2, a3 = At[i], At[i + 1], At[i + 2], At[i + 3]
        for p in range(g.size):
            g[p] += d0 * a0[p] + d1 * a1[p] + d2 * a2[p] + d3 * a3[p]
        i += 4
    while i < k:
        d0, a0 = D[i, j], At[i]
        for p in range(g.size):
            g[p] += d0 * a0[p]
        i += 1


def _narrow_axpy(A, B, C):
    for i in prange(A.shape[0]):
        _axpy_row(A, B, C, np.intp(i))


def _narrow_dot(A, Bt, C):
    for i in prange(A.shape[0]):
        dot_rows(A, Bt, C, np.intp(i))


def _narrow_tn(At, B, C):
    """C = Atᵀ·B for narrow B and short depth (At stored (k, m), C-contiguous)."""
    Ct = np.empty((C.shape[1], C.shape[0]), C.dtype)
    for j in prange(C.shape[1]):
        axpy_columns(At, B, Ct, np.intp(j))
    for i in range(C.shape[0]):
        for j in range(C.shape[1]):
            C[i, j] = Ct[j, i]


_narrow_axpy_serial, _narrow_axpy_parallel = serial_and_parallel(_narrow_axpy)
_narrow_dot_serial, _narrow_dot_parallel = serial_and_parallel(_narrow_dot)
_narrow_tn_serial, _narrow_tn_parallel = serial_and_parallel(_narrow_tn)


# -- the one shape dispatch ----------------------------------------------------------
# The kernel a product's shape takes (route); the compiled dispatch (_gemm, for
# compiled callers) and the Python one (build's gemm_views) both follow it.
EMPTY, NARROW_TN, NARROW_AXPY, NARROW_DOT, PACKED_SWAPPED, PACKED = range(6)


def route(m, k, n, ta, tb, kc):
    """The kernel for C (m x n) = op(a)·op(b) over depth k: narrow outputs (n <
    NARROW) skip the NR-wide padding -- shallow Aᵀ·B (k <= the tile's KC) as axpys
    along the stored rows of A, shallow A·B (k < DOT_MIN_DEPTH) as axpys, deeper
    A·op(B) as dot products along rows, deep Aᵀ·B as the packed Cᵀ = Bᵀ·Aᵀ -- and
    everything else the packed GEMM."""
    if m == 0 or n == 0:
        return EMPTY
    if n < NARROW and ta and k <= kc:
        return NARROW_TN
    if n < NARROW and not ta and not tb and k < DOT_MIN_DEPTH:
        return NARROW_AXPY
    if n < NARROW and not ta:
        return NARROW_DOT
    if n < NARROW:
        return PACKED_SWAPPED
    return PACKED


_route = njit(route)


def _gemm(a, ta, b, tb, C):
    """C = op(a)·op(b), op(x) = xᵀ where its flag is set, for C-contiguous a, b and
    C (BLAS's transa/transb); the kernel by route(). The forms are flags, not
    array types, so a dtype's dispatch is one machine code for all three forms
    (each array-type signature would be another compile of the whole GEMM).
    Compiled callers only: it links every kernel it may route to."""
    m, k = (a.shape[1], a.shape[0]) if ta else (a.shape[0], a.shape[1])
    n = b.shape[0] if tb else b.shape[1]
    par = PARALLEL and m * k * n >= PARALLEL_MIN_WORK
    kernel = _route(m, k, n, ta, tb, KC)
    if kernel == NARROW_TN:
        B = b.T[:, :] if tb else b[:, :]
        if par:
            _narrow_tn_parallel(a, B, C)
        else:
            _narrow_tn_serial(a, B, C)
    elif kernel == NARROW_AXPY:
        if par:
            _narrow_axpy_parallel(a, b, C)
        else:
            _narrow_axpy_serial(a, b, C)
    elif kernel == NARROW_DOT:
        Bt = b if tb else np.ascontiguousarray(b.T)
        if par:
            _narrow_dot_parallel(a, Bt, C)
        else:
            _narrow_dot_serial(a, Bt, C)
    elif kernel == PACKED_SWAPPED:
        _packed(b, not tb, a, not ta, C.T[:, :], par)
    elif kernel == PACKED:
        _packed(a, ta, b, tb, C[:, :], par)


def _python_dispatch(kc, packed_serial, packed_parallel):
    """_gemm's dispatch in Python, for calls from Python: each kernel is a
    dispatcher of its own and compiles on its first call, so a run compiles only
    the kernels its products' shapes route to (the compiled dispatch links, and
    compiles, all of them)."""
    def dispatch(a, ta, b, tb, C, parallel):
        m, k = (a.shape[1], a.shape[0]) if ta else (a.shape[0], a.shape[1])
        n = b.shape[0] if tb else b.shape[1]
        par = parallel and m * k * n >= PARALLEL_MIN_WORK
        kernel = route(m, k, n, ta, tb, kc)
        # the serial build links no parallel code; the parallel one runs small products serially
        packed = packed_parallel if parallel else packed_serial
        # every kernel gets C-contiguous arrays, so each compiles for one layout
        if kernel == NARROW_TN:  # b is narrow (n < NARROW columns): a copy is small
            (_narrow_tn_parallel if par else _narrow_tn_serial)(a, np.ascontiguousarray(b.T) if tb else b, C)
        elif kernel == NARROW_AXPY:
            (_narrow_axpy_parallel if par else _narrow_axpy_serial)(a, b, C)
        elif kernel == NARROW_DOT:
            (_narrow_dot_parallel if par else _narrow_dot_serial)(a, b if tb else np.ascontiguousarray(b.T), C)
        elif kernel == PACKED_SWAPPED:  # Cᵀ, narrow, into its own buffer
            ct = np.empty((n, m), C.dtype)
            packed(b, not tb, a, not ta, ct, par)
            C[:] = ct.T
        elif kernel == PACKED:
            packed(a, ta, b, tb, C, par)
    return dispatch


PACKED_BODIES = (_pack_b, _pack_a, _micro, _block, _pack_a_block, _task)
# the ones called per tile, compiled without reference counting (see specialize)
PACKED_LEAVES = ("_micro", "_block")
_NARROW_TWINS = {"_narrow_tn_parallel": _narrow_tn_serial, "_narrow_axpy_parallel": _narrow_axpy_serial,
                 "_narrow_dot_parallel": _narrow_dot_serial}


def _stored(x):
    """A logical operand as (C-contiguous array, transposed?): a transposed view is
    its base, flagged; anything else strided is copied."""
    if x.flags.c_contiguous:
        return x, False
    if x.T.flags.c_contiguous:
        return x.T, True
    return np.ascontiguousarray(x), False


def build(tile, suffix, cache=True):
    """The packed GEMM compiled for one geometry: {"serial", "parallel"} (the
    packed drivers, (A, ta, B, tb, C, threads)), {"gemm_serial", "gemm_parallel"}
    (the dispatch, (a, ta, b, tb, C)), "gemm" (from Python, on logical operands:
    (A, B, C, parallel)) and "pieces". Used for float64 (half of NR) and by
    `mnist-bench tune` for its candidates. "gemm" routes in Python, so a run
    compiles only the kernels its shapes take; the compiled serial dispatch
    links no parallel code."""
    constants = dict(MR=tile["MR"], NR=tile["NR"], KC=tile["KC"], MC=tile["MC"], NC=tile["NC"],
                     TILE_ELEMS=tile["MR"] * tile["NR"])
    serial = specialize(list(PACKED_BODIES) + [_packed], suffix, constants, cache=cache, leaves=PACKED_LEAVES)
    # the parallel driver's tasks are the serial ones: one copy of each
    parallel = specialize([_packed], suffix + "_parallel",
                          dict(constants, **{f.__name__: serial[f.__name__] for f in PACKED_BODIES}),
                          parallel=("_packed",), cache=cache)
    dispatch_serial = specialize([_gemm], suffix, dict(constants, **_NARROW_TWINS, PARALLEL=False,
                                                       _packed=serial["_packed"]), cache=cache)["_gemm"]
    dispatch_parallel = specialize([_gemm], suffix + "_parallel",
                                   dict(constants, PARALLEL=True, _packed=parallel["_packed"]),
                                   cache=cache)["_gemm"]

    dispatch_python = _python_dispatch(constants["KC"], serial["_packed"], parallel["_packed"])

    def gemm_views(A, B, C, parallel):
        a, ta = _stored(A)
        b, tb = _stored(B)
        out = C if C.flags.c_contiguous else np.empty(C.shape, C.dtype)
        dispatch_python(a, ta, b, tb, out, parallel)
        if out is not C:
            C[:] = out

    return {"serial": serial["_packed"], "parallel": parallel["_packed"], "gemm": gemm_views,
            "gemm_serial": dispatch_serial, "gemm_parallel": dispatch_parallel, "pieces": serial}


_f32 = build(TILE, "_f32")
gemm_serial, gemm_parallel = _f32["gemm_serial"], _f32["gemm_parallel"]
TILE_F64 = dict(TILE, NR=max(4, TILE["NR"] // 2))
_f64 = build(TILE_F64, "_f64")
# each dtype's packing routines (_pack_a, _pack_b, ...) for its geometry, for
# kernels that run their own products on the micro-kernel (kernels/conv.py)
PACKING = {np.dtype(np.float32): _f32["pieces"], np.dtype(np.float64): _f64["pieces"]}


@njit
def gemm(a, ta, b, tb, C, parallel):
    """C = op(a)·op(b) (float32) from compiled code: see _gemm."""
    if parallel:
        gemm_parallel(a, ta, b, tb, C)
    else:
        gemm_serial(a, ta, b, tb, C)


def gemm_views(A, B, C, parallel):
    """C = A·B from Python on logical operands (transposed views stay uncopied)."""
    (_f64 if A.dtype == np.float64 else _f32)["gemm"](A, B, C, parallel)


_naive_serial, _naive_parallel = serial_and_parallel(_naive)
_blocked_serial, _blocked_parallel = serial_and_parallel(_blocked)


def _two(serial, parallel):
    def run(A, B, C, use_threads):
        (parallel if use_threads else serial)(A, B, C, use_threads)
    return run


# name -> (A, B, C, parallel) on logical operands. NumbaOps' ``matmul`` option
# picks one by name; the kernel family times each serial and parallel.
VERSIONS = {"v1_naive": _two(_naive_serial, _naive_parallel),
            "v2_blocked": _two(_blocked_serial, _blocked_parallel),
            "v3_packed": gemm_views}
DEFAULT_VERSION = "v3_packed"


# -- the Python entry points ---------------------------------------------------------
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check(a, b, out, m, k, k2, n, form):
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{form}: operands must be 2-D, got {a.ndim}-D and {b.ndim}-D")
    if k != k2:
        raise ValueError(f"{form}: inner dimensions differ ({a.shape} and {b.shape})")
    if a.dtype != b.dtype or a.dtype not in _FLOATS:
        raise ValueError(f"{form}: operands must both be float32 or both float64, "
                         f"got {a.dtype} and {b.dtype}")
    if not (a.flags.c_contiguous and b.flags.c_contiguous):
        raise ValueError(f"{form}: operands must be C-contiguous (pass np.ascontiguousarray(x)); "
                         f"got strides {a.strides} and {b.strides}")
    if out is None:
        return np.empty((m, n), a.dtype)
    if out.shape != (m, n) or out.dtype != a.dtype or not out.flags.c_contiguous:
        raise ValueError(f"{form}: out must be a C-contiguous {a.dtype} array of shape {(m, n)}, "
                         f"got {out.dtype} {out.shape}")
    return out


def _version(name):
    try:
        return VERSIONS[name]
    except KeyError:
        raise ValueError(f"unknown matmul version {name!r}; choose from {', '.join(VERSIONS)}") from None


def matmul(a, b, out=None, parallel=False, version=DEFAULT_VERSION):
    """A·B: a (m, k), b (k, n) -> (m, n)."""
    out = _check(a, b, out, a.shape[0], a.shape[-1], b.shape[0], b.shape[-1], "matmul")
    _version(version)(a, b, out, parallel)
    return out


def matmul_nt(a, b, out=None, parallel=False, version=DEFAULT_VERSION):
    """A·Bᵀ: a (m, k), b (n, k) -> (m, n)."""
    out = _check(a, b, out, a.shape[0], a.shape[-1], b.shape[-1], b.shape[0], "matmul_nt")
    _version(version)(a, b.T, out, parallel)
    return out


def matmul_tn(a, b, out=None, parallel=False, version=DEFAULT_VERSION):
    """Aᵀ·B: a (k, m), b (k, n) -> (m, n)."""
    out = _check(a, b, out, a.shape[-1], a.shape[0], b.shape[0], b.shape[-1], "matmul_tn")
    _version(version)(a.T, b, out, parallel)
    return out


# -- the families: one per form ------------------------------------------------------
FORMS = {
    # form: (how the stored operands relate to logical A, B), public kernel
    "nn": (lambda a, b: (a, b), matmul),
    "nt": (lambda a, b: (a, b.T), matmul_nt),
    "tn": (lambda a, b: (a.T, b), matmul_tn),
}

# 64 ... 2048 squares, then the shapes the networks use, as (m, k, n) of the
# logical product: nielsen batch 10, mlp batch 128, linear full set, cnn fc.
SQUARES = [(s, s, s) for s in (64, 128, 256, 512, 1024, 2048)]
NETWORK_SHAPES = {
    "nn": [(10, 784, 30), (10, 30, 10), (128, 784, 128), (128, 128, 10),
           (60000, 784, 10), (256, 1024, 1024), (256, 1024, 10)],
    "nt": [(10, 10, 30), (128, 10, 128), (256, 10, 1024), (256, 1024, 1024)],
    "tn": [(30, 10, 10), (784, 10, 30), (128, 128, 10), (784, 128, 128),
           (784, 60000, 10), (1024, 256, 1024), (1024, 256, 10)],
}
CHECK_SHAPES = [(1, 1, 1), (7, 7, 7), (33, 7, 1), (1, 257, 33), (257, 33, 7),
                (33, 257, 65), (65, 33, 257), (130, 300, 70), (10, 784, 30), (9, 260, 1030)]


def _make_inputs(form):
    def make(shape, dtype, rng):
        m, k, n = shape
        return operands(form, m, k, n, dtype, rng)
    return make


def _reference(form):
    def ref(a, b):
        A, B = FORMS[form][0](a, b)
        return A @ B
    return ref


def _make_family(form):
    logical, kernel = FORMS[form]
    fam = KernelFamily(f"matmul_{form}", _reference(form), _make_inputs(form), outputs=("C",),
                       flops=lambda s: 2.0 * s[0] * s[1] * s[2],
                       nbytes=lambda s, itemsize: itemsize * (s[0] * s[1] + s[1] * s[2] + s[0] * s[2]),
                       depth=lambda s: s[1], dtypes=("float32", "float64"),
                       sweep_shapes=SQUARES + NETWORK_SHAPES[form], check_shapes=CHECK_SHAPES,
                       # The naive loops take minutes per call past ~300M multiply-adds;
                       # the smaller shapes already show where they stand.
                       skip_timing=lambda v, s: v.startswith("v1_naive") and s[0] * s[1] * s[2] > 300e6)
    for name in VERSIONS:
        for parallel in (False, True):
            fam.version(lambda a, b, v=name, p=parallel: kernel(a, b, parallel=p, version=v),
                        name=name + ("_parallel" if parallel else ""))

    @fam.version(library="numpy")
    def numpy_blas(a, b):
        A, B = logical(a, b)
        return np.matmul(A, B)

    @fam.version(library="torch")
    def torch_mm(a, b):
        import torch
        A, B = logical(torch.from_numpy(a), torch.from_numpy(b))
        return torch.mm(A, B).numpy()
    return fam


FAMILIES = [_make_family(form) for form in FORMS]
