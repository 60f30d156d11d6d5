"""Would training a variant's seeds as one batched model make a compare faster? (issue #17's lever)

    python benchmarks/batched_seeds.py        # about 1 minute; writes benchmarks/batched-seeds-last-run.json

The step of the lab's net (784 -> 256 -> 256 -> 10, ReLU, softmax cross-entropy, plain SGD), one
epoch of 468 steps at batch 128, in one XLA while loop, three ways:
  one        one model;
  batched    3 models as one: every weight gets a leading model axis, each product is a batched
             matmul (what "the seeds as one batched model" means for a dense net);
  separate   the 3 models' steps side by side in the same compiled loop.
The throughput is 3 x one's time over the other's. Also checked: whether model 0 of the batched and
the separate loops ends with exactly the bits of the one-model loop. BN, Adam and the data pipeline
are left out: they add per-model work that batching does not share either.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS, BATCH, STEPS, ROUNDS = 3, 128, 468, 5
SHAPES = [(784, 256), (256, 256), (256, 10)]


def loop(way: str, x, y):
    """One epoch for `models` models, the way `way` lays them out; returns the final weights."""
    models = 1 if way == "one" else MODELS

    def forward(ws, h):
        for k, w in enumerate(ws):
            h = tf.linalg.matmul(h, w)
            h = tf.nn.relu(h) if k < len(ws) - 1 else h
        return h

    def loss(ws, xb, yb):
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=forward(ws, xb)), -1)

    def sgd(ws, xb, yb):
        with tf.GradientTape() as tape:
            tape.watch(ws)
            total = tf.reduce_sum(loss(ws, xb, yb))
        return [w - 0.01 * g for w, g in zip(ws, tape.gradient(total, ws))]

    @tf.function(jit_compile=True)
    def epoch(ws):
        def body(i, *ws):
            xb, yb = x[i][:models], y[i][:models]
            if way == "batched":
                return (i + 1, *sgd(list(ws), xb, yb))
            per_model = [sgd([w[m] for w in ws], xb[m], yb[m]) for m in range(models)]
            return (i + 1, *(tf.stack([p[k] for p in per_model]) for k in range(len(ws))))

        return tf.while_loop(lambda i, *ws: i < STEPS, body, (0, *ws))[1:]

    return epoch, models


def main() -> int:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((STEPS, MODELS, BATCH, 784), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, (STEPS, MODELS, BATCH)).astype(np.int32))
    w0 = [rng.standard_normal((MODELS, *s), dtype=np.float32) * 0.05 for s in SHAPES]
    fns = {way: loop(way, x, y) for way in ("one", "batched", "separate")}
    times: dict[str, list[float]] = {way: [] for way in fns}
    finals = {}
    for fn, models in fns.values():
        fn([tf.constant(w[:models]) for w in w0])  # compiles
    for _ in range(ROUNDS):
        for way, (fn, models) in fns.items():
            ws = [tf.constant(w[:models]) for w in w0]
            t = time.perf_counter()
            out = fn(ws)
            out[0].numpy()
            times[way].append(time.perf_counter() - t)
            finals[way] = [o.numpy()[0] for o in out]
    best = {way: min(ts) for way, ts in times.items()}
    r = {"epoch_s": times, "best_s": best,
         "throughput_over_one": {way: MODELS * best["one"] / best[way] for way in ("batched", "separate")},
         "model_0_bits_equal_one": {way: all(np.array_equal(a, b) for a, b in zip(finals[way], finals["one"]))
                                    for way in ("batched", "separate")},
         "tensorflow": tf.__version__, "cores": os.cpu_count()}
    for way in ("batched", "separate"):
        print(f"{way}: {MODELS} models {best[way]:.3f} s against one {best['one']:.3f} s: "
              f"{r['throughput_over_one'][way]:.2f}x the throughput; model 0 bit-identical: {r['model_0_bits_equal_one'][way]}")
    out = HERE / "batched-seeds-last-run.json"
    out.write_text(json.dumps(r, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
