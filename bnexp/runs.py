"""Step 5 of the pipeline: run folders on disk.

results/<run-id>/ holds config.yaml, metrics.json, model.keras, checkpoint.npz and tb/.
A folder is claimed with an atomic mkdir and locked (flock) while a process trains in
it; metrics.json is replaced atomically, so a reader sees a whole record or the last one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from . import __version__
from .errors import RunFailure, UsageError

SCHEMA = 1  # metrics.json layout version; a newer one is refused, not misread
STATUSES = ("running", "finished", "interrupted", "failed", "diverged")
DONE = ("finished", "diverged")  # outcomes a comparison can use


def ensure_results(path: str | Path) -> Path:
    """The results folder, created if needed; UsageError if it is a file or not writable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"results path {str(p)!r} is a file; pass a folder with --results")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create results folder {str(p)!r}: {e.strerror}; pass a writable folder with --results") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"results folder {str(p)!r} is not writable; pass a writable folder with --results")
    return p


def claim(results: Path, variant: str, seed: int) -> Path:
    """A new, empty run folder that no other process can also get."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        run = results / f"{stamp}-{variant}-s{seed}-{secrets.token_hex(3)}"
        try:
            run.mkdir()  # atomic: exactly one process succeeds
            return run
        except FileExistsError:
            continue
        except OSError as e:
            raise RunFailure(f"cannot create a run folder in {str(results)!r}: {e.strerror}") from None
    raise RunFailure(f"could not find a free run id in {results}")


class Lock:
    """An exclusive flock on <run>/.lock, held while a process trains there.

    The kernel drops it when the process dies, even by kill -9, so a `running` run
    whose lock can be taken was abandoned and may be resumed.
    """

    def __init__(self, run: Path):
        self.path = run / ".lock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def is_locked(run: Path) -> bool:
    lock = Lock(run)
    try:
        if lock.acquire():
            lock.release()
            return False
    except OSError:
        return False
    return True


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write via a temporary file and rename: readers never see half a file.

    A full disk or another OSError leaves the old file as it was and raises RunFailure.
    """
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        hint = "free some disk space" if e.errno == errno.ENOSPC else "check the folder's permissions"
        raise RunFailure(f"could not write {path}: {e.strerror or e}; {hint} and run the same command again to resume") from None


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(obj, indent=1, allow_nan=True, default=_jsonable))


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serializable: {type(o).__name__}")


def read_record(run: Path) -> dict:
    """The run's metrics.json; a broken or unreadable one gives status 'broken' and a reason."""
    path = run / "metrics.json"
    base = {"run_id": run.name, "run_dir": str(run)}
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return {**base, "status": "broken", "problem": "no metrics.json"}
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return {**base, "status": "broken", "problem": f"metrics.json is corrupted ({type(e).__name__})"}
    if not isinstance(rec, dict):
        return {**base, "status": "broken", "problem": "metrics.json is not a JSON object"}
    schema = rec.get("schema", 0)
    if not isinstance(schema, int) or isinstance(schema, bool):
        return {**base, "status": "broken", "problem": f"metrics.json has an invalid schema {schema!r}"}
    if schema > SCHEMA:
        return {**base, "status": "broken",
                "problem": f"written by a newer bnexp (schema {rec.get('schema')}, bnexp {rec.get('bnexp_version')}); upgrade bnexp"}
    if rec.get("status") not in STATUSES:
        return {**base, "status": "broken", "problem": f"unknown status {rec.get('status')!r}"}
    if rec["status"] == "running" and not is_locked(run):
        rec["status"] = "interrupted"  # its process died without saying so (kill -9, power loss)
    rec["run_dir"] = str(run)
    return rec


def scan(results: str | Path) -> Iterator[dict]:
    """Every run folder's record under `results`, broken ones included (never raises)."""
    root = Path(results)
    if not root.is_dir():
        return
    for run in sorted(root.iterdir()):
        if run.is_dir() and ((run / "metrics.json").exists() or (run / "config.yaml").exists()):
            yield read_record(run)


def find_run(ref: str, results: str | Path) -> Path:
    """A run given by path, by id, or by a unique id prefix under `results`."""
    p = Path(ref)
    if (p / "metrics.json").exists() or (p / "config.yaml").exists():
        return p
    root = Path(results)
    if (root / ref).is_dir():
        return root / ref
    matches = [d for d in root.iterdir() if d.is_dir() and d.name.startswith(ref)] if root.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"run {ref!r} is ambiguous ({len(matches)} runs start with it); give more of the id")
    raise UsageError(f"run {ref!r} not found as a path or a run id in {str(root)!r}; pass --results or a run folder")


def environment(argv: list[str] | None = None) -> dict:
    """Where a run happened: versions, CPU/GPU, git state, command line (flat keys)."""
    import importlib.metadata as md

    env = {
        "bnexp_version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
        "command": " ".join(_command(argv if argv is not None else sys.argv)),
        "cwd": os.getcwd(),
    }
    for pkg in ("tensorflow", "keras", "numpy", "scipy"):
        try:
            env[f"{pkg}_version"] = md.version(pkg)
        except md.PackageNotFoundError:
            env[f"{pkg}_version"] = None
    env.update(_git())
    return env


def _command(argv: list[str]) -> list[str]:
    import shlex

    head = Path(argv[0]).name if argv else "bnexp"
    head = "bnexp" if head in ("cli.py", "__main__.py", "bnexp") else head
    return [head] + [shlex.quote(a) for a in argv[1:]]


def gpu_info() -> str:
    """GPUs TensorFlow sees (call only where TensorFlow is already imported)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ", ".join(g.name for g in gpus) or "none"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"git_commit": head.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
