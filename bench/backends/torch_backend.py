"""The PyTorch baselines, from the suite's initial weights in the suite's batch order.

Two forms tell framework cost from kernel cost:

- ``torch`` (``torch-compile``, ``torch-cuda``): each network as a PyTorch user
  writes it -- an ``nn.Module``, autograd, ``torch.optim`` -- driven by
  ``TorchTrainer``.
- ``torch-ops`` (``torch-ops-cuda``): ``TorchOps``, the suite's ops interface on
  torch tensors with the network's own manual backprop, run by the same
  ``OpsTrainer`` as the NumPy and Numba backends. No tensor here requires grad,
  so autograd records nothing.

``import torch`` fails here when torch is not installed; the registry turns that
ImportError into "unavailable" for these backends only.
"""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ...models.ops import Ops
from ...models.params import pack, unpack
from ...models.train import OPTIMIZERS, OpsTrainer, Trainer, dropout_key

from . import EVERY_NETWORK, Backend
from .torch_modules import MODULES

_U32 = 0xFFFFFFFF


def _mul_u32(h, c: int):
    """(h·c) mod 2³² for int64 tensors holding uint32 values, without int64
    overflow: c is split into 16-bit halves so no product exceeds 2⁴⁸."""
    return (h * (c & 0xFFFF) + (((h * (c >> 16)) & 0xFFFF) << 16)) & _U32


def dropout_keep_mask(shape, rate: float, key: int, device) -> "torch.Tensor":
    """models.ops.dropout_keep_mask computed on ``device``, bit for bit.

    The same MurmurHash3 finaliser on int64 tensors, so a CUDA run does not
    compute the mask on the host and copy it over every step.
    """
    h = torch.arange(math.prod(shape), dtype=torch.int64, device=device)
    h = (h + (((key & _U32) * 0x9E3779B9) & _U32)) & _U32
    h ^= h >> 16
    h = _mul_u32(h, 0x85EBCA6B)
    h ^= h >> 13
    h = _mul_u32(h, 0xC2B2AE35)
    h ^= h >> 16
    return (h >= int(rate * 4294967296.0)).reshape(shape)


def scaled_dropout_mask(shape, rate, key, device):
    """The keep mask as float32 scaled by 1/(1-rate): dropout is x · this."""
    return dropout_keep_mask(shape, rate, key, device).to(torch.float32) / (1.0 - rate)


def take_rows(x, idx):
    """Rows ``idx`` of ``x``: a slice is a view, an index array a gather on x's device."""
    if isinstance(idx, slice):
        return x[idx]
    return x.index_select(0, torch.as_tensor(np.asarray(idx, dtype=np.int64), device=x.device))


# -- the ops interface on torch tensors ------------------------------------------

class TorchOps(Ops):
    """models/ops.py with torch kernels; every ``out=`` writes into the view it is given."""

    name = "torch"

    def __init__(self, device="cpu"):
        self.device = torch.device(device)

    def asarray(self, x):
        x = np.asarray(x)
        if x.dtype.kind == "f":
            x = x.astype(np.float32, copy=False)
        elif x.dtype.kind in "iu":
            x = x.astype(np.int64, copy=False)
        else:
            raise ValueError(f"cannot make a tensor of a {x.dtype} array: expected floats or integers")
        # A copy: the trainer updates its buffers in place and must not write into
        # the caller's arrays.
        return torch.tensor(x, device=self.device)

    def to_numpy(self, a):
        return a.detach().cpu().numpy()

    def zeros(self, shape):
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def take_rows(self, x, idx):
        return take_rows(x, idx)

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def matmul(self, a, b, out=None):
        return torch.mm(a, b, out=out)

    def matmul_nt(self, a, b, out=None):
        return torch.mm(a, b.t(), out=out)

    def matmul_tn(self, a, b, out=None):
        return torch.mm(a.t(), b, out=out)

    # dense and activation_backward: the reference's expressions (models/reference.py)
    # on torch tensors -- the same arithmetic, another array library
    def dense(self, x, w, b, activation):
        z = torch.addmm(b, x, w)
        if activation == "sigmoid":
            return z.sigmoid_()
        if activation == "relu":
            return z.relu_()
        if activation == "none":
            return z
        raise ValueError(f"unknown activation {activation!r}")

    def activation_backward(self, a, da, activation):
        if activation == "sigmoid":
            return da * a * (1 - a)
        if activation == "relu":
            return da * (a > 0)
        if activation == "none":
            return da
        raise ValueError(f"unknown activation {activation!r}")

    def bias_grad(self, dz, out=None):
        return torch.sum(dz, dim=0, out=out)

    def softmax_cross_entropy(self, logits, labels):
        # The loss stays a tensor: reading it back is OpsTrainer's one sync per epoch.
        n = logits.shape[0]
        logp = torch.log_softmax(logits, dim=1)
        loss = -logp.gather(1, labels[:, None]).mean()
        grad = logp.exp_()
        grad[torch.arange(n, device=logits.device), labels] -= 1
        return loss, grad.div_(n)

    def quadratic_loss(self, a, onehot):
        diff = a - onehot
        n = a.shape[0]
        return 0.5 * diff.square().sum() / n, diff / n

    def conv2d(self, x, w, b):
        return F.conv2d(x, w, b)

    def conv2d_backward(self, x, w, dy, dw_out, db_out, need_dx=True):
        dw_out.copy_(torch.nn.grad.conv2d_weight(x, w.shape, dy))
        torch.sum(dy, dim=(0, 2, 3), out=db_out)
        return torch.nn.grad.conv2d_input(x.shape, w, dy) if need_dx else None

    def maxpool2(self, x):
        return F.max_pool2d(x, 2, return_indices=True)

    def maxpool2_backward(self, dy, argmax, x_shape):
        # argmax holds flat positions in each (H, W) plane: scatter dy back there.
        return F.max_unpool2d(dy, argmax, 2, output_size=tuple(x_shape[2:]))

    def dropout(self, x, rate, key):
        mask = scaled_dropout_mask(x.shape, rate, key, x.device)
        return x * mask, mask

    def mul(self, a, b):
        return a * b

    def sgd_update(self, p, g, lr):
        p.add_(g, alpha=-lr)

    def momentum_update(self, p, g, v, lr, beta):
        v.mul_(beta).add_(g, alpha=1 - beta)
        p.add_(v, alpha=-lr)

    def adam_update(self, p, g, m, v, step, lr, beta1, beta2, eps):
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v / (1 - beta2 ** step)).sqrt_().add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - beta1 ** step))


def make_optimizer(params: list, config: dict):
    """torch.optim for the network's optimizer, set up to follow the suite's rules.

    Momentum: the suite's rule is v = β·v + (1-β)·g, p -= lr·v from v = 0.
    torch.optim.SGD computes buf = momentum·buf + (1-dampening)·g, so momentum
    and dampening are both β; but when a parameter has no buffer yet, SGD's
    first step sets buf = g, undamped. Zero buffers placed in the optimizer
    state make the first step take the general rule too (buf = β·0 + (1-β)·g).
    """
    opt = config["optimizer"]
    if opt == "sgd":
        return torch.optim.SGD(params, lr=config["lr"])
    if opt == "momentum":
        beta = config["beta"]
        optimizer = torch.optim.SGD(params, lr=config["lr"], momentum=beta, dampening=beta)
        for p in params:
            optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
        return optimizer
    if opt == "adam":  # torch.optim.Adam is the suite's rule (bias-corrected, step from 1)
        return torch.optim.Adam(params, lr=config["lr"], betas=(config["beta1"], config["beta2"]),
                                eps=config["eps"])
    raise ValueError(f"unknown optimizer {opt!r}; choose from {', '.join(OPTIMIZERS)}")


class TorchTrainer(Trainer):
    """The idiomatic loop: zero_grad, forward + loss, backward, optimizer.step.

    With ``compile=True`` the forward + loss (and with it the backward that
    AOTAutograd derives) and the optimizer step run under torch.compile, one
    static graph per batch size; the first step at each batch size (compilation
    included) is timed into ``compile_log["cold_s"]``.
    """

    def __init__(self, network, init_params, config, seed=0, device="cpu", compile=False,
                 compile_log=None, compile_mode=None):
        super().__init__(network, init_params, config, seed)
        if network.name not in MODULES:
            raise ValueError(f"no torch module for network {network.name!r}; "
                             f"torch has {', '.join(MODULES)}")
        self.device = torch.device(device)
        module, self.loss_fn = MODULES[network.name]
        self.model = module(network).to(self.device)
        self.param_names = module.param_names
        shapes = network.param_shapes()
        self._load(unpack(pack(init_params, shapes), shapes))  # pack checks names and shapes
        self.optimizer = make_optimizer(list(self.model.parameters()), config)
        self.dropout_rate = getattr(network, "dropout_rate", 0.0)
        self.forward_loss, self.optimizer_step = self._forward_loss, self.optimizer.step
        self.compiled_batch_sizes = None
        if compile:
            self.forward_loss = torch.compile(self._forward_loss, dynamic=False, mode=compile_mode)
            self.optimizer_step = torch.compile(self.optimizer.step, dynamic=False, mode=compile_mode)
            self.compiled_batch_sizes = set()
            self.compile_log = compile_log if compile_log is not None else {}
            self.compile_log["cold_s"] = 0.0

    def _load(self, params):
        modules = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, attr in self.param_names.items():
                t = torch.from_numpy(params[name])
                modules[attr].copy_(t.t() if t.ndim == 2 else t)

    def _forward_loss(self, xb, yb, dropout_mask):
        return self.loss_fn(self.model(xb, dropout_mask), yb)

    def set_data(self, x, y):
        self.x = torch.tensor(np.asarray(x, np.float32), device=self.device)
        y = np.asarray(y)
        self.y = torch.tensor(y.astype(np.float32 if y.dtype.kind == "f" else np.int64),
                              device=self.device)

    def _step(self, xb, yb):
        mask = None
        if self.dropout_rate:
            mask = scaled_dropout_mask((len(xb), self.model.dropout_features), self.dropout_rate,
                                       dropout_key(self.seed, self.step), self.device)
        self.optimizer.zero_grad()
        loss = self.forward_loss(xb, yb, mask)
        loss.backward()
        self.optimizer_step()
        self.step += 1
        return loss.detach()

    def train_epoch(self, batches):
        self.model.train()
        losses = []
        for idx in batches:
            xb, yb = take_rows(self.x, idx), take_rows(self.y, idx)
            if self.compiled_batch_sizes is not None and len(xb) not in self.compiled_batch_sizes:
                start = time.perf_counter()
                losses.append(self._step(xb, yb))
                self.synchronize()
                self.compile_log["cold_s"] += time.perf_counter() - start
                self.compiled_batch_sizes.add(len(xb))
            else:
                losses.append(self._step(xb, yb))
        # One read-back per epoch; the mean in float64 as OpsTrainer takes it.
        return torch.stack(losses).to(torch.float64).mean().item()

    def predict(self, x, chunk=1000):
        self.model.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), chunk):
                xb = torch.tensor(np.asarray(x[i:i + chunk], np.float32), device=self.device)
                outs.append(self.model(xb).cpu().numpy())
        return np.concatenate(outs)

    def params(self):
        modules = dict(self.model.named_parameters())
        out = {}
        for name, attr in self.param_names.items():
            t = modules[attr].detach()
            out[name] = np.array((t.t() if t.ndim == 2 else t).cpu().numpy(), np.float32, order="C")
        return out

    def optimizer_state(self):
        """torch.optim's buffers under the suite's names: SGD's momentum_buffer is the
        suite's v (dampening = momentum makes its rule the suite's), Adam's exp_avg
        and exp_avg_sq are m and v."""
        names = {"momentum": {"v": "momentum_buffer"},
                 "adam": {"m": "exp_avg", "v": "exp_avg_sq"}}.get(self.config["optimizer"], {})
        modules = dict(self.model.named_parameters())
        buffers = {}
        for name, key in names.items():
            tensors = {}
            for pname, attr in self.param_names.items():
                t = self.optimizer.state[modules[attr]][key].detach()
                tensors[pname] = np.array((t.t() if t.ndim == 2 else t).cpu().numpy(), np.float32,
                                          order="C")
            buffers[name] = tensors
        return {"step": self.step, "buffers": buffers}

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# -- the registered backends ------------------------------------------------------

def _cuda_available():
    if not torch.cuda.is_available():
        return False, "no CUDA device: torch.cuda.is_available() is False"
    return True, ""


def _tf32_off():
    """Full float32 matmuls and convolutions on the GPU (cuDNN allows TF32 by default)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch as its users write it: nn.Module, autograd, torch.optim (CPU)"
    device = "cpu"
    compile = False

    networks = tuple(MODULES)
    thread_libraries = ("torch",)

    def __init__(self):
        self._compile_log = {}

    compile_mode = None

    def make_trainer(self, network, init_params, config, seed=0):
        self._compile_log = {}
        return TorchTrainer(network, init_params, config, seed, device=self.device,
                            compile=self.compile, compile_log=self._compile_log,
                            compile_mode=self.compile_mode)

    def compile_info(self):
        return dict(self._compile_log)


class TorchCompileBackend(TorchBackend):
    name = "torch-compile"
    description = ("the torch model's forward/backward and optimizer step under torch.compile "
                   "(inductor, one static graph per batch size); compile time reported apart")
    compile = True
    compile_caches = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
    _check = None  # (ok, reason) of the one trial compilation, shared by every instance

    def available(self):
        if TorchCompileBackend._check is None:
            TorchCompileBackend._check = self._trial_compile()
        return TorchCompileBackend._check

    def _trial_compile(self):
        try:
            x = torch.linspace(-2, 2, 16, device=self.device)
            got = torch.compile(lambda t: torch.sigmoid(t) * 2 + 1, dynamic=False)(x)
            if not torch.allclose(got, torch.sigmoid(x) * 2 + 1):
                return False, "torch.compile ran but computed a wrong result in its trial"
            return True, ""
        except Exception as e:  # whatever inductor or the C++ compiler raised
            first = (str(e).strip().splitlines() or [""])[0][:200]
            return False, f"torch.compile fails on this machine: {type(e).__name__}: {first}"


class OnCuda:
    """A torch backend on the CUDA device: available where torch sees one, its
    matmuls and convolutions in true float32 (TF32 off)."""
    device = "cuda"

    def available(self):
        return _cuda_available()

    def make_trainer(self, network, init_params, config, seed=0):
        _tf32_off()
        return super().make_trainer(network, init_params, config, seed)


class TorchCudaBackend(OnCuda, TorchBackend):
    name = "torch-cuda"
    description = "the idiomatic torch model on a CUDA device (TF32 off)"


class TorchCudaGraphsBackend(TorchCudaBackend):
    name = "torch-cuda-graphs"
    description = ("the torch model under torch.compile(mode=\"reduce-overhead\") on a CUDA device: "
                   "inductor kernels replayed as CUDA graphs, the baseline for launch-bound "
                   "networks (TF32 off; compile time apart)")
    compile = True
    compile_mode = "reduce-overhead"
    compile_caches = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


class TorchCudaTF32Backend(TorchCudaBackend):
    name = "torch-cuda-tf32"
    description = ("the torch model on a CUDA device with TF32 matmuls and convolutions "
                   "(reduced precision: a labelled line, not float32)")
    validation_tolerance = 3e-2  # TF32 keeps 10 mantissa bits

    def make_trainer(self, network, init_params, config, seed=0):
        trainer = TorchBackend.make_trainer(self, network, init_params, config, seed)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return trainer


class TorchOpsBackend(Backend):
    name = "torch-ops"
    description = "the suite's ops on torch tensors, manual backprop, no autograd (CPU)"
    device = "cpu"

    networks = EVERY_NETWORK
    thread_libraries = ("torch",)

    def make_trainer(self, network, init_params, config, seed=0):
        return OpsTrainer(TorchOps(self.device), network, init_params, config, seed)


class TorchOpsCudaBackend(OnCuda, TorchOpsBackend):
    name = "torch-ops-cuda"
    description = "the suite's ops on torch CUDA tensors, manual backprop (TF32 off)"
