import json
import math
import random

import numpy as np
import pytest
from scipy import stats as st

from bnexp.report.stats import compare_table, divergence, format_p, paired, reachable, steps_to_target, summarize

PLAIN = (int, float, str, type(None), list)


def assert_plain(d):
    assert all(type(v) in PLAIN for v in d.values()), {k: type(v) for k, v in d.items()}
    json.dumps(d)


# ---------------------------------------------------------------- summarize


def test_summarize_known_values():
    s = summarize([1, 2, 3, 4, 5])
    half = st.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert s["n"] == 5 and s["mean"] == 3.0
    assert s["std"] == pytest.approx(math.sqrt(2.5))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((3 - half, 3 + half))
    # by hand: t(0.975, 4) = 2.7764 from a t-table, sqrt(2.5 / 5) = 0.70711 -> 3 -/+ 1.9632
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((1.0368, 4.9632), abs=1e-4)
    assert (s["best"], s["worst"]) == (5.0, 1.0)
    assert_plain(s)


def test_summarize_confidence_and_loss_direction():
    s = summarize([0.3, 0.5, 0.4], confidence=0.9, higher_is_better=False)
    lo, hi = st.t.interval(0.9, 2, loc=0.4, scale=st.sem([0.3, 0.5, 0.4]))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((lo, hi))
    assert (s["best"], s["worst"]) == (0.3, 0.5)


def test_summarize_small_and_degenerate():
    one = summarize([0.9])
    assert one["n"] == 1 and one["mean"] == 0.9 and one["best"] == one["worst"] == 0.9
    assert all(math.isnan(one[k]) for k in ("std", "ci_low", "ci_high"))
    empty = summarize([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])
    const = summarize([2.0, 2.0, 2.0])
    assert const["std"] == 0.0 and (const["ci_low"], const["ci_high"]) == (2.0, 2.0)
    assert_plain(one), assert_plain(empty)


# ---------------------------------------------------------------- paired


def test_paired_constant_differences():
    r = paired([1, 2, 3, 4], [2, 3, 4, 5])
    assert r["n"] == 4 and r["mean_diff"] == 1.0
    assert (r["ci_low"], r["ci_high"]) == (1.0, 1.0)
    assert r["p_ttest"] == 0.0 and r["verdict"] == "better"
    assert r["p_wilcoxon"] == pytest.approx(st.wilcoxon([1, 1, 1, 1]).pvalue)
    assert r["p_bootstrap"] == pytest.approx(2 / 16)  # exact: only all-plus/all-minus are as extreme
    assert_plain(r)


A = [0.90, 0.91, 0.89, 0.90, 0.92]
B = [0.93, 0.95, 0.925, 0.945, 0.95]


def test_paired_significant_better_matches_scipy():
    r = paired(A, B)
    d = np.subtract(B, A)
    assert r["mean_diff"] == pytest.approx(d.mean())
    lo, hi = st.t.interval(0.95, 4, loc=d.mean(), scale=st.sem(d))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi))
    assert r["p_ttest"] == pytest.approx(st.ttest_rel(B, A).pvalue)
    assert r["p_wilcoxon"] == pytest.approx(st.wilcoxon(d).pvalue)
    assert r["p_bootstrap"] == pytest.approx(2 / 32)  # all 5 differences positive
    assert r["p_ttest"] < 0.01 and r["verdict"] == "better"


def test_paired_reversed_is_worse_with_same_p():
    r, fwd = paired(B, A), paired(A, B)
    assert r["verdict"] == "worse"
    assert r["mean_diff"] == pytest.approx(-fwd["mean_diff"])
    assert r["p_ttest"] == pytest.approx(fwd["p_ttest"])


def test_paired_loss_lower_is_better():
    base, cand = [0.50, 0.52, 0.49, 0.51], [0.40, 0.43, 0.38, 0.41]
    r = paired(base, cand, higher_is_better=False)
    assert r["mean_diff"] < 0 and r["verdict"] == "better"
    assert paired(base, cand)["verdict"] == "worse"
    assert paired(cand, base, higher_is_better=False)["verdict"] == "worse"


def test_paired_noise_is_not_significant():
    r = paired([0.9, 0.9, 0.9, 0.9], [1.0, 0.8, 0.95, 0.86])
    assert r["p_ttest"] == pytest.approx(st.ttest_rel([1.0, 0.8, 0.95, 0.86], [0.9] * 4).pvalue)
    assert r["p_ttest"] > 0.05 and r["verdict"] == "not significant at n=4"


def test_paired_n1_and_n0():
    r = paired([0.8], [0.9])
    assert r["verdict"] == "not significant at n=1"
    assert r["mean_diff"] == pytest.approx(0.1)
    assert all(math.isnan(r[k]) for k in ("p_ttest", "p_wilcoxon", "p_bootstrap", "ci_low", "ci_high"))
    assert paired([], [])["verdict"] == "not significant at n=0"
    assert_plain(r)


def test_paired_all_equal():
    r = paired([0.8, 0.85, 0.9], [0.8, 0.85, 0.9])
    assert r["p_ttest"] == r["p_wilcoxon"] == r["p_bootstrap"] == 1.0
    assert r["mean_diff"] == 0.0 and r["verdict"] == "not significant at n=3"


def test_paired_length_mismatch():
    with pytest.raises(ValueError):
        paired([1, 2], [1, 2, 3])


# ---------------------------------------------------------------- compare_table

BASE_ACC = {0: 0.80, 1: 0.86, 2: 0.91}
GAIN = {0: 0.020, 1: 0.035, 2: 0.010}


def rec(variant, seed, acc, loss, status="finished", group="", run_id=None):
    return {"run_id": run_id or f"20261126-160102-{variant}-s{seed}", "status": status, "variant": variant,
            "seed": seed, "group": group, "test_accuracy": acc, "test_loss": loss, "train_loss": loss - 0.05,
            "wall_time_s": 1.0 + seed, "steps": 100, "history": [], "traces": None, "config": {}}


def table_records():
    out = [rec("plain", s, BASE_ACC[s], 1 - BASE_ACC[s]) for s in range(3)]
    out += [rec("bn-pre", s, BASE_ACC[s] + GAIN[s], 1 - BASE_ACC[s] - GAIN[s]) for s in (0, 1)]
    out.append(rec("bn-pre", 2, float("nan"), float("nan"), status="diverged"))
    return out


def test_compare_table_pairs_shared_seeds_and_counts_divergence():
    rows = compare_table(table_records(), baseline="plain")
    assert [(r["group"], r["variant"]) for r in rows] == [("", "plain"), ("", "bn-pre")]
    base, cand = rows
    assert base["n"] == 3 and base["n_diverged"] == 0 and base["divergence_rate"] == 0.0
    assert base["test_accuracy_verdict"] is None and base["test_accuracy_diff"] is None
    assert base["seeds"] == [0, 1, 2]
    assert cand["n"] == 2 and cand["n_diverged"] == 1 and cand["n_failed"] == 0
    assert cand["divergence_rate"] == pytest.approx(1 / 3)
    assert cand["seeds"] == [0, 1] and cand["paired_seeds"] == [0, 1]

    a = [BASE_ACC[s] for s in (0, 1)]
    b = [BASE_ACC[s] + GAIN[s] for s in (0, 1)]
    assert cand["test_accuracy_diff"] == pytest.approx(np.mean(np.subtract(b, a)))
    assert cand["test_accuracy_p_ttest"] == pytest.approx(st.ttest_rel(b, a).pvalue)
    assert cand["test_accuracy_p_wilcoxon"] == pytest.approx(st.wilcoxon(np.subtract(b, a)).pvalue)
    assert cand["test_accuracy_verdict"] == "not significant at n=2"
    # the diverged seed 2 is an outcome of bn-pre: compared with plain over the 3 seeds both ran
    assert cand["outcome_seeds"] == [0, 1, 2] and (cand["diverged_shared"], cand["baseline_diverged_shared"]) == (1, 0)
    assert cand["divergence_p_fisher"] == pytest.approx(st.fisher_exact([[1, 2], [0, 3]]).pvalue) == 1.0
    p = st.ttest_rel(b, a).pvalue
    assert cand["verdict"] == "not significant"
    assert cand["verdict_text"] == (f"not significant at n=3: plain diverged in 0/3 runs, bn-pre in 1/3 (Fisher p = 1); "
                                    f"+{100 * np.mean(np.subtract(b, a)):.2f} pts accuracy over the 2 seeds both finished "
                                    f"(p = {format_p(p)}); run more seeds")
    assert base["verdict"] is None and base["verdict_text"] is None and base["divergence_verdict"] is None
    assert cand["test_accuracy_mean"] == pytest.approx(np.mean(b))
    assert cand["test_accuracy_best"] == max(b) and cand["test_accuracy_worst"] == min(b)
    # losses: best is the lowest
    assert cand["test_loss_best"] == pytest.approx(min(1 - x for x in b))
    assert base["test_loss_worst"] == pytest.approx(1 - 0.80)
    assert base["train_loss_mean"] == pytest.approx(np.mean([1 - x - 0.05 for x in BASE_ACC.values()]))
    assert base["wall_time_s_mean"] == pytest.approx(2.0)
    for r in rows:
        assert_plain(r)


def test_compare_table_pairs_by_seed_not_order():
    expected = compare_table(table_records(), baseline="plain")
    for k in range(5):
        shuffled = table_records()
        random.Random(k).shuffle(shuffled)
        rows = {r["variant"]: r for r in compare_table(shuffled, baseline="plain")}
        for want in expected:
            got = rows[want["variant"]]
            for key, v in want.items():
                if isinstance(v, float) and math.isnan(v):
                    assert math.isnan(got[key]), key
                else:
                    assert got[key] == pytest.approx(v), key
    # a positional pairing would pair seed 1 of bn-pre with seed 0 of plain: check it did not
    recs = table_records()
    recs[3], recs[4] = recs[4], recs[3]
    cand = compare_table(recs, baseline="plain")[1]
    assert cand["test_accuracy_diff"] == pytest.approx(np.mean([GAIN[0], GAIN[1]]))


def test_compare_table_significant_verdicts_and_groups():
    recs = []
    for group, gain in (("lr=0.1", 0.05), ("lr=1.0", -0.05)):
        for s in range(5):
            base = 0.80 + 0.01 * s
            recs.append(rec("plain", s, base, 0.5, group=group))
            recs.append(rec("bn-post", s, base + gain + 0.001 * s, 0.5 - gain, group=group))
    recs.append(rec("bn-post", 5, 0.1, 9.0, status="failed", group="lr=1.0"))
    recs.append(rec("bn-post", 6, 0.1, 9.0, status="interrupted", group="lr=1.0"))
    recs.append(rec("bn-post", 7, 0.1, 9.0, status="running", group="lr=1.0"))  # no outcome yet
    recs.append({"run_id": "x", "status": "broken", "problem": "no metrics.json"})  # unplaceable
    rows = compare_table(recs, baseline="plain")
    assert [(r["group"], r["variant"]) for r in rows] == [
        ("lr=0.1", "plain"), ("lr=0.1", "bn-post"), ("lr=1.0", "plain"), ("lr=1.0", "bn-post")]
    assert rows[1]["test_accuracy_verdict"] == "better" and rows[1]["test_loss_verdict"] == "better"
    assert rows[3]["test_accuracy_verdict"] == "worse" and rows[3]["test_loss_verdict"] == "worse"
    assert rows[3]["n_failed"] == 2 and rows[3]["n"] == 5 and rows[3]["divergence_rate"] == 0.0
    assert rows[3]["failed_seeds"] == [5, 6] and rows[3]["outcome_seeds"] == [0, 1, 2, 3, 4]  # failures are no outcome
    # 5 seeds, no divergence: the t-test decides, and the seeds both finished are all of them
    assert (rows[1]["verdict"], rows[1]["verdict_text"]) == ("better", "better")
    assert (rows[3]["verdict"], rows[3]["verdict_text"]) == ("worse", "worse")


def test_compare_table_latest_duplicate_seed_and_nan_metric():
    recs = table_records()[:3]
    recs.append(rec("bn-pre", 0, 0.10, 0.9, run_id="20261126-100000-bn-pre-s0"))
    recs.append(rec("bn-pre", 0, 0.85, 0.2, run_id="20261126-120000-bn-pre-s0"))
    recs.append(rec("bn-pre", 1, 0.88, float("nan")))  # a finished run without a finite loss
    cand = compare_table(list(reversed(recs)), baseline="plain")[0]
    assert cand["variant"] == "bn-pre" and cand["n"] == 2
    assert cand["test_accuracy_mean"] == pytest.approx((0.85 + 0.88) / 2)
    assert cand["test_loss_mean"] == pytest.approx(0.2) and cand["test_loss_verdict"].endswith("n=1")


def test_compare_table_missing_baseline():
    row = compare_table([rec("bn-pre", 0, 0.9, 0.3)], baseline="plain")[0]
    assert row["paired_seeds"] == [] and row["test_accuracy_verdict"] == "not significant at n=0"
    assert math.isnan(row["test_accuracy_diff"])
    assert row["verdict"] == "not compared"
    assert row["verdict_text"] == "not compared: baseline plain has no finished or diverged run"
    failed_base = [rec("plain", 0, 0.1, 9.0, status="failed"), rec("bn-pre", 0, 0.9, 0.3)]
    assert compare_table(failed_base, baseline="plain")[1]["verdict"] == "not compared"


# ---------------------------------------------------------------- divergence


def diverging(variant, seeds, status):
    return [rec(variant, s, 0.1, float("nan"), status=status) if status == "diverged"
            else rec(variant, s, 0.90 + 0.01 * s, 0.3) for s in seeds]


def test_divergence_known_p_values():
    assert divergence(2, 0, 2)["p_fisher"] == pytest.approx(1 / 3)  # 2 of the C(4, 2) = 6 tables are as extreme
    assert divergence(5, 0, 5)["p_fisher"] == pytest.approx(2 / 252)  # C(10, 5) = 252
    assert divergence(5, 0, 5)["verdict"] == "better" and divergence(0, 5, 5)["verdict"] == "worse"
    assert divergence(2, 0, 2)["verdict"] == "not significant at n=2"
    assert divergence(0, 0, 3)["p_fisher"] == 1.0
    assert math.isnan(divergence(0, 0, 0)["p_fisher"])
    assert_plain(divergence(1, 0, 2))


def test_reachable_and_format_p():
    assert [reachable("fisher", n) for n in (0, 1, 2, 3, 4)] == [False, False, False, False, True]
    assert [reachable("signflip", n) for n in (1, 5, 6)] == [False, False, True]  # 2/2**5 = 0.0625
    assert [format_p(p) for p in (1 / 3, 0.0213, 0.0496, 0.05, 1.0, 2e-5, float("nan"))] == [
        "0.33", "0.021", "0.0496", "0.05", "1", "<0.001", "—"]


def test_diverged_baseline_is_compared_by_divergence():
    """Baseline diverged 2/2, candidate 0/2: the verdict names both counts and Fisher's p,
    and says that two seeds can settle nothing."""
    rows = compare_table(diverging("plain", (0, 1), "diverged") + diverging("bn-pre", (0, 1), "finished"), "plain")
    base, cand = rows
    assert base["n"] == 0 and base["n_diverged"] == 2 and base["divergence_rate"] == 1.0
    assert cand["paired_seeds"] == [] and cand["outcome_seeds"] == [0, 1]
    assert cand["divergence_p_fisher"] == pytest.approx(st.fisher_exact([[0, 2], [2, 0]]).pvalue)
    assert cand["verdict"] == "not significant"
    assert cand["verdict_text"] == ("not significant at n=2: plain diverged in 2/2 runs, bn-pre in 0/2 "
                                    "(Fisher p = 0.33); no seed finished in both; run more seeds")


def test_divergence_decides_with_enough_seeds():
    five = range(5)
    rows = compare_table(diverging("plain", five, "diverged") + diverging("bn-pre", five, "finished"), "plain")
    assert rows[1]["verdict"] == "better"
    assert rows[1]["verdict_text"] == ("better: plain diverged in 5/5 runs, bn-pre in 0/5 (Fisher p = 0.0079); "
                                       "no seed finished in both")
    rows = compare_table(diverging("plain", five, "finished") + diverging("bn-pre", five, "diverged"), "plain")
    assert rows[1]["verdict"] == "worse" and rows[1]["verdict_text"].startswith("worse: plain diverged in 0/5 runs, bn-pre in 5/5")


def test_divergence_counts_only_seeds_both_ran():
    # bn-pre diverged on seeds 2 and 3, which plain never ran: no evidence against it
    recs = diverging("plain", (0, 1), "finished") + diverging("bn-pre", (0, 1), "finished")
    recs += diverging("bn-pre", (2, 3), "diverged")
    cand = compare_table(recs, "plain")[1]
    assert cand["n_diverged"] == 2 and cand["outcome_seeds"] == [0, 1] and cand["diverged_shared"] == 0
    assert cand["verdict_text"].startswith("not significant at n=2: ") and "diverged" not in cand["verdict_text"]


def test_mixed_when_the_two_tests_disagree():
    # bn-pre never diverges where plain diverged on 5 of 10 seeds, but is worse on every seed both finished
    recs = [rec("plain", s, 0.90 + 0.001 * s, 0.3, status="diverged" if s >= 5 else "finished") for s in range(10)]
    recs += [rec("bn-pre", s, 0.80 + 0.0012 * s, 0.3) for s in range(10)]
    cand = compare_table(recs, "plain")[1]
    assert cand["divergence_p_fisher"] == pytest.approx(st.fisher_exact([[0, 10], [5, 5]]).pvalue)
    assert cand["divergence_p_fisher"] < 0.05
    assert cand["divergence_verdict"] == "better" and cand["test_accuracy_verdict"] == "worse"
    assert cand["verdict"] == "mixed"
    assert cand["verdict_text"].startswith("mixed: plain diverged in 5/10 runs, bn-pre in 0/10 (Fisher p = 0.033); -")
    assert cand["verdict_text"].endswith("pts accuracy over the 5 seeds both finished (p < 0.001)")


def test_latest_outcome_of_a_seed_counts_and_a_failure_is_no_outcome():
    recs = diverging("plain", (0, 1), "finished")
    recs.append(rec("bn-pre", 0, 0.1, 9.0, status="diverged", run_id="20261126-100000-bn-pre-s0"))
    recs.append(rec("bn-pre", 0, 0.91, 0.3, run_id="20261126-120000-bn-pre-s0"))  # trained again: finished
    recs.append(rec("bn-pre", 1, 0.1, 9.0, status="failed"))
    cand = compare_table(recs, "plain")[1]
    assert (cand["n"], cand["n_diverged"], cand["n_failed"], cand["failed_seeds"]) == (1, 0, 1, [1])
    assert cand["outcome_seeds"] == [0] and cand["paired_seeds"] == [0]


# ---------------------------------------------------------------- steps_to_target

HISTORY = [{"step": 10, "test_accuracy": 0.5, "test_loss": 1.2},
           {"step": 20, "test_accuracy": float("nan"), "test_loss": float("nan")},
           {"step": 30, "test_accuracy": 0.9, "test_loss": 0.4},
           {"step": 40, "test_accuracy": 0.95, "test_loss": 0.3}]


def test_steps_to_target():
    assert steps_to_target(HISTORY, 0.9) == 30
    assert steps_to_target(HISTORY, 0.5) == 10
    assert steps_to_target(HISTORY, 0.99) is None
    assert steps_to_target(HISTORY, 0.35, key="test_loss") == 40
    assert steps_to_target([], 0.5) is None
