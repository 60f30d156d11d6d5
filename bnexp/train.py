"""Step 4 of the pipeline: training one run, fast, resumably, honestly.

Speed: the training set lives in memory as a tensor; each call of the compiled `chunk`
runs many steps in a `tf.while_loop` (XLA by default), gathering batches by index, with
no Python between steps. An `Engine` caches one compiled program per graph shape, so the
runs of a comparison (seeds, learning rates) reuse it: a run only re-seeds the variables.

Honesty: final metrics are computed on the full test and train sets, in inference mode,
from the very weights saved to model.keras.

Nothing lost: a checkpoint (all model and optimizer variables, the dropout RNG state, the
step and the partial history) is written every `checkpoint_every` steps; Ctrl-C and
SIGTERM are deferred to the next chunk boundary, where a checkpoint is saved.

Runs at once: `train()` may run in several threads sharing one `Engine`, which lends each
run a program of its own. Seeding and building Keras models touch process-wide RNGs (Python's
`random`, TensorFlow's global seed), so those steps, tracing and saving hold `KERAS_LOCK`;
the compiled calls run in parallel.
"""

from __future__ import annotations

import io
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import runs
from .config import Config
from .variants import Variant, build_model

KERAS_LOCK = threading.RLock()  # held while seeding, building, tracing or saving a model
EVAL_BATCH = 10_000  # inference batch: large batches are cheap, and bound memory on big sets
PERCENTILES = (15, 50, 85)  # Ioffe & Szegedy, Figure 1(b, c)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived; a checkpoint was saved and the run marked interrupted."""

    def __init__(self, signum: int, run_dir: Path, others: int = 0):
        self.signum, self.run_dir = signum, run_dir
        if others:  # runs that were training at once
            where = f"checkpoints saved in {run_dir} and {others} more run folder{'s' * (others > 1)}"
            resume = "run the same command again to resume them"
        else:
            where = f"checkpoint saved in {run_dir}"
            resume = f"run the same command again (or `bnexp train --resume {run_dir.name}`) to resume"
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {where}; {resume}")


_IMPORT_LOCK = threading.Lock()


def tf():
    """TensorFlow, imported on first use with its start-up chatter silenced."""
    if "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    with _IMPORT_LOCK:  # two threads swapping fd 2 at once could leave stderr pointing at /dev/null
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        _xla_cache()
        if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] < "3":
            import tensorflow

            return tensorflow
        # TensorFlow's C++ start-up lines (oneDNN, CUDA probing) ignore TF_CPP_MIN_LOG_LEVEL:
        # hide stderr while it loads; a failed import still raises with its message.
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return tensorflow


def _compact(x: np.ndarray) -> np.ndarray:
    """uint8 when x is exactly k/255, so that the graph's lookup table gives back the same float32 bits."""
    u8 = np.rint(x * 255.0).clip(0, 255).astype(np.uint8)
    return u8 if np.array_equal(u8.astype(np.float32) / np.float32(255.0), x) else x


def _xla_cache() -> None:
    """Keep XLA's compiled programs on disk so the next process skips compiling (about 1 s a shape)."""
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "tf_xla_persistent_cache_directory" in flags or os.environ.get("BNEXP_XLA_CACHE") == "0":
        return
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnexp" / "xla"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # no cache, just slower
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={cache}".strip()


def program_key(variant: Variant, cfg: Config, data) -> str:
    """What decides the compiled graph; runs that share it reuse one program.

    Seed, learning rate and run length are not part of it: they are values fed in.
    """
    from .config import digest

    shape_keys = ("depth", "width", "activation", "initializer", "init_std", "use_bias", "bn_drop_bias",
                  "dropout", "bn_momentum", "bn_epsilon", "optimizer", "momentum", "batch_size",
                  "execution", "eval_samples", "traces", "trace_units", "probe_size")
    return digest([variant.spec(), {k: getattr(cfg, k) for k in shape_keys}, data.source.sha256])


class Program:
    """A model, its optimizer and their compiled functions, reused across runs."""

    def __init__(self, variant: Variant, cfg: Config, data, tensors):
        with KERAS_LOCK:
            self._build(variant, cfg, data, tensors)

    def _build(self, variant: Variant, cfg: Config, data, tensors):
        t = tf()
        import keras

        self.variant, self.cfg = variant, cfg
        self.compiled = False  # set once a zero-step call has traced and compiled `chunk`
        self.X, self.Y, self.Xt, self.Yt = tensors
        self.input_shape = tuple(data.image_shape)
        keras.utils.set_random_seed(cfg.seed)
        self.model = build_model(variant, cfg, self.input_shape)
        self.optimizer = {
            "adam": lambda: keras.optimizers.Adam(cfg.lr),
            "sgd": lambda: keras.optimizers.SGD(cfg.lr),
            "momentum": lambda: keras.optimizers.SGD(cfg.lr, momentum=cfg.momentum),
        }[cfg.optimizer]()
        self.optimizer.build(self.model.trainable_variables)
        self.opt_init = [v.numpy() for v in self.optimizer.variables]
        self.act_names = [l.name for l in self.model.layers if l.name.startswith("act_")]
        self.bn_layers = [l for l in self.model.layers if isinstance(l, keras.layers.BatchNormalization)]
        self.probe_model = keras.Model(self.model.inputs, [self.model.get_layer(n).input for n in self.act_names])

        tvars = self.model.trainable_variables
        model, opt = self.model, self.optimizer

        def step(X, Y, idx):
            xb, yb = pixels(t.gather(X, idx)), t.gather(Y, idx)
            with t.GradientTape() as tape:
                logits = model(xb, training=True)
                loss = t.reduce_mean(t.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))
            opt.apply_gradients(zip(tape.gradient(loss, tvars), tvars))
            correct = t.reduce_sum(t.cast(t.equal(t.argmax(logits, -1, output_type=t.int32), yb), t.float32))
            return loss, correct

        def chunk(X, Y, perm, start, count, gstep, total, every, ref, factor, isl, isc, Xe, Ye):
            """Steps perm[start:start+count], the run's steps gstep+1.. ; stops early at a
            non-finite or exploding loss.

            After each step whose number is a multiple of `every` (and below `total`) it
            scores (Xe, Ye) in place and records a row (step, train-loss sum, train-correct
            sum since the last point, test-loss sum, test-correct sum): a whole epoch with
            its eval points is one call, so an eval point costs only its arithmetic.
            """
            rows = t.zeros([perm.shape[0] + 1, 5])

            def cond(i, ref, bad, last, isl, isc, k, rows):
                return t.logical_and(i < start + count, t.logical_not(bad))

            def body(i, ref, bad, last, isl, isc, k, rows):
                loss, correct = step(X, Y, perm[i])
                ref = t.where(ref < 0, loss, ref)  # the run's first-step loss
                bad = t.logical_or(t.logical_not(t.math.is_finite(loss)), loss > factor * ref)
                g = gstep + (i - start) + 1
                isl, isc = isl + loss, isc + correct

                def record():
                    el, ec = evaluate(Xe, Ye)
                    row = t.stack([t.cast(g, t.float32), isl, isc, el, ec])
                    return t.tensor_scatter_nd_update(rows, [[k]], [row]), k + 1, t.zeros_like(isl), t.zeros_like(isc)

                point = t.logical_and(t.logical_and(g % every == 0, g < total), t.logical_not(bad))
                rows, k, isl, isc = t.cond(point, record, lambda: (rows, k, isl, isc))
                return i + 1, ref, bad, loss, isl, isc, k, rows

            return t.while_loop(cond, body, (start, ref, t.constant(False), t.constant(0.0), isl, isc,
                                             t.constant(0), rows))

        # Images live on the device as uint8 (a quarter of the memory). A 256-entry table gives back
        # exactly numpy's float32 k/255; computing /255 in the graph may differ in the last bit.
        lut = t.constant(np.arange(256, dtype=np.float32) / np.float32(255.0))

        def pixels(x):
            return x if x.dtype == t.float32 else t.gather(lut, t.cast(x, t.int32))

        # the eval points' images, decoded once: each point then costs only its forward pass
        self.Xe, self.Ye = pixels(self.Xt[: cfg.eval_samples]), self.Yt[: cfg.eval_samples]

        def evaluate(x, y):
            logits = model(pixels(x), training=False)
            loss = t.reduce_sum(t.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            correct = t.reduce_sum(t.cast(t.equal(t.argmax(logits, -1, output_type=t.int32), y), t.float32))
            return loss, correct

        def evaluate_batchstats(x, y):
            h = pixels(x)
            for layer in model.layers[1:]:  # BN normalizes with this batch's statistics; dropout stays off
                h = layer(h, training=isinstance(layer, keras.layers.BatchNormalization))
            loss = t.reduce_sum(t.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=h))
            return loss, t.reduce_sum(t.cast(t.equal(t.argmax(h, -1, output_type=t.int32), y), t.float32))

        # the input of each BN layer, in inference mode, for recalibrate()
        bn_input_models = [keras.Model(model.inputs, bn.input) for bn in self.bn_layers]

        spec = [t.TensorSpec([None, *self.input_shape], self.X.dtype), t.TensorSpec([None], t.int32)]
        if cfg.execution == "eager":
            self.chunk = self._eager_chunk(step, evaluate)
            self.evaluate = evaluate
            self.evaluate_batchstats = evaluate_batchstats
            self.probe = lambda x: self.probe_model(pixels(x), training=False)
            self.bn_inputs = [lambda x, m=m: m(pixels(x), training=False) for m in bn_input_models]
        else:
            self.chunk = t.function(chunk, jit_compile=cfg.execution == "xla")
            self.evaluate = t.function(evaluate, input_signature=spec)
            self.evaluate_batchstats = t.function(evaluate_batchstats, input_signature=spec)
            self.probe = t.function(lambda x: self.probe_model(pixels(x), training=False), input_signature=spec[:1])
            self.bn_inputs = [t.function(lambda x, m=m: m(pixels(x), training=False), input_signature=spec[:1])
                              for m in bn_input_models]

    def _eager_chunk(self, step, evaluate):
        """The lab's style: one Python iteration per step, for debugging."""
        t = tf()

        def chunk(X, Y, perm, start, count, gstep, total, every, ref, factor, isl, isc, Xe, Ye):
            i, ref, bad, loss, isl, isc = int(start), float(ref), False, 0.0, float(isl), float(isc)
            rows = []
            while i < int(start) + int(count) and not bad:
                loss, correct = step(X, Y, perm[i])
                loss = float(loss)
                ref = loss if ref < 0 else ref
                bad = not math.isfinite(loss) or loss > float(factor) * ref
                g = int(gstep) + i - int(start) + 1
                i, isl, isc = i + 1, isl + loss, isc + float(correct)
                if g % int(every) == 0 and g < int(total) and not bad:
                    el, ec = evaluate(Xe, Ye)
                    rows.append([g, isl, isc, float(el), float(ec)])
                    isl = isc = 0.0
            table = t.constant(rows or np.zeros((0, 5)), dtype=t.float32)
            return (t.constant(i), t.constant(ref), t.constant(bad), t.constant(loss), t.constant(isl),
                    t.constant(isc), t.constant(len(rows)), table)

        return chunk

    def reset(self, cfg: Config) -> None:
        """Give the shared model exactly the state a fresh run with `cfg.seed` would get."""
        import keras

        with KERAS_LOCK:
            keras.utils.set_random_seed(cfg.seed)
            fresh = build_model(self.variant, cfg, self.input_shape)
        for v, f in zip(self.model.variables, fresh.variables):
            v.assign(f)
        for v, init in zip(self.optimizer.variables, self.opt_init):
            v.assign(init)
        self.optimizer.learning_rate = cfg.lr

    def state(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.model.variables] + [v.numpy() for v in self.optimizer.variables]

    def load_state(self, arrays: list[np.ndarray]) -> None:
        variables = list(self.model.variables) + list(self.optimizer.variables)
        if len(arrays) != len(variables):
            raise ValueError(f"checkpoint holds {len(arrays)} arrays, the model needs {len(variables)}")
        for v, a in zip(variables, arrays):
            v.assign(a)

    def score(self, x, y, batchstats: bool = False) -> tuple[float, float]:
        """Mean loss and accuracy over (x, y) in inference mode (or with BN batch statistics)."""
        if batchstats:
            saved = [[w.numpy() for w in bn.non_trainable_variables] for bn in self.bn_layers]
            fn, step = self.evaluate_batchstats, self.cfg.batch_size
        else:
            fn, step = self.evaluate, EVAL_BATCH
        n = int(x.shape[0]) if not batchstats else (int(x.shape[0]) // step) * step
        loss = correct = 0.0
        for s in range(0, n, step):
            l, c = fn(x[s:s + step], y[s:s + step])
            loss, correct = loss + float(l), correct + float(c)
        if batchstats:  # calling BN in training mode moved its moving statistics: put them back
            for bn, ws in zip(self.bn_layers, saved):
                for w, a in zip(bn.non_trainable_variables, ws):
                    w.assign(a)
        return loss / n, correct / n

    def recalibrate(self, n: int) -> None:
        """Precise BN: each BN layer's moving mean and variance become the exact mean and
        (population) variance of its input over the first n training images, computed with the
        final weights in inference mode. Layers go in order, since a layer's input depends on the
        statistics of the BN layers before it. Running it twice gives the same statistics."""
        x = self.X[:n]
        for bn_input, bn in zip(self.bn_inputs, self.bn_layers):
            count, mean, m2 = 0, 0.0, 0.0
            for s in range(0, int(x.shape[0]), EVAL_BATCH):  # merge chunk moments (Chan et al.)
                h = np.asarray(bn_input(x[s:s + EVAL_BATCH]), dtype=np.float64)
                h = h.reshape(-1, h.shape[-1])
                k, m, v = h.shape[0], h.mean(axis=0), h.var(axis=0)
                delta, total = m - mean, count + k
                mean = mean + delta * k / total
                m2 = m2 + v * k + delta ** 2 * count * k / total
                count = total
            bn.moving_mean.assign(np.asarray(mean, np.float32))
            bn.moving_variance.assign(np.asarray(m2 / count, np.float32))

    def trace(self, probe_x, units: int) -> dict:
        """Percentiles, mean and variance of each nonlinearity's input on the probe batch."""
        outs = self.probe(probe_x)
        outs = [outs] if not isinstance(outs, (list, tuple)) else outs
        arrays = [np.asarray(o) for o in outs]
        return {
            "values": [np.percentile(a[:, :units], PERCENTILES, axis=0).T.tolist() for a in arrays],
            "mean": [float(a.mean()) for a in arrays],
            "var": [float(a.var()) for a in arrays],
        }


class Engine:
    """Compiled programs and device-resident data, shared by the runs of one process.

    A program trains one run at a time. `program()` lends a free one for the run's graph
    shape and builds another only when every one of that shape is busy, so runs trained
    at once in several threads share one Engine and one copy of the data.
    """

    def __init__(self):
        self.programs: dict[str, list[Program]] = {}
        self.tensors: dict[str, tuple] = {}
        self._busy: set[int] = set()  # id() of the programs lent out
        self._lock = threading.Lock()

    @contextmanager
    def program(self, variant: Variant, cfg: Config, data):
        t = tf()
        sha = data.source.sha256
        key = program_key(variant, cfg, data)
        with self._lock:
            if sha not in self.tensors:
                if self._busy:
                    raise RuntimeError("an Engine trains on one dataset at a time")
                shape = tuple(data.image_shape)
                self.tensors = {sha: (  # keep one dataset resident at a time: memory stays bounded
                    t.constant(_compact(data.x_train).reshape((-1, *shape))), t.constant(data.y_train),
                    t.constant(_compact(data.x_test).reshape((-1, *shape))), t.constant(data.y_test))}
                self.programs = {}  # they were compiled for the previous dataset's tensors
            prog = next((p for p in self.programs.get(key, []) if id(p) not in self._busy), None)
            if prog is not None:
                self._busy.add(id(prog))
            tensors = self.tensors[sha]
        if prog is None:
            prog = Program(variant, cfg, data, tensors)
            with self._lock:
                self.programs.setdefault(key, []).append(prog)
                self._busy.add(id(prog))
        try:
            yield prog
        finally:
            with self._lock:
                self._busy.discard(id(prog))


@contextmanager
def deferred_signals():
    """Hold SIGINT/SIGTERM while TensorFlow works; the `poll()` this yields, called between
    compiled calls, lists the ones that arrived.

    They are blocked in this thread, and so in every thread TensorFlow starts from it, which
    keeps them out of native code (one landing in a TensorFlow thread once aborted a run).
    Threads started earlier (Rich's progress refresher) may still receive them: on the main
    thread a handler turns those into the same flag instead of a KeyboardInterrupt.
    """
    sigs = {signal.SIGINT, signal.SIGTERM}
    caught: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in sigs}
    blocking = hasattr(signal, "sigtimedwait")  # not on macOS: the handler alone does it there
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, sigs) if blocking else None

    def poll() -> list[int]:
        info = signal.sigtimedwait(sigs, 0) if blocking else None
        if info is not None:
            caught.append(info.si_signo)
        return caught

    try:
        yield poll
    finally:
        if blocking:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one still pending goes to the handler
        for s, h in handlers.items():
            signal.signal(s, h)


@dataclass
class _State:
    """Everything besides the variables that a resumed run needs to go on exactly."""

    step: int = 0
    ref_loss: float = -1.0
    interval_loss: float = 0.0  # training-loss sum since the last eval point
    interval_correct: float = 0.0  # correct training predictions since the last eval point
    last_point: int = 0  # step of the last eval point
    train_time_s: float = 0.0
    history: list | None = None
    traces: dict | None = None
    moving_avg: list | None = None  # [test loss, test accuracy] before bn_recalibrate changed the statistics

    def to_json(self) -> str:
        return json.dumps(self.__dict__, allow_nan=True)


def save_checkpoint(run_dir: Path, prog: Program, st: _State) -> None:
    buf = io.BytesIO()
    arrays = prog.state()
    np.savez(buf, state=np.frombuffer(st.to_json().encode(), dtype=np.uint8), **{f"v{i}": a for i, a in enumerate(arrays)})
    runs.write_atomic(run_dir / "checkpoint.npz", buf.getvalue())


def load_checkpoint(run_dir: Path, prog: Program) -> _State:
    with np.load(run_dir / "checkpoint.npz") as z:
        st = _State(**json.loads(bytes(z["state"]).decode()))
        n = len([k for k in z.files if k.startswith("v")])
        prog.load_state([z[f"v{i}"] for i in range(n)])
    return st


def _write_tensorboard(folder: Path, history: list[dict]) -> None:
    """The eval history as TensorBoard scalars, written once the run ends with TensorBoard's own
    event writer (plain protobufs: no TensorFlow ops, no cost per eval point)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    now = time.time()
    for point in history:
        values = [summary_pb2.Summary.Value(tag=k, simple_value=point[k])
                  for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")]
        writer.add_event(event_pb2.Event(step=point["step"], wall_time=now, summary=summary_pb2.Summary(value=values)))
    writer.close()


def _perm(seed: int, epoch: int, n: int, steps: int, batch: int) -> np.ndarray:
    """The epoch's batches: the whole set shuffled by (seed, epoch), same for every variant."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[: steps * batch].reshape(steps, batch).astype(np.int32)


def train(cfg: Config, variant: Variant, data, run_dir: Path, record: dict,
          engine: Engine | None = None, on_progress: Callable | None = None,
          poll: Callable[[], list] | None = None) -> dict:
    """Train `variant` under `cfg` into `run_dir` and return its finished record.

    `record` holds the identity and provenance keys (run_id, seed, dataset, env...);
    this adds the metrics and writes metrics.json, model.keras, checkpoint.npz and tb/.
    If run_dir holds a checkpoint, training resumes from it. Ctrl-C or SIGTERM saves a
    checkpoint at the next call boundary and raises Interrupted.

    `poll` is for callers that run several trainings at once: they hold the signals
    themselves (`deferred_signals()`) and pass its poll, so that one Ctrl-C stops every run.
    """
    if poll is None:
        with deferred_signals() as poll:
            return train(cfg, variant, data, run_dir, record, engine, on_progress, poll)
    rec = _train(cfg, variant, data, run_dir, record, engine, on_progress, poll)
    if poll():  # arrived while the run was finishing: it is saved; stop the batch here
        raise Interrupted(poll()[0], run_dir)
    return rec


def _train(cfg, variant, data, run_dir, record, engine, on_progress, poll) -> dict:
    started = time.perf_counter()
    with (engine or Engine()).program(variant, cfg, data) as prog:
        return _train_with(prog, cfg, variant, data, run_dir, record, on_progress, poll, started)


def _train_with(prog, cfg, variant, data, run_dir, record, on_progress, poll, started) -> dict:
    t = tf()
    n_train = int(data.x_train.shape[0])
    spe = cfg.steps_per_epoch(n_train)
    if spe < 1:
        from .errors import UsageError

        raise UsageError(f"batch_size={cfg.batch_size} is larger than the {n_train} training images; lower --batch-size")
    total = cfg.total_steps(n_train)
    eval_every = cfg.resolved_eval_every(n_train)
    ckpt_every = cfg.checkpoint_every or spe
    Xe, Ye = prog.Xe, prog.Ye
    probe = prog.Xt[: cfg.probe_size]

    prog.reset(cfg)
    st = _State(history=[], traces=None)
    if (run_dir / "checkpoint.npz").exists():
        st = load_checkpoint(run_dir, prog)
        record["resumed_from_step"] = st.step
    if cfg.traces and st.traces is None:
        st.traces = {"layers": prog.act_names, "units": list(range(min(cfg.trace_units, cfg.width))),
                     "percentiles": list(PERCENTILES), "probe": f"first {cfg.probe_size} test images",
                     "steps": [], "values": [], "mean": [], "var": [], "mean_drift": [], "var_drift": []}

    # Compile outside the timed loop: a zero-step call traces and compiles without touching state.
    c0 = time.perf_counter()
    perm = t.constant(_perm(cfg.seed, st.step // spe, n_train, spe, cfg.batch_size))
    if not prog.compiled and cfg.execution != "eager":
        with KERAS_LOCK:  # tracing builds Keras state; compiling is then cached per program
            prog.chunk(prog.X, prog.Y, perm, *(t.constant(v) for v in (0, 0, 0, total, eval_every)),
                       *(t.constant(v) for v in (-1.0, cfg.divergence_factor, 0.0, 0.0)), Xe, Ye)
        prog.compiled = True
    compile_s = time.perf_counter() - c0

    record.update(status="running", steps_total=total, steps_per_epoch=spe, eval_every=eval_every)
    runs.write_json(run_dir / "metrics.json", record)

    def eval_point(step: int, train_sums: tuple, test_sums=None) -> dict:
        """Record an eval point: test sums from the chunk's subset eval, or None to score all test images."""
        steps = max(step - st.last_point, 1)
        tl, ta = train_sums[0] / steps, train_sums[1] / (steps * cfg.batch_size)
        if test_sums is None:
            n = int(prog.Xt.shape[0])
            loss, acc = prog.score(prog.Xt, prog.Yt)
        else:
            n = int(Xe.shape[0])
            loss, acc = float(test_sums[0]) / n, float(test_sums[1]) / n
        st.last_point = step
        point = {"step": step, "epoch": round(step / spe, 4), "train_loss": tl, "train_accuracy": ta,
                 "test_loss": loss, "test_accuracy": acc, "eval_samples": n}
        st.history.append(point)
        if st.traces is not None:
            tr = prog.trace(probe, len(st.traces["units"]))
            prev_m = st.traces["mean"][-1] if st.traces["mean"] else tr["mean"]
            prev_v = st.traces["var"][-1] if st.traces["var"] else tr["var"]
            st.traces["steps"].append(step)
            for k in ("values", "mean", "var"):
                st.traces[k].append(tr[k])
            st.traces["mean_drift"].append([a - b for a, b in zip(tr["mean"], prev_m)])
            st.traces["var_drift"].append([a - b for a, b in zip(tr["var"], prev_v)])
        return point

    diverged = None
    factor = t.constant(cfg.divergence_factor)
    loop_start = time.time()
    while st.step < total:
        epoch, pos = divmod(st.step, spe)
        if pos == 0:
            perm = t.constant(_perm(cfg.seed, epoch, n_train, spe, cfg.batch_size))
        # one call per epoch (or checkpoint interval); traces are taken in Python, so they end calls too
        nxt = min(total, (st.step // ckpt_every + 1) * ckpt_every, (epoch + 1) * spe,
                  (st.step // eval_every + 1) * eval_every if st.traces is not None else total)
        c = time.perf_counter()
        i, ref, bad, last, isl, isc, k, rows = prog.chunk(
            prog.X, prog.Y, perm, *(t.constant(v) for v in (pos, nxt - st.step, st.step, total, eval_every)),
            t.constant(st.ref_loss), factor, t.constant(st.interval_loss), t.constant(st.interval_correct), Xe, Ye)
        done = int(i) - pos
        st.train_time_s += time.perf_counter() - c
        for g, l, cor, el, ec in rows.numpy()[: int(k)]:
            eval_point(int(g), (float(l), float(cor)), (el, ec))
        st.step += done
        st.ref_loss, st.interval_loss, st.interval_correct = float(ref), float(isl), float(isc)
        if bool(bad):
            diverged = {"diverged_step": st.step, "diverged_loss": float(last), "first_loss": st.ref_loss}
            break
        if on_progress:
            recent = st.history[-1] if st.history and st.history[-1]["step"] > st.step - eval_every else None
            since = max(st.step - st.last_point, 1)
            on_progress(st.step, total, recent["train_loss"] if recent else st.interval_loss / since,
                        recent["train_accuracy"] if recent else st.interval_correct / (since * cfg.batch_size))
        if st.step % ckpt_every == 0 and st.step < total:
            save_checkpoint(run_dir, prog, st)
        if poll():
            save_checkpoint(run_dir, prog, st)
            record.update(status="interrupted", step=st.step, history=st.history)
            runs.write_json(run_dir / "metrics.json", record)
            raise Interrupted(poll()[0], run_dir)

    loop_end = time.time()
    if cfg.bn_recalibrate and prog.bn_layers and not diverged:
        if st.moving_avg is None:  # (a checkpoint saved after recalibrating already holds it)
            st.moving_avg = list(prog.score(prog.Xt, prog.Yt))  # what the moving averages score
        record.update(test_loss_moving_avg=st.moving_avg[0], test_accuracy_moving_avg=st.moving_avg[1],
                      bn_recalibrated_on=min(cfg.bn_recalibrate, n_train))
        prog.recalibrate(cfg.bn_recalibrate)
    final = eval_point(st.step, (st.interval_loss, st.interval_correct))
    train_loss, train_acc = prog.score(prog.X, prog.Y)
    if cfg.bn_batchstats_eval:
        bl, ba = prog.score(prog.Xt, prog.Yt, batchstats=True)
        record.update(test_loss_batchstats=bl, test_accuracy_batchstats=ba)
    with KERAS_LOCK:
        prog.model.save(run_dir / "model.keras")
    save_checkpoint(run_dir, prog, st)
    _write_tensorboard(run_dir / "tb", st.history)

    samples = st.step * cfg.batch_size
    record.update(
        status="diverged" if diverged else "finished",
        test_accuracy=final["test_accuracy"], test_loss=final["test_loss"],
        train_accuracy=train_acc, train_loss=train_loss,
        last_train_loss=final["train_loss"],
        steps=st.step, epochs_done=round(st.step / spe, 4),
        wall_time_s=time.perf_counter() - started, train_time_s=st.train_time_s,  # compiled calls: steps + eval points
        compile_time_s=compile_s,
        # when this session's training loop ran (Unix time): runs trained at once overlap
        train_start_unix=loop_start, train_end_unix=loop_end,
        samples_per_s=samples / st.train_time_s if st.train_time_s > 0 else None,
        **(diverged or {"diverged_step": None}),
        history=st.history, traces=st.traces, gpu=runs.gpu_info(),
    )
    runs.write_json(run_dir / "metrics.json", record)
    return record
