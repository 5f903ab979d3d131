"""The elementwise and reduction kernels of backprop, fused where that saves passes.

    mnist-bench kernels --families bias_activation,softmax_cross_entropy,dropout

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

Every loop body is written once and compiled serial and parallel (prange);
activations are integer codes (ACT) because they are compiled arguments.
"""
import numpy as np
from numba import prange, types
from numba.extending import overload

from ..models.ops import dropout_keep_mask
from ..models.reference import NumpyOps
from ._numba import JIT, njit, njit_leaf, pow2_float32, serial_and_parallel, stack_array
from .family import KernelFamily

ACT = {"none": 0, "sigmoid": 1, "relu": 2}
CHUNK = 1 << 14  # elements per parallel task of the flat elementwise kernels


def act_code(activation: str) -> int:
    try:
        return ACT[activation]
    except KeyError:
        raise ValueError(f"unknown activation {activation!r}; choose from {', '.join(ACT)}") from None


def exp_nonpositive(x):
    """exp(x) for x <= 0 (np.exp in float64)."""
    return np.exp(x)


@overload(exp_nonpositive, jit_options=JIT)
def _exp_nonpositive(x):
    if x != types.float32:
        return lambda x: np.exp(x)

    def exp_float32(x):
        # Cephes' expf: x = n·ln 2 + r, n = round(x·log2 e), r (|r| <= ln2/2) by
        # two constants so that it stays exact; exp(r) by a degree-7 polynomial;
        # 2**n in the exponent bits. Plain arithmetic, so a loop of sigmoids
        # vectorises (np.exp is a scalar call); below -87 the result is 0.
        n = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))
        n = max(n, np.float32(-126.0))
        r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        e = (p * r * r + r + np.float32(1)) * pow2_float32(np.int32(n))
        return np.float32(0) if x < np.float32(-87.0) else e  # NaN stays NaN
    return exp_float32


@njit
def sigmoid(z):
    # exp of a non-positive argument only: no overflow for large |z|; no branch
    # around it, so a loop of sigmoids vectorises
    e = exp_nonpositive(-abs(z))
    s = 1 / (1 + e)
    return s if z >= 0 else e * s


@njit_leaf
def bias_act_span(z, z0, b, b0, n, act):
    """z[z0:z0 + n] <- act(z[z0:z0 + n] + b[b0:b0 + n]) in a 1-D array: a row, or
    a row of a block of columns of a flat one. Through slices, so the loops
    index from zero: an index LLVM cannot prove non-negative (an offset
    argument plus j) keeps Numba's wraparound in the loop, which then stays
    scalar, as did a loop over a row of a block's view (its stride known only
    at run time)."""
    zr, br = z[z0:z0 + n], b[b0:b0 + n]
    if act == 1:
        for j in range(n):
            zr[j] = sigmoid(zr[j] + br[j])
    elif act == 2:
        for j in range(n):
            zr[j] = max(zr[j] + br[j], 0)
    else:
        for j in range(n):
            zr[j] += br[j]


def _bias_act(z, b, act):
    """z <- act(z + b) in place (z: (m, n), b: (n,))."""
    for i in prange(z.shape[0]):
        bias_act_span(z[i], 0, b, 0, z.shape[1], act)


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


def _act_backward(a, da, out, act):
    """out = dL/dz from the layer output a and dL/da (flat, same length)."""
    n = a.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        _act_backward_chunk(a, da, out, act, c * CHUNK, min(n, (c + 1) * CHUNK))


def _bias_grad(dz, out):
    """out[j] = sum_i dz[i, j]. Each task sums a strip of columns over every row:
    no two tasks write the same element, and rows are read contiguously. A whole
    strip adds into a stack tile (registers: it aliases nothing), then into out."""
    m, n = dz.shape
    for s in prange((n + BIAS_STRIP - 1) // BIAS_STRIP):
        j0, j1 = s * BIAS_STRIP, min(n, (s + 1) * BIAS_STRIP)
        if j1 - j0 == BIAS_STRIP:
            acc = stack_array(BIAS_STRIP, dz.dtype)
            for j in range(BIAS_STRIP):
                acc[j] = 0
            for i in range(m):
                row = dz[i]
                for j in range(BIAS_STRIP):
                    acc[j] += row[j0 + j]
            for j in range(BIAS_STRIP):
                out[j0 + j] = acc[j]
            continue
        for j in range(j0, j1):
            out[j] = 0
        for i in range(m):
            for j in range(j0, j1):
                out[j] += dz[i, j]


BIAS_STRIP = 64


@njit
def xent_row(logits, labels, grad, i, scale):
    """Writes row i of dL/dlogits (already divided by the batch); returns -log p[label]."""
    n = logits.shape[1]
    mx = logits[i, 0]
    for j in range(1, n):
        mx = max(mx, logits[i, j])
    s = logits[i, 0] * 0
    for j in range(n):
        e = exp_nonpositive(logits[i, j] - mx)
        grad[i, j] = e
        s += e
    inv = scale / s
    for j in range(n):
        grad[i, j] *= inv
    y = labels[i]
    grad[i, y] -= scale
    return np.log(s) - (logits[i, y] - mx)


@njit
def check_labels(labels, m, n):
    if labels.shape[0] != m:
        raise ValueError("softmax cross-entropy: one label per row of logits is needed")
    for i in range(m):
        if labels[i] < 0 or labels[i] >= n:
            raise ValueError("softmax cross-entropy: a label lies outside [0, number of classes)")


def _softmax_xent(logits, labels, grad):
    """Mean cross-entropy of softmax(logits) against class indices; grad = dL/dlogits."""
    m = logits.shape[0]
    check_labels(labels, m, logits.shape[1])
    scale = logits.dtype.type(1.0 / m)
    total = 0.0
    for i in prange(m):
        total += xent_row(logits, labels, grad, np.intp(i), scale)
    return total / m


@njit
def quadratic(a, y, grad):
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


def _dropout(x, y, mask, base, threshold, scale):
    """y = x·mask, mask = keep/(1-rate) (flat arrays)."""
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        _dropout_chunk(x, y, mask, base, threshold, scale, c * CHUNK, min(n, (c + 1) * CHUNK))


def _mul(a, b, out):
    for i in prange(a.size):
        out[i] = a[i] * b[i]


bias_act_serial, bias_act_parallel = serial_and_parallel(_bias_act)
act_backward_serial, act_backward_parallel = serial_and_parallel(_act_backward)
bias_grad_serial, bias_grad_parallel = serial_and_parallel(_bias_grad)
softmax_xent_serial, softmax_xent_parallel = serial_and_parallel(_softmax_xent)
dropout_serial, dropout_parallel = serial_and_parallel(_dropout)
mul_serial, mul_parallel = serial_and_parallel(_mul)


# -- families ---------------------------------------------------------------------
REF = NumpyOps()
ACT_NAMES = {v: k for k, v in ACT.items()}


def _bias_act_family():
    def make(shape, dtype, rng):
        m, n, act = shape
        return rng.standard_normal((m, n)).astype(dtype) * 4, rng.standard_normal(n).astype(dtype), act

    def reference(z, b, act):
        out = z + b
        if ACT_NAMES[act] == "sigmoid":
            return 1 / (1 + np.exp(-out))
        return np.maximum(out, 0) if ACT_NAMES[act] == "relu" else out

    fam = KernelFamily("bias_activation", reference, make, outputs=("z",),
                       nbytes=lambda s, itemsize: 2.0 * itemsize * s[0] * s[1],
                       dtypes=("float32", "float64"),
                       check_shapes=[(1, 1, a) for a in (0, 1, 2)] + [(7, 33, a) for a in (0, 1, 2)]
                       + [(257, 10, 1)],
                       sweep_shapes=[(10, 30, 1), (10, 10, 1), (128, 128, 2), (128, 10, 0),
                                     (256, 1024, 2), (60000, 10, 0)])
    fam.version(lambda z, b, act: (bias_act_serial(z, b, act), z)[1], name="numba_serial")
    fam.version(lambda z, b, act: (bias_act_parallel(z, b, act), z)[1], name="numba_parallel")
    fam.version(lambda z, b, act: REF.dense(z, np.eye(z.shape[1], dtype=z.dtype), b, ACT_NAMES[act]),
                name="numpy_dense_identity", library="numpy")
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
        return np.float64(-logp[np.arange(m), labels].mean()), grad / m

    def run(kernel):
        def version(logits, labels):
            grad = np.empty_like(logits)
            loss = kernel(logits, labels, grad)
            return np.float64(loss), grad
        return version

    fam = KernelFamily("softmax_cross_entropy", reference, make, outputs=("loss", "grad"),
                       nbytes=lambda s, itemsize: 2.0 * itemsize * s[0] * s[1],
                       depth=lambda s: s[1], dtypes=("float32",),
                       check_shapes=[(1, 1), (1, 10), (7, 10), (33, 7), (257, 10)],
                       sweep_shapes=[(10, 10), (128, 10), (256, 10), (60000, 10)])
    fam.version(run(softmax_xent_serial), name="numba_serial")
    fam.version(run(softmax_xent_parallel), name="numba_parallel")
    fam.version(lambda logits, labels: REF.softmax_cross_entropy(logits, labels), name="numpy",
                library="numpy")
    return fam


def _dropout_family():
    def make(shape, dtype, rng):
        return rng.standard_normal(shape).astype(dtype), 0.5, 12345

    def reference(x, rate, key):
        mask = dropout_keep_mask(x.shape, rate, key) / (1 - rate)
        return x * mask, mask

    def run(kernel):
        def version(x, rate, key):
            y, mask = np.empty_like(x), np.empty_like(x)
            base, threshold = dropout_constants(rate, key)
            kernel(x.ravel(), y.ravel(), mask.ravel(), base, threshold, x.dtype.type(1 / (1 - rate)))
            return y, mask
        return version

    fam = KernelFamily("dropout", reference, make, outputs=("y", "mask"),
                       nbytes=lambda s, itemsize: 3.0 * itemsize * int(np.prod(s)),
                       dtypes=("float32",), check_shapes=[(1, 1), (7, 33), (257, 1024)],
                       sweep_shapes=[(256, 1024)])
    fam.version(run(dropout_serial), name="numba_serial")
    fam.version(run(dropout_parallel), name="numba_parallel")
    fam.version(lambda x, rate, key: REF.dropout(x, rate, key), name="numpy", library="numpy")
    return fam


FAMILIES = [_bias_act_family(), _xent_family(), _dropout_family()]
