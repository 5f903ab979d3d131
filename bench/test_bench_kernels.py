"""Kernel benchmarks: every version of every CPU kernel family (kernels/*.py
FAMILIES) on its sweep shapes, each checked against the family's reference --
every output, on the family's odd check shapes and the timed one -- before it
is timed. Grouped by family, shape and dtype, so a table compares the versions:

    pytest bench/test_bench_kernels.py --benchmark-only --benchmark-group-by=group
"""
import numpy as np
import pytest

from mnist_numba_bench.bench.kernel_sweep import discover_families, library_missing
from mnist_numba_bench.bench.measure import CpuTimer

ROUNDS = 10


def _cases():
    cases = []
    for family in discover_families().values():
        if family.device != "cpu":
            continue
        for version in family.versions:
            for dtype in family.dtypes:
                for shape in family.sweep_shapes:
                    cases.append(pytest.param(family, version, tuple(shape), dtype,
                                              id=f"{family.name}-{version}-"
                                                 f"{'x'.join(map(str, shape))}-{dtype}"))
    return cases


@pytest.mark.parametrize("family, version, shape, dtype", _cases())
def test_kernel(benchmark, threads, family, version, shape, dtype):
    n, verified = threads
    missing = library_missing(family.versions[version].library)
    if missing:
        pytest.skip(missing)
    if family.skip_timing(version, shape):
        pytest.skip("minutes per call at this size (the family's skip_timing)")
    checks = [family.check(version, s, dtype) for s in [shape, *family.check_shapes]]
    bad = next((c for c in checks if not c.ok), None)
    if bad:
        pytest.fail(f"{family.name}.{version} {dtype} is wrong on {bad.shape}, not timed: {bad.error}")
    fn = family.versions[version].fn
    inputs = family.inputs(shape, dtype)

    def call():
        fn(*inputs)

    loops = CpuTimer().calibrate(call)
    pools = verified()
    itemsize = np.dtype(dtype).itemsize
    benchmark.group = f"kernel {family.name} {'x'.join(map(str, shape))} {dtype}"
    benchmark.extra_info.update({
        "kind": "kernel", "model": family.name, "backend": version, "shape": list(shape),
        "dtype": dtype, "threads": n, "env": pools, "loops": loops,
        "flops": float(family.flops(shape)), "bytes": float(family.nbytes(shape, itemsize)),
        "validation": {"ok": True, "max_error": max(c.max_error for c in checks),
                       "shapes": len(checks)}})
    benchmark.pedantic(call, rounds=ROUNDS, iterations=loops, warmup_rounds=1)
