"""A run's event file, read back with TensorBoard's own reader: the eval history as scalars,
the resolved config as an HParams session and the final metrics."""

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from bnexp.train.tensorboard import hparam_values, write_run

HISTORY = [{"step": 10, "train_loss": 1.5, "train_accuracy": 0.5, "test_loss": 1.4, "test_accuracy": 0.55},
           {"step": 20, "train_loss": 0.7, "train_accuracy": 0.8, "test_loss": 0.6, "test_accuracy": 0.82}]
HPARAMS = {"variant": "bn-pre", "seed": 1, "lr": 0.001, "use_bias": True, "steps": None, "norm": "batch",
           "variant_spec": {"block": ["dense", "bn", "act"], "head": []}, "data_dir": None}
METRICS = {"status": "finished", "test_accuracy": 0.8312, "test_loss": float("nan"), "steps": 20,
           "samples_per_s": None, "train_start_unix": 1.8e9, "history": HISTORY, "traces": None}


def read(folder):
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


def session_hparams(acc) -> dict:
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    info = metadata.parse_session_start_info_plugin_data(content)
    out = {}
    for name, v in info.hparams.items():
        kind = v.WhichOneof("kind")
        out[name] = getattr(v, kind)
    return out


def test_write_run_scalars_hparams_and_final_metrics(tmp_path):
    write_run(tmp_path / "tb", HISTORY, HPARAMS, METRICS)
    acc = read(tmp_path / "tb")
    for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [10, 20]
        assert [e.value for e in events] == pytest.approx([p[key] for p in HISTORY])
    assert session_hparams(acc) == {
        "variant": "bn-pre", "seed": 1.0, "lr": 0.001, "use_bias": True, "norm": "batch",
        "variant_spec.block": '["dense", "bn", "act"]', "variant_spec.head": "[]"}  # None keys left out
    final = {tag[len("final/"):]: acc.Scalars(tag) for tag in acc.Tags()["scalars"] if tag.startswith("final/")}
    assert set(final) == {"test_accuracy", "test_loss", "steps", "diverged"}
    assert [e.step for e in final["test_accuracy"]] == [20]  # at the last eval step
    assert final["test_accuracy"][0].value == pytest.approx(0.8312)
    assert math.isnan(final["test_loss"][0].value) and final["diverged"][0].value == 0.0
    # no experiment summary: TensorBoard builds the HParams table from every run's session
    assert metadata.EXPERIMENT_TAG not in acc.PluginTagToContent(metadata.PLUGIN_NAME)


def test_hparams_plugin_lists_every_run_with_its_metrics(tmp_path):
    """What `tensorboard --logdir results` shows: one session per run, hyperparameters that
    differ marked as such, final metrics as metric columns."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins.base_plugin import TBContext
    from tensorboard.plugins.hparams import backend_context

    for seed, status in ((0, "finished"), (1, "diverged")):
        write_run(tmp_path / f"run-s{seed}" / "tb", HISTORY, {**HPARAMS, "seed": seed}, {**METRICS, "status": status})
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(tmp_path))
    ctx = backend_context.Context(TBContext(logdir=str(tmp_path), data_provider=provider, multiplexer=mux))
    request = context.RequestContext()
    experiment = ctx.experiment_from_metadata(request, "", include_metrics=True, data_provider_hparams=None,
                                              hparams_run_to_tag_to_content=ctx.hparams_metadata(request, ""))
    infos = {h.name: h for h in experiment.hparam_infos}
    assert {"variant", "seed", "lr", "norm", "variant_spec.block"} <= set(infos)
    assert infos["seed"].differs and not infos["lr"].differs
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert {"final/test_accuracy", "final/diverged", "test_accuracy"} <= metrics


def test_hparam_values_types():
    got = hparam_values({"a": None, "b": [1, 2], "c": float("inf"), "d": {"e": {"f": 1}}, "g": (3,)})
    assert got == {"b": "[1, 2]", "c": "inf", "d.e.f": 1, "g": "[3]"}

