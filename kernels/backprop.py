"""The elementwise and reduction kernels of backprop, fused where that saves passes.

    python -m kernels.backprop        # validate every version, then time the sweep

- bias + activation after a layer's matmul, one pass over z (NumPy: 2-4 passes
  and temporaries);
- activation derivative times the incoming gradient, one pass;
- bias gradient (column sums), one pass;
- softmax cross-entropy: max, log-sum-exp, loss and dL/dlogits in one pass per
  row, stable for any finite logits (only exp of non-positive numbers);
- quadratic loss and its gradient in one pass;
- dropout with the suite's counter-based mask (models.ops.dropout_keep_mask),
  the same MurmurHash3 finaliser re-implemented here, so masks are identical
  bit for bit.

Serial and prange versions of each; activations are coded as integers (ACT)
because they are compiled arguments.
"""
import numpy as np
from numba import prange

from kernels._numba import njit, njit_parallel
from kernels.family import KernelFamily

ACT = {"none": 0, "sigmoid": 1, "relu": 2}


def act_code(activation: str) -> int:
    try:
        return ACT[activation]
    except KeyError:
        raise ValueError(f"unknown activation {activation!r}; choose from {', '.join(ACT)}") from None


@njit
def sigmoid(z):
    # exp of a non-positive argument only: no overflow for large |z|.
    if z >= 0:
        return 1 / (1 + np.exp(-z))
    e = np.exp(z)
    return e / (1 + e)


@njit
def _bias_act_row(z, b, act, i):
    n = z.shape[1]
    if act == 1:
        for j in range(n):
            z[i, j] = sigmoid(z[i, j] + b[j])
    elif act == 2:
        for j in range(n):
            z[i, j] = max(z[i, j] + b[j], 0)
    else:
        for j in range(n):
            z[i, j] += b[j]


@njit
def bias_act_serial(z, b, act):
    """z <- act(z + b) in place (z: (m, n), b: (n,))."""
    for i in range(z.shape[0]):
        _bias_act_row(z, b, act, i)


@njit_parallel
def bias_act_parallel(z, b, act):
    for i in prange(z.shape[0]):
        _bias_act_row(z, b, act, i)


@njit
def _act_backward_chunk(a, da, out, act, lo, hi):
    if act == 1:
        for i in range(lo, hi):
            out[i] = da[i] * a[i] * (1 - a[i])
    elif act == 2:
        for i in range(lo, hi):
            out[i] = da[i] if a[i] > 0 else 0
    else:
        for i in range(lo, hi):
            out[i] = da[i]


CHUNK = 1 << 14


@njit
def act_backward_serial(a, da, out, act):
    """out = dL/dz from the layer output a and dL/da (flat, same length)."""
    _act_backward_chunk(a, da, out, act, 0, a.size)


@njit_parallel
def act_backward_parallel(a, da, out, act):
    n = a.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        _act_backward_chunk(a, da, out, act, c * CHUNK, min(n, (c + 1) * CHUNK))


@njit
def bias_grad_serial(dz, out):
    """out[j] = sum_i dz[i, j]."""
    out[:] = 0
    for i in range(dz.shape[0]):
        for j in range(dz.shape[1]):
            out[j] += dz[i, j]


@njit_parallel
def bias_grad_parallel(dz, out):
    # Each thread sums a strip of columns over every row: no shared writes.
    m, n = dz.shape
    strip = 64
    for s in prange((n + strip - 1) // strip):
        j0, j1 = s * strip, min(n, (s + 1) * strip)
        for j in range(j0, j1):
            out[j] = 0
        for i in range(m):
            for j in range(j0, j1):
                out[j] += dz[i, j]


@njit
def _xent_row(logits, labels, grad, i, scale):
    """Writes row i of dL/dlogits (already divided by the batch); returns -log p[label]."""
    n = logits.shape[1]
    mx = logits[i, 0]
    for j in range(1, n):
        mx = max(mx, logits[i, j])
    s = logits[i, 0] * 0
    for j in range(n):
        e = np.exp(logits[i, j] - mx)
        grad[i, j] = e
        s += e
    inv = scale / s
    for j in range(n):
        grad[i, j] *= inv
    y = labels[i]
    grad[i, y] -= scale
    return np.log(s) - (logits[i, y] - mx)


@njit
def _check_labels(labels, m, n):
    if labels.shape[0] != m:
        raise ValueError("softmax cross-entropy: one label per row of logits is needed")
    for i in range(m):
        if labels[i] < 0 or labels[i] >= n:
            raise ValueError("softmax cross-entropy: a label lies outside [0, number of classes)")


@njit
def softmax_xent_serial(logits, labels, grad):
    """Mean cross-entropy of softmax(logits) against class indices; grad = dL/dlogits."""
    m = logits.shape[0]
    _check_labels(labels, m, logits.shape[1])
    scale = logits.dtype.type(1.0 / m)
    total = 0.0
    for i in range(m):
        total += _xent_row(logits, labels, grad, i, scale)
    return total / m


@njit_parallel
def softmax_xent_parallel(logits, labels, grad):
    m = logits.shape[0]
    _check_labels(labels, m, logits.shape[1])
    scale = logits.dtype.type(1.0 / m)
    total = 0.0
    for i in prange(m):
        total += _xent_row(logits, labels, grad, i, scale)
    return total / m


@njit
def quadratic_serial(a, y, grad):
    """(mean over rows of ½‖a - y‖², grad = (a - y)/rows), a and y flattened."""
    rows = a.shape[0]
    inv = a.dtype.type(1.0 / rows)
    af, yf, gf = a.ravel(), y.ravel(), grad.ravel()
    total = 0.0
    for i in range(af.size):
        d = af[i] - yf[i]
        gf[i] = d * inv
        total += d * d
    return 0.5 * total / rows


# -- dropout ------------------------------------------------------------------------
_M32 = np.uint64(0xFFFFFFFF)
_GOLDEN = np.uint64(0x9E3779B9)
_C1 = np.uint64(0x85EBCA6B)
_C2 = np.uint64(0xC2B2AE35)
_S16, _S13 = np.uint64(16), np.uint64(13)


@njit
def keep(i, base, threshold):
    """models.ops.dropout_keep_mask's test for element i (base = key·golden mod 2³²)."""
    h = (np.uint64(i) + base) & _M32
    h ^= h >> _S16
    h = (h * _C1) & _M32
    h ^= h >> _S13
    h = (h * _C2) & _M32
    h ^= h >> _S16
    return h >= threshold


def dropout_constants(rate, key):
    base = (np.uint64(key & 0xFFFFFFFF) * _GOLDEN) & _M32
    return base, np.uint64(int(rate * 4294967296.0))


@njit
def _dropout_chunk(x, y, mask, base, threshold, scale, lo, hi):
    for i in range(lo, hi):
        s = scale if keep(i, base, threshold) else 0
        mask[i] = s
        y[i] = x[i] * s


@njit
def dropout_serial(x, y, mask, base, threshold, scale):
    """y = x·mask, mask = keep/(1-rate) (flat arrays)."""
    _dropout_chunk(x, y, mask, base, threshold, scale, 0, x.size)


@njit_parallel
def dropout_parallel(x, y, mask, base, threshold, scale):
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        _dropout_chunk(x, y, mask, base, threshold, scale, c * CHUNK, min(n, (c + 1) * CHUNK))


@njit
def mul_serial(a, b, out):
    for i in range(a.size):
        out[i] = a[i] * b[i]


@njit_parallel
def mul_parallel(a, b, out):
    for i in prange(a.size):
        out[i] = a[i] * b[i]


# -- families ---------------------------------------------------------------------
def _numpy_ops():
    from bench.backends.numpy_backend import NumpyOps
    return NumpyOps()


def _bias_act_family():
    def make(shape, dtype, rng):
        m, n, act = shape
        return rng.standard_normal((m, n)).astype(dtype) * 4, rng.standard_normal(n).astype(dtype), act

    def reference(z, b, act):
        name = {v: k for k, v in ACT.items()}[act]
        out = z + b
        if name == "sigmoid":
            return 1 / (1 + np.exp(-out))
        return np.maximum(out, 0) if name == "relu" else out

    fam = KernelFamily("bias_activation", reference, make,
                       nbytes=lambda s: 8.0 * s[0] * s[1])
    fam.version(lambda z, b, act: (bias_act_serial(z, b, act), z)[1], name="numba_serial")
    fam.version(lambda z, b, act: (bias_act_parallel(z, b, act), z)[1], name="numba_parallel")
    fam.version(lambda z, b, act: _numpy_ops().dense(z, np.eye(z.shape[1], dtype=z.dtype), b,
                                                      {v: k for k, v in ACT.items()}[act]),
                name="numpy_dense_identity")
    fam.check_shapes = [(1, 1, a) for a in (0, 1, 2)] + [(7, 33, a) for a in (0, 1, 2)] + [(257, 10, 1)]
    fam.sweep_shapes = [(10, 30, 1), (10, 10, 1), (128, 128, 2), (128, 10, 0), (256, 1024, 2),
                        (60000, 10, 0)]
    fam.dtypes = ("float32", "float64")
    return fam


def _xent_family():
    def make(shape, dtype, rng):
        m, n = shape
        logits = (rng.standard_normal((m, n)) * 30).astype(dtype)
        logits[0, 0] = 1e4  # far beyond exp's range: the stable form must not overflow
        return logits, rng.integers(0, n, m)

    def reference(logits, labels):
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        m = len(labels)
        grad = np.exp(logp)
        grad[np.arange(m), labels] -= 1
        return np.append(grad.ravel() / m, -logp[np.arange(m), labels].mean())

    def run(kernel):
        def version(logits, labels):
            grad = np.empty_like(logits)
            loss = kernel(logits, labels, grad)
            return np.append(grad.ravel(), loss).astype(logits.dtype)
        return version

    def numpy_version(logits, labels):
        loss, grad = _numpy_ops().softmax_cross_entropy(logits, labels)
        return np.append(grad.ravel(), loss).astype(logits.dtype)

    fam = KernelFamily("softmax_cross_entropy", reference, make,
                       nbytes=lambda s: 8.0 * s[0] * s[1])
    fam.version(run(softmax_xent_serial), name="numba_serial")
    fam.version(run(softmax_xent_parallel), name="numba_parallel")
    fam.version(numpy_version, name="numpy")
    fam.check_shapes = [(1, 1), (1, 10), (7, 10), (33, 7), (257, 10)]
    fam.sweep_shapes = [(10, 10), (128, 10), (256, 10), (60000, 10)]
    fam.dtypes = ("float32",)
    return fam


def _dropout_family():
    from models.ops import dropout_keep_mask

    def make(shape, dtype, rng):
        return rng.standard_normal(shape).astype(dtype), 0.5, 12345

    def reference(x, rate, key):
        return x * dropout_keep_mask(x.shape, rate, key) / (1 - rate)

    def run(kernel):
        def version(x, rate, key):
            y, mask = np.empty_like(x), np.empty_like(x)
            base, threshold = dropout_constants(rate, key)
            kernel(x.ravel(), y.ravel(), mask.ravel(), base, threshold, x.dtype.type(1 / (1 - rate)))
            return y
        return version

    fam = KernelFamily("dropout", reference, make, nbytes=lambda s: 12.0 * int(np.prod(s)))
    fam.version(run(dropout_serial), name="numba_serial")
    fam.version(run(dropout_parallel), name="numba_parallel")
    fam.version(lambda x, rate, key: _numpy_ops().dropout(x, rate, key)[0], name="numpy")
    fam.check_shapes = [(1, 1), (7, 33), (257, 1024)]
    fam.sweep_shapes = [(256, 1024)]
    fam.dtypes = ("float32",)
    return fam


FAMILIES = [_bias_act_family(), _xent_family(), _dropout_family()]


if __name__ == "__main__":
    from kernels.family import main
    raise SystemExit(main(FAMILIES))
