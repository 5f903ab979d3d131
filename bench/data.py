"""MNIST-format data: a validating IDX reader, the datasets the suite trains on,
and a cache of parsed arrays so repeated runs never re-parse.

Every problem with a file raises DataError naming the file and what is wrong;
the CLI prints that one line and exits non-zero.
"""
import gzip
import hashlib
import os
import sys
import struct
import urllib.request
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..models.cache import cache_root

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MD5 of the published .gz files (the same sums torchvision checks).
CHECKSUMS = {
    "mnist": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion-mnist": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                      "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                      "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
}
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
SYSTEM_DIRS = {"fashion-mnist": ["/usr/share/datasets/fashion-mnist"]}
DATASETS = ("auto", "mnist", "fashion-mnist", "synthetic")
VALIDATION_SIZE = 10_000
PARSE_CACHE_VERSION = 1


class DataError(Exception):
    """A dataset or file problem, with a message that names the file."""


def cache_dir() -> str:
    return cache_root()


# -- IDX files ---------------------------------------------------------------

def _read_bytes(path) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    return raw


def read_idx(path, expect_magic=None) -> np.ndarray:
    """Read an IDX file (raw or gzip) of unsigned bytes, validating everything."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, too short for an IDX header")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic 0x{magic:08x})")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expect_magic:08x}")
    ndim = magic & 0xFF
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated header ({ndim} dimensions announced)")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - 4 - 4 * ndim
    if body < expected:
        raise DataError(f"{path}: truncated: header says {'x'.join(map(str, dims))} "
                        f"= {expected} bytes of data, file has {body}")
    if body > expected:
        raise DataError(f"{path}: {body - expected} unexpected trailing bytes after the data")
    return np.frombuffer(raw, np.uint8, count=expected, offset=4 + 4 * ndim).reshape(dims)


def read_pair(images_path, labels_path):
    """Images (n, 28, 28) and labels (n,) from their IDX files, checked against each other."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path} has "
                        f"{len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a digit class 0-9")
    return images, labels


def find_idx(directory, stem):
    """The path of ``stem`` (raw or .gz) in ``directory``, or None."""
    for name in (stem, stem + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    return None


# -- datasets -----------------------------------------------------------------

@dataclass
class Dataset:
    """Preprocessed splits: float32 pixels in [0, 1] as (n, 784), int64 labels."""
    name: str
    source: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    synthetic: bool = False
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        s = (f"{self.name} ({self.source}): {len(self.train_x)} train / {len(self.val_x)} "
             f"validation / {len(self.test_x)} test")
        return s + (" -- SYNTHETIC: timings are meaningful, accuracies are not" if self.synthetic else "")


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 (n, 784) in [0, 1] (x / 255)."""
    return (images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0))


def from_arrays(name, source, train_images, train_labels, test_images, test_labels,
                validation=VALIDATION_SIZE, synthetic=False, notes=()) -> Dataset:
    """Split the training set into train / validation (the last ``validation`` images)."""
    x, y = preprocess(train_images), np.asarray(train_labels, np.int64)
    cut = len(x) - validation if 0 < validation < len(x) else len(x)
    return Dataset(name, source, x[:cut], y[:cut], x[cut:], y[cut:],
                   preprocess(test_images), np.asarray(test_labels, np.int64),
                   synthetic, list(notes))


def _parse_cached(paths: list):
    """read_pair of the train and test files, through a cache of parsed arrays
    keyed by the files' paths, sizes and modification times."""
    key = hashlib.sha256(repr([(os.path.abspath(p), os.path.getsize(p), os.path.getmtime(p))
                               for p in paths] + [PARSE_CACHE_VERSION]).encode()).hexdigest()[:20]
    cached = os.path.join(cache_dir(), "parsed", key + ".npz")
    if os.path.exists(cached):
        try:
            with np.load(cached) as z:
                return z["trx"], z["try"], z["tex"], z["tey"]
        except Exception as e:  # truncated, not a zip, a member missing: parse again
            print(f"warning: {cached}: damaged parsed-data cache ({type(e).__name__}); "
                  f"parsing the IDX files again", file=sys.stderr)
    trx, try_ = read_pair(paths[0], paths[1])
    tex, tey = read_pair(paths[2], paths[3])
    tmp = cached + f".tmp{os.getpid()}.npz"
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        np.savez(tmp, trx=trx, **{"try": try_}, tex=tex, tey=tey)
        os.replace(tmp, cached)  # over a damaged entry too
    except OSError:  # caching is an optimisation; a read-only or full cache dir is fine
        try:
            os.remove(tmp)
        except OSError:
            pass
    return trx, try_, tex, tey


def load_directory(directory, name=None, validation=VALIDATION_SIZE) -> Dataset:
    """The four IDX files (raw or .gz) in ``directory``."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: not a directory")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise DataError(f"{directory}: directory is not readable")
    paths = [find_idx(directory, FILES[k]) for k in
             ("train_images", "train_labels", "test_images", "test_labels")]
    missing = [FILES[k] for k, p in zip(FILES, paths) if p is None]
    if missing:
        raise DataError(f"{directory}: missing {', '.join(missing)} (raw or .gz)")
    trx, try_, tex, tey = _parse_cached(paths)
    return from_arrays(name or os.path.basename(os.path.normpath(directory)), directory,
                       trx, try_, tex, tey, validation)


def load_test_split(directory, train=8000) -> Dataset:
    """Only the 10k test files (like ../shared/data/mnist-t10k): the first ``train``
    images for training, the rest for evaluation. For tests and quick checks."""
    images, labels = read_pair(find_idx(directory, FILES["test_images"]) or
                               os.path.join(directory, FILES["test_images"] + ".gz"),
                               find_idx(directory, FILES["test_labels"]) or
                               os.path.join(directory, FILES["test_labels"] + ".gz"))
    return from_arrays("t10k-split", directory, images[:train], labels[:train],
                       images[train:], labels[train:], validation=0,
                       notes=[f"trained on the first {train} test images, evaluated on the rest"])


def _md5(path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(name, directory, timeout=15.0):
    """Fetch the four .gz files of ``name`` into ``directory``, verifying each MD5.

    Mirrors come from MNIST_BENCH_MIRRORS (space-separated base URLs) if set.
    """
    mirrors = os.environ.get("MNIST_BENCH_MIRRORS", "").split() or MIRRORS[name]
    os.makedirs(directory, exist_ok=True)
    for filename, md5 in CHECKSUMS[name].items():
        target = os.path.join(directory, filename)
        if os.path.exists(target) and _md5(target) == md5:
            continue
        errors = []
        for base in mirrors:
            tmp = target + ".part"
            try:
                with urllib.request.urlopen(base + filename, timeout=timeout) as r, open(tmp, "wb") as f:
                    f.write(r.read())
            except OSError as e:
                errors.append(f"{base}: {getattr(e, 'reason', e)}")
                continue
            got = _md5(tmp)
            if got != md5:
                os.remove(tmp)
                errors.append(f"{base}{filename}: checksum mismatch (md5 {got}, expected {md5})")
                continue
            os.replace(tmp, target)
            break
        else:
            raise DataError(f"{name}: could not download {filename}: {'; '.join(errors)}. "
                            f"Offline? Pass --data-dir DIR (a directory with the four IDX files), "
                            f"or --dataset fashion-mnist (apt install dataset-fashion-mnist) "
                            f"or --dataset synthetic")


def synthetic(n_train=60_000, n_test=10_000, seed=0, validation=VALIDATION_SIZE) -> Dataset:
    """Deterministic MNIST-shaped data for timing only: ten random class prototypes
    plus noise, so networks do learn, but the accuracy means nothing."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 784)) * 255
    def make(n):
        labels = rng.integers(0, 10, n)
        images = 0.5 * prototypes[labels] + rng.random((n, 784)) * 127
        return images.astype(np.uint8).reshape(n, 28, 28), labels
    trx, try_ = make(n_train)
    tex, tey = make(n_test)
    return from_arrays("synthetic", f"generated, seed {seed}", trx, try_, tex, tey,
                       validation, synthetic=True)


def _cached_or_system(name):
    """Directory holding ``name``'s four files: the cache, or a system install."""
    for directory in [os.path.join(cache_dir(), name)] + SYSTEM_DIRS.get(name, []):
        if os.path.isdir(directory) and all(find_idx(directory, s) for s in FILES.values()):
            return directory
    return None


def load(name="auto", data_dir=None, allow_download=True, log=print) -> Dataset:
    """The dataset the CLI's --dataset / --data-dir options name."""
    if data_dir:
        return load_directory(data_dir, name if name not in ("auto", None) else None)
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)} "
                        f"or pass --data-dir DIR")
    if name == "synthetic":
        return synthetic()
    if name in ("mnist", "fashion-mnist"):
        directory = _cached_or_system(name)
        if directory is None:
            if not allow_download:
                raise DataError(f"{name}: not in {cache_dir()} and downloads are off; "
                                f"pass --data-dir DIR or --dataset synthetic")
            directory = os.path.join(cache_dir(), name)
            download(name, directory)
        return load_directory(directory, name)
    # auto: real MNIST, else Fashion-MNIST, else synthetic -- said loudly.
    for candidate in ("mnist", "fashion-mnist"):
        directory = _cached_or_system(candidate)
        if directory:
            ds = load_directory(directory, candidate)
            if candidate != "mnist":
                ds.notes.append(f"dataset auto: no MNIST in the cache, {candidate} from {directory}")
                log(f"note: {ds.notes[-1]}")
            return ds
    if allow_download:
        try:
            return load("mnist", allow_download=True)
        except DataError as e:
            log(f"dataset auto: MNIST not available ({str(e).split(': ', 1)[-1][:120]}...)")
    ds = synthetic()
    ds.notes.append("dataset auto fell back to SYNTHETIC data: no MNIST in the cache or "
                    "online, no Fashion-MNIST installed")
    log("WARNING: dataset auto -> SYNTHETIC data (timings are meaningful, accuracies are not)")
    return ds


def add_arguments(parser):
    """The options that choose a dataset, for every subcommand that loads one."""
    parser.add_argument("--dataset", default="auto",
                        help="auto (default), mnist, fashion-mnist or synthetic")
    parser.add_argument("--data-dir", default=None,
                        help="a directory holding the four MNIST-format IDX files (raw or .gz)")
    parser.add_argument("--no-download", action="store_true", help="never touch the network")
