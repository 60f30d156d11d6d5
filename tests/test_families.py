"""Convnets, residual nets and the other normalizers through the real training loop, on tiny
configs: what bnexp does for the MLP works for them, and applies to the norms it should."""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import pytest

from bnexp import data, runs
from bnexp.evaluate import score_saved
from bnexp.report import bn_initial_share
from conftest import assert_one_error_line, invoke, run_tiny, tiny

CNN = ["model=cnn", "filters=4", "steps=12", "eval_every=6"]
RESNET = ["model=resnet", "steps=8", "eval_every=4", "batch_size=64"]


@pytest.fixture(scope="module")
def sample():
    return data.load(data.resolve("mnist-sample"))


def floats(x):
    return x.astype(np.float32) / np.float32(255.0)


def _run(results, variants, sets, seeds=(0,)):
    return run_tiny(tiny(results, variants, seeds, sets))


def test_a_cnn_compare_saves_models_that_score_what_was_recorded(tmp_path, sample):
    res = invoke(["compare", "plain", "bn-pre", "bn-post", "--dataset", "mnist-sample", "--seeds", "1",
                  "--results", tmp_path, *sum((["--set", s] for s in CNN), [])])
    assert res.exit_code == 0, res.stderr
    recs = [json.loads(p.read_text()) for p in tmp_path.glob("*/metrics.json")]
    assert sorted(r["variant"] for r in recs) == ["bn-post", "bn-pre", "plain"]
    for rec in recs:
        model = keras.models.load_model(tmp_path / rec["run_id"] / runs.MODEL)
        loss, acc = score_saved(tmp_path / rec["run_id"] / runs.MODEL, sample.x_test, sample.y_test)
        assert abs(acc - rec["test_accuracy"]) < 1e-4 and abs(loss - rec["test_loss"]) < 1e-4
        kinds = [type(l).__name__ for l in model.layers][1:4]
        assert kinds == {"plain": ["Conv2D", "Activation", "Conv2D"], "bn-pre": ["Conv2D", "BatchNormalization", "Activation"],
                         "bn-post": ["Conv2D", "Activation", "BatchNormalization"]}[rec["variant"]]
        assert model.layers[-1].units == 10
    bn = keras.models.load_model(tmp_path / next(r for r in recs if r["variant"] == "bn-pre")["run_id"] / runs.MODEL)
    assert bn.get_layer("bn_0").moving_mean.shape == (4,)  # per channel, over N·H·W


def test_recalibration_and_batch_statistics_on_a_residual_net(tmp_path, sample):
    """Precise BN on a graph with Add: each BN's moving statistics become the exact per-channel
    statistics of its input (in graph order, with the final weights); batch-statistics eval runs
    the residual graph with BN on batch statistics. The 7 BN layers' inputs come from one function,
    traced once: TensorFlow has no retracing to warn of."""
    import logging

    n = 256
    told: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: told.append(record.getMessage())
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        rec = _run(tmp_path, ["res-original"], RESNET + [f"bn_recalibrate={n}", "bn_batchstats_eval=true"]).records[0]
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    assert not [m for m in told if "retracing" in m]
    assert rec["status"] == "finished" and rec["bn_recalibrated_on"] == n and rec["moving_stat_layers"] > 2
    path = tmp_path / rec["run_id"] / runs.MODEL
    model = keras.models.load_model(path)
    x = floats(sample.x_train[:n])
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bns) == rec["moving_stat_layers"]
    for layer in bns:
        h = np.asarray(keras.Model(model.inputs, layer.input)(x, training=False), np.float64).reshape(-1, layer.moving_mean.shape[0])
        np.testing.assert_allclose(layer.moving_mean.numpy(), h.mean(0), rtol=1e-4, atol=1e-5, err_msg=layer.name)
        np.testing.assert_allclose(layer.moving_variance.numpy(), h.var(0), rtol=1e-4, atol=1e-4, err_msg=layer.name)
    loss, acc = score_saved(path, sample.x_test, sample.y_test)
    assert abs(acc - rec["test_accuracy"]) < 1e-4
    # a ResNet has no dropout, so batch-statistics eval is the net in training mode, batch by batch
    xt, yt, b = floats(sample.x_test), sample.y_test, 64
    # (bnexp scored batch statistics after recalibrating and before saving, so the saved statistics'
    # equality with numpy above also shows it put the moving statistics back)
    correct = sum(int(np.sum(np.argmax(model(xt[s:s + b], training=True), -1) == yt[s:s + b]))
                  for s in range(0, len(xt) // b * b, b))
    assert rec["test_accuracy_batchstats"] == pytest.approx(correct / (len(xt) // b * b), abs=1e-6)


@pytest.mark.parametrize("variant, moving", [("bn-pre", True), ("brn-pre", True), ("gn-pre", False),
                                             ("ln-pre", False), ("in-pre", False), ("plain", False)])
def test_recalibration_batchstats_and_the_moving_average_note_apply_only_to_moving_statistics(tmp_path, variant, moving):
    sets = ["steps=10", "width=16", "eval_every=5", "bn_recalibrate=500", "bn_batchstats_eval=true", "norm_groups=8"]
    rec = _run(tmp_path, [variant], sets).records[0]
    assert rec["status"] == "finished"
    assert ("test_accuracy_moving_avg" in rec) == moving and ("bn_recalibrated_on" in rec) == moving
    assert ("test_accuracy_batchstats" in rec) == moving
    assert (rec["moving_stat_layers"] > 0) == moving
    unrecalibrated = dict(rec, config=dict(rec["config"], bn_recalibrate=0))
    assert (bn_initial_share(unrecalibrated) is not None) == moving
    assert (len(rec.get("bn_variance_ratio") or []) > 0) == moving


@pytest.mark.parametrize("variant", ["bn-pre", "gn-pre", "ln-pre", "in-pre", "brn-pre"])
def test_every_normalizer_trains_at_batch_4_and_reloads_with_plain_keras(tmp_path, sample, variant):
    rec = _run(tmp_path, [variant], ["steps=20", "width=16", "eval_every=10", "batch_size=4", "renorm_warmup=10"]).records[0]
    assert rec["status"] == "finished"
    loss, acc = score_saved(tmp_path / rec["run_id"] / runs.MODEL, sample.x_test, sample.y_test)
    assert abs(acc - rec["test_accuracy"]) < 1e-4 and abs(loss - rec["test_loss"]) < 1e-4


def test_a_group_count_that_does_not_divide_the_channels_is_one_line(tmp_path):
    res = invoke(["compare", "bn-pre", "--dataset", "mnist-sample", "--results", tmp_path, "--set", "model=cnn",
                  "--set", "filters=32", "--set", "norm=group", "--set", "norm_groups=7"])
    assert_one_error_line(res, 2, "norm_groups=7", "32 channels")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_an_unknown_norm_lists_the_valid_ones_and_the_nearest(tmp_path):
    res = invoke(["compare", "bn-pre", "--dataset", "mnist-sample", "--results", tmp_path, "--set", "norm=grup"])
    line = assert_one_error_line(res, 2, "unknown norm 'grup'", "did you mean 'group'")
    for name in ("batch", "renorm", "layer", "instance", "none"):
        assert name in line


def test_a_residual_variant_on_the_mlp_names_the_model_it_needs(tmp_path):
    res = invoke(["compare", "res-full-preact", "--dataset", "mnist-sample", "--results", tmp_path])
    assert_one_error_line(res, 2, "res-full-preact", "--set model=resnet")


def test_a_baseline_typo_costs_under_a_second_and_trains_nothing(tmp_path):
    code = ("import sys, time\n"
            "from typer.testing import CliRunner; from bnexp.cli import app\n"
            "t = time.process_time()  # the command's CPU, not the interpreter's start-up or a busy host's wait\n"
            f"r = CliRunner().invoke(app, ['compare', 'plain', 'bn-pre', '--baseline', 'plian', '--dataset', "
            f"'fashion-mnist', '--results', {str(tmp_path / 'r')!r}])\n"
            "print(r.exit_code, round(time.process_time() - t, 3), 'tensorflow' in sys.modules, r.stderr.strip())")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    exit_code, seconds, tf_loaded, line = out.split(" ", 3)
    assert exit_code == "2" and tf_loaded == "False", out
    assert "baseline 'plian'" in line and "did you mean 'plain'" in line
    assert float(seconds) < 1.0, out  # checked before the data are even looked for
    assert not (tmp_path / "r").exists() or not [p for p in (tmp_path / "r").iterdir() if p.name != ".keys"]


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_bnexp_writes_parses_strictly(tmp_path):
    """A diverged run has non-finite losses: metrics.json, compare.json and every --json say null."""
    args = ["--dataset", "mnist-sample", "--results", tmp_path, "--set", "steps=20", "--set", "width=16",
            "--set", "eval_every=10", "--seeds", "2", "--lr", "100"]
    res = invoke(["compare", "plain", "bn-pre", *args, "--json"])
    assert res.exit_code == 0, res.stderr
    doc = _strict(res.stdout)
    assert any(r["status"] == "diverged" for r in doc["runs"])
    files = list(tmp_path.rglob("*.json"))
    assert len(files) >= 5
    for f in files:
        _strict(f.read_text())
    run = doc["runs"][0]["run_id"]
    other = doc["runs"][1]["run_id"]
    for cmd in (["show", run], ["diff", run, other], ["eval", doc["runs"][-1]["run_id"]]):
        res = invoke([*cmd, "--results", tmp_path, "--json"])
        if cmd[0] == "eval" and res.exit_code != 0:
            continue  # eval of a diverged run is refused; the others are scored
        assert res.exit_code == 0, (cmd, res.stderr)
        _strict(res.stdout)
