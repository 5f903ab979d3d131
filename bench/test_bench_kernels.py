"""Kernel benchmarks: every version of every CPU kernel family (kernels/*.py
FAMILIES) on its sweep shapes, timed by the measurement path of `mnist-bench
kernels` (bench/suites.py: a worker process per library, every output checked
on the family's odd shapes and the timed one before timing, and once more
through the timed buffers after it) and reported to pytest-benchmark. Grouped
by family, shape and dtype, so a table compares the versions:

    pytest bench/test_bench_kernels.py --benchmark-only --benchmark-group-by=group
"""
import pytest

from mnist_numba_bench.bench import suites
from mnist_numba_bench.bench.kernel_sweep import discover_families

FAMILIES = discover_families()


PARAMS = suites.PARAMS


def _cases():
    cases = []
    for family in FAMILIES.values():
        if family.device != "cpu":
            continue
        for version in family.versions:
            for dtype in family.dtypes:
                for shape in family.sweep_shapes:
                    values = suites.kernel_params(family, version, shape, dtype)
                    cases.append(pytest.param(*(values[p] for p in PARAMS),
                                              id=f"{family.name}-{version}-{values['shape']}-{dtype}"))
    return cases


@pytest.mark.parametrize(",".join(PARAMS), _cases())
def test_kernel(benchmark, request, threads, model, backend, batch_size, family, version, shape,
                dtype):
    fam = FAMILIES[family]
    dims = tuple(int(d) for d in shape.split("x"))
    if fam.skip_timing(version, dims):
        pytest.skip("minutes per call at this size (the family's skip_timing)")
    benchmark.group = f"kernel {family} {shape} {dtype}"
    cell = suites.time_kernel(fam, version, dims, dtype, threads, suites.timing_of(request.config))
    suites.report(benchmark, cell)
