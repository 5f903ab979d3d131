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


# The parameters of every case of every suite, under one name each, with None
# where a case has none: `pytest-benchmark compare --group-by=param:backend` (or
# any other) then works on a file that mixes the suites.
PARAMS = ("model", "backend", "batch_size", "family", "version", "shape", "dtype")


def epoch_params(model, backend, batch_size) -> dict:
    """An epoch case's parameters (batch_size 0: the full batch)."""
    return dict(dict.fromkeys(PARAMS), model=model, backend=backend, batch_size=batch_size,
                dtype="float32")


def kernel_params(family, version, shape, dtype) -> dict:
    """A kernel case's parameters: ``backend`` is the library the version runs on,
    ``shape`` its dimensions as text ("1024x1024x1024")."""
    return dict(dict.fromkeys(PARAMS), backend=family.versions[version].library,
                family=family.name, version=version, shape="x".join(map(str, shape)), dtype=dtype)


def timing_of(config) -> dict:
    """pytest-benchmark's own options, as the supervisor's rounds: at least
    --benchmark-min-rounds of them (and at least 3: a median's interval needs
    them), more until the timed rounds took --benchmark-max-time seconds (each
    round is one sample of at least 0.1 s, so the default 1 s gives 5-7); with
    --benchmark-warmup, warm-up rounds before them (one per
    --benchmark-warmup-iterations, at most as many as the timed rounds), set
    aside. The cell was already validated and warmed up by an untimed epoch."""
    option = config.option
    rounds = max(3, int(getattr(option, "benchmark_min_rounds", 5) or 5))
    max_time = float(getattr(option, "benchmark_max_time", 0) or 0) or None
    warmup = bool(getattr(option, "benchmark_warmup", False))
    iterations = int(getattr(option, "benchmark_warmup_iterations", 1) or 1)
    return {"rounds": rounds, "max_time": max_time,
            "warmup_rounds": max(1, min(iterations, rounds)) if warmup else 0}


def run_cell(cell, timing, worker_key, finalize) -> dict:
    """One cell through the supervisor (``timing``: timing_of's rounds); the cell
    as it would be stored."""
    from .supervise import Progress, Supervisor, thread_env
    stored = {}
    supervisor = Supervisor(worker_key, lambda key: thread_env(cell["threads"]),
                            lambda c: stored.__setitem__(c["id"], dict(c)), finalize,
                            timing["rounds"], max_time=timing.get("max_time"),
                            warmup_rounds=timing.get("warmup_rounds", 0))
    try:
        supervisor.run([[dict(cell, id=0)]], Progress(1, timing["rounds"]))
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


def time_epoch(model, backend, batch_size, threads, images, timing) -> dict:
    from .epochs import finalize
    with tempfile.TemporaryDirectory(prefix="mnist-bench-suite-") as tmpdir:
        cell = epoch_cell(model, backend, batch_size, threads, images, tmpdir)
        return run_cell(cell, timing, lambda c: (c["backend"], c["threads"]), finalize)


def time_kernel(family, version, shape, dtype, threads, timing) -> dict:
    from .kernel_sweep import finalize, worker_key
    cell = {"kind": "kernel", "model": family.name, "backend": version,
            "library": family.versions[version].library, "device": family.device,
            "shape": list(shape), "dtype": dtype, "threads": threads, "group": 0}
    return run_cell(cell, timing, worker_key, finalize)


EXTRA = ("kind", "model", "backend", "batch_size", "threads", "dataset", "synthetic", "shape",
         "dtype", "train_samples", "epochs_per_sample", "loops", "flops", "bytes", "env",
         "validation", "verification", "noise", "retaken", "ci_low_s", "ci_high_s", "ci_coverage",
         "samples_s", "warmup_samples_s", "rounds")


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
