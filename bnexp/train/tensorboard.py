"""A run's TensorBoard files, written once the run ends with TensorBoard's own event writer
(plain protobufs: no TensorFlow ops, no cost per eval point; the writer opens its file through
tf.io.gfile, which is loaded anyway in a process that trains).

`tensorboard --logdir results` then shows each run's eval history as scalars and lists every
run in the HParams dashboard: its resolved config as hyperparameters and its final metrics.
"""

from __future__ import annotations

import json
import math
import time

HISTORY_KEYS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
# Final metrics get their own tags: the last eval point may score a subsample of the test
# set (eval_samples), the final metrics the whole of it, and one tag should mean one thing.
FINAL = "final/"


def hparam_values(hparams: dict) -> dict:
    """`hparams` as the values TensorBoard's HParams accept (bool, int, float, str).

    Nested dicts become dotted keys (variant_spec.block). Lists and tuples become their JSON
    text. None is left out: TensorBoard shows an empty cell, whereas a "None" string would
    turn a numeric column of other runs (steps, say) into a column of strings. Non-finite
    floats become text for the same reason a protobuf Value cannot carry them to JSON.
    """
    out = {}
    for key, value in hparams.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in hparam_values(value).items()})
        elif value is None:
            continue
        elif isinstance(value, (list, tuple)):
            out[key] = json.dumps(list(value), default=str)
        elif isinstance(value, float) and not math.isfinite(value):
            out[key] = str(value)
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = str(value)
    return out


def metric_values(metrics: dict) -> dict[str, float]:
    """The numeric final metrics (bools as 0/1), plus `diverged` (0/1) from the status.
    Lists, dicts and strings (history, traces, status) are not metrics, nor are the Unix times
    a run started and ended (train_start_unix): a column of dates says nothing of the result."""
    out = {k: float(v) for k, v in metrics.items() if isinstance(v, (bool, int, float)) and not k.endswith("_unix")}
    if isinstance(metrics.get("status"), str):
        out["diverged"] = float(metrics["status"] == "diverged")
    return out


def write_run(folder, history: list[dict], hparams: dict | None = None, metrics: dict | None = None) -> None:
    """Write `folder`'s event file: the eval history as scalars (tags train_loss, train_accuracy,
    test_loss, test_accuracy at each eval step), the run's `hparams` (its resolved config) as an
    HParams session, and `metrics` as scalars tagged final/<name> at the last step.

    The HParams dashboard builds its table from these runs alone (no experiment summary is
    written: one per run would make TensorBoard pick one run's hyperparameter list for all).
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    now = time.time()
    last = max((int(p["step"]) for p in history), default=0)

    def add(step: int, summary) -> None:
        writer.add_event(event_pb2.Event(step=step, wall_time=now, summary=summary))

    if hparams:
        # a plain Summary protobuf: summary_v2.hparams_pb builds it without TensorFlow
        add(0, hp.hparams_pb(hparam_values(hparams), start_time_secs=now))
    for point in history:
        add(int(point["step"]), summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=k, simple_value=float(point[k])) for k in HISTORY_KEYS if k in point]))
    final = metric_values(metrics or {})
    if final:
        add(last, summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=FINAL + k, simple_value=v)
                                             for k, v in final.items()]))
    writer.close()
