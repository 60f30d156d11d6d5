"""Planning runs, apart from executing them.

`plan()` turns an Experiment into RunSpecs (variant x grid point x seed) without touching
TensorFlow or data. `execute()` walks the specs: it reuses finished runs, resumes
interrupted ones, and hands the rest to an executor, `workers` runs at a time. LocalExecutor
trains in this process; another executor (a Ray task, say) only has to implement
`run(spec, data, run_dir, record, poll) -> record`.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import yaml

from . import __version__, runs
from .config import Config, Experiment, digest, grid_changes, result_dict
from .errors import BnexpError, UsageError
from .train import Interrupted
from .variants import Variant, resolve as resolve_variant


@dataclass(frozen=True)
class RunSpec:
    variant: Variant
    config: Config
    group: str = ""  # the sweep cell, e.g. "lr=0.1"; "" in a plain comparison

    def key(self, dataset_sha: str) -> str:
        """Runs with equal keys compute the same thing: the reuse key."""
        return digest([reuse_config(self.config, self.variant), self.variant.name, self.variant.spec(), dataset_sha,
                       __version__])

    @property
    def label(self) -> str:
        return f"{self.variant.name} seed {self.config.seed}" + (f" {self.group}" if self.group else "")


DEFAULTS = Config()


def reuse_config(cfg: Config, variant: Variant) -> dict:
    """The config part of the reuse key: result_dict with each key this run never reads set to
    its default, so that e.g. plain's runs in a sweep over bn_momentum are trained once and
    reused in every cell. Defaults, not deletion: keys of runs made with the defaults stay as
    they were."""
    layers = set(variant.block) | set(variant.head)
    unread = []
    if "bn" not in layers:
        unread += ["bn_momentum", "bn_epsilon", "bn_drop_bias", "bn_recalibrate"]
    if "dropout" not in layers:
        unread.append("dropout")
    if cfg.optimizer != "momentum":
        unread.append("momentum")
    if cfg.initializer != "normal":
        unread.append("init_std")
    if not cfg.traces:
        unread += ["trace_units", "probe_size"]
    return {**result_dict(cfg), **{k: getattr(DEFAULTS, k) for k in unread}}


def plan(exp: Experiment, variants: list[str] | None = None) -> list[RunSpec]:
    """Every run the experiment asks for: grid points x variants x seeds, in that order."""
    names = variants or exp.variants
    if not names:
        raise UsageError("name at least one variant, e.g. `bnexp compare plain bn-pre`; see `bnexp list`")
    resolved = [resolve_variant(n, exp.define) for n in names]
    keys = list(exp.grid)
    points = list(itertools.product(*(exp.grid[k] for k in keys))) or [()]
    specs = []
    for point in points:
        changes = {}
        for k, v in zip(keys, point):
            changes.update(grid_changes(k, v))
        group = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())
        for variant in resolved:
            for seed in exp.seeds:
                specs.append(RunSpec(variant, exp.config.replace(seed=seed, **changes), group))
    return specs


class Executor(Protocol):
    """Trains one run. `execute` may call `run` from several threads at once (`workers`);
    `poll`, when given, lists the signals that arrived: stop at the next safe point.
    An executor may also have `prepare()`, called once in the calling thread before the
    first run when there is something to train."""

    def run(self, spec: RunSpec, data, run_dir: Path, record: dict, poll: Callable | None = None) -> dict: ...


class LocalExecutor:
    """Trains in this process, sharing compiled programs and the data across runs (and
    across the threads that train runs at once)."""

    def __init__(self, progress: Callable | None = None):
        self.engine = None
        self.progress = progress  # progress(spec) -> context manager yielding on_progress

    def prepare(self) -> None:
        """Import TensorFlow here, before any worker thread: while it loads, stderr points at
        /dev/null (to hide its start-up lines), and other threads' messages would be lost."""
        from .train import tf

        tf()

    def run(self, spec: RunSpec, data, run_dir: Path, record: dict, poll: Callable | None = None) -> dict:
        from .train import Engine, train

        self.engine = self.engine or Engine()
        if self.progress is None:
            return train(spec.config, spec.variant, data, run_dir, record, self.engine, poll=poll)
        with self.progress(spec) as on_progress:
            return train(spec.config, spec.variant, data, run_dir, record, self.engine, on_progress, poll=poll)


@dataclass
class Outcome:
    records: list[dict] = field(default_factory=list)
    trained: int = 0
    reused: int = 0
    resumed: int = 0
    failed: int = 0


def execute(specs: list[RunSpec], source, *, executor: Executor | None = None, reuse: bool = True,
            force: bool = False, retry_failed: bool = False,
            on_event: Callable[[str, RunSpec, dict], None] | None = None, workers: int = 1) -> Outcome:
    """Run `specs` on the dataset `source` (a data.DataSource); never trains what is done.

    reuse: take a finished (or diverged) run with the same key instead of training.
    force: train anew even so. retry_failed: train again where the last try failed
    (without it a failed run is reported as failed). Interrupted runs are resumed.
    A run that fails is recorded as failed and the batch goes on.
    workers: how many runs train at the same time, each in its own thread. A run computes
    the same thing whichever thread trains it, so results do not depend on it.
    Records come back in the order of `specs`.
    """
    from . import data as data_mod

    executor = executor or LocalExecutor()
    emit = on_event or (lambda *a: None)
    results = runs.ensure_results(specs[0].config.results)
    by_key: dict[str, list[dict]] = {}
    for rec in runs.scan(results):
        if rec["status"] == "broken":
            emit("broken", None, rec)  # never reused, never touched: say so and go on
        elif rec.get("run_key"):
            by_key.setdefault(rec["run_key"], []).append(rec)
    out = Outcome()
    slots: list[dict | None] = [None] * len(specs)
    todo = []
    leader: dict[str, int] = {}  # key -> the slot of the run in `todo` that computes it
    followers: list[tuple[int, RunSpec, int]] = []  # runs of this batch that compute the same as another
    for i, spec in enumerate(specs):
        key = spec.key(source.sha256)
        previous = by_key.get(key, [])
        if reuse and not force and key in leader:
            followers.append((i, spec, leader[key]))
            continue
        done = [r for r in previous if r["status"] in runs.DONE]
        failed = [r for r in previous if r["status"] == "failed"]
        # a reused run is shown in this batch's sweep cell, whatever batch first made it
        if not force and reuse and done:
            slots[i] = dict(done[-1], reused=True, group=spec.group)
            out.reused += 1
            emit("reused", spec, slots[i])
        elif not force and reuse and failed and not retry_failed:
            slots[i] = dict(failed[-1], reused=True, group=spec.group)
            out.failed += 1
            emit("failed-before", spec, slots[i])
        else:
            todo.append((i, spec, key, previous))
            leader[key] = i
    if todo:
        loaded = data_mod.load(source)  # decode before claiming a folder: bad data must leave nothing behind
        n = loaded.x_train.shape[0]
        for _, spec, _, _ in todo:
            if n // spec.config.batch_size < 1:
                raise UsageError(f"batch_size={spec.config.batch_size} is larger than the {n} training images; "
                                 "lower --batch-size")
            _check_fits(spec.config, int(np.prod(loaded.x_train.shape[1:])))
        env = runs.environment()
        counted = threading.Lock()
        if hasattr(executor, "prepare"):
            executor.prepare()

        def run_one(i: int, spec: RunSpec, key: str, previous: list[dict], poll: Callable | None) -> None:
            run_dir, lock, resumed = _take_interrupted(previous) if not force else (None, None, False)
            if run_dir is None:
                run_dir = runs.claim(results, spec.variant.name, spec.config.seed)
                lock = runs.Lock(run_dir)
                lock.acquire()
            try:
                record = _base_record(spec, key, run_dir, loaded, env)
                if not resumed:
                    runs.write_atomic(run_dir / "config.yaml", _config_yaml(spec))
                emit("resuming" if resumed else "training", spec, record)
                try:
                    rec = executor.run(spec, loaded, run_dir, record, poll)
                except (KeyboardInterrupt, Interrupted, UsageError):
                    if not (run_dir / "metrics.json").exists():  # stopped before it began: nothing to keep
                        shutil.rmtree(run_dir, ignore_errors=True)
                    raise
                except Exception as e:  # one broken run must not sink the batch
                    record.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
                    runs.write_json(run_dir / "metrics.json", record)
                    rec = record
                    with counted:
                        out.failed += 1
                    emit("failed", spec, rec)
                else:
                    with counted:
                        out.resumed += resumed
                        out.trained += not resumed
                    emit(rec["status"], spec, rec)
                rec["run_dir"] = str(run_dir)
                slots[i] = rec
            finally:
                lock.release()

        if workers <= 1 or len(todo) == 1:
            for job in todo:
                run_one(*job, None)
        else:
            _in_threads(run_one, _interleaved(todo), workers)
    for i, spec, lead in followers:  # trained once above: shown in its own cell, like a run reused from disk
        slots[i] = dict(slots[lead], reused=True, group=spec.group)
        if slots[i]["status"] == "failed":
            out.failed += 1
            emit("failed-before", spec, slots[i])
        else:
            out.reused += 1
            emit("reused", spec, slots[i])
    out.records = [r for r in slots if r is not None]
    return out


# float32 arrays a run cannot train without, per weight: the weight, its gradient, the optimizer's slots
ARRAYS_PER_WEIGHT = {"adam": 4, "momentum": 3, "sgd": 2}


def _check_fits(cfg: Config, input_dim: int, classes: int = 10) -> None:
    """Refuse, before any folder is claimed, a net whose weights alone cannot fit in this machine's
    memory (e.g. a typo in width): a lower bound, so that no run that could train is refused."""
    weights = input_dim * cfg.width + (cfg.depth - 1) * cfg.width ** 2 + cfg.width * classes
    need = 4 * weights * ARRAYS_PER_WEIGHT[cfg.optimizer]
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        raise UsageError(f"width={cfg.width}, depth={cfg.depth} makes {weights:.3g} weights: with {cfg.optimizer}'s "
                         f"state they need at least {need / 2**30:,.0f} GB, and this machine has {have / 2**30:.1f} GB; "
                         "lower --set width (or depth)")


def _interleaved(todo: list) -> list:
    """Jobs taken in turn from each variant and sweep cell, so that runs training at the same
    time tend to differ in shape and each compiled program is built once."""
    buckets: dict[tuple, list] = {}
    for job in todo:
        buckets.setdefault((job[1].variant.name, job[1].group), []).append(job)
    return [job for row in itertools.zip_longest(*buckets.values()) for job in row if job is not None]


def _in_threads(run_one: Callable, todo: list, workers: int) -> None:
    """`run_one(*job, poll)` for each job, `workers` at a time. Ctrl-C and SIGTERM are held
    for the whole batch and shared through `poll`: every run in flight saves a checkpoint at
    its next call boundary and no new run starts. The first error is raised once all stop."""
    from .train import deferred_signals

    jobs = iter(todo)
    taking = threading.Lock()
    errors: list[BaseException] = []
    with deferred_signals() as poll:
        def worker() -> None:
            while True:
                with taking:
                    job = None if errors or poll() else next(jobs, None)
                if job is None:
                    return
                try:
                    run_one(*job, poll)
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    errors.append(e)
                    return

        threads = [threading.Thread(target=worker, name=f"bnexp-run-{k}", daemon=True)
                   for k in range(min(workers, len(todo)))]
        for th in threads:
            th.start()
        for th in threads:
            while th.is_alive():
                # wake up often: a signal that landed in another thread (Rich's refresher) runs its
                # handler only when this thread runs Python, and poll() takes one still pending
                th.join(0.05)
                poll()
        stopped = bool(poll())
    cut = [e for e in errors if isinstance(e, Interrupted)]
    if cut:
        raise Interrupted(cut[0].signum, cut[0].run_dir, others=len(cut) - 1)
    if errors:
        raise errors[0]
    if stopped:  # a signal arrived between runs: everything started has finished
        raise KeyboardInterrupt


def _take_interrupted(previous: list[dict]):
    for rec in previous:
        if rec["status"] == "interrupted":
            run_dir = Path(rec["run_dir"])
            lock = runs.Lock(run_dir)
            if lock.acquire():  # another process may be resuming it right now
                has_ckpt = (run_dir / "checkpoint.npz").exists()
                return run_dir, lock, has_ckpt
    return None, None, False


def _base_record(spec: RunSpec, key: str, run_dir: Path, data, env: dict) -> dict:
    """Identity first, then dataset provenance and config; train adds metrics; env last."""
    return {
        "schema": runs.SCHEMA, "run_id": run_dir.name, "status": "running",
        "variant": spec.variant.name, "seed": spec.config.seed, "group": spec.group, "run_key": key,
        **data.record(),
        "variant_spec": spec.variant.spec(), "config": spec.config.to_dict(),
        **env,
    }


def _config_yaml(spec: RunSpec) -> str:
    doc = {"variant": spec.variant.name, "variant_spec": spec.variant.spec(), "group": spec.group, **spec.config.to_dict()}
    return "# fully resolved config of this run (bnexp " + __version__ + ")\n" + yaml.safe_dump(doc, sort_keys=False)


def resolve_source(exp: Experiment):
    """The dataset actually used; the experiment's config is pinned to its name."""
    from . import data

    source = data.resolve(exp.config.dataset, exp.config.data_dir, user_named=exp.dataset_named)
    if source.name != exp.config.dataset:
        exp.config = exp.config.replace(dataset=source.name)
    return source


__all__ = ["RunSpec", "plan", "execute", "LocalExecutor", "Outcome", "resolve_source", "BnexpError"]
