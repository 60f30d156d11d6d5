"""Executors: where runs train. A registry of builders, each `build(cfg) -> Executor`.

The contract crosses processes and machines. The driver (plan.execute) plans, claims and
writes every run folder; an executor only trains:

    executor.start(source, dataset)      once, before the first run (may ship the data)
    executor.run(task, control) -> Result   from `executor.slots` driver threads at once
    executor.close()

A `Task` holds only what can be pickled and sent: the spec, the data's `DataSource` (with its
hash: the worker loads the files and checks them), the keys the run reads, the checkpoint to
resume from, and the run folder's path for an executor on the driver's machine that may write
there directly. `control` (train.signals.Control) is asked "should I stop?" and told the step
and loss at each chunk boundary; an executor that trains elsewhere relays both. A `Result`
holds the metrics, the environment of whoever trained, and the run's files when they were
made elsewhere. An exception from `run` is the run's failure: the driver records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..errors import UsageError, unknown_name


class WorkerError(Exception):
    """A run's own exception, raised where it trained and relayed as its one-line message."""


@dataclass(frozen=True)
class Task:
    spec: object  # plan.RunSpec
    source: object  # data.DataSource
    run_id: str
    read: frozenset  # the config keys the run reads (plan.reads)
    resume: bytes | None = None  # checkpoint to go on from
    run_dir: str | None = None  # the driver's run folder: only for an executor on the same machine


@dataclass
class Result:
    metrics: dict  # what train() returned: status (finished | diverged | interrupted) and the metrics
    env: dict  # the trainer's machine: host, pid, versions, CPU, GPU (runs.trainer_environment)
    files: dict[str, bytes] = field(default_factory=dict)  # run files made elsewhere; {} if written in place

    @property
    def status(self) -> str:
        return self.metrics["status"]


class Executor(Protocol):
    slots: int  # runs it trains at once

    def start(self, source, dataset) -> None: ...

    def run(self, task: Task, control) -> Result: ...

    def close(self) -> None: ...


def run_task(task: Task, control, workdir, *, engine=None, dataset=None) -> Result:
    """Train `task` into `workdir` on this machine: what every executor's worker calls. `dataset`
    is used when it is the task's data (same hash); otherwise the source is loaded and checked."""
    from .. import data, runs
    from ..train import train

    if dataset is None or dataset.source.sha256 != task.source.sha256:
        dataset = data.load(task.source)
    metrics = train(task.spec.config, task.spec.variant, dataset, workdir, read=set(task.read), engine=engine,
                    control=control, resume=task.resume)
    return Result(metrics, runs.trainer_environment())


def _local(cfg):
    """threads in this process, sharing compiled programs and one decoded dataset (the fastest)"""
    from .local import LocalExecutor

    return LocalExecutor(cfg.resolved_workers())


def _process(cfg):
    """a child process per run, which sends back its files: isolation, at the cost of start-up"""
    from .process import ProcessExecutor

    return ProcessExecutor(cfg.resolved_workers())


_NO_RAY = "--executor ray needs Ray: pip install 'bnexp[ray]'"


def _ray(cfg):
    """a Ray cluster (pip install 'bnexp[ray]'): --ray-address, $RAY_ADDRESS, or a new local cluster"""
    try:
        from .ray import RayExecutor
    except ImportError as e:
        if "ray" in str(e):
            raise UsageError(_NO_RAY) from None
        raise
    return RayExecutor.from_config(cfg)


_ray.needs = ("ray", _NO_RAY)  # (module, the line when it is not installed)

EXECUTORS: dict[str, Callable] = {"local": _local, "process": _process, "ray": _ray}


def check(cfg) -> None:
    """What the command alone tells of the executor, before any data or TensorFlow: a known name,
    and the library it needs installed (looked up, not imported: no Ray starts here)."""
    import importlib.util

    if cfg.executor not in EXECUTORS:
        raise unknown_name("executor", cfg.executor, EXECUTORS)
    module, line = getattr(EXECUTORS[cfg.executor], "needs", (None, ""))
    if module is not None and importlib.util.find_spec(module) is None:
        raise UsageError(line)


def build(cfg) -> Executor:
    """The executor `cfg.executor` names."""
    check(cfg)
    return EXECUTORS[cfg.executor](cfg)
