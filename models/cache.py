"""Where the suite keeps what it can rebuild: parsed datasets, compiled kernels,
compile-time figures and tuned kernel configurations. The lowest layer owns the
path because every layer keeps something there.

``MNIST_BENCH_CACHE`` overrides it; otherwise ``$XDG_CACHE_HOME/mnist-numba-bench``
(``~/.cache/mnist-numba-bench``).
"""
import os


def cache_root() -> str:
    return os.environ.get("MNIST_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mnist-numba-bench")
