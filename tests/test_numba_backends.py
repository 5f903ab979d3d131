"""The numba backends beyond parity (tests/test_parity.py): the fused epochs in their
corners, the ops interface complete, threads recorded, compiled code cached."""
import os
import subprocess
import sys

import pytest

from mnist_numba_bench.bench.backends import get_backend
from mnist_numba_bench.bench.validate import validate
from mnist_numba_bench.models.ops import Ops

# Parity with numpy on every network: tests/test_parity.py.


def test_fused_mlp_with_plain_sgd_matches_numpy():
    v = validate("numba-fused", "mlp", steps=3, batch_size=16, overrides={"optimizer": "sgd", "lr": 0.1})
    assert v.ok, v.error


def test_fused_refuses_cnn_with_reason():
    ok, why = get_backend("numba-fused").supports("cnn")
    assert not ok and "cnn" in why


def test_numba_ops_implements_every_op():
    import inspect
    from mnist_numba_bench.bench.backends.numba_backend import NumbaOps
    abstract = [name for name, f in vars(Ops).items()
                if inspect.isfunction(f) and "NotImplementedError" in inspect.getsource(f)]
    missing = [n for n in abstract if getattr(NumbaOps, n) is getattr(Ops, n)]
    assert len(abstract) > 20 and not missing, missing


def test_parallel_backend_records_threads():
    import numba
    backend = get_backend("numba-parallel")
    backend.configure_threads(1)
    assert backend.threads == 1 == numba.get_num_threads()
    backend.configure_threads(numba.config.NUMBA_NUM_THREADS)
    assert backend.threads == numba.config.NUMBA_NUM_THREADS


CACHE_HIT_PROBE = os.path.join(os.path.dirname(__file__), "helpers", "cache_hit_probe.py")


@pytest.mark.parametrize("backend", ["numba", "numba-parallel", "numba-fused"])
def test_a_second_process_compiles_nothing(backend):
    # the first process fills the compile cache (or finds it filled); the second
    # must load every function it runs from it
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    runs = [subprocess.run([sys.executable, CACHE_HIT_PROBE, backend, "mlp"], env=env,
                           capture_output=True, text=True, timeout=600) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    misses, hits = map(int, runs[1].stdout.split()[-2:])
    assert misses == 0 and hits > 0
