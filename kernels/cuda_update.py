"""The batched parameter update on the GPU: SGD, momentum and Adam, each ONE
launch over the flat parameter buffer (every parameter of a network lives in
one contiguous float32 array, models/train.py), grid-stride over its elements.

They are bandwidth-bound: Adam reads p, g, m, v and writes p, m, v, 28 bytes
per parameter (each family's ``nbytes``); `mnist-bench gpu` times the launch with
the L2 cache flushed before each sample, and the report divides those bytes by
the time.
"""
import math

import numpy as np
from numba import cuda

from . import update
from .cuda_common import THREADS, CudaKernelFamily, blocks_for, device


@cuda.jit
def sgd_kernel(p, g, lr):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i] -= lr * g[i]


@cuda.jit
def momentum_kernel(p, g, v, lr, beta, one_minus_beta):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        vi = beta * v[i] + one_minus_beta * g[i]
        v[i] = vi
        p[i] -= lr * vi


@cuda.jit
def adam_kernel(p, g, m, v, lr, beta1, beta2, one_minus_beta1, one_minus_beta2,
                bias_correction1, bias_correction2, eps):
    # 1 - β is rounded once on the host, as the NumPy reference does: in float32
    # arithmetic 1 - 0.999f is 4.7e-5 (relative) away from float32(0.001).
    # kernels/update.py's _adam, per CUDA thread: the same arithmetic, rounded the same way
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        gi = g[i]
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr * (mi / bias_correction1) / (math.sqrt(vi / bias_correction2) + eps)


def _check_flat(**arrays):
    n = None
    for name, a in arrays.items():
        if a.ndim != 1 or a.dtype != np.float32:
            raise ValueError(f"{name} must be a 1-D float32 buffer, got {a.dtype} {tuple(a.shape)}")
        if n is not None and a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} elements, expected {n}")
        n = a.shape[0]
    return n


def _grid(n):
    return blocks_for(n, THREADS), THREADS


def sgd_update(p, g, lr):
    """p -= lr·g, in place on device arrays."""
    n = _check_flat(p=p, g=g)
    sgd_kernel[_grid(n)](p, g, np.float32(lr))


def momentum_update(p, g, v, lr, beta):
    """v = beta·v + (1-beta)·g; p -= lr·v (write-up 002), in place."""
    n = _check_flat(p=p, g=g, v=v)
    momentum_kernel[_grid(n)](p, g, v, np.float32(lr), np.float32(beta), np.float32(1 - beta))


def adam_update(p, g, m, v, step, lr, beta1, beta2, eps):
    """torch.optim.Adam's update with bias correction; ``step`` counts from 1."""
    if step < 1:
        raise ValueError(f"Adam step counts from 1, got {step}")
    n = _check_flat(p=p, g=g, m=m, v=v)
    adam_kernel[_grid(n)](p, g, m, v, np.float32(lr), np.float32(beta1), np.float32(beta2),
                          np.float32(1 - beta1), np.float32(1 - beta2),
                          np.float32(1 - beta1 ** step), np.float32(1 - beta2 ** step),
                          np.float32(eps))


# -- kernel families (shape = (n,), the flat buffer length): the CPU families'
# inputs, hyperparameters and NumPy references (kernels/update.py) ----------------
def _family(name):
    outputs = update.STATE[name]
    return CudaKernelFamily(f"cuda_{name}", update.with_hyperparameters(name, update.REFERENCES[name]),
                            update.make_inputs(name), outputs=outputs,
                            nbytes=lambda s, itemsize: itemsize * s[0] * (1.0 + 2 * len(outputs)),
                            # the mlp's and the cnn's (the Adam network's) parameters; 2^24
                            # for bandwidth
                            sweep_shapes=[(update.PARAM_COUNTS["mlp"],), (update.PARAM_COUNTS["cnn"],),
                                          (1 << 24,)],
                            check_shapes=[(1,), (33,), (4099,)])


def _on_device(fn):
    """A version: upload host inputs, update in place with the families' hyperparameters,
    return every updated buffer."""
    def version(*arrays):
        arrays = [device(a) for a in arrays]
        update.with_hyperparameters(name_of[fn], fn)(*arrays)
        return (arrays[0],) + tuple(arrays[2:])
    return version


name_of = {sgd_update: "sgd", momentum_update: "momentum", adam_update: "adam"}
sgd, momentum, adam = (_family(n) for n in ("sgd", "momentum", "adam"))
for fam, fn in ((sgd, sgd_update), (momentum, momentum_update), (adam, adam_update)):
    fam.version(_on_device(fn), name="v1_grid_stride", library="cuda")
FAMILIES = [sgd, momentum, adam]
