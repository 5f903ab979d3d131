"""The timed work is the checked work: after its timed rounds the timed trainer
itself is checked against the reference (bench/verify.py), and a kernel version
is checked once more through the buffers its timed calls used. Every planted
fault below passes validation (a fresh trainer, three steps of epoch 0) and does
less or other work when timed; each must be stored invalid, its samples kept
and no time derived from them, while honest backends pass."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers"))
import bench_test_plugins as plugins  # noqa: E402

from mnist_numba_bench.bench.backends import get_backend  # noqa: E402
from mnist_numba_bench.bench.validate import validate, validation_data  # noqa: E402
from mnist_numba_bench.bench.verify import REPLAY_DECISIVE, verify  # noqa: E402
from mnist_numba_bench.models import config_for, get_network  # noqa: E402
from mnist_numba_bench.models.train import epoch_batches  # noqa: E402

from test_harness import run_ok  # noqa: E402

FAULTS = list(plugins.TIMED_WORK_FAULTS)


def trained(backend, model, batch_size, epochs, n=300, **overrides):
    """A trainer of ``backend`` after ``epochs`` (indices 0..epochs-1) on n images,
    as the epoch worker leaves it, and what verify() needs."""
    net = get_network(model)
    config = dict(config_for(net), batch_size=batch_size, **overrides)
    x, y, _ = validation_data(net, n, seed=3)
    _, _, held_out_labels = validation_data(net, 200, seed=4)
    held_out_x = validation_data(net, 200, seed=4)[0]
    b = get_backend(backend)
    trainer = b.make_trainer(net, net.init_params(0), config, 0)
    trainer.set_data(x, y)
    for e in range(epochs):
        trainer.train_epoch(epoch_batches(n, batch_size, 0, e))
    return dict(trainer=trainer, backend=b, network=net, config=config, seed=0, train=(x, y),
                epochs=epochs, held_out=(held_out_x, held_out_labels))


@pytest.mark.parametrize("fault", FAULTS)
def test_every_timed_work_fault_passes_validation(fault):
    assert validate(fault, "mlp", batch_size=32).ok


# mlp at batch 32: the replay decides; nielsen at batch 2 (lr 3.0): float32 rounding
# is chaotic within an epoch, the replay cannot decide and the held-out slice does
@pytest.mark.parametrize("model,batch_size", [("mlp", 32), ("nielsen", 2)])
@pytest.mark.parametrize("fault", FAULTS)
def test_verification_refuses_every_timed_work_fault(fault, model, batch_size):
    if fault == "late-reset-optimizer" and model == "nielsen":
        pytest.skip("nielsen's SGD has no optimizer state to reset")
    check = verify(**trained(fault, model, batch_size, epochs=6))  # past step 50
    assert check["status"] == "invalid", check
    assert "timed trainer" in check["error"]


@pytest.mark.parametrize("backend", ["numpy", "numba", "numba-fused", "torch", "jax"])
@pytest.mark.parametrize("model,batch_size", [("mlp", 32), ("mlp", 2), ("nielsen", 2),
                                              ("nielsen", 10), ("linear", 0)])
def test_honest_backends_pass_verification(backend, model, batch_size):
    if not get_backend(backend).available()[0]:
        pytest.skip(get_backend(backend).available()[1])
    check = verify(**trained(backend, model, batch_size, epochs=3))
    assert check["status"] == "ok", check
    assert check["slice"]["error"] <= check["slice"]["tolerance"]


def test_a_chaotic_trajectory_is_left_to_the_slice_and_says_so():
    check = verify(**trained("numpy", "nielsen", 2, epochs=2))
    assert not check["replay"]["decisive"] and "cannot tell" in check["replay"]["why"]
    assert check["replay"]["tolerance"] > REPLAY_DECISIVE
    assert check["status"] == "ok"


def test_a_trainer_without_optimizer_state_rests_on_the_replay_or_is_unverified():
    decisive = verify(**trained("numpy-no-state", "mlp", 32, epochs=3))
    assert decisive["status"] == "ok" and "skipped" in decisive["slice"]
    chaotic = verify(**trained("numpy-no-state", "nielsen", 2, epochs=2, optimizer="momentum",
                               beta=0.9))
    assert chaotic["status"] == "unverified", chaotic
    assert "cannot report its optimizer state" in chaotic["error"]


def test_run_stores_timed_work_faults_invalid_with_samples_and_no_time(tmp_path):
    backends = ",".join(["numpy", "numpy-no-state"] + FAULTS)
    _, cells = run_ok("run", "--models", "mlp", "--backends", backends, "--batch-sizes", "32",
                      "--dataset", "synthetic", "--train-limit", "300", "--rounds", "2",
                      "--processes", "1", "--threads", "1", "--replay-budget", "120",
                      tmp_path=tmp_path, timeout=600)
    by = cells.set_index("backend")
    assert set(by.loc[FAULTS, "status"]) == {"invalid"}, by[["status", "error"]]
    for fault in FAULTS:
        assert "timed trainer" in by.loc[fault, "error"]
        assert len(by.loc[fault, "samples_s"]) == 2  # kept, as evidence
        assert np.isnan(by.loc[fault, "median_s"])  # never reported as a time
    for honest in ("numpy", "numpy-no-state"):
        assert by.loc[honest, "status"] == "ok", by.loc[honest, "error"]
        assert by.loc[honest, "verification.status"] == "ok"
        assert by.loc[honest, "epochs_per_sample"] >= 1


def test_a_cell_neither_check_can_decide_is_stored_unverified(tmp_path):
    _, cells = run_ok("run", "--models", "mlp", "--backends", "numpy,numpy-no-state", "--batch-sizes",
                      "32", "--dataset", "synthetic", "--train-limit", "300", "--rounds", "2",
                      "--processes", "1", "--threads", "1", "--replay-budget", "0",
                      tmp_path=tmp_path, timeout=600)
    by = cells.set_index("backend")
    assert by.loc["numpy", "status"] == "ok"  # the held-out check decides
    assert by.loc["numpy-no-state", "status"] == "unverified"
    assert "cannot report its optimizer state" in by.loc["numpy-no-state", "error"]
    assert np.isnan(by.loc["numpy-no-state", "median_s"])


def test_kernel_sweep_checks_the_timed_buffers_after_timing(tmp_path):
    _, cells = run_ok("kernels", "--families", plugins.LATE_KERNELS.name, "--rounds", "2",
                      "--threads", "1", tmp_path=tmp_path)
    by = cells.set_index("backend")
    assert by.loc["honest", "status"] == "ok"
    for version in ("partial_from_fourth_call", "cached_result"):
        assert by.loc[version, "status"] == "invalid", by.loc[version, "error"]
        assert by.loc[version, "error"].startswith("wrong after timing")
        assert np.isnan(by.loc[version, "median_s"])


def test_backends_of_one_setting_share_the_reference_trajectory(tmp_path):
    from mnist_numba_bench.bench.verify import replay
    net = get_network("mlp")
    config = dict(config_for(net), batch_size=32)
    x, y, _ = validation_data(net, 200, seed=3)
    fresh = replay(net, config, 0, x, y, 5)
    first = replay(net, config, 0, x, y, 3, cache_dir=str(tmp_path), cache_key="k")
    later = replay(net, config, 0, x, y, 5, cache_dir=str(tmp_path), cache_key="k")
    again = replay(net, config, 0, x, y, 4, cache_dir=str(tmp_path), cache_key="k")
    assert (first["replayed_epochs"], later["replayed_epochs"], again["replayed_epochs"]) == (3, 2, 1)
    for k, want in fresh["params64"].items():
        np.testing.assert_array_equal(later["params64"][k], want)
        np.testing.assert_array_equal(later["params32"][k], fresh["params32"][k])
