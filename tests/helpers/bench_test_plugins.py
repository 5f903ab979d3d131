"""Planted faults for the tests, loaded as a plugin (MNIST_BENCH_PLUGINS) by the
test process and by every worker it starts.

- MUTANTS: wrong kernels, each one as a version of a copy of the real family
  (the real reference, shapes and tolerance) -- `mnist-bench kernels` must store
  every one invalid and never time it;
- mutant-* backends: the reference ops with one op made wrong the same way --
  `mnist-bench run` must store every one invalid and never time it;
- MNIST_BENCH_TEST_SLOW=1 replaces ``numpy`` by a backend doing the same work and
  then sleeping 30 % of it (a planted 1.3x slowdown for `compare`);
- ``numpy-wrong-threads`` claims the cell's thread count but runs OpenBLAS at
  twice it.
"""
import os
import time

import numpy as np

from mnist_numba_bench.bench import backends as registry
from mnist_numba_bench.bench.backends.numpy_backend import NumpyBackend
from mnist_numba_bench.kernels import backprop, conv, matmul, update
from mnist_numba_bench.kernels.family import KernelFamily
from mnist_numba_bench.models.ops import dropout_keep_mask
from mnist_numba_bench.models.reference import NumpyOps
from mnist_numba_bench.models.train import OpsTrainer

REF = NumpyOps()


# -- the faults, shared by the kernel and the network level --------------------------

def softmax_grad_scaled(logits, labels):
    loss, grad = REF.softmax_cross_entropy(logits, labels)
    return loss, grad * logits.dtype.type(0.4)


def softmax_overflowing(logits, labels):
    """No shift by the row maximum: exp overflows for large logits."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(logits)
        p = e / e.sum(axis=1, keepdims=True)
        n = logits.shape[0]
        loss = float(-np.log(p[np.arange(n), labels]).mean())
        grad = p.copy()
        grad[np.arange(n), labels] -= 1
    return loss, (grad / n).astype(logits.dtype)


def dense_without_bias(x, w, b, activation):
    return REF.dense(x, w, np.zeros_like(b), activation)


def matmul_edge_wrong(a, b, out=None):
    """Right for widths that are multiples of 32; the last column is off otherwise."""
    c = np.matmul(a, b, out=out)
    if c.shape[1] % 32:
        c[:, -1] += c.dtype.type(0.5)
    return c


def dropout_shifted(x, rate, key):
    mask = dropout_keep_mask((x.size + 1,), rate, key)[1:].reshape(x.shape)
    mask = mask.astype(x.dtype) / x.dtype.type(1 - rate)
    return x * mask, mask


def adam_without_state(p, g, m, v, step, lr, beta1, beta2, eps):
    m2, v2 = m * beta1 + (1 - beta1) * g, v * beta2 + (1 - beta2) * g * g  # m, v never written
    p -= np.float32(lr) * (m2 / (1 - beta1 ** step)) / (np.sqrt(v2 / (1 - beta2 ** step)) + eps)


def adam_without_bias_correction(p, g, m, v, step, lr, beta1, beta2, eps):
    m *= np.float32(beta1)
    m += np.float32(1 - beta1) * g
    v *= np.float32(beta2)
    v += np.float32(1 - beta2) * g * g
    p -= np.float32(lr) * m / (np.sqrt(v) + np.float32(eps))


def momentum_wrong_beta(p, g, v, lr, beta):
    REF.momentum_update(p, g, v, lr, 0.8)


def conv_flipped(x, w, b):
    return REF.conv2d(x, np.ascontiguousarray(w[:, :, ::-1, ::-1]), b)


def maxpool_backward_first(dy, argmax, x_shape):
    """Routes every window's gradient to its first element, whichever was the maximum."""
    return REF.maxpool2_backward(dy, np.zeros_like(argmax), x_shape)


# -- kernel level: versions of copies of the real families --------------------------

def _copy(family, name):
    return KernelFamily(f"mutant_{name}", family.reference, family.make_inputs, family.outputs,
                        family.flops, family.nbytes, family.depth, family.dtypes[:1],
                        family.sweep_shapes[:1], family.check_shapes)


def _families():
    fams = {f.name: f for m in (backprop, conv, matmul, update) for f in m.FAMILIES}
    out = []

    def add(base, name, fn):
        fam = _copy(fams[base], name)
        fam.version(fn, name=name, library="numpy")
        out.append(fam)

    add("softmax_cross_entropy", "gradient_scaled", softmax_grad_scaled)
    add("softmax_cross_entropy", "softmax_overflows", softmax_overflowing)
    add("bias_activation", "missing_bias",
        lambda z, b, act: dense_without_bias(z, np.eye(z.shape[1], dtype=z.dtype), b,
                                             backprop.ACT_NAMES[act]))
    add("matmul_nt", "transposed_product", lambda a, b: a @ b)  # Aᵀ·B is not A·Bᵀ
    add("matmul_nn", "tile_edge_error", lambda a, b: matmul_edge_wrong(a, b))

    def adam_run(fn):
        def version(p, g, m, v):
            h = update.HYPER
            fn(p, g, m, v, h["step"], h["lr"], h["beta1"], h["beta2"], h["eps"])
            return p, m, v
        return version
    add("adam_update", "adam_without_m_v", adam_run(adam_without_state))
    add("adam_update", "adam_without_bias_correction", adam_run(adam_without_bias_correction))

    def momentum_version(p, g, v):
        momentum_wrong_beta(p, g, v, update.HYPER["lr"], update.HYPER["beta"])
        return p, v
    add("momentum_update", "momentum_wrong_beta", momentum_version)
    add("dropout", "dropout_mask_shifted", lambda x, rate, key: dropout_shifted(x, rate, key))
    add("conv2d_forward", "conv_flipped_kernel", conv_flipped)

    def pool_version(x):
        y, arg = REF.maxpool2(x)
        return y, maxpool_backward_first(y * 2 + 1, arg, x.shape)
    add("maxpool2", "maxpool_wrong_element", pool_version)
    return out


FAMILIES = MUTANTS = _families()


# -- network level: the reference ops with one op wrong -------------------------------

class _Mutant(NumpyOps):
    pass


NETWORK_MUTANTS = {
    # name: (model it is checked on, {op: replacement})
    "gradient_scaled": ("mlp", {"softmax_cross_entropy": lambda self, z, y: softmax_grad_scaled(z, y)}),
    "softmax_overflows": ("mlp", {"softmax_cross_entropy": lambda self, z, y: softmax_overflowing(z, y)}),
    "missing_bias": ("mlp", {"dense": lambda self, x, w, b, act: dense_without_bias(x, w, b, act)}),
    "transposed_product": ("mlp", {"matmul_tn": lambda self, a, b, out=None: np.matmul(b.T, a, out=out)}),
    # (in mlp's 10-wide weight gradient: nielsen's N(0, 1) init saturates its
    # sigmoids, so a1(1 - a1) ~ 0 hides any error in its hidden layer for the
    # first steps; the kernel families catch it there)
    "tile_edge_error": ("mlp", {"matmul_tn": lambda self, a, b, out=None: matmul_edge_wrong(a.T, b, out)}),
    "adam_without_m_v": ("cnn", {"adam_update": lambda self, *a: adam_without_state(*a)}),
    "adam_without_bias_correction": ("cnn", {"adam_update": lambda self, *a: adam_without_bias_correction(*a)}),
    "momentum_wrong_beta": ("mlp", {"momentum_update": lambda self, *a: momentum_wrong_beta(*a)}),
    "dropout_mask_shifted": ("cnn", {"dropout": lambda self, x, rate, key: dropout_shifted(x, rate, key)}),
    "conv_flipped_kernel": ("cnn", {"conv2d": lambda self, x, w, b: conv_flipped(x, w, b)}),
    "maxpool_wrong_element": ("cnn", {"maxpool2_backward": lambda self, dy, arg, s: maxpool_backward_first(dy, arg, s)}),
}


def _mutant_backend(name, model, ops):
    ops_class = type(f"Mutant_{name}", (_Mutant,), ops)

    class MutantBackend(NumpyBackend):
        description = f"planted fault: {name}"

        def supports(self, network_name):
            return (True, "") if network_name == model else (False, f"{name} is planted in {model}")

        def make_trainer(self, network, init_params, config, seed=0):
            return OpsTrainer(ops_class(), network, init_params, config, seed)
    MutantBackend.name = f"mutant-{name.replace('_', '-')}"
    return MutantBackend


for _name, (_model, _ops) in NETWORK_MUTANTS.items():
    registry.register(f"mutant-{_name.replace('_', '-')}", _mutant_backend(_name, _model, _ops))


# -- a planted slowdown, and a backend that lies about its threads --------------------

class SlowTrainer(OpsTrainer):
    def train_epoch(self, batches):
        t0 = time.perf_counter()
        loss = super().train_epoch(batches)
        time.sleep(0.3 * (time.perf_counter() - t0))
        return loss


class SlowNumpyBackend(NumpyBackend):
    description = "numpy, then a sleep of 30 % of the epoch (a planted slowdown)"

    def make_trainer(self, network, init_params, config, seed=0):
        return SlowTrainer(NumpyOps(), network, init_params, config, seed)


if os.environ.get("MNIST_BENCH_TEST_SLOW") == "1":
    registry.register("numpy", SlowNumpyBackend)


class WrongThreadsBackend(NumpyBackend):
    name = "numpy-wrong-threads"

    def configure_threads(self, n):
        from threadpoolctl import threadpool_limits
        self._limits = threadpool_limits(limits=2 * n, user_api="blas")


registry.register("numpy-wrong-threads", WrongThreadsBackend)


# -- faults in the timed work: each passes validation (a fresh trainer, 3 steps of
# epoch 0, no short batch) and does less or other work when timed ----------------

class DropsShortBatch(OpsTrainer):
    def train_epoch(self, batches):
        if len(batches) > 1 and len(batches[-1]) < len(batches[0]):
            batches = batches[:-1]
        return super().train_epoch(batches)


class ResetsOptimizer(OpsTrainer):
    def train_epoch(self, batches):
        for buf in self.state:
            buf[:] = 0
        return super().train_epoch(batches)


class ReusesEpochZeroOrder(OpsTrainer):
    def train_epoch(self, batches):
        if not hasattr(self, "first_order"):
            self.first_order = batches
        return super().train_epoch(self.first_order)


class HalfRowsLate(OpsTrainer):
    def compute_grads(self, idx):
        if self.step >= 50 and not isinstance(idx, slice) and len(idx) > 1:
            idx = idx[:len(idx) // 2]
        return super().compute_grads(idx)


class Float16Late(OpsTrainer):
    def update(self):
        if self.step >= 10:
            self.gflat[:] = self.gflat.astype(np.float16).astype(np.float32)
        super().update()
        if self.step >= 10:
            self.flat[:] = self.flat.astype(np.float16).astype(np.float32)


TIMED_WORK_FAULTS = {"late-drop-short-batch": DropsShortBatch, "late-reset-optimizer": ResetsOptimizer,
                     "late-epoch0-order": ReusesEpochZeroOrder, "late-half-rows": HalfRowsLate,
                     "late-float16": Float16Late}


def _timed_fault_backend(name, trainer_class):
    class FaultBackend(NumpyBackend):
        description = f"planted fault in the timed work: {name}"

        def make_trainer(self, network, init_params, config, seed=0):
            return trainer_class(NumpyOps(), network, init_params, config, seed)
    FaultBackend.name = name
    return FaultBackend


for _name, _cls in TIMED_WORK_FAULTS.items():
    registry.register(_name, _timed_fault_backend(_name, _cls))


class NoStateTrainer(OpsTrainer):
    def optimizer_state(self):
        raise NotImplementedError


class NoStateBackend(NumpyBackend):
    """Honest, but cannot report its optimizer state: verified by the replay alone."""
    name = "numpy-no-state"

    def make_trainer(self, network, init_params, config, seed=0):
        return NoStateTrainer(NumpyOps(), network, init_params, config, seed)


registry.register("numpy-no-state", NoStateBackend)


# kernel versions that do less work after their first calls on a shape
def _late_kernels():
    fam = _copy({f.name: f for f in matmul.FAMILIES}["matmul_nn"], "late")
    fam.sweep_shapes = [(96, 80, 64)]
    calls = {}

    @fam.version(name="partial_from_fourth_call", library="numpy")
    def partial(a, b):
        key = (a.shape, b.shape)
        calls[key] = calls.get(key, 0) + 1
        c = np.zeros((a.shape[0], b.shape[1]), a.dtype)
        rows = a.shape[0] if calls[key] < 4 else a.shape[0] // 2
        c[:rows] = a[:rows] @ b
        return c

    cache = {}

    @fam.version(name="cached_result", library="numpy")
    def cached(a, b):
        key = (id(a), id(b))
        if key not in cache:
            cache[key] = a @ b
        return cache[key]

    @fam.version(name="honest", library="numpy")
    def honest(a, b):
        return a @ b
    return fam


LATE_KERNELS = _late_kernels()
FAMILIES = MUTANTS + [LATE_KERNELS]
