import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402

from bnexp.report import plots  # noqa: E402
from bnexp.errors import UsageError  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VARIANTS = ("plain", "bn-pre")


def fake_traces(scale: float, n_steps: int = 5) -> dict:
    steps = [46 * (i + 1) for i in range(n_steps)]
    values = [[[[scale * (-1 - t), scale * 0.1 * t, scale * (1 + t)] for _unit in range(3)]
               for _layer in range(2)] for t in range(n_steps)]
    return {"layers": ["dense", "dense_1"], "units": [0, 1, 2], "steps": steps, "percentiles": [15, 50, 85],
            "values": values, "mean": [[0.0, 0.0]] * n_steps, "var": [[1.0, 1.0]] * n_steps}


def fake_record(variant: str, seed: int, lr: float = 0.001, status: str = "finished", group: str = "") -> dict:
    rng = np.random.default_rng(seed)
    gain = 0.05 if variant.startswith("bn") else 0.0
    n_points = 9 if seed == 2 else 10  # seeds may log slightly different eval steps
    history = [{"step": 46 * (i + 1), "epoch": 0.1 * (i + 1),
                "train_loss": 1.0 / (i + 1) + 0.02 * rng.random(), "train_accuracy": 0.7,
                "test_loss": 0.8 / (i + 1), "test_accuracy": 0.7 + gain + 0.02 * i + 0.01 * rng.random()}
               for i in range(n_points)]
    return {"run_id": f"20261126-160102-{variant}-s{seed}", "status": status, "variant": variant, "seed": seed,
            "group": group, "test_accuracy": history[-1]["test_accuracy"], "test_loss": 0.1,
            "train_loss": 0.1, "wall_time_s": 1.0, "steps": 460, "history": history,
            "traces": fake_traces(1.0 if variant == "plain" else 0.3), "config": {"lr": lr, "batch_size": 128}}


@pytest.fixture
def records():
    return [fake_record(v, s) for v in VARIANTS for s in range(3)]


@pytest.fixture
def sweep_records():
    out = [fake_record(v, s, lr=lr) for v in VARIANTS for lr in (0.001, 0.01, 0.1) for s in range(3)]
    out.append(fake_record("plain", 3, lr=0.1, status="diverged"))
    out += [fake_record("plain", s, lr=1.0, status="diverged") for s in range(2)]
    return out


def assert_png(path, min_bytes=5_000):
    data = open(path, "rb").read()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes


def bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_import_is_light():
    code = ("import sys, bnexp.report, bnexp.report.plots, bnexp.report.stats; "
            "bad = {'matplotlib', 'tensorflow', 'keras'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_curves_writes_png_into_new_dirs(records, tmp_path):
    path = tmp_path / "a" / "b" / "curves.png"
    assert plots.curves(records, str(path)) == str(path)
    assert_png(path)


def test_curves_one_band_per_variant(records):
    fig = plots._curves_figure(records)
    try:
        ax_acc, ax_loss = fig.axes
        assert len(bands(ax_acc)) == len(VARIANTS) == len(bands(ax_loss))
        assert len(ax_acc.lines) == len(VARIANTS)
        assert [t.get_text().split(" (")[0] for t in ax_acc.get_legend().get_texts()] == list(VARIANTS)
        # aligned on the steps all seeds share: seed 2 stops after 9 evals
        assert len(ax_acc.lines[0].get_xdata()) == 9
        assert ax_acc.get_xlabel() == "step" and "accuracy" in ax_acc.get_ylabel()
    finally:
        plt.close(fig)


def test_curves_excludes_diverged_and_labels_groups(records):
    recs = records + [fake_record("plain", 9, status="diverged"), {"variant": "bn-post", "history": []}]
    recs += [fake_record("dropout", s, group="lr=0.1") for s in range(2)]
    fig = plots._curves_figure(recs)
    try:
        ax_acc = fig.axes[0]
        labels = [t.get_text() for t in ax_acc.get_legend().get_texts()]
        assert len(bands(ax_acc)) == 3
        assert any(lab == "plain (n=3; 1 not finished, excluded)" for lab in labels)
        assert any(lab.startswith("dropout lr=0.1 (n=2)") for lab in labels)
        colors = {tuple(line.get_color()) for line in ax_acc.lines}
        assert len(colors) == 3
    finally:
        plt.close(fig)


def test_curves_without_history_still_writes(tmp_path):
    assert_png(plots.curves([{"variant": "plain", "history": []}], str(tmp_path / "empty.png")), 1_000)


def test_sweep_records(sweep_records, tmp_path):
    assert_png(plots.sweep(sweep_records, "lr", str(tmp_path / "sweep.png")))
    fig = plots._sweep_figure(sweep_records, "lr")
    try:
        ax = fig.axes[0]
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "lr"
        assert len(bands(ax)) == len(VARIANTS)
        marks = [line for line in ax.lines if line.get_marker() == "x"]
        assert len(marks) == 2  # lr=0.1 (1 of 4 diverged) and lr=1.0 (all diverged)
        notes = sorted(t.get_text() for t in ax.texts)
        assert notes == ["100% div", "25% div"]
    finally:
        plt.close(fig)


def test_sweep_linear_axis_and_table_rows(tmp_path):
    rows = [{"group": f"batch_size={bs}", "variant": v, "n": 3, "divergence_rate": 0.0,
             "test_accuracy_mean": 0.9, "test_accuracy_best": 0.92, "test_accuracy_worst": 0.88}
            for v in VARIANTS for bs in (32, 64, 128)]
    fig = plots._sweep_figure(rows, "batch_size")
    try:
        ax = fig.axes[0]
        assert ax.get_xscale() == "linear"
        assert list(ax.lines[0].get_xdata()) == [32.0, 64.0, 128.0]
    finally:
        plt.close(fig)
    assert_png(plots.sweep(rows, "batch_size", str(tmp_path / "rows.png")))


def test_traces(records, tmp_path):
    assert_png(plots.traces(records[0], str(tmp_path / "t" / "traces.png")))
    fig = plots._traces_figure(records[0], units=2)
    try:
        assert len(fig.axes) == 2  # one panel per traced layer
        ax = fig.axes[0]
        assert len(bands(ax)) == 2 and len(ax.lines) == 2
        np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.1 * t for t in range(5)])
    finally:
        plt.close(fig)
    no_traces = dict(records[0], traces=None)
    with pytest.raises(UsageError):
        plots.traces(no_traces, str(tmp_path / "x.png"))


def test_traces_compare_side_by_side_same_ylim(records, tmp_path):
    assert_png(plots.traces_compare(records, str(tmp_path / "cmp.png")))
    fig = plots._traces_compare_figure(records)
    try:
        axes = np.array(fig.axes).reshape(2, len(VARIANTS))  # rows: layers, columns: variants
        for row in axes:
            assert row[0].get_ylim() == row[1].get_ylim()
        assert axes[0][0].get_title().startswith("plain") and axes[0][1].get_title().startswith("bn-pre")
    finally:
        plt.close(fig)
    with pytest.raises(UsageError):
        plots.traces_compare([dict(r, traces=None) for r in records], str(tmp_path / "none.png"))
