"""Ctrl-C and SIGTERM, held while TensorFlow works and handled at chunk boundaries; and the
control object through which a run is asked to stop and reports its progress."""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager


class Control:
    """What a training run asks and tells its driver, at each chunk boundary.

    This one never stops and tells no one; executors pass their own (a thread's share of the
    driver's signals, a pipe to a parent process, a Ray actor), which is why it is an object
    with two methods rather than closures: a remote worker can implement it."""

    def should_stop(self) -> bool:
        return False

    def progress(self, step: int, total: int, loss: float, accuracy: float) -> None:
        pass


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived; every run in flight saved a checkpoint and is marked interrupted."""

    def __init__(self, signum: int, run_dir, others: int = 0):
        self.signum, self.run_dir = signum, run_dir
        if others:  # runs that were training at once
            where = f"checkpoints saved in {run_dir} and {others} more run folder{'s' * (others > 1)}"
            resume = "run the same command again to resume them"
        else:
            where = f"checkpoint saved in {run_dir}"
            resume = f"run the same command again (or `bnexp train --resume {run_dir.name}`) to resume"
        super().__init__(f"interrupted by {signal.Signals(signum).name}; {where}; {resume}")


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


class PollControl(Control):
    """A thread's share of the driver's signals (`poll` from deferred_signals) and its progress bar."""

    def __init__(self, poll=None, on_progress=None):
        self._poll, self._on_progress = poll, on_progress

    def should_stop(self) -> bool:
        return bool(self._poll and self._poll())

    def progress(self, step, total, loss, accuracy) -> None:
        if self._on_progress:
            self._on_progress(step, total, loss, accuracy)


def fault_hooks(step: int) -> None:
    """Deterministic faults for the test suite, set through the environment:
    BNEXP_TEST_SIGNAL_AT="STEP:SIGNAL" sends SIGNAL (INT, TERM, KILL) to this process at the first
    chunk boundary at or after STEP; BNEXP_TEST_CRASH_ONCE=PATH makes the process exit abruptly
    at its first chunk boundary unless PATH exists (it creates PATH first), as a dying worker would."""
    at = os.environ.get("BNEXP_TEST_SIGNAL_AT")
    if at:
        n, _, name = at.partition(":")
        if step >= int(n):
            os.environ.pop("BNEXP_TEST_SIGNAL_AT")  # once
            sig = getattr(signal, "SIG" + name.upper().removeprefix("SIG"))
            if sig == signal.SIGKILL:
                os.kill(os.getpid(), sig)
            # to this thread, which holds it blocked: the poll right after this takes it, so the
            # run stops at exactly this step (sent to the process, a TensorFlow thread may get it)
            signal.pthread_kill(threading.get_ident(), sig)
    crash = os.environ.get("BNEXP_TEST_CRASH_ONCE")
    if crash and not os.path.exists(crash):
        open(crash, "w").close()
        os._exit(3)
