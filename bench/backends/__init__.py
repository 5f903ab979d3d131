"""The backend registry: a backend is a registered set of ops (or a whole-loop
trainer) that can train the suite's networks from the canonical parameters.

Backends are imported lazily by name, so a missing optional library (torch, a
CUDA driver) makes that backend *unavailable with a reason*, never an error for
the others. To add one, write a ``Backend`` subclass and name it in REGISTRY.
"""
import importlib


class Backend:
    name = "abstract"
    description = ""
    # Libraries whose thread pools this backend uses (recorded with each result).
    uses = ("numpy",)

    def available(self):
        """(True, "") or (False, why not) on this machine."""
        return True, ""

    def supports(self, network_name: str):
        """(True, "") or (False, why this backend does not train that network)."""
        return True, ""

    def make_trainer(self, network, init_params: dict, config: dict, seed: int = 0):
        raise NotImplementedError

    def configure_threads(self, n: int):
        """Set this backend's own thread pool (Numba, torch) to ``n`` threads.
        BLAS/OpenMP pools are fixed by environment variables before import, which
        the harness sets in each backend's own process."""

    def compile_info(self) -> dict:
        """Compile/JIT figures gathered while warming up (seconds), if any."""
        return {}


# name -> "module:class", in the order `mnist-bench list` shows them.
REGISTRY = {
    "numpy-loop": "bench.backends.numpy_backend:NumpyLoopBackend",
    "numpy": "bench.backends.numpy_backend:NumpyBackend",
    "numba": "bench.backends.numba_backend:NumbaBackend",
    "numba-parallel": "bench.backends.numba_backend:NumbaParallelBackend",
    "numba-fused": "bench.backends.numba_fused:NumbaFusedBackend",
    "torch": "bench.backends.torch_backend:TorchBackend",
    "torch-ops": "bench.backends.torch_backend:TorchOpsBackend",
    "torch-compile": "bench.backends.torch_backend:TorchCompileBackend",
    "torch-cuda": "bench.backends.torch_backend:TorchCudaBackend",
    "torch-ops-cuda": "bench.backends.torch_backend:TorchOpsCudaBackend",
    "numba-cuda": "bench.backends.numba_cuda:NumbaCudaBackend",
    "numba-cuda-epoch": "bench.backends.numba_cuda:NumbaCudaEpochBackend",
}


class UnavailableBackend(Backend):
    """Stands in for a backend whose module could not be imported here."""

    def __init__(self, name, reason):
        self.name, self.reason = name, reason
        self.description = "(could not be loaded)"

    def available(self):
        return False, self.reason


_cache = {}


def get_backend(name: str) -> Backend:
    """The backend called ``name``; unknown names raise ValueError listing the known ones."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(REGISTRY)}")
    if name not in _cache:
        module, cls = REGISTRY[name].split(":")
        try:
            _cache[name] = getattr(importlib.import_module(module), cls)()
        except ImportError as e:
            _cache[name] = UnavailableBackend(name, f"cannot import {e.name or e}: {e}")
    return _cache[name]


def backend_names():
    return list(REGISTRY)
