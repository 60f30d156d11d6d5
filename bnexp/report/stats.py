"""Statistics over runs: per-variant summaries, seed-paired comparisons, the divergence test
and the verdict a comparison row reads.

All tests and intervals come from `scipy.stats`; this module only pairs, filters and
converts. Every returned value is a plain Python int/float/str/None/list (NaN stays
``float('nan')``; `bnexp.report.export` writes it as JSON null).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats as st

NAN = float("nan")


def _alpha(confidence: float) -> float:
    return round(1.0 - confidence, 12)  # 1 - 0.95 is 0.05000000000000004 in floating point


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
    otherwise. Anything else is ``f"not significant at n={n}"``. With n < 2 all
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
    if out["p_ttest"] < _alpha(confidence):  # False for NaN
        good = out["mean_diff"] > 0 if higher_is_better else out["mean_diff"] < 0
        out["verdict"] = "better" if good else "worse"
    else:
        out["verdict"] = f"not significant at n={n}"
    return out


def divergence(baseline_diverged: int, diverged: int, n: int, confidence: float = 0.95) -> dict:
    """Compare how often a candidate and the baseline diverged over the same ``n`` seeds.

    ``scipy.stats.fisher_exact`` (two-sided) on the 2x2 table of diverged and finished runs,
    candidate against baseline. Returns ``{"n", "baseline_diverged", "diverged", "p_fisher",
    "verdict"}``: with alpha = 1 - confidence, ``"better"`` when p < alpha and the candidate
    diverged less often, ``"worse"`` when more often, else ``f"not significant at n={n}"``.
    ``p_fisher`` is NaN when n = 0, and 1.0 when neither diverged.

    Fisher's test cannot reach p < 0.05 below 4 seeds (2/2 against 0/2 gives p = 0.33, 3/3
    against 0/3 p = 0.1): `reachable` tells the verdict to ask for more seeds.
    """
    out = {"n": int(n), "baseline_diverged": int(baseline_diverged), "diverged": int(diverged), "p_fisher": NAN}
    if n > 0:
        table = [[diverged, n - diverged], [baseline_diverged, n - baseline_diverged]]
        out["p_fisher"] = float(st.fisher_exact(table).pvalue)
    if out["p_fisher"] < _alpha(confidence):  # False for NaN
        out["verdict"] = "better" if diverged < baseline_diverged else "worse"
    else:
        out["verdict"] = f"not significant at n={n}"
    return out


def reachable(test: str, n: int, confidence: float = 0.95) -> bool:
    """Whether ``test`` ("fisher" on n seeds per side, "signflip" on n paired differences) can
    reach p < 1 - confidence at all with n seeds, whatever the data.

    The smallest two-sided p-values are 2/C(2n, n) for Fisher's test and 2/2**n for the exact
    sign-flip test: below 4 and 6 seeds no outcome is significant at 0.05. The paired t-test
    behind the accuracy verdict can go lower, but only on near-constant differences, so the
    exact test's floor is the honest measure of "too few seeds".
    """
    if n < 1:
        return False
    floor = float(st.fisher_exact([[n, 0], [0, n]]).pvalue) if test == "fisher" else 2.0 / 2 ** n
    return floor < _alpha(confidence)


def format_p(p: float, confidence: float = 0.95) -> str:
    """A p-value in two significant digits ("0.021", "<0.001"; "—" for NaN), with more digits
    where two would round it across alpha (0.0496 is "0.0496", not "0.05")."""
    if not (isinstance(p, float) and math.isfinite(p)):
        return "—"
    if p < 0.001:
        return "<0.001"
    alpha = _alpha(confidence)
    for digits in range(2, 7):
        text = f"{p:.{digits}g}"
        if (float(text) < alpha) == (p < alpha):
            return text
    return text


def _p_clause(p: float, confidence: float, name: str = "p") -> str:
    text = format_p(p, confidence)
    return f"{name} {text[0]} {text[1:]}" if text.startswith("<") else f"{name} = {text}"


def _higher_is_better(metric: str) -> bool:
    return "loss" not in metric


def _value(record: dict, key: str) -> float | None:
    v = record.get(key)
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


OUTCOMES = ("finished", "diverged")  # what a run of a variant can end as; anything else is a failure


def compare_table(
    records: list[dict],
    baseline: str,
    metrics: Sequence[str] = ("test_accuracy", "test_loss"),
    group_key: str = "group",
    confidence: float = 0.95,
) -> list[dict]:
    """One flat row per (group, variant), in first-seen order, compared with ``baseline``.

    A run ends as an outcome of its variant, "finished" or "diverged", or as a failure (an
    exception, an interrupt, or any other status such as "broken"), which says nothing about
    the variant. Per seed, the latest run with an outcome counts (run ids start with a
    timestamp); "running" records and records without a variant are ignored. Each row has
    ``n`` (finished seeds), ``n_diverged``, ``divergence_rate = n_diverged / (n + n_diverged)``
    (NaN when both are 0), and ``n_failed`` / ``failed_seeds``: seeds with a failed run and no
    outcome (``--retry-failed`` trains them).

    Finished runs feed the statistics. For each metric ``m`` the row holds ``m_mean, m_std,
    m_ci_low, m_ci_high, m_best, m_worst`` (see `summarize`; metrics whose name contains
    "loss" are lower-is-better) and the comparison with the baseline variant of the same
    group, pairing runs by seed over the seeds finished in both: ``m_diff, m_diff_ci_low,
    m_diff_ci_high, m_p_ttest, m_p_wilcoxon, m_p_bootstrap, m_verdict`` (see `paired`; all
    None on the baseline row). Also ``train_loss_mean``, ``wall_time_s_mean``, ``seeds``
    (sorted seeds of the finished runs) and ``paired_seeds`` (the seeds finished in both;
    [] on the baseline row).

    Divergence is compared too, over the seeds both variants ran to an outcome
    (``outcome_seeds``): ``diverged_shared`` and ``baseline_diverged_shared`` count their
    divergences there, ``divergence_p_fisher`` and ``divergence_verdict`` come from
    `divergence`. Then ``verdict`` and ``verdict_text`` (see `verdict`) conclude the row
    (None on the baseline row).

    A metric value that is missing or non-finite in a finished run is left out of that
    metric only.
    """
    records = [r for r in records if r.get("status") != "running" and r.get("variant") is not None]
    cells: dict[tuple, dict] = {}
    # Sorting by run_id first makes "latest run wins" independent of input order.
    for r in sorted(records, key=lambda r: str(r.get("run_id", ""))):
        cell = cells.setdefault((r.get(group_key) or "", r["variant"]), {"outcome": {}, "failed": {}})
        cell["outcome" if r.get("status") in OUTCOMES else "failed"][r.get("seed")] = r
    order = list(dict.fromkeys((r.get(group_key) or "", r["variant"]) for r in records))

    def finished(outcome: dict) -> dict:
        return {s: r for s, r in outcome.items() if r["status"] == "finished"}

    rows = []
    for group, variant in order:
        cell = cells[(group, variant)]
        outcome, runs = cell["outcome"], finished(cell["outcome"])
        n, n_div = len(runs), len(outcome) - len(runs)
        failed = [s for s in cell["failed"] if s not in outcome]
        row = {"group": group, "variant": variant, "n": n, "n_diverged": n_div, "n_failed": len(failed),
               "failed_seeds": sorted(int(s) for s in failed if s is not None),
               "divergence_rate": n_div / (n + n_div) if n + n_div else NAN}
        base_outcome = cells.get((group, baseline), {"outcome": {}})["outcome"]
        base = finished(base_outcome)
        shared = sorted(set(runs) & set(base))
        is_base = variant == baseline
        for m in metrics:
            hib = _higher_is_better(m)
            vals = [v for v in (_value(r, m) for r in runs.values()) if v is not None]
            for k, v in summarize(vals, confidence, hib).items():
                if k != "n":
                    row[f"{m}_{k}"] = v
            if is_base:
                cmp = dict.fromkeys(("n", "mean_diff", "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "p_bootstrap", "verdict"))
            else:
                pairs = [(_value(base[s], m), _value(runs[s], m)) for s in shared]
                pairs = [p for p in pairs if None not in p]
                cmp = paired([p[0] for p in pairs], [p[1] for p in pairs], confidence, hib)
            row.update({f"{m}_diff": cmp["mean_diff"], f"{m}_diff_ci_low": cmp["ci_low"],
                        f"{m}_diff_ci_high": cmp["ci_high"], f"{m}_p_ttest": cmp["p_ttest"],
                        f"{m}_p_wilcoxon": cmp["p_wilcoxon"], f"{m}_p_bootstrap": cmp["p_bootstrap"],
                        f"{m}_verdict": cmp["verdict"]})
            if m == metrics[0]:
                primary = cmp
        for key in ("train_loss", "wall_time_s"):
            vals = [v for v in (_value(r, key) for r in runs.values()) if v is not None]
            row[f"{key}_mean"] = float(np.mean(vals)) if vals else NAN
        row["seeds"] = sorted(int(s) for s in runs)
        row["paired_seeds"] = [] if is_base else [int(s) for s in shared]

        # Only seeds both ran count, so a seed one of them never ran cannot tilt the counts.
        both = [] if is_base else sorted(set(outcome) & set(base_outcome))
        div = divergence(sum(base_outcome[s]["status"] == "diverged" for s in both),
                         sum(outcome[s]["status"] == "diverged" for s in both), len(both), confidence)
        row.update(outcome_seeds=[int(s) for s in both],
                   diverged_shared=None if is_base else div["diverged"],
                   baseline_diverged_shared=None if is_base else div["baseline_diverged"],
                   divergence_p_fisher=None if is_base else div["p_fisher"],
                   divergence_verdict=None if is_base else div["verdict"])
        if is_base:
            row.update(verdict=None, verdict_text=None)
        else:
            row.update(verdict(variant, baseline, primary, div, metric=metrics[0], n=n, n_baseline=len(base),
                               has_baseline=bool(base_outcome), confidence=confidence))
        rows.append(row)
    return rows


VERDICTS = ("better", "worse", "mixed", "not significant", "not compared")


def verdict(variant: str, baseline: str, acc: dict, div: dict, *, metric: str = "test_accuracy",
            n: int, n_baseline: int, has_baseline: bool = True, confidence: float = 0.95) -> dict:
    """The row's conclusion: ``{"verdict": word, "verdict_text": sentence}``.

    ``acc`` is `paired` on ``metric`` over the seeds both finished, ``div`` is `divergence`
    over the seeds both ran; ``n`` and ``n_baseline`` are the finished seeds of each.
    The word is "better" or "worse" when a test is significant (divergence first: a variant
    that trains is better than one that diverges), "mixed" when the two significant tests
    disagree, "not significant" otherwise, and "not compared" when the baseline has no
    finished or diverged run in the group. The sentence starts with the word and says why::

        better
        not significant at n=2: run more seeds
        better: plain diverged in 5/5 runs, bn-pre in 0/5 (Fisher p = 0.0079); no seed finished in both
        not significant at n=2: plain diverged in 2/2 runs, bn-pre in 0/2 (Fisher p = 0.33); no seed
            finished in both; run more seeds
        better: +0.68 pts accuracy over the 2 seeds both finished (p = 0.012)

    It names the seeds compared whenever they are not all of both variants' finished runs,
    and ends with "run more seeds" when nothing is significant and the seeds are too few for
    the exact tests to be (see `reachable`).
    """
    if not has_baseline:
        return {"verdict": "not compared", "verdict_text": f"not compared: baseline {baseline} has no finished or diverged run"}
    involved = div["diverged"] + div["baseline_diverged"] > 0
    significant = [w for w in ((div["verdict"] if involved else None), acc["verdict"]) if w in ("better", "worse")]
    word = "mixed" if len(set(significant)) > 1 else significant[0] if significant else "not significant"
    parts = []
    if involved:
        k = div["n"]
        parts.append(f"{baseline} diverged in {div['baseline_diverged']}/{k} runs, {variant} in {div['diverged']}/{k} "
                     f"({_p_clause(div['p_fisher'], confidence, 'Fisher p')})")
    m = acc["n"]
    if involved or not m == n == n_baseline:
        if m == 0:
            parts.append("no seed finished in both")
        else:
            d = acc["mean_diff"]
            amount = f"{100 * d:+.2f} pts" if "accuracy" in metric else f"{d:+.4f}"
            what = metric.removeprefix("test_").replace("_", " ")
            seeds = "the 1 seed" if m == 1 else f"the {m} seeds"
            test = _p_clause(acc["p_ttest"], confidence) if m > 1 else "no test at n=1"
            parts.append(f"{amount} {what} over {seeds} both finished ({test})")
    head = word
    if word == "not significant":
        head += f" at n={div['n'] if involved else m}"
        if (involved and not reachable("fisher", div["n"], confidence)) or not reachable("signflip", m, confidence):
            parts.append("run more seeds")
    return {"verdict": word, "verdict_text": head + (": " + "; ".join(parts) if parts else "")}


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
