"""Planning runs, apart from executing them.

`plan()` turns an Experiment into RunSpecs (variant x grid point x seed) without touching
TensorFlow or data. `execute()` walks the specs: it reuses finished runs, resumes
interrupted ones, and hands the rest to an executor, one run at a time. LocalExecutor
trains in this process; another executor (a Ray task, say) only has to implement
`run(spec, data, run_dir, record) -> record`.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

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
        return digest([result_dict(self.config), self.variant.name, self.variant.spec(), dataset_sha, __version__])

    @property
    def label(self) -> str:
        return f"{self.variant.name} seed {self.config.seed}" + (f" {self.group}" if self.group else "")


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
    def run(self, spec: RunSpec, data, run_dir: Path, record: dict) -> dict: ...


class LocalExecutor:
    """Trains in this process, sharing compiled programs across runs of the same shape."""

    def __init__(self, progress: Callable | None = None):
        self.engine = None
        self.progress = progress  # progress(spec) -> context manager yielding on_progress

    def run(self, spec: RunSpec, data, run_dir: Path, record: dict) -> dict:
        from .train import Engine, train

        self.engine = self.engine or Engine()
        if self.progress is None:
            return train(spec.config, spec.variant, data, run_dir, record, self.engine)
        with self.progress(spec) as on_progress:
            return train(spec.config, spec.variant, data, run_dir, record, self.engine, on_progress)


@dataclass
class Outcome:
    records: list[dict] = field(default_factory=list)
    trained: int = 0
    reused: int = 0
    resumed: int = 0
    failed: int = 0


def execute(specs: list[RunSpec], source, *, executor: Executor | None = None, reuse: bool = True,
            force: bool = False, retry_failed: bool = False,
            on_event: Callable[[str, RunSpec, dict], None] | None = None) -> Outcome:
    """Run `specs` on the dataset `source` (a data.DataSource); never trains what is done.

    reuse: take a finished (or diverged) run with the same key instead of training.
    force: train anew even so. retry_failed: train again where the last try failed
    (without it a failed run is reported as failed). Interrupted runs are resumed.
    A run that fails is recorded as failed and the batch goes on.
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
    loaded = None
    out = Outcome()
    env = None
    for spec in specs:
        key = spec.key(source.sha256)
        previous = by_key.get(key, [])
        done = [r for r in previous if r["status"] in runs.DONE]
        failed = [r for r in previous if r["status"] == "failed"]
        # a reused run is shown in this batch's sweep cell, whatever batch first made it
        if not force and reuse and done:
            rec = dict(done[-1], reused=True, group=spec.group)
            out.records.append(rec)
            out.reused += 1
            emit("reused", spec, rec)
            continue
        if not force and reuse and failed and not retry_failed:
            rec = dict(failed[-1], reused=True, group=spec.group)
            out.records.append(rec)
            out.failed += 1
            emit("failed-before", spec, rec)
            continue
        if loaded is None:  # decode before claiming a folder: bad data must leave nothing behind
            loaded = data_mod.load(source)
        n = loaded.x_train.shape[0]
        if n // spec.config.batch_size < 1:
            raise UsageError(f"batch_size={spec.config.batch_size} is larger than the {n} training images; lower --batch-size")
        run_dir, lock, resumed = _take_interrupted(previous) if not force else (None, None, False)
        if run_dir is None:
            run_dir = runs.claim(results, spec.variant.name, spec.config.seed)
            lock = runs.Lock(run_dir)
            lock.acquire()
        try:
            env = env or runs.environment()
            record = _base_record(spec, key, run_dir, loaded, env)
            if not resumed:
                runs.write_atomic(run_dir / "config.yaml", _config_yaml(spec))
            emit("resuming" if resumed else "training", spec, record)
            try:
                rec = executor.run(spec, loaded, run_dir, record)
            except (KeyboardInterrupt, Interrupted, UsageError):
                if not (run_dir / "metrics.json").exists():  # stopped before it began: nothing to keep
                    shutil.rmtree(run_dir, ignore_errors=True)
                raise
            except Exception as e:  # one broken run must not sink the batch
                record.update(status="failed", error=f"{type(e).__name__}: {e}".splitlines()[0])
                runs.write_json(run_dir / "metrics.json", record)
                rec = record
                out.failed += 1
                emit("failed", spec, rec)
            else:
                out.resumed += resumed
                out.trained += not resumed
                emit(rec["status"], spec, rec)
            rec["run_dir"] = str(run_dir)
            out.records.append(rec)
        finally:
            lock.release()
    return out


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
