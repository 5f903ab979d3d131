"""A network and a backend added from outside the package (MNIST_BENCH_PLUGINS),
as a user would: the tests check that both are validated, timed and verified
without a line of the suite changed."""
import numpy as np

from mnist_numba_bench.bench import backends as registry
from mnist_numba_bench.bench.backends.numpy_backend import NumpyBackend
from mnist_numba_bench.models import register_network
from mnist_numba_bench.models.networks import IMAGE_PIXELS, CLASSES, MLP


@register_network
class Narrow(MLP):
    """784 -> 24 ReLU -> 10: the mlp's code at another width."""
    name = "narrow-mlp"
    hidden = 24
    defaults = dict(batch_size=16, optimizer="momentum", lr=0.1, beta=0.9, epochs=2)

    def init_params(self, seed):
        rng = np.random.default_rng(seed)
        return {"w1": (rng.standard_normal((IMAGE_PIXELS, self.hidden)) * 0.05).astype(np.float32),
                "b1": np.zeros(self.hidden, np.float32),
                "w2": (rng.standard_normal((self.hidden, CLASSES)) * 0.2).astype(np.float32),
                "b2": np.zeros(CLASSES, np.float32)}


class NarrowOnly(NumpyBackend):
    """A backend that declares one network."""
    name = "numpy-narrow"
    networks = ("narrow-mlp",)


registry.register("numpy-narrow", NarrowOnly)
