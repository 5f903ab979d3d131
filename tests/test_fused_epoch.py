"""The fused epoch's transposed first-layer kernels against NumPy on odd shapes, and the
working-layout round trip of every flat buffer under each optimizer."""
import numpy as np
import pytest

from bench.validate import validate
from kernels import fused_epoch as fe

SHAPES = [(1, 1, 1), (7, 33, 5), (10, 784, 30), (33, 257, 7), (3, 5, 257)]


@pytest.mark.parametrize("m,k,h", SHAPES)
def test_dot_rows_t_matches_numpy(m, k, h):
    rng = np.random.default_rng(m * k * h)
    x = rng.standard_normal((m + 4, k)).astype(np.float32)
    rows = rng.permutation(m + 4)[:m]  # scattered rows, read in place
    wt = rng.standard_normal((h, k)).astype(np.float32)
    z = np.full((m, h), np.nan, np.float32)
    fe._dot_rows_t(x, rows, wt, z)
    np.testing.assert_allclose(z, x[rows] @ wt.T, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("m,k,h", SHAPES)
def test_axpy_rows_t_matches_numpy(m, k, h):
    rng = np.random.default_rng(m + k + h)
    x = rng.standard_normal((m + 4, k)).astype(np.float32)
    rows = rng.permutation(m + 4)[:m]
    d = rng.standard_normal((m, h)).astype(np.float32)
    gt = np.full((h, k), np.nan, np.float32)  # stale contents must not leak into the sum
    fe._axpy_rows_t(d, x, rows, gt)
    np.testing.assert_allclose(gt, (x[rows].T @ d).T, rtol=1e-4, atol=1e-4 * np.sqrt(m))


def test_transpose_first_block_round_trip():
    rng = np.random.default_rng(0)
    buf = rng.standard_normal(7 * 3 + 5).astype(np.float32)
    orig, tmp = buf.copy(), np.empty_like(buf)
    fe._transpose_first_block(buf, 7, 3, tmp)
    np.testing.assert_array_equal(buf[:21].reshape(3, 7), orig[:21].reshape(7, 3).T)
    np.testing.assert_array_equal(buf[21:], orig[21:])
    fe._transpose_first_block(buf, 3, 7, tmp)
    np.testing.assert_array_equal(buf, orig)


@pytest.mark.parametrize("overrides", [{"optimizer": "momentum", "lr": 0.5},
                                       {"optimizer": "adam", "lr": 1e-3, "eps": 1e-4}],
                         ids=["momentum", "adam"])
def test_fused_nielsen_with_optimizer_state_matches_numpy(overrides):
    """Optimizer state is permuted into the working layout and back each epoch; over two
    epochs (state carried across the round trip) the weights must equal numpy's."""
    from bench.backends import get_backend
    from bench.validate import validation_data
    from models import config_for, get_network
    from models.train import epoch_batches
    net = get_network("nielsen")
    config = dict(config_for(net), batch_size=7, beta=0.9, beta1=0.9, beta2=0.999, eps=1e-8)
    config.update(overrides)
    x, y, _ = validation_data(net, 40)
    trainers = [get_backend(b).make_trainer(net, net.init_params(0), config, 0)
                for b in ("numpy", "numba-fused")]
    for t in trainers:
        t.set_data(x, y)
    for epoch in range(2):
        losses = [t.train_epoch(epoch_batches(len(x), 7, 0, epoch)) for t in trainers]
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    init = net.init_params(0)
    for k, want in trainers[0].params().items():
        moved = np.abs(want - init[k]).max()
        assert moved > 0
        np.testing.assert_allclose(trainers[1].params()[k], want, atol=1e-3 * moved)
