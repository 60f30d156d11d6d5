"""bnexp.data's user kinds, npz:PATH, folder:PATH and csv:PATH, on small data made in tmp_path.

The data-level tests need no TensorFlow. The end-to-end CLI tests at the bottom train through
`bnexp train`/`compare` and reload the model with `bnexp eval`.
"""

import csv
import hashlib
import json
import os
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from bnexp import data
from bnexp.errors import RunFailure, UsageError


@pytest.fixture(autouse=True)
def isolated_data(tmp_path, monkeypatch):
    """No real Keras cache or BNEXP_DATA_DIR; the working folder is tmp_path."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("BNEXP_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def one_line_usage(excinfo):
    assert excinfo.value.exit_code == 2 and "\n" not in str(excinfo.value)
    return str(excinfo.value)


# ---------------------------------------------------------------- builders


def color_npz(path, n_train=30, n_test=9, seed=0, **extra):
    """3 classes of 32x32x3 uint8 images, Keras's keys."""
    rng = np.random.default_rng(seed)
    arrs = dict(x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), y_train=np.arange(n_train) % 3,
                x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), y_test=np.arange(n_test) % 3)
    arrs.update(extra)
    np.savez(path, **arrs)
    return arrs


def xy_npz(path, n=40, shape=(6, 6), labels=None, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = np.array(labels) if labels is not None else np.array(["cat", "dog"])[np.arange(n) % 2]
    np.savez(path, x=x, y=y)
    return x, y


def png_folder(root, classes=("cat", "dog"), n=6, size=(8, 10), mode="L", seed=0, split=None):
    """n images per class, HxW = size; split="given" writes root/train and root/test (2 test images per class)."""
    rng = np.random.default_rng(seed)
    made = {}
    for c in classes:
        for i in range(n):
            shape = (*size, 3) if mode == "RGB" else size
            a = rng.integers(0, 256, shape, dtype=np.uint8)
            sub = root / (("test" if i < 2 else "train") if split == "given" else "") / c
            sub.mkdir(parents=True, exist_ok=True)
            Image.fromarray(a, mode).save(sub / f"img{i:03d}.png")
            made[sub / f"img{i:03d}.png"] = a
    return made


def write_csv(path, rows, header, delimiter=","):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)


def wine_like_csv(path, n=60, seed=0):
    """5 numeric features and string labels (3 classes) in a `label` column that is not last."""
    rng = np.random.default_rng(seed)
    labels = np.array(["barolo", "grignolino", "barbera"])[np.arange(n) % 3]
    x = rng.normal(10, 3, (n, 5)) + (np.arange(n) % 3)[:, None]
    rows = [[f"{v:.6f}" for v in x[i, :2]] + [labels[i]] + [f"{v:.6f}" for v in x[i, 2:]] for i in range(n)]
    write_csv(path, rows, ["f1", "f2", "label", "f3", "f4", "f5"])
    return x, labels


# ---------------------------------------------------------------- npz:PATH


def test_npz_color_images_given_split(tmp_path):
    arrs = color_npz(tmp_path / "c.npz")
    src = data.resolve("npz:c.npz")
    assert src.name == f"npz:{tmp_path / 'c.npz'}" and src.kind == "npz" and src.origin == str(tmp_path / "c.npz")
    assert (src.n_train, src.n_test, src.input_shape, src.num_classes, src.is_image) == (30, 9, (32, 32, 3), 3, True)
    # A given split: the hash is the plain file sha256 (as for mnist.npz).
    assert src.sha256 == hashlib.sha256((tmp_path / "c.npz").read_bytes()).hexdigest() and src.options == ()
    ds = data.load(src)
    assert ds.x_train.shape == (30, 32, 32, 3) and ds.x_train.dtype == np.uint8 and ds.is_image
    np.testing.assert_array_equal(ds.x_test, arrs["x_test"])
    assert ds.y_train.dtype == np.int32 and ds.num_classes == 3 and ds.class_names == ("0", "1", "2")
    rec = ds.record()
    assert rec["dataset_kind"] == "npz" and rec["dataset_source"] == str(tmp_path / "c.npz")
    assert rec["input_shape"] == [32, 32, 3] and rec["input_dim"] == 3072 and rec["num_classes"] == 3
    assert rec["dataset_split"] == "given" and "label_mapping" not in rec
    json.dumps(rec)


def test_npz_xy_split_string_labels(tmp_path):
    x, y = xy_npz(tmp_path / "xy.npz", n=40, shape=(6, 6))
    src = data.resolve("npz:xy.npz", options={"test_fraction": 0.25})
    assert (src.n_train, src.n_test) == (30, 10) and src.option("test_fraction") == 0.25
    ds = data.load(src)
    assert ds.x_train.shape == (30, 6, 6, 1) and ds.x_train.dtype == np.uint8  # a channel axis is added
    assert ds.class_names == ("cat", "dog") and np.bincount(ds.y_test).tolist() == [5, 5]  # stratified
    rec = ds.record()
    assert rec["dataset_split"] == "stratified" and rec["dataset_test_fraction"] == 0.25 and rec["dataset_split_seed"] == 0
    assert rec["label_mapping"] == {"cat": 0, "dog": 1}
    # Every sample is used once, with its own label.
    got = {ds.x_train[i].tobytes(): ds.class_names[ds.y_train[i]] for i in range(30)}
    got.update({ds.x_test[i].tobytes(): ds.class_names[ds.y_test[i]] for i in range(10)})
    assert got == {x[i][..., None].tobytes(): y[i] for i in range(40)}
    # The split is fixed: the same again, and another test_fraction is another dataset.
    again = data.load(data.resolve("npz:xy.npz", options={"test_fraction": 0.25}))
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    assert data.resolve("npz:xy.npz").sha256 != src.sha256


def test_npz_features_and_unusual_integer_labels(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "f.npz", x=rng.normal(size=(30, 7)), y=np.array([3, 7, 9] * 10))
    ds = data.load_dataset("npz:f.npz")
    assert ds.x_train.shape[1:] == (7,) and ds.x_train.dtype == np.float32 and not ds.is_image
    assert ds.class_names == ("3", "7", "9") and ds.record()["label_mapping"] == {"3": 0, "7": 1, "9": 2}
    assert set(ds.y_train.tolist()) == {0, 1, 2}


def test_npz_float_images_stay_float(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "f.npz", x=rng.normal(size=(20, 4, 4, 2)).astype(np.float64), y=np.arange(20) % 2)
    ds = data.load_dataset("npz:f.npz")
    assert ds.x_train.dtype == np.float32 and ds.input_shape == (4, 4, 2)


def test_relative_path_from_data_dir_and_canonical_name(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    color_npz(tmp_path / "d" / "c.npz")
    monkeypatch.setenv("BNEXP_DATA_DIR", str(tmp_path / "d"))
    src = data.resolve("npz:c.npz")
    assert src.name == f"npz:{tmp_path / 'd' / 'c.npz'}"
    # The canonical name resolves to the same data from anywhere.
    monkeypatch.chdir(tmp_path / "d")
    assert data.resolve(src.name).sha256 == src.sha256


# ---------------------------------------------------------------- folder:PATH


def test_folder_of_pngs_split_by_fraction(tmp_path):
    made = png_folder(tmp_path / "pets", n=6, size=(8, 10))
    src = data.resolve("folder:pets")
    assert (src.n_train, src.n_test, src.input_shape, src.num_classes) == (10, 2, (8, 10, 1), 2)
    assert src.paths == (str(tmp_path / "pets"),) and len(pickle.dumps(src)) < 2000
    ds = data.load(src)
    assert ds.x_train.shape == (10, 8, 10, 1) and ds.x_train.dtype == np.uint8 and ds.class_names == ("cat", "dog")
    assert np.bincount(ds.y_test).tolist() == [1, 1]
    decoded = {ds.x_train[i, ..., 0].tobytes(): ds.y_train[i] for i in range(10)}
    decoded.update({ds.x_test[i, ..., 0].tobytes(): ds.y_test[i] for i in range(2)})
    assert decoded == {a.tobytes(): ("cat", "dog").index(p.parent.name) for p, a in made.items()}
    rec = ds.record()
    assert (rec["image_size"], rec["color_mode"], rec["dataset_split"]) == ("8x10", "grayscale", "stratified")
    assert rec["dataset_kind"] == "folder" and rec["class_names"] == ["cat", "dog"] and rec["input_dim"] == 80


def test_folder_with_train_and_test(tmp_path):
    png_folder(tmp_path / "p", classes=("a", "b", "c"), n=5, mode="RGB", split="given")
    src = data.resolve("folder:p")
    assert (src.n_train, src.n_test, src.input_shape, src.num_classes) == (9, 6, (8, 10, 3), 3)
    ds = data.load(src)
    assert ds.record()["dataset_split"] == "given" and ds.record()["color_mode"] == "rgb"
    gray = data.load_dataset("folder:p", options={"color_mode": "grayscale", "image_size": "4x5"})
    assert gray.x_train.shape == (9, 4, 5, 1) and gray.source.sha256 != src.sha256
    assert gray.record()["image_size"] == "4x5"
    # The default size, given explicitly, is the same dataset.
    assert data.resolve("folder:p", options={"image_size": "8x10", "color_mode": "rgb"}).sha256 == src.sha256


def test_folder_reads_jpeg_bmp_gif_and_skips_other_files(tmp_path):
    rng = np.random.default_rng(3)
    for c in ("x", "y"):
        (tmp_path / "m" / c / "deeper").mkdir(parents=True)
        for i, ext in enumerate(("jpg", "bmp", "gif", "JPEG")):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "m" / c / f"i{i}.{ext}")
        Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / "m" / c / "deeper" / "d.png")
        (tmp_path / "m" / c / "notes.txt").write_text("not an image")
        (tmp_path / "m" / c / ".hidden.png").write_bytes(b"junk")
    src = data.resolve("folder:m")
    assert src.n_train + src.n_test == 10 and src.input_shape == (6, 6, 3)


def test_folder_16_bit_gray_is_scaled_not_clipped(tmp_path):
    for c, v in (("lo", 257), ("hi", 65535)):
        (tmp_path / "s" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((2, 3), v - i, np.uint16)).save(tmp_path / "s" / c / f"{i}.png")
    src = data.resolve("folder:s", options={"test_fraction": 0.5})
    assert src.option("color_mode") == "grayscale"
    ds = data.load(src)
    assert sorted(set(np.concatenate([ds.x_train.ravel(), ds.x_test.ravel()]).tolist())) == [1, 255]


def test_folder_hash_rule(tmp_path):
    png_folder(tmp_path / "a", n=4)
    before = data.resolve("folder:a")
    arrays = data.load(before)
    # Renamed root folder, renamed image file: the same dataset, the same arrays.
    (tmp_path / "a").rename(tmp_path / "b")
    (tmp_path / "b" / "cat" / "img000.png").rename(tmp_path / "b" / "cat" / "zzz.png")
    after = data.resolve("folder:b")
    assert after.sha256 == before.sha256
    np.testing.assert_array_equal(data.load(after).x_train, arrays.x_train)
    # One changed pixel: a new dataset.
    img = tmp_path / "b" / "dog" / "img001.png"
    a = np.asarray(Image.open(img)).copy()
    a[0, 0] ^= 1
    Image.fromarray(a).save(img)
    changed = data.resolve("folder:b").sha256
    assert changed != before.sha256
    # An image moved to the other class: a new dataset.
    shutil.move(tmp_path / "b" / "dog" / "img002.png", tmp_path / "b" / "cat" / "moved.png")
    assert data.resolve("folder:b").sha256 not in (before.sha256, changed)


def test_npz_and_csv_hash_rule(tmp_path):
    x, y = xy_npz(tmp_path / "a.npz")
    before = data.resolve("npz:a.npz").sha256
    os.rename(tmp_path / "a.npz", tmp_path / "b.npz")
    assert data.resolve("npz:b.npz").sha256 == before
    x[0, 0, 0] ^= 1
    np.savez(tmp_path / "b.npz", x=x, y=y)
    assert data.resolve("npz:b.npz").sha256 != before
    wine_like_csv(tmp_path / "w.csv")
    before = data.resolve("csv:w.csv").sha256
    shutil.copy(tmp_path / "w.csv", tmp_path / "renamed.csv")
    assert data.resolve("csv:renamed.csv").sha256 == before
    write_csv(tmp_path / "n.csv", [[i, i % 3, i % 2] for i in range(20)], ["a", "b", "label"])
    assert data.resolve("csv:n.csv", options={"label_column": "b"}).sha256 != data.resolve("csv:n.csv").sha256
    blob = bytearray((tmp_path / "w.csv").read_bytes())
    blob[blob.index(b"1", 40)] = ord("2")
    (tmp_path / "w.csv").write_bytes(bytes(blob))
    assert data.resolve("csv:w.csv").sha256 != before


def test_files_changed_after_resolve_fail_load(tmp_path):
    png_folder(tmp_path / "p", n=3)
    color_npz(tmp_path / "c.npz")
    sources = [data.resolve("folder:p"), data.resolve("npz:c.npz")]
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(tmp_path / "p" / "cat" / "img000.png")
    color_npz(tmp_path / "c.npz", seed=5)
    for src in sources:
        with pytest.raises(RunFailure, match="changed after it was resolved"):
            data.load(src, cache_dir=tmp_path / "cache")


def test_folder_cache(tmp_path):
    png_folder(tmp_path / "p", n=5)
    cache = tmp_path / "results" / ".cache" / "data"
    src = data.resolve("folder:p")
    first = data.load(src, cache_dir=cache)
    assert not first.cached and [f.name for f in cache.iterdir()] == [f"folder-{src.sha256}.npz"]
    second = data.load(src, cache_dir=cache)
    assert second.cached and second.record() == first.record()
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(second, k), getattr(first, k))
    # A tampered cache (valid npz, wrong pixels) is rejected and rebuilt from the files.
    file = cache / f"folder-{src.sha256}.npz"
    with np.load(file) as z:
        parts = {k: z[k] for k in z.files}
    parts["x_train"] = parts["x_train"] ^ 1
    np.savez(file, **parts)
    third = data.load(src, cache_dir=cache)
    assert not third.cached
    np.testing.assert_array_equal(third.x_train, first.x_train)
    assert data.load(src, cache_dir=cache).cached  # rebuilt properly
    # Garbage is rebuilt too, and no cache_dir means no cache.
    file.write_bytes(b"garbage")
    assert not data.load(src, cache_dir=cache).cached and data.load(src, cache_dir=cache).cached
    assert not data.load(src).cached


def test_cache_of_other_options_is_another_file(tmp_path):
    png_folder(tmp_path / "p", n=3)
    cache = tmp_path / "cache"
    data.load(data.resolve("folder:p"), cache_dir=cache)
    small = data.load(data.resolve("folder:p", options={"image_size": 4}), cache_dir=cache)
    assert small.x_train.shape[1:] == (4, 4, 1) and len(list(cache.iterdir())) == 2


# ---------------------------------------------------------------- csv:PATH


def test_csv_string_labels_standardized(tmp_path):
    x, labels = wine_like_csv(tmp_path / "w.csv", n=60)
    src = data.resolve("csv:w.csv")
    assert (src.n_train, src.n_test, src.input_shape, src.num_classes, src.is_image) == (48, 12, (5,), 3, False)
    assert src.option("label_column") == "label"
    ds = data.load(src)
    assert ds.x_train.shape == (48, 5) and ds.x_train.dtype == np.float32 and not ds.is_image
    assert ds.class_names == ("barbera", "barolo", "grignolino") and np.bincount(ds.y_test).tolist() == [4, 4, 4]
    np.testing.assert_allclose(ds.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(0), 1, atol=1e-4)
    rec = ds.record()
    assert rec["feature_columns"] == ["f1", "f2", "f3", "f4", "f5"] and rec["label_column"] == "label"
    assert rec["label_mapping"] == {"barbera": 0, "barolo": 1, "grignolino": 2}
    # The recorded mean and std are the training rows' (not the test rows').
    raw = np.round(x, 6)
    train_rows = [i for i in range(60) if any(np.allclose(ds.x_train[j] * rec["standardize_std"] + rec["standardize_mean"],
                                                          raw[i], atol=1e-4) for j in range(48))]
    assert len(train_rows) == 48
    np.testing.assert_allclose(rec["standardize_mean"], raw[train_rows].mean(0), rtol=1e-9)
    np.testing.assert_allclose(rec["standardize_std"], raw[train_rows].std(0), rtol=1e-9)
    json.dumps(rec)


def test_csv_label_column_default_last_and_option(tmp_path):
    write_csv(tmp_path / "t.csv", [[i, i * 2 % 5, i % 2] for i in range(20)], ["a", "b", "klass"])
    ds = data.load_dataset("csv:t.csv")
    assert ds.record()["label_column"] == "klass" and ds.class_names == ("0", "1") and ds.input_shape == (2,)
    assert "label_mapping" not in ds.record()
    ds = data.load_dataset("csv:t.csv", options={"label_column": "b"})
    assert ds.record()["feature_columns"] == ["a", "klass"] and ds.num_classes == 5


def test_csv_semicolons_and_constant_column(tmp_path):
    write_csv(tmp_path / "s.csv", [[i, 7, "yes" if i % 2 else "no"] for i in range(20)], ["a", "const", "label"],
              delimiter=";")
    ds = data.load_dataset("csv:s.csv")
    assert ds.input_shape == (2,) and np.all(ds.x_train[:, 1] == 0) and ds.record()["standardize_std"][1] == 1.0


# ---------------------------------------------------------------- bad data: one UsageError line naming the file and fix


@pytest.mark.parametrize("name", ["npz:nope.npz", "folder:nope", "csv:nope.csv"])
def test_missing_path(tmp_path, name):
    with pytest.raises(UsageError, match=r"nope.* does not exist; fix the path") as e:
        data.resolve(name)
    one_line_usage(e)


def test_npz_without_needed_arrays(tmp_path):
    np.savez(tmp_path / "w.npz", images=np.zeros((4, 2, 2)), labels=np.arange(4))
    with pytest.raises(UsageError, match=r"w.npz: needs arrays x_train, y_train, x_test, y_test \(or x and y.*it has "
                                         r"images, labels; save it with np.savez") as e:
        data.resolve("npz:w.npz")
    one_line_usage(e)


def test_npz_not_an_archive(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="g.npz: not a readable .npz archive"):
        data.resolve("npz:g.npz")


@pytest.mark.parametrize("keys", ["xy", "given"])
def test_npz_x_and_y_lengths_differ(tmp_path, keys):
    if keys == "xy":
        np.savez(tmp_path / "l.npz", x=np.zeros((10, 3, 3), np.uint8), y=np.arange(9) % 2)
        msg = "l.npz: x has 10 rows but y has 9; save one label per sample"
    else:
        color_npz(tmp_path / "l.npz", y_test=np.arange(8) % 3)
        msg = "l.npz: x_test has 9 rows but y_test has 8"
    with pytest.raises(UsageError, match=msg) as e:
        data.resolve("npz:l.npz")
    one_line_usage(e)


def test_npz_pickled_labels_are_refused(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.zeros((4, 2)), y=np.array(["a", 1, "b", 2], dtype=object))
    with pytest.raises(UsageError, match="o.npz: labels unreadable"):
        data.resolve("npz:o.npz")


def test_npz_float_labels_and_bad_pixels(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.zeros((4, 2)), y=np.array([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(UsageError, match=r"f.npz: y holds float64 values; labels must be integers or strings"):
        data.resolve("npz:f.npz")
    np.savez(tmp_path / "p.npz", x=np.full((4, 2, 2), 300, np.int32), y=np.arange(4) % 2)
    with pytest.raises(UsageError, match=r"p.npz: x holds integers 300..300; integer images must be pixels 0..255"):
        data.load_dataset("npz:p.npz", options={"test_fraction": 0.5})


@pytest.mark.parametrize("kind", ["npz", "folder", "csv"])
def test_single_class(tmp_path, kind):
    if kind == "npz":
        np.savez(tmp_path / "one", x=np.zeros((6, 2, 2), np.uint8), y=np.zeros(6, int))
        name, msg = "npz:one.npz", r"one.npz: y has only one class \(0\); a classifier needs at least 2 classes"
    elif kind == "folder":
        png_folder(tmp_path / "one", classes=("cat",), n=4)
        name, msg = "folder:one", r"one: has only one class folder \('cat'\); a classifier needs at least 2"
    else:
        write_csv(tmp_path / "one.csv", [[1, "a"], [2, "a"]], ["x", "label"])
        name, msg = "csv:one.csv", r"one.csv: label column 'label' has only one class \('a'\)"
    with pytest.raises(UsageError, match=msg) as e:
        data.resolve(name)
    one_line_usage(e)


def test_class_too_small_for_the_split(tmp_path):
    png_folder(tmp_path / "p", n=4)
    for p in list((tmp_path / "p" / "dog").iterdir())[1:]:
        p.unlink()
    with pytest.raises(UsageError, match=r"p: class 'dog' has 1 images; a test_fraction split needs at least 2 per "
                                         r"class .*; add images to it or remove the class") as e:
        data.resolve("folder:p")
    one_line_usage(e)


def test_test_class_missing_from_train(tmp_path):
    color_npz(tmp_path / "c.npz", y_train=np.arange(30) % 2)
    with pytest.raises(UsageError, match=r"c.npz: class '2' is in the test split but not in the training split"):
        data.resolve("npz:c.npz")
    png_folder(tmp_path / "p", split="given")
    (tmp_path / "p" / "test" / "bird").mkdir()
    shutil.copy(tmp_path / "p" / "test" / "cat" / "img000.png", tmp_path / "p" / "test" / "bird")
    with pytest.raises(UsageError, match=r"test/bird: has no counterpart in train/"):
        data.resolve("folder:p")


@pytest.mark.parametrize("layout", ["empty", "empty-class", "loose", "train-only"])
def test_folder_without_images(tmp_path, layout):
    root = tmp_path / "f"
    root.mkdir()
    if layout == "empty":
        (root / "README").write_text("hi")
        msg = r"f: holds no class subfolders with images \(PNG, JPEG, BMP, GIF\)"
    elif layout == "empty-class":
        png_folder(root, n=3)
        (root / "bird").mkdir()
        (root / "bird" / "x.txt").write_text("")
        msg = r"f/bird: holds no images \(PNG, JPEG, BMP, GIF\); add images or remove the folder"
    elif layout == "loose":
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "a.png")
        msg = "f: holds 1 images but no class subfolders; put each class's images in a subfolder"
    else:
        png_folder(root / "train", n=3)
        msg = "f: has a train/ folder but no test/ folder; add test/"
    with pytest.raises(UsageError, match=msg) as e:
        data.resolve("folder:f")
    one_line_usage(e)


def test_unreadable_image_is_named(tmp_path):
    png_folder(tmp_path / "p", n=3)
    (tmp_path / "p" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    with pytest.raises(UsageError, match=r"p/dog/broken.png: is not a readable image .*; fix or remove the file") as e:
        data.resolve("folder:p")
    one_line_usage(e)


def test_truncated_image_is_named_at_load(tmp_path):
    png_folder(tmp_path / "p", n=3, size=(64, 64))
    img = tmp_path / "p" / "cat" / "img001.png"
    img.write_bytes(img.read_bytes()[:600])  # the header parses; the pixels are cut short
    src = data.resolve("folder:p")  # headers are all resolve reads
    with pytest.raises(UsageError, match=r"p/cat/img001.png: is truncated or unreadable .*; fix or remove the file") as e:
        data.load(src, cache_dir=tmp_path / "cache")
    one_line_usage(e)
    assert not (tmp_path / "cache").exists()


def test_images_of_different_sizes_need_image_size(tmp_path):
    png_folder(tmp_path / "p", n=3, size=(8, 8))
    Image.fromarray(np.zeros((12, 9), np.uint8)).save(tmp_path / "p" / "dog" / "big.png")
    with pytest.raises(UsageError, match=r"p: images differ in size \(.* is 8x8, .*big.png is 12x9\); give image_size "
                                         r"HxW") as e:
        data.resolve("folder:p")
    one_line_usage(e)
    assert data.load_dataset("folder:p", options={"image_size": "8x8"}).input_shape == (8, 8, 1)


def test_csv_ragged_row(tmp_path):
    (tmp_path / "r.csv").write_text("a,b,label\n1,2,x\n3,4,y\n5,6\n7,8,x\n")
    with pytest.raises(UsageError, match=r"r.csv line 4: has 2 fields but the header has 3; fix the row") as e:
        data.resolve("csv:r.csv")
    one_line_usage(e)


@pytest.mark.parametrize("cell, msg", [("", r"r.csv line 3, column 'b': is empty; fill in the value or drop the row"),
                                       ("4x", r"r.csv line 3, column 'b': '4x' is not a number"),
                                       ("nan", r"r.csv line 3, column 'b': 'nan' is not a finite number")])
def test_csv_bad_cell(tmp_path, cell, msg):
    (tmp_path / "r.csv").write_text(f"a,b,label\n1,2,x\n3,{cell},y\n5,6,x\n7,8,y\n")
    with pytest.raises(UsageError, match=msg) as e:
        data.resolve("csv:r.csv")
    one_line_usage(e)


def test_csv_non_numeric_column(tmp_path):
    (tmp_path / "c.csv").write_text("size,color,label\n1,red,x\n2,blue,y\n3,red,x\n4,green,y\n")
    with pytest.raises(UsageError, match=r"c.csv: column 'color' is not numeric \(e.g. 'red' on line 2\); bnexp does "
                                         r"not encode categories: one-hot encode it") as e:
        data.resolve("csv:c.csv")
    one_line_usage(e)


def test_csv_label_column_missing(tmp_path):
    wine_like_csv(tmp_path / "w.csv")
    with pytest.raises(UsageError, match=r"w.csv: has no column 'class' \(label_column\); its columns are f1, f2, "
                                         r"label, f3, f4, f5") as e:
        data.resolve("csv:w.csv", options={"label_column": "class"})
    one_line_usage(e)


def test_csv_empty_and_header_only(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(UsageError, match="e.csv: is empty"):
        data.resolve("csv:e.csv")
    (tmp_path / "h.csv").write_text("a,label\n")
    with pytest.raises(UsageError, match="h.csv: has a header but no data rows"):
        data.resolve("csv:h.csv")


@pytest.mark.parametrize("name, options, msg", [
    ("npz:c.npz", {"image_size": "16x16"}, "image_size does not apply to npz: datasets"),
    ("csv:c.npz", {"color_mode": "rgb"}, "color_mode does not apply to csv: datasets"),
    ("folder:.", {"label_column": "x"}, "label_column does not apply to folder: datasets"),
    ("folder:.", {"image_size": "16y16"}, r"invalid image_size='16y16': write HxW"),
    ("folder:.", {"color_mode": "rgba"}, r"invalid color_mode='rgba': choose one of grayscale, rgb"),
    ("npz:c.npz", {"test_fraction": 1.5}, r"invalid test_fraction=1.5"),
    ("npz:", {}, r"dataset npz: needs a path, e.g. npz:PATH"),
    ("npy:c.npz", {}, r"unknown dataset kind 'npy' \(did you mean 'npz'\?\)"),
    ("c.npz", {}, r"unknown dataset 'c.npz'; to use your own data, write npz:c.npz"),
])
def test_bad_names_and_options(tmp_path, name, options, msg):
    color_npz(tmp_path / "c.npz")
    with pytest.raises(UsageError, match=msg) as e:
        data.resolve(name, options=options)
    one_line_usage(e)


def test_resolve_config(tmp_path):
    from bnexp.config import Config

    write_csv(tmp_path / "n.csv", [[i, i % 3, i % 2] for i in range(20)], ["a", "b", "label"])
    src = data.resolve_config(Config(dataset="csv:n.csv", test_fraction=0.5, label_column="b"))
    assert src.options == (("label_column", "b"), ("test_fraction", 0.5)) and src.num_classes == 3


# ---------------------------------------------------------------- end to end through the CLI
# These train for a few steps (TensorFlow), so they are slower. They need the core that takes
# (N, H, W, C) uint8 images and any class count (bnexp/train, plan, evaluate).

TINY_RUN = ["--set", "steps=4", "--set", "width=8", "--set", "eval_every=2", "--set", "batch_size=8"]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    from conftest import _isolate

    _isolate(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    from conftest import assert_one_error_line, invoke

    return invoke, assert_one_error_line


def _train(invoke, dataset, *extra, results="results"):
    res = invoke(["train", "--variant", "bn-pre", "--dataset", dataset, *TINY_RUN, *extra, "--results", results, "--json"])
    assert res.exit_code == 0, f"{res.stderr}\n{res.exception!r}"
    return json.loads(res.stdout)


@pytest.mark.parametrize("kind", ["npz", "folder", "csv"])
def test_e2e_train_and_eval_each_kind(tmp_path, cli, kind):
    invoke, _ = cli
    if kind == "npz":
        color_npz(tmp_path / "c.npz")
        dataset, shape, classes = "npz:c.npz", [32, 32, 3], 3
    elif kind == "folder":
        png_folder(tmp_path / "p", n=6)  # 2 classes, cat and dog
        dataset, shape, classes = "folder:p", [8, 10, 1], 2
    else:
        wine_like_csv(tmp_path / "w.csv")
        dataset, shape, classes = "csv:w.csv", [5], 3
    rec = _train(invoke, dataset)
    assert rec["status"] == "finished" and rec["dataset_kind"] == kind and rec["input_shape"] == shape
    assert rec["num_classes"] == classes
    res = invoke(["eval", rec["run_id"], "--results", "results", "--json"])
    assert res.exit_code == 0, f"{res.stderr}\n{res.exception!r}"
    out = json.loads(res.stdout)
    assert out["dataset_sha256"] == rec["dataset_sha256"] and out["n_test"] == rec["n_test"]
    assert abs(out["test_accuracy"] - rec["test_accuracy"]) < 1e-6
    # plain Keras: the saved model has one logit per class and scores its recorded accuracy
    import keras

    model = keras.saving.load_model(tmp_path / "results" / rec["run_id"] / "model.keras")
    assert model.output_shape[-1] == classes
    ds = data.load_dataset(dataset, str(tmp_path))
    x = ds.x_test.astype("float32") / 255.0 if ds.x_test.dtype == np.uint8 else ds.x_test
    acc = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=-1) == ds.y_test))
    assert abs(acc - rec["test_accuracy"]) < 1e-6 and len(ds.y_test) == rec["n_test"]


def test_e2e_folder_cnn_and_cache(tmp_path, cli):
    invoke, _ = cli
    png_folder(tmp_path / "p", n=8, mode="RGB")
    rec = _train(invoke, "folder:p", "--set", "model=cnn", "--set", "filters=4")
    assert rec["status"] == "finished" and rec["input_shape"] == [8, 10, 3]
    assert len(list((tmp_path / "results" / ".cache" / "data").glob("folder-*.npz"))) == 1


def test_e2e_compare_on_csv(tmp_path, cli):
    invoke, _ = cli
    wine_like_csv(tmp_path / "w.csv")
    res = invoke(["compare", "plain", "bn-pre", "--dataset", "csv:w.csv", "--seeds", "1", *TINY_RUN,
                  "--results", "results", "--json"])
    assert res.exit_code == 0, f"{res.stderr}\n{res.exception!r}"


def test_e2e_csv_refuses_a_convnet(tmp_path, cli):
    invoke, assert_one_error_line = cli
    wine_like_csv(tmp_path / "w.csv")
    res = invoke(["train", "--variant", "bn-pre", "--dataset", "csv:w.csv", "--set", "model=cnn", *TINY_RUN])
    assert_one_error_line(res, 2, "mlp")
    assert not (tmp_path / "results").exists() or not any(p.name != ".cache" for p in (tmp_path / "results").iterdir())


def _one_dog(t):
    png_folder(t / "p", n=4)
    for p in sorted((t / "p" / "dog").iterdir())[1:]:
        p.unlink()


def _broken_png(t):
    png_folder(t / "p", n=3)
    (t / "p" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")


def _truncated_png(t):
    png_folder(t / "p", n=3, size=(64, 64))
    img = t / "p" / "cat" / "img001.png"
    img.write_bytes(img.read_bytes()[:600])  # the header parses; the pixels are cut short


def _two_sizes(t):
    png_folder(t / "p", n=3, size=(8, 8))
    Image.fromarray(np.zeros((12, 9), np.uint8)).save(t / "p" / "dog" / "big.png")


# every bad-data case of the issue, through the CLI: (make the data in tmp_path, --dataset, phrases)
BAD_DATA = {
    "missing-npz": (lambda t: None, "npz:nope.npz", ["nope.npz", "does not exist; fix the path"]),
    "missing-folder": (lambda t: None, "folder:nowhere", ["nowhere", "does not exist; fix the path"]),
    "missing-csv": (lambda t: None, "csv:nope.csv", ["nope.csv", "does not exist; fix the path"]),
    "npz-arrays": (lambda t: np.savez(t / "w.npz", a=np.zeros(3)), "npz:w.npz", ["w.npz", "needs arrays x_train"]),
    "npz-lengths": (lambda t: np.savez(t / "l.npz", x=np.zeros((10, 3, 3), np.uint8), y=np.arange(9) % 2), "npz:l.npz",
                    ["l.npz: x has 10 rows but y has 9"]),
    "single-class": (lambda t: png_folder(t / "one", classes=("cat",), n=4), "folder:one",
                     ["one: has only one class folder", "at least 2"]),
    "class-too-small": (_one_dog, "folder:p", ["class 'dog' has 1 images", "add images to it or remove the class"]),
    "no-images": (lambda t: (t / "f").mkdir(), "folder:f", ["f: holds no class subfolders with images"]),
    "unreadable-image": (_broken_png, "folder:p", ["p/dog/broken.png: is not a readable image", "fix or remove"]),
    "truncated-image": (_truncated_png, "folder:p", ["p/cat/img001.png: is truncated or unreadable", "fix or remove"]),
    "sizes-differ": (_two_sizes, "folder:p", ["images differ in size", "give image_size"]),
    "csv-ragged": (lambda t: (t / "r.csv").write_text("a,label\n1,x\n2\n"), "csv:r.csv", ["r.csv line 3", "fix the row"]),
    "csv-empty-cell": (lambda t: (t / "r.csv").write_text("a,b,label\n1,2,x\n3,,y\n5,6,x\n7,8,y\n"), "csv:r.csv",
                       ["r.csv line 3, column 'b': is empty"]),
    "csv-non-numeric": (lambda t: (t / "c.csv").write_text("size,color,label\n1,red,x\n2,blue,y\n3,red,x\n4,green,y\n"),
                        "csv:c.csv", ["column 'color' is not numeric", "one-hot encode it"]),
    "csv-label-column": (lambda t: wine_like_csv(t / "w.csv"), "csv:w.csv --set label_column=class",
                         ["has no column 'class'", "its columns are f1, f2, label, f3, f4, f5"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_e2e_bad_data_is_one_line_exit_2(tmp_path, cli, case):
    """Each case: one line naming the file and the fix, exit 2, and no run folder."""
    invoke, assert_one_error_line = cli
    make, dataset, phrases = BAD_DATA[case]
    make(tmp_path)
    res = invoke(["train", "--variant", "bn-pre", "--dataset", *dataset.split(), *TINY_RUN])
    assert_one_error_line(res, 2, *phrases)
    assert not (tmp_path / "results").exists() or not any(p.name != ".cache" for p in (tmp_path / "results").iterdir())


def test_a_changed_byte_trains_anew_and_a_renamed_folder_is_reused(tmp_path):
    """The reuse key holds a KIND:PATH dataset's content hash, not its path."""
    import json as _json

    from PIL import Image as _Image

    from conftest import invoke

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(12):
            _Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / c / f"{i}.png")
    results = tmp_path / "results"

    def compare(folder):
        res = invoke(["compare", "plain", "--seeds", "1", "--dataset", f"folder:{folder}", "--results", results,
                      *TINY_RUN, "--json"])
        assert res.exit_code == 0, res.stderr
        return _json.loads(res.stdout)

    first = compare(root)
    assert first["trained"] == 1
    moved = root.rename(tmp_path / "renamed")
    again = compare(moved)
    assert (again["trained"], again["reused"]) == (0, 1)
    victim = moved / "cats" / "0.png"
    img = np.asarray(_Image.open(victim)).copy()
    img[0, 0] ^= 1  # one pixel, one bit
    _Image.fromarray(img).save(victim)
    changed = compare(moved)
    assert (changed["trained"], changed["reused"]) == (1, 0)
