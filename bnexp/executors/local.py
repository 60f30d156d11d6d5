"""Runs trained in this process, in the driver's threads, straight into their run folders."""

from __future__ import annotations

from pathlib import Path

from . import Result, Task, run_task


class LocalExecutor:
    """Threads in this process sharing one Engine (compiled programs) and one decoded dataset."""

    def __init__(self, slots: int = 1):
        self.slots = slots
        self.engine = None
        self.dataset = None

    def start(self, source, dataset) -> None:
        """Import TensorFlow here, before any worker thread: while it loads, stderr points at
        /dev/null (to hide its start-up lines), and other threads' messages would be lost."""
        from ..train import Engine, tf

        tf()
        self.engine = self.engine or Engine()
        self.dataset = dataset

    def run(self, task: Task, control) -> Result:
        return run_task(task, control, Path(task.run_dir), engine=self.engine, dataset=self.dataset)

    def close(self) -> None:
        pass
