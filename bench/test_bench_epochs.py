"""Epoch benchmarks: one training epoch of each model on each backend, validated
against the NumPy reference (a few steps from the same init and batch order)
before it is timed. Grouped by model and batch size, so a table compares the
backends:

    pytest bench/test_bench_epochs.py --benchmark-only --benchmark-group-by=group

The data are MNIST-shaped synthetic images (bench.validate.validation_data):
the time of an epoch does not depend on the pixel values.
"""
import pytest

from mnist_numba_bench.bench.backends import backend_names, get_backend
from mnist_numba_bench.bench.validate import validate, validation_data
from mnist_numba_bench.models import NETWORKS, config_for, get_network
from mnist_numba_bench.models.train import epoch_batches

ROUNDS = 5


def _cases():
    cases = []
    for model, cls in NETWORKS.items():
        # cnn epochs take tens of seconds per backend on a laptop-class CPU.
        marks = [pytest.mark.slow] if model == "cnn" else []
        batch_size = cls.defaults["batch_size"]
        for backend in backend_names():
            cases.append(pytest.param(model, backend, batch_size, marks=marks,
                                      id=f"{model}-{backend}-bs{batch_size}"))
    return cases


@pytest.mark.parametrize("model, backend_name, batch_size", _cases())
def test_epoch(benchmark, request, threads, model, backend_name, batch_size):
    n_threads, verified = threads
    backend = get_backend(backend_name)
    for ok, why in (backend.available(), backend.supports(model)):
        if not ok:
            pytest.skip(why)
    backend.configure_threads(n_threads)
    check = validate(backend_name, model, batch_size=batch_size or None)
    if not check.ok:
        pytest.fail(f"{backend_name} trains {model} wrongly, not timed: {check.error}")
    network = get_network(model)
    config = config_for(network)
    n = request.config.getoption("--bench-samples")
    x, y, _ = validation_data(network, n, seed=1)
    trainer = backend.make_trainer(network, network.init_params(0), config, 0)
    trainer.set_data(x, y)
    batches = epoch_batches(n, batch_size, 0, 0)

    def epoch():
        trainer.train_epoch(batches)
        trainer.synchronize()

    epoch()  # JIT compilation, first-touch pages: outside every round
    pools = verified()
    benchmark.group = f"epoch {model} bs={batch_size}"
    benchmark.extra_info.update({
        "kind": "epoch", "model": model, "backend": backend_name, "batch_size": batch_size,
        "threads": n_threads, "env": pools,
        "dataset": "synthetic", "synthetic": True, "train_samples": n, "samples": n,
        "flops": float(network.flops_per_sample() * n),
        "validation": {"ok": True, "max_error": check.max_error, "steps": check.steps}})
    benchmark.pedantic(epoch, rounds=ROUNDS, iterations=1, warmup_rounds=1)
