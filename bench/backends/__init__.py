"""The backend registry: a backend is a registered set of ops (or a whole-loop
trainer) that can train the suite's networks from the canonical parameters.

Backends are imported lazily by name, so a missing optional library (torch, a
CUDA driver) makes that backend *unavailable with a reason*, never an error for
the others. To add one, write a ``Backend`` subclass and name it in REGISTRY --
or, from outside the package, in a plugin module: MNIST_BENCH_PLUGINS holds
comma-separated module names, imported by the registry and the kernel sweep in
the parent and in every worker (they inherit the variable); a plugin calls
``register(name, backend_class)`` and may define kernel ``FAMILIES``.
"""
import importlib
import os


# ``Backend.networks`` of a backend that runs each network's own code through the
# ops interface (models/ops.py): it trains every network, a new one included.
EVERY_NETWORK = "every network written against the ops interface"


class Backend:
    name = "abstract"
    description = ""
    # The networks this backend trains (names), or EVERY_NETWORK; ``unsupported``
    # says why a network it could run in principle is left out.
    networks = ()
    unsupported = {}
    # The KEY=VALUE options it takes after a colon ("numba-parallel:matmul=v2_blocked").
    options = ()
    # The libraries whose thread pools it sizes itself (measure.configure_threads);
    # BLAS/OpenMP pools are sized by environment variables before import.
    thread_libraries = ()

    def available(self):
        """(True, "") or (False, why not) on this machine."""
        return True, ""

    def supports(self, network_name: str):
        """(True, "") or (False, why not): from ``networks`` and ``unsupported``."""
        if network_name in self.unsupported:
            return False, self.unsupported[network_name]
        from ...models import NETWORKS
        if network_name in (NETWORKS if self.networks == EVERY_NETWORK else self.networks):
            return True, ""
        return False, (f"{self.name} trains {', '.join(self.networks) or 'no network'}, "
                       f"not {network_name}")

    def make_trainer(self, network, init_params: dict, config: dict, seed: int = 0):
        raise NotImplementedError

    # Parity with numpy within bench/validate.TOLERANCE unless a reduced-precision
    # backend (TF32) declares its own, which its name must say.
    validation_tolerance = None
    # Environment variable -> subdirectory of the compile caches this backend fills
    # (Numba's, Inductor's, JAX's); empty for backends that compile nothing.
    compile_caches = {}

    # the real size of its own pool once configure_threads set it (None: it has none)
    threads = None

    def configure_threads(self, n: int):
        """Size the pools of ``thread_libraries`` to ``n`` threads (BLAS/OpenMP pools
        are fixed by environment variables before import, which the harness sets
        in each backend's own process)."""
        sizes = configure_threads(self.thread_libraries, n)
        self.threads = next(iter(sizes.values()), None)

    def compile_info(self) -> dict:
        """Compile/JIT figures gathered while warming up (seconds), if any."""
        return {}


def configure_threads(libraries, n: int):
    """The one place that sizes a library's own thread pool: Numba's and torch's to
    ``n``; JAX's before jax is imported (XLA sizes its pool from the CPU affinity
    and takes the intra-op limit from XLA_FLAGS). Libraries without a pool of
    their own (numpy, whose BLAS pool the worker's environment sized) are
    ignored. Returns the size each pool really has."""
    import sys
    n = int(n)
    sizes = {}
    for library in libraries:
        if library == "numba":
            import numba
            numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            sizes[library] = numba.get_num_threads()
        elif library == "torch":
            import torch
            torch.set_num_threads(n)
            sizes[library] = torch.get_num_threads()
        elif library == "jax" and "jax" not in sys.modules:
            cpus = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(0, set(cpus[:max(1, n)]))
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = (flags + f" --xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}"
                                       f" intra_op_parallelism_threads={n}").strip()
    return sizes


# name -> "module:class", in the order `mnist-bench list` shows them.
REGISTRY = {
    "numpy-loop": ".numpy_backend:NumpyLoopBackend",
    "numpy": ".numpy_backend:NumpyBackend",
    "numba": ".numba_backend:NumbaBackend",
    "numba-parallel": ".numba_backend:NumbaParallelBackend",
    "numba-fused": ".numba_fused:NumbaFusedBackend",
    "torch": ".torch_backend:TorchBackend",
    "torch-ops": ".torch_backend:TorchOpsBackend",
    "torch-compile": ".torch_backend:TorchCompileBackend",
    "jax": ".jax_backend:JaxBackend",
    "jax-scan": ".jax_backend:JaxScanBackend",
    "torch-cuda": ".torch_backend:TorchCudaBackend",
    "torch-cuda-graphs": ".torch_backend:TorchCudaGraphsBackend",
    "torch-cuda-tf32": ".torch_backend:TorchCudaTF32Backend",
    "torch-ops-cuda": ".torch_backend:TorchOpsCudaBackend",
    "numba-cuda": ".numba_cuda:NumbaCudaBackend",
    "numba-cuda-epoch": ".numba_cuda:NumbaCudaEpochBackend",
}


class UnavailableBackend(Backend):
    """Stands in for a backend whose module could not be imported here."""

    def __init__(self, name, reason):
        self.name, self.reason = name, reason
        self.description = "(could not be loaded)"

    def available(self):
        return False, self.reason


_cache = {}
_plugins = None


def plugin_modules() -> list:
    """The modules named in MNIST_BENCH_PLUGINS, imported once."""
    global _plugins
    if _plugins is None:
        _plugins = []
        for name in filter(None, (s.strip() for s in os.environ.get("MNIST_BENCH_PLUGINS", "").split(","))):
            try:
                _plugins.append(importlib.import_module(name))
            except ImportError as e:
                raise ValueError(f"MNIST_BENCH_PLUGINS: cannot import {name!r}: {e}") from None
    return _plugins


def register(name: str, backend_class):
    """Add a backend from a plugin module (or a test)."""
    REGISTRY[name] = backend_class
    _cache.pop(name, None)


def parse_name(name: str):
    """"numba-parallel:matmul=v2_blocked,conv=direct" -> ("numba-parallel", {options})."""
    base, _, rest = name.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"backend {name!r}: options go as KEY=VALUE after a colon")
        options[key] = value
    return base, options


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (with options after a colon, where the backend
    takes them); unknown names raise ValueError listing the known ones."""
    plugin_modules()
    base, options = parse_name(name)
    if base not in REGISTRY:
        raise ValueError(f"unknown backend {base!r}; choose from {', '.join(REGISTRY)}")
    if name not in _cache:
        entry = REGISTRY[base]
        try:
            if isinstance(entry, str):
                module, cls = entry.split(":")
                entry = getattr(importlib.import_module(module, __package__), cls)
        except ImportError as e:
            _cache[name] = UnavailableBackend(name, f"cannot import {e.name or e}: {e}")
            return _cache[name]
        unknown = [k for k in options if k not in getattr(entry, "options", ())]
        if unknown:
            takes = ", ".join(getattr(entry, "options", ())) or "none"
            raise ValueError(f"backend {base!r} takes no option {unknown[0]!r} (its options: {takes})")
        backend = entry(**options)
        if options:
            backend.name = name
        _cache[name] = backend
    return _cache[name]


def backend_names():
    plugin_modules()
    return list(REGISTRY)
