"""How fast is bnexp's training loop, and is it still right? One run, on this machine.

    python benchmarks/bench.py            # full run: about 10 minutes on an idle 2-core machine
    python benchmarks/bench.py --quick    # smoke run: fewer repeats, seeds and rounds
    python benchmarks/bench.py --no-convnets   # the MLP bench alone (items 1-10)
    python benchmarks/bench.py --what-if  # a proposed change to bnexp's convnet step, measured (see below)

Items 1-10 train the same model, the lab's net (Flatten -> 2 x [Dense(256) -> BN -> ReLU] ->
Dense(10), bnexp's `bn-pre`), with Adam 1e-3 and batch 128, on the same data: one epoch is
468 steps over Fashion-MNIST's 60,000 training images. The machine is shared and has few cores,
so absolute figures are noisy. The compiled loops (1-3) therefore run in interleaved rounds, one
epoch of each per round, after a warm-up that compiles them; each is reported as its best epoch
(noise only ever adds time) and its median epoch.

Measured:
  1. bnexp's epoch: `bnexp.train.train()` in-process, its train_time_s (the compiled calls
     alone), at the default eval_every and with no intermediate eval point (one call per epoch).
  1b. In a child process: two bnexp runs at once in two threads, as `compare` trains them
     (--workers 2), and two Keras fits (jit + spe50) at once; seconds per model-epoch.
  2. Keras `model.fit`, default compile (on CPU `jit_compile="auto"` resolves to False).
  3. Keras `model.fit` with jit_compile=True and steps_per_execution=50.
  4. The lab's eager loop, with its per-step re-computation and full test evaluation (timed over
     a few dozen steps and extrapolated to 468, as ANCHORS did), and without the evaluation.
  5. Final test accuracy, bnexp vs fit, over seeds.
  6. The cost of bnexp's periodic eval points, as a fraction of the training loop.
  7. `bnexp compare plain dropout bn-pre bn-post --seeds 3` end to end, then again (all reused);
     its wall time over 12 epochs of bnexp's loop alone (issue #17). --compare-only: that alone,
     with the floor under any schedule of the compare's own work (see compare_only).
  8. `bnexp --help` and `bnexp list` wall time, and whether they import TensorFlow.
  9. Peak RSS of `bnexp train --variant bn-pre --dataset fashion-mnist`.
  10. The floor: a step's 8 matrix products alone, in the same kind of XLA loop, one model (with
     the loops of 1-3) and two at once (with those of 1b). fit over it is the most any loop of
     this model could gain over fit here if BN, Adam, the loss and the data were free.
  11. Convnets, in a child process (issue #13 section 3): model=cnn (bn-pre, 16 filters, 2 stages
     x 2 convs) and model=resnet (res-original, ResNet-8), batch 128, 100 steps of Fashion-MNIST
     per loop: bnexp's train() at execution=graph and =xla, Keras fit (default, jit, jit +
     spe50) on the same net and images, and the floor (the step's convolutions and products
     alone); then the peak RSS of `bnexp train --variant bn-pre --set model=cnn --set steps=200`.

--what-if measures, instead, bnexp's convnet step with BatchNormalization's training pass through
TensorFlow's fused kernel (a trace-time patch of Keras's layer; bnexp itself is unchanged).

Prints Rich tables (loops; each convnet; targets) and writes everything to benchmarks/last-run.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter, perf_counter_ns

import numpy as np
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
USER_ENV = dict(os.environ)  # subprocesses get the user's environment, not the quieting below
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VARIANT = "bn-pre"
DATASET = "fashion-mnist"
BATCH = 128
NO_EVAL = 10**9  # an eval_every larger than any run: no intermediate eval points
ANCHORS_PEAK_GFLOPS = 150.0  # ANCHORS.md: two AVX2 FMA cores
TARGETS = {  # name -> limit; benchmarks/README.md says where each comes from
    "speedup_vs_fit_jit_spe50": 2.0,
    "eval_fraction": 0.10,
    "compare_s": 30.0,
    "cli_s": 0.5,
    "peak_rss_gb": 1.5,
    "compare_over_epochs": 1.5,  # issue #17: compare's wall time over its runs' epochs trained alone
    "conv_speedup_vs_fit": 1.3,  # issue #13 section 3: cnn and resnet steps/s over fit's best configuration
    "conv_peak_rss_gb": 2.0,
}

console = Console(stderr=True, highlight=False)


@dataclass(frozen=True)
class Budget:
    """How much repetition a run affords."""

    rounds: int  # interleaved rounds: one epoch of every compiled loop each
    accuracy_seeds: int  # bnexp vs fit final accuracy (at most `rounds`)
    eager_eval_steps: int  # the lab's loop with per-step evaluation
    eager_steps: int  # the loop without it
    cli_repeats: int
    compare_seeds: int
    conv_rounds: int  # interleaved rounds of the convnet loops
    conv_steps: int  # steps each convnet loop is timed over


FULL = Budget(rounds=7, accuracy_seeds=3, eager_eval_steps=40, eager_steps=100, cli_repeats=5, compare_seeds=3,
              conv_rounds=2, conv_steps=100)
QUICK = Budget(rounds=2, accuracy_seeds=2, eager_eval_steps=8, eager_steps=20, cli_repeats=3, compare_seeds=1,
               conv_rounds=1, conv_steps=100)


def say(msg: str) -> None:
    console.print(f"[dim]{datetime.datetime.now():%H:%M:%S}[/] {msg}")


def stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "all": xs}


# ---------------------------------------------------------------- machine


def machine() -> dict:
    import importlib.metadata as md

    cpu, flags = platform.processor(), set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            cpu = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "avx2": "avx2" in flags, "fma": "fma" in flags, "avx512f": "avx512f" in flags,
        "python": platform.python_version(),
        "tensorflow": md.version("tensorflow"), "keras": md.version("keras"),
        "bnexp_commit": _git("rev-parse", "--short", "HEAD"),
        "bnexp_uncommitted": _git("status", "--porcelain", "--", "bnexp").splitlines(),  # what ran is not HEAD
        "load_avg_at_start": os.getloadavg(),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def flop_per_sample(cfg, input_dim: int = 784, classes: int = 10) -> dict:
    """ANCHORS' count: forward 2 x MACs, backward twice the forward (BN, ReLU, Adam ignored).

    Strictly, the first layer's input gradient is never needed, so the necessary work is less.
    """
    dims = [input_dim] + [cfg.width] * cfg.depth + [classes]
    macs = sum(a * b for a, b in zip(dims, dims[1:]))
    return {"anchors": 6 * macs, "necessary": 6 * macs - 2 * dims[0] * dims[1]}


def matmul_peak(n: int = 2048, repeats: int = 8) -> float:
    """This machine's practical float32 peak: GFLOP/s of the best large square matmul."""
    import tensorflow as tf

    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    best = float("inf")
    for _ in range(repeats):
        t0 = perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def products_alone(ds, steps: int):
    """The floor a loop of this model can reach on this machine: a step's matrix products and
    nothing else, `steps` steps in one XLA call, at the lab's shapes. That is 3 forward products,
    the input gradients of layers 2 and 3 (the first layer's is never needed) and 3 weight
    gradients: no bias, BN, ReLU, loss, Adam, data gather or eval. Returns a one-epoch runner."""
    import tensorflow as tf

    cfg = lab_config()
    dims = [int(np.prod(ds.x_train.shape[1:]))] + [cfg.width] * cfg.depth + [10]
    rng = np.random.default_rng(0)
    x = tf.constant(ds.x_train[:BATCH].reshape(BATCH, -1).astype(np.float32) / 255)
    ws = [tf.constant(rng.normal(0, 0.05, (a, b)).astype(np.float32)) for a, b in zip(dims, dims[1:])]

    @tf.function(jit_compile=True)
    def loop(n):
        def body(i, acc):
            hs = [x + acc]  # acc: a dependence on the last step, so that no step is hoisted or skipped
            for w in ws:
                hs.append(tf.matmul(hs[-1], w))
            g, total = hs[-1], 0.0
            for k in range(len(ws) - 1, -1, -1):
                total += tf.reduce_sum(tf.matmul(hs[k], g, transpose_a=True))  # weight gradient
                if k:
                    g = tf.matmul(g, ws[k], transpose_b=True)  # input gradient
            return i + 1, acc + 1e-12 * total

        return tf.while_loop(lambda i, acc: i < n, body, (tf.constant(0), tf.constant(0.0)))[1]

    loop(tf.constant(2)).numpy()  # compiles

    def epoch(seed: int) -> dict:
        t0 = perf_counter()
        loop(tf.constant(steps)).numpy()
        return {"s": perf_counter() - t0}

    return epoch


def products_alone_two_at_once(ds, steps: int):
    """products_alone in two threads at once; seconds per model-epoch (the span over 2)."""
    loops = [products_alone(ds, steps), products_alone(ds, steps)]

    def epoch(seed: int) -> dict:
        t0 = perf_counter()
        in_two_threads(lambda k: loops[k](seed))
        return {"s": (perf_counter() - t0) / 2}

    return epoch


# ---------------------------------------------------------------- subprocesses


def run_child(cmd: list[str]) -> dict:
    """Run cmd; its wall time, exit code, output and peak RSS (from wait4, this child only)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=USER_ENV)
        _, status, usage = os.wait4(p.pid, 0)
        wall = perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"cmd": " ".join(cmd), "rc": p.returncode, "wall_s": wall, "maxrss_mb": usage.ru_maxrss / 1024,
                "stdout": out.read(), "stderr": err.read()}


def _checked(res: dict) -> dict:
    if res["rc"] != 0:
        raise RuntimeError(f"{res['cmd']} exited {res['rc']}: {res['stderr'][-2000:]}")
    return res


def bnexp_exe() -> str:
    exe = shutil.which("bnexp")
    if exe is None:
        raise SystemExit("bnexp is not on PATH: pip install -e . first")
    return exe


_TF_CHECK = """
import sys
sys.argv = ["bnexp", *{args!r}]
from bnexp.cli import app
try:
    app()
except SystemExit:
    pass
print("BENCH-TF", "tensorflow" in sys.modules, "keras" in sys.modules, file=sys.stderr)
"""


def measure_cli(repeats: int) -> dict:
    """Item 8: `bnexp --help` and `bnexp list` wall time; TensorFlow imported or not."""
    exe = bnexp_exe()
    out = {"exe": exe}
    for name, args in (("help", ["--help"]), ("list", ["list"])):
        times = [_checked(run_child([exe, *args]))["wall_s"] for _ in range(repeats)]
        probe = _checked(run_child([sys.executable, "-c", _TF_CHECK.format(args=args)]))
        tf_loaded, keras_loaded = re.search(r"BENCH-TF (\w+) (\w+)", probe["stderr"]).groups()
        out[name] = {**stats(times), "imports_tensorflow": tf_loaded == "True", "imports_keras": keras_loaded == "True"}
    t = _checked(run_child([sys.executable, "-X", "importtime", "-c", "import bnexp.cli"]))
    out["import_bnexp_cli_tensorflow_lines"] = sum("tensorflow" in line for line in t["stderr"].splitlines())
    return out


def measure_peak_rss(exe: str) -> dict:
    """Item 9: peak RSS of a one-epoch fashion-mnist run in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        res = _checked(run_child([exe, "train", "--variant", VARIANT, "--dataset", DATASET, "--results", tmp]))
    return {"peak_rss_mb": res["maxrss_mb"], "wall_s": res["wall_s"], "cmd": res["cmd"].replace(tmp, "<tmp>")}


def measure_compare(exe: str, seeds: int) -> dict:
    """Item 7: a fresh 4-variant comparison end to end, then the identical command again."""
    counts = re.compile(r"trained (\d+), reused (\d+), resumed (\d+), failed (\d+) in ([\d.]+)s")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, "compare", "plain", "dropout", "bn-pre", "bn-post", "--dataset", DATASET,
               "--seeds", str(seeds), "--results", tmp]
        for name in ("first", "second"):
            res = _checked(run_child(cmd))
            m = counts.search(res["stderr"])
            trained, reused, resumed, failed, inner = m.groups() if m else (None,) * 5
            out[name] = {"wall_s": res["wall_s"], "trained": int(trained), "reused": int(reused),
                         "failed": int(failed), "in_command_s": float(inner), "peak_rss_mb": res["maxrss_mb"]}
        out["cmd"] = " ".join(cmd).replace(tmp, "<tmp>")
        out["runs"] = 4 * seeds
        out["records"] = run_times(tmp)  # where the first command's time went, run by run
    return out


def run_times(results: str) -> dict:
    """Sums over the run records in a results folder: training loops, compiling, and the rest of
    each run (building, final scoring, saving), with the span of the training loops."""
    recs = [json.loads(p.read_text()) for p in Path(results).glob("*/metrics.json")]
    recs = [r for r in recs if r.get("status") in ("finished", "diverged")]
    if not recs:
        return {}
    out = {k: sum(r.get(k) or 0.0 for r in recs) for k in ("train_time_s", "compile_time_s", "wall_time_s")}
    out["rest_s"] = out["wall_time_s"] - out["train_time_s"] - out["compile_time_s"]
    out["first_loop_start_to_last_end_s"] = (max(r["train_end_unix"] for r in recs)
                                             - min(r["train_start_unix"] for r in recs))
    out["runs"] = len(recs)
    return out


# ---------------------------------------------------------------- in-process loops


def lab_config(**changes):
    """bnexp's defaults are the lab's: 2 x 256, Adam 1e-3, batch 128; execution auto (XLA for the MLP)."""
    from bnexp.config import Config

    cfg = Config(dataset=DATASET).replace(**changes)
    assert (cfg.depth, cfg.width, cfg.optimizer, cfg.lr, cfg.batch_size) == (2, 256, "adam", 0.001, BATCH)
    return cfg


def load_data():
    """Fashion-MNIST as bnexp trains on it: images (N, 28, 28, 1) uint8, labels int32."""
    from bnexp import data

    return data.load(data.resolve(DATASET))


def train_run(cfg, variant, ds, run_dir: Path, engine) -> dict:
    """One run through bnexp's public train(), with the keys it reads from planning, as
    `compare` runs it (the config's "auto" values resolved first, as plan() does)."""
    from bnexp import plan
    from bnexp import train as T
    from bnexp.config import resolved

    cfg = resolved(cfg)
    return T.train(cfg, variant, ds, run_dir, read=set(plan.reads(variant, cfg)), engine=engine)


def epoch_batches(seed: int, n: int, steps: int) -> np.ndarray:
    """One epoch's batch indices: the whole set shuffled, cut into `steps` batches."""
    order = np.random.default_rng(seed).permutation(n)
    return order[: steps * BATCH].reshape(steps, BATCH).astype(np.int32)


def bnexp_epochs(ds, tmp: Path, variant_name: str = VARIANT) -> tuple[dict, dict]:
    """bnexp's Engine, warmed up; one-epoch functions of a seed for the rounds.

    bnexp_train: `train()` at the default eval_every; its train_time_s times the compiled calls alone.
    bnexp_train_no_eval: the same seed with no intermediate eval point: the epoch is one call.
    Only bnexp's public `train()` is called: the Program's internals change from version to version.
    """
    from bnexp import train as T
    from bnexp.models import resolve

    variant, cfg, engine = resolve(variant_name), lab_config(), T.Engine()

    def run(seed: int, **changes) -> dict:
        run_dir = tmp / f"run-{len(os.listdir(tmp))}"
        run_dir.mkdir()
        return train_run(cfg.replace(seed=seed, **changes), variant, ds, run_dir, engine)

    warm = run(0)  # traces and compiles everything a run calls

    def train_default(seed: int) -> dict:
        cpu = time.process_time()
        rec = run(seed)
        return {"s": rec["train_time_s"], "wall_s": rec["wall_time_s"], "accuracy": rec["test_accuracy"],
                "cpu_s": time.process_time() - cpu, "compile_s": rec["compile_time_s"],
                "eval_every": rec["eval_every"], "eval_points": len(rec["history"]) - 1}  # the last is the final eval

    def train_no_eval(seed: int) -> dict:
        rec = run(seed, eval_every=NO_EVAL)
        return {"s": rec["train_time_s"], "wall_s": rec["wall_time_s"], "accuracy": rec["test_accuracy"]}

    info = {"steps_per_epoch": warm["steps_per_epoch"], "eval_samples": cfg.eval_samples,
            "compile_s": warm["compile_time_s"], "first_run_wall_s": warm["wall_time_s"],
            "first_run_train_s": warm["train_time_s"]}
    return info, {"bnexp_train": train_default, "bnexp_train_no_eval": train_no_eval}


def in_two_threads(fn) -> None:
    """fn(0) and fn(1) at the same time, each in its own thread."""
    ready = threading.Barrier(2)
    threads = [threading.Thread(target=lambda k=k: (ready.wait(), fn(k))) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def bnexp_two_at_once(ds, tmp: Path):
    """Two runs in two threads sharing one Engine, as `compare` trains them (--workers 2),
    warmed up. The figure is seconds per model-epoch: the span from the first training loop's
    start to the last one's end, over 2."""
    from bnexp import train as T
    from bnexp.models import resolve

    variant, cfg, engine = resolve(VARIANT), lab_config(), T.Engine()

    def two_at_once(seed: int) -> dict:
        recs = [None, None]

        def one(k: int) -> None:
            run_dir = tmp / f"run-{seed}-{k}-{perf_counter_ns()}"
            run_dir.mkdir()
            recs[k] = train_run(cfg.replace(seed=2 * seed + k), variant, ds, run_dir, engine)

        in_two_threads(one)
        span = max(r["train_end_unix"] for r in recs) - min(r["train_start_unix"] for r in recs)
        return {"s": span / 2, "span_s": span, "loops_s": [r["train_time_s"] for r in recs],
                "accuracy": [r["test_accuracy"] for r in recs]}

    two_at_once(100)  # builds and compiles both programs
    return two_at_once


def compiled_model(ds, seed: int, cfg=None, variant: str = VARIANT, steps: int | None = None, **compile_kw):
    """A net from bnexp's own builder, compiled for Keras fit, and its data: the lab's net unless
    `cfg` and `variant` say otherwise.

    The first `steps` x 128 training images (default: one epoch's 468 full batches, the same as
    bnexp's), as float32 k/255 for Keras, where bnexp keeps the uint8 images and a lookup table.
    """
    import keras

    from bnexp.models import build_model, resolve

    cfg = cfg or lab_config()
    keras.utils.set_random_seed(seed)
    model, _ = build_model(resolve(variant), cfg, ds.input_shape, ds.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], **compile_kw)  # bnexp tracks train accuracy too
    steps = steps or cfg.steps_per_epoch(int(ds.x_train.shape[0]))
    return model, as_float(ds.x_train[: steps * BATCH]), ds.y_train[: steps * BATCH]


def as_float(x: np.ndarray) -> np.ndarray:
    """Images as Keras takes them: float32 k/255 (bnexp's lookup table gives the same bits)."""
    return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x


def test_accuracy(model, ds) -> float:
    logits = model(as_float(ds.x_test), training=False)
    return float(np.mean(np.argmax(np.asarray(logits), -1) == ds.y_test))


def fit_epochs(ds, **compile_kw) -> tuple[dict, object]:
    """Keras fit warmed up by a first one-epoch fit (tracing, compiling); a one-epoch function.

    Each later epoch is one `fit(epochs=1)` call, timed by a callback from on_epoch_begin to
    on_epoch_end: the data adapter's set-up and the compile are outside it.
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = perf_counter() - self.t0

    model, x, y = compiled_model(ds, 0, **compile_kw)
    t0 = perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    info = {"compile": {k: str(v) for k, v in compile_kw.items()}, "jit_compile_resolved": model.jit_compile,
            "first_fit_s": perf_counter() - t0}
    timer = EpochTimer()

    def epoch(seed: int) -> dict:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[timer])
        return {"s": timer.seconds}

    return info, epoch


def fit_two_at_once(ds, **compile_kw):
    """Keras fit on two models in two threads, for the same footing as bnexp_two_at_once:
    seconds per model-epoch, the span from the first epoch's start to the last one's end, over 2."""
    import keras

    class Span(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.t1 = perf_counter()

    models = [compiled_model(ds, k, **compile_kw) for k in range(2)]
    for model, x, y in models:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    spans = [Span(), Span()]

    def epoch(seed: int) -> dict:
        def one(k: int) -> None:
            model, x, y = models[k]
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[spans[k]])

        in_two_threads(one)
        span = max(cb.t1 for cb in spans) - min(cb.t0 for cb in spans)
        return {"s": span / 2, "span_s": span}

    return epoch


def fit_accuracy(ds, seeds: int) -> list[float]:
    """Item 5: test accuracy after one default `fit` epoch from scratch, per seed."""
    acc = []
    for seed in range(seeds):
        model, x, y = compiled_model(ds, seed)
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        acc.append(test_accuracy(model, ds))
    return acc


def run_rounds(runners: dict, rounds: int, swap: tuple[str, str] | None = None) -> tuple[dict, list]:
    """One epoch of each runner per round, interleaved; `swap` trades two runners' places every other round."""
    samples: dict[str, list[dict]] = {name: [] for name in runners}
    load = []
    for i in range(rounds):
        say(f"round {i + 1}/{rounds}: one epoch each of {', '.join(runners)}")
        load.append(os.getloadavg()[0])
        order = list(runners)
        if swap and i % 2:
            j, k = order.index(swap[0]), order.index(swap[1])
            order[j], order[k] = order[k], order[j]
        for name in order:
            gc.collect()  # the previous loop's garbage is not this loop's time
            w0, c0 = perf_counter(), time.process_time()
            sample = runners[name](i)
            sample["cpu_share"] = (time.process_time() - c0) / (perf_counter() - w0)  # cores this process got
            samples[name].append(sample)
    return samples, load


def measure_two_at_once(ds, b: Budget) -> dict:
    """Item 1b, in a process of its own: bnexp and Keras fit (jit + spe50), each training two
    models at once in two threads, interleaved. Its own process, because single-thread loops in a
    process that had run two-thread calls were once seen ~1.5x slower, which would skew the
    single-run loops (benchmarks/README.md: the slow state comes and goes)."""
    with tempfile.TemporaryDirectory() as tmp:
        say("bnexp, two runs at once: warm-up (compiles two programs)")
        runners = {"bnexp_two_at_once": bnexp_two_at_once(ds, Path(tmp))}
        say("fit_jit_spe50, two at once: warm-up fits (compile)")
        runners["fit_jit_spe50_two_at_once"] = fit_two_at_once(ds, jit_compile=True, steps_per_execution=50)
        say("products alone, two at once: compile")
        runners["products_alone_two_at_once"] = products_alone_two_at_once(
            ds, lab_config().steps_per_epoch(len(ds.x_train)))
        samples, load = run_rounds(runners, b.rounds)
    return {"epoch_s": {name: stats([s["s"] for s in ss]) for name, ss in samples.items()},
            "cpu_share": {name: stats([s["cpu_share"] for s in ss]) for name, ss in samples.items()},
            "samples": samples, "load_avg_per_round": load}


def measure_loops(ds, b: Budget) -> dict:
    """Items 1, 2, 3, 5, 6: every compiled loop, one epoch each per round, interleaved.

    Interleaving spreads the load of a shared machine evenly over the loops compared.
    Round i trains bnexp with seed i, so its first rounds give bnexp's accuracy per seed.
    """
    with tempfile.TemporaryDirectory() as tmp:
        say("bnexp: warm-up run (compiles)")
        info, runners = bnexp_epochs(ds, Path(tmp))
        for name, kw in (("fit_default", {}), ("fit_jit_spe50", {"jit_compile": True, "steps_per_execution": 50})):
            say(f"{name}: warm-up fit (compiles)")
            info[name], runners[name] = fit_epochs(ds, **kw)
        say("products alone: compile")
        runners["products_alone"] = products_alone(ds, info["steps_per_epoch"])
        # the eval-cost pair runs in both orders (ABBA), so a loop's place in the round cancels out
        samples, load = run_rounds(runners, b.rounds, swap=("bnexp_train", "bnexp_train_no_eval"))
    default, no_eval = samples["bnexp_train"], samples["bnexp_train_no_eval"]
    # Paired by seed, run back to back. Eval points cost time inside train_time_s (the eval work
    # done in the epoch's compiled call) and outside it (bookkeeping per eval point). Each part is a paired difference, so that the loop's own
    # noise does not swamp the smaller outside part.
    outside = [(d["wall_s"] - d["s"]) - (n["wall_s"] - n["s"]) for d, n in zip(default, no_eval)]
    inside = [d["s"] - n["s"] for d, n in zip(default, no_eval)]
    loop = statistics.median(s["s"] for s in no_eval)
    say("Keras fit accuracy, one epoch per seed")
    return {
        **info,
        "epoch_s": {name: stats([s["s"] for s in ss]) for name, ss in samples.items()},
        "cpu_share": {name: stats([s["cpu_share"] for s in ss]) for name, ss in samples.items()},
        "load_avg_per_round": load,
        "eval": {
            "eval_every": default[0]["eval_every"], "eval_points": default[0]["eval_points"],
            "eval_samples": info["eval_samples"],
            "run_wall_default_s": stats([s["wall_s"] for s in default]),
            "run_wall_no_eval_s": stats([s["wall_s"] for s in no_eval]),
            "inside_loop_s": stats(inside),
            "outside_loop_s": stats(outside),
            "fraction": (statistics.median(inside) + statistics.median(outside)) / loop,  # the target
            "fraction_inside_loop": statistics.median(inside) / loop,
            "fraction_outside_loop": statistics.median(outside) / loop,
        },
        "accuracy": {
            "bnexp": [s["accuracy"] for s in default[: b.accuracy_seeds]],
            "bnexp_no_eval_points": [s["accuracy"] for s in no_eval[: b.accuracy_seeds]],
            "fit_default": fit_accuracy(ds, b.accuracy_seeds),
        },
    }


def measure_eager(ds, steps: int, per_step_eval: bool, warmup: int = 3) -> dict:
    """Item 4: the lab's eager loop, one Python iteration and one GradientTape per step.

    With per_step_eval it also does what the lab does after each update: the loss and the
    accuracy on the batch again, and the accuracy on all 10,000 test images.
    """
    import keras
    import tensorflow as tf

    model, x, y = compiled_model(ds, 0)  # the model only: the loop is the lab's own
    opt = keras.optimizers.Adam(1e-3)
    X, Y = tf.constant(x), tf.constant(y)
    Xt, Yt = tf.constant(as_float(ds.x_test)), tf.constant(ds.y_test)
    batches = epoch_batches(0, int(x.shape[0]), int(x.shape[0]) // BATCH)
    tvars = model.trainable_variables

    def loss_fn(xb, yb):
        logits = model(xb, training=True)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))

    def accuracy_fn(xb, yb):
        logits = model(xb, training=False)
        return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), yb), tf.float32))

    for i in range(warmup + steps):
        if i == warmup:
            t0 = perf_counter()
        xb, yb = tf.gather(X, batches[i]), tf.gather(Y, batches[i])
        with tf.GradientTape() as tape:
            loss = loss_fn(xb, yb)
        opt.apply_gradients(zip(tape.gradient(loss, tvars), tvars))
        if per_step_eval:  # the lab prints these three every step
            float(loss_fn(xb, yb)), float(accuracy_fn(xb, yb)), float(accuracy_fn(Xt, Yt))
        else:
            float(loss)
    per_step = (perf_counter() - t0) / steps
    return {"steps_timed": steps, "per_step_s": per_step, "epoch_s_extrapolated": per_step * len(batches)}


# ---------------------------------------------------------------- convnets (item 11)

CONVNETS = (  # (family, variant): bnexp's default convnet and the ResNet-8 of He et al.'s unit (a)
    ("cnn", "bn-pre"),
    ("resnet", "res-original"),
)
CONV_PRUNE = 1.5  # after round 1, a fit configuration this many times slower than fit's fastest runs no more
XLA_WHILE_STEPS = 2  # steps timed where a loop's XLA convolutions would make S steps take minutes


def conv_config(family: str, **changes):
    """bnexp's defaults for the family: cnn 16 filters, 2 stages x 2 convs; resnet n=1 (ResNet-8);
    Adam 1e-3, batch 128. Eval points as often as in a default run on the full training set."""
    cfg = lab_config(**{"model": family, "eval_every": lab_config().steps_per_epoch(60_000) // 10, **changes})
    assert (cfg.filters, cfg.stages, cfg.convs_per_stage, cfg.blocks_per_stage) == (16, 2, 2, 1)
    return cfg


def conv_data(ds, steps: int, n_test: int):
    """The first steps x 128 training images, so that an epoch is exactly the `steps` timed (for
    bnexp and fit alike), and the first n_test test images (the eval points' 1,000 and the final
    scoring; the timed loop does not depend on them)."""
    import dataclasses

    n = steps * BATCH
    return dataclasses.replace(ds, x_train=ds.x_train[:n], y_train=ds.y_train[:n], x_test=ds.x_test[:n_test],
                               y_test=ds.y_test[:n_test])


def kernel_layers(model) -> list[dict]:
    """Every Conv2D and Dense of a built Keras model: shapes (batch left out), strides, padding,
    and whether it takes the images (whose gradient no loop needs)."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            out.append({"name": layer.name, "conv": isinstance(layer, keras.layers.Conv2D),
                        "in": tuple(int(d) for d in layer.input.shape[1:]),
                        "out": tuple(int(d) for d in layer.output.shape[1:]),
                        "kernel": tuple(int(d) for d in layer.kernel.shape),
                        "strides": tuple(int(s) for s in getattr(layer, "strides", (1, 1))),
                        "padding": getattr(layer, "padding", "valid").upper(),
                        "takes_images": layer.input is model.inputs[0]})
    return out


def kernel_flop(specs: list[dict], batch: int = BATCH) -> float:
    """FLOPs of a step's convolutions and matrix products: forward, weight gradient and (but for
    the layer on the images) input gradient, each 2 x MACs."""
    total = 0.0
    for s in specs:
        macs = batch * int(np.prod(s["out"])) * int(np.prod(s["kernel"][:-1]))  # out positions x (kh kw cin)
        total += 2 * macs * (2 if s["takes_images"] else 3)
    return total


def conv_floor(model, steps: int, mode: str):
    """The floor of a convnet's step: its convolutions and matrix products alone, forward, weight
    gradient and input gradient (not for the images), at the net's shapes and batch 128; no bias,
    norm, activation, pooling, loss, optimizer or data. Each layer's forward output stands in for
    the gradient it gets, its input gradient feeds its next step's input, so nothing is hoisted or
    dropped. mode: "graph" (TensorFlow's kernels, oneDNN, in a tf.while_loop: bnexp's graph
    execution), "xla" (one XLA while loop: bnexp's xla execution) or "xla_call" (one XLA call
    per step: where XLA can still call its library convolutions). Returns run(n) -> seconds."""
    import tensorflow as tf

    specs = kernel_layers(model)
    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.random((BATCH, *s["in"]), dtype=np.float32)) for s in specs]
    ws = [tf.constant(rng.normal(0, 0.05, s["kernel"]).astype(np.float32)) for s in specs]

    def one_step(inputs):
        total, nxt = 0.0, []
        for s, x, w in zip(specs, inputs, ws):
            st = [1, *s["strides"], 1]
            if s["conv"]:
                y = tf.nn.conv2d(x, w, st, s["padding"])
                dw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=w.shape, out_backprop=y, strides=st,
                                                     padding=s["padding"])
                dx = None if s["takes_images"] else tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=x.shape, filter=w, out_backprop=y, strides=st, padding=s["padding"])
            else:
                y = tf.matmul(x, w)
                dw = tf.matmul(x, y, transpose_a=True)
                dx = None if s["takes_images"] else tf.matmul(y, w, transpose_b=True)
            total += tf.reduce_sum(dw)
            nxt.append(x if dx is None else x + 1e-12 * dx)
        return nxt, total

    if mode == "xla_call":
        f = tf.function(one_step, jit_compile=True)

        def run(n: int) -> float:
            t0 = perf_counter()
            inputs, total = list(xs), None
            for _ in range(n):
                inputs, total = f(inputs)
            float(total) if total is not None else None
            return perf_counter() - t0

        run(1)  # compiles
        return run

    @tf.function(jit_compile=mode == "xla")
    def loop(n):
        def body(i, acc, *inputs):
            nxt, total = one_step([x + acc for x in inputs])
            return (i + 1, acc + 1e-12 * total, *nxt)

        return tf.while_loop(lambda i, acc, *_: i < n, body, (tf.constant(0), tf.constant(0.0), *xs))[1]

    def run(n: int) -> float:
        t0 = perf_counter()
        float(loop(tf.constant(n)))
        return perf_counter() - t0

    run(0)  # compiles
    return run


def bnexp_conv(ds, family: str, variant_name: str, execution: str, steps: int, tmp: Path,
               eval_every: int | None = None) -> tuple[dict, object]:
    """bnexp's train() on the family at `execution`, warmed up by a 2-step run (compiles; its
    loop time is kept as a first sample); a runner of one `steps`-step run (the record's
    train_time_s: the compiled calls alone, eval points in them). eval_every=NO_EVAL: no eval
    point, the same work as fit's epoch."""
    from bnexp import train as T
    from bnexp.models import resolve

    variant, engine = resolve(variant_name), T.Engine()

    def run(seed: int, n: int) -> dict:
        run_dir = tmp / f"{family}-{execution}-{perf_counter_ns()}"
        run_dir.mkdir()
        changes = {"eval_every": eval_every} if eval_every else {}
        rec = train_run(conv_config(family, seed=seed, steps=n, execution=execution, **changes), variant, ds, run_dir,
                        engine)
        shutil.rmtree(run_dir, ignore_errors=True)
        return {"s": rec["train_time_s"] / n, "steps": n, "wall_s": rec["wall_time_s"], "compile_s": rec["compile_time_s"],
                "eval_points": len(rec["history"]) - 1, "accuracy": rec["test_accuracy"], "test_loss": rec["test_loss"],
                "train_loss": rec["train_loss"]}

    warm = run(100, XLA_WHILE_STEPS)
    return {"warm": warm}, lambda seed: run(seed, steps)


def fit_conv(ds, family: str, variant_name: str, steps: int, **compile_kw) -> tuple[dict, object]:
    """Keras fit on the same net and the same steps x 128 images; warmed up by a short fit (one
    execution of steps_per_execution steps, else 2 steps); the epoch timed by a callback."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = perf_counter() - self.t0

    model, x, y = compiled_model(ds, 0, conv_config(family), variant_name, steps, **compile_kw)
    warm_n = compile_kw.get("steps_per_execution", 2) * BATCH
    t0 = perf_counter()
    model.fit(x[:warm_n], y[:warm_n], batch_size=BATCH, epochs=1, verbose=0)
    info = {"compile": {k: str(v) for k, v in compile_kw.items()}, "jit_compile_resolved": model.jit_compile,
            "first_fit_s": perf_counter() - t0, "first_fit_steps": warm_n // BATCH}
    timer = EpochTimer()

    def epoch(seed: int) -> dict:
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[timer])
        return {"s": timer.seconds / steps, "steps": steps}

    return info, epoch


def measure_convnets(b) -> dict:
    """Item 11, in a process of its own: per family, bnexp at execution=graph and =xla, Keras fit
    (default, jit, jit + spe50) and the floor (graph; XLA per call), `b.conv_steps` steps each, in
    interleaved rounds. Figures are seconds per step. A loop whose XLA convolutions sit in a while
    loop (bnexp's xla execution, the XLA floor loop) is timed over XLA_WHILE_STEPS steps when it
    is 10x slower than graph (S steps would take many minutes). After round 1, a fit
    configuration more than CONV_PRUNE times slower than fit's fastest runs no more (it cannot be
    fit's best), nor do the XLA floors (diagnostics)."""
    from bnexp.config import resolved

    ds_full = load_data()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family, variant in CONVNETS:
            steps = b.conv_steps
            ds = conv_data(ds_full, steps, n_test=2 * lab_config().eval_samples)
            default_exec = resolved(conv_config(family)).execution
            say(f"{family} ({variant}): warm-ups: bnexp graph, bnexp xla ({XLA_WHILE_STEPS} steps), fit x 3, floors")
            info, runners, capped = {"default_execution": default_exec}, {}, {}
            for ex in ("graph", "xla"):
                info[f"bnexp_{ex}"], runners[f"bnexp_{ex}"] = bnexp_conv(ds, family, variant, ex, steps, Path(tmp))
            # fit's epoch scores nothing; bnexp's default run scores 1,000 test images every eval_every
            # steps inside its loop. Without them, bnexp does fit's work: the like-for-like figure.
            info["bnexp_graph_no_eval"], runners["bnexp_graph_no_eval"] = bnexp_conv(
                ds, family, variant, "graph", steps, Path(tmp), eval_every=NO_EVAL)
            for name, kw in (("fit_default", {}), ("fit_jit", {"jit_compile": True}),
                             ("fit_jit_spe50", {"jit_compile": True, "steps_per_execution": 50})):
                info[name], runners[name] = fit_conv(ds, family, variant, steps, **kw)
            model, _, _ = compiled_model(ds, 0, conv_config(family), variant, 1)
            specs = kernel_layers(model)
            for mode in ("graph", "xla_call", "xla") if family == "cnn" else ("graph", "xla_call"):
                run = conv_floor(model, steps, mode)  # (the XLA loop once: where its convolutions stand)
                n = steps if mode != "xla" else XLA_WHILE_STEPS
                runners[f"floor_{mode}"] = (lambda run=run, n=n: lambda seed: {"s": run(n) / n, "steps": n})()
            # bnexp xla: its warm-up's steps already show whether S steps are affordable
            if info["bnexp_xla"]["warm"]["s"] > 10 * info["bnexp_graph"]["warm"]["s"]:
                capped["bnexp_xla"] = XLA_WHILE_STEPS
                runners.pop("bnexp_xla")
            samples: dict[str, list[dict]] = {name: [] for name in runners}
            if "bnexp_xla" in capped:
                samples["bnexp_xla"] = [{**info["bnexp_xla"]["warm"], "cpu_share": None}]
            load, pruned = [], []
            for i in range(b.conv_rounds):
                say(f"{family} round {i + 1}/{b.conv_rounds}: {steps} steps each of {', '.join(runners)}")
                load.append(os.getloadavg()[0])
                for name, fn in runners.items():
                    gc.collect()
                    w0, c0 = perf_counter(), time.process_time()
                    sample = fn(i)
                    sample["cpu_share"] = (time.process_time() - c0) / (perf_counter() - w0)
                    samples.setdefault(name, []).append(sample)
                if i == 0:  # fit's configurations that cannot be its best, and the XLA floors, run once
                    best_fit = min(samples[k][0]["s"] for k in samples if k.startswith("fit"))
                    for name in list(runners):
                        if (name.startswith("fit") and samples[name][0]["s"] > CONV_PRUNE * best_fit
                                or name.startswith("floor_xla")):
                            pruned.append(name)
                            runners.pop(name)
            out[family] = {
                "variant": variant, "steps": steps, "batch": BATCH, "config": conv_config(family).to_dict(),
                "train_images": int(ds.x_train.shape[0]), "test_images": int(ds.x_test.shape[0]),
                "info": info, "capped_steps": capped, "pruned_after_round_1": pruned,
                "per_step_s": {k: stats([s["s"] for s in v]) for k, v in samples.items()},
                "cpu_share": {k: stats([s["cpu_share"] for s in v if s.get("cpu_share") is not None] or [float("nan")])
                              for k, v in samples.items()},
                "samples": samples, "load_avg_per_round": load,
                "kernel_layers": specs, "floor_flop_per_step": kernel_flop(specs),
            }
    return out


def measure_conv_rss(exe: str, execution: str | None) -> dict:
    """Peak RSS of a 200-step cnn run in its own process (the full training set: the command as
    a user types it), at the default execution unless one is given."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, "train", "--variant", "bn-pre", "--set", "model=cnn", "--dataset", DATASET, "--set", "steps=200",
               *(["--set", f"execution={execution}"] if execution else []), "--results", tmp]
        res = _checked(run_child(cmd))
        times = run_times(tmp)
    return {"peak_rss_mb": res["maxrss_mb"], "wall_s": res["wall_s"], "cmd": res["cmd"].replace(tmp, "<tmp>"),
            "record": times}


CONV_LOOPS = (  # (key, label); ratios are against the best of the fit rows
    ("bnexp_graph", "bnexp train(), execution=graph (TensorFlow's oneDNN kernels, a tf.while_loop)"),
    ("bnexp_graph_no_eval", "bnexp train(), execution=graph, no eval point (fit's work: it scores nothing)"),
    ("bnexp_xla", "bnexp train(), execution=xla (one XLA while loop)"),
    ("fit_default", "Keras fit, default compile"),
    ("fit_jit", "Keras fit, jit_compile=True"),
    ("fit_jit_spe50", "Keras fit, jit_compile=True, steps_per_execution=50"),
    ("floor_graph", "floor: the step's convolutions and products alone, graph (oneDNN)"),
    ("floor_xla_call", "floor: the same, XLA, one call per step"),
    ("floor_xla", "floor: the same, XLA, in a while loop (as bnexp's xla chunk)"),
)


def conv_rows(c: dict) -> list[dict]:
    fits = [k for k in ("fit_default", "fit_jit", "fit_jit_spe50") if k in c["per_step_s"]]
    best_fit = min(c["per_step_s"][k]["min"] for k in fits)
    rows = []
    for key, label in CONV_LOOPS:
        if key not in c["per_step_s"]:
            continue
        st = c["per_step_s"][key]
        note = []
        if c["samples"][key][0]["steps"] != c["steps"]:
            note.append(f"{c['samples'][key][0]['steps']} steps timed")
        if key in c["pruned_after_round_1"]:
            note.append("round 1 only")
        rows.append({"key": key, "loop": label + (f" [{'; '.join(note)}]" if note else ""),
                     "s_per_step": st["min"], "s_per_step_median": st["median"], "n": st["n"],
                     "steps_per_s": 1 / st["min"], "x_best_fit": best_fit / st["min"],
                     "gflops_floor": c["floor_flop_per_step"] / st["min"] / 1e9,
                     "cores": c["cpu_share"][key]["median"]})
    return rows


# ---------------------------------------------------------------- what if (not in the default run)


def fused_bn_call():
    """Keras BatchNormalization's call, but a training-mode call on NHWC float32 inputs runs
    TensorFlow's fused kernel (FusedBatchNormV3; oneDNN on CPU) in place of Keras's moments and
    batch_normalization ops. The same function: batch mean and biased variance normalize, and
    the moving averages get Keras's update (the kernel's variance is Bessel-corrected, so it is
    scaled back by (n-1)/n). Results agree to float32 rounding, not bit for bit."""
    import keras
    import tensorflow as tf

    original = keras.layers.BatchNormalization.call

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and mask is None and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and not self.renorm and self.center and self.scale and inputs.dtype == tf.float32):
            return original(self, inputs, training=training, mask=mask)
        y, mean, var = tf.compat.v1.nn.fused_batch_norm(inputs, self.gamma, self.beta, epsilon=self.epsilon,
                                                         is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum
                                    + var * ((n - 1.0) / n) * (1.0 - self.momentum))
        return y

    return original, call


def measure_what_if(b) -> dict:
    """`--what-if`: a proposed library change measured before it is made. Per convnet, bnexp's
    train() at execution=graph as it is, and with BatchNormalization's training pass through the
    fused kernel while bnexp's program traces (so only bnexp's compiled step changes: the model,
    its layers and what fit runs stay Keras's), against Keras fit (default, the fastest fit on
    convnets here) on the same net and images. Interleaved rounds, seconds per step. Also the
    two runs' losses at the same seed, to show the change keeps the numbers (to rounding)."""
    import keras

    ds_full = load_data()
    original, fused = fused_bn_call()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family, variant in CONVNETS:
            steps = b.conv_steps
            ds = conv_data(ds_full, steps, n_test=2 * lab_config().eval_samples)
            say(f"what if, {family}: warm-ups")
            runners = {}
            _, runners["bnexp_graph"] = bnexp_conv(ds, family, variant, "graph", steps, Path(tmp))
            keras.layers.BatchNormalization.call = fused
            try:
                _, runners["bnexp_graph_fused_bn"] = bnexp_conv(ds, family, variant, "graph", steps, Path(tmp))
            finally:
                keras.layers.BatchNormalization.call = original
            _, runners["fit_default"] = fit_conv(ds, family, variant, steps)
            samples = {k: [] for k in runners}
            load = []
            for i in range(b.conv_rounds + 1):
                say(f"what if, {family}, round {i + 1}/{b.conv_rounds + 1}")
                load.append(os.getloadavg()[0])
                for name, fn in runners.items():
                    gc.collect()
                    samples[name].append(fn(0))  # seed 0 each time: the two bnexp loops should agree
            out[family] = {"steps": steps, "per_step_s": {k: stats([s["s"] for s in v]) for k, v in samples.items()},
                           "samples": samples, "load_avg_per_round": load}
    return out


def render_what_if(w: dict) -> Table:
    t = Table(title="What if bnexp's step ran BatchNormalization through the fused kernel (a probe; bnexp unchanged)")
    for col in ("net", "loop", "ms / step, best (median)", "x fit default", "final test loss, seed 0"):
        t.add_column(col, justify="left" if col in ("net", "loop") else "right")
    for family, c in w.items():
        fit = c["per_step_s"]["fit_default"]["min"]
        for k, st in c["per_step_s"].items():
            loss = c["samples"][k][0].get("test_loss")
            t.add_row(family, k, f"{st['min'] * 1e3:.0f} ({st['median'] * 1e3:.0f})", f"{fit / st['min']:.2f}",
                      f"{loss:.6f}" if loss is not None else "")
    return t


# ---------------------------------------------------------------- report

LOOPS = (  # (key in the results, row label); the first is the reference
    ("bnexp_train", "bnexp train(), default eval_every (10 eval points in the call)"),
    ("bnexp_train_no_eval", "bnexp train(), no eval point"),
    ("bnexp_two_at_once", "bnexp, 2 runs at once (compare's default --workers), per model"),
    ("fit_default", "Keras fit, default compile"),
    ("fit_jit_spe50", "Keras fit, jit_compile=True, steps_per_execution=50"),
    ("fit_jit_spe50_two_at_once", "Keras fit, jit + spe50, 2 models at once in threads, per model"),
    ("products_alone", "floor: the step's 8 matrix products alone, one model"),
    ("products_alone_two_at_once", "floor: the 8 matrix products alone, 2 models at once, per model"),
    ("eager_no_eval", "lab eager loop, no per-step eval (extrapolated)"),
    ("eager_lab", "lab eager loop, per-step eval (extrapolated)"),
)


def loop_rows(r: dict) -> list[dict]:
    """One row per loop: best seconds per epoch and what follows from it (medians alongside)."""
    best = {k: v["min"] for k, v in r["loops"]["epoch_s"].items()}
    median = {k: v["median"] for k, v in r["loops"]["epoch_s"].items()}
    for k, v in r["eager"].items():
        best[f"eager_{k}"] = median[f"eager_{k}"] = v["epoch_s_extrapolated"]
    samples = r["loops"]["steps_per_epoch"] * BATCH
    gflop = r["flop_per_sample"]["anchors"] * samples / 1e9
    rows = []
    for key, label in LOOPS:
        rate = gflop / best[key]
        rows.append({"key": key, "loop": label, "s_per_epoch": best[key], "s_per_epoch_median": median[key],
                     "samples_per_s": samples / best[key], "x_bnexp": best[key] / best[LOOPS[0][0]],
                     "x_bnexp_median": median[key] / median[LOOPS[0][0]], "gflops": rate,
                     "of_anchors_peak": rate / ANCHORS_PEAK_GFLOPS, "of_matmul_peak": rate / r["matmul_peak_gflops"]})
    return rows


def target_rows(r: dict, b: Budget) -> list[dict]:
    """The targets, each with its measured value and PASS (True), FAIL (False) or n/a (None)."""
    from scipy import stats as st

    lim, loops, cli = TARGETS, r["loops"], r["cli"]
    e = loops["epoch_s"]

    def ratio(slow, fast, stat="min"):
        return e[slow][stat] / e[fast][stat]

    speedup = ratio("fit_jit_spe50", "bnexp_two_at_once")  # the target: throughput as compare trains
    speedup_median = ratio("fit_jit_spe50", "bnexp_two_at_once", "median")
    acc_b, acc_f = loops["accuracy"]["bnexp"], loops["accuracy"]["fit_default"]
    p = float(st.ttest_ind(acc_b, acc_f, equal_var=False).pvalue)
    first, again = r["compare"]["first"], r["compare"]["second"]
    tf_loaded = (cli["help"]["imports_tensorflow"] or cli["list"]["imports_tensorflow"]
                 or cli["import_bnexp_cli_tensorflow_lines"] > 0)
    rss_gb = r["peak_rss"]["peak_rss_mb"] / 1024
    ev = loops["eval"]
    frac = ev["fraction"]

    def ms(xs):
        return f"{np.mean(xs):.4f} ± {np.std(xs, ddof=1):.4f}"

    def ceiling(label: str, floor: str, who: str, ours: str) -> tuple:
        """fit over the products alone: the most a loop of this model could gain over fit here."""
        return (f"  ceiling for {label}",
                f"{ratio('fit_jit_spe50', floor):.2f}x best; {who} does {e[floor]['min'] / e[ours]['min']:.0%} of it",
                "(shown)", "info")

    rows = [
        ("training throughput over fit jit+spe50: bnexp training 2 runs at once, as compare does",
         f"{speedup:.2f}x best epochs, {speedup_median:.2f}x median",
         f">= {lim['speedup_vs_fit_jit_spe50']:.0f}x", speedup >= lim["speedup_vs_fit_jit_spe50"]),
        ("  the same, one bnexp run alone (train)",
         f"{ratio('fit_jit_spe50', 'bnexp_train'):.2f}x best, {ratio('fit_jit_spe50', 'bnexp_train', 'median'):.2f}x "
         f"median; without eval points {ratio('fit_jit_spe50', 'bnexp_train_no_eval'):.2f}x", "(shown)", "info"),
        ("  same footing: bnexp 2 at once over fit 2 at once",
         f"{ratio('fit_jit_spe50_two_at_once', 'bnexp_two_at_once'):.2f}x best, "
         f"{ratio('fit_jit_spe50_two_at_once', 'bnexp_two_at_once', 'median'):.2f}x median", "(shown)", "info"),
        ceiling("one run: fit over the 8 products alone", "products_alone", "bnexp alone", "bnexp_train"),
        ceiling("2 at once: fit over the 8 products alone, 2 at once", "products_alone_two_at_once",
                "bnexp 2 at once", "bnexp_two_at_once"),
        (f"eval points ({ev['eval_points']} x {ev['eval_samples']} images) / training loop",
         f"{frac:.1%} (in the compiled calls {ev['fraction_inside_loop']:.1%}, "
         f"outside them {ev['fraction_outside_loop']:.1%})",
         f"<= {lim['eval_fraction']:.0%}", frac <= lim["eval_fraction"]),
        (f"test accuracy, bnexp vs fit, {len(acc_b)} seeds (Welch t)", f"{ms(acc_b)} vs {ms(acc_f)}, p = {p:.2f}",
         "agree: p > 0.05", p > 0.05),
        (f"bnexp compare 4 variants x {b.compare_seeds} seeds, fresh", f"{first['wall_s']:.1f} s",
         f"<= {lim['compare_s']:.0f} s", first["wall_s"] <= lim["compare_s"] if b.compare_seeds == 3 else None),
        ("the same compare again trains nothing", f"{again['wall_s']:.1f} s, trained {again['trained']}, "
         f"reused {again['reused']}", "trained 0", again["trained"] == 0),
        ("bnexp --help (median)", f"{cli['help']['median']:.2f} s", f"<= {lim['cli_s']} s", cli["help"]["median"] <= lim["cli_s"]),
        ("bnexp list (median)", f"{cli['list']['median']:.2f} s", f"<= {lim['cli_s']} s", cli["list"]["median"] <= lim["cli_s"]),
        ("--help, list, import bnexp.cli load TensorFlow", "yes" if tf_loaded else "no", "no", not tf_loaded),
        ("peak RSS, bnexp train, one epoch", f"{rss_gb:.2f} GB", f"<= {lim['peak_rss_gb']} GB", rss_gb <= lim["peak_rss_gb"]),
    ]
    n_runs = r["compare"]["runs"]
    over = first["wall_s"] / (n_runs * e["bnexp_train"]["min"])
    rows.insert(rows.index(next(row for row in rows if row[0].startswith("the same compare again"))), (
        f"  compare's wall time over its {n_runs} runs' epochs trained alone (#17)",
        f"{over:.1f}x ({first['wall_s']:.1f} s vs {n_runs} x {e['bnexp_train']['min']:.3f} s)",
        f"<= {lim['compare_over_epochs']}x", over <= lim["compare_over_epochs"] if b.compare_seeds == 3 else None))
    for family, c in r.get("convnets", {}).items():
        rows += conv_target_rows(family, c)
    if "conv_rss" in r:
        gb = r["conv_rss"]["peak_rss_mb"] / 1024
        rows.append(("peak RSS, bnexp train cnn, 200 steps" + (" (" + r["conv_rss"]["cmd"].split("--set execution=")[1].split()[0] + ")"
                                                             if "execution=" in r["conv_rss"]["cmd"] else ""),
                     f"{gb:.2f} GB (run {r['conv_rss']['wall_s']:.0f} s)", f"<= {lim['conv_peak_rss_gb']} GB",
                     gb <= lim["conv_peak_rss_gb"]))
    return [{"target": n, "measured": m, "limit": limit, "pass": ok} for n, m, limit, ok in rows]


def conv_target_rows(family: str, c: dict) -> list[tuple]:
    """Issue #13 section 3: bnexp's steps/s over fit's best configuration on the same net and data."""
    lim, ps = TARGETS["conv_speedup_vs_fit"], c["per_step_s"]
    fits = [k for k in ("fit_default", "fit_jit", "fit_jit_spe50") if k in ps]
    best_fit = min(fits, key=lambda k: ps[k]["min"])
    default = c["info"]["default_execution"]

    def over(key, stat="min"):
        return ps[best_fit][stat] / ps[key][stat]

    # judged like for like: fit's timed epoch scores nothing, so bnexp's run without eval points
    # (bench JSONs from before 2026-12-01's second session have only the run with them)
    judged = "bnexp_graph_no_eval" if default == "graph" and "bnexp_graph_no_eval" in ps else f"bnexp_{default}"
    x = over(judged)
    faster = min(("graph", "xla"), key=lambda ex: ps[f"bnexp_{ex}"]["min"])
    slower = "xla" if faster == "graph" else "graph"
    name = f"{family} ({c['variant']}, {c['steps']} steps)"
    what = "no eval point, as fit" if judged.endswith("no_eval") else "eval points in"
    rows = [
        (f"{name}: bnexp steps/s over fit's best ({best_fit}), default execution={default}, {what}",
         f"{x:.2f}x best, {over(judged, 'median'):.2f}x median "
         f"({1 / ps[judged]['min']:.2f} vs {1 / ps[best_fit]['min']:.2f} steps/s)",
         f">= {lim}x", x >= lim),
    ]
    if judged != f"bnexp_{default}":
        e = c["samples"][f"bnexp_{default}"][0].get("eval_points")
        rows.append((f"  the same with a default run's eval points ({e} of {c['config']['eval_samples']:,} test images)",
                     f"{over(f'bnexp_{default}'):.2f}x best, {over(f'bnexp_{default}', 'median'):.2f}x median; "
                     f"they cost {ps[f'bnexp_{default}']['min'] / ps[judged]['min'] - 1:.1%} of the step",
                     "(shown)", "info"))
    return rows + [
        ("  execution=graph and =xla over fit's best; which is faster",
         f"graph {over('bnexp_graph'):.2f}x, xla {over('bnexp_xla'):.3f}x: {faster} is "
         f"{ps[f'bnexp_{slower}']['min'] / ps[f'bnexp_{faster}']['min']:.0f}x faster", "(shown)", "info"),
        ("  floor: the convolutions and products alone (graph), share of bnexp's step",
         f"{ps['floor_graph']['min'] / ps[f'bnexp_{default}']['min']:.0%} ({ps['floor_graph']['min'] * 1e3:.0f} of "
         f"{ps[f'bnexp_{default}']['min'] * 1e3:.0f} ms); fit's best over it {ps[best_fit]['min'] / ps['floor_graph']['min']:.1f}x",
         "(shown)", "info"),
    ]


def render(r: dict) -> list[Table]:
    loops = r["loops"]
    gflop = r["flop_per_sample"]["anchors"] * loops["steps_per_epoch"] * BATCH / 1e9
    t = Table(title=f"One epoch ({loops['steps_per_epoch']} steps x {BATCH}), {VARIANT}, {DATASET}: "
                    f"best (median) of {r['budget']['rounds']} interleaved rounds; eager loops extrapolated")
    for col in ("loop", "s / epoch", "samples / s", "x bnexp", "GFLOP/s", "% of ANCHORS' 150 GFLOP/s",
                f"% of matmul peak, {r['matmul_peak_gflops']:.0f} GFLOP/s", "cores got"):
        t.add_column(col, justify="left" if col == "loop" else "right")
    for row in r["table_loops"]:
        rounds = row["key"] in loops["cpu_share"]  # a compiled loop: best (median) of the rounds

        def best_median(best, median, fmt):
            return f"{best:{fmt}} ({median:{fmt}})" if rounds else f"{best:{fmt}}"

        t.add_row(row["loop"], best_median(row["s_per_epoch"], row["s_per_epoch_median"], ".3f"),
                  f"{row['samples_per_s']:,.0f}", best_median(row["x_bnexp"], row["x_bnexp_median"], ".2f"),
                  f"{row['gflops']:.0f}", f"{row['of_anchors_peak']:.0%}", f"{row['of_matmul_peak']:.0%}",
                  f"{loops['cpu_share'][row['key']]['median']:.2f}" if rounds else "")
    t.caption = (f"{gflop:.1f} GFLOP per epoch ({r['flop_per_sample']['anchors'] / 1e6:.2f} MFLOP/sample fwd+bwd, "
                 f"ANCHORS' count); the % columns are floor / epoch time. Floor: {gflop / ANCHORS_PEAK_GFLOPS:.2f} s "
                 f"at ANCHORS' 150 GFLOP/s, {gflop / r['matmul_peak_gflops']:.2f} s at this machine's measured matmul "
                 f"peak (AVX-512: {r['machine']['avx512f']}). "
                 f"Compile: bnexp {loops['compile_s']:.2f} s (excluded from its loop time); fit's first epoch, compile "
                 f"included: {loops['fit_default']['first_fit_s']:.2f} s default (which resolves jit_compile="
                 f"{loops['fit_default']['jit_compile_resolved']} on CPU), {loops['fit_jit_spe50']['first_fit_s']:.2f} s jit+spe50.")
    got, cores = loops["cpu_share"]["bnexp_train_no_eval"]["median"], r["machine"]["cores"]
    if got < 0.75 * cores:
        t.caption += (f"\nWARNING: bnexp's loop got only {got:.2f} of {cores} cores (median): other work was running, "
                      "so loops that use both cores look relatively slower. Run again on a quieter machine.")
    tables = [t]
    for family, c in r.get("convnets", {}).items():
        ct = Table(title=f"{family} ({c['variant']}), fashion-mnist, batch {c['batch']}: seconds per step, best (median) of "
                         f"{r['budget']['conv_rounds']} interleaved rounds of {c['steps']} steps")
        for col in ("loop", "ms / step", "steps / s", "x fit's best", "GFLOP/s (floor's count)", "cores got", "n"):
            ct.add_column(col, justify="left" if col == "loop" else "right")
        for row in conv_rows(c):
            ct.add_row(row["loop"], f"{row['s_per_step'] * 1e3:,.0f} ({row['s_per_step_median'] * 1e3:,.0f})",
                       f"{row['steps_per_s']:.2f}", f"{row['x_best_fit']:.3f}" if row["x_best_fit"] < 0.1 else f"{row['x_best_fit']:.2f}",
                       f"{row['gflops_floor']:.1f}", f"{row['cores']:.2f}" if row["cores"] == row["cores"] else "",
                       str(row["n"]))
        ct.caption = (f"{c['floor_flop_per_step'] / 1e9:.2f} GFLOP a step in the convolutions and products (forward, weight and "
                      f"input gradients; {len(c['kernel_layers'])} layers). Default execution: {c['info']['default_execution']}. "
                      f"bnexp's figure is train_time_s over the steps (eval points every {c['config']['eval_every']} steps "
                      f"included); fit's is its epoch over the same {c['train_images']:,} images.")
        tables.append(ct)
    g = Table(title="Targets")
    for col in ("target", "measured", "limit", "result"):
        g.add_column(col)
    for row in r["targets"]:
        g.add_row(row["target"], row["measured"], row["limit"],
                  {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "n/a (quick)", "info": ""}[row["pass"]])
    return [*tables, g]


# ---------------------------------------------------------------- main


COMPARED = ("plain", "dropout", "bn-pre", "bn-post")  # item 7's variants
_IMPORT = "import bnexp.cli; from bnexp.train import tf; tf()"  # what every compare does before it can train


def compare_only(out: Path, compares: int = 3, rounds: int = 3) -> int:
    """Item 7 against item 1, in one run: `compares` fresh compares, each between `rounds` epochs of
    bnexp's loop alone, so both see the same machine. The ratio is each compare's wall time over
    12 x the best epoch.

    The same rounds measure the floor under any schedule of the compare's own work, in a process
    that starts cold: a fresh interpreter's import of TensorFlow as bnexp does it, then each of the
    12 runs' work alone, whole (its training loop, then the scoring of its saved model on all
    70,000 images, its variance ratios and its files), per variant, divided by the throughput
    gained by training two at once (item 1b's pair, against the epoch alone). It leaves out
    the data, the tracing and compiling of the 4 programs, the plan and the report, which a
    compare also does: the real floor is higher."""
    exe, ds = bnexp_exe(), load_data()
    epochs, runs, imports, pairs = [], [], [], []
    alone: dict[str, list[dict]] = {v: [] for v in COMPARED}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for v in COMPARED:
            (root / v).mkdir()
        engines = {v: bnexp_epochs(ds, root / v, v)[1]["bnexp_train"] for v in COMPARED}
        (root / "pair").mkdir()
        pair = bnexp_two_at_once(ds, root / "pair")
        for k in range(compares + 1):
            for i in range(rounds):
                gc.collect()
                epochs.append(engines[VARIANT](100 * k + i)["s"])
            for v in COMPARED:
                gc.collect()
                alone[v].append(engines[v](100 * k + 50))
            gc.collect()
            pairs.append(pair(k + 7)["s"])
            imports.append(_checked(run_child([sys.executable, "-c", _IMPORT]))["wall_s"])
            if k < compares:
                say(f"compare {k + 1}/{compares}")
                runs.append(measure_compare(exe, 3))
    best = min(epochs)
    n = runs[0]["runs"]
    seeds = n // len(COMPARED)
    work = {v: min(r["wall_s"] for r in alone[v]) for v in COMPARED}  # a run's whole work, alone, best
    gain = max(best / min(pairs), 1.0)  # two at once never counts as slower than one after the other
    floor = {"import_s": min(imports), "run_work_alone_s": work, "two_at_once_gain": gain,
             "runs_s": seeds * sum(work.values()) / gain}
    floor["total_s"] = floor["import_s"] + floor["runs_s"]
    floor["over_epochs"] = floor["total_s"] / (n * best)
    r = {"machine": machine(), "epoch_s": stats(epochs), "epochs": epochs,
         "compares": runs, "over_epochs": [c["first"]["wall_s"] / (n * best) for c in runs],
         "floor": floor, "imports_s": imports, "two_at_once_per_model_s": pairs, "alone": alone}
    r["machine"]["load_avg_at_end"] = os.getloadavg()
    out.write_text(json.dumps(r, indent=1, default=float) + "\n")
    lim = TARGETS["compare_over_epochs"]
    for c, x in zip(runs, r["over_epochs"]):
        print(f"compare {c['first']['wall_s']:.1f} s (again: {c['second']['wall_s']:.1f} s) = {x:.2f}x "
              f"{n} x {best:.3f} s [target <= {lim}x: {'PASS' if x <= lim else 'FAIL'}]")
    per_run = ", ".join(f"{v} {s:.3f}" for v, s in work.items())
    print(f"floor {floor['total_s']:.1f} s = {floor['over_epochs']:.2f}x: TensorFlow's import {floor['import_s']:.2f} s "
          f"+ {seeds} x ({per_run}) s of each run's work alone / {gain:.2f} (two at once)")
    say(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds, seeds and steps: a smoke run")
    ap.add_argument("--out", type=Path, help="JSON results [benchmarks/last-run.json; --what-if: none]")
    ap.add_argument("--no-convnets", action="store_true", help="skip the convnet loops (item 11): the MLP bench alone")
    ap.add_argument("--what-if", action="store_true",
                    help="instead of the bench: measure a proposed change (BN through the fused kernel in bnexp's convnet step)")
    ap.add_argument("--compare-only", action="store_true",
                    help="item 7 alone: fresh compares between rounds of item 1's epoch (about 3 minutes)")
    ap.add_argument("--two-at-once-child", action="store_true", help=argparse.SUPPRESS)  # item 1b, run by main
    ap.add_argument("--convnets-child", action="store_true", help=argparse.SUPPRESS)  # item 11, run by main
    ap.add_argument("--conv-steps", type=int, help=argparse.SUPPRESS)  # (trying the bench out: fewer steps)
    args = ap.parse_args(argv)
    b = QUICK if args.quick else FULL
    if args.conv_steps:
        b = dataclasses.replace(b, conv_steps=args.conv_steps)
    if args.two_at_once_child:
        args.out.write_text(json.dumps(measure_two_at_once(load_data(), b), default=float))
        return 0
    if args.convnets_child:
        args.out.write_text(json.dumps(measure_convnets(b), default=float))
        return 0
    if args.what_if:
        w = {"machine": machine(), "what_if": measure_what_if(b)}
        w["machine"]["load_avg_at_end"] = os.getloadavg()
        Console(highlight=False, width=190).print(render_what_if(w["what_if"]))
        if args.out:
            args.out.write_text(json.dumps(w, indent=1, default=float) + "\n")
            say(f"wrote {args.out}")
        return 0
    if args.compare_only:
        return compare_only(args.out or HERE / "bench-compare-last-run.json")
    args.out = args.out or HERE / "last-run.json"
    started = perf_counter()
    r: dict = {"quick": args.quick, "budget": b.__dict__, "machine": machine()}

    exe = bnexp_exe()
    say("CLI start-up: --help, list")
    r["cli"] = measure_cli(b.cli_repeats)
    say("peak RSS of bnexp train")
    r["peak_rss"] = measure_peak_rss(exe)
    say(f"bnexp compare, 4 variants x {b.compare_seeds} seeds, twice")
    r["compare"] = measure_compare(exe, b.compare_seeds)

    ds = load_data()
    r["flop_per_sample"] = flop_per_sample(lab_config())
    say("matmul peak")
    peaks = [matmul_peak()]
    r["loops"] = measure_loops(ds, b)
    say("two models at once, bnexp and fit, in a child process")
    with tempfile.TemporaryDirectory() as tmp:
        child = Path(tmp) / "two.json"
        _checked(run_child([sys.executable, str(Path(__file__).resolve()), "--two-at-once-child", "--out", str(child),
                            *(["--quick"] if args.quick else [])]))
        two = json.loads(child.read_text())
    r["loops"]["epoch_s"].update(two["epoch_s"])
    r["loops"]["cpu_share"].update(two["cpu_share"])
    r["loops"]["two_at_once"] = {"samples": two["samples"], "load_avg_per_round": two["load_avg_per_round"]}
    say("the lab's eager loop, with and without per-step evaluation")
    r["eager"] = {"lab": measure_eager(ds, b.eager_eval_steps, per_step_eval=True),
                  "no_eval": measure_eager(ds, b.eager_steps, per_step_eval=False)}
    say("matmul peak again")
    peaks.append(matmul_peak())
    r["matmul_peak_gflops_samples"], r["matmul_peak_gflops"] = peaks, max(peaks)  # noise only slows it down
    if not args.no_convnets:
        say(f"convnets (cnn, resnet), {b.conv_steps} steps a loop, {b.conv_rounds} rounds, in a child process")
        with tempfile.TemporaryDirectory() as tmp:
            child = Path(tmp) / "convnets.json"
            _checked(run_child([sys.executable, str(Path(__file__).resolve()), "--convnets-child", "--out", str(child),
                                *(["--quick"] if args.quick else []),
                                *([f"--conv-steps={args.conv_steps}"] if args.conv_steps else [])]))
            r["convnets"] = json.loads(child.read_text())
        cnn = r["convnets"]["cnn"]
        default = cnn["info"]["default_execution"]
        slow_default = f"bnexp_{default}" in cnn["capped_steps"]  # 200 steps of it would take an hour
        faster = min(("graph", "xla"), key=lambda ex: cnn["per_step_s"][f"bnexp_{ex}"]["min"])
        say("peak RSS of bnexp train, cnn, 200 steps")
        r["conv_rss"] = measure_conv_rss(exe, faster if slow_default else None)

    r["machine"]["load_avg_at_end"] = os.getloadavg()
    r["table_loops"] = loop_rows(r)
    r["targets"] = target_rows(r, b)
    r["bench_wall_s"] = perf_counter() - started
    out = Console(highlight=False, width=190)
    for table in render(r):
        out.print(table)
    args.out.write_text(json.dumps(r, indent=1, default=float) + "\n")
    say(f"wrote {args.out} ({r['bench_wall_s']:.0f} s)")
    return 0 if all(t["pass"] is not False for t in r["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
