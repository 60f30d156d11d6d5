"""Each run in a child process of its own ("spawn": a fresh interpreter), which trains in a
temporary folder and sends back its record and files. It is the executor contract across a
real process boundary: what a remote worker does, on this machine. Slower than `local` (each
child imports TensorFlow and compiles), but a run that crashes its process cannot take the
driver with it."""

from __future__ import annotations

import multiprocessing as mp
import tempfile

from . import Result, Task, WorkerError, run_task


class _ChildControl:
    """The child's side of the driver's Control: a stop event, and progress over a pipe."""

    def __init__(self, stop, conn):
        self.stop, self.conn = stop, conn

    def should_stop(self) -> bool:
        return self.stop.is_set()

    def progress(self, step, total, loss, accuracy) -> None:
        self.conn.send(("progress", (step, total, loss, accuracy)))


def _child(task: Task, stop, conn) -> None:
    from .. import runs

    try:
        with tempfile.TemporaryDirectory(prefix="bnexp-run-") as work:
            result = run_task(task, _ChildControl(stop, conn), work)
            result.files = runs.collect_files(work)
        conn.send(("result", result))
    except BaseException as e:  # noqa: BLE001 - the driver records it as the run's failure
        conn.send(("error", f"{type(e).__name__}: {e}".splitlines()[0]))
    finally:
        conn.close()


class ProcessExecutor:
    def __init__(self, slots: int = 1):
        self.slots = slots
        self.ctx = mp.get_context("spawn")

    def start(self, source, dataset) -> None:
        pass  # each child loads the files itself and checks their hash

    def run(self, task: Task, control) -> Result:
        parent, child = self.ctx.Pipe(duplex=False)
        stop = self.ctx.Event()
        proc = self.ctx.Process(target=_child, args=(task, stop, child), daemon=True)
        proc.start()
        child.close()
        try:
            while True:
                if control.should_stop():
                    stop.set()
                if parent.poll(0.05):
                    try:
                        kind, value = parent.recv()
                    except EOFError:
                        break
                    if kind == "progress":
                        control.progress(*value)
                    elif kind == "result":
                        return value
                    else:
                        raise WorkerError(value)
                elif not proc.is_alive() and not parent.poll():
                    break
            raise WorkerError(f"the worker process (pid {proc.pid}) died with exit code {proc.exitcode}")
        finally:
            proc.join(5)
            parent.close()

    def close(self) -> None:
        pass
