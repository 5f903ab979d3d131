"""The pytest-benchmark suites' one way to time a cell: the measurement path of
`mnist-bench run` and `mnist-bench kernels` (bench.supervise.Supervisor: a
worker process per library at the case's thread count, validation, warm-up and
calibration in it, interleaved rounds, descheduled samples retaken, the timed
work checked again afterwards), its samples then handed to pytest-benchmark.

pytest-benchmark takes timings only from a loop it runs itself; ``report`` hands
it the supervisor's samples through the statistics object its fixture keeps
(``_make_stats``, unchanged since pytest-benchmark 3): the figures it prints,
compares and saves are then the ones `mnist-bench run` would store.
"""
import os
import tempfile

import numpy as np


def rounds_of(config) -> int:
    """--benchmark-min-rounds, at least 3 (a median's interval needs them)."""
    return max(3, int(getattr(config.option, "benchmark_min_rounds", 5) or 5))


def run_cell(cell, rounds, worker_key, finalize) -> dict:
    """One cell through the supervisor; the cell as it would be stored."""
    from .supervise import Progress, Supervisor, thread_env
    stored = {}
    supervisor = Supervisor(worker_key, lambda key: thread_env(cell["threads"]),
                            lambda c: stored.__setitem__(c["id"], dict(c)), finalize, rounds)
    try:
        supervisor.run([[dict(cell, id=0)]], Progress(1, rounds))
    finally:
        supervisor.close()
    return stored[0]


def epoch_cell(model, backend, batch_size, threads, images, tmpdir) -> dict:
    """An epoch cell on MNIST-shaped synthetic images (bench.validate.validation_data):
    an epoch's time does not depend on the pixel values."""
    from ..models import get_network
    from .validate import validation_data
    network = get_network(model)
    path = os.path.join(tmpdir, f"synthetic-{images}.npz")
    if not os.path.exists(path):
        x, _, labels = validation_data(network, images + 1000, seed=1)
        x = x.reshape(len(x), -1)
        np.savez(path, train_x=x[:images], train_y=labels[:images], test_x=x[images:],
                 test_y=labels[images:])
    return {"kind": "epoch", "model": model, "backend": backend, "batch_size": batch_size,
            "threads": threads, "dataset": "synthetic", "synthetic": True, "data_file": path,
            "seed": 0, "epochs": None, "overrides": {}}


def time_epoch(model, backend, batch_size, threads, images, rounds) -> dict:
    from .epochs import finalize
    with tempfile.TemporaryDirectory(prefix="mnist-bench-suite-") as tmpdir:
        cell = epoch_cell(model, backend, batch_size, threads, images, tmpdir)
        return run_cell(cell, rounds, lambda c: (c["backend"], c["threads"]), finalize)


def time_kernel(family, version, shape, dtype, threads, rounds) -> dict:
    from .kernel_sweep import finalize, worker_key
    cell = {"kind": "kernel", "model": family.name, "backend": version,
            "library": family.versions[version].library, "device": family.device,
            "shape": list(shape), "dtype": dtype, "threads": threads, "group": 0}
    return run_cell(cell, rounds, worker_key, finalize)


EXTRA = ("kind", "model", "backend", "batch_size", "threads", "dataset", "synthetic", "shape",
         "dtype", "train_samples", "epochs_per_sample", "loops", "flops", "bytes", "env",
         "validation", "verification", "noise", "retaken", "ci_low_s", "ci_high_s", "ci_coverage",
         "samples_s")


def report(benchmark, cell):
    """The cell's samples as the benchmark's rounds, or the case failed with the
    cell's error (a cell that is not ok has no time)."""
    import pytest
    if cell["status"] == "unavailable":
        pytest.skip(cell.get("error") or "unavailable")
    if cell["status"] != "ok":
        pytest.fail(f"{cell['backend']} {cell['status']}, not timed: {cell.get('error')}")
    stats = benchmark._make_stats(1)
    for seconds in cell["samples_s"]:
        stats.update(seconds)
    benchmark._mode = "mnist-bench measurement core"
    benchmark.extra_info.update({k: cell[k] for k in EXTRA if k in cell})
    if cell["kind"] == "epoch":
        benchmark.extra_info["flops"] = float(cell["flops_per_sample"] * cell["train_samples"])
        benchmark.extra_info["samples"] = cell["train_samples"]
