"""Step 5 of the pipeline: run folders on disk. This module is the only writer of one.

results/<run-id>/ holds config.yaml, metrics.json, model.keras, checkpoint.npz and tb/.
A folder is claimed with an atomic mkdir and locked (flock) while a process trains in
it; every file is replaced atomically, so a reader sees a whole file or the last one. The
record (metrics.json) is assembled here (`record()`), and its status changes only through
`RunFolder.write()`: running -> finished | diverged | failed | interrupted, interrupted -> running.
Training writes its artifacts (checkpoints, model, TensorBoard files) through the functions
below, into the run folder or, on another machine, into a work folder whose files the driver
then puts into the run folder (`RunFolder.put_files`), metrics.json last.
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
import tempfile
import time
from pathlib import Path
from typing import Iterator

from . import __version__
from .errors import RunFailure, UsageError

SCHEMA = 1  # metrics.json layout version; a newer one is refused, not misread
STATUSES = ("running", "finished", "interrupted", "failed", "diverged")
DONE = ("finished", "diverged")  # outcomes a comparison can use
# status -> the statuses it may become
TRANSITIONS = {None: ("running",), "running": ("finished", "diverged", "failed", "interrupted"),
               "interrupted": ("running",)}

# A run folder's files
METRICS, CONFIG, MODEL, CHECKPOINT, TENSORBOARD, LOCK = "metrics.json", "config.yaml", "model.keras", "checkpoint.npz", "tb", ".lock"
PREVIOUS_CHECKPOINT = "checkpoint.prev.npz"  # the one before the last, kept in case the last is damaged
ARTIFACTS = (MODEL, CHECKPOINT, PREVIOUS_CHECKPOINT, TENSORBOARD)  # what training writes; a worker sends these back


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
    try:  # permission bits do not stop root, a read-only mount or sysfs does: try it
        fd, probe = tempfile.mkstemp(dir=p, prefix=".bnexp-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"results folder {str(p)!r} is not writable ({e.strerror}); "
                         "pass a writable folder with --results") from None
    return p


def data_cache(results: str | Path) -> Path:
    """Where decoded user datasets are cached (data.load's cache_dir): never a run folder."""
    return Path(results) / ".cache" / "data"


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


class RunFolder:
    """A claimed, locked run folder and its record's status."""

    def __init__(self, path: Path, lock: "Lock", status: str | None = None):
        self.path, self.lock, self.status = Path(path), lock, status

    @classmethod
    def claim(cls, results: Path, variant: str, seed: int) -> "RunFolder":
        path = claim(results, variant, seed)
        lock = Lock(path)
        lock.acquire()
        return cls(path, lock)

    @classmethod
    def take(cls, path: str | Path) -> "RunFolder | None":
        """An interrupted run's folder, locked for resuming; None if another process holds it."""
        lock = Lock(Path(path))
        return cls(Path(path), lock, "interrupted") if lock.acquire() else None

    @property
    def name(self) -> str:
        return self.path.name

    def write_config(self, text: str) -> None:
        write_atomic(self.path / CONFIG, text)

    def write(self, record: dict) -> None:
        """Write the record; its status must follow from the last one written (TRANSITIONS)."""
        new = record["status"]
        if new != self.status and new not in TRANSITIONS.get(self.status, ()):
            raise RuntimeError(f"run {self.name}: status {self.status} cannot become {new}")
        write_json(self.path / METRICS, record)
        self.status = new

    def put_files(self, files: dict[str, bytes]) -> None:
        """Files a worker made elsewhere (relative path -> bytes), each written atomically."""
        for rel, data in sorted(files.items()):
            dest = self.path / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise RunFailure(f"refusing to write {rel!r} outside run folder {self.path}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(dest, data)

    def checkpoint(self) -> tuple[bytes | None, str | None]:
        """The checkpoint to resume from, and a note if the last one could not be read."""
        return read_checkpoint(self.path)

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)

    def release(self) -> None:
        self.lock.release()


def record(*, identity: dict, dataset: dict, variant_spec: dict, config: dict, metrics: dict | None = None,
           env: dict | None = None) -> dict:
    """The one place a run record is assembled: identity, dataset provenance, what ran, then the
    metrics, then where it ran (a flat record: `compare` reads it straight into rows)."""
    return {"schema": SCHEMA, **identity, **dataset, "variant_spec": variant_spec, "config": config,
            **(metrics or {}), **(env or {})}


def collect_files(folder: Path) -> dict[str, bytes]:
    """The artifacts training wrote in `folder`, as relative path -> bytes (to send them back)."""
    out = {}
    for name in ARTIFACTS:
        p = Path(folder) / name
        if p.is_file():
            out[name] = p.read_bytes()
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    out[f.relative_to(folder).as_posix()] = f.read_bytes()
    return out


def write_checkpoint(folder: Path, data: bytes) -> None:
    """Replace the checkpoint atomically, keeping the one before as PREVIOUS_CHECKPOINT."""
    folder = Path(folder)
    if (folder / CHECKPOINT).exists():
        os.replace(folder / CHECKPOINT, folder / PREVIOUS_CHECKPOINT)
    write_atomic(folder / CHECKPOINT, data)


def read_checkpoint(folder: Path) -> tuple[bytes | None, str | None]:
    """(bytes, note): the newest checkpoint that can be read. An unreadable one is kept aside,
    renamed, never deleted, and the note says which file it was and what the run resumes from."""
    from .train.checkpoint import readable

    folder = Path(folder)
    notes = []
    for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
        path = folder / name
        if not path.exists():
            continue
        data = path.read_bytes()
        problem = readable(data)
        if problem is None:
            if notes:
                notes.append(f"resuming from the previous checkpoint ({name})")
            return data, "; ".join(notes) or None
        aside = path.with_name(f"{name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        notes.append(f"{path} is unreadable ({problem}); kept as {aside.name}")
    if notes:
        notes.append("no readable checkpoint is left, so the run starts again from step 0")
    return None, "; ".join(notes) or None


def save_model(folder: Path, model) -> None:
    """model.keras, written to a temporary name and renamed, like every other file."""
    path = Path(folder) / MODEL
    tmp = path.with_name(f".{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RunFailure(f"could not write {path}: {e.strerror or e}; free some disk space and run again") from None


def tensorboard_dir(folder: Path) -> Path:
    return Path(folder) / TENSORBOARD


def key_lock(results: Path, key: str) -> "Lock":
    """An exclusive flock on <results>/.keys/<run key>.lock, held while a process trains that key:
    two processes sharing a results folder (parallel CI jobs) then train each key once. The
    empty file stays (unlinking a lock file that another process waits on would let a third in)."""
    folder = Path(results) / ".keys"
    folder.mkdir(exist_ok=True)
    return Lock(folder / f"{key}.lock")


def records_of(results: Path, variant: str, seed: int, key: str) -> list[dict]:
    """The records under `results` with this run key (only folders named for its variant and seed
    are read: a run id holds both)."""
    out = []
    for run in sorted(Path(results).glob(f"*-{variant}-s{seed}-*")):
        if run.is_dir():
            rec = read_record(run)
            if rec.get("run_key") == key:
                out.append(rec)
    return out


class Lock:
    """An exclusive flock on <run>/.lock (or on the file `path` names), held while a process trains there.

    The kernel drops it when the process dies, even by kill -9, so a `running` run
    whose lock can be taken was abandoned and may be resumed.
    """

    def __init__(self, run: Path):
        run = Path(run)
        self.path = run if run.suffix == ".lock" else run / LOCK
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
    """Strict JSON: NaN and infinities become null, so every parser reads it."""
    write_atomic(path, json.dumps(strict(obj), indent=1, allow_nan=False, default=_jsonable))


def strict(value):
    """`value` with every NaN and infinity replaced by None, through dicts, lists and tuples
    (and NumPy scalars), so that it is valid JSON: a diverged run's loss is unknown, and JSON's
    word for unknown is null."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # a NumPy scalar
        try:
            return strict(value.item())
        except (TypeError, ValueError):
            pass
    return value


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
    path = run / METRICS
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
        if run.is_dir() and ((run / METRICS).exists() or (run / CONFIG).exists()):
            yield read_record(run)


def find_run(ref: str, results: str | Path) -> Path:
    """A run given by path, by id, or by a unique id prefix under `results`."""
    p = Path(ref)
    if (p / METRICS).exists() or (p / CONFIG).exists():
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


def machine() -> dict:
    """The machine and process that run this: host, pid, versions, CPU (flat keys)."""
    import importlib.metadata as md

    env = {
        "hostname": platform.node(),
        "pid": os.getpid(),
        "bnexp_version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu(),
        "cpu_count": os.cpu_count(),
    }
    for pkg in ("tensorflow", "keras", "numpy", "scipy"):
        try:
            env[f"{pkg}_version"] = md.version(pkg)
        except md.PackageNotFoundError:
            env[f"{pkg}_version"] = None
    return env


def provenance(argv: list[str] | None = None) -> dict:
    """What the driver was asked: command line, working folder, git state."""
    return {"command": " ".join(_command(argv if argv is not None else sys.argv)), "cwd": os.getcwd(), **_git()}


def environment(argv: list[str] | None = None) -> dict:
    """Where a command ran: machine() and provenance()."""
    return {**machine(), **provenance(argv)}


def _command(argv: list[str]) -> list[str]:
    import shlex

    head = Path(argv[0]).name if argv else "bnexp"
    head = "bnexp" if head in ("cli.py", "__main__.py", "bnexp") else head
    return [head] + [shlex.quote(a) for a in argv[1:]]


def gpu_info() -> str:
    """GPUs TensorFlow sees; "none" without loading TensorFlow where it is not loaded yet."""
    if "tensorflow" not in sys.modules:
        return "none (TensorFlow not loaded)"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return ", ".join(g.name for g in gpus) or "none"


def trainer_environment() -> dict:
    """The environment of the process that trains a run (a worker, on its own machine)."""
    return {**machine(), "gpu": gpu_info()}


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
