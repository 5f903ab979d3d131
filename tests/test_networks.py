"""The identical-network contract: canonical parameters, shared batch order,
safetensors round trip, numpy-loop == numpy step by step, and real learning."""
from pathlib import Path

import numpy as np
import pytest

from mnist_numba_bench.bench import data
from mnist_numba_bench.bench.backends import get_backend
from mnist_numba_bench.bench.validate import validate
from mnist_numba_bench.models import NETWORKS, config_for, get_network
from mnist_numba_bench.models.params import load_safetensors, pack, save_safetensors, unpack
from mnist_numba_bench.models.train import accuracy, epoch_batches, prepare_inputs, prepare_targets

T10K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


@pytest.mark.parametrize("name", list(NETWORKS))
def test_init_is_canonical_float32_and_seeded(name):
    net = get_network(name)
    a, b, c = net.init_params(3), net.init_params(3), net.init_params(4)
    assert list(a) == list(net.param_shapes())
    for k, shape in net.param_shapes().items():
        assert a[k].dtype == np.float32 and a[k].shape == shape
        np.testing.assert_array_equal(a[k], b[k])
    if name != "linear":  # linear starts from zeros, as in the write-ups
        assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_pack_unpack_and_shape_errors():
    net = get_network("mlp")
    p = net.init_params(0)
    flat = pack(p, net.param_shapes())
    assert flat.size == 784 * 128 + 128 + 128 * 10 + 10
    for k, v in unpack(flat, net.param_shapes()).items():
        np.testing.assert_array_equal(v, p[k])
    with pytest.raises(ValueError, match="'w1' has shape"):
        pack({**p, "w1": p["w1"].T}, net.param_shapes())
    with pytest.raises(ValueError, match="missing: b2"):
        pack({k: v for k, v in p.items() if k != "b2"}, net.param_shapes())


def test_safetensors_round_trip_and_interop(tmp_path):
    p = get_network("cnn").init_params(0)
    save_safetensors(tmp_path / "w.safetensors", p, {"model": "cnn"})
    back = load_safetensors(tmp_path / "w.safetensors")
    assert list(back) == list(p)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
    st = pytest.importorskip("safetensors.numpy")
    theirs = st.load_file(str(tmp_path / "w.safetensors"))
    np.testing.assert_array_equal(theirs["f1w"], p["f1w"])
    st.save_file({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(tmp_path / "t.safetensors"))
    np.testing.assert_array_equal(load_safetensors(tmp_path / "t.safetensors")["x"], np.arange(6).reshape(2, 3))


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    save_safetensors(tmp_path / "w.safetensors", {"a": np.ones(100, np.float32)})
    raw = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(raw[:-40])
    with pytest.raises(ValueError, match="truncated"):
        load_safetensors(tmp_path / "w.safetensors")


def test_batch_order_is_shared_complete_and_reshuffled():
    a, b = epoch_batches(105, 10, seed=1, epoch=0), epoch_batches(105, 10, seed=1, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [len(x) for x in a] == [10] * 10 + [5]
    assert sorted(np.concatenate(a).tolist()) == list(range(105))
    c = epoch_batches(105, 10, seed=1, epoch=1)
    assert not np.array_equal(np.concatenate(a), np.concatenate(c))
    assert epoch_batches(105, 0, seed=1, epoch=0) == [slice(0, 105)]


def test_config_overrides_are_checked():
    net = get_network("nielsen")
    assert config_for(net, {"lr": "0.5"})["lr"] == 0.5
    with pytest.raises(ValueError, match="no hyperparameter 'momentum'"):
        config_for(net, {"momentum": 0.9})
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        get_network("resnet")


@pytest.mark.parametrize("name", ["linear", "nielsen", "mlp"])
def test_numpy_loop_agrees_with_numpy_step_by_step(name):
    v = validate("numpy-loop", name, steps=4)
    assert v.ok, v.error
    assert v.max_error < 1e-4  # only the summation order differs


def test_validation_catches_a_wrong_backend(monkeypatch):
    """A backend whose ops are subtly wrong (bias gradient off by 1 %) fails validation."""
    from mnist_numba_bench.bench import backends
    from mnist_numba_bench.bench.backends.numpy_backend import NumpyBackend
    from mnist_numba_bench.models.reference import NumpyOps
    from mnist_numba_bench.models.train import OpsTrainer

    class SkewedOps(NumpyOps):
        def bias_grad(self, dz, out=None):
            r = super().bias_grad(dz, out)
            r *= np.float32(1.01)
            return r

    class Skewed(NumpyBackend):
        name = "skewed"

        def make_trainer(self, network, init_params, config, seed=0):
            return OpsTrainer(SkewedOps(), network, init_params, config, seed)

    monkeypatch.setitem(backends.REGISTRY, "skewed", "x:y")
    monkeypatch.setitem(backends._cache, "skewed", Skewed())
    v = validate("skewed", "mlp", steps=3)
    assert not v.ok and "differ from numpy" in v.error


@pytest.mark.skipif(not T10K.is_dir(), reason=f"{T10K} not present")
@pytest.mark.parametrize("name,epochs,floor", [("linear", 30, 0.80), ("nielsen", 3, 0.85), ("mlp", 3, 0.90)])
def test_training_on_real_mnist_reaches_sensible_accuracy(name, epochs, floor):
    """Train on 8k images of the real MNIST test set, evaluate on the other 2k."""
    ds = data.load_test_split(T10K, train=8000)
    net = get_network(name)
    config = config_for(net)
    trainer = get_backend("numpy").make_trainer(net, net.init_params(0), config, seed=0)
    trainer.set_data(prepare_inputs(net, ds.train_x), prepare_targets(net, ds.train_y))
    losses = [trainer.train_epoch(epoch_batches(len(ds.train_x), config["batch_size"], 0, e))
              for e in range(epochs)]
    assert losses[-1] < losses[0]
    acc = accuracy(trainer, prepare_inputs(net, ds.test_x), ds.test_y)
    assert acc >= floor, f"{name}: {acc:.3f} test accuracy after {epochs} epochs"
