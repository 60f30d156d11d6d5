"""`folder:PATH`: one subfolder of images per class, as keras.utils.image_dataset_from_directory expects.

    PATH/cat/*.png, PATH/dog/*.jpg, ...                  split by test_fraction (stratified, seeded)
    PATH/train/cat/..., PATH/test/cat/..., ...           the split as given

Images (PNG, JPEG, BMP, GIF; first frame) are looked for in each class folder and its subfolders;
hidden files and other files are skipped. Class names are the class folders' names, sorted.
They are decoded with Pillow to uint8 (N, H, W, C): converted to color_mode (grayscale: C=1,
rgb: C=3; default grayscale if every file is, else rgb), then resized (bilinear) to image_size
(default: the files' size, when they all share one).

Order and hash do not depend on file names or times: within a class, images are ordered by
the sha256 of their bytes, and the dataset's sha256 is over FORMAT, the effective options, the
class names, and each image's (split, class, sha256 of its bytes). So a renamed or moved root
folder or image file is the same dataset; one changed byte, a moved image between classes, a
renamed class or another image_size/color_mode/test_fraction is a new one.

Decoded arrays are cached in CACHE_DIR/folder-<sha256>.npz, with the sha256 of their bytes; a
cache file whose arrays do not match that digest, or that does not match the source, is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .core import (DataSource, Dataset, KindSpec, SPLIT_SPEC, bad, changed, check_test_classes, frozen,
                   hw_text, image_size as parse_hw, options_bytes, read_bytes, split_record, stratified_split)

FORMAT = "bnexp folder v1"
CACHE_FORMAT = "bnexp folder cache v1"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_KINDS = "PNG, JPEG, BMP, GIF"
# Pillow modes bnexp reads as gray by default; any other readable mode is color.
GRAY_MODES = {"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_FIX = "fix or remove the file"


@dataclass
class Listing:
    """The images found under a root, in canonical order: by split, class name, content hash."""

    root: Path
    given: bool  # train/ and test/ folders
    class_names: tuple[str, ...]
    split: list[int] = field(default_factory=list)  # 0 train, 1 test; all 0 when not given
    label: list[int] = field(default_factory=list)
    digest: list[bytes] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    info: list = field(default_factory=list)  # what on_file returned per image

    def sha256(self, options: dict) -> str:
        h = hashlib.sha256(FORMAT.encode())
        h.update(SPLIT_SPEC.encode() if not self.given else b"given")
        h.update(options_bytes(options))
        h.update(json.dumps(self.class_names).encode())
        for s, c, d in zip(self.split, self.label, self.digest):
            h.update(f"{s}/{c}:".encode())
            h.update(d)
        return h.hexdigest()


def _images_under(folder) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(EXTENSIONS)]
    return out


def _class_dirs(folder: Path) -> dict[str, Path]:
    with os.scandir(folder) as it:
        return {e.name: Path(e.path) for e in sorted(it, key=lambda e: e.name)
                if e.is_dir() and not e.name.startswith(".")}


def _scan(root: Path, on_file: Callable[[str, bytes], object] | None) -> Listing:
    """Find, read and hash every image; on_file(path, bytes) runs once per image, its result kept in `info`."""
    train, test = root / "train", root / "test"
    if train.is_dir() != test.is_dir():
        have, lack = ("train", "test") if train.is_dir() else ("test", "train")
        raise bad(root, f"has a {have}/ folder but no {lack}/ folder",
                  f"add {lack}/ with the same class subfolders, or put the class folders directly in {root} "
                  "to split them by test_fraction")
    given = train.is_dir()
    splits = [train, test] if given else [root]
    per_split = [_class_dirs(d) for d in splits]
    if not per_split[0]:
        loose = [p for p in _images_under(splits[0]) if Path(p).parent == splits[0]]
        if loose:
            raise bad(splits[0], f"holds {len(loose)} images but no class subfolders",
                      "put each class's images in a subfolder named after the class (cat/, dog/, ...)")
        raise bad(splits[0], f"holds no class subfolders with images ({_KINDS})",
                  "put each class's images in a subfolder named after the class (cat/, dog/, ...)")
    if given:
        extra = sorted(set(per_split[1]) - set(per_split[0]))
        if extra:
            raise bad(test / extra[0], "has no counterpart in train/", f"add {train / extra[0]} or remove it")
    names = tuple(per_split[0])
    if len(names) < 2:
        raise bad(splits[0], f"has only one class folder ({names[0]!r})", "a classifier needs at least 2 class subfolders")
    listing = Listing(root, given, names)
    for s, classes in enumerate(per_split):
        for c, name in enumerate(names):
            if name not in classes:
                continue
            files = _images_under(classes[name])
            if not files:
                raise bad(classes[name], f"holds no images ({_KINDS})", "add images or remove the folder")
            found = []
            for p in files:  # each file's bytes are dropped once hashed and looked at
                blob = read_bytes(p)
                found.append((hashlib.sha256(blob).digest(), p, on_file(p, blob) if on_file else None))
            found.sort(key=lambda t: (t[0], t[1]))  # identical bytes decode the same, so ties do not matter
            for d, p, info in found:
                listing.split.append(s)
                listing.label.append(c)
                listing.digest.append(d)
                listing.path.append(p)
                listing.info.append(info)
    return listing


def _open(path: str, blob: bytes):
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(blob))
        im.size, im.mode  # noqa: B018 - the header is parsed by now
    except Exception as e:  # Pillow raises many kinds for a bad file
        raise bad(path, f"is not a readable image ({type(e).__name__}: {e})", _FIX) from None
    return im


_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = {2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}  # color type -> Pillow's mode (0, gray, depends on the depth)


def _png_header(blob: bytes):
    """(H, W, mode) from a PNG's IHDR chunk, the way Pillow reads it; None if this is not a plain PNG."""
    if len(blob) < 29 or blob[:8] != _PNG or blob[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(blob[16:20], "big"), int.from_bytes(blob[20:24], "big")
    depth, color = blob[24], blob[25]
    mode = ("I;16" if depth == 16 else "1" if depth == 1 else "L") if color == 0 else _PNG_MODES.get(color)
    return (h, w, mode) if mode and h and w else None


def _header(path: str, blob: bytes):
    """(H, W, mode), from the file's header only (the pixels are checked when load decodes them)."""
    if (fast := _png_header(blob)) is not None:  # Pillow's open costs ~10x more; 10,000 PNGs add up
        return fast
    im = _open(path, blob)
    if im.mode not in GRAY_MODES and im.mode not in ("P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"):
        raise bad(path, f"has pixel mode {im.mode}, which bnexp does not read", "save it as 8-bit gray or RGB")
    return im.size[1], im.size[0], im.mode  # H, W, mode


def _decode(path: str, blob: bytes, hw: tuple[int, int], mode: str) -> tuple[np.ndarray, bool]:
    """(H, W, C) uint8 pixels and whether the image was resized."""
    from PIL import Image

    im = _open(path, blob)
    try:
        im.seek(0)
        im.load()
        if im.mode in _SIXTEEN_BIT:  # Pillow's own conversion to L would clip, not scale
            a = np.asarray(im).astype(np.float64)
            im = Image.fromarray(np.clip(np.rint(a / 257), 0, 255).astype(np.uint8), "L")
        im = im.convert("L" if mode == "grayscale" else "RGB")
        resized = im.size != (hw[1], hw[0])
        if resized:
            im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # truncated files surface here, as OSError or SyntaxError
        raise bad(path, f"is truncated or unreadable ({type(e).__name__}: {e})", _FIX) from None
    return (a[..., None] if a.ndim == 2 else a), resized


def _effective(listing: Listing, options: dict) -> dict:
    """The options that shape the arrays, defaults filled in from the files' headers."""
    sizes = {}
    for p, (h, w, _) in zip(listing.path, listing.info):
        sizes.setdefault((h, w), p)
    hw = options.get("image_size")
    if hw is None:
        if len(sizes) > 1:
            (a, pa), (b, pb) = list(sizes.items())[:2]
            raise bad(listing.root, f"images differ in size ({pa} is {hw_text(a)}, {pb} is {hw_text(b)})",
                      "give image_size HxW (e.g. --set image_size=32x32) to resize them all")
        hw = next(iter(sizes))
    mode = options.get("color_mode")
    if mode is None:
        mode = "grayscale" if all(m in GRAY_MODES for _, _, m in listing.info) else "rgb"
    eff = {"image_size": hw_text(hw), "color_mode": mode}
    if not listing.given:
        eff["test_fraction"] = options["test_fraction"]
    return eff


def _split(listing: Listing, test_fraction: float | None):
    y = np.asarray(listing.label, np.int32)
    if listing.given:
        s = np.asarray(listing.split)
        train, test = np.flatnonzero(s == 0), np.flatnonzero(s == 1)
        if not len(test):
            raise bad(listing.root / "test", f"holds no images ({_KINDS})", "add test images to its class folders")
        check_test_classes(listing.root, y[train], y[test], listing.class_names)
        return train, test
    return stratified_split(listing.root, y, test_fraction, listing.class_names, noun="images")


def resolve(name: str, path: Path, options: dict) -> DataSource:
    if not path.is_dir():
        raise bad(path, "is not a folder", "give a folder with one subfolder of images per class")
    listing = _scan(path, _header)
    eff = _effective(listing, options)
    train, test = _split(listing, eff.get("test_fraction"))
    h, w = parse_hw(eff["image_size"])
    c = 1 if eff["color_mode"] == "grayscale" else 3
    return DataSource(name, "folder", (str(path),), str(path), listing.sha256(eff), len(train), len(test),
                      options=frozen(eff), input_shape=(h, w, c), num_classes=len(listing.class_names))


# ---------------------------------------------------------------- cache


ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _arrays_sha256(arrays: dict) -> str:
    h = hashlib.sha256()
    for k in ARRAYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def cache_file(cache_dir, source: DataSource) -> Path:
    return Path(cache_dir) / f"folder-{source.sha256}.npz"


def _read_cache(file: Path, source: DataSource) -> dict | None:
    """The cached arrays if the file is intact and describes exactly `source`, else None (rebuild)."""
    try:
        with np.load(file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ARRAYS}
    except Exception:  # missing, truncated, not an npz, no meta: all mean "rebuild"
        return None
    ok = (meta.get("format") == CACHE_FORMAT and meta.get("source_sha256") == source.sha256
          and meta.get("arrays_sha256") == _arrays_sha256(arrays)
          and arrays["x_train"].dtype == np.uint8 and arrays["x_train"].shape == (source.n_train, *source.input_shape)
          and arrays["x_test"].shape == (source.n_test, *source.input_shape))
    return arrays if ok else None


def _write_cache(file: Path, source: DataSource, arrays: dict, resized: int) -> None:
    """Write through a temp file and a rename; a cache that cannot be written is skipped, not an error."""
    meta = {"format": CACHE_FORMAT, "source_sha256": source.sha256, "arrays_sha256": _arrays_sha256(arrays),
            "origin": source.origin, "resized": resized}
    tmp = None
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}.", suffix=".part")
        with os.fdopen(fd, "wb") as out:
            np.savez(out, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, file)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def load(source: DataSource, cache_dir: Path | None = None) -> Dataset:
    root = Path(source.paths[0])
    eff = dict(source.options)
    hw, mode = parse_hw(eff["image_size"]), eff["color_mode"]
    file = cache_file(cache_dir, source) if cache_dir is not None else None
    arrays = _read_cache(file, source) if file is not None else None
    if not root.is_dir():
        raise changed(source)
    # Every load re-reads and re-hashes the files, cache or not: a run must train on what it records.
    listing = _scan(root, None if arrays is not None else (lambda p, b: _decode(p, b, hw, mode)))
    if listing.sha256(eff) != source.sha256:
        raise changed(source)
    if arrays is None:
        x = np.stack([a for a, _ in listing.info]) if listing.info else np.zeros((0, *source.input_shape), np.uint8)
        resized = sum(r for _, r in listing.info)
        y = np.asarray(listing.label, np.int32)
        train, test = _split(listing, eff.get("test_fraction"))
        arrays = {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}
        if file is not None:
            _write_cache(file, source, arrays, resized)
        cached = False
    else:
        cached = True
    provenance = {**split_record(eff.get("test_fraction")), "image_size": eff["image_size"],
                  "color_mode": mode, "image_resize": "bilinear (Pillow), where a file's size differs"}
    return Dataset(source, *(arrays[k] for k in ARRAYS), num_classes=len(listing.class_names),
                   class_names=listing.class_names, provenance=provenance, cached=cached)


KIND = KindSpec(
    usage="folder:PATH",
    description="your images (PNG, JPEG, BMP, GIF), one subfolder per class; PATH/train and PATH/test give the "
                "split, else test_fraction (stratified); options image_size HxW (default: the files' size), "
                "color_mode grayscale|rgb (default: the files'); decoded once, then cached",
    options=("image_size", "color_mode"),
    resolve=resolve,
    load=load,
)
