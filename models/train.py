"""Training with any ops backend: the shared batch order, the trainer that runs a
network's ops step by step, and evaluation. Backends that replace the whole loop
(numba-fused, the idiomatic torch module) implement the same Trainer methods.
"""
import numpy as np

from .params import pack, total_size, unpack

OPTIMIZERS = ("sgd", "momentum", "adam")
# The names of each optimizer's state buffers, in the order OpsTrainer keeps them.
STATE_BUFFERS = {"sgd": (), "momentum": ("v",), "adam": ("m", "v")}


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int):
    """The mini-batches of one epoch, identical for every backend.

    A permutation drawn from (seed, epoch), cut into consecutive batches; the last
    one may be short, as in Nielsen's code. batch_size 0 means full-batch
    gradient descent: one slice of every sample, in order, without a copy.
    """
    if batch_size <= 0 or batch_size >= n:
        return [slice(0, n)]
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def batch_order(batches, n: int):
    """An epoch's batches as one index array: (order, starts, contiguous).

    Batch b is ``order[starts[b]:starts[b + 1]]``; ``contiguous`` says the epoch
    is one slice from row 0 in order (full-batch gradient descent), so a
    compiled epoch may use the rows in place instead of gathering them. The
    form the whole-epoch backends (numba-fused, the persistent CUDA kernel,
    jax-scan) take, so each gets the identical order from one place.
    """
    if len(batches) == 1 and isinstance(batches[0], slice):
        start, stop, stride = batches[0].indices(n)
        if stride != 1:
            raise ValueError(f"batch slices must have step 1, got {batches[0]}")
        return (np.arange(start, stop, dtype=np.int64), np.array([0, stop - start], np.int64),
                start == 0)
    parts = [np.arange(*b.indices(n)) if isinstance(b, slice) else np.asarray(b, np.int64)
             for b in batches]
    order = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    if order.size and (order.min() < 0 or order.max() >= n):
        raise ValueError(f"batch indices must lie in [0, {n}), got [{order.min()}, {order.max()}]")
    starts = np.zeros(len(parts) + 1, np.int64)
    np.cumsum([len(p) for p in parts], out=starts[1:])
    return order, starts, False


def dropout_key(seed: int, step: int) -> int:
    """The dropout mask key of optimizer step ``step`` (shared by every backend)."""
    return (seed * 1000003 + step) & 0xFFFFFFFF


def prepare_targets(network, labels: np.ndarray) -> np.ndarray:
    """Class indices, or one-hot float32 rows where the network's loss needs them."""
    labels = np.asarray(labels, dtype=np.int64)
    if network.target == "onehot":
        return np.eye(10, dtype=np.float32)[labels]
    return labels


def prepare_inputs(network, images: np.ndarray) -> np.ndarray:
    """(N, 784) float32 rows, or (N, 1, 28, 28) images for the cnn."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    return images.reshape((images.shape[0],) + tuple(network.input_shape))


class Trainer:
    """What the harness drives. ``config`` holds the network's hyperparameters."""

    def __init__(self, network, init_params: dict, config: dict, seed: int = 0):
        self.net, self.config, self.seed = network, dict(config), seed
        self.step = 0

    def set_data(self, x: np.ndarray, y: np.ndarray):
        """Hand over the training set once (prepared inputs and targets)."""
        raise NotImplementedError

    def train_epoch(self, batches) -> float:
        """One pass over ``batches``; returns the mean mini-batch loss."""
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict:
        """Current parameters as host float32 arrays in the canonical layout."""
        raise NotImplementedError

    def optimizer_state(self) -> dict:
        """{"step": optimizer steps taken, "buffers": {name: parameter-shaped dict}}
        with the buffers of STATE_BUFFERS[optimizer] (momentum's v, Adam's m and v)
        as host float32 arrays in the canonical layout. What lets the harness check
        a trainer mid-run (bench/verify.py); a trainer that cannot say raises
        NotImplementedError."""
        raise NotImplementedError

    def synchronize(self):
        """Block until all queued work is finished (GPU backends)."""


class OpsTrainer(Trainer):
    """Runs a network's own ``loss_and_grads`` with an ops backend, then one
    batched update over the flat parameter buffer."""

    def __init__(self, ops, network, init_params, config, seed=0):
        super().__init__(network, init_params, config, seed)
        self.ops = ops
        self.shapes = network.param_shapes()
        n = total_size(self.shapes)
        self.flat = ops.asarray(pack(init_params, self.shapes))
        self.p = ops.views(self.flat, self.shapes)
        self.gflat = ops.zeros((n,))
        self.g = ops.views(self.gflat, self.shapes)
        opt = config["optimizer"]
        if opt not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {opt!r}; choose from {', '.join(OPTIMIZERS)}")
        self.state = [ops.zeros((n,)) for _ in STATE_BUFFERS[opt]]

    def set_data(self, x, y):
        self.x, self.y = self.ops.asarray(x), self.ops.asarray(y)

    def compute_grads(self, idx):
        xb, yb = self.ops.take_rows(self.x, idx), self.ops.take_rows(self.y, idx)
        return self.net.loss_and_grads(self.ops, self.p, xb, yb, self.g,
                                       dropout_key(self.seed, self.step))

    def update(self):
        c, ops = self.config, self.ops
        self.step += 1
        if c["optimizer"] == "sgd":
            ops.sgd_update(self.flat, self.gflat, c["lr"])
        elif c["optimizer"] == "momentum":
            ops.momentum_update(self.flat, self.gflat, self.state[0], c["lr"], c["beta"])
        else:
            ops.adam_update(self.flat, self.gflat, self.state[0], self.state[1], self.step,
                            c["lr"], c["beta1"], c["beta2"], c["eps"])

    def train_epoch(self, batches):
        losses = []
        for idx in batches:
            losses.append(self.compute_grads(idx))
            self.update()
        return float(np.mean([self.ops.scalar(l) for l in losses]))

    def predict(self, x, chunk=1000):
        outs = []
        for i in range(0, len(x), chunk):
            xb = self.ops.asarray(np.ascontiguousarray(x[i:i + chunk]))
            outs.append(self.ops.to_numpy(self.net.predict(self.ops, self.p, xb)))
        return np.concatenate(outs)

    def params(self):
        return unpack(self.ops.to_numpy(self.flat), self.shapes)

    def optimizer_state(self):
        names = STATE_BUFFERS[self.config["optimizer"]]
        return {"step": self.step, "buffers": {name: unpack(self.ops.to_numpy(buf), self.shapes)
                                               for name, buf in zip(names, self.state)}}

    def load_state(self, params, state):
        """Continue from ``params`` and an ``optimizer_state()`` (the reference's
        side of a mid-run check)."""
        self.flat[:] = self.ops.asarray(pack(params, self.shapes))
        names = STATE_BUFFERS[self.config["optimizer"]]
        for name, buf in zip(names, self.state):
            buf[:] = self.ops.asarray(pack(state["buffers"][name], self.shapes))
        self.step = int(state["step"])

    def synchronize(self):
        self.ops.synchronize()


def accuracy(trainer, x: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``x`` whose largest output is the label."""
    return float(np.mean(trainer.predict(x).argmax(axis=1) == labels))
