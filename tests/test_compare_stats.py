"""`compare --json` reports what scipy.stats computes from the runs' own metrics.json files."""

import json
from pathlib import Path

import pytest

import numpy as np
import scipy.stats as st
from typer.testing import CliRunner

from bnexp.cli import app


def refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")


def test_compare_json_equals_scipy_on_the_saved_records(tmp_path):
    args = ["compare", "plain", "bn-pre", "--dataset", "mnist-sample", "--seeds", "3", "--results", str(tmp_path),
            "--set", "steps=20", "--set", "width=16", "--set", "eval_every=10", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout, parse_constant=refuse)  # strict JSON: no NaN or Infinity
    saved = {}
    for run in doc["runs"]:
        rec = json.loads((Path(run["run_dir"]) / "metrics.json").read_text())
        saved[(rec["variant"], rec["seed"])] = rec
    rows = {r["variant"]: r for r in doc["rows"]}
    for variant in ("plain", "bn-pre"):
        acc = np.array([saved[(variant, s)]["test_accuracy"] for s in range(3)])
        row = rows[variant]
        assert row["n"] == 3
        assert row["test_accuracy_mean"] == np.mean(acc)
        assert np.isclose(row["test_accuracy_std"], np.std(acc, ddof=1))
        lo, hi = st.t.interval(0.95, 2, loc=acc.mean(), scale=st.sem(acc))
        assert np.isclose(row["test_accuracy_ci_low"], lo) and np.isclose(row["test_accuracy_ci_high"], hi)
    base = np.array([saved[("plain", s)]["test_accuracy"] for s in range(3)])
    cand = np.array([saved[("bn-pre", s)]["test_accuracy"] for s in range(3)])
    d = cand - base
    row = rows["bn-pre"]
    assert np.isclose(row["test_accuracy_diff"], d.mean())
    p = st.ttest_rel(cand, base).pvalue
    assert np.isclose(row["test_accuracy_p_ttest"], p)
    lo, hi = st.t.interval(0.95, 2, loc=d.mean(), scale=st.sem(d))
    assert np.isclose(row["test_accuracy_diff_ci_low"], lo)
    # the verdict follows from these numbers: the t-test at 0.05, its sign, and 3 seeds being
    # too few for the exact tests (no run diverged, so divergence says nothing)
    want = ("better" if d.mean() > 0 else "worse") if p < 0.05 else "not significant"
    assert row["verdict"] == want and row["outcome_seeds"] == row["paired_seeds"] == [0, 1, 2]
    assert row["test_accuracy_verdict"] == (want if p < 0.05 else "not significant at n=3")
    assert row["verdict_text"] == (want if p < 0.05 else "not significant at n=3: run more seeds")
    assert Path(doc["plots"]["curves"]).is_file()

    # the same compare again trains nothing and does not import TensorFlow
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from bnexp.cli import app; "
            f"r = CliRunner().invoke(app, {args!r}); assert r.exit_code == 0, r.output; "
            "import json; d = json.loads(r.stdout); print(d['trained'], d['reused'], 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["0", "6", "False"], out.stderr


def test_markdown_and_csv_reports(tmp_path):
    args = ["compare", "plain", "bn-post", "--dataset", "mnist-sample", "--seeds", "2", "--results", str(tmp_path),
            "--set", "steps=10", "--set", "width=8", "--set", "eval_every=5"]
    md = CliRunner().invoke(app, args + ["--format", "md"])
    assert md.exit_code == 0, md.output
    assert "| variant | n | test acc % (mean ± std)" in md.stdout and "| bn-post | 2 |" in md.stdout
    assert "![learning curves](curves.png)" in md.stdout
    # 10 steps at momentum 0.99: BN's averages still hold 0.99**10 = 90% of their start, and the report says so
    bn_row = next(line for line in md.stdout.splitlines() if line.startswith("| bn-post |"))
    assert "BN averages 90% initial" in bn_row and "bn_recalibrate=1000" in md.stdout
    assert "initial" not in next(line for line in md.stdout.splitlines() if line.startswith("| plain |"))
    import csv
    import io

    out = CliRunner().invoke(app, args + ["--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["variant"] for r in rows] == ["plain", "bn-post"] and rows[1]["n_reused"] == "2"
    folder = sorted(tmp_path.glob("compare-*"))[-1]
    assert {p.name for p in folder.iterdir()} >= {"compare.json", "report.md", "rows.csv", "curves.png"}


def test_bn_initial_share():
    from bnexp.report import bn_initial_share

    bn = {"variant_spec": {"block": ["dense", "bn", "act"], "head": []}, "steps": 31,
          "config": {"bn_momentum": 0.99, "bn_recalibrate": 0}}
    assert abs(bn_initial_share(bn) - 0.99 ** 31) < 1e-12 and bn_initial_share(bn) > 0.7
    assert bn_initial_share({**bn, "steps": 468}) < 0.01  # one epoch of the lab: warmed up
    assert bn_initial_share({**bn, "config": {"bn_momentum": 0.99, "bn_recalibrate": 1000}}) is None
    assert bn_initial_share({**bn, "variant_spec": {"block": ["dense", "act"], "head": []}}) is None
    assert bn_initial_share({**bn, "variant_spec": {"block": ["dense", "act"], "head": ["bn", "act"]}}) is not None


def test_runs_trained_together_are_found_by_their_training_spans_and_noted_under_the_table():
    from bnexp.report import trained_together
    from bnexp.report.export import explanations

    def rec(run_id, start, end):
        return {"run_id": run_id, "train_start_unix": start, "train_end_unix": end}

    records = [rec("a", 0.0, 10.0), rec("b", 5.0, 12.0),  # overlap
               rec("c", 12.0, 20.0),  # starts as b ends: one after the other
               rec("d", 21.0, 30.0), rec("e", 22.0, 23.0),  # e inside d
               rec("f", 31.0, 32.0), {"run_id": "g"}]  # alone; no timestamps (an older record)
    assert trained_together(records) == {"a", "b", "d", "e"}
    assert trained_together([rec("a", 0.0, 1.0), rec("b", 1.0, 2.0)]) == set()

    rows = [{"n_trained_together": 2, "bn_initial_share": None}, {"n_trained_together": 1, "bn_initial_share": 0.5}]
    foot = explanations(rows)
    assert len(foot) == 2 and foot[0].startswith("BN averages N% initial")
    assert foot[1].startswith("wall s: runs that trained alongside another") and "--workers 1" in foot[1]
    assert explanations([{"n_trained_together": 0, "bn_initial_share": 0.01}]) == []


def rec(variant, seed, acc, status="finished"):
    return {"run_id": f"20261126-160102-{variant}-s{seed}", "status": status, "variant": variant, "seed": seed,
            "group": "", "test_accuracy": acc if status == "finished" else 0.1,
            "test_loss": 0.3 if status == "finished" else float("nan"), "train_loss": 0.2, "wall_time_s": 1.0,
            "steps": 100, "history": [], "config": {}, "variant_spec": {"block": ["dense", "act"], "head": []}}


@pytest.mark.parametrize("records, verdict, text", [
    # every bn-pre seed 2 points above plain's, within 0.1: the t-test is sure at n=5
    ([rec("plain", s, 0.90 + 0.01 * s) for s in range(5)] + [rec("bn-pre", s, 0.92 + 0.01 * s + 0.001 * (s % 2))
                                                             for s in range(5)], "better", "better"),
    # plain diverged in both runs, bn-pre in neither: Fisher's p = 1/3, and two seeds can settle nothing
    ([rec("plain", s, 0, "diverged") for s in range(2)] + [rec("bn-pre", s, 0.9) for s in range(2)], "not significant",
     "not significant at n=2: plain diverged in 2/2 runs, bn-pre in 0/2 (Fisher p = 0.33); no seed finished in both; "
     "run more seeds"),
])
def test_compare_json_verdict_on_known_records(records, verdict, text):
    from bnexp.report import compare_rows, to_json

    doc = json.loads(to_json(compare_rows(records, "plain", 0.8), records), parse_constant=refuse)
    row = {r["variant"]: r for r in doc["rows"]}["bn-pre"]
    assert (row["verdict"], row["verdict_text"]) == (verdict, text)
