"""Every command, in-process through typer's CliRunner, with real (tiny) training."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest

from conftest import RUN_ID, TINY, assert_one_error_line, invoke, snapshot

pytestmark = pytest.mark.usefixtures("isolated")

VARIANTS = ("plain", "dropout", "bn-pre", "bn-post", "bn-preact")
DATASETS = ("mnist", "fashion-mnist", "cifar10", "mnist-sample")


def run_folders(results):
    return sorted(p.name for p in results.iterdir() if p.is_dir() and RUN_ID.match(p.name))


# ---------------------------------------------------------------- list


def test_list_shows_variants_and_datasets():
    res = invoke(["list"])
    assert res.exit_code == 0, res.stderr
    for name in VARIANTS + DATASETS:
        assert name in res.stdout
    assert "config keys" not in res.stdout
    flat = " ".join(res.stdout.replace("│", " ").split())
    # descriptions are plain text: brackets in them are not Rich markup, which would eat them
    assert "pip install 'bnexp[ray]'" in flat and "[block of width units]" in flat


def test_list_keys_shows_config_and_experiment_keys():
    res = invoke(["list", "--keys"])
    assert res.exit_code == 0, res.stderr
    assert "config keys" in res.stdout
    for key in ("batch_size", "lr", "epochs", "dropout", "activation", "eval_every", "variants", "seeds", "grid"):
        assert key in res.stdout


def test_help_and_list_do_not_import_tensorflow():
    code = ("import sys; import bnexp.cli; print('tensorflow' in sys.modules); "
            "from typer.testing import CliRunner; r = CliRunner().invoke(bnexp.cli.app, ['--help']); "
            "assert r.exit_code == 0 and 'compare' in r.stdout, r.output; "
            "r = CliRunner().invoke(bnexp.cli.app, ['list', '--keys']); assert r.exit_code == 0, r.output; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- train


def test_train_json_writes_a_finished_run(trained):
    # The session fixture ran `bnexp train --variant bn-pre <tiny> --results R --json`.
    rec = trained.record  # json.loads of the whole stdout: nothing but JSON is there
    assert rec["status"] == "finished" and rec["variant"] == "bn-pre" and rec["seed"] == 0
    assert rec["dataset"] == "mnist-sample" and rec["steps"] == 20 and (rec["n_train"], rec["n_test"]) == (4000, 1000)
    assert trained.stdout.count("\n") == 1 and trained.stdout.lstrip().startswith("{")
    run = trained.run_dir
    assert RUN_ID.match(run.name) and run.parent == trained.results
    for name in ("config.yaml", "metrics.json", "model.keras"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["run_id"] == run.name
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_accuracy"] == rec["test_accuracy"]
    assert [p["step"] for p in metrics["history"]] == [10, 20]
    assert list((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert "bn-pre" in (run / "config.yaml").read_text()
    assert not list(trained.results.rglob("*.tmp"))


def test_train_prints_a_table_and_keeps_the_earlier_run(earlier):
    res = invoke(["train", "--variant", "plain", *TINY, "--set", "steps=4", "--results", earlier.results])
    assert res.exit_code == 0, res.stderr
    new = [r for r in run_folders(earlier.results) if r != earlier.run_dir.name]
    assert len(new) == 1 and "-plain-s0-" in new[0]
    assert new[0] in res.stdout and "finished" in res.stdout and "test_accuracy" in res.stdout
    assert "plain seed 0: finished" in res.stderr
    after = snapshot(earlier.results)
    # the new run's folder, and the empty per-key lock file (.keys/) that kept other processes off it
    kept = {k: v for k, v in after.items() if not k.startswith((new[0] + "/", ".keys/"))}
    assert kept == {k: v for k, v in earlier.before.items() if not k.startswith(".keys/")}


# ---------------------------------------------------------------- eval


def test_eval_table(earlier):
    res = invoke(["eval", earlier.run_dir.name, "--results", earlier.results])
    assert res.exit_code == 0, res.stderr
    assert f"eval {earlier.run_dir.name}" in res.stdout
    assert "test acc" in res.stdout and "mnist-sample" in res.stdout and "1000" in res.stdout
    assert earlier.unchanged()


def test_eval_json_matches_the_recorded_accuracy(earlier):
    res = invoke(["eval", str(earlier.run_dir), "--json"])  # a run folder path works without --results
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)
    recorded = json.loads((earlier.run_dir / "metrics.json").read_text())["test_accuracy"]
    assert got["run_id"] == earlier.run_dir.name and got["n_test"] == 1000
    assert abs(got["test_accuracy"] - recorded) <= 1e-4
    assert abs(got["recorded_test_accuracy"] - recorded) <= 1e-12
    assert earlier.unchanged()


# ---------------------------------------------------------------- compare


@pytest.fixture(scope="module")
def compared(trained, tmp_path_factory):
    """`compare plain bn-pre --seeds 2 <tiny> --json` in a copy of the session results:
    bn-pre seed 0 is the session's run (reused); the other three are trained."""
    results = tmp_path_factory.mktemp("compare") / "results"
    shutil.copytree(trained.results, results)
    mp = pytest.MonkeyPatch()
    try:
        from conftest import _isolate

        _isolate(mp, results.parent)
        res = invoke(["compare", "plain", "bn-pre", "--seeds", "2", *TINY, "--results", results, "--json"])
    finally:
        mp.undo()
    assert res.exit_code == 0, f"{res.stderr}\n{res.exception!r}"
    return results, json.loads(res.stdout), snapshot(results / trained.run_id)


COMPARE = ["compare", "plain", "bn-pre", "--seeds", "2", *TINY]


def test_compare_json(compared, trained):
    results, doc, session_run_after = compared
    assert (doc["trained"], doc["reused"], doc["failed"]) == (3, 1, 0)
    assert doc["baseline"] == "plain" and doc["seeds"] == [0, 1] and doc["dataset"] == "mnist-sample"
    rows = {r["variant"]: r for r in doc["rows"]}
    assert set(rows) == {"plain", "bn-pre"}
    for r in rows.values():
        assert r["n"] == 2 and 0 <= r["test_accuracy_mean"] <= 1
    assert rows["bn-pre"]["n_reused"] == 1
    assert len(doc["runs"]) == 4 and {r["status"] for r in doc["runs"]} == {"finished"}
    assert trained.run_id in rows["bn-pre"]["run_ids"]
    # the reused run was read, never rewritten
    assert session_run_after == {k[len(trained.run_id) + 1:]: v for k, v in trained.files.items()
                                 if k.startswith(trained.run_id + "/")}
    folder = results / doc["compare_id"]
    for name in ("compare.json", "report.md", "rows.csv", "curves.png"):
        assert (folder / name).is_file(), name


def test_compare_again_reuses_everything(compared):
    results, first, _ = compared
    runs_before = {k: v for k, v in snapshot(results).items() if not k.startswith("compare-")}
    res = invoke([*COMPARE, "--results", results, "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["trained"], doc["reused"]) == (0, 4)
    assert sorted(r["run_id"] for r in doc["runs"]) == sorted(r["run_id"] for r in first["runs"])
    assert {k: v for k, v in snapshot(results).items() if not k.startswith("compare-")} == runs_before


def test_compare_table(compared):
    results, _, _ = compared
    res = invoke([*COMPARE, "--results", results])
    assert res.exit_code == 0, res.stderr
    assert "mnist-sample: plain, bn-pre × 2 seed(s)" in res.stdout
    assert "plain" in res.stdout and "bn-pre" in res.stdout and "test acc %" in res.stdout
    assert "trained 0, reused 4" in res.stderr and "report:" in res.stderr


def test_compare_markdown(compared):
    results, _, _ = compared
    res = invoke([*COMPARE, "--results", results, "--format", "md"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| variant |"))
    assert lines[header + 1].startswith("|---|")
    body = [line for line in lines[header + 2:] if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in body] == ["plain", "bn-pre"]


def test_compare_csv(compared):
    results, _, _ = compared
    res = invoke([*COMPARE, "--results", results, "--format", "csv"])
    assert res.exit_code == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["variant"] for r in rows] == ["plain", "bn-pre"]
    for r in rows:
        assert 0 <= float(r["test_accuracy_mean"]) <= 1 and r["n"] == "2"


def test_compare_runs_three_seeds_by_default(earlier):
    res = invoke(["compare", "bn-pre", *TINY, "--results", earlier.results, "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["seeds"] == [0, 1, 2] and (doc["trained"], doc["reused"]) == (2, 1)  # seed 0 is the earlier run
    assert sorted(r["seed"] for r in doc["runs"]) == [0, 1, 2]
    assert doc["rows"][0]["n"] == 3


def test_compare_prints_one_line_per_trained_run_with_its_id(earlier):
    before = set(run_folders(earlier.results))
    res = invoke(["compare", "plain", "bn-pre", "--seed", "3", *TINY, "--results", earlier.results])
    assert res.exit_code == 0, res.stderr
    new = set(run_folders(earlier.results)) - before
    # stderr is not a terminal here: Rich must not wrap these lines, so each ends with its run's id
    finished = [line for line in res.stderr.splitlines() if ": finished, test acc " in line]
    assert len(new) == 2 and {line.split()[-1] for line in finished} == new


def test_compare_force_trains_again(earlier):
    one = ["compare", "bn-pre", "--seed", "0", *TINY, "--results", earlier.results, "--json"]
    res = invoke(one)
    assert res.exit_code == 0, res.stderr
    assert (json.loads(res.stdout)["trained"], json.loads(res.stdout)["reused"]) == (0, 1)
    res = invoke([*one, "--force"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["trained"], doc["reused"]) == (1, 0)
    assert doc["runs"][0]["run_id"] != earlier.run_dir.name
    assert len(run_folders(earlier.results)) == 2
    after = snapshot(earlier.results)
    assert {k: after.get(k) for k in earlier.before} == earlier.before  # the earlier run is untouched


def test_compare_bad_format_is_refused_before_training(earlier):
    res = invoke([*COMPARE, "--results", earlier.results, "--format", "xml"])
    assert_one_error_line(res, 2, "--format", "md, csv")
    assert earlier.unchanged()


# ---------------------------------------------------------------- show, diff, plot


def test_show(earlier):
    res = invoke(["show", earlier.run_dir.name, "--results", earlier.results])
    assert res.exit_code == 0, res.stderr
    for text in (earlier.run_dir.name, "finished", "bn-pre", "test_accuracy", "dataset_sha256", "tensorflow_version"):
        assert text in res.stdout
    res = invoke(["show", earlier.run_dir.name[:17], "--results", earlier.results, "--json"])  # a unique prefix
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["run_id"] == earlier.run_dir.name
    assert earlier.unchanged()


def test_diff(compared):
    results, doc, _ = compared
    ids = {(r["variant"], r["seed"]): r["run_id"] for r in doc["runs"]}
    a, b = ids[("plain", 0)], ids[("bn-pre", 1)]
    res = invoke(["diff", a, b, "--results", results])
    assert res.exit_code == 0, res.stderr
    assert f"{a} vs {b}" in res.stdout
    for key in ("variant", "config.seed", "test_accuracy", "run_key"):
        assert key in res.stdout, key
    res = invoke(["diff", a, b, "--results", results, "--json"])
    rows = {r["key"]: (r["a"], r["b"]) for r in json.loads(res.stdout)}
    assert rows["variant"] == ("plain", "bn-pre") and rows["config.seed"] == (0, 1)
    assert "dataset_sha256" not in rows  # same data


def test_plot_writes_a_png(compared, tmp_path):
    results, doc, _ = compared
    ids = [r["run_id"] for r in doc["runs"][:2]]
    out = tmp_path / "curves.png"
    res = invoke(["plot", *ids, "--results", results, "--out", out])
    assert res.exit_code == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in res.stdout


def test_plot_default_path_is_in_the_results_folder(earlier):
    res = invoke(["plot", earlier.run_dir.name, "--results", earlier.results])
    assert res.exit_code == 0, res.stderr
    new = set(snapshot(earlier.results)) - set(earlier.before)
    assert len(new) == 1 and next(iter(new)).startswith("plot-") and next(iter(new)).endswith(".png")
    assert {k: v for k, v in snapshot(earlier.results).items() if k in earlier.before} == earlier.before


# ---------------------------------------------------------------- sweep


SWEEP = """\
# 2 lr values x 2 variants x 2 seeds = 8 runs
variants: [plain, bn-pre]
seeds: 2
dataset: mnist-sample
steps: 20
width: 16
eval_every: 10
grid:
  lr: [0.001, 0.01]
"""


def test_sweep_dry_run_lists_8_runs_and_trains_nothing(earlier, tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP)
    res = invoke(["sweep", f, "--dry-run", "--results", earlier.results])
    assert res.exit_code == 0, res.stderr
    flat = " ".join(res.stdout.replace("│", " ").split())  # the title may wrap over the table's width
    assert "8 runs (lr: 2 values)" in flat
    numbers = [line.split("│")[1].strip() for line in res.stdout.splitlines() if line.startswith("│")]
    assert numbers == [str(i) for i in range(1, 9)]
    res = invoke(["sweep", f, "--dry-run", "--results", earlier.results, "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["n"] == 8
    cells = {(r["group"], r["variant"], r["seed"]): r["status"] for r in doc["runs"]}
    assert len(cells) == 8 and {g for g, _, _ in cells} == {"lr=0.001", "lr=0.01"}
    # the earlier run is exactly the lr=0.001 bn-pre seed-0 cell: the plan knows it is done
    assert cells.pop(("lr=0.001", "bn-pre", 0)) == "finished"
    assert set(cells.values()) == {"to train"}
    assert earlier.unchanged()


def test_sweep_dry_run_into_a_new_folder_creates_nothing(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP)
    res = invoke(["sweep", f, "--dry-run", "--results", tmp_path / "fresh", "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["n"] == 8
    assert not (tmp_path / "fresh").exists()


def test_sweep_dry_run_shows_a_run_trained_once_for_several_cells(earlier, tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP.replace("lr: [0.001, 0.01]", "bn_momentum: [0.99, 0.9]"))  # plain reads no BN key
    res = invoke(["sweep", f, "--dry-run", "--results", earlier.results, "--json"])
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)["runs"]
    number = {(r["group"], r["variant"], r["seed"]): n for n, r in enumerate(rows, 1)}
    for r in rows:
        if r["variant"] == "plain" and r["group"] == "bn_momentum=0.9":
            assert r["status"] == f"as #{number[('bn_momentum=0.99', 'plain', r['seed'])]}"
        elif (r["group"], r["variant"], r["seed"]) == ("bn_momentum=0.99", "bn-pre", 0):
            assert r["status"] == "finished"  # the earlier run
        else:
            assert r["status"] == "to train", r
    assert earlier.unchanged()


def test_version():
    res = invoke(["--version"])
    assert res.exit_code == 0 and res.stdout.startswith("bnexp ")


def test_paths_with_brackets_are_printed_verbatim(trained, tmp_path):
    # Rich reads "[exp1]" as a style tag; show, diff and plot must print such paths as they are.
    results = tmp_path / "[exp1]"
    shutil.copytree(trained.results, results)
    run = results / trained.run_id
    res = invoke(["show", trained.run_id, "--results", results])
    assert res.exit_code == 0, res.stderr
    assert str(run) in res.stdout
    res = invoke(["diff", trained.run_id, run, "--results", results])
    assert res.exit_code == 0, res.stderr
    res = invoke(["plot", run, "--out", results / "c.png"])
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip() == f"curves: {results / 'c.png'}"
