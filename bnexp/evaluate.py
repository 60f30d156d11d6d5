"""`bnexp eval`: reload a run's saved model with plain Keras and score it."""

from __future__ import annotations

from . import runs
from .errors import RunFailure, UsageError


def evaluate_run(ref: str, dataset: str | None = None, data_dir: str | None = None,
                 results: str = "results") -> dict:
    """Test loss and accuracy of <run>/model.keras on `dataset` (default: the run's own)."""
    from . import data

    run = runs.find_run(ref, results)
    rec = runs.read_record(run)
    if rec["status"] == "broken":
        raise RunFailure(f"run {run.name} cannot be read: {rec['problem']}")
    if rec["status"] not in runs.DONE:
        hint = f"resume it with `bnexp train --resume {run.name}`" if rec["status"] == "interrupted" else "train it again"
        raise RunFailure(f"run {run.name} is {rec['status']}, not finished; {hint}")
    if not (run / "model.keras").exists():
        raise RunFailure(f"run {run.name} has no model.keras; train it again")
    name = dataset or rec.get("dataset")
    cfg = rec.get("config", {})
    options = {k: cfg.get(k) for k in ("test_fraction", "image_size", "color_mode", "label_column") if cfg.get(k) is not None}
    ds = data.load(data.resolve(name, data_dir or cfg.get("data_dir"), options=options))
    shape = list(ds.input_shape)
    if rec.get("input_shape") not in (None, shape) or rec.get("input_dim", ds.x_test[0].size) != ds.x_test[0].size:
        raise UsageError(f"run {run.name} takes inputs of shape {rec.get('input_shape') or rec.get('input_dim')} but "
                         f"{name} has {shape}; pick a dataset of the same shape")
    loss, acc = score_saved(run / "model.keras", ds.x_test, ds.y_test)
    return {"run_id": run.name, "status": rec["status"], "dataset": ds.source.name, "dataset_sha256": ds.source.sha256,
            "n_test": int(len(ds.y_test)), "test_loss": loss, "test_accuracy": acc,
            "recorded_test_accuracy": rec.get("test_accuracy") if name == rec.get("dataset") else None}


def score_saved(path, x, y) -> tuple[float, float]:
    """Mean softmax cross-entropy and accuracy of a saved model loaded with plain Keras, in
    inference mode. uint8 pixels are fed as float32 k/255, as training feeds them."""
    from .train import tf

    tf()  # quietly, before Keras pulls it in
    import keras
    import numpy as np

    import bnexp.models.layers  # noqa: F401 - bnexp's own layers, registered with Keras
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise RunFailure(f"cannot load {path}: {type(e).__name__}; the file is damaged, train the run again") from None
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    logits = model.predict(x, batch_size=10_000, verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    return float(np.mean(np.asarray(loss))), float(np.mean(np.argmax(logits, -1) == y))
