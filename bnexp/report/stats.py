"""Statistics over finished runs: per-variant summaries and seed-paired comparisons.

All tests and intervals come from `scipy.stats`; this module only pairs, filters and
converts. Every returned value is a plain Python int/float/str/None/list (NaN stays
``float('nan')``), so results go straight into JSON.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats as st

NAN = float("nan")


def _t_interval(x: np.ndarray, confidence: float) -> tuple[float, float]:
    """Student-t CI of the mean; NaN for n < 2, a point for zero spread (scipy gives NaN)."""
    if x.size < 2:
        return NAN, NAN
    mean, sem = float(np.mean(x)), float(st.sem(x))
    if sem == 0.0:
        return mean, mean
    lo, hi = st.t.interval(confidence, x.size - 1, loc=mean, scale=sem)
    return float(lo), float(hi)


def summarize(values: Sequence[float], confidence: float = 0.95, higher_is_better: bool = True) -> dict:
    """Summary of one metric across seeds.

    Returns ``{"n", "mean", "std", "ci_low", "ci_high", "best", "worst"}``: ``std`` uses
    ddof=1 and the CI is the t-interval of the mean (``scipy.stats.t.interval`` with the
    standard error); both are NaN when n < 2. ``best`` is the max (the min when
    ``higher_is_better`` is False, e.g. for losses), ``worst`` the other extreme. All values
    are NaN when ``values`` is empty.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return {"n": 0, "mean": NAN, "std": NAN, "ci_low": NAN, "ci_high": NAN, "best": NAN, "worst": NAN}
    lo, hi = _t_interval(x, confidence)
    best, worst = (np.max(x), np.min(x)) if higher_is_better else (np.min(x), np.max(x))
    return {
        "n": int(x.size),
        "mean": float(np.mean(x)),
        "std": float(np.std(x, ddof=1)) if x.size > 1 else NAN,
        "ci_low": lo,
        "ci_high": hi,
        "best": float(best),
        "worst": float(worst),
    }


def paired(
    a: Sequence[float],
    b: Sequence[float],
    confidence: float = 0.95,
    higher_is_better: bool = True,
) -> dict:
    """Compare candidate ``b`` against baseline ``a``, paired by position (same seed).

    With ``d = b - a`` returns ``{"n", "mean_diff", "ci_low", "ci_high", "p_ttest",
    "p_wilcoxon", "p_bootstrap", "verdict"}``:

    - ``mean_diff`` and the t-interval ``ci_low..ci_high`` are of the mean of ``d`` (raw
      sign: for a loss, a negative ``mean_diff`` is an improvement);
    - ``p_ttest`` is ``scipy.stats.ttest_rel(b, a).pvalue``;
    - ``p_wilcoxon`` is ``scipy.stats.wilcoxon(d).pvalue`` (NaN if scipy refuses);
    - ``p_bootstrap`` is an exact sign-flip permutation test of mean(d)
      (``scipy.stats.permutation_test``, ``permutation_type="samples"``). With the few
      seeds these experiments have, a bootstrap resamples only a handful of distinct sets
      and its intervals under-cover; flipping the signs of the differences is exact under
      the null of symmetric differences, needs no normality, and for n <= 13 all 2**n sign
      patterns are enumerated so the p-value is deterministic (above that, 9999 random
      patterns with ``random_state=0``).

    Verdict rule: with alpha = 1 - confidence, the difference is significant when
    ``p_ttest < alpha``; then the verdict is ``"better"`` when the mean difference points
    the good way (``> 0``, or ``< 0`` when ``higher_is_better`` is False) and ``"worse"``
    otherwise. Anything else is ``f"no significant difference at n={n}"``. With n < 2 all
    p-values are NaN; when every difference is exactly 0 they are all 1.0 (scipy's t-test
    returns NaN there). Note that with n <= 5 the two-sided Wilcoxon and permutation
    p-values cannot fall below 0.0625, which is why the verdict rests on the t-test.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} baseline vs {y.size} candidate")
    d = y - x
    n = int(d.size)
    lo, hi = _t_interval(d, confidence)
    out = {"n": n, "mean_diff": float(np.mean(d)) if n else NAN, "ci_low": lo, "ci_high": hi,
           "p_ttest": NAN, "p_wilcoxon": NAN, "p_bootstrap": NAN}
    if n >= 2 and np.all(d == 0):
        out.update(p_ttest=1.0, p_wilcoxon=1.0, p_bootstrap=1.0)
    elif n >= 2:
        # Near-constant differences make scipy warn about precision; the p-values stay usable.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out["p_ttest"] = float(st.ttest_rel(y, x).pvalue)
            try:
                out["p_wilcoxon"] = float(st.wilcoxon(d).pvalue)
            except ValueError:
                pass
            perm = st.permutation_test((d,), np.mean, permutation_type="samples",
                                       n_resamples=9999, random_state=0)
            out["p_bootstrap"] = float(perm.pvalue)
    alpha = 1.0 - confidence
    if out["p_ttest"] < alpha:  # False for NaN
        good = out["mean_diff"] > 0 if higher_is_better else out["mean_diff"] < 0
        out["verdict"] = "better" if good else "worse"
    else:
        out["verdict"] = f"no significant difference at n={n}"
    return out


def _higher_is_better(metric: str) -> bool:
    return "loss" not in metric


def _value(record: dict, key: str) -> float | None:
    v = record.get(key)
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def compare_table(
    records: list[dict],
    baseline: str,
    metrics: Sequence[str] = ("test_accuracy", "test_loss"),
    group_key: str = "group",
    confidence: float = 0.95,
) -> list[dict]:
    """One flat row per (group, variant), in first-seen order, compared with ``baseline``.

    Only records with status ``"finished"`` feed the statistics; the others are counted
    per row as ``n_diverged`` and ``n_failed`` (failed, interrupted, or any other status
    such as "broken"; "running" records and records without a variant are ignored), with
    ``divergence_rate = n_diverged / (n + n_diverged)`` (NaN when both are 0).
    For each metric ``m`` the row holds ``m_mean, m_std, m_ci_low, m_ci_high, m_best,
    m_worst`` (see `summarize`; metrics whose name contains "loss" are lower-is-better) and
    the comparison with the baseline variant of the same group, pairing runs by seed over
    the seeds finished in both: ``m_diff, m_diff_ci_low, m_diff_ci_high, m_p_ttest,
    m_p_wilcoxon, m_p_bootstrap, m_verdict`` (see `paired`; all None on the baseline row).
    Also ``train_loss_mean``, ``wall_time_s_mean``, ``seeds`` (sorted seeds of the finished
    runs) and ``paired_seeds`` (sorted seeds compared with the baseline; [] on its row).

    A metric value that is missing or non-finite in a finished run is left out of that
    metric only. If a seed has several finished runs in one cell, the one with the
    greatest ``run_id`` (run ids start with a timestamp, so the latest) is used.
    """
    # Running runs have no outcome yet; a record without a variant can't be placed in a row.
    records = [r for r in records if r.get("status") != "running" and r.get("variant") is not None]
    cells: dict[tuple, dict] = {}
    # Sorting by run_id first makes "latest run wins" independent of input order.
    for r in sorted(records, key=lambda r: str(r.get("run_id", ""))):
        cell = cells.setdefault((r.get(group_key) or "", r["variant"]), {"runs": {}, "div": 0, "fail": 0})
        if r.get("status") == "finished":
            cell["runs"][r["seed"]] = r
        elif r.get("status") == "diverged":
            cell["div"] += 1
        else:
            cell["fail"] += 1
    order = list(dict.fromkeys((r.get(group_key) or "", r["variant"]) for r in records))

    rows = []
    for group, variant in order:
        cell = cells[(group, variant)]
        runs = cell["runs"]
        n, n_div = len(runs), cell["div"]
        row = {"group": group, "variant": variant, "n": n, "n_diverged": n_div, "n_failed": cell["fail"],
               "divergence_rate": n_div / (n + n_div) if n + n_div else NAN}
        base = cells.get((group, baseline), {"runs": {}})["runs"]
        shared = sorted(set(runs) & set(base))
        is_base = variant == baseline
        for m in metrics:
            hib = _higher_is_better(m)
            vals = [v for v in (_value(r, m) for r in runs.values()) if v is not None]
            for k, v in summarize(vals, confidence, hib).items():
                if k != "n":
                    row[f"{m}_{k}"] = v
            if is_base:
                cmp = dict.fromkeys(("mean_diff", "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "p_bootstrap", "verdict"))
            else:
                pairs = [(_value(base[s], m), _value(runs[s], m)) for s in shared]
                pairs = [p for p in pairs if None not in p]
                cmp = paired([p[0] for p in pairs], [p[1] for p in pairs], confidence, hib)
            row.update({f"{m}_diff": cmp["mean_diff"], f"{m}_diff_ci_low": cmp["ci_low"],
                        f"{m}_diff_ci_high": cmp["ci_high"], f"{m}_p_ttest": cmp["p_ttest"],
                        f"{m}_p_wilcoxon": cmp["p_wilcoxon"], f"{m}_p_bootstrap": cmp["p_bootstrap"],
                        f"{m}_verdict": cmp["verdict"]})
        for key in ("train_loss", "wall_time_s"):
            vals = [v for v in (_value(r, key) for r in runs.values()) if v is not None]
            row[f"{key}_mean"] = float(np.mean(vals)) if vals else NAN
        row["seeds"] = sorted(int(s) for s in runs)
        row["paired_seeds"] = [] if is_base else [int(s) for s in shared]
        rows.append(row)
    return rows


def steps_to_target(history: list[dict], target: float, key: str = "test_accuracy") -> int | None:
    """The first eval step whose ``key`` reaches ``target``, or None if none does.

    "Reaches" means ``>= target``, or ``<= target`` for keys containing "loss".
    NaN values never reach the target.
    """
    hib = _higher_is_better(key)
    for point in history:
        v = _value(point, key)
        if v is not None and (v >= target if hib else v <= target):
            return int(point["step"])
    return None
