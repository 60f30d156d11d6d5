"""Planning runs, scheduling them, and executing them through an executor.

- `plan()` turns an Experiment into RunSpecs (grid point x variant x seed), without TensorFlow
  or data.
- A spec's keys are derived, never listed: `reads()` runs the spec's builders on a recording
  config (the model's, the normalizer's and the training loop's settings) and the config's
  field roles decide the rest (config.key_dict).
- `schedule()` is pure: for each spec, reuse a finished run, report an earlier failure, resume
  an interrupted run, train, or follow another spec of the batch with the same key. `execute()`
  and `sweep --dry-run` both call it, so they cannot disagree.
- `execute()` is the driver: it checks everything it can before any folder is claimed, claims
  and writes the run folders (through runs.RunFolder), and hands each run to an executor as a
  picklable Task (executors/).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from . import __version__, models, runs
from .config import GRAPH, Config, Experiment, digest, grid_changes, key_dict, resolved
from .errors import BnexpError, RunFailure, UsageError
from .models import Variant, resolve as resolve_variant


@dataclass(frozen=True)
class RunSpec:
    variant: Variant
    config: Config
    group: str = ""  # the sweep cell, e.g. "lr=0.1"; "" in a plain comparison

    def reads(self) -> frozenset[str]:
        return reads(self.variant, self.config)

    def key(self, dataset_sha: str) -> str:
        """Runs with equal keys compute the same thing: the reuse key."""
        return digest([key_dict(self.config, set(self.reads())), self.variant.name, self.variant.spec(), dataset_sha,
                       __version__])

    @property
    def label(self) -> str:
        return f"{self.variant.name} seed {self.config.seed}" + (f" {self.group}" if self.group else "")


_READS: dict = {}


def reads(variant: Variant, cfg: Config) -> frozenset[str]:
    """The config keys a run of `variant` under `cfg` reads: its net's builders and its training
    loop's settings, run on a recording config. Also raises, while planning, the usage errors a
    build would raise (a variant its model cannot build, a group count that does not divide)."""
    from .models.kit import Reads
    from .train.settings import settings

    memo = (variant, tuple(cfg.to_dict().items()))
    if memo not in _READS:
        proxy = Reads(cfg)
        built = models.build_with(models.Kit.recording(), variant, proxy, _PLAN_SHAPE, 10)
        settings(proxy, n_train=cfg.batch_size, moving_stats=bool(built.stat_layers))
        _READS[memo] = frozenset(proxy.read)
    return _READS[memo]


_PLAN_SHAPE = (28, 28, 1)  # builders take the same branches whatever the image size


def plan(exp: Experiment, variants: list[str] | None = None) -> list[RunSpec]:
    """Every run the experiment asks for: grid points x variants x seeds, in that order. Each is
    checked now (its builders run on a recording config), so a bad name or value costs no training."""
    names = variants or exp.variants
    if not names:
        raise UsageError("name at least one variant, e.g. `bnexp compare plain bn-pre`; see `bnexp list`")
    chosen = [resolve_variant(n, exp.define) for n in names]
    keys = list(exp.grid)
    points = list(itertools.product(*(exp.grid[k] for k in keys))) or [()]
    specs = []
    for point in points:
        changes = {}
        for k, v in zip(keys, point):
            changes.update(grid_changes(k, v))
        group = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items())
        for variant in chosen:
            for seed in exp.seeds:
                spec = RunSpec(variant, resolved(exp.config.replace(seed=seed, **changes)), group)
                spec.reads()
                specs.append(spec)
    return specs


# ---------------------------------------------------------------- scheduling (pure)


@dataclass(frozen=True)
class Decision:
    action: str  # reuse | failed-before | resume | train | follow
    record: dict | None = None  # the earlier run reused, that failed, or to resume
    leader: int | None = None  # follow: the index of the spec of this batch that trains the same key

    def status(self) -> str:
        """How `sweep --dry-run` shows it."""
        if self.action in ("reuse", "failed-before"):
            return self.record["status"]
        if self.action == "follow":
            return f"as #{self.leader + 1}"
        return "to resume" if self.action == "resume" else "to train"


def schedule(keys: list[str], previous: dict[str, list[dict]], *, reuse: bool = True, force: bool = False,
             retry_failed: bool = False) -> list[Decision]:
    """What to do for each spec (given by its key), from the records already on disk by key.

    reuse: take a finished (or diverged) run with the same key instead of training. force:
    train anew even so. retry_failed: train again where the last try failed (without it a
    failed run is reported as failed). An interrupted run is resumed. A key that appears twice
    in the batch is trained once: the later specs follow the first.
    """
    out: list[Decision] = []
    leader: dict[str, int] = {}
    skip = reuse and not force
    for i, key in enumerate(keys):
        prev = previous.get(key, [])
        done = [r for r in prev if r["status"] in runs.DONE]
        failed = [r for r in prev if r["status"] == "failed"]
        interrupted = [r for r in prev if r["status"] == "interrupted"]
        if skip and key in leader:
            out.append(Decision("follow", leader=leader[key]))
        elif skip and done:
            out.append(Decision("reuse", done[-1]))
        elif skip and failed and not retry_failed:
            out.append(Decision("failed-before", failed[-1]))
        else:
            leader[key] = i
            out.append(Decision("resume", interrupted[0]) if interrupted and not force else Decision("train"))
    return out


def by_key(results: str | Path, on_broken: Callable[[dict], None] | None = None) -> dict[str, list[dict]]:
    """The records under `results`, by run key (broken folders are reported and never used)."""
    out: dict[str, list[dict]] = {}
    for rec in runs.scan(results):
        if rec["status"] == "broken":
            if on_broken:
                on_broken(rec)
        elif rec.get("run_key"):
            out.setdefault(rec["run_key"], []).append(rec)
    return out


def dry_run(specs: list[RunSpec], source) -> list[dict]:
    """The rows `sweep --dry-run` shows: what execute() would do for each spec. Reads the
    results folder, writes nothing, imports neither TensorFlow nor Ray."""
    if source is None:
        return [{"group": s.group, "variant": s.variant.name, "seed": s.config.seed, "status": "to train"} for s in specs]
    keys = [s.key(source.sha256) for s in specs]
    decisions = schedule(keys, by_key(specs[0].config.results))
    return [{"group": s.group, "variant": s.variant.name, "seed": s.config.seed, "status": d.status()}
            for s, d in zip(specs, decisions)]


# ---------------------------------------------------------------- executing


@dataclass
class Outcome:
    records: list[dict] = field(default_factory=list)
    trained: int = 0
    reused: int = 0
    resumed: int = 0
    failed: int = 0


# float32 arrays a run cannot train without, per weight: the weight, its gradient, the optimizer's slots
ARRAYS_PER_WEIGHT = {"adam": 4, "momentum": 3, "sgd": 2}


def check_fits(spec: RunSpec, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse, before any folder is claimed, a net whose weights alone cannot fit in this machine's
    memory (e.g. a typo in width): a lower bound from the real parameter count (counted from
    shapes, nothing allocated), so that no run that could train is refused."""
    cfg = spec.config
    weights = models.count_params(spec.variant, cfg, input_shape, num_classes)
    need = 4 * weights * ARRAYS_PER_WEIGHT[cfg.optimizer]
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        size_keys = models.family(cfg.model).size_keys
        sizes = ", ".join(f"{k}={getattr(cfg, k)}" for k in size_keys) or f"model {cfg.model}"
        raise UsageError(f"{sizes} makes {weights:.3g} weights: with {cfg.optimizer}'s state they need at least "
                         f"{need / 2**30:,.0f} GB, and this machine has {have / 2**30:.1f} GB; "
                         f"lower --set {' (or '.join(size_keys[:2]) + ')' * (len(size_keys) > 1) or 'the net size'}")


def _check_runs(specs: list[RunSpec], dataset) -> None:
    """What can only be checked once the data are decoded, before any folder is claimed."""
    n = int(dataset.x_train.shape[0])
    seen = set()
    for spec in specs:
        cfg = spec.config
        if n // cfg.batch_size < 1:
            raise UsageError(f"batch_size={cfg.batch_size} is larger than the {n} training images; lower --batch-size")
        models.check(spec.variant, cfg, tuple(dataset.input_shape), dataset.num_classes)
        shape_key = digest([spec.variant.spec(), key_dict(cfg, set(spec.reads()), roles=(GRAPH,))])
        if shape_key not in seen:
            seen.add(shape_key)
            check_fits(spec, tuple(dataset.input_shape), dataset.num_classes)


def execute(specs: list[RunSpec], source, *, executor=None, reuse: bool = True, force: bool = False,
            retry_failed: bool = False, on_event: Callable[[str, RunSpec | None, dict], None] | None = None,
            progress: Callable | None = None, dataset=None) -> Outcome:
    """Run `specs` on the dataset `source` (a data.DataSource); never trains what is done.

    Decisions come from schedule(). Runs to train go to `executor` (default: local threads,
    `workers` at a time), as picklable Tasks; a run's result is the same whichever executor or
    thread trains it. A run that fails is recorded as failed and the batch goes on. Ctrl-C and
    SIGTERM stop every run in flight at its next chunk boundary (each saves a checkpoint) and
    start no new one. `progress(spec)`, if given, is a context manager yielding the run's
    on_progress(step, total, loss, acc). Records come back in the order of `specs`.
    """
    from . import data as data_mod
    from .executors import WorkerError, build
    from .train.signals import Interrupted, PollControl

    emit = on_event or (lambda *a: None)
    results = runs.ensure_results(specs[0].config.results)
    keys = [spec.key(source.sha256) for spec in specs]
    decisions = schedule(keys, by_key(results, lambda rec: emit("broken", None, rec)), reuse=reuse, force=force,
                         retry_failed=retry_failed)
    out = Outcome()
    slots: list[dict | None] = [None] * len(specs)
    todo = [i for i, d in enumerate(decisions) if d.action in ("train", "resume")]
    stopped: list[tuple[int, Path]] = []
    emit("planned", None, {"to_train": len(todo), "runs": len(specs)})
    if todo:
        # decode and check before claiming a folder: bad data or a bad net must leave nothing behind
        dataset = dataset or data_mod.load(source, cache_dir=runs.data_cache(results))
        from .train import tf

        tf()  # quietly, before the memory check's Keras pulls it in
        _check_runs([specs[i] for i in todo], dataset)
        told = set()
        for i in todo:  # nets that will train but cannot learn: said once per variant, on stderr
            for note in models.notes(specs[i].variant, specs[i].config):
                if note not in told:
                    told.add(note)
                    emit("note", specs[i], {"note": note})
        executor = executor or build(specs[0].config)
        provenance = runs.provenance()
        driver = runs.machine()
        counted = threading.Lock()
        executor.start(source, dataset)

        def run_one(i: int, poll) -> None:
            spec, key = specs[i], keys[i]
            keylock = runs.key_lock(results, key)
            while not keylock.acquire():  # another process trains this key: wait, then use its run
                if poll():
                    return
                time.sleep(0.2)
            try:
                _run_one(i, poll, spec, key)
            finally:
                keylock.release()

        def _run_one(i: int, poll, spec: RunSpec, key: str) -> None:
            d = decisions[i]
            if reuse and not force:  # the schedule may be stale: another process may have run the key since
                now = schedule([key], {key: runs.records_of(results, spec.variant.name, spec.config.seed, key)},
                               retry_failed=retry_failed)[0]
                if now.action in ("reuse", "failed-before"):
                    slots[i] = dict(now.record, reused=True, group=spec.group)
                    emit("unqueued", spec, slots[i])
                    with counted:
                        out.reused += now.action == "reuse"
                        out.failed += now.action == "failed-before"
                    emit("reused" if now.action == "reuse" else "failed-before", spec, slots[i])
                    return
                d = now if now.action == "resume" else d
            folder = runs.RunFolder.take(d.record["run_dir"]) if d.action == "resume" else None
            resume = None
            if folder is not None:
                resume, note = folder.checkpoint()
                if note:
                    emit("note", spec, {"note": note, "run_id": folder.name})
            else:
                folder = runs.RunFolder.claim(results, spec.variant.name, spec.config.seed)
                folder.write_config(_config_yaml(spec))
            resumed = resume is not None
            try:
                identity = {"run_id": folder.name, "status": "running", "variant": spec.variant.name,
                            "seed": spec.config.seed, "group": spec.group, "run_key": key}
                base = dict(identity=identity, dataset=dataset.record(), variant_spec=spec.variant.spec(),
                            config=spec.config.to_dict())
                folder.write(runs.record(**base, env={**driver, **provenance}))
                emit("resuming" if resumed else "training", spec, {"run_id": folder.name})
                task = _task(spec, source, folder, resume)
                with (progress(spec) if progress else _null()) as on_progress:
                    control = PollControl(poll, on_progress)
                    try:
                        result = executor.run(task, control)
                    except (KeyboardInterrupt, UsageError) as e:
                        if not resumed:  # stopped before it began: nothing to keep
                            folder.remove()
                        if isinstance(e, KeyboardInterrupt) and poll():
                            return  # a queued run the stop cancelled (ray): the signal decides how the batch ends
                        raise
                    except Exception as e:  # one broken run must not sink the batch
                        error = str(e) if isinstance(e, WorkerError) else f"{type(e).__name__}: {e}"
                        identity["status"] = "failed"
                        rec = runs.record(**base, metrics={"error": error.splitlines()[0]}, env={**driver, **provenance})
                        folder.write(rec)
                        with counted:
                            out.failed += 1
                        emit("failed", spec, rec)
                        slots[i] = {**rec, "run_dir": str(folder.path)}
                        return
                folder.put_files(result.files)
                identity["status"] = result.status
                rec = runs.record(**base, metrics={k: v for k, v in result.metrics.items() if k != "status"},
                                  env={**result.env, **provenance})
                folder.write(rec)
                if result.status == "interrupted":
                    stopped.append((i, folder.path))
                    return
                with counted:
                    out.resumed += resumed
                    out.trained += not resumed
                emit(result.status, spec, rec)
                slots[i] = {**rec, "run_dir": str(folder.path)}
            finally:
                folder.release()

        try:
            signum = _in_threads(run_one, _interleaved([(i, specs[i]) for i in todo]), executor.slots)
        finally:
            executor.close()
        if stopped or signum:
            if stopped:
                raise Interrupted(signum or 2, stopped[0][1], others=len(stopped) - 1)
            raise KeyboardInterrupt
    for i, d in enumerate(decisions):
        if d.action == "reuse" or d.action == "failed-before":
            slots[i] = dict(d.record, reused=True, group=specs[i].group)
        elif d.action == "follow":  # trained once above: shown in its own cell, like a run reused from disk
            slots[i] = dict(slots[d.leader], reused=True, group=specs[i].group) if slots[d.leader] else None
        else:
            continue
        if slots[i] is None:
            continue
        if slots[i]["status"] == "failed":
            out.failed += 1
            emit("failed-before", specs[i], slots[i])
        else:
            out.reused += 1
            emit("reused", specs[i], slots[i])
    out.records = [r for r in slots if r is not None]
    return out


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _task(spec: RunSpec, source, folder, resume):
    from .executors import Task

    return Task(spec=spec, source=source, run_id=folder.name, read=spec.reads(), resume=resume,
                run_dir=str(folder.path))


def _interleaved(todo: list) -> list:
    """Jobs taken in turn from each variant and sweep cell, so that runs training at the same
    time tend to differ in shape and each compiled program is built once."""
    buckets: dict[tuple, list] = {}
    for job in todo:
        buckets.setdefault((job[1].variant.name, job[1].group), []).append(job)
    return [job[0] for row in itertools.zip_longest(*buckets.values()) for job in row if job is not None]


def _in_threads(run_one: Callable, todo: list[int], workers: int) -> int:
    """`run_one(i, poll)` for each job, `workers` at a time. Ctrl-C and SIGTERM are held for the
    whole batch and shared through `poll`: every run in flight saves a checkpoint at its next
    call boundary and no new run starts. The first error is raised once all stop; otherwise
    returns the signal that arrived, or 0."""
    from .train.signals import deferred_signals

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
                    run_one(job, poll)
                except BaseException as e:  # noqa: BLE001 - handed to the main thread
                    errors.append(e)
                    return

        threads = [threading.Thread(target=worker, name=f"bnexp-run-{k}", daemon=True)
                   for k in range(max(1, min(workers, len(todo))))]
        for th in threads:
            th.start()
        for th in threads:
            while th.is_alive():
                # wake up often: a signal that landed in another thread (Rich's refresher) runs its
                # handler only when this thread runs Python, and poll() takes one still pending
                th.join(0.05)
                poll()
        caught = list(poll())
    if errors:
        raise errors[0]
    return caught[0] if caught else 0


def _config_yaml(spec: RunSpec) -> str:
    doc = {"variant": spec.variant.name, "variant_spec": spec.variant.spec(), "group": spec.group, **spec.config.to_dict()}
    return "# fully resolved config of this run (bnexp " + __version__ + ")\n" + yaml.safe_dump(doc, sort_keys=False)


def resolve_source(exp: Experiment):
    """The dataset the experiment names, found and hashed (not decoded). The experiment is left
    as it is: a fallback (mnist -> mnist-sample) is in the source's name and note, and
    `pinned()` gives the config the runs then use."""
    from . import data

    return data.resolve_config(exp.config, user_named=exp.dataset_named)


def pinned(exp: Experiment, source) -> Experiment:
    """The experiment with its config's dataset set to the source actually used: a run made on
    the mnist-sample fallback says so in its config, and is keyed as such."""
    import dataclasses

    if source is None or source.name == exp.config.dataset:
        return exp
    return dataclasses.replace(exp, config=exp.config.replace(dataset=source.name))


__all__ = ["Decision", "Outcome", "RunSpec", "dry_run", "execute", "pinned", "plan", "reads", "resolve_source",
           "schedule", "BnexpError", "RunFailure"]
