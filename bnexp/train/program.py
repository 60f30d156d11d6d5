"""The compiled program: a model, its optimizer and their compiled functions, and the Engine
that shares them between the runs of one process.

Speed: the training set lives in memory as a tensor; each call of the compiled `chunk` runs
many steps in a `tf.while_loop` (XLA by default), gathering batches by index, with no Python
between steps. An `Engine` caches one compiled program per program key, so the runs of a
comparison (seeds, learning rates) reuse it: a run only re-seeds the variables.

Runs at once: several threads may share one Engine, which lends each run a program of its
own. Seeding and building Keras models touch process-wide RNGs (Python's `random`,
TensorFlow's global seed), so those steps, tracing and saving hold `KERAS_LOCK`; the compiled
calls run in parallel.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import models
from ..config import GRAPH, digest, key_dict
from ..errors import UsageError
from . import fused

KERAS_LOCK = threading.RLock()  # held while seeding, building, tracing or saving a model
EVAL_BATCH = 10_000  # inference batch at most: large batches are cheap, and bound memory on big sets
EVAL_BYTES = 64 << 20  # ... and the largest layer output of one inference batch at most (a convnet's)
PERCENTILES = (15, 50, 85)  # Ioffe & Szegedy, Figure 1(b, c)
# One row per eval point inside a compiled chunk: its columns, by name. A new per-point
# metric is one more name here and one more entry where the row is made (`record` in chunk).
EVAL_COLUMNS = ("step", "train_loss_sum", "train_correct_sum", "test_loss_sum", "test_correct_sum")

_IMPORT_LOCK = threading.Lock()
# Keras imports these at start-up when they are installed, for integrations bnexp never uses
# (scikit-learn wrappers, DataFrames as fit() input, image-gallery plots): about 2 of the 6 s
# `import tensorflow` takes here. bnexp's own uses import them later, as usual.
KERAS_OPTIONAL = ("sklearn", "pandas", "matplotlib")


class _Hide:
    """A meta-path finder under which TensorFlow and Keras cannot find the modules named, as if
    they were not installed. Imports from anywhere else (another thread) find them as usual."""

    def __init__(self, names):
        self.names = tuple(n for n in names if n not in sys.modules)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names and _importer().startswith(("keras", "tensorflow")):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden while TensorFlow imports)", name=name)
        return None

    def __enter__(self):
        sys.meta_path.insert(0, self)

    def __exit__(self, *exc):
        sys.meta_path.remove(self)


def _importer() -> str:
    """The module whose code runs the import under way: the first frame outside importlib."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


def _import_tensorflow():
    """Import TensorFlow (and Keras) with KERAS_OPTIONAL hidden; BNEXP_LEAN_IMPORT=0 shows them."""
    hide = KERAS_OPTIONAL if os.environ.get("BNEXP_LEAN_IMPORT") != "0" else ()
    with _Hide(hide):
        import keras  # noqa: F401  (Keras 3: tf.keras is keras; importing it here keeps it lean too)
        import tensorflow
    return tensorflow


def tf():
    """TensorFlow, imported on first use with its start-up chatter silenced."""
    if "tensorflow" in sys.modules:
        import tensorflow

        return tensorflow
    with _IMPORT_LOCK:  # two threads swapping fd 2 at once could leave stderr pointing at /dev/null
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        _xla_cache()
        if "tensorflow" in sys.modules:
            import tensorflow

            return tensorflow
        if os.environ["TF_CPP_MIN_LOG_LEVEL"] < "3":
            return _import_tensorflow()
        # TensorFlow's C++ start-up lines (oneDNN, CUDA probing) ignore TF_CPP_MIN_LOG_LEVEL:
        # hide stderr while it loads; a failed import still raises with its message.
        saved = os.dup(2)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                tensorflow = _import_tensorflow()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        return tensorflow


XLA_CACHE_MB = 1024  # the cache's default size cap; $BNEXP_XLA_CACHE_MB sets another


def _xla_cache() -> None:
    """Keep XLA's compiled programs on disk so the next process skips compiling (about 1 s a shape),
    in $XDG_CACHE_HOME/bnexp/xla (~/.cache/bnexp/xla), at most $BNEXP_XLA_CACHE_MB megabytes.
    BNEXP_XLA_CACHE=0 turns it off."""
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "tf_xla_persistent_cache_directory" in flags or os.environ.get("BNEXP_XLA_CACHE") == "0":
        return
    cap = xla_cache_cap()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnexp" / "xla"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        prune_cache(cache, cap)
    except OSError:
        return  # no cache, just slower
    os.environ["TF_XLA_FLAGS"] = f"{flags} --tf_xla_persistent_cache_directory={cache}".strip()


def xla_cache_cap() -> int:
    """$BNEXP_XLA_CACHE_MB in bytes (default XLA_CACHE_MB)."""
    raw = os.environ.get("BNEXP_XLA_CACHE_MB", "").strip()
    try:
        mb = float(raw) if raw else XLA_CACHE_MB
    except ValueError:
        mb = -1.0
    if not mb > 0:  # (NaN included)
        raise UsageError(f"BNEXP_XLA_CACHE_MB={raw} is not a size in megabytes; set it to a number above 0 "
                         "(e.g. 1024), or BNEXP_XLA_CACHE=0 to keep no cache")
    return int(mb * 2**20)


def prune_cache(cache: Path, cap: int) -> list[Path]:
    """When XLA's cache files (*.pb) in `cache` add up to more than `cap` bytes, delete the oldest
    written until they fill at most three quarters of it (so that pruning is not needed at every
    start). A program whose file went compiles again and writes it anew. Returns what it deleted."""
    files = []
    for f in cache.glob("*.pb"):
        try:
            st = f.stat()
        except FileNotFoundError:  # (another process pruned it meanwhile)
            continue
        files.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in files)
    if total <= cap:
        return []
    gone = []
    for _, size, f in sorted(files, key=lambda e: (e[0], e[2].name)):
        if total <= cap * 3 // 4:
            break
        f.unlink(missing_ok=True)
        total -= size
        gone.append(f)
    return gone


def _compact(x: np.ndarray) -> np.ndarray:
    """uint8 when float x is exactly k/255, so that the graph's lookup table gives back the same float32 bits."""
    if x.dtype == np.uint8 or not np.issubdtype(x.dtype, np.floating):
        return x
    u8 = np.rint(x * 255.0).clip(0, 255).astype(np.uint8)
    return u8 if np.array_equal(u8.astype(np.float32) / np.float32(255.0), x) else x


def program_key(variant, cfg, read: set[str], dataset_sha: str) -> str:
    """What decides the compiled graph: the variant, the graph-role keys its builders read, and
    the data (the program is compiled for its tensors). Seed, learning rate and run length are
    values fed in, so runs that differ only in them share one program."""
    return digest([variant.spec(), key_dict(cfg, read, roles=(GRAPH,)), dataset_sha])


def eval_batch(model) -> int:
    """The inference batch: EVAL_BATCH images, fewer when a layer's output for that many would pass
    EVAL_BYTES (a convnet's first convolutions: 10,000 x 28 x 28 x 16 floats are 500 MB each)."""
    widest = max(int(np.prod(layer.output.shape[1:])) for layer in model.layers)
    return max(1, min(EVAL_BATCH, EVAL_BYTES // (4 * widest)))


def _merged(parts: list[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-batch (count, mean, var) into the whole set's mean and population variance."""
    count, mean, var = parts[0]
    m2 = var * count
    for k, m, v in parts[1:]:
        delta, total = m - mean, count + k
        mean = mean + delta * k / total
        m2 = m2 + v * k + delta ** 2 * count * k / total
        count = total
    return mean, (var if len(parts) == 1 else m2 / count)


class Program:
    """A model, its optimizer and their compiled functions, reused across runs."""

    def __init__(self, variant, cfg, settings, tensors, num_classes: int):
        with KERAS_LOCK:
            self._build(variant, cfg, settings, tensors, num_classes)

    def _build(self, variant, cfg, s, tensors, num_classes):
        t = tf()
        import keras
        from keras.src.models.functional import operation_fn

        self.variant, self.cfg, self.num_classes = variant, cfg, num_classes
        self.compiled = False  # set once a zero-step call has traced and compiled `chunk`
        self.X, self.Y, self.Xt, self.Yt = tensors
        self.input_shape = tuple(int(d) for d in self.X.shape[1:])
        keras.utils.set_random_seed(s.seed)
        self.model, built = models.build_model(variant, cfg, self.input_shape, num_classes)
        self.optimizer = {
            "adam": lambda: keras.optimizers.Adam(s.lr),
            "sgd": lambda: keras.optimizers.SGD(s.lr),
            "momentum": lambda: keras.optimizers.SGD(s.lr, momentum=s.momentum),
        }[s.optimizer]()
        self.optimizer.build(self.model.trainable_variables)
        self.opt_init = [v.numpy() for v in self.optimizer.variables]
        self.tap_names = list(built.tap_names)
        self.stat_layers = [self.model.get_layer(n) for n in built.stat_layers]  # norms with moving statistics
        self.eval_batch = eval_batch(self.model)
        self.probe_model = keras.Model(self.model.inputs, built.taps) if built.taps else None

        tvars = self.model.trainable_variables
        model, opt = self.model, self.optimizer
        stat_ids = {id(layer) for layer in self.stat_layers}

        # Images live on the device as uint8 (a quarter of the memory). A 256-entry table gives back
        # exactly numpy's float32 k/255; computing /255 in the graph may differ in the last bit.
        lut = t.constant(np.arange(256, dtype=np.float32) / np.float32(255.0))

        def pixels(x):
            return x if x.dtype == t.float32 else t.gather(lut, t.cast(x, t.int32))

        # The inference functions run as plain graphs, where that lookup costs about as much as the
        # forward pass; compiled by XLA alone it is 3x cheaper and gives the same bits.
        decode = pixels
        if s.execution != "eager":
            compiled_pixels = t.function(pixels, jit_compile=True)

            def decode(x):
                return x if x.dtype == t.float32 else compiled_pixels(x)

        # BN after a conv trains through TensorFlow's fused kernel (fused.py); everything else,
        # the MLP included, is the model's own call
        forward = fused.training_forward(model) or (lambda x: model(x, training=True))

        def step(X, Y, idx):
            xb, yb = pixels(t.gather(X, idx)), t.gather(Y, idx)
            with t.GradientTape() as tape:
                logits = forward(xb)
                loss = t.reduce_mean(t.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=logits))
            opt.apply_gradients(zip(tape.gradient(loss, tvars), tvars))
            correct = t.reduce_sum(t.cast(t.equal(t.argmax(logits, -1, output_type=t.int32), yb), t.float32))
            return loss, correct

        def evaluate(x, y):
            logits = model(decode(x), training=False)
            loss = t.reduce_sum(t.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            correct = t.reduce_sum(t.cast(t.equal(t.argmax(logits, -1, output_type=t.int32), y), t.float32))
            return loss, correct

        def chunk(data, run, carry):
            """Steps perm[start:start+count], the run's steps gstep+1.. ; stops early at a
            non-finite or exploding loss.

            data: X, Y, perm, Xe, Ye. run: start, count, gstep, total, every, factor (this call's
            constants). carry: ref (the run's first-step loss, -1 before it), isl, isc (training
            loss and correct sums since the last eval point). After each step whose number is a
            multiple of `every` (and below `total`) it scores (Xe, Ye) in place and records a row
            of EVAL_COLUMNS: a whole epoch with its eval points is one call, so an eval point
            costs only its arithmetic. This one function is the loop for every execution mode
            (eager runs it step by step in Python), so its rules are written once.
            """
            start, count, gstep, total = run["start"], run["count"], run["gstep"], run["total"]
            every, factor = run["every"], run["factor"]
            rows = t.zeros([data["perm"].shape[0] + 1, len(EVAL_COLUMNS)])

            def cond(i, ref, bad, last, isl, isc, k, rows):
                return t.logical_and(i < start + count, t.logical_not(bad))

            def body(i, ref, bad, last, isl, isc, k, rows):
                loss, correct = step(data["X"], data["Y"], data["perm"][i])
                ref = t.where(ref < 0, loss, ref)
                bad = t.logical_or(t.logical_not(t.math.is_finite(loss)), loss > factor * ref)
                g = gstep + (i - start) + 1
                isl, isc = isl + loss, isc + correct

                def record():
                    el, ec = evaluate(data["Xe"], data["Ye"])
                    row = t.stack([t.cast(g, t.float32), isl, isc, el, ec])
                    return t.tensor_scatter_nd_update(rows, [[k]], [row]), k + 1, t.zeros_like(isl), t.zeros_like(isc)

                point = t.logical_and(t.logical_and(g % every == 0, g < total), t.logical_not(bad))
                rows, k, isl, isc = t.cond(point, record, lambda: (rows, k, isl, isc))
                return i + 1, ref, bad, loss, isl, isc, k, rows

            i, ref, bad, last, isl, isc, k, rows = t.while_loop(
                cond, body, (start, carry["ref"], t.constant(False), t.constant(0.0), carry["isl"], carry["isc"],
                             t.constant(0), rows))
            return {"i": i, "ref": ref, "bad": bad, "last_loss": last, "isl": isl, "isc": isc, "n_rows": k, "rows": rows}

        def evaluate_batchstats(x, y):
            # norms with moving statistics use this batch's statistics; everything else (dropout)
            # runs in inference mode. Through the functional graph, so residual nets work too.
            h = model._run_through_graph(model._standardize_inputs(decode(x)),
                                         operation_fn=lambda op: operation_fn(op, training=id(op) in stat_ids))
            h = h[0] if isinstance(h, (list, tuple)) else h
            loss = t.reduce_sum(t.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=h))
            return loss, t.reduce_sum(t.cast(t.equal(t.argmax(h, -1, output_type=t.int32), y), t.float32))

        # the eval points' images, decoded once: each point then costs only its forward pass
        self.Xe, self.Ye = pixels(self.Xt[: s.eval_samples]), self.Yt[: s.eval_samples]
        # the inputs of all moving-statistics norms, in inference mode, from one forward pass: for
        # recalibrate() and variance_ratios(). One function, traced once (one per layer would be
        # traced as many times, and TensorFlow warns of retracing past 5: a ResNet has 7)
        stat_model = keras.Model(model.inputs, [layer.input for layer in self.stat_layers]) if self.stat_layers else None
        held = sum(int(np.prod(layer.input.shape[1:])) for layer in self.stat_layers)  # floats an image holds
        self.stat_batch = max(1, min(self.eval_batch, EVAL_BYTES // (4 * max(held, 1))))

        spec = [t.TensorSpec([None, *self.input_shape], self.X.dtype), t.TensorSpec([None], t.int32)]
        probe = (lambda x: self.probe_model(decode(x), training=False)) if self.probe_model else None
        if s.execution == "eager":
            self.chunk, self.evaluate, self.evaluate_batchstats = chunk, evaluate, evaluate_batchstats
            self.probe = probe
            self.stat_inputs = (lambda x: stat_model(pixels(x), training=False)) if stat_model else None
        else:
            self.chunk = t.function(chunk, jit_compile=s.execution == "xla")
            self.evaluate = t.function(evaluate, input_signature=spec)
            self.evaluate_batchstats = t.function(evaluate_batchstats, input_signature=spec)
            self.probe = t.function(probe, input_signature=spec[:1]) if probe else None
            self.stat_inputs = (t.function(lambda x: stat_model(decode(x), training=False), input_signature=spec[:1])
                                if stat_model else None)

    def reset(self, cfg, s) -> None:
        """Give the shared model exactly the state a fresh run with `s.seed` would get."""
        import keras

        with KERAS_LOCK:
            keras.utils.set_random_seed(s.seed)
            fresh, _ = models.build_model(self.variant, cfg, self.input_shape, self.num_classes)
        for v, f in zip(self.model.variables, fresh.variables):
            v.assign(f)
        for v, init in zip(self.optimizer.variables, self.opt_init):
            v.assign(init)
        self.optimizer.learning_rate = s.lr

    def state(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.model.variables] + [v.numpy() for v in self.optimizer.variables]

    def load_state(self, arrays: list[np.ndarray]) -> None:
        variables = list(self.model.variables) + list(self.optimizer.variables)
        if len(arrays) != len(variables):
            raise ValueError(f"checkpoint holds {len(arrays)} arrays, the model needs {len(variables)}")
        for v, a in zip(variables, arrays):
            v.assign(a)

    def score(self, x, y, batchstats: bool = False, batch_size: int = 0) -> tuple[float, float]:
        """Mean loss and accuracy over (x, y) in inference mode (or with norms' batch statistics,
        in batches of `batch_size`, putting their moving statistics back afterwards)."""
        if batchstats:
            saved = [[w.numpy() for w in layer.non_trainable_variables] for layer in self.stat_layers]
            fn, step = self.evaluate_batchstats, batch_size
        else:
            fn, step = self.evaluate, self.eval_batch
        n = int(x.shape[0]) if not batchstats else (int(x.shape[0]) // step) * step
        loss = correct = 0.0
        for s in range(0, n, step):
            l, c = fn(x[s:s + step], y[s:s + step])
            loss, correct = loss + float(l), correct + float(c)
        if batchstats:  # calling a norm in training mode moved its moving statistics: put them back
            for layer, ws in zip(self.stat_layers, saved):
                for w, a in zip(layer.non_trainable_variables, ws):
                    w.assign(a)
        return loss / n, correct / n

    def recalibrate(self, n: int) -> None:
        """Precise BN: each moving-statistics norm's moving mean and variance become the exact mean
        and (population) variance of its input over the first n training images, per channel (over
        N·H·W after a conv), computed with the final weights in inference mode. Layers go in graph
        order, since a layer's input depends on the statistics of the norms before it. Running it
        twice gives the same statistics."""
        for k, layer in enumerate(self.stat_layers):
            (mean, var), = self._moments(self.X[:n], [k])
            layer.moving_mean.assign(np.asarray(mean, np.float32))
            layer.moving_variance.assign(np.asarray(var, np.float32))

    def _moments(self, x, layers) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each stat layer index in `layers`: per channel, the mean and population variance
        (float64) of that layer's input over x, one batch of `stat_batch` images at a time, the
        batches' moments merged (Chan et al.); a single batch gives numpy's own mean and var of it."""
        layers = list(layers)
        parts: list[list] = [[] for _ in layers]
        for s in range(0, int(x.shape[0]), self.stat_batch):
            outs = self.stat_inputs(x[s:s + self.stat_batch])
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            for part, k in zip(parts, layers):
                h = np.asarray(outs[k], dtype=np.float64)
                h = h.reshape(-1, h.shape[-1])
                part.append((h.shape[0], h.mean(axis=0), h.var(axis=0)))
        return [_merged(part) for part in parts]

    def variance_ratios(self, x) -> list[float]:
        """Per moving-statistics norm, in graph order: the variance of its input over `x` in
        inference mode over its moving variance, averaged over channels. 1 when the moving
        statistics describe test time; Li et al. 2019: dropout before BN moves it away from 1.
        Channels with a moving variance of 0 (dead on every image it was estimated on) are left
        out; a layer with none left records None."""
        out = []
        for (_, var), layer in zip(self._moments(x, range(len(self.stat_layers))), self.stat_layers):
            moving = np.asarray(layer.moving_variance.numpy(), np.float64)
            live = moving > 0  # a unit dead on every image it was estimated on has no ratio
            out.append(float(np.mean(var[live] / moving[live])) if live.any() else None)
        return out

    def trace(self, probe_x, units: int) -> dict:
        """Percentiles (per unit, or per channel over N·H·W after a conv), mean and variance of each
        nonlinearity's input on the probe batch."""
        if self.probe is None:
            return {"values": [], "mean": [], "var": []}
        outs = self.probe(probe_x)
        outs = [outs] if not isinstance(outs, (list, tuple)) else outs
        arrays = [np.asarray(o) for o in outs]
        return {
            "values": [np.percentile(a[..., :units].reshape(-1, min(units, a.shape[-1])), PERCENTILES, axis=0).T.tolist()
                       for a in arrays],
            "mean": [float(a.mean()) for a in arrays],
            "var": [float(a.var()) for a in arrays],
        }


class Engine:
    """Compiled programs and device-resident data, shared by the runs of one process.

    A program trains one run at a time. `program()` lends a free one for the run's program key
    and builds another only when every one of that key is busy, so runs trained at once in
    several threads share one Engine and one copy of the data.
    """

    def __init__(self):
        self.programs: dict[str, list[Program]] = {}
        self.tensors: dict[str, tuple] = {}
        self._busy: set[int] = set()  # id() of the programs lent out
        self._lock = threading.Lock()

    @contextmanager
    def program(self, variant, cfg, s, data, key: str):
        t = tf()
        sha = data.source.sha256
        with self._lock:
            if sha not in self.tensors:
                if self._busy:
                    raise RuntimeError("an Engine trains on one dataset at a time")
                self.tensors = {sha: (  # keep one dataset resident at a time: memory stays bounded
                    t.constant(_compact(data.x_train)), t.constant(data.y_train),
                    t.constant(_compact(data.x_test)), t.constant(data.y_test))}
                self.programs = {}  # they were compiled for the previous dataset's tensors
            prog = next((p for p in self.programs.get(key, []) if id(p) not in self._busy), None)
            if prog is not None:
                self._busy.add(id(prog))
            tensors = self.tensors[sha]
        if prog is None:
            prog = Program(variant, cfg, s, tensors, data.num_classes)
            with self._lock:
                self.programs.setdefault(key, []).append(prog)
                self._busy.add(id(prog))
        try:
            yield prog
        finally:
            with self._lock:
                self._busy.discard(id(prog))
