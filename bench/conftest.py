"""pytest-benchmark suites of bench/ (`pytest bench/ --benchmark-only`): shared
options, the measurement core's settings, and the machine/version record that
`mnist-bench import` reads back.

The suites time through the measurement path of `mnist-bench run` and `mnist-bench
kernels` (bench/suites.py): each case in a worker process of its library at
--bench-threads, validated, calibrated, sampled in rounds (--benchmark-min-rounds
of them, at least 3), checked again after timing, its samples then handed to
pytest-benchmark.
"""
import os

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-samples", type=int, default=2048,
                     help="training images per timed epoch in test_bench_epochs (default 2048)")
    parser.addoption("--bench-batch-sizes", default="own,32,256",
                     help="comma-separated batch sizes of test_bench_epochs; own = each model's "
                          "own, 0 = full batch (default own,32,256)")
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
    """The case's thread count (--bench-threads): its worker process sets every
    pool to it and records the pools' real sizes (a mismatch fails the case)."""
    return request.config.getoption("--bench-threads")
