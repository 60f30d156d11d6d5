"""`compare --json` reports what scipy.stats computes from the runs' own metrics.json files."""

import json
from pathlib import Path

import numpy as np
import scipy.stats as st
from typer.testing import CliRunner

from bnexp.cli import app


def test_compare_json_equals_scipy_on_the_saved_records(tmp_path):
    args = ["compare", "plain", "bn-pre", "--dataset", "mnist-sample", "--seeds", "3", "--results", str(tmp_path),
            "--set", "steps=20", "--set", "width=16", "--set", "eval_every=10", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
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
    assert np.isclose(row["test_accuracy_p_ttest"], st.ttest_rel(cand, base).pvalue, equal_nan=True)
    lo, hi = st.t.interval(0.95, 2, loc=d.mean(), scale=st.sem(d))
    assert np.isclose(row["test_accuracy_diff_ci_low"], lo, equal_nan=True)
    assert row["test_accuracy_verdict"] in ("better", "worse", "no significant difference at n=3")
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
    from bnexp.report import _footnote, trained_together

    def rec(run_id, start, end):
        return {"run_id": run_id, "train_start_unix": start, "train_end_unix": end}

    records = [rec("a", 0.0, 10.0), rec("b", 5.0, 12.0),  # overlap
               rec("c", 12.0, 20.0),  # starts as b ends: one after the other
               rec("d", 21.0, 30.0), rec("e", 22.0, 23.0),  # e inside d
               rec("f", 31.0, 32.0), {"run_id": "g"}]  # alone; no timestamps (an older record)
    assert trained_together(records) == {"a", "b", "d", "e"}
    assert trained_together([rec("a", 0.0, 1.0), rec("b", 1.0, 2.0)]) == set()

    rows = [{"n_trained_together": 2, "bn_initial_share": None}, {"n_trained_together": 1, "bn_initial_share": 0.5}]
    foot = _footnote(rows).splitlines()
    assert len(foot) == 2 and foot[0].startswith("BN averages N% initial")
    assert foot[1].startswith("wall s: runs that trained alongside another") and "--workers 1" in foot[1]
    assert _footnote([{"n_trained_together": 0, "bn_initial_share": 0.01}]) == ""
