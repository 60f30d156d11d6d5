"""Nothing lost: kill -9 and Ctrl-C mid-run, then resume to the same result; concurrent writers.

The signals are sent by the run itself at a given step (BNEXP_TEST_SIGNAL_AT, train/signals.py),
right after the checkpoint of that step, so where a run is cut does not depend on how fast
this machine is."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import invoke, run_folders

CMD = ["train", "--variant", "dropout", "--dataset", "mnist-sample", "--set", "steps=300", "--set", "width=32",
       "--set", "eval_every=50", "--set", "checkpoint_every=25", "--seed", "3"]
CUT_AT = 100  # the step the signal is sent at


def bnexp(*args, signal_at: str | None = None, **kw):
    env = dict(os.environ)
    env.pop("BNEXP_TEST_SIGNAL_AT", None)
    if signal_at:
        env["BNEXP_TEST_SIGNAL_AT"] = signal_at
    return subprocess.Popen([sys.executable, "-m", "bnexp.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def ok(*args) -> str:
    """The CLI in this process, for the runs no signal cuts (a TensorFlow import less than a
    subprocess); the runs a signal cuts are always processes of their own. Returns stdout."""
    res = invoke([*args])
    assert res.exit_code == 0, f"{res.stderr}\n{res.exception!r}"
    return res.stdout


def _only_run(results: Path) -> Path:
    found = run_folders(results)  # not .keys/
    assert len(found) == 1, found
    return found[0]


def _final(results: Path) -> dict:
    runs = [json.loads(p.read_text()) for p in results.glob("*/metrics.json")]
    assert len(runs) == 1, [r.get("status") for r in runs]
    return runs[0]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    results = tmp_path_factory.mktemp("whole")
    ok(*CMD, "--results", str(results))
    return _final(results)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["kill-9", "ctrl-c", "sigterm"])
def test_interrupted_run_resumes_to_the_same_metrics(tmp_path, uninterrupted, sig):
    proc = bnexp(*CMD, "--results", str(tmp_path), signal_at=f"{CUT_AT}:{sig.name}")
    _, err = proc.communicate(timeout=300)
    code = proc.returncode
    run = _only_run(tmp_path)
    rec = json.loads((run / "metrics.json").read_text())
    if sig == signal.SIGKILL:
        assert code == -9 and rec["status"] == "running"  # the lock died with it: read as interrupted
        from bnexp.runs import read_record

        assert read_record(run)["status"] == "interrupted"
    else:
        assert code == (130 if sig == signal.SIGINT else 143), err
        assert rec["status"] == "interrupted" and "resume" in err and "Traceback" not in err
        assert rec["step"] == CUT_AT
    # the same command again resumes the same folder and ends where an uninterrupted run ends
    ok(*CMD, "--results", str(tmp_path))
    final = _final(tmp_path)
    assert final["run_id"] == run.name and final["status"] == "finished" and final["resumed_from_step"] == CUT_AT
    for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy"):
        assert final[key] == uninterrupted[key], key  # bit-identical on CPU
    assert [h["test_loss"] for h in final["history"]] == [h["test_loss"] for h in uninterrupted["history"]]


COMPARE = ["compare", "dropout", "bn-pre", "--dataset", "mnist-sample", "--seed", "3", "--set", "steps=150",
           "--set", "width=32", "--set", "eval_every=50", "--set", "checkpoint_every=25"]


def test_ctrl_c_stops_runs_training_at_once_and_they_resume_to_the_same_metrics(tmp_path):
    """compare --workers 2 trains two runs at once: one Ctrl-C checkpoints both; the same
    command then resumes both and ends where one-at-a-time runs end."""
    whole = tmp_path / "whole"
    ok(*COMPARE, "--workers", "1", "--results", str(whole))
    expected = {r["variant"]: r for r in map(lambda p: json.loads(p.read_text()), whole.glob("*/metrics.json"))}

    results = tmp_path / "cut"
    # the first run to reach step 75 sends it; the other stops at its next chunk boundary
    proc = bnexp(*COMPARE, "--workers", "2", "--results", str(results), signal_at="75:INT")
    _, err = proc.communicate(timeout=300)
    code = proc.returncode
    assert code == 130 and "Traceback" not in err and "and 1 more run folder" in err, err
    cut = {r["variant"]: r for r in map(lambda p: json.loads(p.read_text()), results.glob("*/metrics.json"))}
    assert set(cut) == {"dropout", "bn-pre"} and all(r["status"] == "interrupted" for r in cut.values()), cut
    assert all(0 < r["step"] < 150 for r in cut.values())

    ok(*COMPARE, "--workers", "2", "--results", str(results))
    final = {r["variant"]: r for r in map(lambda p: json.loads(p.read_text()), results.glob("*/metrics.json"))}
    for variant, rec in final.items():
        assert rec["run_id"] == cut[variant]["run_id"] and rec["status"] == "finished" and rec["resumed_from_step"] > 0
        for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy"):
            assert rec[key] == expected[variant][key], (variant, key)


def test_resume_by_run_id(tmp_path, uninterrupted):
    proc = bnexp(*CMD, "--results", str(tmp_path), signal_at=f"{CUT_AT}:KILL")
    assert proc.wait(300) == -9
    run = _only_run(tmp_path)
    rec = json.loads(ok("train", "--resume", run.name, "--results", str(tmp_path), "--json"))
    assert rec["run_id"] == run.name and rec["test_accuracy"] == uninterrupted["test_accuracy"]


def test_two_concurrent_trainings_into_one_folder(tmp_path):
    args = ["train", "--variant", "plain", "--dataset", "mnist-sample", "--set", "steps=30", "--set", "width=16",
            "--results", str(tmp_path)]
    procs = [bnexp(*args) for _ in range(2)]
    for p in procs:
        assert p.wait(300) == 0, p.communicate()
    recs = [json.loads(p.read_text()) for p in tmp_path.glob("*/metrics.json")]
    assert len(recs) == 2 and len({r["run_id"] for r in recs}) == 2
    assert all(r["status"] == "finished" for r in recs)
    assert recs[0]["test_accuracy"] == recs[1]["test_accuracy"]  # same config and seed, same result
    for r in recs:
        assert (tmp_path / r["run_id"] / "model.keras").stat().st_size > 0


def test_reader_sees_only_finished_runs(tmp_path):
    from bnexp import runs

    run = runs.claim(tmp_path, "plain", 0)
    lock = runs.Lock(run)
    assert lock.acquire()
    runs.write_json(run / "metrics.json", {"schema": 1, "run_id": run.name, "status": "running", "run_key": "k"})
    assert runs.read_record(run)["status"] == "running"  # locked: another process is on it
    assert not runs.Lock(run).acquire()
    lock.release()
    assert runs.read_record(run)["status"] == "interrupted"
    assert not [r for r in runs.scan(tmp_path) if r["status"] in runs.DONE]


def test_write_atomic_never_leaves_half_a_file(tmp_path, monkeypatch):
    from bnexp import runs
    from bnexp.errors import RunFailure

    target = tmp_path / "metrics.json"
    runs.write_json(target, {"a": 1})

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(RunFailure, match="No space left"):
        runs.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_importing_tensorflow_from_two_threads_leaves_stderr_alone():
    """tf() points fd 2 at /dev/null while TensorFlow loads (its start-up lines ignore the log
    level). Two threads doing that at once used to leave stderr at /dev/null for good, and
    every later message, errors included, vanished. Both threads here call it while the first
    is still looking for the package (made slow, as on a cold disk), as compare's two workers
    once did."""
    script = """
import os, sys, threading, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

class SlowDisk:  # finds nothing itself; only makes the search for tensorflow take 0.5 s
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            time.sleep(0.5)
        return None

sys.meta_path.insert(0, SlowDisk())
from bnexp.train import tf
before = os.fstat(2)
threads = [threading.Thread(target=tf) for _ in range(2)]
threads[0].start(); time.sleep(0.2); threads[1].start()
for t in threads: t.join()
after = os.fstat(2)
print((before.st_dev, before.st_ino) == (after.st_dev, after.st_ino))
sys.stderr.write("still here\\n")
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "True" and "still here" in res.stderr


def test_two_compares_at_once_on_one_folder_train_each_run_key_once(tmp_path):
    """Parallel CI jobs sharing a results folder: each run key is trained by one process, and the
    other waits for it and reuses what it made."""
    args = ["compare", "plain", "bn-pre", "--dataset", "mnist-sample", "--set", "steps=30", "--set", "width=16",
            "--seeds", "2", "--results", str(tmp_path)]
    procs = [bnexp(*args) for _ in range(2)]
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        errs.append(err)
    folders = [p for p in tmp_path.iterdir() if p.is_dir() and (p / "metrics.json").exists()]
    recs = [json.loads((p / "metrics.json").read_text()) for p in folders]
    assert len(recs) == 4 and len({r["run_key"] for r in recs}) == 4, [p.name for p in folders]
    assert all(r["status"] == "finished" for r in recs)
    trained = sorted(int(e.split("trained ")[1].split(",")[0]) for e in errs)
    assert sum(trained) == 4, errs  # however the two processes shared the work


def test_a_convnet_killed_mid_run_resumes_bit_identical(tmp_path):
    cnn = ["train", "--variant", "bn-pre", "--dataset", "mnist-sample", "--set", "model=cnn", "--set", "filters=4",
           "--set", "steps=40", "--set", "eval_every=10", "--set", "checkpoint_every=10", "--seed", "1"]
    ok(*cnn, "--results", str(tmp_path / "whole"))
    expected = _final(tmp_path / "whole")
    cut = tmp_path / "cut"
    proc = bnexp(*cnn, "--results", str(cut), signal_at="20:KILL")
    assert proc.wait(300) == -9
    ok(*cnn, "--results", str(cut))
    final = _final(cut)
    assert final["resumed_from_step"] == 20 and final["config"]["execution"] == "graph"
    for key in ("test_accuracy", "test_loss", "train_loss", "train_accuracy", "history"):
        assert final[key] == expected[key], key
