"""The comparison a person reads: a table that fits 80, 100 and 160 columns without cutting
a value, footnotes for what cells cannot say, and exports that keep every column."""

import csv
import io
import json
import re

import numpy as np
import pytest
from rich.console import Console

from bnexp.report import compare_rows, compare_table, to_csv, to_json, to_markdown
from bnexp.report.table import OPTIONAL, columns

GAIN = {"plain": 0.0, "bn-pre": 0.012, "res-relu-before-add": 0.004, "bn-post": -0.02}
WIDTHS = (80, 100, 160)


def rec(variant, seed, acc, status="finished", group="", spec_norm=None, norm="batch", steps=2000):
    block = ["dense", "act"] if variant == "plain" else ["dense", "bn", "act"]
    spec = {"block": block, "head": [], **({"norm": spec_norm} if spec_norm else {})}
    done = status == "finished"
    start = 1000.0 * len(variant) + 10 * seed  # one run at a time: no shared cores
    return {"run_id": f"20261126-1601{seed:02d}-{variant}-s{seed}", "status": status, "variant": variant,
            "seed": seed, "group": group, "test_accuracy": acc if done else 0.098,
            "test_loss": 1.1 - acc if done else float("nan"), "train_loss": 0.9 - acc / 2 if done else float("nan"),
            "wall_time_s": 12.3 + seed, "steps": steps,
            "history": [{"step": 100 * (i + 1), "test_accuracy": acc * (i + 1) / 5} for i in range(5)],
            "config": {"norm": norm, "bn_momentum": 0.99, "bn_recalibrate": 0}, "variant_spec": spec,
            "train_start_unix": start, "train_end_unix": start + 5}


def four_variants(group="", seeds=range(3)):
    return [rec(v, s, 0.95 + g + 0.002 * s + (0.003 if v == "res-relu-before-add" and s == 1 else 0), group=group)
            for v, g in GAIN.items() for s in seeds]


def compare_records():
    """4 variants x 3 seeds; bn-post diverged on seed 2; bn-pre's seed 3 failed."""
    out = [r for r in four_variants() if not (r["variant"] == "bn-post" and r["seed"] == 2)]
    out.append(rec("bn-post", 2, 0.9, status="diverged"))
    out.append({**rec("bn-pre", 3, 0.9), "status": "failed", "error": "out of memory"})
    return out


def sweep_records():
    """Two grid cells; in the second (a long composite label) plain diverged in every run."""
    late = "lr=1.0 width=512 depth=4"
    return four_variants("lr=0.001") + [rec(v, s, 0.9 + 0.01 * s, status="diverged" if v == "plain" else "finished",
                                            group=late) for v in GAIN for s in range(2)]


def norm_records():
    """Rows that differ in normalizer: the variant's own (gn-pre) or the config's."""
    out = [rec("plain", s, 0.95 + 0.001 * s) for s in range(3)]
    out += [rec("bn-pre", s, 0.96 + 0.001 * s) for s in range(3)]
    out += [rec("gn-pre", s, 0.955 + 0.002 * s, spec_norm="group") for s in range(3)]
    out += [rec("res-relu-before-add", s, 0.957 + 0.001 * s, norm="instance") for s in range(3)]
    return out


SCENARIOS = {"compare": compare_records, "sweep": sweep_records, "norms": norm_records}


def render(rows, width, **kw):
    console = Console(width=width, record=True, color_system=None)
    table = compare_table(rows, "plain", "mnist-sample: plain, bn-pre, res-relu-before-add, bn-post × 3 seed(s)", **kw)
    console.print(table)
    return console.export_text(), table.layout(console, console.options)


def flat(text):
    return " ".join(text.split())


def expected_cells(row):
    """The priority cells' text, computed here from the row's numbers."""
    acc = (f"{100 * row['test_accuracy_mean']:.2f} ± {100 * row['test_accuracy_std']:.2f}" if row["n"] > 1
           else None)
    if row["verdict"] is None:
        delta, p = "baseline", None
    elif row["paired_seeds"]:
        half = 100 * (row["test_accuracy_diff_ci_high"] - row["test_accuracy_diff_ci_low"]) / 2
        delta = f"{100 * row['test_accuracy_diff']:+.2f} ± {half:.2f}"
        p = row["test_accuracy_p_ttest"]
        p = "<0.001" if p < 0.001 else f"{p:.2g}"
    else:
        delta, p = "—", "—"
    return [c for c in (row["variant"], str(row["n"]), acc, delta, p, row["verdict"]) if c]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_table_fits_and_cuts_no_value(scenario, width):
    rows = compare_rows(SCENARIOS[scenario](), "plain", 0.8)
    text, (table, notes, hidden) = render(rows, width)
    lines = text.splitlines()
    assert "…" not in text
    assert max(len(line) for line in lines) <= width
    headers = flat(" ".join(c.header for c in table.columns))
    for name in ("variant", "n", "test acc % mean ± std", "Δ pts ± 95% CI", "p", "verdict"):
        assert name in headers, (name, headers)
    # each row's line holds its priority cells in full, in order; a divergence shows on the next line
    at = 0
    for row in rows:
        at = next(i for i in range(at, len(lines)) if lines[i].startswith(row["variant"] + " "))
        found = 0
        for cell in expected_cells(row):
            found = lines[at].find(cell, found)
            assert found >= 0, (cell, lines[at])
            found += len(cell)
        if row["n_diverged"]:
            total = row["n"] + row["n_diverged"]
            assert f"diverged {row['n_diverged']}/{total}" in lines[at] + lines[at + 1]
        at += 1
    # every line of every cell shown, optional columns too, is in the output whole
    for column in table.columns:
        for cell in column.cells:
            for part in str(getattr(cell, "plain", cell)).split("\n"):
                assert part.strip() in text, part
    # the optional columns join in their stated order: the hidden ones are a tail of OPTIONAL
    avail = [n for n in OPTIONAL if n in columns(rows, "plain")]
    shown = [n for n in avail if columns(rows, "plain")[n].md_title not in hidden]
    assert shown == avail[:len(shown)]
    if hidden:
        assert "Not shown at this width: " + ", ".join(hidden) in flat(text) and "--wide" in text
    for i, note in enumerate(notes, 1):
        assert flat(f"{'¹²³⁴⁵⁶⁷⁸⁹'[i - 1]} {note}") in flat(text)


def test_wider_terminals_show_more_columns_in_order():
    rows = compare_rows(compare_records(), "plain", 0.8)
    shown = []
    for width in range(80, 200, 8):
        text, (table, _, hidden) = render(rows, width)
        shown.append(len(table.columns))
        assert "…" not in text
    assert shown == sorted(shown) and shown[0] == 6 and shown[-1] == 6 + len(OPTIONAL) - 1  # no batchstats here
    assert "test loss" in render(rows, 100)[0] and "train" not in render(rows, 80)[0].split("─")[0]


def test_wide_shows_every_column_and_still_cuts_nothing():
    rows = compare_rows(compare_records(), "plain", 0.8)
    for width in (80, 160, 240):
        text, (table, _, hidden) = render(rows, width, wide=True)
        assert hidden == [] and len(table.columns) == len(columns(rows, "plain"))
        assert "…" not in text
    text, _ = render(rows, 240, wide=True)
    for header in ("95% CI", "test loss", "train", "steps to", "wall s"):
        assert header in text


def test_footnotes_are_numbered_and_referenced_in_their_cells():
    rows = compare_rows(compare_records(), "plain", 0.8)
    text, (_, notes, _) = render(rows, 80)
    lines = text.splitlines()
    bn_pre = next(line for line in lines if line.startswith("bn-pre "))
    assert re.search(r"\s3¹\s", bn_pre)  # the failed run's note sits in the n cell
    assert notes[0].startswith("1 run failed (seed 3): an error, not an outcome of bn-pre, so not counted")
    assert "--retry-failed" in notes[0]
    bn_post = next(line for line in lines if line.startswith("bn-post "))
    assert "worse²" in bn_post
    assert notes[1].startswith("worse: plain diverged in 0/3 runs, bn-post in 1/3 (Fisher p = 1); ")
    assert "pts accuracy over the 2 seeds both finished" in notes[1]
    assert "res-relu-before-add" in text and "better" in text


def test_a_diverged_baseline_is_compared_by_divergence_in_the_table():
    rows = compare_rows(sweep_records(), "plain", 0.8)
    text, (_, notes, _) = render(rows, 80)
    late = text[text.index("lr=1.0"):]
    assert "depth=4" in late  # the long cell label broken at a space, not cut
    assert re.search(r"^plain\s+0\s+diverged 2/2\s+baseline", late, re.M)
    assert re.search(r"^bn-pre\s+2\s+.*not significant¹", late, re.M)
    assert notes[0] == ("not significant at n=2: plain diverged in 2/2 runs, bn-pre in 0/2 (Fisher p = 0.33); "
                        "no seed finished in both; run more seeds")
    assert "has no finished run" not in text


def test_rows_that_differ_in_normalizer_show_it():
    rows = compare_rows(norm_records(), "plain", 0.8)
    assert {r["variant"]: r["norm"] for r in rows} == {
        "plain": None, "bn-pre": "batch", "gn-pre": "group", "res-relu-before-add": "instance"}
    for width in WIDTHS:
        text, _ = render(rows, width)
        for norm in ("batch", "group", "instance"):
            assert norm in text
    assert "norm" not in render(compare_rows(compare_records(), "plain", 0.8), 160)[0]  # one normalizer: no column
    # narrower than the priority columns with a norm column: the norm goes under the variant's name
    text, (table, _, _) = render(rows, 72)
    assert "…" not in text and [c.header for c in table.columns][0] == "variant" and "norm: group" in text
    assert re.search(r"^gn-pre\s.*better\s*\nnorm: group", text, re.M)


def test_ties_mark_no_best():
    rows = compare_rows([rec(v, s, 0.9) for v in ("plain", "bn-pre") for s in range(2)], "plain", 0.8)
    text, _ = render(rows, 160)
    assert "★" not in text.split("n: finished runs")[0]  # (the caption explains the ★)


def test_exports_keep_every_column_and_json_is_strict():
    records = sweep_records()
    rows = compare_rows(records, "plain", 0.8)
    md = to_markdown(rows, "plain", "curves.png", "bnexp sweep x.yaml")
    header = next(line for line in md.splitlines() if line.startswith("| group |"))
    for title in ("variant", "n", "test acc % (mean ± std)", "95% CI", "test loss", "train loss", "steps to 80%",
                  "wall s", "Δ acc vs plain (pts ± 95% CI)", "p", "verdict", "notes"):
        assert f"| {title} |" in header, title
    assert "plain diverged in 2/2 runs, bn-pre in 0/2 (Fisher p = 0.33)" in md  # the full verdict
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert len(table) == 8 and {"verdict", "verdict_text", "divergence_p_fisher", "test_loss_mean"} <= set(table[0])
    assert table[4]["test_accuracy_mean"] == ""  # plain diverged in every run of the cell: unknown, not "nan"

    def refuse(constant):
        raise ValueError(constant)

    text = to_json(rows, records, {"wall_time_s": float("inf")})
    doc = json.loads(text, parse_constant=refuse)
    assert doc["wall_time_s"] is None and doc["rows"][4]["test_accuracy_mean"] is None
    assert doc["runs"][-1]["test_loss"] == pytest.approx(1.1 - 0.91)
    assert [r["test_loss"] for r in doc["runs"] if r["status"] == "diverged"] == [None, None]
    json.dumps(doc, allow_nan=False)


def test_a_row_names_its_normalizer_whenever_it_is_not_batch():
    """`--set norm=group` on every variant: the rows differ in nothing else, but must say it."""
    from bnexp.report.table import columns

    rows = [{"variant": "bn-pre", "norm": "group"}, {"variant": "res-original", "norm": "group"}]
    assert "norm" in columns(rows, "bn-pre")
    assert "norm" not in columns([{"variant": "bn-pre", "norm": "batch"}, {"variant": "plain", "norm": None}], "plain")


def test_bn_statistics_that_do_not_describe_test_inputs_are_noted_under_the_table():
    """The ratios are those a 300-step cnn compare recorded at bn_momentum 0.99 (bn-pre at 13 %
    against plain's 67 %), where bn_momentum ** steps is only 5 % and says nothing; the MLP at
    batch 4 recorded 1.3-1.8, which is no note."""
    measured = {"bn-pre": [[0.192, 0.192, 0.236, 0.311], [0.204, 0.173, 0.187, 0.27], [0.185, 0.163, 0.172, 0.411]],
                "bn-post": [[1.346, 1.562], [1.364, 1.509], [1.442, 1.762]]}
    records = [rec("plain", s, 0.67, steps=300) for s in range(3)]
    records += [{**rec(v, s, 0.5, steps=300), "bn_variance_ratio": ratios[s]}
                for v, ratios in measured.items() for s in range(3)]
    rows = compare_rows(records, "plain", 0.8)
    by = {r["variant"]: r for r in rows}
    expected = float(np.exp(np.mean(np.log(sum(measured["bn-pre"], [])))))  # over layers and seeds
    assert abs(by["bn-pre"]["bn_variance_ratio"] - expected) < 1e-12 and by["plain"]["bn_variance_ratio"] is None
    assert by["bn-pre"]["bn_initial_share"] < 0.05  # the share alone would not have said it
    text, _ = render(rows, 100)
    assert flat(text).count("BN statistics off") == 1 and "under 0.5x or over 2x the variance" in flat(text)
    assert "bn_recalibrate=1000" in flat(text)
    # a second row whose statistics are off (the other way) shares the one footnote
    records += [{**rec("brn-pre", s, 0.5, steps=300), "bn_variance_ratio": [3.1, 2.7]} for s in range(3)]
    rows2 = compare_rows(records, "plain", 0.8)
    text2, _ = render(rows2, 100)
    assert flat(text2).count("BN statistics off") == 1
    mark = next(ln for ln in text2.splitlines() if "BN statistics off" in ln).strip()[0]
    assert sum(mark in ln for ln in text2.splitlines() if ln.lstrip().startswith(("bn-pre", "brn-pre"))) == 2
    md = to_markdown(rows, "plain")
    assert f"BN statistics off (variance ratio {expected:.2g})" in md and md.count("BN statistics off") == 2  # cell + note
    out = json.loads(to_json(rows, records), parse_constant=lambda c: pytest.fail(c))
    assert [r["variant"] for r in out["rows"]][1] == "bn-pre" and out["rows"][1]["bn_variance_ratio"] == expected
