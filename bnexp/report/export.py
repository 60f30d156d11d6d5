"""The comparison as files: Markdown for a pull request, CSV for a spreadsheet, strict JSON
for programs. All three keep every column, whatever a terminal would show."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..runs import strict  # one definition of strict JSON for every file bnexp writes
from .rows import BN_INITIAL_SHARE_NOTE, _finite, bn_statistics_off
from .table import ORDER, Column, best_marks, columns


def dumps(value, **kwargs) -> str:
    """Strict JSON text of `value`: NaN and infinities as null, other objects as str."""
    return json.dumps(strict(value), allow_nan=False, default=str, **kwargs)


def to_json(rows: list[dict], records: list[dict], extra: dict | None = None) -> str:
    """compare.json: the summary keys (`extra`), the rows and the runs without their history."""
    runs_out = [{k: v for k, v in r.items() if k not in ("history", "traces")} for r in records]
    return dumps({**(extra or {}), "rows": rows, "runs": runs_out}, indent=1)


def _plain(rows: list[dict]) -> list[dict]:
    return [{k: "" if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows]


def to_csv(rows: list[dict]) -> str:
    """Every scalar key of every row; an unknown value (NaN, None) is an empty field."""
    flat = _plain(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in flat for k in r)))
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def _notes_text(row: dict) -> str:
    notes = []
    if row.get("n_failed"):
        seeds = row.get("failed_seeds") or []
        notes.append(f"failed {row['n_failed']}" + (f" (seed {', '.join(map(str, seeds))})" if seeds else ""))
    if row.get("n_reused"):
        notes.append(f"reused {row['n_reused']}")
    share = row.get("bn_initial_share")
    if _finite(share) and share > BN_INITIAL_SHARE_NOTE:
        notes.append(f"BN averages {share:.0%} initial")
    elif bn_statistics_off(row):
        notes.append(f"BN statistics off (variance ratio {row['bn_variance_ratio']:.2g})")
    return ", ".join(notes)


def explanations(rows: list[dict]) -> list[str]:
    """What the Markdown notes mean: "BN averages N% initial", and wall times of runs trained together."""
    notes = []
    if any(_finite(r.get("bn_initial_share")) and r["bn_initial_share"] > BN_INITIAL_SHARE_NOTE for r in rows):
        notes.append("BN averages N% initial: BN's moving averages keep momentum ** steps of their start (mean 0, "
                     "variance 1), N% after so few steps, so inference-mode scores understate BN; train longer or "
                     "add --set bn_recalibrate=1000.")
    if any(bn_statistics_off(r) and not (_finite(r.get("bn_initial_share"))
                                         and r["bn_initial_share"] > BN_INITIAL_SHARE_NOTE) for r in rows):
        notes.append("BN statistics off: the test-time inputs of the row's norms have this many times the variance "
                     "their moving statistics hold (bn_variance_ratio, geometric mean over layers and runs; 1 is "
                     "right), so inference-mode scores understate the net; add --set bn_recalibrate=1000, or train "
                     "longer.")
    if any(r.get("n_trained_together") for r in rows):  # (a run reused in several sweep cells counts in each)
        notes.append("wall s: runs that trained alongside another (--workers; n_trained_together per row) shared "
                     "the cores; to compare speeds, train with --workers 1.")
    return notes


def to_markdown(rows: list[dict], baseline: str, plot: str | None = None, command: str = "") -> str:
    """A report for a pull request or README: every column, the full verdicts and the plot."""
    avail = columns(rows, baseline)
    cols = [avail[n] for n in ORDER if n in avail]
    if any(r["group"] for r in rows):
        cols.insert(0, Column("group", "group", lambda r: r["group"], left=True))
    cols.insert(cols.index(avail["verdict"]) + 1, Column("notes", "notes", _notes_text, left=True))
    best = best_marks(rows)
    lines = [f"`{command}`", ""] if command else []
    lines += ["| " + " | ".join(c.md_title for c in cols) + " |", "|" + "---|" * len(cols)]
    for i, row in enumerate(rows):
        cells = []
        for c in cols:
            text = (c.export or c.cell)(row).replace("\n", ", ").replace("|", "\\|")
            cells.append(f"**{text}**" if c.best and i in best.get(c.best, ()) else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"n: finished runs; mean ± std over them; bold: best in column. Δ: paired by seed against "
              f"{baseline}, ± 95% t-interval; p: paired t-test; verdict at α = 0.05, divergence compared by "
              "Fisher's exact test over the seeds both ran." + "".join(" " + e for e in explanations(rows))]
    if plot:
        lines += ["", f"![learning curves]({plot})"]
    return "\n".join(lines) + "\n"


def save(path: Path, text: str) -> Path:
    """Write `text` to `path` atomically, creating its folder."""
    from ..runs import write_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path
