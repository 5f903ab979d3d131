"""Matmul in the three forms backprop needs: A·B, A·Bᵀ and Aᵀ·B.

    mnist-bench kernels --families matmul_nn,matmul_nt,matmul_tn   # check, then time

Every version works on *logical* operands A (m, k) and B (k, n): the Bᵀ and Aᵀ
forms pass ``b.T`` / ``a.T``, which are views (Fortran-ordered), never copies;
Numba compiles one specialisation per layout. Inputs must be C-contiguous in
storage (a gathered mini-batch or a view of the flat parameter buffer always
is); anything else is refused with a ValueError rather than silently copied.

Versions (llm.c style, each one checked against the float64 reference):
  v1_naive           three loops i-p-j, no blocking.
  v2_blocked         the same loops cut into cache blocks (MC x KC x NC).
  v3_register_tiled  GotoBLAS structure: B packed into KC x NR panels, A into
                     MR x KC panels, both zero-padded so any shape works; an
                     MR x NR (8 x 32) micro-kernel whose accumulators live in
                     registers.
                     Outputs narrower than NARROW columns take a row-axpy
                     kernel (shallow A·B), a dot-product kernel (A·Bᵀ, and A·B
                     with B transposed from DOT_MIN_DEPTH) or the transposed problem
                     Cᵀ = Bᵀ·Aᵀ (for deep Aᵀ·B; shallow ones sum rows of
                     A into Cᵀ), so n = 10 is not padded to NR.
  v4_parallel        v3 with blocks of rows of C spread over Numba's threads.
  numpy_blas         np.matmul: OpenBLAS as installed (the baseline).
  torch_mm           torch.mm on CPU tensors sharing the arrays' memory.

How the micro-kernel keeps its accumulators in registers: Numba gives LLVM
no aliasing guarantees between arrays, so a tile held in an np.empty array
could alias the operands and is reloaded and stored at every depth step (about
70 GFLOP/s per core). The tile is instead a stack array (_stack_array), which
provably aliases nothing; once the loops over it are unrolled, LLVM turns it
into 16 zmm registers and each depth step is 2 loads of B, 8 broadcasts of A
and 16 FMAs (check with _packed_serial.inspect_asm). Indices must also be
provably non-negative: with runtime offsets, Numba's negative-index wraparound
defeats LLVM's alias checks and the loops run scalar.
"""
import numpy as np
from numba import prange

from ._numba import njit, njit_parallel, stack_array as _stack_array
from .family import KernelFamily

MR, NR = 8, 32           # register tile: rows of A x columns of B per micro-kernel call
KC, MC, NC = 256, 128, 2048  # cache blocks: depth, rows of A, columns of B
NARROW = 32              # outputs with fewer columns skip the NR-wide padding
# A·B with narrow B and at least this depth copies B transposed (k x n floats) and takes
# dot products along A's rows: the row-axpy's inner loop is only n < NARROW wide and runs
# mostly scalar (128x784x10: 412 vs 115 us, 10x784x30: 61 vs 44 us, measured).
DOT_MIN_DEPTH = 64
MIN_ROW_BLOCKS = 4       # _packed_parallel splits even short products this many ways


# -- v1, v2 --------------------------------------------------------------------
@njit
def _naive(A, B, C):
    m, k = A.shape
    n = B.shape[1]
    C[:] = 0
    for i in range(m):
        for p in range(k):
            a = A[i, p]
            for j in range(n):
                C[i, j] += a * B[p, j]


@njit
def _blocked(A, B, C):
    m, k = A.shape
    n = B.shape[1]
    C[:] = 0
    for i0 in range(0, m, MC):
        for p0 in range(0, k, KC):
            for j0 in range(0, n, NC):
                for i in range(i0, min(m, i0 + MC)):
                    for p in range(p0, min(k, p0 + KC)):
                        a = A[i, p]
                        for j in range(j0, min(n, j0 + NC)):
                            C[i, j] += a * B[p, j]


# -- v3, v4: packing and the micro-kernel -----------------------------------------
TILE = MR * NR  # a module constant, so Numba types it as a literal for _stack_array


@njit
def _pack_b(B, p0, p1, j0, j1, Bp):
    """B[p0:p1, j0:j1] -> consecutive KC x NR panels (zero-padded) in Bp."""
    kc = p1 - p0
    for jp in range(0, j1 - j0, NR):
        base = (jp // NR) * kc * NR
        w = min(NR, j1 - j0 - jp)
        for p in range(kc):
            row = base + p * NR
            for j in range(w):
                Bp[row + j] = B[p0 + p, j0 + jp + j]
            for j in range(w, NR):
                Bp[row + j] = 0


@njit
def _pack_a(A, i0, i1, p0, p1, Ap):
    """A[i0:i1, p0:p1] -> consecutive MR x KC panels in Ap, each kc groups of MR values
    (rows past i1 are 0)."""
    kc = p1 - p0
    for ip in range(0, i1 - i0, MR):
        base = (ip // MR) * kc * MR
        h = min(MR, i1 - i0 - ip)
        for p in range(kc):
            for r in range(h):
                Ap[base + p * MR + r] = A[i0 + ip + r, p0 + p]
            for r in range(h, MR):
                Ap[base + p * MR + r] = 0


@njit
def _micro(Ap, Bp, kc, C, ci, cj, accumulate):
    """C[ci:ci+MR, cj:cj+NR] (+)= Ap panel · Bp panel over depth kc.

    The MR x NR accumulator is a stack array: after unrolling, the 8 x 32 float32
    tile is 16 zmm registers and each depth step is 2 loads of B, 8 broadcasts of A
    and 16 FMAs. The loops run j outside r so that LLVM vectorises over j rather than
    unrolling 256 scalars first. C goes in and out through that tile, with only loads
    or only stores in each loop, so no C-to-C dependence blocks vectorisation."""
    acc = _stack_array(TILE, Ap.dtype)
    ci = max(ci, 0)  # tells LLVM the indices are non-negative: no wraparound per element
    cj = max(cj, 0)
    if accumulate:
        for j in range(NR):
            for r in range(MR):
                acc[r * NR + j] = C[ci + r, cj + j]
    else:
        for x in range(TILE):
            acc[x] = 0
    for p in range(kc):
        for j in range(NR):
            b = Bp[p * NR + j]
            for r in range(MR):
                acc[r * NR + j] += Ap[p * MR + r] * b
    for j in range(NR):
        for r in range(MR):
            C[ci + r, cj + j] = acc[r * NR + j]


@njit
def _block(Ap, Bp, C, i0, i1, j0, j1, kc, accumulate):
    """C[i0:i1, j0:j1] (+)= packed A rows i0:i1 · packed B columns j0:j1.

    Ap starts at row i0's panel, Bp at column j0's. One B panel (kc x NR, 32 KiB)
    stays in L1 while the A panels stream from L2. Edge tiles go through a full
    MR x NR scratch tile so the micro-kernel keeps its fixed shape."""
    edge = np.empty((MR, NR), C.dtype)
    for jp in range(0, j1 - j0, NR):
        bpan = Bp[(jp // NR) * kc * NR:(jp // NR + 1) * kc * NR]
        w = min(NR, j1 - j0 - jp)
        for ip in range(0, i1 - i0, MR):
            apan = Ap[(ip // MR) * kc * MR:(ip // MR + 1) * kc * MR]
            h = min(MR, i1 - i0 - ip)
            if h == MR and w == NR:
                _micro(apan, bpan, kc, C, i0 + ip, j0 + jp, accumulate)
                continue
            _micro(apan, bpan, kc, edge, 0, 0, False)
            for r in range(h):
                for j in range(w):
                    if accumulate:
                        C[i0 + ip + r, j0 + jp + j] += edge[r, j]
                    else:
                        C[i0 + ip + r, j0 + jp + j] = edge[r, j]


@njit
def _packed_serial(A, B, C):
    m, k = A.shape
    n = B.shape[1]
    if k == 0:
        C[:] = 0
        return
    # Sized to the problem: small products must not pay for a megabyte of fresh pages.
    kc_max = min(KC, k)
    Bp = np.empty(kc_max * ((min(NC, n) + NR - 1) // NR * NR), C.dtype)
    Ap = np.empty(kc_max * ((min(MC, m) + MR - 1) // MR * MR), C.dtype)
    for j0 in range(0, n, NC):
        j1 = min(n, j0 + NC)
        for p0 in range(0, k, KC):
            p1 = min(k, p0 + KC)
            _pack_b(B, p0, p1, j0, j1, Bp)
            for i0 in range(0, m, MC):
                i1 = min(m, i0 + MC)
                _pack_a(A, i0, i1, p0, p1, Ap)
                _block(Ap, Bp, C, i0, i1, j0, j1, p1 - p0, p0 > 0)  # the first depth block stores


@njit_parallel
def _packed_parallel(A, B, C):
    m, k = A.shape
    n = B.shape[1]
    if k == 0:
        C[:] = 0
        return
    kc_max = min(KC, k)
    Bp = np.empty(kc_max * ((min(NC, n) + NR - 1) // NR * NR), C.dtype)
    # Rows are the parallel axis: short products get smaller row blocks, at least
    # MIN_ROW_BLOCKS of them, so that every thread has work. (A constant rather than
    # get_num_threads(), which would keep Numba from caching this function.)
    mc = min(MC, (m + MIN_ROW_BLOCKS * MR - 1) // (MIN_ROW_BLOCKS * MR) * MR)
    n_ib = (m + mc - 1) // mc
    for j0 in range(0, n, NC):
        j1 = min(n, j0 + NC)
        for p0 in range(0, k, KC):
            p1 = min(k, p0 + KC)
            kc = p1 - p0
            for t in prange((j1 - j0 + NR - 1) // NR):
                jt = j0 + t * NR
                _pack_b(B, p0, p1, jt, min(j1, jt + NR), Bp[t * kc * NR:(t + 1) * kc * NR])
            # Each thread packs its own MC rows of A (into its own L2) and writes its own
            # rows of C: no write races, no second fork-join per depth block.
            for ib in prange(n_ib):
                i0 = ib * mc
                i1 = min(m, i0 + mc)
                Ap = np.empty(kc * ((i1 - i0 + MR - 1) // MR * MR), C.dtype)
                _pack_a(A, i0, i1, p0, p1, Ap)
                _block(Ap, Bp, C, i0, i1, j0, j1, kc, p0 > 0)


# -- narrow outputs: dot products along contiguous rows ---------------------------
@njit
def _dot_rows(A, Bt, C, i):
    """C[i, :] = A[i] · Btᵀ, four output columns per pass over the row of A."""
    n, k = Bt.shape
    a = A[i]
    j = 0
    while j + 4 <= n:
        b0, b1, b2, b3 = Bt[j], Bt[j + 1], Bt[j + 2], Bt[j + 3]
        s0 = s1 = s2 = s3 = C[i, j] * 0
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
        s0 = C[i, j] * 0
        for p in range(k):
            s0 += a[p] * b0[p]
        C[i, j] = s0
        j += 1


@njit
def _axpy_row(A, B, C, i):
    """C[i, :] = sum_p A[i, p] · B[p, :]: for narrow B with contiguous rows (no transpose)."""
    c = C[i]
    c[:] = 0
    for p in range(A.shape[1]):
        a = A[i, p]
        b = B[p]
        for j in range(c.shape[0]):
            c[j] += a * b[j]


@njit
def _narrow_axpy_serial(A, B, C):
    for i in range(A.shape[0]):
        _axpy_row(A, B, C, i)


@njit_parallel
def _narrow_axpy_parallel(A, B, C):
    for i in prange(A.shape[0]):
        _axpy_row(A, B, C, i)


@njit
def _narrow_serial(A, Bt, C):
    C[:] = 0  # so that C[i, j] * 0 above is a clean zero of C's dtype
    for i in range(A.shape[0]):
        _dot_rows(A, Bt, C, i)


@njit_parallel
def _narrow_parallel(A, Bt, C):
    C[:] = 0
    for i in prange(A.shape[0]):
        _dot_rows(A, Bt, C, i)


@njit
def _outer_rows(At, B, Ct, j):
    """Ct[j] = sum_i B[i, j]·At[i]: column j of Aᵀ·B as axpys along At's contiguous rows,
    four per pass over Ct[j]."""
    g = Ct[j]
    g[:] = 0
    k = At.shape[0]
    i = 0
    while i + 4 <= k:
        d0, d1, d2, d3 = B[i, j], B[i + 1, j], B[i + 2, j], B[i + 3, j]
        a0, a1, a2, a3 = At[i], At[i + 1], At[i + 2], At[i + 3]
        for p in range(g.size):
            g[p] += d0 * a0[p] + d1 * a1[p] + d2 * a2[p] + d3 * a3[p]
        i += 4
    while i < k:
        d0, a0 = B[i, j], At[i]
        for p in range(g.size):
            g[p] += d0 * a0[p]
        i += 1


@njit
def _narrow_tn_serial(At, B, C):
    """C = Atᵀ·B for narrow B and short depth (At stored (k, m), C-contiguous)."""
    Ct = np.empty((C.shape[1], C.shape[0]), C.dtype)
    for j in range(C.shape[1]):
        _outer_rows(At, B, Ct, j)
    C[:] = Ct.T


@njit_parallel
def _narrow_tn_parallel(At, B, C):
    Ct = np.empty((C.shape[1], C.shape[0]), C.dtype)
    for j in prange(C.shape[1]):
        _outer_rows(At, B, Ct, j)
    C[:] = Ct.T


# -- compiled entry points for other kernels (fused epochs, conv) --------------------
PARALLEL_MIN_WORK = 1 << 21  # multiply-adds below which a thread launch costs more than it saves


@njit
def gemm_into(A, B, C, a_rows_contiguous, parallel):
    """C = A·B for logical operands, the same kernel choice as _gemm, callable from @njit."""
    m, k = A.shape
    n = B.shape[1]
    par = parallel and m * k * n >= PARALLEL_MIN_WORK
    if m == 0 or n == 0:
        return
    if n < NARROW and not a_rows_contiguous and k <= KC:
        if par:
            _narrow_tn_parallel(A.T, B, C)
        else:
            _narrow_tn_serial(A.T, B, C)
    elif n < NARROW and B.strides[1] == B.itemsize and k < DOT_MIN_DEPTH and a_rows_contiguous:
        if par:
            _narrow_axpy_parallel(A, B, C)
        else:
            _narrow_axpy_serial(A, B, C)
    elif n < NARROW and a_rows_contiguous:
        Bt = np.ascontiguousarray(B.T)
        if par:
            _narrow_parallel(A, Bt, C)
        else:
            _narrow_serial(A, Bt, C)
    elif n < NARROW:
        if par:
            _packed_parallel(B.T, A.T, C.T)
        else:
            _packed_serial(B.T, A.T, C.T)
    elif par:
        _packed_parallel(A, B, C)
    else:
        _packed_serial(A, B, C)


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


def _gemm(A, B, out, parallel, a_rows_contiguous):
    """out = A·B for logical operands (views); picks the kernel by shape."""
    m, k = A.shape
    n = B.shape[1]
    if m == 0 or n == 0:
        return out
    parallel = parallel and m * k * n >= PARALLEL_MIN_WORK
    if n < NARROW:
        # Aᵀ·B of short depth: axpys along the stored (contiguous) rows of A into Cᵀ.
        # Deep ones read all of A once per output column that way; they take the
        # transposed packed problem below.
        if not a_rows_contiguous and k <= KC:
            (_narrow_tn_parallel if parallel else _narrow_tn_serial)(A.T, B, out)
            return out
        if B.flags.c_contiguous and a_rows_contiguous and k < DOT_MIN_DEPTH:
            (_narrow_axpy_parallel if parallel else _narrow_axpy_serial)(A, B, out)
            return out
        if a_rows_contiguous:  # dot products along rows of A and of Bᵀ (a view for A·Bᵀ)
            (_narrow_parallel if parallel else _narrow_serial)(A, np.ascontiguousarray(B.T), out)
            return out
        A, B, C = B.T, A.T, out.T  # Cᵀ = Bᵀ·Aᵀ: the wide dimension becomes the panel one
    else:
        C = out
    (_packed_parallel if parallel else _packed_serial)(A, B, C)
    return out


def matmul(a, b, out=None, parallel=False):
    """A·B: a (m, k), b (k, n) -> (m, n)."""
    out = _check(a, b, out, a.shape[0], a.shape[-1], b.shape[0], b.shape[-1], "matmul")
    return _gemm(a, b, out, parallel, True)


def matmul_nt(a, b, out=None, parallel=False):
    """A·Bᵀ: a (m, k), b (n, k) -> (m, n)."""
    out = _check(a, b, out, a.shape[0], a.shape[-1], b.shape[-1], b.shape[0], "matmul_nt")
    return _gemm(a, b.T, out, parallel, True)


def matmul_tn(a, b, out=None, parallel=False):
    """Aᵀ·B: a (k, m), b (k, n) -> (m, n)."""
    out = _check(a, b, out, a.shape[-1], a.shape[0], b.shape[0], b.shape[-1], "matmul_tn")
    return _gemm(a.T, b, out, parallel, False)


# -- the families: one per form ------------------------------------------------------
FORMS = {
    # form: (how the stored operands relate to logical A, B), public kernel
    "nn": (lambda a, b: (a, b), matmul),
    "nt": (lambda a, b: (a, b.T), matmul_nt),
    "tn": (lambda a, b: (a.T, b), matmul_tn),
}

# 64 ... 2048 squares, then every shape the networks use, as (m, k, n) of the
# logical product. nielsen batch 10, mlp batch 128, linear full set, cnn fc.
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
        a_shape = (k, m) if form == "tn" else (m, k)
        b_shape = (n, k) if form == "nt" else (k, n)
        return (rng.standard_normal(a_shape).astype(dtype),
                rng.standard_normal(b_shape).astype(dtype))
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
                       skip_timing=lambda version, s: version == "v1_naive" and s[0] * s[1] * s[2] > 300e6)

    def logical_out(a, b):
        A, B = logical(a, b)
        return A, B, np.empty((A.shape[0], B.shape[1]), a.dtype)

    @fam.version
    def v1_naive(a, b):
        A, B, C = logical_out(a, b)
        _naive(A, B, C)
        return C

    @fam.version
    def v2_blocked(a, b):
        A, B, C = logical_out(a, b)
        _blocked(A, B, C)
        return C

    @fam.version
    def v3_register_tiled(a, b):
        return kernel(a, b)

    @fam.version
    def v4_parallel(a, b):
        return kernel(a, b, parallel=True)

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
