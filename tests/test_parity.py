"""Every registered backend against the NumPy reference on every network it
declares (Backend.networks): the same weights after a few steps from the same
init and batch order (bench.validate). The cases come from the registry and
NETWORKS, so a new backend or network is covered without editing this file;
a plugin that adds one of each is checked end to end as well."""
import os
import sys

import pytest

from mnist_numba_bench.bench.backends import backend_names, get_backend
from mnist_numba_bench.bench.validate import validate
from mnist_numba_bench.models import NETWORKS

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
sys.path.insert(0, HELPERS)
from test_harness import run_ok  # noqa: E402

# Per network: (batch size, overrides, steps). The cnn is compared with SGD and with
# Adam at eps 1e-4: at eps 1e-8 a gradient element that cancels to ~1e-8 moves by
# an amount set by float32 rounding alone, whatever the summation order; 3 steps,
# because some max-pool windows hold two values a few ulp apart.
CASES = {"linear": [(None, None, 4)], "nielsen": [(10, None, 4)], "mlp": [(32, None, 4)],
         "cnn": [(8, {"optimizer": "sgd", "lr": 0.05}, 3), (8, {"eps": 1e-4}, 3)]}
DEFAULT_CASE = [(16, None, 3)]  # a network added later


def cases():
    out = []
    for backend in backend_names():
        b = get_backend(backend)
        if backend.startswith(("mutant-", "late-")):  # planted faults: tests/test_mutants.py
            continue
        for model in NETWORKS:
            if not b.supports(model)[0]:
                continue
            for i, (bs, overrides, steps) in enumerate(CASES.get(model, DEFAULT_CASE)):
                out.append(pytest.param(backend, model, bs, overrides, steps,
                                        id=f"{backend}-{model}" + (f"-{i}" if i else "")))
    return out


@pytest.mark.parametrize("backend,model,batch_size,overrides,steps", cases())
def test_backend_matches_numpy(backend, model, batch_size, overrides, steps):
    ok, why = get_backend(backend).available()
    if not ok:
        pytest.skip(why)
    v = validate(backend, model, steps=steps, batch_size=batch_size, overrides=overrides)
    assert v.ok, v.error


def test_every_backend_declares_its_networks_and_refuses_the_rest():
    for backend in backend_names():
        b = get_backend(backend)
        assert b.networks, f"{backend} declares no network"
        ok, why = b.supports("no-such-network")
        assert not ok and why


def test_unknown_options_are_refused():
    with pytest.raises(ValueError, match="takes no option 'matmul'"):
        get_backend("numba-fused:matmul=v2_blocked")
    with pytest.raises(ValueError, match="takes no option 'tile'"):
        get_backend("numba-parallel:tile=3")


def test_a_network_and_a_backend_from_a_plugin_are_validated_timed_and_verified(tmp_path):
    env = {"MNIST_BENCH_PLUGINS": "bench_test_plugins,new_network_plugin"}
    _, cells = run_ok("run", "--models", "narrow-mlp,mlp", "--backends", "numpy,numba,numpy-narrow",
                      "--dataset", "synthetic", "--train-limit", "200", "--rounds", "2",
                      "--processes", "1", "--threads", "1", tmp_path=tmp_path, env=env)
    by = {(c["backend"], c["model"]): c for c in cells.to_dict("records")}
    for key in (("numpy", "narrow-mlp"), ("numba", "narrow-mlp"), ("numpy-narrow", "narrow-mlp")):
        assert by[key]["status"] == "ok", by[key].get("error")
        assert by[key]["verification.status"] == "ok" and by[key]["validation.ok"]
    assert by[("numpy-narrow", "mlp")]["status"] == "unavailable"
    assert "trains narrow-mlp, not mlp" in by[("numpy-narrow", "mlp")]["error"]
