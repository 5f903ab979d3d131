"""The Numba CUDA backends.

``numba-cuda``: CudaOps implements every op of models/ops.py with the
hand-written kernels of kernels/cuda_*.py on device arrays, run by the generic
OpsTrainer step by step. The training set and the parameters live on the
device for the whole run: one host->device copy in ``set_data`` (timed apart,
reported by ``compile_info`` as ``set_data_transfer_s``); per epoch one small
copy of the batch order; per batch only kernel launches (the gather reads a
device index array). Each epoch's losses go to a device buffer, read back
once at its end. Buffers of a step are recycled the next step, because Numba
allocates with cuMemAlloc, which costs far more than a launch.

``numba-cuda-epoch``: the persistent whole-epoch kernel of kernels/cuda_epoch.py
for nielsen and mlp (one launch per epoch), the GPU counterpart of numba-fused.

On a machine without a CUDA GPU both are unavailable with the reason; under
NUMBA_ENABLE_CUDASIM=1 too (simulated kernels are for correctness, never
timed) unless MNIST_BENCH_ALLOW_CUDASIM=1, which the tests set to run parity.
"""
import math
import os
import time

import numpy as np
import numba
from numba import cuda

from ...kernels import cuda_nn, cuda_update
from ...kernels.cuda_common import SIMULATOR, THREADS, gpu_available, is_device
from ...kernels.cuda_epoch import SUPPORTED, IMAGE, CLASSES, kernel_for
from ...kernels.cuda_matmul import matmul_auto
from ...models.ops import Ops
from ...models.params import pack, total_size, unpack
from ...models.train import OpsTrainer, Trainer, batch_order

from . import EVERY_NETWORK, Backend


class CudaOps(Ops):
    name = "numba-cuda"

    def __init__(self):
        self._arena, self._cursor, self._recycling = [], 0, False
        self.loss_log = None     # device buffer of one epoch's losses
        self._loss_slot = 0

    # -- memory ---------------------------------------------------------------
    def alloc(self, shape, dtype=np.float32):
        """A device buffer; during a training epoch, the buffer that the same call
        of the previous step got when its shape matches (a step's ops always come
        in the same order and the stream runs them in order, so reuse is safe)."""
        if not self._recycling:
            return cuda.device_array(shape, dtype)
        shape = tuple(int(s) for s in np.atleast_1d(shape))
        if self._cursor == len(self._arena):
            self._arena.append(cuda.device_array(shape, dtype))
        elif self._arena[self._cursor].shape != shape or self._arena[self._cursor].dtype != dtype:
            self._arena[self._cursor] = cuda.device_array(shape, dtype)
        self._cursor += 1
        return self._arena[self._cursor - 1]

    def begin_epoch(self, n_batches):
        """Recycle step buffers and log losses on the device until end_epoch."""
        if self.loss_log is None or self.loss_log.shape[0] < n_batches:
            self.loss_log = cuda.device_array(max(n_batches, 1), np.float32)
        self._loss_slot, self._recycling = 0, True

    def begin_step(self):
        self._cursor = 0

    def end_epoch(self) -> np.ndarray:
        """This epoch's losses, read back in one copy."""
        self._recycling = False
        return self.loss_log[:self._loss_slot].copy_to_host()

    def asarray(self, x):
        if is_device(x):
            return x
        x = np.asarray(x)
        x = np.ascontiguousarray(x, np.float32) if x.dtype.kind == "f" else np.ascontiguousarray(x)
        return cuda.to_device(x)

    def to_numpy(self, a):
        return a.copy_to_host() if is_device(a) else np.asarray(a)

    def zeros(self, shape):
        return cuda.to_device(np.zeros(shape, np.float32))

    def take_rows(self, x, idx):
        if isinstance(idx, slice):
            return x[idx]
        if not is_device(idx):
            idx = np.asarray(idx)
            if idx.size and (idx.min() < 0 or idx.max() >= x.shape[0]):
                raise ValueError(f"row indices outside [0, {x.shape[0]})")
            idx = cuda.to_device(idx.astype(np.int64))
        return cuda_nn.take_rows(x, idx, alloc=self.alloc)

    def scalar(self, x):
        return float(x.copy_to_host()[0]) if is_device(x) else float(x)

    def synchronize(self):
        cuda.synchronize()

    # -- matmul --------------------------------------------------------------
    def matmul(self, a, b, out=None):
        return matmul_auto("nn", a, b, out, alloc=self.alloc)

    def matmul_nt(self, a, b, out=None):
        return matmul_auto("nt", a, b, out, alloc=self.alloc)

    def matmul_tn(self, a, b, out=None):
        return matmul_auto("tn", a, b, out, alloc=self.alloc)

    # -- layers, losses --------------------------------------------------------
    def dense(self, x, w, b, activation):
        return cuda_nn.dense(x, w, b, activation, alloc=self.alloc)

    def activation_backward(self, a, da, activation):
        return cuda_nn.activation_backward(a, da, activation, alloc=self.alloc)

    def bias_grad(self, dz, out=None):
        return cuda_nn.bias_grad(dz, out, alloc=self.alloc)

    def _loss_target(self):
        if not self._recycling:
            return None, 0
        slot = self._loss_slot
        self._loss_slot += 1
        return self.loss_log, slot

    def _loss_view(self, log, slot, loss):
        return loss if log is None else log[slot:slot + 1]

    def softmax_cross_entropy(self, logits, labels):
        log, slot = self._loss_target()
        loss, grad = cuda_nn.softmax_cross_entropy(logits, labels, log, slot, alloc=self.alloc)
        return self._loss_view(log, slot, loss), grad

    def quadratic_loss(self, a, onehot):
        log, slot = self._loss_target()
        loss, grad = cuda_nn.quadratic_loss(a, onehot, log, slot, alloc=self.alloc)
        return self._loss_view(log, slot, loss), grad

    # -- cnn ---------------------------------------------------------------------
    def conv2d(self, x, w, b):
        return cuda_nn.conv2d(x, w, b, alloc=self.alloc)

    def conv2d_backward(self, x, w, dy, dw_out, db_out, need_dx=True):
        return cuda_nn.conv2d_backward(x, w, dy, dw_out, db_out, need_dx, alloc=self.alloc)

    def maxpool2(self, x):
        return cuda_nn.maxpool2(x, alloc=self.alloc)

    def maxpool2_backward(self, dy, argmax, x_shape):
        return cuda_nn.maxpool2_backward(dy, argmax, x_shape, alloc=self.alloc)

    def dropout(self, x, rate, key):
        return cuda_nn.dropout(x, rate, key, alloc=self.alloc)

    def mul(self, a, b):
        return cuda_nn.mul(a, b, alloc=self.alloc)

    # -- batched updates ------------------------------------------------------------
    def sgd_update(self, p, g, lr):
        cuda_update.sgd_update(p, g, lr)

    def momentum_update(self, p, g, v, lr, beta):
        cuda_update.momentum_update(p, g, v, lr, beta)

    def adam_update(self, p, g, m, v, step, lr, beta1, beta2, eps):
        cuda_update.adam_update(p, g, m, v, step, lr, beta1, beta2, eps)


def check_labels(network, y):
    if network.target == "index" and y.size and (y.min() < 0 or y.max() >= 10):
        raise ValueError(f"labels must be class indices in [0, 10), got {y.min()}..{y.max()}")


class CudaOpsTrainer(OpsTrainer):
    """OpsTrainer with the data on the device, device-side batch gathers, recycled
    step buffers and the epoch's losses read back once."""

    def __init__(self, network, init_params, config, seed=0):
        super().__init__(CudaOps(), network, init_params, config, seed)
        self.transfer_s = None

    def set_data(self, x, y):
        check_labels(self.net, np.asarray(y))
        t0 = time.perf_counter()
        super().set_data(x, y)
        cuda.synchronize()
        self.transfer_s = time.perf_counter() - t0

    def train_epoch(self, batches):
        n = self.x.shape[0]
        full_batch = len(batches) == 1 and isinstance(batches[0], slice)
        if not full_batch:
            order, starts, _ = batch_order(batches, n)
            order = cuda.to_device(order)
        self.ops.begin_epoch(len(batches))
        try:
            for b in range(len(batches)):
                self.ops.begin_step()
                self.compute_grads(batches[0] if full_batch else order[starts[b]:starts[b + 1]])
                self.update()
        finally:
            losses = self.ops.end_epoch()
        return float(np.mean(losses))


class PersistentEpochTrainer(Trainer):
    """Trainer whose train_epoch is one launch of the epoch kernel."""

    def __init__(self, network, init_params, config, seed=0):
        super().__init__(network, init_params, config, seed)
        self.kernel = kernel_for(network, self.config)
        self.shapes = network.param_shapes()
        self.flat = cuda.to_device(pack(init_params, self.shapes))
        self.velocity = cuda.to_device(np.zeros(total_size(self.shapes), np.float32))
        self.scratch_rows = 0
        self.transfer_s = None
        self.blocks = None

    def set_data(self, x, y):
        check_labels(self.net, np.asarray(y))
        t0 = time.perf_counter()
        self.x = cuda.to_device(np.ascontiguousarray(x, np.float32).reshape(len(x), IMAGE))
        y = np.asarray(y)
        self.y = cuda.to_device(np.ascontiguousarray(y, np.float32 if y.dtype.kind == "f"
                                                     else np.int64))
        cuda.synchronize()
        self.transfer_s = time.perf_counter() - t0

    def _scratch(self, rows):
        if rows > self.scratch_rows:
            h = self.net.hidden
            self.a1, self.d1 = (cuda.device_array((rows, h), np.float32) for _ in range(2))
            self.a2, self.d2 = (cuda.device_array((rows, CLASSES), np.float32) for _ in range(2))
            self.scratch_rows = rows

    def _grid_blocks(self, args):
        """As many blocks as can be resident at once (a cooperative launch's limit)."""
        if SIMULATOR:
            return 1   # the simulator's cooperative grids have one block
        if self.blocks is None:
            kernel = self.kernel.compile(tuple(numba.typeof(a) for a in args))
            work = math.ceil(total_size(self.shapes) / THREADS)
            self.blocks = max(1, min(kernel.max_cooperative_grid_blocks(THREADS), work))
        return self.blocks

    def train_epoch(self, batches):
        order, starts, _ = batch_order(batches, self.x.shape[0])
        n_batches = len(starts) - 1
        self._scratch(max(int(np.max(np.diff(starts))) if n_batches else 1, 1))
        losses = cuda.device_array(max(n_batches, 1), np.float32)
        c = self.config
        args = (self.x, self.y, cuda.to_device(order), cuda.to_device(starts), self.flat,
                self.velocity, self.a1, self.a2, self.d1, self.d2, losses,
                np.float32(c["lr"]), np.float32(c.get("beta", 0.0)),
                np.float32(1 - c.get("beta", 0.0)))   # 1 - β rounded once, as NumPy does
        self.kernel[self._grid_blocks(args), THREADS](*args)
        self.step += n_batches
        return float(np.mean(losses.copy_to_host()[:n_batches]))

    def predict(self, x, chunk=1000):
        ops = CudaOps()
        p = ops.views(self.flat, self.shapes)
        return np.concatenate([ops.to_numpy(self.net.predict(ops, p, ops.asarray(
            np.ascontiguousarray(x[i:i + chunk], np.float32)))) for i in range(0, len(x), chunk)])

    def params(self):
        return unpack(self.flat.copy_to_host(), self.shapes)

    def synchronize(self):
        cuda.synchronize()


def _simulator_allowed():
    return SIMULATOR and os.environ.get("MNIST_BENCH_ALLOW_CUDASIM") == "1"


class NumbaCudaBackend(Backend):
    name = "numba-cuda"
    description = "hand-written Numba CUDA kernels per op, data resident on the GPU"
    networks = EVERY_NETWORK

    def available(self):
        if _simulator_allowed():
            return True, ""
        return gpu_available()

    def make_trainer(self, network, init_params, config, seed=0):
        trainer = CudaOpsTrainer(network, init_params, config, seed)
        self._last = trainer
        return trainer

    def compile_info(self):
        trainer = getattr(self, "_last", None)
        return {"set_data_transfer_s": getattr(trainer, "transfer_s", None)}


class NumbaCudaEpochBackend(NumbaCudaBackend):
    name = "numba-cuda-epoch"
    description = "one persistent Numba CUDA kernel per epoch (nielsen, mlp)"

    networks = tuple(SUPPORTED)

    def make_trainer(self, network, init_params, config, seed=0):
        trainer = PersistentEpochTrainer(network, init_params, config, seed)
        self._last = trainer
        return trainer
