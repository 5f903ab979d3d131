"""The compile probe's warm-up of one cell (bench.worker.compile_probe: build a
trainer, one step, one prediction) on a Numba backend, then the compile-cache
misses and hits of every Numba dispatcher this process created, as "misses hits"
(argv: backend model)."""
import sys

from numba.core.registry import CPUDispatcher

from mnist_numba_bench.bench.measure import objects_of
from mnist_numba_bench.bench.worker import compile_probe
from mnist_numba_bench.models import NETWORKS

backend, model = sys.argv[1:3]
compile_probe({"backend": backend, "model": model, "threads": 2,
               "batch_size": NETWORKS[model].defaults["batch_size"]})
dispatchers = objects_of(CPUDispatcher)  # the probe froze the heap
print(sum(sum(d._cache_misses.values()) for d in dispatchers),
      sum(sum(d._cache_hits.values()) for d in dispatchers))
