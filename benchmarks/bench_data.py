"""How fast are bnexp's user datasets? Decoding a folder of images, the decode cache, hashing a big npz.

    python benchmarks/bench_data.py            # about half a minute
    python benchmarks/bench_data.py --repeats 1

Measured, each the best of --repeats (noise on a shared machine only ever adds time):
  1. folder, first load: `resolve` (list, read, hash, parse headers) + `load` (re-hash, decode with
     Pillow, write the cache) of 10,000 28x28 gray PNGs in 10 class folders (real Fashion-MNIST test
     images when Debian's dataset-fashion-mnist is installed, else random pixels). Target <= 10 s.
  2. folder, second load: `load` again through the cache (re-hash the files, read and check the
     cached arrays). Target <= 1 s. resolve + load is reported alongside.
  3. npz, hash: `resolve` of a 100 MB npz (x, y; split by test_fraction): read, sha256, read y,
     split. Target <= 1 s. bnexp hashes the bytes every time (no size+mtime shortcut): sha256 runs at
     about 1 GB/s here, so 100 MB costs ~0.1 s, and a hash that cannot be fooled by a copied mtime
     is worth that. The raw sha256 time of the bytes is reported too.

Prints a table (PASS/FAIL per target) and writes benchmarks/bench-data-last-run.json.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from time import perf_counter

import numpy as np
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bnexp import data  # noqa: E402

N_IMAGES = 10_000
NPZ_MB = 100
TARGETS = {"folder_first_load_s": 10.0, "folder_cached_load_s": 1.0, "npz_100mb_resolve_s": 1.0}
console = Console(stderr=True, highlight=False)


def fashion_images(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    folder = Path(data.FASHION_SYSTEM_DIR)
    try:
        raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
        labels = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
        x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:n]
        y = np.frombuffer(labels, np.uint8, offset=8)[:n]
        if len(x) == n:
            return x, y, "Fashion-MNIST test images"
    except OSError:
        pass
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10, "random pixels"


def write_pngs(root: Path, x: np.ndarray, y: np.ndarray) -> int:
    from PIL import Image

    total = 0
    for i, (a, c) in enumerate(zip(x, y)):
        d = root / f"class{int(c)}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{i:05d}.png"
        Image.fromarray(a, "L").save(p)
        total += p.stat().st_size
    return total


def best(fn, repeats: int, before=None) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        if before:
            before()
        t = perf_counter()
        out = fn()
        times.append(perf_counter() - t)
    return min(times), out


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats per measurement; the best counts [3]")
    ap.add_argument("--out", type=Path, default=HERE / "bench-data-last-run.json")
    args = ap.parse_args()
    res: dict = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "commit": git_commit(), "python": platform.python_version(), "cores": os.cpu_count(),
                 "load_average_1m": os.getloadavg()[0], "repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="bnexp-bench-data.") as tmp:
        tmp = Path(tmp)
        x, y, what = fashion_images(N_IMAGES)
        t = perf_counter()
        png_bytes = write_pngs(tmp / "pngs", x, y)
        console.print(f"wrote {N_IMAGES:,} PNGs ({what}, {png_bytes / 1e6:.1f} MB) in {perf_counter() - t:.1f} s")
        res["folder"] = {"images": N_IMAGES, "content": what, "bytes": png_bytes}
        cache = tmp / "results" / ".cache" / "data"

        def first():
            src = data.resolve("folder:" + str(tmp / "pngs"))
            t0 = perf_counter()
            ds = data.load(src, cache_dir=cache)
            return src, ds, perf_counter() - t0

        t_first, (src, ds, t_load) = best(first, args.repeats, before=lambda: shutil.rmtree(cache, ignore_errors=True))
        assert not ds.cached and ds.x_train.shape[1:] == (28, 28, 1) and len(ds.x_train) + len(ds.x_test) == N_IMAGES
        t_resolve, _ = best(lambda: data.resolve("folder:" + str(tmp / "pngs")), args.repeats)
        t_cached, cds = best(lambda: data.load(src, cache_dir=cache), args.repeats)
        assert cds.cached and np.array_equal(cds.x_train, ds.x_train)
        t_cached_both, _ = best(lambda: data.load(data.resolve("folder:" + str(tmp / "pngs")), cache_dir=cache),
                                args.repeats)
        res["folder"].update(first_load_s=t_first, first_load_decode_part_s=t_load, resolve_s=t_resolve,
                             cached_load_s=t_cached, cached_resolve_and_load_s=t_cached_both)

        rng = np.random.default_rng(0)
        n = NPZ_MB * 10**6 // (32 * 32 * 3)
        np.savez(tmp / "big.npz", x=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), y=np.arange(n) % 10)
        size = (tmp / "big.npz").stat().st_size
        blob = (tmp / "big.npz").read_bytes()
        t_sha, _ = best(lambda: hashlib.sha256(blob).hexdigest(), args.repeats)
        del blob
        t_npz, nsrc = best(lambda: data.resolve("npz:" + str(tmp / "big.npz")), args.repeats)
        t_npz_load, _ = best(lambda: data.load(nsrc), 1)
        res["npz"] = {"bytes": size, "samples": n, "resolve_s": t_npz, "sha256_only_s": t_sha, "load_s": t_npz_load,
                      "hashing": "every resolve and load hashes the bytes (no size+mtime cache)"}

    measured = {"folder_first_load_s": t_first, "folder_cached_load_s": t_cached, "npz_100mb_resolve_s": t_npz}
    res["targets"] = {k: {"limit_s": TARGETS[k], "measured_s": v, "pass": v <= TARGETS[k]} for k, v in measured.items()}

    table = Table(title=f"bnexp data ({res['commit']}, load {res['load_average_1m']:.2f}, best of {args.repeats})")
    for c in ("measurement", "seconds", "target", ""):
        table.add_column(c, justify="right" if c in ("seconds", "target") else "left")
    rows = [
        (f"folder: resolve + first load, {N_IMAGES:,} PNGs", t_first, "folder_first_load_s"),
        ("  of which load (re-hash, decode, write cache)", t_load, None),
        ("  resolve alone (list, read, hash, headers)", t_resolve, None),
        ("folder: second load, through the cache", t_cached, "folder_cached_load_s"),
        ("  resolve + load, through the cache", t_cached_both, None),
        (f"npz: resolve {size / 1e6:.0f} MB (read, sha256, y, split)", t_npz, "npz_100mb_resolve_s"),
        ("  sha256 of the bytes alone", t_sha, None),
        ("  load (re-hash, decode, split)", t_npz_load, None),
    ]
    for label, secs, key in rows:
        verdict = "" if key is None else ("[green]PASS[/]" if secs <= TARGETS[key] else "[red]FAIL[/]")
        table.add_row(label, f"{secs:.3f}", "" if key is None else f"<= {TARGETS[key]:g}", verdict)
    Console(highlight=False).print(table)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0 if all(t["pass"] for t in res["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
