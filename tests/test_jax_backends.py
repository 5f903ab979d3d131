"""The JAX baselines (parity with numpy: tests/test_parity.py): a short last batch in
the scanned epoch, the suite's dropout mask bit for bit, and "unavailable" where
jax is not installed."""
import numpy as np
import pytest

pytest.importorskip("jax")

from mnist_numba_bench.bench.backends import get_backend  # noqa: E402
from mnist_numba_bench.bench.backends.jax_backend import jax_modules, keep_mask  # noqa: E402
from mnist_numba_bench.bench.validate import param_error, run_steps, validation_data  # noqa: E402
from mnist_numba_bench.models import config_for, get_network  # noqa: E402
from mnist_numba_bench.models.ops import dropout_keep_mask  # noqa: E402
from mnist_numba_bench.models.train import epoch_batches  # noqa: E402

@pytest.mark.parametrize("model", ["nielsen", "mlp"])
def test_scanned_epoch_with_a_short_last_batch_matches_the_step_by_step_one(model):
    network = get_network(model)
    config = dict(config_for(network), batch_size=16)
    x, y, _ = validation_data(network, 100)  # 6 full batches and one of 4
    batches = epoch_batches(100, 16, 0, 0)
    assert len(batches[-1]) == 4
    want = run_steps(get_backend("numpy"), network, config, x, y, len(batches)).params()
    init = network.init_params(0)
    for backend in ("jax", "jax-scan"):
        trainer = get_backend(backend).make_trainer(network, init, config, 0)
        trainer.set_data(x, y)
        loss = trainer.train_epoch(batches)
        assert np.isfinite(loss) and trainer.step == len(batches)
        err, message = param_error(trainer.params(), want, init)
        assert err < 2e-3, f"{backend}: {message}"


@pytest.mark.parametrize("rate, key", [(0.5, 0), (0.5, 123456789), (0.25, 4242)])
def test_dropout_mask_is_the_suites_bit_for_bit(rate, key):
    _, jnp, _ = jax_modules()
    got = np.asarray(keep_mask(jnp, 4096, rate, jnp.uint32(key)))
    assert np.array_equal(got, dropout_keep_mask((4096,), rate, key))


def test_float32_throughout():
    network = get_network("mlp")
    trainer = get_backend("jax").make_trainer(network, network.init_params(0), config_for(network), 0)
    assert all(np.asarray(v).dtype == np.float32 for v in trainer.p.values())


def test_unavailable_with_the_reason_without_jax(monkeypatch):
    import importlib.util
    from mnist_numba_bench.bench.backends.jax_backend import JaxBackend
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jax" else real(name, *a))
    ok, why = JaxBackend().available()
    assert not ok and "jax is not installed" in why
