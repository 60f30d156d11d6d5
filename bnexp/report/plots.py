"""PNG figures of finished runs: learning curves, sweeps and activation-distribution traces.

matplotlib is imported inside the functions (Agg backend), so importing this module stays
cheap for CLI commands that never plot.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import numpy as np

from bnexp.errors import UsageError

BAND_NOTE = "line: mean over seeds, band: min–max across seeds"


def _pyplot():
    import matplotlib

    # Only pick the backend when we are first to load pyplot: switching later would close
    # the figures of whoever loaded it (a notebook, say), and savefig works on any backend.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return str(path)


def _colors(n: int) -> list:
    cmap = _pyplot().get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _nan_stats(ys: np.ndarray, axis: int = 0):
    """Mean, min, max ignoring NaN; all-NaN columns stay NaN without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(ys, axis=axis), np.nanmin(ys, axis=axis), np.nanmax(ys, axis=axis)


def _finite(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey")


# ---------------------------------------------------------------- learning curves


def _label(record: dict, label_key: str) -> str:
    label = str(record.get(label_key, "?"))
    group = record.get("group") or ""
    return f"{label} {group}" if label_key == "variant" and group else label


def _curves_figure(records: list[dict], label_key: str = "variant"):
    """The Figure `curves` saves (exposed for tests); the caller must close it."""
    plt = _pyplot()
    finished: dict[str, list] = {}
    skipped: dict[str, int] = {}
    for r in records:
        if not r.get("history"):
            continue
        label = _label(r, label_key)
        finished.setdefault(label, [])
        # Diverged runs carry NaN or exploding values that would swamp the mean and band.
        if r.get("status", "finished") == "finished":
            finished[label].append(r["history"])
        else:
            skipped[label] = skipped.get(label, 0) + 1

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((ax_acc, "test_accuracy", "test accuracy"), (ax_loss, "train_loss", "train loss"))
    for color, (label, hists) in zip(_colors(len(finished)), finished.items()):
        if not hists:
            continue
        by_step = [{p["step"]: p for p in h} for h in hists]
        # Seeds can log slightly different eval steps; only steps every seed has are averaged.
        steps = sorted(set.intersection(*(set(s) for s in by_step)))
        note = f"; {skipped[label]} not finished, excluded" if label in skipped else ""
        for ax, key, _ in panels:
            ys = np.array([[_finite(s[step].get(key)) for step in steps] for s in by_step]).reshape(len(hists), -1)
            mean, lo, hi = _nan_stats(ys)
            ax.plot(steps, mean, color=color, label=f"{label} (n={len(hists)}{note})")
            ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
    for ax, _, name in panels:
        ax.set(xlabel="step", ylabel=name, title=f"{name} vs step")
        ax.grid(alpha=0.3)
        if not ax.lines:
            _empty_note(ax, "no finished runs with history")
    if ax_acc.lines:
        ax_acc.legend(fontsize="small")
    fig.suptitle(f"Learning curves ({BAND_NOTE})")
    fig.tight_layout()
    return fig


def curves(records: list[dict], path: str, label_key: str = "variant") -> str:
    """Two panels, test accuracy and train loss vs step, one line per label.

    A label is ``record[label_key]`` (for variants, ``"<variant> <group>"`` when the group
    is non-empty). Each line is the mean across that label's finished seeds on the eval
    steps they all share, with a min..max band across seeds. Records without history are
    skipped; unfinished ones are excluded and counted in the legend. Returns ``path``.
    """
    return _save(_curves_figure(records, label_key), path)


# ---------------------------------------------------------------- sweeps


def _x_from_group(group: str, key: str):
    prefix = f"{key}="
    return group[len(prefix):] if group and group.startswith(prefix) else None


def _sweep_cells(items: list[dict], key: str, metric: str) -> dict:
    """variant -> {x: (mean, low, high, divergence_rate)} from run records or table rows."""
    acc: dict = {}
    for it in items:
        variant = it.get("variant", "?")
        if "config" in it:  # a run record
            x = (it.get("config") or {}).get(key)
            if x is None:
                continue
            cell = acc.setdefault(variant, {}).setdefault(x, {"vals": [], "div": 0})
            if it.get("status") == "finished" and not math.isnan(_finite(it.get(metric))):
                cell["vals"].append(_finite(it.get(metric)))
            elif it.get("status") == "diverged":
                cell["div"] += 1
        else:  # a compare_table row: the swept value is a column or the "key=value" group
            x = it.get(key, _x_from_group(it.get("group", ""), key))
            if x is None:
                continue
            lo, hi = sorted((_finite(it.get(f"{metric}_best")), _finite(it.get(f"{metric}_worst"))))
            acc.setdefault(variant, {})[x] = (_finite(it.get(f"{metric}_mean")), lo, hi,
                                              _finite(it.get("divergence_rate")))
    for cells in acc.values():
        for x, c in cells.items():
            if isinstance(c, dict):
                n = len(c["vals"])
                mean, lo, hi = (float(np.mean(c["vals"])), min(c["vals"]), max(c["vals"])) if n else (math.nan,) * 3
                cells[x] = (mean, lo, hi, c["div"] / (n + c["div"]) if n + c["div"] else math.nan)
    return acc


def _as_number(x):
    if isinstance(x, str):
        x = x.strip()
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _sweep_figure(rows_or_records: list[dict], key: str, metric: str = "test_accuracy"):
    """The Figure `sweep` saves (exposed for tests); the caller must close it."""
    plt = _pyplot()
    cells = _sweep_cells(rows_or_records, key, metric)
    raw = list(dict.fromkeys(x for c in cells.values() for x in c))
    nums = {x: _as_number(x) for x in raw}
    numeric = bool(raw) and all(v is not None for v in nums.values())
    pos = nums if numeric else {x: i for i, x in enumerate(raw)}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, (variant, c) in zip(_colors(len(cells)), cells.items()):
        xs = sorted(c, key=lambda x: pos[x])
        px = [pos[x] for x in xs]
        mean, lo, hi, rate = (np.array(v, dtype=float) for v in zip(*(c[x] for x in xs)))
        ax.plot(px, mean, "o-", color=color, label=variant)
        ax.fill_between(px, lo, hi, color=color, alpha=0.2, linewidth=0)
        for x, m, r in zip(px, mean, rate):
            if r > 0:
                at_bottom = math.isnan(m)
                tf = ax.get_xaxis_transform() if at_bottom else ax.transData
                y = 0.03 if at_bottom else m
                ax.plot([x], [y], "x", color=color, markersize=10, mew=2, transform=tf)
                ax.annotate(f"{r:.0%} div", (x, y), xycoords=tf, textcoords="offset points",
                            xytext=(5, 5), fontsize="small", color=color)
    if numeric and raw and min(nums.values()) > 0 and max(nums.values()) >= 10 * min(nums.values()):
        ax.set_xscale("log")
    if not numeric and raw:
        ax.set_xticks(range(len(raw)), [str(x) for x in raw])
    ax.set(xlabel=key, ylabel=metric, title=f"{metric} vs {key}\n({BAND_NOTE} (finished); x: diverged runs)")
    ax.grid(alpha=0.3)
    if cells:
        ax.legend(fontsize="small")
    else:
        _empty_note(ax, f"no runs with config {key!r}")
    fig.tight_layout()
    return fig


def sweep(rows_or_records: list[dict], key: str, path: str, metric: str = "test_accuracy") -> str:
    """``metric`` vs the swept config value ``key``, one line per variant.

    Accepts run records (x is ``record["config"][key]``; only finished runs feed the mean
    and the min..max band, diverged ones the divergence rate) or `bnexp.report.stats.compare_table`
    rows (x is ``row[key]`` or parsed from a ``"key=value"`` group; band = best..worst).
    Cells with divergence get an ``x`` marker annotated with the divergence rate (at the
    bottom of the axis when no run of the cell finished). The x-axis is logarithmic when
    all values are positive and span at least 10x; non-numeric values are categorical.
    Returns ``path``.
    """
    return _save(_sweep_figure(rows_or_records, key, metric), path)


# ---------------------------------------------------------------- activation traces


def _trace_data(record: dict):
    """(traces dict, values array [step, layer, unit, percentile], (low, mid, high) indices)."""
    tr = record.get("traces")
    if not tr or not tr.get("values"):
        raise UsageError(f"run {record.get('run_id', '?')} has no activation traces; re-run it with tracing on")
    vals = np.asarray(tr["values"], dtype=float)
    pct = np.asarray(tr["percentiles"], dtype=float)
    return tr, vals, (int(np.argmin(pct)), int(np.argmin(np.abs(pct - 50))), int(np.argmax(pct)))


def _draw_trace(ax, record: dict, layer: int, units: int, legend: bool = True) -> None:
    tr, vals, (lo, mid, hi) = _trace_data(record)
    p = [int(v) if float(v).is_integer() else v for v in tr["percentiles"]]
    steps = tr["steps"]
    n_units = min(units, vals.shape[2])
    for color, u in zip(_colors(n_units), range(n_units)):
        unit = tr.get("units", list(range(vals.shape[2])))[u]
        ax.plot(steps, vals[:, layer, u, mid], color=color, label=f"unit {unit} p{p[mid]}")
        ax.fill_between(steps, vals[:, layer, u, lo], vals[:, layer, u, hi], color=color, alpha=0.25,
                        linewidth=0, label=f"unit {unit} p{p[lo]}–p{p[hi]}")
    ax.set(xlabel="step", ylabel="input to nonlinearity", title=tr["layers"][layer])
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize="x-small")


def _traces_figure(record: dict, units: int = 1):
    """The Figure `traces` saves (exposed for tests); the caller must close it."""
    plt = _pyplot()
    n_layers = _trace_data(record)[1].shape[1]
    fig, axes = plt.subplots(1, n_layers, figsize=(4.5 * n_layers, 3.6), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        _draw_trace(ax, record, layer, units)
    fig.suptitle(f"{record.get('variant', '?')} (seed {record.get('seed', '?')}): "
                 "distribution of the input to the nonlinearity")
    fig.tight_layout()
    return fig


def traces(record: dict, path: str, units: int = 1) -> str:
    """Ioffe & Szegedy Fig. 1(b,c) for one run: per traced layer, the low/median/high
    percentiles (15/50/85) of the input to the nonlinearity vs step, for the first
    ``units`` traced units (median line, p15..p85 band). Raises `UsageError` for a run
    without traces. Returns ``path``.
    """
    return _save(_traces_figure(record, units), path)


def _traces_compare_figure(records: list[dict], units: int = 1):
    """The Figure `traces_compare` saves (exposed for tests); the caller must close it."""
    plt = _pyplot()
    chosen: dict[str, dict] = {}
    for r in records:
        if r.get("traces") and r["traces"].get("values"):
            v = r.get("variant", "?")
            if v not in chosen or r.get("seed", 0) < chosen[v].get("seed", 0):
                chosen[v] = r
    if not chosen:
        raise UsageError("none of the runs has activation traces; re-run with tracing on")
    n_rows = max(_trace_data(r)[1].shape[1] for r in chosen.values())
    fig, axes = plt.subplots(n_rows, len(chosen), figsize=(4.5 * len(chosen), 3.3 * n_rows),
                             squeeze=False, sharey="row", sharex="col")
    for col, (variant, r) in enumerate(chosen.items()):
        n_layers = _trace_data(r)[1].shape[1]
        for row in range(n_rows):
            ax = axes[row][col]
            if row < n_layers:
                _draw_trace(ax, r, row, units, legend=row == col == 0)
                ax.set_title(f"{variant} (seed {r.get('seed', '?')}): {ax.get_title()}")
            else:
                ax.set_axis_off()
            if col:
                ax.set_ylabel("")
            if row < n_rows - 1:
                ax.set_xlabel("")
    fig.suptitle("Input to the nonlinearity over training (line: median; band: low–high traced percentiles)")
    fig.tight_layout()
    return fig


def traces_compare(records: list[dict], path: str, units: int = 1) -> str:
    """`traces` side by side: one column per variant, one row per traced layer, shared
    y-limits along each row so the variants' distributions compare directly (the paper's
    plain vs BN figure). Per variant the traced run with the lowest seed is shown. Raises
    `UsageError` if no record has traces. Returns ``path``.
    """
    return _save(_traces_compare_figure(records, units), path)
