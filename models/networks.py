"""The four networks of ../shared/REFERENCE.md, each written once against the ops
interface (models/ops.py). A network holds no arrays: it names its parameters
(canonical order and shapes), initialises them from a seed, and computes the
loss and the gradients of one mini-batch with whatever ``ops`` it is handed.
"""
import numpy as np

IMAGE_PIXELS = 784
CLASSES = 10


class Network:
    name = "abstract"
    # Hyperparameters of the write-up, every one overridable by the caller.
    defaults: dict = {}
    # "onehot" (quadratic cost) or "index" (cross-entropy) targets.
    target = "index"
    # Inputs as flat (N, 784) rows or images (N, 1, 28, 28).
    input_shape = (IMAGE_PIXELS,)

    def param_shapes(self) -> dict:
        raise NotImplementedError

    def init_params(self, seed: int) -> dict:
        raise NotImplementedError

    def loss_and_grads(self, ops, p, x, y, grads, key=0):
        """Mean loss of the batch; writes every dL/dparam into ``grads`` views."""
        raise NotImplementedError

    def predict(self, ops, p, x):
        """Network outputs (logits or activations) for a batch, inference mode."""
        raise NotImplementedError

    def flops_per_sample(self) -> int:
        """Multiply-adds ×2 of the matmuls/convs in one forward + backward pass."""
        raise NotImplementedError


def _normal(rng, shape, std=1.0):
    return (rng.standard_normal(shape) * std).astype(np.float32)


class Linear(Network):
    """784 -> 10 softmax regression, full-batch gradient descent (write-ups 000, 004)."""

    name = "linear"
    defaults = dict(batch_size=0, optimizer="sgd", lr=0.1, epochs=65)  # 0 = full batch

    def param_shapes(self):
        return {"w": (IMAGE_PIXELS, CLASSES), "b": (CLASSES,)}

    def init_params(self, seed):
        return {k: np.zeros(s, np.float32) for k, s in self.param_shapes().items()}

    def loss_and_grads(self, ops, p, x, y, grads, key=0):
        logits = ops.dense(x, p["w"], p["b"], "none")
        loss, dlogits = ops.softmax_cross_entropy(logits, y)
        ops.matmul_tn(x, dlogits, out=grads["w"])
        ops.bias_grad(dlogits, out=grads["b"])
        return loss

    def predict(self, ops, p, x):
        return ops.dense(x, p["w"], p["b"], "none")

    def flops_per_sample(self):
        return 2 * IMAGE_PIXELS * CLASSES * 2  # forward, weight gradient


class TwoLayer(Network):
    """784 -> hidden -> 10, two dense layers; the subclass names the activations and
    the loss. Nielsen's network and the mlp differ only in those (and in init and
    hyperparameters), so both are this one backprop."""

    hidden = 0
    hidden_activation = output_activation = "none"
    loss = "softmax_cross_entropy"  # or "quadratic" (one-hot targets)

    def param_shapes(self):
        return {"w1": (IMAGE_PIXELS, self.hidden), "b1": (self.hidden,),
                "w2": (self.hidden, CLASSES), "b2": (CLASSES,)}

    def loss_and_grads(self, ops, p, x, y, grads, key=0):
        a1 = ops.dense(x, p["w1"], p["b1"], self.hidden_activation)
        a2 = ops.dense(a1, p["w2"], p["b2"], self.output_activation)
        if self.loss == "quadratic":
            loss, da2 = ops.quadratic_loss(a2, y)
            dz2 = ops.activation_backward(a2, da2, self.output_activation)
        else:  # softmax cross-entropy takes the logits: no output activation
            loss, dz2 = ops.softmax_cross_entropy(a2, y)
        ops.matmul_tn(a1, dz2, out=grads["w2"])
        ops.bias_grad(dz2, out=grads["b2"])
        dz1 = ops.activation_backward(a1, ops.matmul_nt(dz2, p["w2"]), self.hidden_activation)
        ops.matmul_tn(x, dz1, out=grads["w1"])
        ops.bias_grad(dz1, out=grads["b1"])
        return loss

    def predict(self, ops, p, x):
        a1 = ops.dense(x, p["w1"], p["b1"], self.hidden_activation)
        return ops.dense(a1, p["w2"], p["b2"], self.output_activation)

    def flops_per_sample(self):
        mults = IMAGE_PIXELS * self.hidden + self.hidden * CLASSES
        return 2 * 3 * mults - 2 * IMAGE_PIXELS * self.hidden  # no input gradient for layer 1


class Nielsen(TwoLayer):
    """784 -> 30 -> 10, sigmoid layers, quadratic cost, SGD batch 10, eta 3.0 (write-up 001)."""

    name = "nielsen"
    target = "onehot"
    hidden = 30
    hidden_activation = output_activation = "sigmoid"
    loss = "quadratic"
    defaults = dict(batch_size=10, optimizer="sgd", lr=3.0, epochs=30)

    def init_params(self, seed):
        # Nielsen's network.py: every weight and bias drawn from N(0, 1).
        rng = np.random.default_rng(seed)
        return {k: _normal(rng, s) for k, s in self.param_shapes().items()}


class MLP(TwoLayer):
    """784 -> 128 ReLU -> 10, softmax cross-entropy, momentum SGD batch 128 (write-ups 002, 003)."""

    name = "mlp"
    hidden = 128
    hidden_activation = "relu"
    defaults = dict(batch_size=128, optimizer="momentum", lr=0.3, beta=0.9, epochs=10)

    def init_params(self, seed):
        # He initialisation (write-up 003); write-up 002's N(0, 1) diverges at lr 0.3.
        rng = np.random.default_rng(seed)
        return {"w1": _normal(rng, (IMAGE_PIXELS, self.hidden), np.sqrt(2.0 / IMAGE_PIXELS)),
                "b1": np.zeros(self.hidden, np.float32),
                "w2": _normal(rng, (self.hidden, CLASSES), np.sqrt(2.0 / self.hidden)),
                "b2": np.zeros(CLASSES, np.float32)}


class CNN(Network):
    """tch-rs's conv net: conv5 1->32, pool2, conv5 32->64, pool2, fc 1024->1024 ReLU,
    dropout 0.5, fc 1024->10; softmax cross-entropy, Adam lr 1e-4, batch 256 (write-up 000)."""

    name = "cnn"
    input_shape = (1, 28, 28)
    defaults = dict(batch_size=256, optimizer="adam", lr=1e-4, beta1=0.9, beta2=0.999,
                    eps=1e-8, epochs=3)
    # Part of the architecture, not a tunable: every backend reads it from here.
    dropout_rate = 0.5

    def param_shapes(self):
        return {"c1w": (32, 1, 5, 5), "c1b": (32,), "c2w": (64, 32, 5, 5), "c2b": (64,),
                "f1w": (1024, 1024), "f1b": (1024,), "f2w": (1024, CLASSES), "f2b": (CLASSES,)}

    def init_params(self, seed):
        # PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
        rng = np.random.default_rng(seed)
        fan_in = {"c1": 25, "c2": 32 * 25, "f1": 1024, "f2": 1024}
        out = {}
        for name, shape in self.param_shapes().items():
            bound = 1.0 / np.sqrt(fan_in[name[:2]])
            out[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
        return out

    def _features(self, ops, p, x):
        h1 = ops.conv2d(x, p["c1w"], p["c1b"])
        q1, arg1 = ops.maxpool2(h1)
        h2 = ops.conv2d(q1, p["c2w"], p["c2b"])
        q2, arg2 = ops.maxpool2(h2)
        return ops.reshape(q2, (q2.shape[0], 1024)), (h1, q1, arg1, h2, q2, arg2)

    def loss_and_grads(self, ops, p, x, y, grads, key=0):
        flat, (h1, q1, arg1, h2, q2, arg2) = self._features(ops, p, x)
        f1 = ops.dense(flat, p["f1w"], p["f1b"], "relu")
        d, mask = ops.dropout(f1, self.dropout_rate, key)
        logits = ops.dense(d, p["f2w"], p["f2b"], "none")
        loss, dlogits = ops.softmax_cross_entropy(logits, y)
        ops.matmul_tn(d, dlogits, out=grads["f2w"])
        ops.bias_grad(dlogits, out=grads["f2b"])
        df1 = ops.activation_backward(f1, ops.mul(ops.matmul_nt(dlogits, p["f2w"]), mask), "relu")
        ops.matmul_tn(flat, df1, out=grads["f1w"])
        ops.bias_grad(df1, out=grads["f1b"])
        dq2 = ops.reshape(ops.matmul_nt(df1, p["f1w"]), q2.shape)
        dh2 = ops.maxpool2_backward(dq2, arg2, h2.shape)
        dq1 = ops.conv2d_backward(q1, p["c2w"], dh2, grads["c2w"], grads["c2b"])
        dh1 = ops.maxpool2_backward(dq1, arg1, h1.shape)
        ops.conv2d_backward(x, p["c1w"], dh1, grads["c1w"], grads["c1b"], need_dx=False)
        return loss

    def predict(self, ops, p, x):
        flat, _ = self._features(ops, p, x)
        f1 = ops.dense(flat, p["f1w"], p["f1b"], "relu")
        return ops.dense(f1, p["f2w"], p["f2b"], "none")

    def flops_per_sample(self):
        conv1 = 24 * 24 * 32 * 25
        conv2 = 8 * 8 * 64 * 32 * 25
        fc = 1024 * 1024 + 1024 * CLASSES
        return 2 * (2 * conv1 + 3 * conv2 + 3 * fc)  # conv1 needs no input gradient


NETWORKS = {cls.name: cls for cls in (Linear, Nielsen, MLP, CNN)}


def register_network(cls):
    """Add a network (from a plugin module, MNIST_BENCH_PLUGINS): every backend that
    runs the ops interface trains it, and the tests that parametrise over NETWORKS
    cover it."""
    if not (isinstance(cls, type) and issubclass(cls, Network)) or cls.name in ("abstract", ""):
        raise ValueError(f"{cls!r} is not a named Network subclass")
    NETWORKS[cls.name] = cls
    return cls
