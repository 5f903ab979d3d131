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
"""
import functools

from numba import cuda, float32

from .cuda_common import THREADS
from .cuda_matmul import sigmoid
from .cuda_nn import block_sum, softmax_xent_row

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
                        total += softmax_xent_row(A2, D2, r, Y[row], inv_n)
                total = block_sum(partial, total)
                if cuda.threadIdx.x == 0:
                    losses[b] = total * (float32(0.5) * inv_n if quadratic else inv_n)
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
