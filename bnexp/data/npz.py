"""`npz:PATH`: the user's arrays in a NumPy .npz archive.

Keys: x_train, y_train, x_test, y_test (Keras's convention), or just x and y, which are split
by test_fraction (stratified, seeded; see core.SPLIT_SPEC). x is (N, H, W) gray images (a channel
axis is added), (N, H, W, C) images, or (N, D) features. Images stay uint8 when they are 0..255
integers, else float32; features are float32, as saved (not standardized). y holds integers or
strings; they are mapped to 0..K-1 in sorted order, and the names are recorded.

sha256: the file's bytes alone for a given split (so it equals the plain file hash, as for
mnist.npz); for x/y, the bytes + SPLIT_SPEC + test_fraction.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .core import (DataSource, Dataset, KindSpec, SPLIT_SPEC, bad, changed, check_test_classes, encode_labels,
                   frozen, options_bytes, read_bytes, sha256_of, split_record, stratified_split)

GIVEN = ("x_train", "y_train", "x_test", "y_test")
SPLIT = ("x", "y")
_SAVE = "save it with np.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...) or np.savez(PATH, x=..., y=...)"


def _open(path: str, blob: bytes):
    try:
        return np.load(io.BytesIO(blob), allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as e:
        raise bad(path, f"not a readable .npz archive ({type(e).__name__}: {e})", _SAVE) from None


def _header(path: str, z, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype from its .npy header, without reading the data."""
    try:
        with z.zip.open(f"{key}.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise bad(path, f"array {key!r} is unreadable ({e})", _SAVE) from None
    if dtype.hasobject:
        raise bad(path, f"array {key!r} holds Python objects (a pickle), which bnexp does not load",
                  "save numbers, or labels as a str array: np.array(labels, dtype=str)")
    return tuple(int(d) for d in shape), dtype


def _layout(path: str, z) -> tuple[str, ...]:
    files = set(z.files)
    if set(GIVEN) <= files:
        return GIVEN
    if set(SPLIT) <= files:
        return SPLIT
    have = ", ".join(sorted(files)) or "none"
    raise bad(path, f"needs arrays x_train, y_train, x_test, y_test (or x and y, to be split); it has {have}", _SAVE)


def _check_x(path: str, key: str, shape, dtype) -> None:
    if len(shape) not in (2, 3, 4) or 0 in shape[1:]:
        raise bad(path, f"{key} has shape {shape}; expected (N, H, W) or (N, H, W, C) images, or (N, D) features",
                  "reshape it before saving")
    if dtype.kind not in "biuf":
        raise bad(path, f"{key} holds {dtype} values; expected uint8 pixels 0..255, floats, or numbers",
                  "convert it, e.g. x.astype('float32')")


def _input_shape(shape) -> tuple[int, ...]:
    return (*shape[1:], 1) if len(shape) == 3 else tuple(shape[1:])


def _inspect(name: str, path: str, blob: bytes, options: dict):
    """Everything resolve needs and load re-checks: layout, shapes, encoded labels, split indices."""
    with _open(path, blob) as z:
        keys = _layout(path, z)
        xs = [(k, *_header(path, z, k)) for k in keys[::2]]
        try:
            ys = [z[k] for k in keys[1::2]]
        except ValueError as e:
            raise bad(path, f"labels unreadable ({e})", _SAVE) from None
    for (xk, shape, dtype), yk, y in zip(xs, keys[1::2], ys):
        _check_x(path, xk, shape, dtype)
        if shape[0] != len(y):
            raise bad(path, f"{xk} has {shape[0]} rows but {yk} has {len(y)}", "save one label per sample")
    if len(xs) == 2 and _input_shape(xs[0][1]) != _input_shape(xs[1][1]):
        raise bad(path, f"x_train samples are {xs[0][1][1:]} but x_test samples are {xs[1][1][1:]}",
                  "save both splits with the same shape")
    if len(xs) == 2 and (xs[0][2].kind == "f") != (xs[1][2].kind == "f"):
        raise bad(path, f"x_train is {xs[0][2]} but x_test is {xs[1][2]}", "save both as uint8 or both as floats")
    if any(len(y) == 0 for y in ys):
        raise bad(path, "a split has no samples", "save at least one sample in each")
    ys, names, mapping = encode_labels(path, ys, column=keys[1])
    if len(ys) == 2:
        check_test_classes(path, ys[0], ys[1], names)
        return keys, xs[0][1], ys, names, mapping, None
    train, test = stratified_split(path, ys[0], options["test_fraction"], names, noun="samples")
    return keys, xs[0][1], ys, names, mapping, (train, test)


def resolve(name: str, path: Path, options: dict) -> DataSource:
    if not path.is_file():
        raise bad(path, "is not a file", "give the path of an .npz archive")
    path = str(path)
    blob = read_bytes(path)
    keys, shape, ys, names, _, split = _inspect(name, path, blob, options)
    eff = {} if split is None else {"test_fraction": options["test_fraction"]}
    sha = sha256_of(blob) if split is None else sha256_of(blob, SPLIT_SPEC.encode(), options_bytes(eff))
    n_train, n_test = (len(ys[0]), len(ys[1])) if split is None else (len(split[0]), len(split[1]))
    return DataSource(name, "npz", (path,), path, sha, n_train, n_test, options=frozen(eff),
                      input_shape=_input_shape(shape), num_classes=len(names))


def _x(path: str, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:  # features, as saved
        x = x.astype(np.float32)
    else:
        if x.ndim == 3:
            x = x[..., None]
        if x.dtype.kind in "biu":
            if x.size and (x.min() < 0 or x.max() > 255):
                raise bad(path, f"{key} holds integers {x.min()}..{x.max()}; integer images must be pixels 0..255",
                          "save them as uint8 0..255, or as floats")
            x = x.astype(np.uint8, copy=False)
        else:
            x = x.astype(np.float32, copy=False)
    if x.dtype == np.float32 and not np.isfinite(x).all():
        raise bad(path, f"{key} holds NaN or infinite values", "replace or drop those samples")
    return np.ascontiguousarray(x)


def load(source: DataSource, cache_dir: Path | None = None) -> Dataset:
    path = source.paths[0]
    blob = read_bytes(path)
    options = dict(source.options)
    split = "test_fraction" in options
    sha = sha256_of(blob, SPLIT_SPEC.encode(), options_bytes(options)) if split else sha256_of(blob)
    if sha != source.sha256:
        raise changed(source)
    keys, _, ys, names, mapping, idx = _inspect(source.name, path, blob, options)
    with _open(path, blob) as z:
        xs = [_x(path, k, z[k]) for k in keys[::2]]
    if idx is None:
        (x, xt), (y, yt) = xs, ys
    else:
        x, xt, y, yt = xs[0][idx[0]], xs[0][idx[1]], ys[0][idx[0]], ys[0][idx[1]]
    provenance = {**split_record(options.get("test_fraction")), "npz_keys": list(keys)}
    if mapping is not None:
        provenance["label_mapping"] = mapping
    return Dataset(source, x, y, xt, yt, num_classes=len(names), class_names=names, provenance=provenance)


KIND = KindSpec(
    usage="npz:PATH",
    description="your arrays in an .npz: x_train, y_train, x_test, y_test (Keras's keys), or x and y split by "
                "test_fraction (stratified); x as (N, H, W[, C]) images (uint8 0..255 or float) or (N, D) features; "
                "y integers or strings",
    options=(),
    resolve=resolve,
    load=load,
)
