"""The gate cannot be fooled: every planted wrong kernel and every planted wrong
backend (tests/helpers/bench_test_plugins.py) is refused -- by the kernel
family's check, by backend validation, and by the sweeps, which store each one
invalid with its error and never time it."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
import bench_test_plugins as plugins  # noqa: E402

from mnist_numba_bench.bench.validate import validate  # noqa: E402

from test_harness import run_ok  # noqa: E402


def test_there_are_at_least_ten_planted_faults_of_each_kind():
    assert len(plugins.MUTANTS) >= 10 and len(plugins.NETWORK_MUTANTS) >= 10


@pytest.mark.parametrize("family", plugins.MUTANTS, ids=lambda f: f.name)
def test_every_wrong_kernel_is_refused_by_its_family(family):
    (version,) = family.versions
    checks = family.validate(shapes=family.check_shapes + family.sweep_shapes)
    assert not all(c.ok for c in checks), f"{family.name} passed every check"


@pytest.mark.parametrize("name", plugins.NETWORK_MUTANTS)
def test_every_wrong_backend_fails_validation(name):
    model, _ = plugins.NETWORK_MUTANTS[name]
    result = validate(f"mutant-{name.replace('_', '-')}", model, batch_size=8)
    assert not result.ok, f"{name} validated on {model} (error {result.max_error})"
    assert result.error


def test_the_kernel_sweep_stores_every_wrong_kernel_invalid_and_times_none(tmp_path):
    names = ",".join(f.name for f in plugins.MUTANTS)
    _, cells = run_ok("kernels", "--families", names, "--rounds", "2", "--threads", "1",
                      tmp_path=tmp_path)
    assert len(cells) == len(plugins.MUTANTS)
    assert set(cells["status"]) == {"invalid"}
    assert cells["error"].str.startswith("wrong on shape").all()
    assert cells["median_s"].isna().all()


def test_the_epoch_sweep_stores_every_wrong_backend_invalid_and_times_none(tmp_path):
    backends = ",".join(f"mutant-{n.replace('_', '-')}" for n in plugins.NETWORK_MUTANTS)
    _, cells = run_ok("run", "--models", "nielsen,mlp,cnn", "--backends", backends,
                      "--batch-sizes", "8", "--dataset", "synthetic", "--train-limit", "64",
                      "--rounds", "2", "--threads", "1", tmp_path=tmp_path, timeout=600)
    tried = cells[cells["status"] != "unavailable"]
    assert len(tried) == len(plugins.NETWORK_MUTANTS)  # each mutant on its own model
    assert set(tried["status"]) == {"invalid"}, tried[["backend", "status", "error"]]
    assert tried["median_s"].isna().all() and tried["error"].str.len().gt(0).all()
