"""The CUDA kernels of the networks besides matmul: the fused dense forward
(x·W + b and the activation in the matmul's epilogue), activation backward,
bias gradient, the two loss gradients (quadratic; softmax cross-entropy,
stabilised by the row max), dropout with the suite's counter-based mask, the
mini-batch row gather, and the cnn's conv2d and 2×2 max-pool forward/backward.

Host functions take device arrays, return device arrays (allocated with
``alloc``, so a caller can recycle buffers) and raise ValueError on bad shapes.
Each kernel walks its elements with a grid stride (kernels/cuda_common.py).

    mnist-bench gpu               # validates the families, then times them on a real GPU
"""
import math

import numpy as np
from numba import cuda, float32, int8, uint64

from .cuda_common import (SIMULATOR, THREADS, CudaKernelFamily, blocks_for,
                                 check_float32, check_out, device)
from .cuda_matmul import ACTIVATION_CODES, matmul_auto
from ..models.reference import NumpyOps

# Threads of the one-block reductions (losses, conv weight gradients): a power of 2.
REDUCE_THREADS = 32 if SIMULATOR else 256
BIAS_BLOCK = (8, 4) if SIMULATOR else (32, 8)   # (columns, row groups)


def _activation_code(activation):
    try:
        return ACTIVATION_CODES[activation]
    except KeyError:
        raise ValueError(f"unknown activation {activation!r}; "
                         f"choose from {', '.join(ACTIVATION_CODES)}") from None


def dense(x, w, b, activation, alloc=cuda.device_array):
    """activation(x·W + b) in one launch: bias and activation in the matmul epilogue."""
    return matmul_auto("nn", x, w, bias=b, act=_activation_code(activation), alloc=alloc)


# -- elementwise -----------------------------------------------------------------
@cuda.jit
def sigmoid_backward_kernel(a, da, dz):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        dz[i] = da[i] * a[i] * (float32(1.0) - a[i])


@cuda.jit
def relu_backward_kernel(a, da, dz):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        dz[i] = da[i] if a[i] > float32(0.0) else float32(0.0)


@cuda.jit
def mul_kernel(a, b, out):
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        out[i] = a[i] * b[i]


def _flat(a):
    return a.reshape(a.size)


def _same_shape(**arrays):
    shapes = {name: tuple(a.shape) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError("shapes differ: " + ", ".join(f"{k} {v}" for k, v in shapes.items()))


def activation_backward(a, da, activation, alloc=cuda.device_array):
    """dL/dz = dL/da · act'(z), act' from the layer output a."""
    code = _activation_code(activation)
    _same_shape(a=a, da=da)
    if code == ACTIVATION_CODES["none"]:
        return da
    dz = alloc(a.shape, np.float32)
    kernel = sigmoid_backward_kernel if code == ACTIVATION_CODES["sigmoid"] else relu_backward_kernel
    kernel[blocks_for(a.size, THREADS), THREADS](_flat(a), _flat(da), _flat(dz))
    return dz


def mul(a, b, alloc=cuda.device_array):
    _same_shape(a=a, b=b)
    out = alloc(a.shape, np.float32)
    mul_kernel[blocks_for(a.size, THREADS), THREADS](_flat(a), _flat(b), _flat(out))
    return out


# -- bias gradient: column sums ----------------------------------------------------
@cuda.jit
def bias_grad_kernel(dz, out):
    # A warp spans consecutive columns (coalesced rows); blockDim.y row groups
    # each sum every blockDim.y-th row, then reduce in shared memory.
    partial = cuda.shared.array((BIAS_BLOCK[1], BIAS_BLOCK[0]), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    rows, cols = dz.shape
    for j0 in range(cuda.blockIdx.x * cuda.blockDim.x, cols, cuda.gridDim.x * cuda.blockDim.x):
        j = j0 + tx
        s = float32(0.0)
        if j < cols:
            for i in range(ty, rows, cuda.blockDim.y):
                s += dz[i, j]
        partial[ty, tx] = s
        cuda.syncthreads()
        if ty == 0 and j < cols:
            for r in range(1, cuda.blockDim.y):
                s += partial[r, tx]
            out[j] = s
        cuda.syncthreads()


def bias_grad(dz, out=None, alloc=cuda.device_array):
    """Sum of dz over its rows -> (n,), written into ``out`` when given."""
    check_float32("dz", dz, 2)
    if out is None:
        out = alloc((dz.shape[1],), np.float32)
    else:
        check_out(out, (dz.shape[1],))
    bx, by = BIAS_BLOCK
    bias_grad_kernel[blocks_for(dz.shape[1], bx), (bx, by)](dz, out)
    return out


# -- losses: one block, deterministic reduction ---------------------------------------
@cuda.jit(device=True, inline=True)
def block_sum(partial, value):
    """The sum of every thread's ``value`` over the block (a tree in the shared
    array ``partial``, one slot per thread, power-of-two blocks); every thread of
    the block must call it, and gets the sum."""
    tid = cuda.threadIdx.x
    partial[tid] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if tid < half:
            partial[tid] += partial[tid + half]
        cuda.syncthreads()
        half //= 2
    total = partial[0]
    cuda.syncthreads()  # partial may be reused at once
    return total


@cuda.jit(device=True)
def _block_sum_into(partial, value, loss, slot, scale):
    """Thread 0 writes the block's sum of ``value`` times ``scale`` to loss[slot]."""
    total = block_sum(partial, value)
    if cuda.threadIdx.x == 0:
        loss[slot] = total * scale


@cuda.jit(device=True)
def softmax_xent_row(z, grad, r, label, inv_n):
    """Row ``r`` of a softmax cross-entropy: dL/dz (scaled by ``inv_n``) into
    ``grad[r]``, the row's loss returned. The shift by the row's maximum keeps exp
    finite for any logits. Shared by the per-op kernel and the persistent epoch."""
    classes = z.shape[1]
    m = z[r, 0]
    for j in range(1, classes):
        if z[r, j] > m:
            m = z[r, j]
    s = float32(0.0)
    for j in range(classes):
        s += math.exp(z[r, j] - m)
    log_sum = math.log(s)
    for j in range(classes):
        p = math.exp(z[r, j] - m - log_sum)
        grad[r, j] = ((p - float32(1.0)) if j == label else p) * inv_n
    return log_sum - (z[r, label] - m)


@cuda.jit
def softmax_cross_entropy_kernel(logits, labels, grad, loss, slot):
    partial = cuda.shared.array(REDUCE_THREADS, float32)
    n = logits.shape[0]
    inv_n = float32(1.0) / float32(n)
    total = float32(0.0)
    for r in range(cuda.threadIdx.x, n, cuda.blockDim.x):
        total += softmax_xent_row(logits, grad, r, labels[r], inv_n)
    _block_sum_into(partial, total, loss, slot, inv_n)


@cuda.jit
def quadratic_loss_kernel(a, y, grad, loss, slot):
    partial = cuda.shared.array(REDUCE_THREADS, float32)
    n, cols = a.shape
    inv_n = float32(1.0) / float32(n)
    total = float32(0.0)
    for e in range(cuda.threadIdx.x, n * cols, cuda.blockDim.x):
        r, j = e // cols, e % cols
        d = a[r, j] - y[r, j]
        total += d * d
        grad[r, j] = d * inv_n
    _block_sum_into(partial, total, loss, slot, float32(0.5) * inv_n)


def _loss_target(loss_out, slot, alloc):
    if loss_out is None:
        return alloc((1,), np.float32), 0
    if not 0 <= slot < loss_out.shape[0]:
        raise ValueError(f"loss slot {slot} outside a loss buffer of {loss_out.shape[0]}")
    return loss_out, slot


def softmax_cross_entropy(logits, labels, loss_out=None, slot=0, alloc=cuda.device_array):
    """(loss buffer, dL/dlogits): the batch-mean loss is written to loss_out[slot]
    (a new 1-element array when loss_out is None). Labels must lie in
    [0, classes): the kernel cannot raise, so callers check them once on the host."""
    check_float32("logits", logits, 2)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0] or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be {logits.shape[0]} integer class indices, "
                         f"got {labels.dtype} {tuple(labels.shape)}")
    loss, slot = _loss_target(loss_out, slot, alloc)
    grad = alloc(logits.shape, np.float32)
    softmax_cross_entropy_kernel[1, REDUCE_THREADS](logits, labels, grad, loss, slot)
    return loss, grad


def quadratic_loss(a, onehot, loss_out=None, slot=0, alloc=cuda.device_array):
    """(loss buffer, dL/da) of mean ½‖a - y‖², the loss written to loss_out[slot]."""
    check_float32("a", a, 2)
    _same_shape(a=a, onehot=onehot)
    loss, slot = _loss_target(loss_out, slot, alloc)
    grad = alloc(a.shape, np.float32)
    quadratic_loss_kernel[1, REDUCE_THREADS](a, onehot, grad, loss, slot)
    return loss, grad


# -- dropout: the suite's counter-based mask (models.ops.dropout_keep_mask) -------------
_MASK32 = np.uint64(0xFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B9)
_MURMUR1, _MURMUR2 = np.uint64(0x85EBCA6B), np.uint64(0xC2B2AE35)
_S13, _S16 = np.uint64(13), np.uint64(16)


@cuda.jit(device=True, inline=True)
def keep_hash(i, key_offset):
    """MurmurHash3's 32-bit finaliser of (i + key·0x9E3779B9) mod 2³², in uint64
    arithmetic with explicit masks (Numba types uint32·uint32 as 64-bit)."""
    h = (uint64(i) + key_offset) & _MASK32
    h ^= h >> _S16
    h = (h * _MURMUR1) & _MASK32
    h ^= h >> _S13
    h = (h * _MURMUR2) & _MASK32
    h ^= h >> _S16
    return h


@cuda.jit
def dropout_kernel(x, y, mask, key_offset, threshold, scale):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        m = scale if keep_hash(i, key_offset) >= threshold else float32(0.0)
        mask[i] = m
        y[i] = x[i] * m


def dropout(x, rate, key, alloc=cuda.device_array):
    """(x·mask/(1-rate), mask/(1-rate)) with the mask of models.ops.dropout_keep_mask."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    y, mask = alloc(x.shape, np.float32), alloc(x.shape, np.float32)
    key_offset = np.uint64((int(key) & 0xFFFFFFFF) * 0x9E3779B9)
    threshold = np.uint64(int(rate * 4294967296.0))
    scale = np.float32(1.0) / np.float32(1 - rate)
    dropout_kernel[blocks_for(x.size, THREADS), THREADS](_flat(x), _flat(y), _flat(mask),
                                                         key_offset, threshold, scale)
    return y, mask


# -- the mini-batch gather -------------------------------------------------------------
@cuda.jit
def gather_rows_kernel(x, idx, out):
    rows, width = out.shape
    for e in range(cuda.grid(1), rows * width, cuda.gridsize(1)):
        r, c = e // width, e % width
        out[r, c] = x[idx[r], c]


def take_rows(x, idx, alloc=cuda.device_array):
    """Rows ``idx`` (a device int array, values in [0, len(x))) of device array x."""
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ValueError(f"row indices must be a 1-D integer array, got {idx.dtype} "
                         f"{tuple(idx.shape)}")
    width = x.size // x.shape[0] if x.shape[0] else 0
    out = alloc((idx.shape[0],) + tuple(x.shape[1:]), x.dtype)
    if out.size:
        gather_rows_kernel[blocks_for(out.size, THREADS), THREADS](
            x.reshape(x.shape[0], width), idx, out.reshape(idx.shape[0], width))
    return out


# -- conv2d (valid, stride 1, NCHW) -----------------------------------------------------------
@cuda.jit
def conv2d_kernel(x, w, b, y):
    n_img, f_out, oh, ow = y.shape
    c_in, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        # j fastest: a warp reads neighbouring pixels of one (image, filter).
        j = e % ow
        i = (e // ow) % oh
        f = (e // (ow * oh)) % f_out
        n = e // (ow * oh * f_out)
        acc = float32(0.0)
        for c in range(c_in):
            for u in range(kh):
                for v in range(kw):
                    acc += x[n, c, i + u, j + v] * w[f, c, u, v]
        y[n, f, i, j] = acc + b[f]


@cuda.jit
def conv2d_grad_weights_kernel(x, dy, dw, db):
    """One block per dw element (then per db element): threads stride over the
    (image, output pixel) sum, then a shared-memory tree reduction."""
    partial = cuda.shared.array(REDUCE_THREADS, float32)
    n_img, f_out, oh, ow = dy.shape
    c_in, kh, kw = dw.shape[1], dw.shape[2], dw.shape[3]
    n_weights = dw.size
    per_image = oh * ow
    for unit in range(cuda.blockIdx.x, n_weights + f_out, cuda.gridDim.x):
        s = float32(0.0)
        if unit < n_weights:
            v = unit % kw
            u = (unit // kw) % kh
            c = (unit // (kw * kh)) % c_in
            f = unit // (kw * kh * c_in)
            for e in range(cuda.threadIdx.x, n_img * per_image, cuda.blockDim.x):
                n, p = e // per_image, e % per_image
                i, j = p // ow, p % ow
                s += x[n, c, i + u, j + v] * dy[n, f, i, j]
        else:
            f = unit - n_weights
            for e in range(cuda.threadIdx.x, n_img * per_image, cuda.blockDim.x):
                n, p = e // per_image, e % per_image
                s += dy[n, f, p // ow, p % ow]
        s = block_sum(partial, s)
        if cuda.threadIdx.x == 0:
            if unit < n_weights:
                dw[f, c, u, v] = s
            else:
                db[f] = s
        cuda.syncthreads()


@cuda.jit
def conv2d_grad_input_kernel(dy, w, dx):
    # conv2d_kernel's index walk, one thread per input pixel gathering dy through the
    # filter taps that read it (the forward's transpose, no atomics)
    n_img, c_in, h, wd = dx.shape
    f_out, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    kh, kw = w.shape[2], w.shape[3]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        xc = e % wd
        yr = (e // wd) % h
        c = (e // (wd * h)) % c_in
        n = e // (wd * h * c_in)
        acc = float32(0.0)
        for f in range(f_out):
            for u in range(kh):
                i = yr - u
                if 0 <= i < oh:
                    for v in range(kw):
                        j = xc - v
                        if 0 <= j < ow:
                            acc += dy[n, f, i, j] * w[f, c, u, v]
        dx[n, c, yr, xc] = acc


def _conv_shapes(x, w):
    check_float32("x", x, 4)
    check_float32("w", w, 4)
    if x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels, w expects {w.shape[1]}")
    oh, ow = x.shape[2] - w.shape[2] + 1, x.shape[3] - w.shape[3] + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: kernel {tuple(w.shape[2:])} larger than image "
                         f"{tuple(x.shape[2:])}")
    return x.shape[0], w.shape[0], oh, ow


def conv2d(x, w, b, alloc=cuda.device_array):
    """Valid, stride-1 convolution (N,C,H,W) -> (N,F,H-KH+1,W-KW+1), bias added."""
    shape = _conv_shapes(x, w)
    if b.shape != (w.shape[0],):
        raise ValueError(f"conv2d: bias shape {tuple(b.shape)}, expected ({w.shape[0]},)")
    y = alloc(shape, np.float32)
    conv2d_kernel[blocks_for(y.size, THREADS), THREADS](x, w, b, y)
    return y


def conv2d_backward(x, w, dy, dw_out, db_out, need_dx=True, alloc=cuda.device_array):
    """Writes dL/dw, dL/db into dw_out, db_out (one launch); returns dL/dx or None."""
    if tuple(dy.shape) != _conv_shapes(x, w):
        raise ValueError(f"conv2d_backward: dy shape {tuple(dy.shape)} does not match the "
                         f"output of x {tuple(x.shape)} with w {tuple(w.shape)}")
    check_out(dw_out, w.shape, "dw_out")
    check_out(db_out, (w.shape[0],), "db_out")
    units = dw_out.size + db_out.size
    conv2d_grad_weights_kernel[blocks_for(units), REDUCE_THREADS](x, dy, dw_out, db_out)
    if not need_dx:
        return None
    dx = alloc(x.shape, np.float32)
    conv2d_grad_input_kernel[blocks_for(dx.size, THREADS), THREADS](dy, w, dx)
    return dx


# -- 2×2 max-pool, stride 2 -------------------------------------------------------------------
@cuda.jit
def maxpool2_kernel(x, y, arg):
    n_img, ch, oh, ow = y.shape
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        j = e % ow
        i = (e // ow) % oh
        c = (e // (ow * oh)) % ch
        n = e // (ow * oh * ch)
        best, best_k = x[n, c, 2 * i, 2 * j], 0
        for k in range(1, 4):
            val = x[n, c, 2 * i + k // 2, 2 * j + k % 2]
            if val > best:   # strict: the first maximum wins, as in torch
                best, best_k = val, k
        y[n, c, i, j] = best
        arg[n, c, i, j] = int8(best_k)


@cuda.jit
def maxpool2_backward_kernel(dy, arg, dx):
    n_img, ch, h, wd = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        xc = e % wd
        yr = (e // wd) % h
        c = (e // (wd * h)) % ch
        n = e // (wd * h * ch)
        i, j = yr // 2, xc // 2
        g = float32(0.0)
        if i < oh and j < ow and arg[n, c, i, j] == (yr % 2) * 2 + xc % 2:
            g = dy[n, c, i, j]
        dx[n, c, yr, xc] = g


def maxpool2(x, alloc=cuda.device_array):
    """2×2 stride-2 max-pool (odd edges dropped) -> (y, argmax int8 in 0..3)."""
    check_float32("x", x, 4)
    n, c, h, w = x.shape
    y = alloc((n, c, h // 2, w // 2), np.float32)
    arg = alloc((n, c, h // 2, w // 2), np.int8)
    if y.size:
        maxpool2_kernel[blocks_for(y.size, THREADS), THREADS](x, y, arg)
    return y, arg


def maxpool2_backward(dy, argmax, x_shape, alloc=cuda.device_array):
    n, c, h, w = x_shape
    if tuple(dy.shape) != (n, c, h // 2, w // 2) or tuple(argmax.shape) != tuple(dy.shape):
        raise ValueError(f"maxpool2_backward: dy {tuple(dy.shape)} / argmax "
                         f"{tuple(argmax.shape)} do not pool an input of shape {tuple(x_shape)}")
    dx = alloc(tuple(x_shape), np.float32)
    maxpool2_backward_kernel[blocks_for(dx.size, THREADS), THREADS](dy, argmax, dx)
    return dx


# -- kernel families ---------------------------------------------------------------------------------
REF = NumpyOps()


def _dense_family(activation):
    def make_inputs(shape, dtype, rng):
        m, n, k = shape
        return (rng.standard_normal((m, k)).astype(dtype),
                (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype),
                rng.standard_normal(n).astype(dtype))

    fam = CudaKernelFamily(f"cuda_dense_{activation}", lambda x, w, b: REF.dense(x, w, b, activation),
                           make_inputs, outputs=("y",), flops=lambda s: 2.0 * s[0] * s[1] * s[2],
                           depth=lambda s: s[2],
                           sweep_shapes=[(10, 30, 784), (128, 128, 784), (256, 1024, 1024)],
                           check_shapes=[(1, 1, 1), (7, 33, 65), (33, 10, 784)])
    fam.version(lambda x, w, b: dense(device(x), device(w), device(b), activation),
                name="v1_matmul_epilogue", library="cuda")
    return fam


def _softmax_inputs(shape, dtype, rng):
    n, classes = shape
    logits = rng.standard_normal(shape).astype(dtype) * 30
    logits[0, 0] = 1e4  # the stable form must not overflow
    return logits, rng.integers(0, classes, n)


def _softmax_reference(logits, labels):
    loss, grad = REF.softmax_cross_entropy(logits, labels)
    return np.array([loss]), grad


softmax_xent = CudaKernelFamily("cuda_softmax_cross_entropy", _softmax_reference, _softmax_inputs,
                                outputs=("loss", "grad"), depth=lambda s: s[1],
                                sweep_shapes=[(128, 10), (256, 10), (50000, 10)],
                                check_shapes=[(1, 10), (7, 10), (33, 7)])
softmax_xent.version(lambda z, y: softmax_cross_entropy(device(z), device(y)),
                     name="v1_one_block", library="cuda")


def _conv_inputs(shape, dtype, rng):
    n, c, h, f, k = shape
    return (rng.standard_normal((n, c, h, h)).astype(dtype),
            rng.standard_normal((f, c, k, k)).astype(dtype), rng.standard_normal(f).astype(dtype))


# shape = (images, channels, height = width, filters, kernel size): the cnn's two convs.
conv2d_forward = CudaKernelFamily("cuda_conv2d", lambda x, w, b: REF.conv2d(x, w, b), _conv_inputs,
                                  outputs=("y",), depth=lambda s: s[1] * s[4] ** 2,
                                  flops=lambda s: 2.0 * s[0] * s[3] * s[1] * s[4] ** 2
                                  * (s[2] - s[4] + 1) ** 2,
                                  sweep_shapes=[(256, 1, 28, 32, 5), (256, 32, 12, 64, 5)],
                                  check_shapes=[(1, 1, 5, 1, 5), (2, 3, 7, 4, 3)])
conv2d_forward.version(lambda x, w, b: conv2d(device(x), device(w), device(b)),
                       name="v1_direct", library="cuda")

FAMILIES = [_dense_family("sigmoid"), _dense_family("relu"), softmax_xent, conv2d_forward]
