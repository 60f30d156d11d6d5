"""What a person reads in the terminal: the comparison table that fits its width, and the
table of one run's record.

The comparison's columns, in the order they are shown:

    variant, norm, n, test acc % (mean ± std), 95% CI of the mean, test loss, train loss,
    steps to target, wall s, Δ pts ± 95% CI, p, verdict, acc % BN batch stats

The priority columns are always there: variant (with its norm, once the rows differ in
normalizer), n, test accuracy, Δ against the baseline with its 95% interval, p and the
verdict. The others join them as the width allows, in this order, and stop at the first that
does not fit (`OPTIONAL`): test loss, train loss, steps to target, wall s, the CI of the mean,
the accuracy with batch statistics (where recorded). `wide=True` shows every column. Every
cell is no_wrap and the columns are chosen by measuring, so Rich never shortens a value.

Notes about a row (a failed run, BN averages still near their start, runs that shared the
cores, why the verdict is what it is) are numbered footnotes under the table, marked ¹ ² ...
in the cell they are about; identical notes share a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .rows import BN_INITIAL_SHARE_NOTE, BN_VARIANCE_RATIO_NOTE, _finite, bn_statistics_off
from .stats import format_p

PRIORITY = ("variant", "norm", "n", "test_accuracy", "diff", "p", "verdict")
OPTIONAL = ("test_loss", "train_loss", "steps_to_target", "wall_time_s", "ci", "batchstats")
ORDER = ("variant", "norm", "n", "test_accuracy", "ci", "test_loss", "train_loss", "steps_to_target",
         "wall_time_s", "diff", "p", "verdict", "batchstats")
# column -> True when higher is better; the best value of each is marked (per group)
BEST = {"test_accuracy_mean": True, "test_loss_mean": False, "train_loss_mean": False,
        "steps_to_target": False, "wall_time_s_mean": False}
VERDICT_STYLE = {"better": "green", "worse": "red", "mixed": "yellow"}
STAR = " ★"


@dataclass(frozen=True)
class Column:
    """One column of the comparison, shared by the terminal table and the Markdown report."""

    name: str
    header: str  # the terminal's; a newline splits it over two lines
    cell: Callable[[dict], str]  # a newline starts a second line in the terminal
    title: str = ""  # Markdown's header (default: `header` on one line)
    best: str | None = None  # the row key whose best value per group is marked
    left: bool = False
    export: Callable[[dict], str] | None = None  # Markdown's cell where it says more (the verdict)

    @property
    def md_title(self) -> str:
        return self.title or self.header.replace("\n", " ")


def _pm(row, m, digits=4, pct=False) -> str:
    mean, std = row.get(f"{m}_mean"), row.get(f"{m}_std")
    if not _finite(mean):
        return "—"
    f = (lambda x: f"{100 * x:.2f}") if pct else (lambda x: f"{x:.{digits}f}")
    return f(mean) + (f" ± {f(std)}" if _finite(std) else "")


def _ci(row, m, pct=False) -> str:
    lo, hi = row.get(f"{m}_ci_low"), row.get(f"{m}_ci_high")
    if not (_finite(lo) and _finite(hi)):
        return "—"
    f = (lambda x: f"{100 * x:.2f}") if pct else (lambda x: f"{x:.4f}")
    return f"[{f(lo)}, {f(hi)}]"


def _num(row, key, fmt) -> str:
    return fmt.format(row[key]) if _finite(row.get(key)) else "—"


def _accuracy(row) -> str:
    """Mean ± std over the finished runs and, on a second line, how many diverged."""
    n, div = row.get("n", 0), row.get("n_diverged") or 0
    lines = [_pm(row, "test_accuracy", pct=True)] if n or not div else []
    if div:
        lines.append(f"diverged {div}/{n + div}")
    return "\n".join(lines)


def _delta(row) -> str:
    """Δ in points ± the half-width of its 95% t-interval (symmetric: mean ± t·sem)."""
    if row.get("verdict") is None:
        return "baseline"
    d, lo, hi = row.get("test_accuracy_diff"), row.get("test_accuracy_diff_ci_low"), row.get("test_accuracy_diff_ci_high")
    if not _finite(d):
        return "—"
    return f"{100 * d:+.2f}" + (f" ± {100 * (hi - lo) / 2:.2f}" if _finite(lo) and _finite(hi) else "")


def _steps(row) -> str:
    s = row.get("steps_to_target")
    return f"{s:.0f}" if _finite(s) else "never" if row.get("n") else "—"


def columns(rows: list[dict], baseline: str) -> dict[str, Column]:
    """The columns that apply to `rows`, by name, in display order (`ORDER`)."""
    target = rows[0].get("target_accuracy", 0.8) if rows else 0.8
    cols = [
        Column("variant", "variant", lambda r: r["variant"], left=True),
        Column("norm", "norm", lambda r: r.get("norm") or "—", left=True),
        Column("n", "n", lambda r: str(r.get("n", 0))),
        Column("test_accuracy", "test acc %\nmean ± std", _accuracy, best="test_accuracy_mean",
               title="test acc % (mean ± std)"),
        Column("ci", "95% CI\nof mean", lambda r: _ci(r, "test_accuracy", pct=True), title="95% CI"),
        Column("test_loss", "test loss\nmean ± std", lambda r: _pm(r, "test_loss"), best="test_loss_mean",
               title="test loss"),
        Column("train_loss", "train\nloss", lambda r: _num(r, "train_loss_mean", "{:.4f}"), best="train_loss_mean"),
        Column("steps_to_target", f"steps to\n{target:.0%}", _steps, best="steps_to_target"),
        Column("wall_time_s", "wall s", lambda r: _num(r, "wall_time_s_mean", "{:.2f}"), best="wall_time_s_mean"),
        Column("diff", "Δ pts\n± 95% CI", _delta, title=f"Δ acc vs {baseline} (pts ± 95% CI)"),
        Column("p", "p", lambda r: "" if r.get("verdict") is None else format_p(r.get("test_accuracy_p_ttest"))),
        Column("verdict", "verdict", lambda r: r.get("verdict") or "", left=True,
               export=lambda r: r.get("verdict_text") or ""),
        Column("batchstats", "acc % BN\nbatch stats", lambda r: _pm(r, "test_accuracy_batchstats", pct=True),
               title="acc % BN batch stats"),
    ]
    norms = {r.get("norm") for r in rows} - {None}
    skip = set()
    if len(norms) < 2 and norms <= {"batch"}:  # BN (or no norm) throughout: the variant says it all
        skip.add("norm")
    if not any("test_accuracy_batchstats_mean" in r for r in rows):
        skip.add("batchstats")
    return {c.name: c for c in cols if c.name not in skip}


def best_marks(rows: list[dict]) -> dict[str, set[int]]:
    """Column key -> indices of the rows holding the best value of their group (where the values differ)."""
    marks: dict[str, set[int]] = {}
    groups = {r["group"] for r in rows}
    for col, higher in BEST.items():
        marks[col] = set()
        for g in groups:
            vals = [(i, r[col]) for i, r in enumerate(rows) if r["group"] == g and _finite(r.get(col))]
            if len({v for _, v in vals}) < 2:  # one value, or all tied: nothing stands out
                continue
            pick = (max if higher else min)(v for _, v in vals)
            marks[col] |= {i for i, v in vals if v == pick}
    return marks


def row_notes(row: dict) -> list[tuple[str, str]]:
    """(column name, footnote text) for what a row's cells cannot say."""
    notes = []
    if row.get("n_failed"):
        k, seeds = row["n_failed"], row.get("failed_seeds") or []
        which = f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})" if seeds else ""
        notes.append(("n", f"{k} run{'s' if k > 1 else ''} failed{which}: an error, not an outcome of "
                           f"{row['variant']}, so not counted; --retry-failed trains {'them' if k > 1 else 'it'} again."))
    share = row.get("bn_initial_share")
    if _finite(share) and share > BN_INITIAL_SHARE_NOTE:
        notes.append(("test_accuracy", f"BN averages {share:.0%} initial: BN's moving averages keep "
                                       "bn_momentum ** steps of their start (mean 0, variance 1), so inference-mode "
                                       "scores understate BN; train longer or add --set bn_recalibrate=1000."))
    elif bn_statistics_off(row):
        # one text for every such row, so they share one footnote; each row's ratio is in the reports
        lo, hi = BN_VARIANCE_RATIO_NOTE
        notes.append(("test_accuracy", f"BN statistics off: the test-time inputs of the row's norms have under {lo:g}x "
                                       f"or over {hi:g}x the variance the moving statistics hold (bn_variance_ratio "
                                       "in the md/csv/json reports), so inference-mode scores understate the net; "
                                       "add --set bn_recalibrate=1000, or train longer."))
    if row.get("n_trained_together"):
        notes.append(("wall_time_s", "wall s: runs that trained alongside another (--workers) shared the cores; "
                                     "to compare speeds, train with --workers 1."))
    text = row.get("verdict_text")
    if text and text != row.get("verdict"):
        notes.append(("verdict", text))
    return notes


_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def _mark(i: int) -> str:
    return str(i).translate(_SUPERSCRIPT)


def _label_lines(label: str, width: int) -> str:
    """A sweep cell's label ("lr=0.1 width=512") broken at spaces to fit `width`."""
    lines: list[str] = []
    for word in label.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def _build(rows: list[dict], cols: list[Column], title: str, stack_norm: bool, fold: bool) -> tuple[Table, list[str]]:
    """The Rich table with these columns, and its footnotes in the order of their marks."""
    shown = {c.name for c in cols}
    best = best_marks(rows)
    starred = {c.name for c in cols if c.best and best.get(c.best)}
    notes: list[str] = []
    bodies = []
    for i, row in enumerate(rows):
        marks: dict[str, str] = {}
        for col, text in row_notes(row):
            if col in shown:
                if text not in notes:
                    notes.append(text)
                marks[col] = marks.get(col, "") + _mark(notes.index(text) + 1)
        cells = []
        for c in cols:
            lines = c.cell(row).split("\n")
            if c.name == "variant" and stack_norm:
                lines.append(f"norm: {row.get('norm') or '—'}")
            cell = Text()
            for j, line in enumerate(lines):
                if j:
                    cell.append("\n")
                style = "red" if line.startswith("diverged") else ""
                if c.name == "verdict":
                    style = VERDICT_STYLE.get(line, "")
                if j == 0:
                    line += marks.get(c.name, "")
                    if c.best and i in best.get(c.best, ()):
                        cell.append(line + STAR, style="bold green")
                        continue
                    if c.name in starred:  # keeps the decimal points of a right-aligned column in line
                        line += " " * len(STAR)
                cell.append(line, style=style)
            cells.append(cell)
        bodies.append(cells)

    table = Table(title=title or None, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for c in cols:
        # fold only as the last resort for a row that cannot fit at all: never in a table that fits
        table.add_column(c.header, justify="left" if c.left else "right", no_wrap=not fold,
                         overflow="fold" if fold else "ellipsis")
    grouped = any(r["group"] for r in rows)
    name_width = max((len(line) for cells in bodies for line in cells[0].plain.split("\n")), default=7)
    for i, (row, cells) in enumerate(zip(rows, bodies)):
        if grouped and (i == 0 or row["group"] != rows[i - 1]["group"]):
            if i:
                table.add_section()
            label = _label_lines(row["group"] or "(no group)", max(name_width, 7))
            table.add_row(Text(label, style="bold"), *([""] * (len(cols) - 1)))
        table.add_row(*cells)
    return table, notes


def _width(console: Console, options: ConsoleOptions, table: Table) -> int:
    return Measurement.get(console, options.update(max_width=10_000), table).maximum


class ComparisonTable:
    """The comparison as a Rich renderable that picks its columns when printed: every column
    with `wide`, else the priority columns and as many of `OPTIONAL` as fit the width (the
    console's, or `width` if narrower); then the caption and the numbered footnotes."""

    def __init__(self, rows: list[dict], baseline: str, title: str = "", *, wide: bool = False,
                 width: int | None = None):
        self.rows, self.baseline, self.title, self.wide, self.width = rows, baseline, title, wide, width

    def layout(self, console: Console, options: ConsoleOptions) -> tuple[Table, list[str], list[str]]:
        """(table, footnotes, headers of the columns left out)."""
        width = min(self.width or options.max_width, options.max_width)
        avail = columns(self.rows, self.baseline)

        def pick(names) -> list[Column]:
            return [avail[n] for n in ORDER if n in names and n in avail]

        if self.wide:
            everything = pick(avail)
            table, notes = _build(self.rows, everything, self.title, False, False)
            if _width(console, options, table) > width:
                table, notes = _build(self.rows, everything, self.title, False, True)
            return table, notes, []
        optional = [n for n in OPTIONAL if n in avail]
        for stack_norm in ((False, True) if "norm" in avail else (False,)):
            chosen = [n for n in PRIORITY if n in avail and not (stack_norm and n == "norm")]
            table, notes = _build(self.rows, pick(chosen), self.title, stack_norm, False)
            if _width(console, options, table) > width:
                continue
            for name in optional:  # in priority order, up to the first that does not fit
                wider, wider_notes = _build(self.rows, pick(chosen + [name]), self.title, stack_norm, False)
                if _width(console, options, wider) > width:
                    break
                chosen, table, notes = chosen + [name], wider, wider_notes
            return table, notes, [avail[n].md_title for n in optional if n not in chosen]
        # Not even the priority columns fit (a very narrow terminal or very long names): fold
        # rather than cut, so every character is still there.
        chosen = [n for n in PRIORITY if n in avail]
        table, notes = _build(self.rows, pick(chosen), self.title, False, True)
        return table, notes, [avail[n].md_title for n in optional]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table, notes, hidden = self.layout(console, options)
        yield table
        target = self.rows[0].get("target_accuracy", 0.8) if self.rows else 0.8
        caption = (f"n: finished runs; test acc: mean ± std over them; Δ: test accuracy minus {self.baseline}'s in "
                   "points, paired by seed, ± its 95% t-interval; p: paired t-test; ★ best in column")
        if any(c.header.startswith("steps") for c in table.columns):
            caption += f"; steps: first eval step with test accuracy ≥ {target:.0%}"
        yield Text(caption + ".", style="dim")
        if hidden:
            yield Text(f"Not shown at this width: {', '.join(hidden)} (--wide shows every column).", style="dim")
        for i, note in enumerate(notes, 1):
            yield Text(f"{_mark(i)} {note}")


def compare_table(rows: list[dict], baseline: str, title: str = "", *, wide: bool = False,
                  width: int | None = None) -> ComparisonTable:
    """The comparison for the terminal: `out.print(compare_table(rows, baseline, title, wide=wide))`.

    It fits the console it is printed on (down to 80 columns with the priority columns; see
    the module docstring for the column order); `width` fits a narrower width, `wide` shows
    every column. Best value per column in bold green with a ★.
    """
    return ComparisonTable(rows, baseline, title, wide=wide, width=width)


def record_table(rec: dict, title: str = "") -> Table:
    """Every flat key of a run record (show): identity, metrics, dataset, environment."""
    table = Table(title=title or rec.get("run_id"), show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in rec.items():
        if k in ("history", "traces"):
            v = f"{len(v)} eval points" if isinstance(v, list) else ("recorded" if v else None)
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        table.add_row(k, "" if v is None else str(v))
    return table
