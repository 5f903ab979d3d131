"""One cell's warm-up (build a trainer, one step, one prediction) on a Numba
backend, then the compile-cache misses and hits of every Numba dispatcher this
process created, as "misses hits" (argv: backend model)."""
import gc
import sys

from numba.core.registry import CPUDispatcher

from mnist_numba_bench.bench.backends import get_backend
from mnist_numba_bench.bench.validate import run_steps, validation_data
from mnist_numba_bench.models import config_for, get_network

backend = get_backend(sys.argv[1])
backend.configure_threads(2)
network = get_network(sys.argv[2])
config = config_for(network)
x, y, _ = validation_data(network, max(config["batch_size"], 8))
run_steps(backend, network, config, x, y, 1).predict(x[:4])
dispatchers = [o for o in gc.get_objects() if isinstance(o, CPUDispatcher)]
print(sum(sum(d._cache_misses.values()) for d in dispatchers),
      sum(sum(d._cache_hits.values()) for d in dispatchers))
