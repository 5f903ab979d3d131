"""pytest-benchmark suites of bench/ (`pytest bench/ --benchmark-only`): shared
options, the measurement core's settings, and the machine/version record that
`mnist-bench import` reads back.

The suites time with the core's rules: perf_counter, the garbage collector off
while timing, iterations per round from ``CpuTimer.calibrate``; every case runs
under ``threadpool_limits`` with Numba's and torch's pools set to the same count,
and the counts the pools really have are recorded (a mismatch fails the case).
Subnormals are flushed to zero as in the harness's workers (bench/fpenv.py);
threads started before this file is imported keep IEEE arithmetic.
"""
import os

import pytest

from mnist_numba_bench.bench.fpenv import flush_subnormals

flush_subnormals()


def pytest_addoption(parser):
    parser.addoption("--bench-samples", type=int, default=2048,
                     help="training images per timed epoch in test_bench_epochs (default 2048)")
    parser.addoption("--bench-threads", type=int, default=os.cpu_count(),
                     help="threads of every pool (default: all cores)")


def pytest_configure(config):
    if hasattr(config.option, "benchmark_disable_gc"):
        config.option.benchmark_disable_gc = True


def pytest_benchmark_update_machine_info(config, machine_info):
    from mnist_numba_bench.bench.machine import machine_info as ours, versions
    machine_info["mnist_bench"] = {"machine": ours(), "versions": versions()}


@pytest.fixture
def threads(request):
    """The case's thread count, applied to every pool of this process, and a
    function returning the pools' real counts (failing the case on a mismatch)."""
    from threadpoolctl import threadpool_limits
    from mnist_numba_bench.bench.measure import thread_mismatches, thread_pools
    n = request.config.getoption("--bench-threads")
    import numba
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass
    with threadpool_limits(limits=n):
        def verified():
            pools = thread_pools()
            wrong = thread_mismatches(pools, n)
            if wrong:
                pytest.fail(f"thread pools differ from {n} threads: {'; '.join(wrong)}")
            return pools
        yield n, verified
