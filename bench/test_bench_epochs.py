"""Epoch benchmarks: one training epoch of each model on each backend, timed by
the measurement path of `mnist-bench run` (bench/suites.py: a worker process per
backend, validation against the NumPy reference, warm-up, samples of at least
0.1 s, the timed trainer checked again afterwards) and reported to
pytest-benchmark. Grouped by model and batch size, so a table compares the
backends:

    pytest bench/test_bench_epochs.py --benchmark-only --benchmark-group-by=group

The data are MNIST-shaped synthetic images (bench.validate.validation_data):
the time of an epoch does not depend on the pixel values.
"""
import pytest

from mnist_numba_bench.bench import suites
from mnist_numba_bench.bench.backends import backend_names, get_backend
from mnist_numba_bench.models import NETWORKS


PARAMS = suites.PARAMS


def pytest_generate_tests(metafunc):
    """Every model x backend x batch size of --bench-batch-sizes ("own": the
    model's own), under the parameter names every suite shares (suites.PARAMS),
    so `pytest-benchmark compare --group-by=param:NAME` works on any mix."""
    if metafunc.function.__name__ != "test_epoch":
        return
    wanted = metafunc.config.getoption("--bench-batch-sizes").split(",")
    cases = []
    for model, cls in NETWORKS.items():
        # cnn epochs take tens of seconds per backend on a laptop-class CPU.
        marks = [pytest.mark.slow] if model == "cnn" else []
        sizes = []
        for item in wanted:
            size = cls.defaults["batch_size"] if item.strip() == "own" else int(item)
            if size not in sizes:
                sizes.append(size)
        for batch_size in sizes:
            for backend in backend_names():
                values = suites.epoch_params(model, backend, batch_size)
                cases.append(pytest.param(*(values[p] for p in PARAMS), marks=marks,
                                          id=f"{model}-{backend}-bs{batch_size or 'full'}"))
    metafunc.parametrize(",".join(PARAMS), cases)


def test_epoch(benchmark, request, threads, model, backend, batch_size, family, version, shape,
               dtype):
    b = get_backend(backend)
    for ok, why in (b.available(), b.supports(model)):
        if not ok:
            pytest.skip(why)
    benchmark.group = f"epoch {model} bs={batch_size or 'full'}"
    cell = suites.time_epoch(model, backend, batch_size, threads,
                             request.config.getoption("--bench-samples"),
                             suites.timing_of(request.config))
    suites.report(benchmark, cell)
