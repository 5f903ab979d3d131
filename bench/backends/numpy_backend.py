"""The NumPy reference backends: ``numpy`` runs whole mini-batches through the
reference ops (models/reference.py); ``numpy-loop`` is Nielsen's network.py,
backprop one sample at a time with the gradients summed over the batch.
"""
from ...models.reference import NumpyOps, PerSampleTrainer
from ...models.train import OpsTrainer
from . import EVERY_NETWORK, Backend


class NumpyBackend(Backend):
    name = "numpy"
    networks = EVERY_NETWORK
    description = "vectorised NumPy, whole mini-batches, BLAS matmul (the reference)"

    def make_trainer(self, network, init_params, config, seed=0):
        return OpsTrainer(NumpyOps(), network, init_params, config, seed)


class NumpyLoopBackend(Backend):
    name = "numpy-loop"
    description = "NumPy, one sample at a time, gradients summed (Nielsen's network.py)"

    networks = EVERY_NETWORK
    unsupported = {"cnn": "per-sample im2col backprop of the cnn takes hours per epoch; "
                          "numpy-loop is the baseline of the dense networks only"}

    def make_trainer(self, network, init_params, config, seed=0):
        return PerSampleTrainer(NumpyOps(), network, init_params, config, seed)
