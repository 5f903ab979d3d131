"""Kernel benchmarks: every version of every kernel family (kernels/*.py FAMILIES)
on its sweep shapes, each checked against the family's reference before it is
timed. Grouped by family, shape and dtype, so a table compares the versions:

    pytest bench/test_bench_kernels.py --benchmark-only --benchmark-group-by=group
"""
import os
import time

import numpy as np
import pytest

from bench.kernel_sweep import discover_families

ROUNDS = 10
MIN_ROUND_S = 0.01  # iterations per round so that one round lasts at least this


def _cases():
    cases = []
    for family in discover_families().values():
        for version in family.versions:
            for dtype in family.dtypes:
                for shape in family.sweep_shapes:
                    cases.append(pytest.param(family, version, tuple(shape), dtype,
                                              id=f"{family.name}-{version}-"
                                                 f"{'x'.join(map(str, shape))}-{dtype}"))
    return cases


@pytest.mark.parametrize("family, version, shape, dtype", _cases())
def test_kernel(benchmark, family, version, shape, dtype):
    ok, why = family.available()
    if not ok:
        pytest.skip(why)
    checks = [family.check(version, s, dtype)
              for s in [shape, *map(tuple, getattr(family, "check_shapes", ()))]]
    bad = next((c for c in checks if not c.ok), None)
    if bad:
        pytest.fail(f"{family.name}.{version} {dtype} is wrong on {bad.shape}, not timed: {bad.error}")
    fn = family.versions[version]
    inputs = family.make_inputs(shape, np.dtype(dtype), np.random.default_rng(0))

    def call():
        fn(*inputs)
        family.synchronize()  # GPU kernels: time the work, not the launch

    call()  # compile outside every round (pedantic warm-up rounds follow too)
    t0 = time.perf_counter()
    call()
    iterations = max(1, int(MIN_ROUND_S / max(time.perf_counter() - t0, 1e-9)))
    benchmark.group = f"kernel {family.name} {'x'.join(map(str, shape))} {dtype}"
    benchmark.extra_info.update({
        "kind": "kernel", "model": family.name, "backend": version, "shape": list(shape),
        "dtype": dtype, "threads": int(os.environ.get("NUMBA_NUM_THREADS") or os.cpu_count()),
        "flops": float(family.flops(shape)), "bytes": float(family.nbytes(shape)),
        "validation": {"ok": True, "max_error": max(c.max_error for c in checks),
                       "shapes": len(checks)}})
    benchmark.pedantic(call, rounds=ROUNDS, iterations=iterations, warmup_rounds=1)
