"""The driver: one pure schedule for dry runs and execution, an executor contract that crosses a
process boundary, and checkpoints that cannot be read."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bnexp import data, runs
from bnexp.evaluate import score_saved
from bnexp.executors.local import LocalExecutor
from bnexp.executors.process import ProcessExecutor
from bnexp.plan import Decision, dry_run, execute, plan, resolve_source, schedule
from bnexp.train import Interrupted
from conftest import run_folders, run_tiny, tiny

TINY = ["steps=40", "checkpoint_every=10"]  # over conftest's TINY_SETS


def _exp(results, variants, seeds=(0,), sets=(), **flags):
    return tiny(results, variants, seeds, TINY + list(sets), **flags)


def _execute(exp, executor=None, **kw):
    return run_tiny(exp, executor=executor or LocalExecutor(1), **kw)


def _status(run_dir, status):
    m = run_dir / runs.METRICS
    doc = json.loads(m.read_text())
    doc["status"] = status
    m.write_text(json.dumps(doc))


def test_schedule_decides_from_keys_and_records_alone():
    prev = {"done": [{"status": "finished", "run_dir": "a"}], "bad": [{"status": "failed", "run_dir": "b"}],
            "cut": [{"status": "interrupted", "run_dir": "c"}]}
    keys = ["done", "bad", "cut", "new", "new", "done"]
    assert schedule(keys, prev) == [
        Decision("reuse", prev["done"][0]), Decision("failed-before", prev["bad"][0]),
        Decision("resume", prev["cut"][0]), Decision("train"), Decision("follow", leader=3),
        Decision("reuse", prev["done"][0])]
    assert [d.action for d in schedule(keys, prev, retry_failed=True)][:2] == ["reuse", "train"]
    assert [d.action for d in schedule(keys, prev, force=True)] == ["train"] * 6  # force: no reuse, no resume
    assert [d.action for d in schedule(keys, prev, reuse=False)] == ["train", "train", "resume", "train", "train", "train"]


def test_dry_run_and_execute_agree_on_a_mixed_folder(tmp_path):
    """finished, failed, interrupted and duplicate-key runs: the dry run says what execute then does."""
    results = tmp_path / "r"
    first = _execute(_exp(results, ["plain", "dropout", "bn-pre"]))
    by = {r["variant"]: results / r["run_id"] for r in first.records}
    _status(by["dropout"], "failed")
    _status(by["bn-pre"], "interrupted")
    # plain in a sweep over bn_momentum is one key for both cells: one follows the other
    exp = _exp(results, ["plain", "dropout", "bn-pre", "bn-post"], grid={"bn_momentum": [0.99, 0.9]})
    specs = plan(exp)
    rows = dry_run(specs, resolve_source(exp))
    got = {(r["group"], r["variant"]): r["status"] for r in rows}
    assert got == {
        ("bn_momentum=0.99", "plain"): "finished", ("bn_momentum=0.9", "plain"): "finished",
        ("bn_momentum=0.99", "dropout"): "failed", ("bn_momentum=0.9", "dropout"): "failed",
        ("bn_momentum=0.99", "bn-pre"): "to resume", ("bn_momentum=0.9", "bn-pre"): "to train",
        ("bn_momentum=0.99", "bn-post"): "to train", ("bn_momentum=0.9", "bn-post"): "to train"}
    seen = []
    out = execute(specs, resolve_source(exp), executor=LocalExecutor(1), on_event=lambda k, s, r: seen.append(
        (k, s and (s.group, s.variant.name))))
    assert (out.reused, out.failed, out.resumed, out.trained) == (2, 2, 1, 3)
    done = dict((s, k) for k, s in seen if k in ("reused", "failed-before", "resuming", "training"))
    assert done == {("bn_momentum=0.99", "plain"): "reused", ("bn_momentum=0.9", "plain"): "reused",
                    ("bn_momentum=0.99", "dropout"): "failed-before", ("bn_momentum=0.9", "dropout"): "failed-before",
                    ("bn_momentum=0.99", "bn-pre"): "resuming", ("bn_momentum=0.9", "bn-pre"): "training",
                    ("bn_momentum=0.99", "bn-post"): "training", ("bn_momentum=0.9", "bn-post"): "training"}
    assert {r["status"] for r in out.records} == {"finished", "failed"}


def test_the_executor_contract_crosses_a_process_boundary(tmp_path):
    """A spawned child trains in a folder of its own and sends back the record and the files;
    the driver writes them, and the record names the child's pid, not the driver's."""
    local = _execute(_exp(tmp_path / "local", ["bn-pre"])).records[0]
    rec = _execute(_exp(tmp_path / "spawn", ["bn-pre"]), executor=ProcessExecutor(1)).records[0]
    assert rec["status"] == "finished" and rec["pid"] != os.getpid() and rec["hostname"]
    run = tmp_path / "spawn" / rec["run_id"]
    for name in (runs.CONFIG, runs.METRICS, runs.MODEL, runs.CHECKPOINT):
        assert (run / name).is_file(), name
    assert list((run / runs.TENSORBOARD).glob("events.out.tfevents.*"))
    saved = json.loads((run / runs.METRICS).read_text())
    assert saved["pid"] == rec["pid"] and saved["status"] == "finished"
    sample = data.load(data.resolve("mnist-sample"))
    loss, acc = score_saved(run / runs.MODEL, sample.x_test, sample.y_test)
    assert abs(acc - rec["test_accuracy"]) < 1e-4
    for key in ("test_accuracy", "test_loss", "train_loss", "history"):  # same machine, same program: exact
        assert rec[key] == local[key], key


def _cut(results, at: int, monkeypatch) -> dict:
    """Train bn-pre seed 0 until step `at`, where the run signals itself (a Ctrl-C)."""
    monkeypatch.setenv("BNEXP_TEST_SIGNAL_AT", f"{at}:INT")
    with pytest.raises(Interrupted):
        _execute(_exp(results, ["bn-pre"]))
    monkeypatch.delenv("BNEXP_TEST_SIGNAL_AT", raising=False)
    (run,) = run_folders(results)
    rec = json.loads((run / runs.METRICS).read_text())
    assert rec["status"] == "interrupted" and rec["step"] == at
    return run


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_an_unreadable_checkpoint_is_kept_aside_and_the_run_resumes_from_the_previous_one(tmp_path, monkeypatch, damage):
    whole = _execute(_exp(tmp_path / "whole", ["bn-pre"])).records[0]
    run = _cut(tmp_path / "cut", 30, monkeypatch)
    ckpt = run / runs.CHECKPOINT
    blob = ckpt.read_bytes()
    ckpt.write_bytes(blob[: len(blob) // 2] if damage == "truncated" else np.random.default_rng(0).bytes(len(blob)))
    notes = []
    out = _execute(_exp(tmp_path / "cut", ["bn-pre"]), on_event=lambda k, s, r: notes.append(r["note"]) if k == "note" else None)
    rec = out.records[0]
    assert len(notes) == 1 and str(ckpt) in notes[0] and "unreadable" in notes[0]
    assert "resuming from the previous checkpoint (checkpoint.prev.npz)" in notes[0]
    assert len(list(run.glob("checkpoint.npz.unreadable-*"))) == 1  # kept aside, not deleted
    assert rec["run_id"] == run.name and rec["resumed_from_step"] == 20  # the checkpoint before step 30
    for key in ("test_accuracy", "test_loss", "history"):
        assert rec[key] == whole[key], key


def test_with_no_readable_checkpoint_left_the_run_starts_again_from_step_0(tmp_path, monkeypatch):
    whole = _execute(_exp(tmp_path / "whole", ["bn-pre"])).records[0]
    run = _cut(tmp_path / "cut", 30, monkeypatch)
    for name in (runs.CHECKPOINT, runs.PREVIOUS_CHECKPOINT):
        (run / name).write_bytes(b"not a zip")
    notes = []
    out = _execute(_exp(tmp_path / "cut", ["bn-pre"]), on_event=lambda k, s, r: notes.append(r["note"]) if k == "note" else None)
    rec = out.records[0]
    assert len(notes) == 1 and "starts again from step 0" in notes[0] and notes[0].count("is unreadable") == 2
    assert len(list(run.glob("*.unreadable-*"))) == 2
    assert rec["run_id"] == run.name and "resumed_from_step" not in rec
    assert rec["test_accuracy"] == whole["test_accuracy"]
