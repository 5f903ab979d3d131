"""Backend validation: a backend must reach the NumPy reference's parameters after
a few optimizer steps from the same init and batch order before any time of it
is recorded. Used by the epoch workers, the pytest-benchmark suites and the
tests alike.

Two scenarios, both from the network's canonical init:
- ``standard``: ``steps`` mini-batches of MNIST-shaped data;
- ``large inputs`` (networks with a softmax cross-entropy): two mini-batches of
  the same images scaled by LARGE_INPUT, which drives the logits into the
  thousands, where a softmax without the max shift overflows; the reference's
  stays finite.
"""
from dataclasses import dataclass

import numpy as np

from ..models import Network, config_for, get_network
from ..models.checks import compare
from ..models.train import OpsTrainer, epoch_batches, prepare_inputs, prepare_targets

# Per tensor, the L2 norm of the difference relative to how far the tensor moved
# from its initial value. A kernel wrong by 1 % in one tensor's gradient gives
# ~1e-2 under SGD and momentum; float32 summation-order noise stays near 1e-5.
# Not the largest element: max-pool is discontinuous, and where a window's two
# largest inputs differ by less than float32 rounding a different summation order
# routes that pixel's gradient elsewhere (cnn at batch 256: one window in 262,144
# for numba), which moves a few weights by 2 % of their step but the tensor by
# 0.1 %. Adam normalises each step by the gradient's size, so no whole-network
# check sees a pure scale error of the gradient under Adam: the kernel families
# and the SGD parity tests catch those.
TOLERANCE = 2e-3
LARGE_INPUT = 1000.0
# Where numpy's float32 result and float64's differ, an honest float32 backend may
# differ from either by as much: the tolerance grows to DRIFT_FACTOR times their
# difference, at most DRIFT_CAP (a network with saturated sigmoid hidden units and
# a softmax output at large inputs: 0.003 between every honest backend and numpy)
DRIFT_FACTOR = 10.0
DRIFT_CAP = 0.01


@dataclass
class Validation:
    backend: str
    model: str
    ok: bool
    max_error: float
    steps: int
    error: str = ""
    tolerance: float = TOLERANCE


def validation_data(network, n, seed=0, scale=1.0):
    """MNIST-shaped inputs with a learnable structure (synthetic, deterministic)."""
    rng = np.random.default_rng(seed + 12345)
    labels = rng.integers(0, 10, n)
    protos = rng.random((10, 784)).astype(np.float32)
    x = np.clip(0.6 * protos[labels] + 0.4 * rng.random((n, 784), dtype=np.float32), 0, 1)
    return (prepare_inputs(network, (x * np.float32(scale)).astype(np.float32)),
            prepare_targets(network, labels), labels)


def run_steps(backend, network, config, x, y, steps, seed=0):
    """Train ``steps`` mini-batches (of the epoch-0 order); returns the trainer."""
    trainer = backend.make_trainer(network, network.init_params(seed), config, seed)
    trainer.set_data(x, y)
    batches = epoch_batches(len(x), config["batch_size"], seed, 0)[:steps]
    trainer.train_epoch(batches)
    trainer.synchronize()
    return trainer


class Float64Reference:
    """The reference ops in float64, as a backend ``run_steps`` can train."""

    def make_trainer(self, network, init_params, config, seed=0):
        from ..models.reference import Float64Ops
        return OpsTrainer(Float64Ops(), network, init_params, config, seed)


def agreement(got, want32, want64, start, floor, factor, cap=float("inf")) -> dict:
    """How ``got`` agrees with the float32 and the float64 reference, both started
    from ``start``: agreeing with either is agreeing (float32 and float64 may take
    the two sides of a ReLU at zero, and either is honest), and where the two
    differ (``drift``), an honest float32 result may lie as far from both, so the
    tolerance is ``max(floor, min(factor * drift, cap))``. {"error" (the smaller),
    "message", "error_float32", "error_float64", "drift", "tolerance"}."""
    drift, _ = param_error(want32, want64, start, 1.0)
    tolerance = max(floor, min(factor * drift, cap))
    err32, err64 = (param_error(got, want, start, tolerance) for want in (want32, want64))
    err, message = min(err32, err64, key=lambda e: e[0])
    return {"error": err, "message": message, "error_float32": err32[0],
            "error_float64": err64[0], "drift": drift, "tolerance": tolerance}


def param_error(got: dict, want: dict, init: dict, tolerance=TOLERANCE):
    """(largest per-tensor relative L2 error, message naming the tensors over
    ``tolerance``): each tensor's distance from the reference relative to how far
    it moved from ``init``."""
    scale = {}
    for k in want:
        moved = float(np.linalg.norm((want[k] - init[k]).ravel().astype(np.float64)))
        floor = 1e-6 * max(1.0, float(np.linalg.norm(want[k].ravel().astype(np.float64))))
        scale[k] = max(moved, floor)
    result = compare(got, want, tolerance, scale=scale, elementwise=False)
    return result.worst, result.message


def scenarios(network, config, steps, seed):
    """(name, inputs, targets, steps) of every scenario the network is checked in."""
    n = config["batch_size"] * steps
    x, y, _ = validation_data(network, n, seed)
    yield "standard", x, y, steps
    if network.target == "index":
        x, y, _ = validation_data(network, config["batch_size"] * 2, seed, LARGE_INPUT)
        yield "large inputs", x, y, 2


def adam_parity_config(config: dict, overrides=None) -> dict:
    """The config whole-network parity is checked at: Adam divides by sqrt(v) + eps,
    and where a gradient entry cancels to ~1e-8 (float32 rounding of terms ~1e-3,
    which differs legitimately between summation orders), eps 1e-8 turns that
    rounding into a full-size step. Parity is therefore checked at eps 1e-4 unless
    the caller set eps; the Adam kernels themselves are validated at eps 1e-8 in
    kernels/update.py."""
    config = dict(config)
    if config.get("optimizer") == "adam" and "eps" not in (overrides or {}):
        config["eps"] = max(config["eps"], 1e-4)
    return config


def validate(backend, network, steps=3, batch_size=None, seed=0, overrides=None,
             tolerance=TOLERANCE, config=None) -> Validation:
    """Compare ``backend`` (a Backend, or its name) with ``numpy`` on ``network`` (a
    Network, or its name) in every scenario, with ``config`` (default: the
    network's hyperparameters with ``overrides``); never raises."""
    from .backends import Backend, get_backend
    worst = 0.0
    backend_name = getattr(backend, "name", backend)
    model_name = getattr(network, "name", network)
    try:
        if not isinstance(network, Network):
            network = get_network(network)
        if not isinstance(backend, Backend):
            backend = get_backend(backend)
        config = adam_parity_config(config if config is not None else config_for(network, overrides),
                                    overrides)
        if batch_size is not None:
            config["batch_size"] = batch_size
        elif config["batch_size"] == 0:
            config["batch_size"] = 64  # full-batch models: a small "full" batch
        tolerance = backend.validation_tolerance or tolerance
        ok, why = backend.available()
        if not ok:
            return Validation(backend_name, model_name, False, float("nan"), steps, f"unavailable: {why}")
        init = network.init_params(seed)
        reference = get_backend("numpy")
        for name, x, y, n_steps in scenarios(network, config, steps, seed):
            want = run_steps(reference, network, config, x, y, n_steps, seed).params()
            want64 = run_steps(Float64Reference(), network, config, x, y, n_steps, seed).params()
            got = run_steps(backend, network, config, x, y, n_steps, seed).params()
            check = agreement(got, want, want64, init, tolerance, DRIFT_FACTOR, DRIFT_CAP)
            err, message, allowed = check["error"], check["message"], check["tolerance"]
            worst = max(worst, err)
            if not np.isfinite(err) or err > allowed:
                return Validation(backend_name, model_name, False, err, steps,
                                  f"parameters differ from numpy after {n_steps} steps ({name}): "
                                  f"{message or f'relative error {err:.3g}'}", allowed)
        return Validation(backend_name, model_name, True, worst, steps, tolerance=tolerance)
    except Exception as e:  # any crash is a failed validation, with its error kept
        return Validation(backend_name, model_name, False, float("nan"), steps,
                          f"{type(e).__name__}: {e}")
