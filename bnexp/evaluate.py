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
    ds = data.load(data.resolve(name, data_dir or rec.get("config", {}).get("data_dir")))
    if ds.x_test.shape[1] != rec.get("input_dim", ds.x_test.shape[1]):
        raise UsageError(f"run {run.name} takes {rec.get('input_dim')} inputs but {name} has {ds.x_test.shape[1]}; "
                         "pick a dataset of the same shape")
    loss, acc = score_saved(run / "model.keras", ds.x_test, ds.y_test, ds.image_shape)
    return {"run_id": run.name, "status": rec["status"], "dataset": ds.source.name, "dataset_sha256": ds.source.sha256,
            "n_test": int(len(ds.y_test)), "test_loss": loss, "test_accuracy": acc,
            "recorded_test_accuracy": rec.get("test_accuracy") if name == rec.get("dataset") else None}


def score_saved(path, x, y, image_shape) -> tuple[float, float]:
    """Mean softmax cross-entropy and accuracy of a saved model, in inference mode."""
    from .train import tf

    tf()  # quietly, before Keras pulls it in
    import keras
    import numpy as np

    try:
        model = keras.models.load_model(path)
    except Exception as e:  # Keras raises many types for a damaged archive
        raise RunFailure(f"cannot load {path}: {type(e).__name__}; the file is damaged, train the run again") from None
    logits = model.predict(x.reshape((-1, *image_shape)), batch_size=10_000, verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    return float(np.mean(np.asarray(loss))), float(np.mean(np.argmax(logits, -1) == y))
