"""The JAX baselines: XLA compiles a whole training step, or a whole epoch.

- ``jax``: each network as a JAX user writes it -- parameters as a pytree (the
  suite's canonical dict, dense weights (fan_in, fan_out)), the loss written
  with jax.numpy / lax, ``jax.value_and_grad``, the update written out, and one
  ``jax.jit`` step per mini-batch (the gather of the batch's rows inside it, on
  the device);
- ``jax-scan``: the epoch's full batches in one jitted ``lax.scan`` (the
  epoch's index matrix moved to the device once per epoch), the XLA counterpart
  of numba-fused; a short last batch then runs through the same jitted step as
  ``jax``, so the result is the step-by-step one.

Both start from the canonical weights, follow the shared batch order and drive
the cnn's dropout with the suite's counter-based mask (models/ops.py), computed
on the device in uint32 arithmetic, never with JAX's PRNG. float32 throughout
(x64 stays off). The thread count is set before jax is first imported in the
backend's process: XLA sizes its CPU thread pool from the process's CPU
affinity, so the worker is pinned to that many cores, and XLA_FLAGS carries the
intra-op thread limit; both are recorded with every cell.
"""
import importlib.util
import os

import numpy as np

from ...models.params import pack, unpack
from ...models.train import OPTIMIZERS, Trainer, batch_order, dropout_key
from . import Backend

_jax = None


def jax_modules():
    """(jax, jax.numpy, jax.lax), imported on first use (after configure_threads)."""
    global _jax
    if _jax is None:
        import jax
        import jax.numpy as jnp
        from jax import lax
        jax.config.update("jax_enable_x64", False)
        if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            # every compiled program goes to the persistent cache, however small
            jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        _jax = jax, jnp, lax
    return _jax


# -- the networks ----------------------------------------------------------------------

def keep_mask(jnp, n, rate, key):
    """models.ops.dropout_keep_mask for n elements, as uint32 arithmetic on the device."""
    h = jnp.arange(n, dtype=jnp.uint32) + key * jnp.uint32(0x9E3779B9)
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    h = h ^ (h >> 16)
    return h >= jnp.uint32(int(rate * 4294967296.0))


def cross_entropy(jax, jnp, logits, labels):
    logp = jax.nn.log_softmax(logits, axis=1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def forward(name, network, p, x, key=None):
    """The network's outputs (logits or sigmoid activations); ``key``: the dropout
    key of the step (training), None for inference."""
    jax, jnp, lax = jax_modules()
    if name == "linear":
        return x @ p["w"] + p["b"]
    if name == "nielsen":
        a1 = jax.nn.sigmoid(x @ p["w1"] + p["b1"])
        return jax.nn.sigmoid(a1 @ p["w2"] + p["b2"])
    if name == "mlp":
        return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    # cnn: NCHW images, OIHW kernels, valid convolutions, 2x2 max-pools
    dims = ("NCHW", "OIHW", "NCHW")
    h = lax.conv_general_dilated(x, p["c1w"], (1, 1), "VALID", dimension_numbers=dims)
    h = lax.reduce_window(h + p["c1b"][None, :, None, None], -jnp.inf, lax.max, (1, 1, 2, 2),
                          (1, 1, 2, 2), "VALID")
    h = lax.conv_general_dilated(h, p["c2w"], (1, 1), "VALID", dimension_numbers=dims)
    h = lax.reduce_window(h + p["c2b"][None, :, None, None], -jnp.inf, lax.max, (1, 1, 2, 2),
                          (1, 1, 2, 2), "VALID")
    f1 = jax.nn.relu(h.reshape(h.shape[0], -1) @ p["f1w"] + p["f1b"])
    if key is not None:
        rate = network.dropout_rate
        mask = keep_mask(jnp, f1.size, rate, key).reshape(f1.shape)
        f1 = f1 * mask.astype(f1.dtype) / jnp.float32(1 - rate)
    return f1 @ p["f2w"] + p["f2b"]


def loss_fn(name, network):
    jax, jnp, _ = jax_modules()

    def loss(p, x, y, key):
        out = forward(name, network, p, x, key)
        if network.target == "onehot":
            return 0.5 * jnp.sum((out - y) ** 2) / x.shape[0]
        return cross_entropy(jax, jnp, out, y)
    return loss


def update_fn(config):
    """(p, g, state, t) -> (p, state): the suite's rules (models/ops.py), written out."""
    jax, jnp, _ = jax_modules()
    opt, lr = config["optimizer"], jnp.float32(config["lr"])
    tree = jax.tree_util.tree_map
    if opt == "sgd":
        return lambda p, g, state, t: (tree(lambda a, b: a - lr * b, p, g), state)
    if opt == "momentum":
        beta, rest = jnp.float32(config["beta"]), jnp.float32(1 - config["beta"])

        def momentum(p, g, state, t):
            v = tree(lambda v_, g_: beta * v_ + rest * g_, state["v"], g)
            return tree(lambda a, b: a - lr * b, p, v), {"v": v}
        return momentum
    b1, b2, eps = config["beta1"], config["beta2"], jnp.float32(config["eps"])

    def adam(p, g, state, t):
        m = tree(lambda m_, g_: jnp.float32(b1) * m_ + jnp.float32(1 - b1) * g_, state["m"], g)
        v = tree(lambda v_, g_: jnp.float32(b2) * v_ + jnp.float32(1 - b2) * g_ * g_, state["v"], g)
        c1 = (1 - jnp.float32(b1) ** t).astype(jnp.float32)
        c2 = (1 - jnp.float32(b2) ** t).astype(jnp.float32)
        new = tree(lambda a, m_, v_: a - lr * (m_ / c1) / (jnp.sqrt(v_ / c2) + eps), p, m, v)
        return new, {"m": m, "v": v}
    return adam


class JaxTrainer(Trainer):
    """One jitted step per batch, or (scan=True) the epoch's full batches in one
    jitted lax.scan and a short last batch through the step."""

    def __init__(self, network, init_params, config, seed=0, scan=False):
        super().__init__(network, init_params, config, seed)
        jax, jnp, lax = jax_modules()
        if config["optimizer"] not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {config['optimizer']!r}; choose from {', '.join(OPTIMIZERS)}")
        self.jax, self.jnp, self.scan = jax, jnp, scan
        shapes = network.param_shapes()
        self.shapes = shapes
        host = unpack(pack(init_params, shapes), shapes)  # checks names and shapes
        self.p = {k: jnp.asarray(v) for k, v in host.items()}
        zeros = lambda: {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}  # noqa: E731
        self.state = {} if config["optimizer"] == "sgd" else (
            {"v": zeros()} if config["optimizer"] == "momentum" else {"m": zeros(), "v": zeros()})
        grad = jax.value_and_grad(loss_fn(network.name, network))
        update = update_fn(config)

        def step(p, state, t, x, y, key):
            loss, g = grad(p, x, y, key)
            p, state = update(p, g, state, t)
            return p, state, loss

        def gathered(p, state, t, X, Y, idx, key):
            return step(p, state, t, jnp.take(X, idx, axis=0), jnp.take(Y, idx, axis=0), key)

        def epoch(p, state, t0, X, Y, idx_matrix, keys):
            def body(carry, xs):
                p, state, t = carry
                idx, key = xs
                p, state, loss = gathered(p, state, t, X, Y, idx, key)
                return (p, state, t + 1), loss
            (p, state, _), losses = lax.scan(body, (p, state, t0), (idx_matrix, keys))
            return p, state, losses

        self._full = jax.jit(step)        # full-batch gradient descent: no gather
        self._step = jax.jit(gathered)
        self._epoch = jax.jit(epoch)

    def set_data(self, x, y):
        self.X = self.jnp.asarray(np.asarray(x, np.float32))
        y = np.asarray(y)
        self.Y = self.jnp.asarray(y.astype(np.float32 if y.dtype.kind == "f" else np.int32))

    def _key(self):
        return self.jnp.uint32(dropout_key(self.seed, self.step))

    def train_epoch(self, batches):
        jnp = self.jnp
        n = self.X.shape[0]
        losses = []
        if len(batches) == 1 and isinstance(batches[0], slice) and batches[0].indices(n)[:2] == (0, n):
            self.p, self.state, loss = self._full(self.p, self.state, jnp.float32(self.step + 1),
                                                  self.X, self.Y, self._key())
            self.step += 1
            return float(loss)
        order, starts, _ = batch_order(batches, n)
        sizes = np.diff(starts)
        full = int(np.sum(sizes == sizes[0])) if len(sizes) else 0
        if self.scan and full and np.all(sizes[:full] == sizes[0]):
            size = int(sizes[0])
            idx = jnp.asarray(order[:full * size].reshape(full, size).astype(np.int32))
            keys = jnp.asarray(np.array([dropout_key(self.seed, self.step + i) for i in range(full)],
                                        np.uint32))
            self.p, self.state, scanned = self._epoch(self.p, self.state, jnp.float32(self.step + 1),
                                                      self.X, self.Y, idx, keys)
            self.step += full
            losses.append(scanned)
            rest = range(full, len(sizes))
        else:
            rest = range(len(sizes))
        for b in rest:
            idx = jnp.asarray(order[starts[b]:starts[b + 1]].astype(np.int32))
            self.p, self.state, loss = self._step(self.p, self.state, jnp.float32(self.step + 1),
                                                  self.X, self.Y, idx, self._key())
            self.step += 1
            losses.append(loss[None])
        # one read-back per epoch, the mean in float64 as OpsTrainer takes it
        return float(np.mean(np.asarray(jnp.concatenate(losses), np.float64)))

    def predict(self, x, chunk=1000):
        fn = getattr(self, "_predict", None)
        if fn is None:
            fn = self._predict = self.jax.jit(lambda p, xb: forward(self.net.name, self.net, p, xb))
        return np.concatenate([np.asarray(fn(self.p, self.jnp.asarray(np.asarray(x[i:i + chunk], np.float32))))
                               for i in range(0, len(x), chunk)])

    def params(self):
        return {k: np.array(v, np.float32) for k, v in self.p.items()}

    def optimizer_state(self):
        return {"step": self.step,
                "buffers": {name: {k: np.array(v, np.float32) for k, v in tree.items()}
                            for name, tree in self.state.items()}}

    def synchronize(self):
        self.jax.block_until_ready(self.p)


class JaxBackend(Backend):
    name = "jax"
    description = "JAX as its users write it: value_and_grad, the update written out, one jax.jit step per batch"
    scan = False
    compile_caches = {"JAX_COMPILATION_CACHE_DIR": "jax"}

    def available(self):
        if importlib.util.find_spec("jax") is None:
            return False, "jax is not installed (pip install -e '.[jax]')"
        return True, ""

    networks = ("linear", "nielsen", "mlp", "cnn")  # forward() and loss_fn() above
    thread_libraries = ("jax",)

    def make_trainer(self, network, init_params, config, seed=0):
        return JaxTrainer(network, init_params, config, seed, scan=self.scan)


class JaxScanBackend(JaxBackend):
    name = "jax-scan"
    description = "the epoch's batches in one jitted lax.scan (the XLA counterpart of numba-fused)"
    scan = True
