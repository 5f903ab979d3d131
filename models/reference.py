"""The NumPy reference: the implementation of the ops interface (models/ops.py)
that every kernel and backend is validated against -- plain vectorised NumPy,
BLAS underneath -- and Nielsen's per-sample trainer (network.py: backprop one
sample at a time, gradients summed over the batch).
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .ops import Ops, dropout_keep_mask
from .train import OpsTrainer


def _sigmoid(z):
    # exp of a negative argument only, so large |z| neither overflows nor warns.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype)


class HostArrays:
    """The array plumbing of every ops implementation on NumPy host arrays (the
    reference's and the Numba kernels'): float32 C-contiguous inputs, labels as
    they are."""

    def asarray(self, x):
        x = np.asarray(x)
        return np.ascontiguousarray(x, np.float32) if x.dtype.kind == "f" else x

    def to_numpy(self, a):
        return np.asarray(a)

    def zeros(self, shape):
        return np.zeros(shape, np.float32)

    def take_rows(self, x, idx):
        return x[idx]


class NumpyOps(HostArrays, Ops):
    name = "numpy"

    def matmul(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def matmul_nt(self, a, b, out=None):
        return np.matmul(a, b.T, out=out)

    def matmul_tn(self, a, b, out=None):
        return np.matmul(a.T, b, out=out)

    def dense(self, x, w, b, activation):
        z = x @ w
        z += b
        if activation == "sigmoid":
            return _sigmoid(z)
        if activation == "relu":
            return np.maximum(z, 0, out=z)
        if activation == "none":
            return z
        raise ValueError(f"unknown activation {activation!r}")

    def activation_backward(self, a, da, activation):
        if activation == "sigmoid":
            return da * a * (1 - a)
        if activation == "relu":
            return da * (a > 0)
        if activation == "none":
            return da
        raise ValueError(f"unknown activation {activation!r}")

    def bias_grad(self, dz, out=None):
        return np.sum(dz, axis=0, out=out)

    def softmax_cross_entropy(self, logits, labels):
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        logsum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        logp = shifted - logsum
        loss = -logp[np.arange(n), labels].mean()
        grad = np.exp(logp)
        grad[np.arange(n), labels] -= 1
        grad /= n
        return float(loss), grad.astype(logits.dtype, copy=False)

    def quadratic_loss(self, a, onehot):
        diff = a - onehot
        n = a.shape[0]
        return float(0.5 * np.sum(diff * diff) / n), diff / diff.dtype.type(n)

    def conv2d(self, x, w, b):
        f, c, kh, kw = w.shape
        windows = sliding_window_view(x, (kh, kw), axis=(2, 3))  # N,C,OH,OW,KH,KW
        y = np.einsum("ncijkl,fckl->nfij", windows, w, optimize=True)
        y += b[None, :, None, None]
        return np.ascontiguousarray(y, dtype=x.dtype)

    def conv2d_backward(self, x, w, dy, dw_out, db_out, need_dx=True):
        f, c, kh, kw = w.shape
        windows = sliding_window_view(x, (kh, kw), axis=(2, 3))
        dw_out[...] = np.einsum("ncijkl,nfij->fckl", windows, dy, optimize=True)
        db_out[...] = dy.sum(axis=(0, 2, 3))
        if not need_dx:
            return None
        # dx is the full correlation of dy with the flipped kernel.
        padded = np.pad(dy, ((0, 0), (0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1)))
        pw = sliding_window_view(padded, (kh, kw), axis=(2, 3))
        dx = np.einsum("nfijkl,fckl->ncij", pw, w[:, :, ::-1, ::-1], optimize=True)
        return np.ascontiguousarray(dx, dtype=x.dtype)

    def maxpool2(self, x):
        n, c, h, w = x.shape
        blocks = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2)
        blocks = blocks.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
        arg = blocks.argmax(axis=-1).astype(np.int8)  # first max wins, as in torch
        y = np.take_along_axis(blocks, arg[..., None].astype(np.intp), axis=-1)[..., 0]
        return np.ascontiguousarray(y), arg

    def maxpool2_backward(self, dy, argmax, x_shape):
        n, c, h, w = x_shape
        oh, ow = dy.shape[2], dy.shape[3]
        onehot = (argmax[..., None] == np.arange(4, dtype=np.int8)) * dy[..., None]
        dx = np.zeros(x_shape, dy.dtype)
        dx[:, :, :oh * 2, :ow * 2] = (onehot.reshape(n, c, oh, ow, 2, 2)
                                      .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, oh * 2, ow * 2))
        return dx

    def dropout(self, x, rate, key):
        mask = dropout_keep_mask(x.shape, rate, key).astype(x.dtype) / x.dtype.type(1 - rate)
        return x * mask, mask

    def mul(self, a, b):
        return a * b

    def sgd_update(self, p, g, lr):
        p -= np.float32(lr) * g

    def momentum_update(self, p, g, v, lr, beta):
        v *= np.float32(beta)
        v += np.float32(1 - beta) * g
        p -= np.float32(lr) * v

    def adam_update(self, p, g, m, v, step, lr, beta1, beta2, eps):
        m *= np.float32(beta1)
        m += np.float32(1 - beta1) * g
        v *= np.float32(beta2)
        v += np.float32(1 - beta2) * g * g
        mhat = m / np.float32(1 - beta1 ** step)
        vhat = v / np.float32(1 - beta2 ** step)
        p -= np.float32(lr) * mhat / (np.sqrt(vhat) + np.float32(eps))


class PerSampleTrainer(OpsTrainer):
    """Nielsen's update_mini_batch: backprop each sample alone, sum the gradients,
    then one update with their mean."""

    def compute_grads(self, idx):
        if isinstance(idx, slice):
            idx = np.arange(idx.start, idx.stop)
        total = np.zeros_like(self.gflat)
        loss = 0.0
        for i in idx:
            loss += super().compute_grads(idx=[i])
            total += self.gflat
        self.gflat[...] = total / len(idx)
        return loss / len(idx)


class Float64Ops(NumpyOps):
    """The reference ops in float64: what float32 results are measured against
    (validation and the check of timed work, bench/validate.py and bench/verify.py)."""
    name = "numpy-float64"

    def asarray(self, x):
        x = np.asarray(x)
        return np.ascontiguousarray(x, np.float64) if x.dtype.kind == "f" else x

    def zeros(self, shape):
        return np.zeros(shape, np.float64)
