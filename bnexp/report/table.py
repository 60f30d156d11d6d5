"""Step 6 of the pipeline: records -> rows -> a Rich table, Markdown, CSV or JSON.

Everything here reads flat run records (metrics.json); nothing imports TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from rich.table import Table

from . import stats

METRICS = ("test_accuracy", "test_loss")
# column -> True when higher is better; the best value of each is marked
BEST = {"test_accuracy_mean": True, "test_loss_mean": False, "train_loss_mean": False,
        "steps_to_target": False, "wall_time_s_mean": False}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def compare_rows(records: list[dict], baseline: str, target: float) -> list[dict]:
    """One flat row per (group, variant): stats.compare_table plus convergence and reuse."""
    metrics = METRICS + (("test_accuracy_batchstats",) if any("test_accuracy_batchstats" in r for r in records) else ())
    rows = stats.compare_table(records, baseline=baseline, metrics=metrics)
    base_n = {r["group"]: r["n"] for r in rows if r["variant"] == baseline}
    shared = trained_together(records)
    for row in rows:
        if row["variant"] != baseline and base_n.get(row["group"]) == 0:
            row["test_accuracy_verdict"] = f"baseline {baseline} has no finished run"
        mine = [r for r in records if r.get("variant") == row["variant"] and r.get("group", "") == row["group"]]
        done = [r for r in mine if r.get("status") == "finished"]
        reached = [stats.steps_to_target(r.get("history") or [], target) for r in done]
        hit = [s for s in reached if s is not None]
        row["target_accuracy"] = target
        row["steps_to_target"] = sum(hit) / len(hit) if hit and len(hit) == len(reached) else None
        row["n_reached_target"] = len(hit)
        row["bn_initial_share"] = max((bn_initial_share(r) for r in done), default=None, key=lambda x: x or 0)
        row["n_reused"] = sum(1 for r in mine if r.get("reused"))
        row["n_trained_together"] = sum(1 for r in done if r.get("run_id") in shared)
        row["statuses"] = sorted({r.get("status") for r in mine})
        row["run_ids"] = [r.get("run_id") for r in mine]
    return rows


def trained_together(records: list[dict]) -> set[str]:
    """The run ids, among `records`, whose training loop overlapped another's in time
    (compare's --workers): their wall times include sharing the cores."""
    spans = sorted(((r["train_start_unix"], r["train_end_unix"], r.get("run_id")) for r in records
                    if _finite(r.get("train_start_unix")) and _finite(r.get("train_end_unix"))), key=lambda s: s[0])
    out = set()
    for i, (_, end, run_id) in enumerate(spans):
        for start2, _, other in spans[i + 1:]:
            if start2 >= end:
                break
            out |= {run_id, other}
    return out


# A BN moving average starts at mean 0, variance 1 and keeps momentum**steps of that start.
# Above this share, inference-mode scores describe the initializer as much as the data.
BN_INITIAL_SHARE_NOTE = 0.05


def bn_initial_share(rec: dict) -> float | None:
    """The share of BN's initial statistics still in the moving averages at the end of a run
    (bn_momentum ** steps); None for a run without BN or whose statistics were recalibrated."""
    cfg, spec = rec.get("config") or {}, rec.get("variant_spec") or {}
    layers = list(spec.get("block") or []) + list(spec.get("head") or [])
    if "bn" not in layers or cfg.get("bn_recalibrate") or not _finite(cfg.get("bn_momentum")) or not rec.get("steps"):
        return None
    return float(cfg["bn_momentum"]) ** int(rec["steps"])


def _best(rows: list[dict]) -> dict[str, set[int]]:
    marks: dict[str, set[int]] = {}
    groups = {r["group"] for r in rows}
    for col, higher in BEST.items():
        marks[col] = set()
        for g in groups:
            vals = [(i, r[col]) for i, r in enumerate(rows) if r["group"] == g and _finite(r.get(col))]
            if len(vals) < 2:
                continue
            pick = (max if higher else min)(v for _, v in vals)
            marks[col] |= {i for i, v in vals if v == pick}
    return marks


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


def _diff(row) -> str:
    d = row.get("test_accuracy_diff")
    if row.get("test_accuracy_verdict") is None or not _finite(d):
        return "baseline" if row.get("test_accuracy_verdict") is None else "—"
    lo, hi, p = row.get("test_accuracy_diff_ci_low"), row.get("test_accuracy_diff_ci_high"), row.get("test_accuracy_p_ttest")
    ci = f" [{100 * lo:+.2f}, {100 * hi:+.2f}]" if _finite(lo) and _finite(hi) else ""
    return f"{100 * d:+.2f}{ci}" + (f" p={p:.3g}" if _finite(p) else "")


def _notes(row) -> str:
    notes = []
    if row.get("n_diverged"):
        notes.append(f"diverged {row['n_diverged']}/{row['n'] + row['n_diverged']}")
    if row.get("n_failed"):
        notes.append(f"failed {row['n_failed']}")
    if row.get("n_reused"):
        notes.append(f"reused {row['n_reused']}")
    share = row.get("bn_initial_share")
    if _finite(share) and share > BN_INITIAL_SHARE_NOTE:
        notes.append(f"BN averages {share:.0%} initial")
    return ", ".join(notes)


def _footnote(rows: list[dict]) -> str:
    """What the notes mean: "BN averages N% initial", and wall times of runs trained together."""
    notes = []
    if any(_finite(r.get("bn_initial_share")) and r["bn_initial_share"] > BN_INITIAL_SHARE_NOTE for r in rows):
        notes.append("BN averages N% initial: BN's moving averages keep momentum ** steps of their start (mean 0, "
                     "variance 1), N% after so few steps, so inference-mode scores understate BN; train longer or "
                     "add --set bn_recalibrate=1000.")
    if any(r.get("n_trained_together") for r in rows):  # (a run reused in several sweep cells counts in each)
        notes.append("wall s: runs that trained alongside another (--workers; n_trained_together per row) shared "
                     "the cores; to compare speeds, train with --workers 1.")
    return "\n".join(notes)


def _layout(rows: list[dict], baseline: str) -> tuple[list[str], list[list[tuple[str, str | None]]]]:
    """Headers and, per row, (text, column-for-best-marking) cells, shared by every renderer."""
    target = rows[0]["target_accuracy"] if rows else 0.8
    grouped = any(r["group"] for r in rows)
    batchstats = any("test_accuracy_batchstats_mean" in r for r in rows)
    head = (["group"] if grouped else []) + [
        "variant", "n", "test acc % (mean ± std)", "95% CI", "test loss", "train loss", f"steps to {target:.0%}",
        "wall s", f"Δ acc vs {baseline} (pts) [95% CI]", "verdict", "notes"] + (["acc % BN batch stats"] if batchstats else [])

    def num(r, key, fmt):
        return fmt.format(r[key]) if _finite(r.get(key)) else "—"

    body = []
    for r in rows:
        steps = r.get("steps_to_target")
        acc = "diverged" if r.get("n", 0) == 0 and r.get("n_diverged") else _pm(r, "test_accuracy", pct=True)
        cells = ([(r["group"], None)] if grouped else []) + [
            (r["variant"], None), (str(r["n"]), None), (acc, "test_accuracy_mean"),
            (_ci(r, "test_accuracy", pct=True), None), (_pm(r, "test_loss"), "test_loss_mean"),
            (num(r, "train_loss_mean", "{:.4f}"), "train_loss_mean"),
            (f"{steps:.0f}" if _finite(steps) else "never" if r["n"] else "—", "steps_to_target"),
            (num(r, "wall_time_s_mean", "{:.2f}"), "wall_time_s_mean"),
            (_diff(r), None), (r.get("test_accuracy_verdict") or "", None), (_notes(r), None)]
        if batchstats:
            cells.append((_pm(r, "test_accuracy_batchstats", pct=True), None))
        body.append(cells)
    return head, body


def compare_table(rows: list[dict], baseline: str, title: str = "") -> Table:
    """The comparison as a Rich table, best value per column in bold green with a ★."""
    from rich.markup import escape

    target = rows[0]["target_accuracy"] if rows else 0.8
    caption = (f"mean ± std over seeds; Δ and p: paired by seed against {baseline}; "
               f"★ best in column; steps: first eval step with test accuracy ≥ {target:.0%}")
    foot = _footnote(rows)
    table = Table(title=title or None, caption=caption + ("\n" + foot if foot else ""))
    head, body = _layout(rows, baseline)
    for name in head:
        table.add_column(name, justify="left" if name in ("group", "variant", "verdict", "notes") else "right")
    best = _best(rows)
    for i, cells in enumerate(body):
        table.add_row(*(f"[bold green]{escape(t)} ★[/]" if col and i in best.get(col, ()) else
                        "[red]diverged[/]" if t == "diverged" else escape(t) for t, col in cells))
    return table


def _plain(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in rows]


def to_csv(rows: list[dict]) -> str:
    flat = _plain(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(flat[0]) if flat else [])
    writer.writeheader()
    writer.writerows(flat)
    return buf.getvalue()


def to_markdown(rows: list[dict], baseline: str, plot: str | None = None, command: str = "") -> str:
    """A report for a pull request or README: the table, the verdicts and the plot."""
    head, body = _layout(rows, baseline)
    best = _best(rows)
    lines = [f"`{command}`", ""] if command else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, cells in enumerate(body):
        lines.append("| " + " | ".join(f"**{t}**" if col and i in best.get(col, ()) else t for t, col in cells) + " |")
    foot = _footnote(rows)
    lines += ["", f"Mean ± std over seeds; bold: best in column. Δ: paired by seed against {baseline}, "
              "95% t-interval, paired t-test p-value; verdict at α = 0.05." + (" " + foot if foot else "")]
    if plot:
        lines += ["", f"![learning curves]({plot})"]
    return "\n".join(lines) + "\n"


def to_json(rows: list[dict], records: list[dict], extra: dict | None = None) -> str:
    runs_out = [{k: v for k, v in r.items() if k not in ("history", "traces")} for r in records]
    return json.dumps({**(extra or {}), "rows": rows, "runs": runs_out}, indent=1, default=str)


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


def flatten(rec: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in rec.items():
        if k in ("history", "traces", "run_dir"):
            continue
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, a, b) for every flat key whose values differ, config and environment included."""
    fa, fb = flatten(a), flatten(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]


def save(path: Path, text: str) -> Path:
    from .runs import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    return path
