"""A whole training epoch of nielsen or mlp in ONE persistent CUDA kernel, the
GPU counterpart of the CPU numba-fused backend.

At batch 10 a step of nielsen is ~0.5 MFLOP: a GPU finishes that in
microseconds, but a framework spends ~10 µs launching each of the step's
dozen-plus kernels. Here the kernel loops over every mini-batch itself; the
phases of a step (hidden layer, output layer, loss gradient, hidden gradient,
gradient + update of every parameter) are separated by grid-wide barriers
(cooperative groups), so the only launch is one per epoch and the only
host<->device traffic is the epoch's batch order in and its losses out.

Phase 5 fuses each parameter's gradient (a sum over the batch rows) with its
optimizer update, so no gradient buffer is ever written. The grid is as large
as a cooperative launch allows (every block resident); the simulator runs
cooperative grids of one block only, which is how the tests run it.
Designed for an H100, untimed in this session.
"""
import functools
import math
import time

import numba
import numpy as np
from numba import cuda, float32

from kernels.cuda_common import SIMULATOR, THREADS
from kernels.cuda_matmul import sigmoid
from models.params import pack, total_size, unpack
from models.train import Trainer

SUPPORTED = ("nielsen", "mlp")
IMAGE, CLASSES = 784, 10


@functools.lru_cache(maxsize=None)
def epoch_kernel(hidden, hidden_act, output_sigmoid, quadratic, momentum):
    """The epoch kernel of a 784 -> hidden -> 10 network. hidden_act: "sigmoid" or
    "relu"; output_sigmoid: sigmoid on the output layer (nielsen); quadratic:
    quadratic cost on one-hot targets, else softmax cross-entropy on labels;
    momentum: v = βv + (1-β)g, p -= lr·v, else plain SGD."""
    H = hidden
    relu = hidden_act == "relu"
    W1, B1 = 0, IMAGE * H                      # offsets in the flat parameter buffer
    W2 = B1 + H
    B2 = W2 + H * CLASSES
    P = B2 + CLASSES
    LOSS_THREADS = THREADS

    @cuda.jit(device=True, inline=True)
    def apply_update(params, velocity, i, g, lr, beta, one_minus_beta):
        if momentum:
            v = beta * velocity[i] + one_minus_beta * g
            velocity[i] = v
            params[i] -= lr * v
        else:
            params[i] -= lr * g

    @cuda.jit
    def train_epoch_kernel(X, Y, order, starts, params, velocity, A1, A2, D1, D2, losses,
                           lr, beta, one_minus_beta):
        grid = cuda.cg.this_grid()
        partial = cuda.shared.array(LOSS_THREADS, float32)
        tid, stride = cuda.grid(1), cuda.gridsize(1)
        for b in range(starts.shape[0] - 1):
            start = starts[b]
            nb = starts[b + 1] - start
            # 1. hidden layer: a warp shares a row (broadcast X) and reads W1 coalesced.
            for e in range(tid, nb * H, stride):
                r, h = e // H, e % H
                row = order[start + r]
                z = params[B1 + h]
                for k in range(IMAGE):
                    z += X[row, k] * params[W1 + k * H + h]
                if relu:
                    A1[r, h] = z if z > float32(0.0) else float32(0.0)
                else:
                    A1[r, h] = sigmoid(z)
            grid.sync()
            # 2. output layer
            for e in range(tid, nb * CLASSES, stride):
                r, o = e // CLASSES, e % CLASSES
                z = params[B2 + o]
                for h in range(H):
                    z += A1[r, h] * params[W2 + h * CLASSES + o]
                A2[r, o] = sigmoid(z) if output_sigmoid else z
            grid.sync()
            # 3. loss and dL/dz2, one block (nb × 10 values), deterministic sum.
            if cuda.blockIdx.x == 0:
                inv_n = float32(1.0) / float32(nb)
                total = float32(0.0)
                for r in range(cuda.threadIdx.x, nb, cuda.blockDim.x):
                    row = order[start + r]
                    if quadratic:
                        for o in range(CLASSES):
                            a = A2[r, o]
                            d = a - Y[row, o]
                            total += d * d
                            dz = d * inv_n
                            D2[r, o] = dz * a * (float32(1.0) - a) if output_sigmoid else dz
                    else:
                        m = A2[r, 0]
                        for o in range(1, CLASSES):
                            if A2[r, o] > m:
                                m = A2[r, o]
                        s = float32(0.0)
                        for o in range(CLASSES):
                            s += math.exp(A2[r, o] - m)
                        log_sum = math.log(s)
                        label = Y[row]
                        total += log_sum - (A2[r, label] - m)
                        for o in range(CLASSES):
                            p = math.exp(A2[r, o] - m - log_sum)
                            D2[r, o] = ((p - float32(1.0)) if o == label else p) * inv_n
                partial[cuda.threadIdx.x] = total
                cuda.syncthreads()
                half = cuda.blockDim.x // 2
                while half > 0:
                    if cuda.threadIdx.x < half:
                        partial[cuda.threadIdx.x] += partial[cuda.threadIdx.x + half]
                    cuda.syncthreads()
                    half //= 2
                if cuda.threadIdx.x == 0:
                    losses[b] = partial[0] * (float32(0.5) * inv_n if quadratic else inv_n)
            grid.sync()
            # 4. dL/dz1 = (dz2 · W2ᵀ) ⊙ act'(a1)
            for e in range(tid, nb * H, stride):
                r, h = e // H, e % H
                s = float32(0.0)
                for o in range(CLASSES):
                    s += D2[r, o] * params[W2 + h * CLASSES + o]
                a = A1[r, h]
                if relu:
                    D1[r, h] = s if a > float32(0.0) else float32(0.0)
                else:
                    D1[r, h] = s * a * (float32(1.0) - a)
            grid.sync()
            # 5. every parameter: its gradient summed over the rows, then its update.
            #    W2 was last read in phase 4, so updating it now is safe.
            for i in range(tid, P, stride):
                g = float32(0.0)
                if i < B1:
                    k, h = i // H, i % H
                    for r in range(nb):
                        g += X[order[start + r], k] * D1[r, h]
                elif i < W2:
                    for r in range(nb):
                        g += D1[r, i - B1]
                elif i < B2:
                    h, o = (i - W2) // CLASSES, (i - W2) % CLASSES
                    for r in range(nb):
                        g += A1[r, h] * D2[r, o]
                else:
                    for r in range(nb):
                        g += D2[r, i - B2]
                apply_update(params, velocity, i, g, lr, beta, one_minus_beta)
            grid.sync()
    return train_epoch_kernel


def kernel_for(network, config):
    """The compiled-on-first-use epoch kernel for a network and its optimizer."""
    if network.name not in SUPPORTED:
        raise ValueError(f"the persistent epoch kernel covers {', '.join(SUPPORTED)}, "
                         f"not {network.name!r}")
    if config["optimizer"] not in ("sgd", "momentum"):
        raise ValueError(f"the persistent epoch kernel runs sgd or momentum, "
                         f"not {config['optimizer']!r}")
    nielsen = network.name == "nielsen"
    return epoch_kernel(network.hidden, "sigmoid" if nielsen else "relu", nielsen, nielsen,
                        config["optimizer"] == "momentum")


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
        from bench.backends.numba_cuda import check_labels
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
        from bench.backends.numba_cuda import epoch_order
        order, bounds = epoch_order(batches, self.x.shape[0])
        starts = np.array([s for s, _ in bounds] + [bounds[-1][1] if bounds else 0], np.int64)
        self._scratch(max((e - s for s, e in bounds), default=1))
        losses = cuda.device_array(max(len(bounds), 1), np.float32)
        c = self.config
        args = (self.x, self.y, cuda.to_device(order), cuda.to_device(starts), self.flat,
                self.velocity, self.a1, self.a2, self.d1, self.d2, losses,
                np.float32(c["lr"]), np.float32(c.get("beta", 0.0)),
                np.float32(1 - c.get("beta", 0.0)))   # 1 - β rounded once, as NumPy does
        self.kernel[self._grid_blocks(args), THREADS](*args)
        self.step += len(bounds)
        return float(np.mean(losses.copy_to_host()[:len(bounds)]))

    def predict(self, x, chunk=1000):
        from bench.backends.numba_cuda import CudaOps
        ops = CudaOps()
        p = ops.views(self.flat, self.shapes)
        return np.concatenate([ops.to_numpy(self.net.predict(ops, p, ops.asarray(
            np.ascontiguousarray(x[i:i + chunk], np.float32)))) for i in range(0, len(x), chunk)])

    def params(self):
        return unpack(self.flat.copy_to_host(), self.shapes)

    def synchronize(self):
        cuda.synchronize()
