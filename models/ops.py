"""The ops interface: everything a network needs from a backend.

A network (models/networks.py) is written once against these methods and never
knows which backend runs it. A backend is a subclass that implements them on its
own arrays (NumPy arrays, Numba-compiled kernels, torch tensors, CUDA device
arrays). ``NumpyOps`` in models/reference.py is the reference that
every other implementation is checked against.

Conventions shared by every implementation:
- float32 everywhere; labels are int64 class indices.
- dense weights are stored (fan_in, fan_out), so the forward pass is x·W (A·B),
  the input gradient dy·Wᵀ (A·Bᵀ) and the weight gradient xᵀ·dy (Aᵀ·B).
- images and conv activations are NCHW; conv weights (C_out, C_in, KH, KW).
- losses are means over the mini-batch, so their gradients are already divided
  by the batch size and the optimizers apply them as they are.
- ``out=`` arguments let a network write gradients straight into the views of
  one flat gradient buffer, which the batched update then reads in one pass.
"""
import numpy as np

ACTIVATIONS = ("none", "sigmoid", "relu")


class Ops:
    """Abstract base: every method below must be implemented by a backend."""

    name = "abstract"

    # -- memory -------------------------------------------------------------
    def asarray(self, x: np.ndarray):
        """Host array -> backend array (float32 stays float32, ints stay ints)."""
        raise NotImplementedError

    def to_numpy(self, a) -> np.ndarray:
        raise NotImplementedError

    def zeros(self, shape):
        raise NotImplementedError

    def views(self, flat, shapes: dict) -> dict:
        """Named views of consecutive slices of one flat buffer."""
        out, offset = {}, 0
        for name, shape in shapes.items():
            size = int(np.prod(shape))
            out[name] = flat[offset:offset + size].reshape(shape)
            offset += size
        return out

    def take_rows(self, x, idx):
        """Rows ``idx`` (a host int array) of ``x``: the mini-batch gather."""
        raise NotImplementedError

    def reshape(self, x, shape):
        return x.reshape(shape)

    def scalar(self, x) -> float:
        """A loss value -> Python float (may synchronise a device)."""
        return float(x)

    def synchronize(self):
        """Block until queued work is done (GPU backends); a no-op on the CPU."""

    # -- matmul in the three forms backprop needs -----------------------------
    def matmul(self, a, b, out=None):
        """A·B: a (m, k), b (k, n) -> (m, n)."""
        raise NotImplementedError

    def matmul_nt(self, a, b, out=None):
        """A·Bᵀ: a (m, k), b (n, k) -> (m, n)."""
        raise NotImplementedError

    def matmul_tn(self, a, b, out=None):
        """Aᵀ·B: a (k, m), b (k, n) -> (m, n)."""
        raise NotImplementedError

    # -- dense layers and activations ---------------------------------------
    def dense(self, x, w, b, activation: str):
        """activation(x·W + b), fused where the backend can."""
        raise NotImplementedError

    def activation_backward(self, a, da, activation: str):
        """dL/dz from the layer's output a and dL/da (sigmoid' = a(1-a), relu' = a>0)."""
        raise NotImplementedError

    def bias_grad(self, dz, out=None):
        """Sum of dz over the batch rows -> (n,)."""
        raise NotImplementedError

    # -- losses (means over the batch) ----------------------------------------
    def softmax_cross_entropy(self, logits, labels):
        """(mean -log softmax(logits)[label], dL/dlogits); stable for large logits."""
        raise NotImplementedError

    def quadratic_loss(self, a, onehot):
        """(mean over the batch of ½‖a - y‖², dL/da)."""
        raise NotImplementedError

    # -- cnn -------------------------------------------------------------------
    def conv2d(self, x, w, b):
        """Valid (no padding), stride-1 convolution: (N,C,H,W) -> (N,F,H-KH+1,W-KW+1)."""
        raise NotImplementedError

    def conv2d_backward(self, x, w, dy, dw_out, db_out, need_dx=True):
        """Writes dL/dw and dL/db into dw_out, db_out; returns dL/dx (or None)."""
        raise NotImplementedError

    def maxpool2(self, x):
        """2×2, stride-2 max-pool -> (y, argmax), argmax is what the backward needs."""
        raise NotImplementedError

    def maxpool2_backward(self, dy, argmax, x_shape):
        raise NotImplementedError

    def dropout(self, x, rate: float, key: int):
        """x·mask/(1-rate) with the suite's counter-based mask -> (y, scaled mask)."""
        raise NotImplementedError

    def mul(self, a, b):
        """Elementwise product (dropout backward: dy · scaled mask)."""
        raise NotImplementedError

    # -- one batched parameter update over the flat buffers -------------------
    def sgd_update(self, p, g, lr):
        """p -= lr·g."""
        raise NotImplementedError

    def momentum_update(self, p, g, v, lr, beta):
        """v = beta·v + (1-beta)·g; p -= lr·v (the rule of write-up 002)."""
        raise NotImplementedError

    def adam_update(self, p, g, m, v, step, lr, beta1, beta2, eps):
        """Adam with bias correction, as torch.optim.Adam (step counts from 1)."""
        raise NotImplementedError


def dropout_keep_mask(shape, rate: float, key: int) -> np.ndarray:
    """The suite's dropout mask: element i is kept when hash(key, i) >= rate·2³².

    A counter-based hash rather than a stateful generator, so that NumPy, Numba,
    torch and CUDA backends can all compute the identical mask from (key, i)
    without sharing generator state. The hash is the 32-bit finaliser of
    MurmurHash3 applied to (i + key·0x9E3779B9).
    """
    n = int(np.prod(shape))
    h = np.arange(n, dtype=np.uint64)
    h = (h + np.uint64(key & 0xFFFFFFFF) * np.uint64(0x9E3779B9)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    threshold = np.uint64(int(rate * 4294967296.0))
    return (h >= threshold).reshape(shape)
