"""CUDA float32 matmul in the three forms backprop needs, as numbered versions.

    nn: C = A·B    a (m, k), b (k, n)   forward x·W
    nt: C = A·Bᵀ   a (m, k), b (n, k)   input gradient dy·Wᵀ
    tn: C = Aᵀ·B   a (k, m), b (k, n)   weight gradient xᵀ·dy

Versions (the llm.c / siboehm sequence), each registered once in VERSIONS with
its declared tile configurations; the family, the simulator tests, the PTX check
and `mnist-bench gpu` find every version and configuration there:
    v1_naive               one thread per C element, K loop from global memory
    v2_shared_tiled        T×T tiles of A and B staged in shared memory
    v3_1d_register_tiled   64×64 block tile, each thread TM=8 outputs of one column
    v4_2d_register_tiled   128×128 block tile, BK=8, each thread an 8×8 register tile
    v5_prefetch_register_tiled  v4 with the next K slab loaded into registers
                           during the current slab's products (double-buffered
                           shared tiles, one barrier per slab)
    v6_warp_tiled          v5's slabs with the outputs laid out by warp
                           (siboehm's kernel 10)
    cublas_fp32 / cublas_tf32   torch.matmul on the same device arrays
A version with 128-bit (float4) loads is not written: Numba's CUDA target has no
way to reinterpret a float32 array as float4 inside a kernel, so every global
load stays 32-bit.

The number of K tiles is always ceil(K / tile), from the problem, never from
the grid size (Numba's documentation example loops over gridDim and is wrong
on non-square shapes; tests/test_cuda_sim.py shows it). Output tiles are walked
with a grid stride, so any grid is correct (the simulator uses one or two
blocks). Shared-memory tiles of a transposed operand are loaded with the thread
index running along the contiguous dimension, so every global load is coalesced.

Every kernel takes (A, B, C, bias, act, M, N, K) and ends with the dense
layer's epilogue: act < 0 stores A·B as it is, otherwise bias[j] is added and
act selects none/sigmoid/relu (the fused forward of kernels/cuda_nn.py).

    mnist-bench gpu --sections matmul # validates, then times on a real GPU
"""
import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import cuda, float32

from .family import operands
from .cuda_common import (MAX_BLOCKS, SIMULATOR, CudaKernelFamily, check_float32,
                                 check_out, device)

STORE, ACT_NONE, ACT_SIGMOID, ACT_RELU = -1, 0, 1, 2
ACTIVATION_CODES = {"none": ACT_NONE, "sigmoid": ACT_SIGMOID, "relu": ACT_RELU}
FORMS = ("nn", "nt", "tn")


@cuda.jit(device=True, inline=True)
def sigmoid(z):
    # exp of a non-positive argument only: no overflow for large |z|.
    if z >= 0:
        return float32(1.0) / (float32(1.0) + math.exp(-z))
    e = math.exp(z)
    return e / (float32(1.0) + e)


@cuda.jit(device=True, inline=True)
def epilogue(acc, bias, j, act):
    if act < 0:
        return acc
    z = acc + bias[j]
    if act == ACT_SIGMOID:
        return sigmoid(z)
    if act == ACT_RELU:
        return z if z > float32(0.0) else float32(0.0)
    return z


@cuda.jit(device=True, inline=True)
def _a_normal(a, i, k):   # A stored (m, k)
    return a[i, k]


@cuda.jit(device=True, inline=True)
def _a_transposed(a, i, k):   # A stored (k, m)
    return a[k, i]


@cuda.jit(device=True, inline=True)
def _b_normal(b, k, j):   # B stored (k, n)
    return b[k, j]


@cuda.jit(device=True, inline=True)
def _b_transposed(b, k, j):   # B stored (n, k)
    return b[j, k]


def _loaders(form):
    return (_a_transposed if form == "tn" else _a_normal,
            _b_transposed if form == "nt" else _b_normal)


@functools.lru_cache(maxsize=None)
def naive_kernel(form):
    load_a, load_b = _loaders(form)

    @cuda.jit
    def matmul_naive(A, B, C, bias, act, M, N, K):
        # threadIdx.x runs along columns: a warp reads consecutive B and C elements.
        j0 = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        i0 = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
        for i in range(i0, M, cuda.gridDim.y * cuda.blockDim.y):
            for j in range(j0, N, cuda.gridDim.x * cuda.blockDim.x):
                acc = float32(0.0)
                for k in range(K):
                    acc += load_a(A, i, k) * load_b(B, k, j)
                C[i, j] = epilogue(acc, bias, j, act)
    return matmul_naive


@functools.lru_cache(maxsize=None)
def tiled_kernel(form, T):
    a_t, b_t = form == "tn", form == "nt"
    load_a, load_b = _loaders(form)
    TP = T + 1   # padded row: the transposed-operand stores below write down a column

    @cuda.jit
    def matmul_shared_tiled(A, B, C, bias, act, M, N, K):
        sA = cuda.shared.array((T, TP), float32)   # sA[row, k]
        sB = cuda.shared.array((T, TP), float32)   # sB[k, col]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        # Coalescing: tx must run along each operand's contiguous dimension.
        ar, ak = (tx, ty) if a_t else (ty, tx)
        bk, bc = (tx, ty) if b_t else (ty, tx)
        tiles_k = (K + T - 1) // T
        for tm in range(cuda.blockIdx.y, (M + T - 1) // T, cuda.gridDim.y):
            for tn in range(cuda.blockIdx.x, (N + T - 1) // T, cuda.gridDim.x):
                acc = float32(0.0)
                for t in range(tiles_k):
                    i, k = tm * T + ar, t * T + ak
                    sA[ar, ak] = load_a(A, i, k) if i < M and k < K else float32(0.0)
                    k, j = t * T + bk, tn * T + bc
                    sB[bk, bc] = load_b(B, k, j) if k < K and j < N else float32(0.0)
                    cuda.syncthreads()
                    for kk in range(T):
                        acc += sA[ty, kk] * sB[kk, tx]
                    cuda.syncthreads()
                i, j = tm * T + ty, tn * T + tx
                if i < M and j < N:
                    C[i, j] = epilogue(acc, bias, j, act)
    return matmul_shared_tiled


@functools.lru_cache(maxsize=None)
def tile_stager(form, BM, BN, BK, NT):
    """Device function copying the BK-deep slabs of A (BM rows) and B (BN
    columns) into shared memory as sA[k, row], sB[k, col]; consecutive threads
    read consecutive addresses of whichever dimension is contiguous in memory."""
    a_t, b_t = form == "tn", form == "nt"
    load_a, load_b = _loaders(form)

    @cuda.jit(device=True, inline=True)
    def stage_tiles(A, B, sA, sB, tid, m0, n0, k0, M, N, K):
        for e in range(tid, BM * BK, NT):
            if a_t:
                kk, r = e // BM, e % BM
            else:
                r, kk = e // BK, e % BK
            i, k = m0 + r, k0 + kk
            sA[kk, r] = load_a(A, i, k) if i < M and k < K else float32(0.0)
        for e in range(tid, BN * BK, NT):
            if b_t:
                c, kk = e // BK, e % BK
            else:
                kk, c = e // BN, e % BN
            k, j = k0 + kk, n0 + c
            sB[kk, c] = load_b(B, k, j) if k < K and j < N else float32(0.0)
    return stage_tiles


@functools.lru_cache(maxsize=None)
def register_tiled_1d_kernel(form, BM, BN, BK, TM):
    NT = BM * BN // TM
    stage_tiles = tile_stager(form, BM, BN, BK, NT)

    @cuda.jit
    def matmul_1d_register_tiled(A, B, C, bias, act, M, N, K):
        sA = cuda.shared.array((BK, BM), float32)
        sB = cuda.shared.array((BK, BN), float32)
        acc = cuda.local.array(TM, float32)
        # v5's slab walk and prefetch; what differs is below: each warp owns a
        # WM x WN sub-tile and its threads' TM x TN tiles interleave across it
        tid = cuda.threadIdx.x & 1023   # proves tid >= 0: see v5
        col, row0 = tid % BN, (tid // BN) * TM
        tiles_k = (K + BK - 1) // BK
        for tm in range(cuda.blockIdx.y, (M + BM - 1) // BM, cuda.gridDim.y):
            for tn in range(cuda.blockIdx.x, (N + BN - 1) // BN, cuda.gridDim.x):
                m0, n0 = tm * BM, tn * BN
                for t in range(TM):
                    acc[t] = float32(0.0)
                for kt in range(tiles_k):
                    stage_tiles(A, B, sA, sB, tid, m0, n0, kt * BK, M, N, K)
                    cuda.syncthreads()
                    for kk in range(BK):
                        b = sB[kk, col]
                        for t in range(TM):
                            acc[t] += sA[kk, row0 + t] * b
                    cuda.syncthreads()
                j = n0 + col
                if j < N:
                    for t in range(TM):
                        i = m0 + row0 + t
                        if i < M:
                            C[i, j] = epilogue(acc[t], bias, j, act)
    return matmul_1d_register_tiled


@functools.lru_cache(maxsize=None)
def register_tile_ops(BM, BN, BK, TM, TN):
    """Device functions v4 and v5 share. The thread owns rows trow + RS·t and
    columns tcol + CS·u of the block tile: the strided layout makes a warp's
    shared reads conflict-free and its C stores coalesced."""
    RS, CS = BM // TM, BN // TN

    @cuda.jit(device=True, inline=True)
    def slab_products(sA, sB, acc, reg_a, reg_b, trow, tcol):
        # acc += the thread's outer products over one BK-deep slab sA[k, row], sB[k, col]
        for kk in range(BK):
            for t in range(TM):
                reg_a[t] = sA[kk, trow + RS * t]
            for u in range(TN):
                reg_b[u] = sB[kk, tcol + CS * u]
            for t in range(TM):
                for u in range(TN):
                    acc[t, u] += reg_a[t] * reg_b[u]

    @cuda.jit(device=True, inline=True)
    def store_tile(C, acc, bias, act, m0, n0, trow, tcol, M, N):
        # Two passes: the store loop must stay small enough for NVVM to unroll
        # it fully, else acc is indexed dynamically and demoted from registers
        # to local memory (seen in the PTX).
        for t in range(TM):
            for u in range(TN):
                i, j = m0 + trow + RS * t, n0 + tcol + CS * u
                if i < M and j < N:
                    C[i, j] = acc[t, u]
        if act >= 0:
            for t in range(TM):
                for u in range(TN):
                    i, j = m0 + trow + RS * t, n0 + tcol + CS * u
                    if i < M and j < N:
                        C[i, j] = epilogue(C[i, j], bias, j, act)
    return slab_products, store_tile


@functools.lru_cache(maxsize=None)
def register_tiled_2d_kernel(form, BM, BN, BK, TM, TN):
    RS, CS = BM // TM, BN // TN   # thread grid inside the block tile
    NT = RS * CS
    stage_tiles = tile_stager(form, BM, BN, BK, NT)
    slab_products, store_tile = register_tile_ops(BM, BN, BK, TM, TN)

    @cuda.jit
    def matmul_2d_register_tiled(A, B, C, bias, act, M, N, K):
        sA = cuda.shared.array((BK, BM), float32)
        sB = cuda.shared.array((BK, BN), float32)
        acc = cuda.local.array((TM, TN), float32)
        reg_a = cuda.local.array(TM, float32)
        reg_b = cuda.local.array(TN, float32)
        tid = cuda.threadIdx.x & 1023   # proves tid >= 0: see v5
        tcol, trow = tid % CS, tid // CS
        tiles_k = (K + BK - 1) // BK
        for tm in range(cuda.blockIdx.y, (M + BM - 1) // BM, cuda.gridDim.y):
            for tn in range(cuda.blockIdx.x, (N + BN - 1) // BN, cuda.gridDim.x):
                m0, n0 = tm * BM, tn * BN
                for t in range(TM):
                    for u in range(TN):
                        acc[t, u] = float32(0.0)
                for kt in range(tiles_k):
                    stage_tiles(A, B, sA, sB, tid, m0, n0, kt * BK, M, N, K)
                    cuda.syncthreads()
                    slab_products(sA, sB, acc, reg_a, reg_b, trow, tcol)
                    cuda.syncthreads()
                store_tile(C, acc, bias, act, m0, n0, trow, tcol, M, N)
    return matmul_2d_register_tiled


@functools.lru_cache(maxsize=None)
def prefetch_kernel(form, BM, BN, BK, TM, TN):
    """v4's register tiling with the global loads of slab k+1 issued before the
    products of slab k, into registers, then stored into the other half of a
    double-buffered shared tile: global latency hides behind the FMAs and one
    barrier per slab suffices."""
    a_t, b_t = form == "tn", form == "nt"
    load_a, load_b = _loaders(form)
    RS, CS = BM // TM, BN // TN
    NT = RS * CS
    LA, LB = BM * BK // NT, BN * BK // NT   # elements each thread stages per slab
    slab_products, store_tile = register_tile_ops(BM, BN, BK, TM, TN)
    # A slab stored down a column of sA when A is row-major: pad so the BK
    # threads writing one row fall in different banks.
    PA = BM + (0 if a_t else 4)
    PB = BN + (4 if b_t else 0)

    @cuda.jit(device=True, inline=True)
    def a_pos(e):   # (row, k) inside the slab of the e-th staged A element
        if a_t:
            return e % BM, e // BM
        return e // BK, e % BK

    @cuda.jit(device=True, inline=True)
    def b_pos(e):   # (k, col)
        if b_t:
            return e % BK, e // BK
        return e // BN, e % BN

    @cuda.jit
    def matmul_prefetch(A, B, C, bias, act, M, N, K):
        sA = cuda.shared.array((2, BK, PA), float32)
        sB = cuda.shared.array((2, BK, PB), float32)
        acc = cuda.local.array((TM, TN), float32)
        reg_a = cuda.local.array(TM, float32)
        reg_b = cuda.local.array(TN, float32)
        pa = cuda.local.array(LA, float32)
        pb = cuda.local.array(LB, float32)
        # The mask proves tid >= 0 to LLVM, and with it every shared index
        # below: Numba's negative-index wraparound selects then fold away,
        # which leaves the inner loop FMAs and constant-offset shared loads.
        tid = cuda.threadIdx.x & 1023
        tcol, trow = tid % CS, tid // CS
        tiles_k = (K + BK - 1) // BK
        for tm in range(cuda.blockIdx.y, (M + BM - 1) // BM, cuda.gridDim.y):
            for tn in range(cuda.blockIdx.x, (N + BN - 1) // BN, cuda.gridDim.x):
                m0, n0 = tm * BM, tn * BN
                for t in range(TM):
                    for u in range(TN):
                        acc[t, u] = float32(0.0)
                for kt in range(tiles_k + 1):
                    # Loads of slab kt go out first; the FMAs of slab kt-1
                    # (already in shared memory) run while they are in flight.
                    if kt < tiles_k:
                        k0 = kt * BK
                        for l in range(LA):
                            r, kk = a_pos(tid + NT * l)
                            i, k = m0 + r, k0 + kk
                            pa[l] = load_a(A, i, k) if i < M and k < K else float32(0.0)
                        for l in range(LB):
                            kk, c = b_pos(tid + NT * l)
                            k, j = k0 + kk, n0 + c
                            pb[l] = load_b(B, k, j) if k < K and j < N else float32(0.0)
                    if kt > 0:
                        cur = (kt - 1) & 1
                        slab_products(sA[cur], sB[cur], acc, reg_a, reg_b, trow, tcol)
                    if kt < tiles_k:
                        nxt = kt & 1
                        for l in range(LA):
                            r, kk = a_pos(tid + NT * l)
                            sA[nxt, kk, r] = pa[l]
                        for l in range(LB):
                            kk, c = b_pos(tid + NT * l)
                            sB[nxt, kk, c] = pb[l]
                    # Slab kt is staged and nobody reads slab kt-2's buffer any more.
                    cuda.syncthreads()
                store_tile(C, acc, bias, act, m0, n0, trow, tcol, M, N)
    return matmul_prefetch


# -- launch ---------------------------------------------------------------------
def problem_shape(form, a, b):
    """(M, N, K) of the product, or ValueError naming the mismatch."""
    if form not in FORMS:
        raise ValueError(f"unknown matmul form {form!r}; choose from {', '.join(FORMS)}")
    check_float32("a", a, 2)
    check_float32("b", b, 2)
    if form == "nn":
        (M, K), (K2, N) = a.shape, b.shape
    elif form == "nt":
        (M, K), (N, K2) = a.shape, b.shape
    else:
        (K, M), (K2, N) = a.shape, b.shape
    if K != K2:
        raise ValueError(f"matmul_{form}: inner dimensions differ: a {tuple(a.shape)}, "
                         f"b {tuple(b.shape)}")
    return M, N, K


_no_bias = None


def _bias_arg(bias, N):
    global _no_bias
    if bias is None:
        if _no_bias is None:
            _no_bias = cuda.to_device(np.zeros(1, np.float32))
        return _no_bias
    check_float32("bias", bias, 1)
    if bias.shape[0] != N:
        raise ValueError(f"bias has {bias.shape[0]} entries, the output has {N} columns")
    return bias


def _grid(M, N, bm, bn):
    return (min(math.ceil(N / bn), MAX_BLOCKS), min(math.ceil(M / bm), MAX_BLOCKS))


@functools.lru_cache(maxsize=None)
def warp_tiled_kernel(form, BM, BN, BK, WM, WN, WNITER, TM, TN):
    """v5's double-buffered, register-prefetched slabs with the outputs laid out by
    warp: each warp owns a WM x WN block of the tile, walked as WMITER x WNITER
    sub-blocks, and each of its threads a TM x TN patch of every sub-block. A
    warp then reads a narrow band of sA and sB per step (shared reads broadcast
    inside the warp) and each thread reuses WMITER·TM + WNITER·TN registers over
    WMITER·TM·WNITER·TN products (siboehm's kernel 10, in Numba)."""
    a_t, b_t = form == "tn", form == "nt"
    load_a, load_b = _loaders(form)
    NW = (BM // WM) * (BN // WN)
    NT = NW * 32
    WMITER = (WM * WN) // (32 * TM * TN * WNITER)
    WSUBM, WSUBN = WM // WMITER, WN // WNITER
    RM, RN = WMITER * TM, WNITER * TN
    LA, LB = BM * BK // NT, BN * BK // NT
    PA = BM + (0 if a_t else 4)
    PB = BN + (4 if b_t else 0)

    @cuda.jit(device=True, inline=True)
    def a_pos(e):
        if a_t:
            return e % BM, e // BM
        return e // BK, e % BK

    @cuda.jit(device=True, inline=True)
    def b_pos(e):
        if b_t:
            return e % BK, e // BK
        return e // BN, e % BN

    @cuda.jit(device=True, inline=True)
    def row_of(warp_row, t_row, r):
        return warp_row * WM + (r // TM) * WSUBM + t_row * TM + r % TM

    @cuda.jit(device=True, inline=True)
    def col_of(warp_col, t_col, c):
        return warp_col * WN + (c // TN) * WSUBN + t_col * TN + c % TN

    @cuda.jit
    def matmul_warp_tiled(A, B, C, bias, act, M, N, K):
        sA = cuda.shared.array((2, BK, PA), float32)
        sB = cuda.shared.array((2, BK, PB), float32)
        acc = cuda.local.array((RM, RN), float32)
        reg_m = cuda.local.array(RM, float32)
        reg_n = cuda.local.array(RN, float32)
        pa = cuda.local.array(LA, float32)
        pb = cuda.local.array(LB, float32)
        tid = cuda.threadIdx.x & 1023   # proves tid >= 0: see v5
        warp, lane = tid // 32, tid % 32
        warp_row, warp_col = warp // (BN // WN), warp % (BN // WN)
        t_row, t_col = lane // (WSUBN // TN), lane % (WSUBN // TN)
        tiles_k = (K + BK - 1) // BK
        for tm in range(cuda.blockIdx.y, (M + BM - 1) // BM, cuda.gridDim.y):
            for tn in range(cuda.blockIdx.x, (N + BN - 1) // BN, cuda.gridDim.x):
                m0, n0 = tm * BM, tn * BN
                for r in range(RM):
                    for c in range(RN):
                        acc[r, c] = float32(0.0)
                for kt in range(tiles_k + 1):
                    if kt < tiles_k:
                        k0 = kt * BK
                        for q in range(LA):
                            r, kk = a_pos(tid + NT * q)
                            i, k = m0 + r, k0 + kk
                            pa[q] = load_a(A, i, k) if i < M and k < K else float32(0.0)
                        for q in range(LB):
                            kk, c = b_pos(tid + NT * q)
                            k, j = k0 + kk, n0 + c
                            pb[q] = load_b(B, k, j) if k < K and j < N else float32(0.0)
                    if kt > 0:
                        cur = (kt - 1) & 1
                        for kk in range(BK):
                            for r in range(RM):
                                reg_m[r] = sA[cur, kk, row_of(warp_row, t_row, r)]
                            for c in range(RN):
                                reg_n[c] = sB[cur, kk, col_of(warp_col, t_col, c)]
                            for r in range(RM):
                                for c in range(RN):
                                    acc[r, c] += reg_m[r] * reg_n[c]
                    if kt < tiles_k:
                        nxt = kt & 1
                        for q in range(LA):
                            r, kk = a_pos(tid + NT * q)
                            sA[nxt, kk, r] = pa[q]
                        for q in range(LB):
                            kk, c = b_pos(tid + NT * q)
                            sB[nxt, kk, c] = pb[q]
                    cuda.syncthreads()
                # two passes, as store_tile: the loops stay small enough to unroll
                for r in range(RM):
                    for c in range(RN):
                        i, j = m0 + row_of(warp_row, t_row, r), n0 + col_of(warp_col, t_col, c)
                        if i < M and j < N:
                            C[i, j] = acc[r, c]
                if act >= 0:
                    for r in range(RM):
                        for c in range(RN):
                            i, j = m0 + row_of(warp_row, t_row, r), n0 + col_of(warp_col, t_col, c)
                            if i < M and j < N:
                                C[i, j] = epilogue(C[i, j], bias, j, act)
    return matmul_warp_tiled


# -- the registry: one entry per version ----------------------------------------
@dataclass(frozen=True)
class CudaVersion:
    """How to build and launch one version: ``kernel(form, config)`` -> compiled
    kernel, ``block(config)`` -> threads per block, ``tile(config)`` -> (rows,
    columns) of C per block; ``configs`` are the declared tile configurations
    (the first is the default, the rest are swept by `mnist-bench gpu`), and
    ``simulator`` a small one for the simulator's tests (several output and K
    tiles walked by at most two blocks)."""
    name: str
    kernel: object
    block: object
    tile: object
    configs: tuple
    simulator: dict


VERSIONS = {}


def register(name, kernel, block, tile, configs, simulator):
    VERSIONS[name] = CudaVersion(name, kernel, block, tile, tuple(configs), simulator)


def _2d(c):
    return (c["BM"] // c["TM"]) * (c["BN"] // c["TN"])


register("v1_naive", lambda f, c: naive_kernel(f), lambda c: (c["BX"], c["BY"]),
         lambda c: (c["BY"], c["BX"]), [dict(BX=16, BY=16)], dict(BX=4, BY=2))
register("v2_shared_tiled", lambda f, c: tiled_kernel(f, c["T"]), lambda c: (c["T"], c["T"]),
         lambda c: (c["T"], c["T"]), [dict(T=16)], dict(T=4))
# 256 threads: at 512 (BN=64) the kernel needs more than 128 registers a thread
# and an H100 refuses the launch (CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES).
register("v3_1d_register_tiled", lambda f, c: register_tiled_1d_kernel(f, c["BM"], c["BN"], c["BK"], c["TM"]),
         lambda c: c["BM"] * c["BN"] // c["TM"], lambda c: (c["BM"], c["BN"]),
         [dict(BM=64, BN=32, BK=8, TM=8)], dict(BM=8, BN=8, BK=4, TM=4))
register("v4_2d_register_tiled",
         lambda f, c: register_tiled_2d_kernel(f, c["BM"], c["BN"], c["BK"], c["TM"], c["TN"]),
         _2d, lambda c: (c["BM"], c["BN"]), [dict(BM=128, BN=128, BK=8, TM=8, TN=8)],
         dict(BM=8, BN=8, BK=4, TM=2, TN=4))
# BK=16 halves the barriers per K step; fastest of five configs at 4096³ on an
# H100 (results/gpu/sweep.json); the others stay declared, and swept.
register("v5_prefetch_register_tiled",
         lambda f, c: prefetch_kernel(f, c["BM"], c["BN"], c["BK"], c["TM"], c["TN"]),
         _2d, lambda c: (c["BM"], c["BN"]),
         [dict(BM=128, BN=128, BK=16, TM=8, TN=8), dict(BM=128, BN=128, BK=8, TM=8, TN=8),
          dict(BM=128, BN=64, BK=16, TM=8, TN=4), dict(BM=64, BN=64, BK=16, TM=4, TN=4)],
         dict(BM=8, BN=8, BK=4, TM=2, TN=4))
register("v6_warp_tiled",
         lambda f, c: warp_tiled_kernel(f, c["BM"], c["BN"], c["BK"], c["WM"], c["WN"], c["WNITER"],
                                        c["TM"], c["TN"]),
         lambda c: (c["BM"] // c["WM"]) * (c["BN"] // c["WN"]) * 32, lambda c: (c["BM"], c["BN"]),
         [dict(BM=128, BN=128, BK=16, WM=64, WN=64, WNITER=4, TM=8, TN=4),
          dict(BM=128, BN=128, BK=8, WM=64, WN=64, WNITER=4, TM=8, TN=4),
          dict(BM=64, BN=128, BK=16, WM=32, WN=64, WNITER=2, TM=4, TN=4)],
         dict(BM=16, BN=16, BK=4, WM=8, WN=16, WNITER=1, TM=2, TN=2))


def config_name(version, config):
    """The family's name of a declared configuration: the default keeps the
    version's plain name."""
    v = VERSIONS[version]
    if config == v.configs[0]:
        return version
    return f"{version}[{','.join(f'{k}={val}' for k, val in config.items())}]"


def launch(version, form, a, b, out=None, bias=None, act=STORE, config=None,
           alloc=cuda.device_array):
    """C = op(a)·op(b) (+ bias, activation) on the device with ``version``;
    returns the device array C. ``config`` replaces the version's default tile
    configuration."""
    if version not in VERSIONS:
        raise ValueError(f"unknown matmul version {version!r}; choose from {', '.join(VERSIONS)}")
    v = VERSIONS[version]
    a, b = device(a), device(b)
    M, N, K = problem_shape(form, a, b)
    if out is None:
        out = alloc((M, N), np.float32)
    else:
        check_out(out, (M, N))
    bias = _bias_arg(None if bias is None else device(bias), N)
    if M == 0 or N == 0:
        return out
    c = dict(v.configs[0], **(config or {}))
    rows, cols = v.tile(c)
    v.kernel(form, c)[_grid(M, N, rows, cols), v.block(c)](a, b, out, bias, act, M, N, K)
    return out


# v5's 128x128 tiles leave most of an H100's 132 SMs idle below ~64 tiles.
LARGE_TILE_MIN_OUTPUTS = 64 * 128 * 128


def auto_version(M, N, simulator=None):
    """(version, config) the numba-cuda backend uses for an M x N product. Under
    the simulator it is v1_naive with 32-thread blocks, the cheapest to simulate
    (no barriers, no tile padding); the tiled versions are tested directly on
    small shapes."""
    if SIMULATOR if simulator is None else simulator:
        return "v1_naive", dict(BX=16, BY=2)
    if M * N >= LARGE_TILE_MIN_OUTPUTS:
        return "v5_prefetch_register_tiled", None
    return "v2_shared_tiled", None


def matmul_auto(form, a, b, out=None, bias=None, act=STORE, alloc=cuda.device_array, launch=launch):
    """C = op(a)·op(b) with the version ``auto_version`` picks for its shape."""
    M, N, _ = problem_shape(form, a, b)
    version, config = auto_version(M, N)
    return launch(version, form, a, b, out, bias, act, config=config, alloc=alloc)


# -- the kernel families -------------------------------------------------------
_REFERENCES = {"nn": lambda a, b: a @ b, "nt": lambda a, b: a @ b.T, "tn": lambda a, b: a.T @ b}


def _family(form):
    def make_inputs(shape, dtype, rng):
        # the CUDA families' shapes are (m, n, k), as the GPU runs stored them since
        # their first measurements; the CPU families' are (m, k, n)
        m, n, k = shape
        return operands(form, m, k, n, dtype, rng)

    # shape = (m, n, k): C is m×n, the reduction is k long.
    fam = CudaKernelFamily(f"cuda_matmul_{form}", _REFERENCES[form], make_inputs, outputs=("C",),
                           flops=lambda s: 2.0 * s[0] * s[1] * s[2],
                           nbytes=lambda s, itemsize: itemsize * (s[0] * s[2] + s[2] * s[1] + s[0] * s[1]),
                           depth=lambda s: s[2],
                           sweep_shapes=[(128, 128, 784), (784, 128, 128), (128, 784, 128),
                                         (1024, 1024, 1024), (4096, 4096, 4096)],
                           check_shapes=[(1, 1, 1), (7, 5, 33), (33, 3, 40), (130, 67, 129)])
    for version, v in VERSIONS.items():
        for config in v.configs:
            fam.version(functools.partial(launch, version, form, config=config),
                        name=config_name(version, config), library="cuda", config=config)
    for tf32 in (False, True):
        fam.version(functools.partial(cublas, form, tf32=tf32), available=torch_cuda,
                    name="cublas_tf32" if tf32 else "cublas_fp32", library="torch")
    return fam


def torch_cuda():
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if SIMULATOR or not torch.cuda.is_available():
        return False, "cuBLAS through torch needs torch with a CUDA device"
    return True, ""


def cublas(form, a, b, tf32=False):
    """cuBLAS's product of the same device arrays through torch (the baseline);
    TF32 only in the version that says so."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = tf32
    ta, tb = torch.as_tensor(device(a), device="cuda"), torch.as_tensor(device(b), device="cuda")
    ta = ta.T if form == "tn" else ta
    tb = tb.T if form == "nt" else tb
    out = torch.matmul(ta, tb)
    torch.backends.cuda.matmul.allow_tf32 = False
    return cuda.as_cuda_array(out)


matmul_nn, matmul_nt, matmul_tn = (_family(f) for f in FORMS)
FAMILIES = [matmul_nn, matmul_nt, matmul_tn]
