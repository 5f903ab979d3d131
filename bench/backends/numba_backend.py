"""The Numba CPU backends: every op of models/ops.Ops on hand-written kernels.

``numba`` calls the serial kernels; ``numba-parallel`` the prange versions
(Numba's thread count set by configure_threads and recorded). Elementwise
kernels below PARALLEL_MIN_ELEMENTS elements, and matmuls below
kernels.matmul.PARALLEL_MIN_WORK multiply-adds, stay serial even in the
parallel backend: waking the thread pool costs more than such a pass.

Options, given after the backend's name (``numba-parallel:matmul=v2_blocked``):
``matmul`` -- a version of kernels/matmul.VERSIONS; ``conv`` -- a method of
kernels/conv.METHODS. So one sweep can time two kernel versions inside the
same network, side by side.
"""
import numpy as np

from ...kernels import backprop as bp
from ...kernels import conv, update
from ...kernels.conv import DEFAULT_METHOD as DEFAULT_CONV
from ...kernels.conv import METHODS as CONV_METHODS
from ...kernels.matmul import DEFAULT_VERSION, VERSIONS, matmul, matmul_nt, matmul_tn
from ...models.ops import Ops
from ...models.reference import HostArrays
from ...models.train import OpsTrainer

from . import EVERY_NETWORK, Backend

PARALLEL_MIN_ELEMENTS = 1 << 15


class NumbaOps(HostArrays, Ops):
    def __init__(self, parallel=False, matmul_version=DEFAULT_VERSION, conv_method=DEFAULT_CONV):
        self.parallel, self.matmul_version, self.conv_method = parallel, matmul_version, conv_method
        self.name = "numba-parallel" if parallel else "numba"
        # the patch columns of the last convolutions' inputs, for their backward
        self._columns = {}

    def _par(self, elements):
        return self.parallel and elements >= PARALLEL_MIN_ELEMENTS

    # -- matmul
    def matmul(self, a, b, out=None):
        return matmul(a, b, out, self.parallel, self.matmul_version)

    def matmul_nt(self, a, b, out=None):
        return matmul_nt(a, b, out, self.parallel, self.matmul_version)

    def matmul_tn(self, a, b, out=None):
        return matmul_tn(a, b, out, self.parallel, self.matmul_version)

    # -- dense layers
    def dense(self, x, w, b, activation):
        act = bp.act_code(activation)
        z = self.matmul(x, w)
        (bp.bias_act_parallel if self._par(z.size) else bp.bias_act_serial)(z, b, act)
        return z

    def activation_backward(self, a, da, activation):
        act = bp.act_code(activation)
        if a.shape != da.shape:
            raise ValueError(f"activation_backward: a {a.shape} and da {da.shape} differ")
        out = np.empty_like(da)
        (bp.act_backward_parallel if self._par(a.size) else bp.act_backward_serial)(
            a.ravel(), da.ravel(), out.ravel(), act)
        return out

    def bias_grad(self, dz, out=None):
        if out is None:
            out = np.empty(dz.shape[1], dz.dtype)
        (bp.bias_grad_parallel if self._par(dz.size) else bp.bias_grad_serial)(dz, out)
        return out

    # -- losses
    def softmax_cross_entropy(self, logits, labels):
        if labels.shape != (logits.shape[0],):
            raise ValueError(f"labels must have shape ({logits.shape[0]},), got {labels.shape}")
        grad = np.empty_like(logits)
        kernel = bp.softmax_xent_parallel if self._par(logits.size) else bp.softmax_xent_serial
        return float(kernel(logits, labels, grad)), grad

    def quadratic_loss(self, a, onehot):
        if a.shape != onehot.shape:
            raise ValueError(f"quadratic_loss: outputs {a.shape} and targets {onehot.shape} differ")
        grad = np.empty_like(a)
        return float(bp.quadratic(a, onehot, grad)), grad

    # -- cnn
    def conv2d(self, x, w, b):
        if self.conv_method != "gemm":
            return conv.conv2d(x, w, b, self.parallel, self.conv_method)
        conv._check_conv(x, w)
        y, cols = conv.conv2d_gemm(x, w, b, self.parallel)
        # kept for this input's backward (the network hands the same array back);
        # at most the two convolutions of one step
        self._columns[id(x)] = (x, cols)
        while len(self._columns) > 2:
            self._columns.pop(next(iter(self._columns)))
        return y

    def conv2d_backward(self, x, w, dy, dw_out, db_out, need_dx=True):
        kept = self._columns.pop(id(x), (None, None))
        cols = kept[1] if kept[0] is x else None
        return conv.conv2d_backward(x, w, dy, dw_out, db_out, need_dx, self.parallel,
                                    self.conv_method, cols)

    def maxpool2(self, x):
        return conv.maxpool2(x, self.parallel)

    def maxpool2_backward(self, dy, argmax, x_shape):
        return conv.maxpool2_backward(dy, argmax, x_shape, self.parallel)

    def dropout(self, x, rate, key):
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        y, mask = np.empty_like(x), np.empty_like(x)
        base, threshold = bp.dropout_constants(rate, key)
        (bp.dropout_parallel if self._par(x.size) else bp.dropout_serial)(
            x.ravel(), y.ravel(), mask.ravel(), base, threshold, np.float32(1 / (1 - rate)))
        return y, mask

    def mul(self, a, b):
        if a.shape != b.shape:
            raise ValueError(f"mul: shapes {a.shape} and {b.shape} differ")
        out = np.empty_like(a)
        (bp.mul_parallel if self._par(a.size) else bp.mul_serial)(a.ravel(), b.ravel(), out.ravel())
        return out

    # -- updates over the flat buffers
    def sgd_update(self, p, g, lr):
        (update.sgd_parallel if self._par(p.size) else update.sgd_serial)(p, g, lr)

    def momentum_update(self, p, g, v, lr, beta):
        (update.momentum_parallel if self._par(p.size) else update.momentum_serial)(p, g, v, lr, beta)

    def adam_update(self, p, g, m, v, step, lr, beta1, beta2, eps):
        (update.adam_parallel if self._par(p.size) else update.adam_serial)(
            p, g, m, v, step, lr, beta1, beta2, eps)


class NumbaBackend(Backend):
    name = "numba"
    networks = EVERY_NETWORK
    options = ("matmul", "conv")
    description = "hand-written Numba kernels, serial (packed matmul, fused elementwise passes)"
    parallel = False
    compile_caches = {"NUMBA_CACHE_DIR": "numba"}

    def __init__(self, matmul=DEFAULT_VERSION, conv=DEFAULT_CONV):
        if matmul not in VERSIONS:
            raise ValueError(f"{self.name}: unknown matmul version {matmul!r}; choose from "
                             f"{', '.join(VERSIONS)}")
        if conv not in CONV_METHODS:
            raise ValueError(f"{self.name}: unknown conv method {conv!r}; choose from "
                             f"{', '.join(CONV_METHODS)}")
        self.matmul, self.conv = matmul, conv

    def make_trainer(self, network, init_params, config, seed=0):
        return OpsTrainer(NumbaOps(self.parallel, self.matmul, self.conv), network, init_params,
                          config, seed)


class NumbaParallelBackend(NumbaBackend):
    name = "numba-parallel"
    description = "hand-written Numba kernels with prange over rows/tiles/samples"
    parallel = True
    thread_libraries = ("numba",)
