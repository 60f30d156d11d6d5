"""Bad input, one test per case: ONE `error: ...` line naming the problem and the fix, exit 2 for
usage errors and 1 for runtime failures, no traceback (unless --debug), nothing on stdout under
--json, and the earlier run in the results folder left exactly as it was."""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnexp import data, runs
from bnexp.errors import RunFailure, UsageError
from conftest import RUN_ID, TINY, assert_one_error_line, invoke, snapshot

pytestmark = pytest.mark.usefixtures("isolated")


def train(earlier, *args):
    return invoke(["train", "--variant", "bn-pre", *TINY, *args, "--results", earlier.results])


def new_entries(earlier) -> set[str]:
    return {p.name for p in earlier.results.iterdir()} - {k.split("/")[0] for k in earlier.before}


def assert_only_empty_claims(earlier) -> None:
    """Every earlier file is byte-identical, and what a failed run left is at most an empty run
    folder holding its `.lock` (see test_a_failed_run_leaves_no_folder_behind)."""
    after = snapshot(earlier.results)
    assert {k: after.get(k) for k in earlier.before} == earlier.before
    added = set(after) - set(earlier.before)
    for name in new_entries(earlier):
        assert RUN_ID.match(name), name
    assert all(k.endswith("/.lock") for k in added), added
    assert not list(earlier.results.rglob("*.tmp"))


# ---------------------------------------------------------------- unknown names


def test_unknown_variant(earlier):
    res = train(earlier, "--variant", "bn-per")
    line = assert_one_error_line(res, 2, "unknown variant 'bn-per'", "did you mean 'bn-pre'")
    for name in ("plain", "dropout", "bn-post", "bn-preact"):
        assert name in line
    assert earlier.unchanged()


def test_unknown_variant_in_compare(earlier):
    res = invoke(["compare", "plain", "bn-per", *TINY, "--results", earlier.results])
    assert_one_error_line(res, 2, "unknown variant 'bn-per'", "did you mean 'bn-pre'", "valid: ")
    assert earlier.unchanged()


def test_unknown_dataset(earlier):
    res = train(earlier, "--dataset", "fashon-mnist")
    line = assert_one_error_line(res, 2, "unknown dataset 'fashon-mnist'", "did you mean 'fashion-mnist'")
    assert "mnist-sample" in line and "cifar10" in line
    assert earlier.unchanged()


# ---------------------------------------------------------------- YAML files


def write(tmp_path, name, text) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_malformed_names_the_file_and_line(earlier, tmp_path):
    f = write(tmp_path, "bad.yaml", "lr: 0.1\nwidth: [16, 32\ndepth: 2\n")
    res = invoke(["train", "--variant", "plain", "--config", f, "--results", earlier.results])
    assert_one_error_line(res, 2, "malformed YAML", str(f), "line 3", "fix the file")
    assert earlier.unchanged()


def test_yaml_top_level_list(earlier, tmp_path):
    f = write(tmp_path, "list.yaml", "- lr: 0.1\n- width: 16\n")
    res = invoke(["compare", "--config", f, "--results", earlier.results])
    assert_one_error_line(res, 2, str(f), "top level must be a mapping", "got list")
    assert earlier.unchanged()


def test_yaml_unknown_key(earlier, tmp_path):
    f = write(tmp_path, "typo.yaml", "variants: [plain]\nwidht: 16\n")
    res = invoke(["compare", "--config", f, "--results", earlier.results])
    assert_one_error_line(res, 2, str(f), "unknown key 'widht'", "did you mean 'width'", "bnexp list --keys")
    assert earlier.unchanged()


def test_yaml_wrong_type_names_the_key(earlier, tmp_path):
    f = write(tmp_path, "type.yaml", "variants: [plain]\nlr: fast\n")
    res = invoke(["compare", "--config", f, "--results", earlier.results])
    assert_one_error_line(res, 2, str(f), "'lr'", "must be float", "'fast'")
    assert earlier.unchanged()


def test_yaml_scientific_notation_is_a_number(earlier, tmp_path):
    # PyYAML alone reads `1e-3` as the string '1e-3'; the docs promise 1e-3 works.
    f = write(tmp_path, "sci.yaml", "variants: [plain, bn-pre]\nlr: 1e-3\ngrid: {lr: [1e-3, 3e-2]}\n")
    res = invoke(["sweep", f, "--dry-run", "--results", earlier.results, "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["n"] == 12  # 2 variants x 2 lr x 3 seeds (the default)
    res = train(earlier, "--set", "lr=1e400")  # overflows to inf: a range error, not a type error
    assert_one_error_line(res, 2, "invalid lr=inf", "positive finite")
    assert earlier.unchanged()


def test_yaml_grid_key_that_is_not_text(earlier, tmp_path):
    f = write(tmp_path, "grid.yaml", "variants: [plain]\ngrid: {1: [1, 2]}\n")
    res = invoke(["sweep", f, "--dry-run", "--results", earlier.results])
    assert_one_error_line(res, 2, "grid key 1")
    assert earlier.unchanged()


def test_error_text_with_brackets_is_printed_verbatim(earlier, tmp_path):
    # Rich would read "[dense, bn, act]" or "[/x]" in a message as markup: dropped text or a crash.
    f = write(tmp_path, "define.yaml", "variants: [mine]\ndefine: {mine: 3}\n")
    res = invoke(["sweep", f, "--dry-run", "--results", earlier.results])
    assert_one_error_line(res, 2, "variant 'mine'", "e.g. [dense, bn, act]")
    f = write(tmp_path, "markup.yaml", '"[/x]": 1\n')
    res = invoke(["train", "--variant", "plain", "--config", f, "--results", earlier.results])
    assert_one_error_line(res, 2, "unknown key '[/x]'")
    assert earlier.unchanged()


# ---------------------------------------------------------------- --set


def test_set_unknown_key(earlier):
    res = train(earlier, "--set", "widht=16")
    assert_one_error_line(res, 2, "--set", "unknown key 'widht'", "did you mean 'width'")
    assert earlier.unchanged()


def test_set_batch_size_not_an_int(earlier):
    res = train(earlier, "--set", "batch_size=abc")
    assert_one_error_line(res, 2, "--set", "'batch_size'", "must be int", "'abc'")
    assert earlier.unchanged()


def test_set_without_equals(earlier):
    res = train(earlier, "--set", "width")
    assert_one_error_line(res, 2, "--set 'width'", "KEY=VALUE")
    assert earlier.unchanged()


# ---------------------------------------------------------------- out of range


@pytest.mark.parametrize("args, phrase", [
    (["--batch-size", "0"], "invalid batch_size=0: must be at least 1"),
    (["--lr", "-1"], "invalid lr=-1.0: must be a positive finite number"),
    (["--lr", "nan"], "invalid lr=nan: must be a positive finite number"),  # click's float() accepts "nan"
    (["--lr", "inf"], "invalid lr=inf: must be a positive finite number"),
    (["--set", "lr=.nan"], "invalid lr=nan: must be a positive finite number"),
    (["--epochs", "0"], "invalid epochs=0: must be at least 1"),
    (["--set", "dropout=1.0"], "invalid dropout=1.0: must be in [0, 1)"),
    (["--set", "activation=swish"], "invalid activation='swish': choose one of relu, sigmoid, tanh"),
    (["--set", "steps=0"], "invalid steps=0"),
    (["--seed", "-1"], "invalid seed=-1: must be 0 or more"),
    (["--set", "workers=-1"], "invalid workers=-1: must be 0 (automatic) or a number of runs at once"),
], ids=["batch0", "lr-1", "lr-nan", "lr-inf", "set-lr-nan", "epochs0", "dropout1", "activation", "steps0", "seed-1",
        "workers-1"])
def test_out_of_range(earlier, args, phrase):
    res = train(earlier, *args)
    assert_one_error_line(res, 2, phrase)
    assert earlier.unchanged()


def test_not_a_number_is_refused_by_the_option_parser(earlier):
    res = train(earlier, "--lr", "fast")
    assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.stderr
    assert "Invalid value for '--lr'" in res.stderr  # click's own usage error, also exit 2
    assert earlier.unchanged()


def test_batch_larger_than_the_training_set(earlier):
    res = train(earlier, "--batch-size", "5000")
    assert_one_error_line(res, 2, "batch_size=5000", "4000 training images", "--batch-size")
    assert_only_empty_claims(earlier)


def test_a_net_too_big_for_this_machine_is_refused_before_anything_is_written(earlier):
    # 1e14 weights: more memory than any machine has. It used to end as a failed run after an OOM.
    res = train(earlier, "--set", "width=10000000")
    assert_one_error_line(res, 2, "width=10000000", "1e+14 weights", "this machine has", "lower --set width")
    assert earlier.unchanged()


def test_a_big_net_that_fits_is_not_refused_and_the_count_is_the_real_one():
    from bnexp import models
    from bnexp.config import Config
    from bnexp.plan import RunSpec, check_fits

    cfg = Config(width=4096, depth=4)  # 6e7 weights, about 1 GB with Adam's state: trains
    spec = RunSpec(models.VARIANTS["bn-pre"], cfg)
    weights = models.count_params(spec.variant, cfg, (32, 32, 3), 10)
    assert weights == 3072 * 4096 + 4096 + 3 * (4096 * 4096 + 4096) + 4096 * 10 + 10 + 4 * 4 * 4096
    check_fits(spec, (32, 32, 3), 10)  # returns: it fits
    big = RunSpec(models.VARIANTS["bn-pre"], cfg.replace(width=2_000_000))
    with pytest.raises(UsageError, match="width=2000000"):
        check_fits(big, (32, 32, 3), 10)
    # a convnet is counted as the convnet it is, not with the MLP's formula
    cnn = Config(model="cnn", filters=16)
    assert models.count_params(models.VARIANTS["plain"], cnn, (28, 28, 1), 10) == \
        (9 * 16 + 16) + (9 * 16 * 16 + 16) + (9 * 16 * 32 + 32) + (9 * 32 * 32 + 32) + (32 * 10 + 10)


# ---------------------------------------------------------------- dataset files


def idx_bytes(arr, magic: int) -> bytes:
    arr = np.asarray(arr, np.uint8)
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def write_idx(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = (rng.integers(0, 256, (40, 28, 28)), rng.integers(0, 10, 40),
              rng.integers(0, 256, (10, 28, 28)), rng.integers(0, 10, 10))
    folder.mkdir(parents=True)
    for name, arr, magic in zip(data.IDX_FILES, arrays, (0x803, 0x801) * 2):
        (folder / name).write_bytes(gzip.compress(idx_bytes(arr, magic)))
    return folder


SMALL = ["--dataset", "mnist", "--set", "batch_size=8", "--set", "steps=2", "--set", "width=8"]


@pytest.mark.parametrize("victim", [0, 1], ids=["images", "labels"])
def test_truncated_idx_file(earlier, tmp_path, victim):
    folder = write_idx(tmp_path / "mnist")
    path = folder / data.IDX_FILES[victim]
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # a download cut off halfway
    res = invoke(["train", "--variant", "plain", *SMALL, "--data-dir", folder, "--results", earlier.results])
    assert_one_error_line(res, 1, str(path), "delete it and re-download it")
    assert_only_empty_claims(earlier)


def test_idx_payload_shorter_than_its_header(earlier, tmp_path):
    folder = write_idx(tmp_path / "mnist")
    path = folder / data.IDX_FILES[2]
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    res = invoke(["train", "--variant", "plain", *SMALL, "--data-dir", folder, "--results", earlier.results])
    assert_one_error_line(res, 1, str(path), "truncated")
    assert_only_empty_claims(earlier)


def test_corrupted_npz(earlier, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "mnist.npz", x_train=np.zeros((8, 28, 28), np.uint8), y_train=np.zeros(8, np.uint8),
             x_test=np.zeros((4, 28, 28), np.uint8), y_test=np.zeros(4, np.uint8))
    blob = (folder / "mnist.npz").read_bytes()
    (folder / "mnist.npz").write_bytes(blob[:100] + b"\0" * 50 + blob[150:300])
    res = invoke(["train", "--variant", "plain", *SMALL, "--data-dir", folder, "--results", earlier.results])
    assert_one_error_line(res, 1, str(folder / "mnist.npz"), "not a readable .npz file", "re-download")
    assert earlier.unchanged()


def test_named_dataset_not_found(earlier, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = invoke(["train", "--variant", "plain", *SMALL, "--data-dir", empty, "--results", earlier.results])
    assert_one_error_line(res, 2, "dataset 'mnist' not found", "--data-dir", str(empty))
    assert earlier.unchanged()


def test_data_dir_that_is_not_a_folder(earlier, tmp_path):
    res = invoke(["train", "--variant", "plain", *SMALL, "--data-dir", tmp_path / "nope", "--results", earlier.results])
    assert_one_error_line(res, 2, "--data-dir", "is not a folder")
    assert earlier.unchanged()


# ---------------------------------------------------------------- results folder


def test_results_is_a_file(tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("my notes\n")
    res = invoke(["train", "--variant", "plain", *TINY, "--results", f])
    assert_one_error_line(res, 2, str(f), "is a file", "--results")
    assert f.read_text() == "my notes\n"


def test_results_inside_a_file(tmp_path):
    f = tmp_path / "results.txt"
    f.write_text("my notes\n")
    res = invoke(["train", "--variant", "plain", *TINY, "--results", f / "sub"])
    assert_one_error_line(res, 2, "cannot create results folder", "--results")
    assert f.read_text() == "my notes\n"


def test_results_read_only():
    # Root writes through permission bits, so a 0o500 folder proves nothing here; sysfs refuses
    # even root. The error comes before anything is planned or trained.
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys/kernel on this system")
    res = invoke(["train", "--variant", "plain", *TINY, "--results", "/sys/kernel"])
    assert_one_error_line(res, 2, "/sys/kernel", "not writable", "--results")


def test_results_not_writable_per_os_access(earlier, monkeypatch):
    # The same check without needing a non-root user: the OS says the folder is not writable.
    real = os.access
    monkeypatch.setattr(runs.os, "access", lambda p, mode, **kw: False if Path(p) == earlier.results else real(p, mode, **kw))
    res = train(earlier)
    monkeypatch.undo()
    assert_one_error_line(res, 2, str(earlier.results), "not writable", "--results")
    assert earlier.unchanged()


# ---------------------------------------------------------------- a disk that fills up


class _FullDisk:
    """A file whose writes stop halfway with ENOSPC, as on a full disk."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, b):
        self.f.write(b[: len(b) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self):
        self.f.flush()

    def fileno(self):
        return self.f.fileno()


@pytest.fixture
def full_disk(monkeypatch):
    """Every file that bnexp.runs opens for writing hits ENOSPC (in this process only)."""

    def fake_open(path, mode="r", *args, **kw):
        f = open(path, mode, *args, **kw)
        return _FullDisk(f) if any(c in mode for c in "wax") else f

    monkeypatch.setattr(runs, "open", fake_open, raising=False)


def test_write_atomic_keeps_the_old_file_when_the_disk_fills(tmp_path, full_disk):
    target = tmp_path / "metrics.json"
    target.write_text('{"status": "finished"}')
    with pytest.raises(RunFailure) as e:
        runs.write_atomic(target, json.dumps({"status": "running", "pad": "x" * 10_000}))
    msg = str(e.value)
    assert "\n" not in msg and str(target) in msg and "No space left on device" in msg and "free some disk space" in msg
    assert target.read_text() == '{"status": "finished"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp file left


def test_write_atomic_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runs.os, "replace", no_space)
    with pytest.raises(RunFailure, match="free some disk space"):
        runs.write_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_train_on_a_full_disk(earlier, full_disk):
    res = train(earlier)
    assert_one_error_line(res, 1, "could not write", "No space left on device", "free some disk space")
    assert_only_empty_claims(earlier)
    assert json.loads((earlier.run_dir / "metrics.json").read_text())["status"] == "finished"


# ---------------------------------------------------------------- broken run folders


def edit_metrics(run: Path, change) -> None:
    path = run / "metrics.json"
    if callable(change):
        rec = json.loads(path.read_text())
        change(rec)
        path.write_text(json.dumps(rec))
    else:
        path.write_text(change)


def broken_copy(earlier, name: str, change) -> Path:
    """A copy of the earlier run under a new id, its metrics.json damaged; re-snapshots `earlier`."""
    run = earlier.results / name
    shutil.copytree(earlier.run_dir, run)
    edit_metrics(run, change)
    earlier.before = snapshot(earlier.results)
    return run


CORRUPTED = '{"schema": 1, "status": "finish'


def newer(rec):
    rec["schema"] = 99


@pytest.mark.parametrize("change, phrase", [(CORRUPTED, "metrics.json is corrupted"),
                                            (newer, "written by a newer bnexp (schema 99"),
                                            ("[1, 2]", "not a JSON object"),
                                            (lambda r: r.update(schema="2"), "invalid schema '2'"),
                                            (lambda r: r.update(status="done"), "unknown status 'done'")],
                         ids=["corrupted", "schema99", "not-object", "schema-text", "bad-status"])
def test_eval_of_a_broken_run(earlier, change, phrase):
    run = broken_copy(earlier, "20200101-000000-bn-pre-s0-badbad", change)
    res = invoke(["eval", run.name, "--results", earlier.results])
    assert_one_error_line(res, 1, f"run {run.name} cannot be read", phrase)
    assert earlier.unchanged()


@pytest.mark.parametrize("change, phrase", [(CORRUPTED, "metrics.json is corrupted"),
                                            (newer, "upgrade bnexp")], ids=["corrupted", "schema99"])
def test_show_of_a_broken_run(earlier, change, phrase):
    run = broken_copy(earlier, "20200101-000000-bn-pre-s0-badbad", change)
    res = invoke(["show", run.name, "--results", earlier.results])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit)
    assert "broken" in res.stdout and phrase in " ".join(res.stdout.split())  # the table shows the problem
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: run {run.name}: ") and phrase in lines[0]
    assert "Traceback" not in res.stdout + res.stderr
    assert earlier.unchanged()


def test_compare_over_a_results_folder_with_broken_runs(earlier):
    bad = broken_copy(earlier, "20200101-000000-bn-pre-s0-badbad", CORRUPTED)
    newer_run = broken_copy(earlier, "20200101-000000-bn-pre-s0-newnew", newer)
    no_metrics = earlier.results / "20200101-000000-plain-s0-empty1"
    no_metrics.mkdir()
    (no_metrics / "config.yaml").write_text("variant: plain\n")
    earlier.before = snapshot(earlier.results)
    res = invoke(["compare", "bn-pre", "--seed", "0", *TINY, "--results", earlier.results, "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["trained"], doc["reused"]) == (0, 1)
    assert [r["run_id"] for r in doc["runs"]] == [earlier.run_dir.name]
    after = snapshot(earlier.results)
    assert {k: after.get(k) for k in earlier.before} == earlier.before  # broken folders untouched
    assert {k.split("/")[0] for k in set(after) - set(earlier.before)} == {doc["compare_id"]}
    for run in (bad, newer_run, no_metrics):
        assert run.is_dir()
    # commands that must read the broken run say so in one line
    res = invoke(["plot", earlier.run_dir.name, bad.name, "--results", earlier.results])
    assert_one_error_line(res, 1, f"run {bad.name} cannot be read", "corrupted")
    res = invoke(["diff", earlier.run_dir.name, bad.name, "--results", earlier.results])
    assert_one_error_line(res, 1, f"run {bad.name} cannot be read", "corrupted")
    assert res.stdout == ""  # no table of None against the broken side


def test_eval_of_an_interrupted_run_suggests_resume(earlier):
    edit_metrics(earlier.run_dir, lambda r: r.update(status="interrupted"))
    earlier.before = snapshot(earlier.results)
    res = invoke(["eval", earlier.run_dir.name, "--results", earlier.results])
    assert_one_error_line(res, 1, "is interrupted, not finished", f"bnexp train --resume {earlier.run_dir.name}")
    assert earlier.unchanged()


def test_eval_of_an_unknown_run(earlier):
    res = invoke(["eval", "20990101", "--results", earlier.results])
    assert_one_error_line(res, 2, "run '20990101' not found", "--results")
    assert earlier.unchanged()


def test_eval_of_a_damaged_model(earlier):
    (earlier.run_dir / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    earlier.before = snapshot(earlier.results)
    res = invoke(["eval", earlier.run_dir.name, "--results", earlier.results])
    assert_one_error_line(res, 1, "model.keras", "damaged")
    assert earlier.unchanged()


# ---------------------------------------------------------------- --json and --debug


@pytest.mark.parametrize("args", [["train", "--variant", "bn-per", *TINY],
                                  ["eval", "nope"],
                                  ["compare", "plain", "--set", "lr=-1", *TINY],
                                  ["sweep", "missing.yaml"]],
                         ids=["train", "eval", "compare", "sweep"])
def test_json_error_leaves_stdout_empty(earlier, args):
    res = invoke([*args, "--results", earlier.results, "--json"])
    assert_one_error_line(res, res.exit_code)
    assert res.exit_code in (1, 2) and res.stdout == ""
    assert earlier.unchanged()


def test_debug_shows_the_traceback(earlier):
    in_process = invoke(["--debug", "train", "--variant", "bn-per", *TINY, "--results", earlier.results])
    assert type(in_process.exception).__name__ == "UsageError"  # not turned into one line
    cmd = [sys.executable, "-c", "from bnexp.cli import main; main()"]
    args = ["train", "--variant", "bn-per", *TINY, "--results", str(earlier.results)]
    env = {**os.environ, "_TYPER_STANDARD_TRACEBACK": "1", "COLUMNS": "200"}
    plain = subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [plain.stderr.strip()]
    debug = subprocess.run(cmd + ["--debug"] + args, capture_output=True, text=True, env=env, timeout=120)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "UsageError: unknown variant 'bn-per'" in debug.stderr
    assert earlier.unchanged()


# ---------------------------------------------------------------- nothing left behind


def test_a_failed_run_leaves_no_folder_behind(earlier, tmp_path):
    folder = write_idx(tmp_path / "mnist")
    path = folder / data.IDX_FILES[0]
    path.write_bytes(path.read_bytes()[:200])
    res = invoke(["train", "--variant", "plain", *SMALL, "--data-dir", folder, "--results", earlier.results])
    assert res.exit_code == 1
    assert earlier.unchanged()


def test_defined_variant_with_a_head_that_is_not_a_list(earlier, tmp_path):
    f = write(tmp_path, "head.yaml", "variants: [mine]\ndefine: {mine: {block: [dense, act], head: 3}}\n")
    res = invoke(["sweep", f, "--dry-run", "--results", earlier.results])
    assert_one_error_line(res, 2, "variant 'mine'", "head")
