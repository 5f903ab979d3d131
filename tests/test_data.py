"""The data layer: IDX parsing, validation of bad files, datasets and caching."""
import gzip
import http.server
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from mnist_numba_bench.bench import data

T10K = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"
REPO = Path(__file__).resolve().parents[1]
needs_t10k = pytest.mark.skipif(not T10K.is_dir(), reason=f"{T10K} not present")


def idx_bytes(array: np.ndarray, magic=None) -> bytes:
    magic = magic if magic is not None else 0x800 | array.ndim
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_set(directory, n_train=30, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for stem, a in arrays.items():
        raw = idx_bytes(a)
        path = os.path.join(directory, stem + (".gz" if gz else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_BENCH_CACHE", str(tmp_path / "cache"))


@needs_t10k
def test_real_test_set_parses_with_published_statistics():
    images, labels = data.read_pair(T10K / "t10k-images-idx3-ubyte.gz", T10K / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert images.mean() == pytest.approx(33.79, abs=0.01)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize("gz", [True, False])
def test_directory_dataset_round_trip_and_splits(tmp_path, gz):
    arrays = write_set(tmp_path / "d", n_train=30, gz=gz)
    ds = data.load_directory(tmp_path / "d", validation=10)
    assert (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (20, 10, 20)
    assert ds.train_x.dtype == np.float32 and ds.train_x.shape[1] == 784
    assert 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0
    np.testing.assert_allclose(ds.train_x[0], arrays["train-images-idx3-ubyte"][0].ravel() / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.val_y, arrays["train-labels-idx1-ubyte"][20:])


def test_parsed_arrays_are_cached_and_reused(tmp_path, monkeypatch):
    write_set(tmp_path / "d")
    data.load_directory(tmp_path / "d")
    assert list((tmp_path / "cache" / "parsed").glob("*.npz"))
    monkeypatch.setattr(data, "read_pair", lambda *a: pytest.fail("re-parsed despite the cache"))
    data.load_directory(tmp_path / "d")


def test_truncated_file_names_file_and_problem(tmp_path):
    write_set(tmp_path / "d", gz=False)
    path = tmp_path / "d" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte: truncated"):
        data.load_directory(tmp_path / "d")


def test_truncated_gzip(tmp_path):
    write_set(tmp_path / "d")
    path = tmp_path / "d" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        data.load_directory(tmp_path / "d")


def test_wrong_magic(tmp_path):
    write_set(tmp_path / "d", gz=False)
    path = tmp_path / "d" / "train-labels-idx1-ubyte"
    labels = np.zeros((30, 28, 28), np.uint8)  # an image file where labels belong
    path.write_bytes(idx_bytes(labels))
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte: wrong magic number 0x00000803"):
        data.load_directory(tmp_path / "d")


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"hello world, not idx")
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.read_idx(path)


def test_count_mismatch(tmp_path):
    write_set(tmp_path / "d", gz=False)
    (tmp_path / "d" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(29, np.uint8)))
    with pytest.raises(data.DataError, match=r"30 images but .*train-labels-idx1-ubyte has 29 labels"):
        data.load_directory(tmp_path / "d")


def test_missing_file_and_unreadable_directory(tmp_path):
    write_set(tmp_path / "d")
    os.remove(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(data.DataError, match="missing t10k-labels-idx1-ubyte"):
        data.load_directory(tmp_path / "d")
    with pytest.raises(data.DataError, match="not a directory"):
        data.load_directory(tmp_path / "nope")
    locked = tmp_path / "locked"
    write_set(locked)
    os.chmod(locked, 0)
    try:
        if os.access(locked, os.R_OK):  # root reads anything: nothing to test
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(data.DataError, match="not readable"):
            data.load_directory(locked)
    finally:
        os.chmod(locked, 0o755)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP mirror on loopback serving files from tmp_path/mirror."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = lambda *a, **k: _Quiet(*a, directory=str(root), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_verifies_checksums(mirror, monkeypatch, tmp_path):
    root, url = mirror
    write_set(root)
    monkeypatch.setenv("MNIST_BENCH_MIRRORS", url)
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz: checksum mismatch"):
        data.download("mnist", tmp_path / "dl")
    assert not list((tmp_path / "dl").glob("*.gz"))  # nothing unverified is kept


def test_download_accepts_matching_checksums(mirror, monkeypatch, tmp_path):
    root, url = mirror
    write_set(root)
    sums = {f.name: data._md5(f) for f in root.iterdir()}
    monkeypatch.setitem(data.CHECKSUMS, "mnist", sums)
    monkeypatch.setenv("MNIST_BENCH_MIRRORS", url)
    ds = data.load("mnist")
    assert ds.name == "mnist" and len(ds.test_x) == 20


def test_offline_error_names_the_alternatives(monkeypatch):
    monkeypatch.setenv("MNIST_BENCH_MIRRORS", "http://127.0.0.1:9/")  # nothing listens on port 9
    with pytest.raises(data.DataError, match="--data-dir"):
        data.load("mnist")


def test_auto_falls_back_loudly(monkeypatch):
    monkeypatch.setenv("MNIST_BENCH_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    said = []
    ds = data.load("auto", log=said.append)
    assert ds.synthetic and "SYNTHETIC" in ds.describe()
    assert any("SYNTHETIC" in s for s in said)


def test_synthetic_is_deterministic_and_shaped():
    a, b = data.synthetic(n_train=200, n_test=50, validation=50), data.synthetic(n_train=200, n_test=50, validation=50)
    np.testing.assert_array_equal(a.train_x, b.train_x)
    assert a.train_x.shape == (150, 784) and a.val_x.shape == (50, 784)


def test_unknown_dataset():
    with pytest.raises(data.DataError, match="unknown dataset 'cifar'"):
        data.load("cifar")


@pytest.mark.parametrize("argv,needle", [
    (["data", "info", "--data-dir", "/no/such/dir"], "/no/such/dir: not a directory"),
    (["data", "info", "--dataset", "cifar"], "unknown dataset 'cifar'"),
])
def test_cli_bad_input_is_one_line_and_nonzero(argv, needle):
    r = subprocess.run([sys.executable, "-m", "mnist_numba_bench.bench", *argv], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_cli_corrupt_file_is_one_line(tmp_path):
    write_set(tmp_path / "d")
    (tmp_path / "d" / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bgarbage")
    r = subprocess.run([sys.executable, "-m", "mnist_numba_bench.bench", "data", "verify", "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "t10k-images-idx3-ubyte.gz: corrupt" in r.stderr
    assert "Traceback" not in r.stderr
