"""Write small example datasets in the layouts bnexp reads, from data already installed here.

    python -m bnexp.data.examples wine data/wine.csv          # csv:   scikit-learn's wine table
    python -m bnexp.data.examples digits data/digits          # folder: scikit-learn's 8x8 digits as PNGs
    python -m bnexp.data.examples digits-npz data/digits.npz  # npz:   the same digits as x, y

Nothing is downloaded. experiments/wine-csv.yaml uses the first.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def write_wine_csv(path) -> Path:
    """UCI's wine recognition data (178 wines, 13 measurements, 3 cultivars) with a string `label` column."""
    from sklearn.datasets import load_wine

    w = load_wine()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*w.feature_names, "label"])
        for row, t in zip(w.data, w.target):
            out.writerow([*(repr(float(v)) for v in row), w.target_names[t]])
    return path


def _digits():
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()  # 1,797 8x8 images, pixels 0..16
    return np.rint(d.images * (255 / 16)).astype(np.uint8), d.target


def write_digits_folder(path) -> Path:
    """scikit-learn's 8x8 digits as gray PNGs, one folder per digit."""
    from PIL import Image

    x, y = _digits()
    root = Path(path)
    for i, (img, t) in enumerate(zip(x, y)):
        (root / str(t)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(root / str(t) / f"{i:04d}.png")
    return root


def write_digits_npz(path) -> Path:
    import numpy as np

    x, y = _digits()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return path


WRITERS = {"wine": write_wine_csv, "digits": write_digits_folder, "digits-npz": write_digits_npz}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in WRITERS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print(WRITERS[argv[0]](argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
