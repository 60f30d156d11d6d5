"""`csv:PATH`: a table with a header row, one sample per row.

The label column (label_column; default `label`, else the last column) holds the class: integers
(sorted numerically) or strings (sorted as text), mapped to 0..K-1; the names are recorded. Every
other column is a numeric feature. The rows are split by test_fraction (stratified, seeded), and
the features standardized with the training rows' mean and (population) std alone; a constant
column is divided by 1. Both are recorded. The delimiter is whichever of `,` `;` or a tab the
header holds most of. Blank lines are skipped; quoting follows Python's csv module.

sha256: the file's bytes + FORMAT + SPLIT_SPEC + the effective label_column and test_fraction.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core import (DataSource, Dataset, KindSpec, SPLIT_SPEC, bad, changed, encode_labels, frozen, options_bytes,
                   read_bytes, sha256_of, split_record, stratified_split)

FORMAT = "bnexp csv v1"
_ONE_HOT = ("bnexp does not encode categories: one-hot encode it (or drop it) before training, "
            "or name it as the label_column")


@dataclass
class Table:
    header: list[str]
    label: str
    features: list[str]
    x: np.ndarray  # (N, D) float64, unstandardized
    y: np.ndarray  # (N,) int32
    class_names: tuple[str, ...]
    mapping: dict | None


def _delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _number(cell: str) -> float | None:
    try:
        v = float(cell)
    except ValueError:
        return None
    return v


def _parse(path: str, blob: bytes, label_column: str | None) -> Table:
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise bad(path, f"is not UTF-8 text (byte {e.start})", "save it as UTF-8 CSV") from None
    delim = _delimiter(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)
        if header is None:
            raise bad(path, "is empty", "give a CSV with a header row, then one row per sample")
        header = [h.strip() for h in header]
        for i, h in enumerate(header):
            if not h:
                raise bad(path, f"column {i + 1} of the header has no name", "name every column in the header row")
            if header.index(h) != i:
                raise bad(path, f"column {h!r} appears twice in the header", "give each column its own name")
        if label_column is None:
            label = "label" if "label" in header else header[-1]
        elif label_column in header:
            label = label_column
        else:
            raise bad(path, f"has no column {label_column!r} (label_column); its columns are {', '.join(header)}",
                      "set label_column to one of them")
        rows, lines = [], []
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue  # blank line
            if len(row) != len(header):
                raise bad(f"{path} line {reader.line_num}", f"has {len(row)} fields but the header has {len(header)}",
                          "fix the row (a stray delimiter, or a missing value?)")
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as e:
        raise bad(f"{path} line {reader.line_num}", f"is not valid CSV ({e})", "fix the quoting") from None
    if not rows:
        raise bad(path, "has a header but no data rows", "add one row per sample")
    li = header.index(label)
    features = [h for i, h in enumerate(header) if i != li]
    if not features:
        raise bad(path, f"has no feature columns besides the label column {label!r}", "add numeric feature columns")
    cols = list(zip(*rows))
    x = np.empty((len(rows), len(features)), np.float64)
    for j, (i, name) in enumerate((i, h) for i, h in enumerate(header) if i != li):
        cells = [c.strip() for c in cols[i]]
        try:
            x[:, j] = np.asarray(cells, dtype=np.float64)
            if np.isfinite(x[:, j]).all():
                continue
        except ValueError:
            pass
        values = [_number(c) for c in cells]
        filled = [c for c in cells if c]
        words = [c for c, v in zip(cells, values) if c and v is None]
        if filled and 2 * len(words) >= len(filled):  # mostly words: a categorical column, not a typo
            example = words[0]
            raise bad(path, f"column {name!r} is not numeric (e.g. {example!r} on line {lines[cells.index(example)]})",
                      _ONE_HOT)
        for r, (c, v) in enumerate(zip(cells, values)):
            where = f"{path} line {lines[r]}, column {name!r}"
            if not c:
                raise bad(where, "is empty", "fill in the value or drop the row")
            if v is None:
                raise bad(where, f"{c!r} is not a number", "fix the value or drop the row")
            if not math.isfinite(v):
                raise bad(where, f"{c!r} is not a finite number", "fix the value or drop the row")
    raw = [c.strip() for c in cols[li]]
    for r, c in enumerate(raw):
        if not c:
            raise bad(f"{path} line {lines[r]}, column {label!r}", "is empty (no label)", "fill in the class or drop the row")
    try:
        labels = np.asarray([int(c) for c in raw], np.int64)
    except ValueError:
        labels = np.asarray(raw, dtype=str)
    (y,), names, mapping = encode_labels(path, [labels], column=f"label column {label!r}")
    return Table(header, label, features, x, y, names, mapping)


def _effective(table: Table, options: dict) -> dict:
    return {"label_column": table.label, "test_fraction": options["test_fraction"]}


def _sha(blob: bytes, eff: dict) -> str:
    return sha256_of(blob, FORMAT.encode(), SPLIT_SPEC.encode(), options_bytes(eff))


def resolve(name: str, path: Path, options: dict) -> DataSource:
    if not path.is_file():
        raise bad(path, "is not a file", "give the path of a .csv file")
    path = str(path)
    blob = read_bytes(path)
    table = _parse(path, blob, options.get("label_column"))
    eff = _effective(table, options)
    train, test = stratified_split(path, table.y, eff["test_fraction"], table.class_names)
    return DataSource(name, "csv", (path,), path, _sha(blob, eff), len(train), len(test), options=frozen(eff),
                      input_shape=(len(table.features),), num_classes=len(table.class_names))


def load(source: DataSource, cache_dir: Path | None = None) -> Dataset:
    path = source.paths[0]
    blob = read_bytes(path)
    eff = dict(source.options)
    if _sha(blob, eff) != source.sha256:
        raise changed(source)
    table = _parse(path, blob, eff["label_column"])
    train, test = stratified_split(path, table.y, eff["test_fraction"], table.class_names)
    mean = table.x[train].mean(axis=0)
    std = table.x[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def scaled(idx):
        return np.ascontiguousarray((table.x[idx] - mean) / std, dtype=np.float32)

    provenance = {**split_record(eff["test_fraction"]), "label_column": table.label,
                  "feature_columns": table.features, "standardize_mean": mean.tolist(), "standardize_std": std.tolist()}
    if table.mapping is not None:
        provenance["label_mapping"] = table.mapping
    return Dataset(source, scaled(train), table.y[train], scaled(test), table.y[test],
                   num_classes=len(table.class_names), class_names=table.class_names, provenance=provenance)


KIND = KindSpec(
    usage="csv:PATH",
    description="your table: a header row, numeric feature columns and a class column (label_column, default "
                "`label`, else the last); split by test_fraction (stratified), standardized with the training "
                "rows' mean and std; mlp only",
    options=("label_column",),
    resolve=resolve,
    load=load,
)
