"""Step 4 of the pipeline: training one run, fast, resumably, honestly.

`train()` trains a variant on a loaded dataset into a work folder and returns the run's
metrics; it never writes the run record (runs.py does). It writes the run's artifacts —
checkpoints, model.keras, TensorBoard files — through runs.py, which owns the file names.

Honesty: final metrics are computed on the full test and train sets, in inference mode,
from the very weights saved to model.keras.

Nothing lost: a checkpoint (all model and optimizer variables, the step and the partial
history) is written every `checkpoint_every` steps; when the control asks to stop (Ctrl-C,
SIGTERM, a cancelled task), the run saves a checkpoint at the next chunk boundary and returns
with status "interrupted".
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import runs
from ..config import resolved
from ..errors import UsageError
from . import checkpoint
from .checkpoint import LoopState
from .program import EVAL_COLUMNS, KERAS_LOCK, PERCENTILES, Engine, program_key, tf
from .settings import settings
from .signals import Control, fault_hooks


def _perm(seed: int, epoch: int, n: int, steps: int, batch: int) -> np.ndarray:
    """The epoch's batches: the whole set shuffled by (seed, epoch), same for every variant."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[: steps * batch].reshape(steps, batch).astype(np.int32)


def train(cfg, variant, data, workdir: Path, *, read: set[str], engine: Engine | None = None,
          control: Control | None = None, resume: bytes | None = None) -> dict:
    """Train `variant` under `cfg` on the loaded `data`, writing its artifacts into `workdir`.

    `read`: the config keys the run reads (plan.reads), from which its program key follows.
    `resume`: a checkpoint to go on from. Returns the metrics, with `status` finished, diverged
    or interrupted (the control asked to stop; a checkpoint is saved in workdir).
    """
    started = time.perf_counter()
    cfg = resolved(cfg)  # (plan() already did, for runs it planned)
    control = control or Control()
    workdir = Path(workdir)
    n_train = int(data.x_train.shape[0])
    # moving statistics are known once the net is built; the program key does not depend on them
    key = program_key(variant, cfg, read, data.source.sha256)
    engine = engine or Engine()
    s0 = settings(cfg, n_train, moving_stats=False)
    if s0.steps_per_epoch < 1:
        raise UsageError(f"batch_size={cfg.batch_size} is larger than the {n_train} training images; lower --batch-size")
    with engine.program(variant, cfg, s0, data, key) as prog:
        s = settings(cfg, n_train, moving_stats=bool(prog.stat_layers))
        return _train_with(prog, cfg, s, data, workdir, control, resume, started)


def _train_with(prog, cfg, s, data, workdir, control, resume, started) -> dict:
    variant = prog.variant
    t = tf()
    n_train, spe, total, every = int(data.x_train.shape[0]), s.steps_per_epoch, s.total_steps, s.eval_every
    Xe, Ye = prog.Xe, prog.Ye
    metrics: dict = {"steps_total": total, "steps_per_epoch": spe, "eval_every": every,
                     "moving_stat_layers": len(prog.stat_layers)}  # norms that keep moving statistics

    prog.reset(cfg, s)
    st = LoopState(history=[], traces=None)
    if resume is not None:
        st = checkpoint.unpack(resume, prog)
        metrics["resumed_from_step"] = st.step
    if s.traces and st.traces is None:
        st.traces = {"layers": prog.tap_names, "units": list(range(s.trace_units)),
                     "percentiles": list(PERCENTILES), "probe": f"first {s.probe_size} test images",
                     "steps": [], "values": [], "mean": [], "var": [], "mean_drift": [], "var_drift": []}
    probe = prog.Xt[: s.probe_size] if s.traces else None

    def consts(**kw):
        return {k: t.constant(v) for k, v in kw.items()}

    data_args = {"X": prog.X, "Y": prog.Y, "Xe": Xe, "Ye": Ye}
    factor = t.constant(s.divergence_factor)

    # Compile outside the timed loop: a zero-step call traces and compiles without touching state.
    c0 = time.perf_counter()
    perm = t.constant(_perm(s.seed, st.step // spe, n_train, spe, s.batch_size))
    if not prog.compiled and s.execution != "eager":
        args = ({**data_args, "perm": perm},
                {**consts(start=0, count=0, gstep=0, total=total, every=every), "factor": factor},
                consts(ref=-1.0, isl=0.0, isc=0.0))
        with KERAS_LOCK:  # tracing builds Keras state ...
            prog.chunk.get_concrete_function(*args)
        prog.chunk(*args)  # ... XLA's compiling does not: another run may trace meanwhile
        prog.compiled = True
    compile_s = time.perf_counter() - c0

    def eval_point(step: int, train_sums: tuple, test_sums=None) -> dict:
        """Record an eval point: test sums from the chunk's subset eval, or None to score all test images."""
        steps = max(step - st.last_point, 1)
        tl, ta = train_sums[0] / steps, train_sums[1] / (steps * s.batch_size)
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
    loop_start = time.time()
    while st.step < total:
        epoch, pos = divmod(st.step, spe)
        if pos == 0:
            perm = t.constant(_perm(s.seed, epoch, n_train, spe, s.batch_size))
        # one call per epoch (or checkpoint interval); traces are taken in Python, so they end calls too
        nxt = min(total, (st.step // s.checkpoint_every + 1) * s.checkpoint_every, (epoch + 1) * spe,
                  (st.step // every + 1) * every if st.traces is not None else total)
        c = time.perf_counter()
        out = prog.chunk({**data_args, "perm": perm},
                         {**consts(start=pos, count=nxt - st.step, gstep=st.step, total=total, every=every),
                          "factor": factor},
                         consts(ref=st.ref_loss, isl=st.interval_loss, isc=st.interval_correct))
        done = int(out["i"]) - pos
        st.train_time_s += time.perf_counter() - c
        for values in out["rows"].numpy()[: int(out["n_rows"])]:
            row = dict(zip(EVAL_COLUMNS, (float(v) for v in values)))
            eval_point(int(row["step"]), (row["train_loss_sum"], row["train_correct_sum"]),
                       (row["test_loss_sum"], row["test_correct_sum"]))
        st.step += done
        st.ref_loss, st.interval_loss, st.interval_correct = float(out["ref"]), float(out["isl"]), float(out["isc"])
        if bool(out["bad"]):
            diverged = {"diverged_step": st.step, "diverged_loss": float(out["last_loss"]), "first_loss": st.ref_loss}
            break
        recent = st.history[-1] if st.history and st.history[-1]["step"] > st.step - every else None
        since = max(st.step - st.last_point, 1)
        control.progress(st.step, total, recent["train_loss"] if recent else st.interval_loss / since,
                         recent["train_accuracy"] if recent else st.interval_correct / (since * s.batch_size))
        saved = st.step % s.checkpoint_every == 0 and st.step < total
        if saved:
            runs.write_checkpoint(workdir, checkpoint.pack(prog, st))
        fault_hooks(st.step)
        if control.should_stop():
            if not saved:  # (saving this step twice would rotate the one before out)
                runs.write_checkpoint(workdir, checkpoint.pack(prog, st))
            return {**metrics, "status": "interrupted", "step": st.step, "history": st.history}

    loop_end = time.time()
    if s.recalibrate and not diverged:
        if st.moving_avg is None:  # (a checkpoint saved after recalibrating already holds it)
            st.moving_avg = list(prog.score(prog.Xt, prog.Yt))  # what the moving averages score
        metrics.update(test_loss_moving_avg=st.moving_avg[0], test_accuracy_moving_avg=st.moving_avg[1],
                       bn_recalibrated_on=min(s.recalibrate, n_train))
        prog.recalibrate(s.recalibrate)
    final = eval_point(st.step, (st.interval_loss, st.interval_correct))
    train_loss, train_acc = prog.score(prog.X, prog.Y)
    if s.batchstats_eval:
        bl, ba = prog.score(prog.Xt, prog.Yt, batchstats=True, batch_size=s.batch_size)
        metrics.update(test_loss_batchstats=bl, test_accuracy_batchstats=ba)
    if prog.stat_layers and not diverged:
        # test-time input variance over moving variance, per norm layer: the inference gap's signature
        metrics.update(bn_variance_ratio=prog.variance_ratios(prog.Xt))
    with KERAS_LOCK:
        runs.save_model(workdir, prog.model)
    runs.write_checkpoint(workdir, checkpoint.pack(prog, st))

    samples = st.step * s.batch_size
    metrics.update(
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
        history=st.history, traces=st.traces,
    )
    from ..config import IO, role
    from .tensorboard import write_run

    hparams = {"variant": variant.name, "variant_spec": variant.spec(),
               **{k: v for k, v in cfg.to_dict().items() if role(k) != IO}}  # what the run computed, not where it went
    write_run(runs.tensorboard_dir(workdir), st.history, hparams=hparams, metrics=metrics)
    return metrics
