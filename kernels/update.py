"""Batched optimizer updates: SGD, momentum, Adam over one flat parameter buffer.

    python -m kernels.update          # validate every version, then time the sweep

Each compiled version makes ONE pass over the buffers, in place: per element it
reads g (and m, v), updates the state and p, and writes them back, where the
NumPy expression form of the reference backend streams the arrays through
memory several times and allocates temporaries.

Versions: numpy_expression (the reference/baseline: NumpyOps' code),
numba_serial, numba_parallel (prange), torch_foreach (torch._foreach_* on
tensors sharing the arrays' memory, the multi-tensor path torch.optim uses).
"""
import numpy as np
from numba import prange

from kernels._numba import njit, njit_parallel
from kernels.family import KernelFamily


# -- the compiled kernels (also called from the fused epochs) -----------------------
@njit
def sgd_serial(p, g, lr):
    lr = p.dtype.type(lr)
    for i in range(p.size):
        p[i] -= lr * g[i]


@njit_parallel
def sgd_parallel(p, g, lr):
    lr = p.dtype.type(lr)
    for i in prange(p.size):
        p[i] -= lr * g[i]


@njit
def momentum_serial(p, g, v, lr, beta):
    lr, beta, rest = p.dtype.type(lr), p.dtype.type(beta), p.dtype.type(1 - beta)
    for i in range(p.size):
        vi = beta * v[i] + rest * g[i]
        v[i] = vi
        p[i] -= lr * vi


@njit_parallel
def momentum_parallel(p, g, v, lr, beta):
    lr, beta, rest = p.dtype.type(lr), p.dtype.type(beta), p.dtype.type(1 - beta)
    for i in prange(p.size):
        vi = beta * v[i] + rest * g[i]
        v[i] = vi
        p[i] -= lr * vi


def adam_constants(step, lr, beta1, beta2):
    """(1-β1, 1-β2, 1/(1-β1^t), 1/(1-β2^t)) in double precision, as torch computes them."""
    return 1.0 - beta1, 1.0 - beta2, 1.0 / (1.0 - beta1 ** step), 1.0 / (1.0 - beta2 ** step)


@njit
def adam_serial(p, g, m, v, step, lr, beta1, beta2, eps):
    t = p.dtype.type
    b1, b2, lr_, eps_ = t(beta1), t(beta2), t(lr), t(eps)
    r1, r2 = t(1.0 - beta1), t(1.0 - beta2)
    c1, c2 = t(1.0 - beta1 ** step), t(1.0 - beta2 ** step)
    for i in range(p.size):
        gi = g[i]
        mi = b1 * m[i] + r1 * gi
        vi = b2 * v[i] + r2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= lr_ * (mi / c1) / (np.sqrt(vi / c2) + eps_)


@njit_parallel
def adam_parallel(p, g, m, v, step, lr, beta1, beta2, eps):
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


# -- the NumPy expression forms (exactly NumpyOps') ------------------------------
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


# -- families -------------------------------------------------------------------------
# Flat parameter counts of the networks: linear, nielsen, mlp, cnn; plus 1 and odd sizes.
PARAM_COUNTS = {"linear": 7850, "nielsen": 23860, "mlp": 101770, "cnn": 1111946}
CHECK_SHAPES = [(1,), (7,), (33,), (257,), (4099,), (101770,)]
HYPER = dict(lr=0.01, beta=0.9, beta1=0.9, beta2=0.999, eps=1e-8, step=3)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _make_family(name, n_state, reference, serial, parallel, torch_version):
    def make(shape, dtype, rng):
        p = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        state = [np.abs(rng.standard_normal(shape)).astype(dtype) * 0.1 for _ in range(n_state)]
        return (p, g, *state)

    def run(fn):
        def version(p, g, *state):
            fn(p, g, *state, *args)
            return p
        return version

    args = {"sgd": (HYPER["lr"],), "momentum": (HYPER["lr"], HYPER["beta"]),
            "adam": (HYPER["step"], HYPER["lr"], HYPER["beta1"], HYPER["beta2"], HYPER["eps"])}[name]
    fam = KernelFamily(f"{name}_update", run(reference), make,
                       nbytes=lambda s, k=n_state: 4.0 * s[0] * (3 + 2 * k))
    fam.sweep_shapes = [(n,) for n in PARAM_COUNTS.values()] + [(1 << 22,)]
    fam.check_shapes = CHECK_SHAPES
    fam.dtypes = ("float32", "float64")
    fam.version(run(reference), name="numpy_expression")
    fam.version(run(serial), name="numba_serial")
    fam.version(run(parallel), name="numba_parallel")
    torch = _torch()
    if torch is not None:
        def foreach(p, g, *state):
            torch_version(torch, *(torch.from_numpy(a) for a in (p, g, *state)), *args)
            return p
        fam.version(foreach, name="torch_foreach")
    return fam


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


FAMILIES = [
    _make_family("sgd", 0, sgd_numpy, sgd_serial, sgd_parallel, _sgd_torch),
    _make_family("momentum", 1, momentum_numpy, momentum_serial, momentum_parallel, _momentum_torch),
    _make_family("adam", 2, adam_numpy, adam_serial, adam_parallel, _adam_torch),
]


if __name__ == "__main__":
    from kernels.family import main
    raise SystemExit(main(FAMILIES))
