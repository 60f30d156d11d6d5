"""Real training on the bundled MNIST sample: smoke, honesty, determinism, reuse, divergence, traces."""

import json

import keras
import numpy as np
import pytest

from bnexp import data
from bnexp.config import Experiment, load
from conftest import TINY_SETS, run_folders, run_tiny, tiny
from bnexp.evaluate import score_saved
from bnexp.executors.local import LocalExecutor
from bnexp.plan import plan, resolve_source
from bnexp.train import Engine

TINY = ["steps=40", "width=32"]  # over conftest's TINY_SETS: long enough to learn something


def _exp(tmp_path, variants, seeds=(0,), sets=(), **flags) -> Experiment:
    return tiny(tmp_path, variants, seeds, TINY + list(sets), **flags)


_run = run_tiny


def floats(x):
    """Images as the models take them: uint8 pixels become float32 k/255, as in training."""
    return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x


@pytest.fixture(scope="module")
def sample():
    return data.load(data.resolve("mnist-sample"))


def test_smoke_run_writes_everything_and_reports_what_the_model_scores(tmp_path, sample):
    out = _run(_exp(tmp_path, ["bn-pre"]))
    rec = out.records[0]
    run = tmp_path / rec["run_id"]
    assert rec["status"] == "finished" and rec["steps"] == 40
    for f in ("config.yaml", "metrics.json", "model.keras", "checkpoint.npz"):
        assert (run / f).is_file(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test_accuracy"] == rec["test_accuracy"]
    for key in ("dataset", "dataset_source", "dataset_sha256", "n_train", "n_test", "seed", "variant", "config",
                "python_version", "tensorflow_version", "bnexp_version", "cpu", "samples_per_s", "wall_time_s"):
        assert saved.get(key) is not None, key
    assert [h["step"] for h in saved["history"]] == [10, 20, 30, 40]
    assert saved["history"][-1]["eval_samples"] == 1000  # the final point scores the whole test set
    # honest numbers: plain Keras scores the saved model exactly as recorded
    loss, acc = score_saved(run / "model.keras", sample.x_test, sample.y_test)
    assert abs(acc - rec["test_accuracy"]) < 1e-4 and abs(loss - rec["test_loss"]) < 1e-4
    loss, acc = score_saved(run / "model.keras", sample.x_train, sample.y_train)
    assert abs(acc - rec["train_accuracy"]) < 1e-4
    assert rec["test_accuracy"] > 0.5  # 40 steps of Adam on real digits learn something


def test_same_seed_same_metrics_and_reused_program_equals_separate_run(tmp_path):
    """Runs that share one compiled program (as a compare's do) get exactly what separate runs get."""
    together = _run(_exp(tmp_path / "a", ["dropout", "bn-pre"], seeds=(0, 1)))
    alone = {}
    for variant in ("dropout", "bn-pre"):
        exp = _exp(tmp_path / "b", [variant], seeds=(1,))
        alone[variant] = _run(exp).records[0]
    for rec in together.records:
        if rec["seed"] == 1:
            other = alone[rec["variant"]]
            # tolerance 0: same ops, same order, same initial state and RNG state
            assert rec["test_accuracy"] == other["test_accuracy"]
            assert rec["test_loss"] == pytest.approx(other["test_loss"], abs=1e-6)
            assert [h["train_loss"] for h in rec["history"]] == pytest.approx([h["train_loss"] for h in other["history"]], abs=1e-6)
    seed0, seed1 = (r for r in together.records if r["variant"] == "bn-pre")
    assert seed0["test_loss"] != seed1["test_loss"]  # a seed changes weights, order and masks


def test_runs_trained_at_once_equal_runs_trained_one_by_one(tmp_path):
    """compare's --workers 2: two runs train at the same time in two threads. Each must get
    exactly what it gets alone: its own initial weights, data order, dropout masks and BN
    statistics. Tolerance 0, on the records and on every saved weight."""
    sets = ["steps=800", "width=128", "eval_every=200"]  # long enough that two loops overlap
    one = _run(_exp(tmp_path / "one", ["dropout", "bn-pre"], seeds=(0, 1), sets=sets), workers=1)
    two = _run(_exp(tmp_path / "two", ["dropout", "bn-pre"], seeds=(0, 1), sets=sets), workers=2)
    assert one.trained == two.trained == 4
    assert [(r["variant"], r["seed"]) for r in two.records] == [(r["variant"], r["seed"]) for r in one.records]
    # they did train at once: some two training loops ran over the same moments
    spans = sorted((r["train_start_unix"], r["train_end_unix"]) for r in two.records)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans
    for a, b in zip(one.records, two.records):
        for key in ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "steps"):
            assert a[key] == b[key], (a["variant"], a["seed"], key)
        assert a["history"] == b["history"]
        wa = keras.models.load_model(tmp_path / "one" / a["run_id"] / "model.keras").get_weights()
        wb = keras.models.load_model(tmp_path / "two" / b["run_id"] / "model.keras").get_weights()
        assert len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))
    assert one.records[0]["test_loss"] != one.records[1]["test_loss"]  # the seeds did differ


def test_same_seed_gives_every_variant_the_same_data_order():
    from bnexp.train.loop import _perm

    a, b = _perm(3, 0, 4000, 31, 128), _perm(3, 0, 4000, 31, 128)
    assert (a == b).all() and not (a == _perm(3, 1, 4000, 31, 128)).all()
    assert len(np.unique(a)) == a.size  # an epoch visits each image at most once


def test_reuse_force_and_retry(tmp_path):
    exp = _exp(tmp_path, ["plain"], seeds=(0, 1))
    first = _run(exp)
    assert first.trained == 2
    again = _run(exp)
    assert again.trained == 0 and again.reused == 2 and all(r.get("reused") for r in again.records)
    forced = _run(exp, force=True)
    assert forced.trained == 2
    # a failed run is reported, not retried, until --retry-failed
    victim = tmp_path / forced.records[0]["run_id"] / "metrics.json"
    for rec in list(first.records) + list(forced.records):
        m = tmp_path / rec["run_id"] / "metrics.json"
        if rec["seed"] == 0:
            doc = json.loads(m.read_text())
            doc["status"] = "failed"
            m.write_text(json.dumps(doc))
    assert victim.exists()
    after = _run(exp)
    assert after.failed == 1 and after.trained == 0
    retried = _run(exp, retry_failed=True)
    assert retried.trained == 1 and retried.reused == 1


def test_a_run_that_fails_while_another_trains_is_recorded_and_the_batch_goes_on(tmp_path):
    """One run's executor fails (as a remote worker might) while 2 runs train at once: that run
    is recorded as failed with a one-line error, the others train, nothing is left locked."""
    from bnexp import runs

    class LosesOneRun(LocalExecutor):
        def run(self, task, control):
            if (task.spec.variant.name, task.spec.config.seed) == ("plain", 1):
                raise RuntimeError("worker lost\nsecond line")
            return super().run(task, control)

    exp = _exp(tmp_path, ["plain", "bn-pre"], seeds=(0, 1))
    out = _run(exp, executor=LosesOneRun(2))
    assert (out.trained, out.failed) == (3, 1)
    status = {(r["variant"], r["seed"]): r["status"] for r in out.records}
    assert status == {("plain", 0): "finished", ("plain", 1): "failed",
                      ("bn-pre", 0): "finished", ("bn-pre", 1): "finished"}
    lost = next(r for r in out.records if r["status"] == "failed")
    saved = json.loads((tmp_path / lost["run_id"] / "metrics.json").read_text())
    assert saved["status"] == "failed" and saved["error"] == "RuntimeError: worker lost"
    for rec in out.records:
        lock = runs.Lock(tmp_path / rec["run_id"])
        assert lock.acquire()
        lock.release()
    again = _run(exp, workers=2)  # reported, not retried
    assert (again.trained, again.reused, again.failed) == (0, 3, 1)
    retried = _run(exp, workers=2, retry_failed=True)
    assert (retried.trained, retried.reused, retried.failed) == (1, 3, 0)
    assert {r["status"] for r in retried.records} == {"finished"}


def test_a_sweep_shows_a_reused_run_in_its_own_cell(tmp_path):
    first = _run(_exp(tmp_path, ["plain"])).records[0]  # a plain compare: no sweep cell
    out = _run(_exp(tmp_path, ["plain"], grid={"width": [32, 16]}))
    assert [(r["group"], r.get("reused", False)) for r in out.records] == [("width=32", True), ("width=16", False)]
    assert out.records[0]["run_id"] == first["run_id"] and first["group"] == ""


def test_a_key_a_variant_never_reads_does_not_train_it_again(tmp_path):
    """plain has no BN: in a sweep over bn_momentum it trains once, and that run fills every cell."""
    exp = _exp(tmp_path, ["plain", "bn-pre"], grid={"bn_momentum": [0.99, 0.9]})
    out = _run(exp, workers=2)
    assert (out.trained, out.reused) == (3, 1)
    cells = {(r["group"], r["variant"]): r for r in out.records}
    assert cells[("bn_momentum=0.99", "plain")]["run_id"] == cells[("bn_momentum=0.9", "plain")]["run_id"]
    assert cells[("bn_momentum=0.9", "plain")]["reused"] and cells[("bn_momentum=0.9", "plain")]["group"] == "bn_momentum=0.9"
    assert cells[("bn_momentum=0.99", "bn-pre")]["run_id"] != cells[("bn_momentum=0.9", "bn-pre")]["run_id"]
    assert len(run_folders(tmp_path)) == 3  # not .keys/
    again = _run(exp)
    assert (again.trained, again.reused) == (0, 4)
    # a key the variant reads still tells runs apart (old runs' keys: tests/test_keys.py)
    sha = resolve_source(exp).sha256
    momentum = plan(_exp(tmp_path, ["plain"], sets=["optimizer=momentum", "momentum=0.5"]))[0]
    assert momentum.key(sha) != plan(_exp(tmp_path, ["plain"], sets=["optimizer=momentum"]))[0].key(sha)


def test_plain_at_lr_100_is_recorded_as_diverged(tmp_path):
    exp = _exp(tmp_path, ["plain", "bn-pre"], sets=["lr=100.0"])
    out = _run(exp)
    plain = next(r for r in out.records if r["variant"] == "plain")
    assert plain["status"] == "diverged"
    assert 1 <= plain["diverged_step"] < 40 and plain["steps"] == plain["diverged_step"]
    assert not np.isfinite(plain["diverged_loss"]) or plain["diverged_loss"] > 100 * plain["first_loss"]
    saved = json.loads((tmp_path / plain["run_id"] / "metrics.json").read_text())
    assert saved["status"] == "diverged"


def test_traces_change_nothing_and_match_the_saved_model(tmp_path, sample):
    with_t = _run(_exp(tmp_path / "t", ["bn-pre"], sets=["traces=true", "dropout=0.5"])).records[0]
    without = _run(_exp(tmp_path / "n", ["bn-pre"])).records[0]
    assert [h["train_loss"] for h in with_t["history"]] == [h["train_loss"] for h in without["history"]]
    m1 = keras.models.load_model(tmp_path / "t" / with_t["run_id"] / "model.keras")
    m2 = keras.models.load_model(tmp_path / "n" / without["run_id"] / "model.keras")
    for a, b in zip(m1.variables, m2.variables):  # BN moving statistics included
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    tr = with_t["traces"]
    assert tr["steps"] == [10, 20, 30, 40] and tr["layers"] == ["act_0", "act_1"]
    # recompute the last eval point's percentiles from the saved model and the probe batch
    probe = keras.Model(m1.inputs, [m1.get_layer(n).input for n in tr["layers"]])
    x = floats(sample.x_test[: 1000])
    outs = probe(x, training=False)
    for layer, out in enumerate(outs):
        expected = np.percentile(np.asarray(out)[:, : len(tr["units"])], [15, 50, 85], axis=0).T
        np.testing.assert_allclose(tr["values"][-1][layer], expected, atol=1e-5)
        assert tr["mean"][-1][layer] == pytest.approx(float(np.mean(out)), abs=1e-5)


def test_bn_recalibrate_sets_the_exact_statistics_and_reports_what_the_saved_model_scores(tmp_path, sample):
    """Precise BN: after training, each BN layer holds the mean and variance of its input over the
    first n training images under the final weights; the moving-average score is kept beside it."""
    n = 1500
    rec = _run(_exp(tmp_path / "r", ["bn-post"], sets=[f"bn_recalibrate={n}"])).records[0]
    plain = _run(_exp(tmp_path / "p", ["bn-post"])).records[0]
    # training itself is untouched: same eval history up to the final point, same moving-average score
    assert [h["train_loss"] for h in rec["history"]] == [h["train_loss"] for h in plain["history"]]
    assert rec["history"][:-1] == plain["history"][:-1]
    assert rec["test_accuracy_moving_avg"] == plain["test_accuracy"] and rec["bn_recalibrated_on"] == n
    assert rec["test_accuracy"] != plain["test_accuracy"] or rec["test_loss"] != plain["test_loss"]
    model = keras.models.load_model(tmp_path / "r" / rec["run_id"] / "model.keras")
    x = floats(sample.x_train[:n])
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == 2
    for bn in bns:  # bn-post: BN follows ReLU, so its input is non-negative
        h = np.asarray(keras.Model(model.inputs, bn.input)(x, training=False), dtype=np.float64)
        np.testing.assert_allclose(bn.moving_mean.numpy(), h.mean(0), rtol=1e-4, atol=1e-5, err_msg=bn.name)
        np.testing.assert_allclose(bn.moving_variance.numpy(), h.var(0), rtol=1e-4, atol=1e-5, err_msg=bn.name)
    loss, acc = score_saved(tmp_path / "r" / rec["run_id"] / "model.keras", sample.x_test, sample.y_test)
    assert abs(acc - rec["test_accuracy"]) < 1e-4 and abs(loss - rec["test_loss"]) < 1e-4
    # a net without BN is left alone and records no moving-average score
    no_bn = _run(_exp(tmp_path / "n", ["plain"], sets=[f"bn_recalibrate={n}"])).records[0]
    assert "test_accuracy_moving_avg" not in no_bn


def test_eager_and_graph_execution_train_too(tmp_path):
    xla = _run(_exp(tmp_path / "x", ["bn-pre"], sets=["steps=10", "eval_every=5"])).records[0]
    for mode in ("graph", "eager"):
        rec = _run(_exp(tmp_path / mode, ["bn-pre"], sets=["steps=10", "eval_every=5", f"execution={mode}"])).records[0]
        assert rec["status"] == "finished"
        # same math, different kernels: equal within float32 round-off
        assert rec["test_loss"] == pytest.approx(xla["test_loss"], rel=1e-3)


def test_engine_keeps_one_dataset_resident(sample):
    from bnexp.models import VARIANTS
    from bnexp.train import settings

    eng = Engine()
    cfg = load(None, {"dataset": "mnist-sample"}, TINY_SETS + TINY).config
    s = settings(cfg, len(sample.x_train), moving_stats=False)
    with eng.program(VARIANTS["plain"], cfg, s, sample, "k") as first:
        with eng.program(VARIANTS["plain"], cfg, s, sample, "k") as second:
            assert second is not first  # the first is busy: a second is built
    with eng.program(VARIANTS["plain"], cfg, s, sample, "k") as again:
        assert again is first  # a free one is lent again, not rebuilt
    assert len(eng.tensors) == 1 and [len(v) for v in eng.programs.values()] == [2]


def test_compare_shows_a_diverged_run_and_keeps_going(tmp_path):
    from typer.testing import CliRunner

    from bnexp.cli import app

    args = ["compare", "plain", "bn-pre", "--seed", "0", "--dataset", "mnist-sample", "--lr", "100", "--results", str(tmp_path),
            "--set", "steps=40", "--set", "width=32", "--set", "eval_every=10"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    plain = next(i for i, line in enumerate(lines) if line.startswith("plain"))
    assert "diverged 1/1" in " ".join(lines[plain:plain + 2])  # the row's accuracy cell says it
    assert "bn-pre" in res.stdout and "trained 2" in res.stderr  # it went on to the next variant


def test_tensorflow_imports_without_kerass_optional_modules_which_still_import_after():
    """tf() hides scikit-learn, pandas and matplotlib from Keras's start-up (about 2 s), and only then."""
    import subprocess
    import sys

    code = ("import sys; from bnexp.train.program import KERAS_OPTIONAL, tf; t = tf(); "
            "hidden = [m for m in KERAS_OPTIONAL if m in sys.modules]; "
            "import keras, matplotlib.pyplot, pandas, sklearn.base; "
            "print(hidden, float(t.reduce_sum(keras.layers.Dense(2, kernel_initializer='ones')(t.ones([1, 3])))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "6.0"]


def test_the_hiding_applies_to_keras_and_tensorflow_imports_only(tmp_path, monkeypatch):
    """Another thread importing a hidden module while TensorFlow imports gets it as usual."""
    import importlib
    import sys

    from bnexp.train.program import _Hide

    (tmp_path / "probe_optional.py").write_text("VALUE = 1\n")
    (tmp_path / "keras_probe.py").write_text("import probe_optional\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with _Hide(["probe_optional"]):
        with pytest.raises(ModuleNotFoundError, match="hidden while TensorFlow imports"):
            importlib.import_module("keras_probe")  # its importer is named keras...
        sys.modules.pop("keras_probe", None)
        assert importlib.import_module("probe_optional").VALUE == 1  # ... and this test is not
    assert _Hide not in map(type, sys.meta_path)


def test_the_xla_cache_keeps_under_its_cap_by_deleting_the_oldest_files(tmp_path):
    import os

    from bnexp.train.program import prune_cache

    for k in range(8):  # 8 x 100 KB, file k written at time 1000 + k
        f = tmp_path / f"entry{k}.pb"
        f.write_bytes(b"x" * 100_000)
        os.utime(f, (1000 + k, 1000 + k))
    (tmp_path / "notes.txt").write_bytes(b"y" * 1_000_000)  # not XLA's: never touched
    assert prune_cache(tmp_path, 800_000) == []  # at the cap: nothing goes
    gone = prune_cache(tmp_path, 500_000)  # over it: the oldest go until 3/4 of the cap (375 KB) is left
    assert [f.name for f in gone] == [f"entry{k}.pb" for k in range(5)]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["entry5.pb", "entry6.pb", "entry7.pb", "notes.txt"]


def test_tensorflow_writes_its_xla_cache_where_bnexp_says_and_bnexp_prunes_it_at_start(tmp_path):
    """In a fresh process: an old entry over BNEXP_XLA_CACHE_MB goes when TensorFlow starts, and the
    program compiled afterwards is written there."""
    import os
    import subprocess
    import sys

    cache = tmp_path / "bnexp" / "xla"
    cache.mkdir(parents=True)
    (cache / "old.pb").write_bytes(b"x" * 200_000)
    os.utime(cache / "old.pb", (1000, 1000))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "BNEXP_XLA_CACHE_MB": "0.1"}
    env.pop("TF_XLA_FLAGS", None)
    code = ("from bnexp.train.program import tf; t = tf(); "
            "print(float(t.function(lambda x: 2 * x, jit_compile=True)(t.constant(3.0))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["6.0"]
    entries = list(cache.glob("*.pb"))
    assert entries and "old.pb" not in {f.name for f in entries}


def test_a_bad_xla_cache_size_is_one_line_and_exit_2_before_any_run_folder(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "BNEXP_XLA_CACHE_MB": "lots"}
    env.pop("TF_XLA_FLAGS", None)
    p = subprocess.run([sys.executable, "-c", "from bnexp.cli import app; app()", "train", "--variant", "plain",
                        "--dataset", "mnist-sample", "--results",
                        str(tmp_path / "r")], capture_output=True, text=True, env=env)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: BNEXP_XLA_CACHE_MB=lots is not a size in megabytes")
    assert "Traceback" not in p.stderr
    assert not [d for d in (tmp_path / "r").glob("*") if d.is_dir() and not d.name.startswith(".")]
