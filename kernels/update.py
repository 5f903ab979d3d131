"""Batched optimizer updates: SGD, momentum, Adam over one flat parameter buffer.

    mnist-bench kernels --families sgd_update,momentum_update,adam_update

Each compiled version makes ONE pass over the buffers, in place: per element it
reads g (and m, v), updates the state and p, and writes them back, where the
NumPy expression form of the reference backend streams the arrays through
memory several times and allocates temporaries. Every version returns every
buffer it writes (p, and v or m and v), and each is checked on its own.

Versions: numpy_expression (the reference backend's code), numba_serial and
numba_parallel (one body, compiled both ways), torch_foreach (torch._foreach_*
on tensors sharing the arrays' memory, the multi-tensor path torch.optim uses).
"""
import numpy as np
from numba import prange

from ..models import NETWORKS
from ..models.params import total_size
from ._numba import serial_and_parallel
from .family import KernelFamily


def _sgd(p, g, lr):
    lr = p.dtype.type(lr)
    for i in prange(p.size):
        p[i] -= lr * g[i]


def _momentum(p, g, v, lr, beta):
    lr, beta, rest = p.dtype.type(lr), p.dtype.type(beta), p.dtype.type(1 - beta)
    for i in prange(p.size):
        vi = beta * v[i] + rest * g[i]
        v[i] = vi
        p[i] -= lr * vi


def _adam(p, g, m, v, step, lr, beta1, beta2, eps):
    # 1 - β and the bias corrections are formed in double precision and rounded
    # once, as NumPy's float32 expressions of the reference do.
    t = p.dtype.type
    b1, b2, lr_, eps_ = t(beta1), t(beta2), t(lr), t(eps)
    r1, r2 = t(1.0 - beta1), t(1.0 - beta2)
    c1, c2 = t(1.0 - beta1 ** step), t(1.0 - beta2 ** step)
    for i in prange(p.size):
        gi = g[i]
        mi = b1 * m[i] + r1 * gi
        vi = b2 * v[i] + r2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr_ * (mi / c1) / (np.sqrt(vi / c2) + eps_)


sgd_serial, sgd_parallel = serial_and_parallel(_sgd)
momentum_serial, momentum_parallel = serial_and_parallel(_momentum)
adam_serial, adam_parallel = serial_and_parallel(_adam)


# -- the NumPy expression forms (exactly the reference's) ------------------------------
def sgd_numpy(p, g, lr):
    p -= p.dtype.type(lr) * g


def momentum_numpy(p, g, v, lr, beta):
    t = p.dtype.type
    v *= t(beta)
    v += t(1 - beta) * g
    p -= t(lr) * v


def adam_numpy(p, g, m, v, step, lr, beta1, beta2, eps):
    t = p.dtype.type
    m *= t(beta1)
    m += t(1 - beta1) * g
    v *= t(beta2)
    v += t(1 - beta2) * g * g
    mhat = m / t(1 - beta1 ** step)
    vhat = v / t(1 - beta2 ** step)
    p -= t(lr) * mhat / (np.sqrt(vhat) + t(eps))


# -- torch's multi-tensor forms ---------------------------------------------------------
def _sgd_torch(torch, p, g, lr):
    torch._foreach_add_([p], [g], alpha=-lr)


def _momentum_torch(torch, p, g, v, lr, beta):
    torch._foreach_mul_([v], beta)
    torch._foreach_add_([v], [g], alpha=1 - beta)
    torch._foreach_add_([p], [v], alpha=-lr)


def _adam_torch(torch, p, g, m, v, step, lr, beta1, beta2, eps):
    # torch.optim.Adam's _multi_tensor_adam (foreach=True), non-capturable branch.
    torch._foreach_lerp_([m], [g], 1 - beta1)
    torch._foreach_mul_([v], beta2)
    torch._foreach_addcmul_([v], [g], [g], 1 - beta2)
    bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
    denom = torch._foreach_sqrt([v])
    torch._foreach_div_(denom, bc2 ** 0.5)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_([p], [m], denom, -lr / bc1)


# -- families ------------------------------------------------------------------------------
# Flat parameter counts of the networks, then 2^22 for bandwidth; odd sizes for the checks.
PARAM_COUNTS = {name: total_size(cls().param_shapes()) for name, cls in NETWORKS.items()}
CHECK_SHAPES = [(1,), (7,), (33,), (257,), (4099,), (PARAM_COUNTS["mlp"],)]
HYPER = dict(lr=0.01, beta=0.9, beta1=0.9, beta2=0.999, eps=1e-8, step=3)
STATE = {"sgd": ("p",), "momentum": ("p", "v"), "adam": ("p", "m", "v")}
ARGS = {"sgd": ("lr",), "momentum": ("lr", "beta"), "adam": ("step", "lr", "beta1", "beta2", "eps")}


def make_inputs(name):
    """make_inputs(shape, dtype, rng) of the ``name`` update's families (the CPU ones
    here, the CUDA ones in cuda_update.py): p, g and the state buffers (>= 0, as
    Adam's v must be)."""
    def make(shape, dtype, rng):
        p = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        state = [np.abs(rng.standard_normal(shape)).astype(dtype) * 0.1 for _ in STATE[name][1:]]
        return (p, g, *state)
    return make


def with_hyperparameters(name, fn):
    """``fn(p, g, *state, *hyperparameters)`` as a version (p, g, *state) -> every
    buffer it updates, with the families' HYPER values."""
    args = tuple(HYPER[a] for a in ARGS[name])

    def version(p, g, *state):
        fn(p, g, *state, *args)
        return (p, *state)
    return version


REFERENCES = {"sgd": sgd_numpy, "momentum": momentum_numpy, "adam": adam_numpy}


def _make_family(name, serial, parallel, torch_version):
    outputs = STATE[name]
    args = tuple(HYPER[a] for a in ARGS[name])
    reference = REFERENCES[name]

    def run(fn):
        return with_hyperparameters(name, fn)

    fam = KernelFamily(f"{name}_update", run(reference), make_inputs(name), outputs=outputs,
                       nbytes=lambda s, itemsize: itemsize * s[0] * (1.0 + 2 * len(outputs)),
                       dtypes=("float32", "float64"),
                       sweep_shapes=[(n,) for n in PARAM_COUNTS.values()] + [(1 << 22,)],
                       check_shapes=CHECK_SHAPES)
    fam.version(run(reference), name="numpy_expression", library="numpy")
    fam.version(run(serial), name="numba_serial")
    fam.version(run(parallel), name="numba_parallel")

    def foreach(p, g, *state):
        import torch
        torch_version(torch, *(torch.from_numpy(a) for a in (p, g, *state)), *args)
        return (p, *state)
    fam.version(foreach, name="torch_foreach", library="torch")
    return fam


FAMILIES = [
    _make_family("sgd", sgd_serial, sgd_parallel, _sgd_torch),
    _make_family("momentum", momentum_serial, momentum_parallel, _momentum_torch),
    _make_family("adam", adam_serial, adam_parallel, _adam_torch),
]
