"""The fused epoch's transposed first-layer kernels against NumPy on odd shapes, and the
working-layout round trip of every flat buffer under each optimizer."""
import numpy as np
import pytest

from mnist_numba_bench.kernels import fused_epoch as fe

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
    from mnist_numba_bench.bench.backends import get_backend
    from mnist_numba_bench.bench.validate import validation_data
    from mnist_numba_bench.models import config_for, get_network
    from mnist_numba_bench.models.train import epoch_batches
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


# The mlp epoch's kernels: tiled A·B / Aᵀ·B (full 8 x 32 tiles plus ragged edges),
# and the 10-wide products against W2 held transposed.
AB_SHAPES = [(1, 1, 1), (7, 33, 5), (8, 784, 32), (33, 257, 7), (17, 9, 65), (96, 784, 128)]


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("m,k,n", AB_SHAPES)
def test_tiled_ab_and_atb_match_numpy(m, k, n, parallel):
    rng = np.random.default_rng(m * 1000 + k + n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    at = rng.standard_normal((k, m)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    for transpose_a, want in ((False, a @ b), (True, at.T @ b)):
        c = np.full((m, n), np.nan, np.float32)
        fe._ab(at if transpose_a else a, b, c, transpose_a, parallel)
        np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@pytest.mark.parametrize("m,h,c", [(1, 1, 1), (7, 33, 3), (128, 128, 10), (5, 17, 5)])
def test_narrow_second_layer_kernels_match_numpy(m, h, c):
    rng = np.random.default_rng(m + h + c)
    hid = rng.standard_normal((m, h)).astype(np.float32)  # about half negative: ReLU mask matters
    w2t = rng.standard_normal((c, h)).astype(np.float32)
    d = rng.standard_normal((m, c)).astype(np.float32)
    logits, dz, gt = (np.full(s, np.nan, np.float32) for s in ((m, c), (m, h), (c, h)))
    fe._dot_rows_nt(hid, w2t, logits)
    np.testing.assert_allclose(logits, hid @ w2t.T, rtol=1e-4, atol=1e-4 * np.sqrt(h))
    fe._relu_backward_rows(d, w2t, hid, dz)
    np.testing.assert_allclose(dz, np.where(hid > 0, d @ w2t, 0), rtol=1e-4, atol=1e-4 * np.sqrt(c))
    fe._outer_sum_t(hid, d, gt)
    np.testing.assert_allclose(gt, (hid.T @ d).T, rtol=1e-4, atol=1e-4 * np.sqrt(m))
