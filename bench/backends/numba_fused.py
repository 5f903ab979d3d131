"""``numba-fused``: a whole epoch (batch loop, forward, backward, update) in one
compiled call, for linear, nielsen and mlp (kernels/fused_epoch.py).

The trainer takes the harness's batch order as given, starts from the same
canonical parameters, and applies the same update rules as the ops path, so
its weights match ``numpy`` within float32 rounding. Prediction reuses the
serial Numba ops forward pass: prediction is evaluation, outside the timed
epochs (in tta mode inside the clock, a few per cent of it), and the serial
kernels compile in less than half the time of the parallel ones, which every
cold start of this backend pays.
"""
import numpy as np

from ...kernels.fused_epoch import EPOCHS, OPTIMIZER_CODES
from ...models.params import pack, total_size, unpack
from ...models.train import STATE_BUFFERS, Trainer, batch_order

from . import Backend
from .numba_backend import NumbaBackend, NumbaOps


class NumbaFusedTrainer(Trainer):
    def __init__(self, network, init_params, config, seed=0, parallel=True):
        super().__init__(network, init_params, config, seed)
        if network.name not in EPOCHS:
            raise ValueError(f"numba-fused has no fused epoch for {network.name!r}")
        opt = config["optimizer"]
        if opt not in OPTIMIZER_CODES:
            raise ValueError(f"unknown optimizer {opt!r}; choose from {', '.join(OPTIMIZER_CODES)}")
        self.shapes = network.param_shapes()
        n = total_size(self.shapes)
        self.flat = pack(init_params, self.shapes)
        self.gflat = np.zeros(n, np.float32)
        # Momentum uses s1 (velocity); Adam s1, s2 (m, v); unused ones stay empty.
        self.s1 = np.zeros(n if opt != "sgd" else 0, np.float32)
        self.s2 = np.zeros(n if opt == "adam" else 0, np.float32)
        self.parallel = parallel
        # the prediction (accuracy, never timed) takes the blocked matmul: it compiles in a
        # fraction of the packed GEMM's time, which a cold warm-up would otherwise pay for it
        self.ops = NumbaOps(False, matmul_version="v2_blocked")

    def set_data(self, x, y):
        self.x = np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
        self.y = np.ascontiguousarray(y, np.float32 if self.net.target == "onehot" else np.int64)

    def train_epoch(self, batches):
        order, starts, contiguous = batch_order(batches, len(self.x))
        c = self.config
        hyper = (OPTIMIZER_CODES[c["optimizer"]], self.step, float(c["lr"]),
                 float(c.get("beta", 0.9)), float(c.get("beta1", 0.9)),
                 float(c.get("beta2", 0.999)), float(c.get("eps", 1e-8)), self.parallel)
        common = (self.x, self.y, order, starts, contiguous, self.flat, self.gflat, self.s1, self.s2)
        epoch, extra = EPOCHS[self.net.name]
        total, self.step = epoch(*common, *extra(self.net), *hyper)
        return float(total / max(1, len(starts) - 1))

    def predict(self, x, chunk=1000):
        p = self.ops.views(self.flat, self.shapes)
        return np.concatenate([self.net.predict(self.ops, p, np.ascontiguousarray(x[i:i + chunk], np.float32))
                               for i in range(0, len(x), chunk)])

    def params(self):
        return unpack(self.flat, self.shapes)

    def optimizer_state(self):
        names = STATE_BUFFERS[self.config["optimizer"]]
        return {"step": self.step, "buffers": {name: unpack(buf.copy(), self.shapes)
                                               for name, buf in zip(names, (self.s1, self.s2))}}


class NumbaFusedBackend(NumbaBackend):
    name = "numba-fused"
    description = "whole epoch in one @njit function (batch loop, forward, backward, update)"
    parallel = True

    networks = tuple(EPOCHS)
    unsupported = {"cnn": "no fused epoch for the cnn: it runs on numba / numba-parallel, whose "
                          "conv kernels a fused epoch would reuse unchanged"}
    options = ()
    thread_libraries = ("numba",)

    def __init__(self):
        super().__init__()

    def make_trainer(self, network, init_params, config, seed=0):
        return NumbaFusedTrainer(network, init_params, config, seed, self.parallel)


__all__ = ["NumbaFusedBackend", "NumbaFusedTrainer", "Backend"]
