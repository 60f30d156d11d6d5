"""Runs trained on a Ray cluster: `--executor ray`.

The cluster is the one `--ray-address` names (auto, HOST:PORT, ray://...), else $RAY_ADDRESS,
else a new local cluster of `--workers` CPUs that this executor starts and stops (never a stale
one left in /tmp/ray). This module is the only one that imports Ray, and it is imported only when
the ray executor is chosen: `bnexp --help`, `--dry-run` and a batch that reuses every run never
load it.

- start(): the decoded dataset goes to the object store once (`ray.put`); each worker gets it
  from there (zero-copy on the same node) and `run_task` checks its hash against the task's. A
  tiny task on each node first checks that it has the driver's bnexp, TensorFlow and Keras.
- run(): a Ray task of `ray_cpus_per_run` CPUs trains in a temporary folder of its own and sends
  back the run's files (runs.collect_files) with its Result; no worker writes under the results
  folder (the task it gets has no run_dir). Progress and stop go through one small actor (the
  relay): at a chunk boundary (at most every REPORT_EVERY_S) a worker tells its progress and asks
  "should I stop?" in one call; one driver thread polls it for every run in flight, and each
  run's driver thread feeds its Control and wakes as soon as its task ends.
- A worker or node that dies is retried by Ray (BNEXP_RAY_RETRIES, default 2) from the
  checkpoint sent with the task; a Python exception in a run is never retried: it comes back as
  the run's one-line error (WorkerError), the driver records it as failed and the batch goes on.
- Ctrl-C/SIGTERM: every task that began checkpoints at its next chunk boundary and returns as
  interrupted; a task submitted but not begun is cancelled (run() raises KeyboardInterrupt and
  the driver removes its new folder). close() stops the processes of a cluster this executor
  started (ray.shutdown waits for its raylet, GCS and agents) and only disconnects from another.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import ray

from ..errors import RunFailure, UsageError
from . import Result, Task, WorkerError, run_task

RETRIES_ENV = "BNEXP_RAY_RETRIES"  # times Ray retries a run whose worker or node died
DEFAULT_RETRIES = 2
POLL_S = 0.2  # how often the driver looks at progress and stop requests (a task's end wakes it at once)
REPORT_EVERY_S = 0.5  # a worker tells its progress and asks "stop?" at most this often (at a chunk boundary)
# A ray:// connection makes the head's Ray Client proxy fork a server process for this client, and
# that process can die at once (the proxy logs "SpecificServer startup failed"; here 3 of 34
# connections to fresh 2-CPU clusters, each failing after about 41 s). The client then reports one of
# these; bnexp connects again, this many times, a second apart, before it reports the error.
CLIENT_START_FAILED = ("Starting Ray client server failed", "Initialization failure from server")
CLIENT_START_RETRIES = 2


def _client_start_failed(text: str) -> bool:
    return any(m in text for m in CLIENT_START_FAILED)


CONNECT_TIMEOUT_S = 60  # an address that answers no Ray cluster within this is an error (a ray:// client
# session took over 15 s to open on a loaded 2-core machine)
PROBE_TIMEOUT_S = 120  # each node's version check (it may have to start a worker process)
# the driver's environment that workers get (runtime_env): bnexp's own settings and test hooks
FORWARD_ENV = ("TF_CPP_MIN_LOG_LEVEL",)
FORWARD_PREFIX = "BNEXP_"
# test hook: the driver signals itself once a run's relayed progress reaches STEP ("STEP:INT")
SIGNAL_HOOK_ENV = "BNEXP_TEST_RAY_DRIVER_SIGNAL_AT"


# ---------------------------------------------------------------- on the cluster


@ray.remote(num_cpus=0)
class Relay:
    """Progress and stop requests between the workers and the driver, by run id.

    An actor handles one call at a time, so `begin` and `stop` cannot cross: a run stopped
    before it began never begins."""

    def __init__(self):
        self.begun: dict[str, dict] = {}
        self.stopping: set[str] = set()
        self.progress_: dict[str, tuple] = {}
        self.version = 0
        self.changed: dict[str, int] = {}

    def begin(self, run_id: str, where: dict) -> bool:
        if run_id in self.stopping:
            return False
        self.begun[run_id] = where
        return True

    def stop(self, run_id: str) -> dict | None:
        """Ask the run to stop; returns where it began (None: it had not begun, and will not)."""
        self.stopping.add(run_id)
        return self.begun.get(run_id)

    def should_stop(self, run_id: str) -> bool:
        return run_id in self.stopping

    def progress(self, run_id: str, step, total, loss, accuracy) -> None:
        self.version += 1
        self.progress_[run_id] = (step, total, loss, accuracy)
        self.changed[run_id] = self.version

    def report(self, run_id: str, progress: tuple | None) -> bool:
        """A chunk boundary's one call: the run's progress since the last, and whether to stop."""
        if progress is not None:
            self.progress(run_id, *progress)
        return run_id in self.stopping

    def snapshot(self, since: int) -> tuple[int, dict]:
        """(version, {run_id: progress}) for the runs whose progress changed after `since`."""
        return self.version, {r: self.progress_[r] for r, v in self.changed.items() if v > since}

    def where(self, run_id: str) -> dict | None:
        return self.begun.get(run_id)

    def forget(self, run_id: str) -> None:
        for d in (self.begun, self.progress_, self.changed):
            d.pop(run_id, None)
        self.stopping.discard(run_id)


class _RemoteControl:
    """The worker's side of the driver's Control, through the relay: at a chunk boundary the loop
    tells its progress, then asks whether to stop; both go in one call (Relay.report). A relay
    that cannot be reached never fails the run: it trains on, unstopped, without progress."""

    def __init__(self, relay, run_id: str):
        self.relay, self.run_id = relay, run_id
        self.pending: tuple | None = None
        self.last = -REPORT_EVERY_S  # when it last asked
        self.stop = False

    def progress(self, step, total, loss, accuracy) -> None:
        self.pending = (int(step), int(total), float(loss), float(accuracy))

    def should_stop(self) -> bool:
        """At most one call every REPORT_EVERY_S, so that short chunks cannot flood the relay:
        one actor serves every run in flight."""
        now = time.monotonic()
        if self.stop or now - self.last < REPORT_EVERY_S:
            return self.stop
        self.last = now
        pending, self.pending = self.pending, None
        try:
            self.stop = bool(ray.get(self.relay.report.remote(self.run_id, pending), timeout=60))
        except ray.exceptions.RayError:
            pass
        return self.stop


_ENGINE = None  # a worker process's compiled programs and resident data, shared by the runs it trains


def _engine():
    global _ENGINE
    if _ENGINE is None:
        from ..train import Engine, tf

        tf()
        _ENGINE = Engine()
    return _ENGINE


def _where() -> dict:
    ctx = ray.get_runtime_context()
    return {"ray_node_id": ctx.get_node_id(), "ray_worker_pid": os.getpid(), "hostname": socket.gethostname()}


@ray.remote
def _train(task: Task, dataset, relay):
    """One run, in a worker: (kind, value) with kind result | error | usage | cancelled."""
    from .. import runs

    where = _where()
    if not ray.get(relay.begin.remote(task.run_id, where)):
        return "cancelled", None
    try:
        with tempfile.TemporaryDirectory(prefix="bnexp-ray-run-") as work:
            result = run_task(task, _RemoteControl(relay, task.run_id), work, engine=_engine(), dataset=dataset)
            result.files = runs.collect_files(work)
    except UsageError as e:
        return "usage", str(e).splitlines()[0]
    except Exception as e:  # noqa: BLE001 - the run's own failure: the driver records it, Ray does not retry it
        return "error", f"{type(e).__name__}: {e}".splitlines()[0]
    result.env = {**result.env, **where, "ray_version": ray.__version__}
    return "result", result


# A node's versions, pickled by value (its module is not importable) so that a node without
# bnexp still answers, with bnexp None.
_PROBE_SOURCE = '''
def probe():
    import importlib.metadata as md, os, socket
    out = {"hostname": socket.gethostname(), "pid": os.getpid()}
    try:
        import bnexp
        out["bnexp"] = bnexp.__version__
    except Exception:
        out["bnexp"] = None
    for pkg in ("tensorflow", "keras"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
'''


def _probe_function():
    ns = {"__name__": "_bnexp_ray_probe"}
    exec(_PROBE_SOURCE, ns)  # noqa: S102 - fixed source above
    return ns["probe"]


def driver_versions() -> dict:
    from .. import runs

    env = runs.machine()
    return {"bnexp": env["bnexp_version"], "tensorflow": env["tensorflow_version"], "keras": env["keras_version"]}


# ---------------------------------------------------------------- on the driver


def _versions_text(v: dict) -> str:
    return ", ".join(f"{k} {v.get(k) or 'none'}" for k in ("bnexp", "tensorflow", "keras"))


def _forwarded_env() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIX) or k in FORWARD_ENV}


def _retries() -> int:
    raw = os.environ.get(RETRIES_ENV, str(DEFAULT_RETRIES))
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise UsageError(f"{RETRIES_ENV}={raw!r}: give the times Ray may retry a run whose worker died, 0 or more")
    return n


def _check_answers(address: str) -> None:
    """Fail fast, naming the address, when nothing answers there (ray.init would wait minutes)."""
    if address != "auto":  # auto: the address file of a cluster started on this machine (it may be stale)
        hostport = address.split("://", 1)[1] if "://" in address else address
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"--ray-address {address!r}: write auto, HOST:PORT or ray://HOST:PORT")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                pass
        except OSError as e:
            reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__)
            raise RunFailure(f"no Ray cluster answers at {address} ({reason}); start one (`ray start --head`) or "
                             f"fix --ray-address / RAY_ADDRESS") from None
    # check that it is a Ray cluster we can join, in a process we can stop (ray.init may wait minutes)
    code = ("import logging, ray; ray.init(address=%r, log_to_driver=False, logging_level=logging.ERROR); "
            "print('ok', ray.cluster_resources().get('CPU', 0))" % address)
    for attempt in range(1 + CLIENT_START_RETRIES):
        try:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CONNECT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RunFailure(f"no Ray cluster answers at {address} within {CONNECT_TIMEOUT_S} s (is it the cluster's "
                             f"GCS port, e.g. 6379, or ray://HOST:10001?); fix --ray-address / RAY_ADDRESS") from None
        if done.returncode == 0 and "ok" in done.stdout:
            return
        lines = [ln.strip() for ln in (done.stderr or "").splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else f"exit {done.returncode}")
        if not _client_start_failed(done.stderr or "") or attempt == CLIENT_START_RETRIES:
            break
        time.sleep(1.0)  # the head's Ray Client proxy could not start this client's server: ask again
    raise RunFailure(f"cannot connect to the Ray cluster at {address}: {why[:300]}")


def _quiet_ray_logging() -> None:
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)


class _Flight:
    """A run in flight: its task, and its last progress as the driver's pump thread fetched it."""

    def __init__(self, ref):
        self.ref = ref
        self.progress: tuple | None = None


class RayExecutor:
    """Runs as Ray tasks on a cluster; see the module's docstring."""

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None, cpus_per_run: float = 1.0,
                 retries: int | None = None, max_in_flight: int | None = None, runtime_env: dict | None = None):
        self.address = address  # None: start a local cluster of num_cpus CPUs
        self.num_cpus = num_cpus
        self.cpus_per_run = float(cpus_per_run)
        self.retries = _retries() if retries is None else int(retries)
        self.max_in_flight = max_in_flight
        self.runtime_env = runtime_env  # merged into the job's: env_vars from the driver are added
        self.started = False  # this executor started the cluster (and so stops it)
        self.connected = False
        self.slots = 1
        self.nodes: list[dict] = []
        self.cpus = 0.0
        self.line = ""
        self._relay = None
        self._data = None
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()
        self._pump: threading.Thread | None = None
        self._closing = threading.Event()
        self._hook = os.environ.get(SIGNAL_HOOK_ENV)

    # ---- connecting

    @classmethod
    def from_config(cls, cfg, *, say=None) -> "RayExecutor":
        address = cfg.ray_address or os.environ.get("RAY_ADDRESS") or None
        ex = cls(address=address, num_cpus=None if address else cfg.resolved_workers(),
                 cpus_per_run=cfg.ray_cpus_per_run, max_in_flight=(cfg.workers or None) if address else None)
        ex.connect()
        (say or (lambda line: print(line, file=sys.stderr, flush=True)))(ex.line)
        return ex

    def connect(self) -> "RayExecutor":
        """Start or join the cluster; check it can train a run. Raises before any run folder exists."""
        if self.address is None and self.num_cpus is not None and self.num_cpus < self.cpus_per_run:
            raise UsageError(f"a local Ray cluster of {self.num_cpus} CPU{'s' * (self.num_cpus != 1)} (--workers) "
                             f"cannot run a task of {self.cpus_per_run:g} CPUs (--ray-cpus-per-run); raise --workers "
                             f"or lower --ray-cpus-per-run")
        if self.address is not None:
            _check_answers(self.address)
        if ray.is_initialized():
            ray.shutdown()  # another executor's connection in this process (tests, notebooks)
        env = {**_forwarded_env(), **((self.runtime_env or {}).get("env_vars") or {})}
        runtime_env = {**(self.runtime_env or {}), "env_vars": env} if env or self.runtime_env else None
        kwargs = dict(log_to_driver=False, logging_level=logging.ERROR, runtime_env=runtime_env)
        if self.address is None:
            kwargs.update(address="local", num_cpus=self.num_cpus, include_dashboard=False)
        else:
            kwargs.update(address=self.address)  # never num_cpus or object_store_memory: the cluster has its own
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        on_main = threading.current_thread() is threading.main_thread()
        t0 = time.perf_counter()
        tries = 1 + (CLIENT_START_RETRIES if str(self.address).startswith("ray://") else 0)
        try:
            for attempt in range(tries):
                try:
                    ray.init(**kwargs)
                    break
                except Exception as e:  # noqa: BLE001 - Ray raises many kinds
                    if attempt + 1 < tries and _client_start_failed(str(e)):
                        if ray.is_initialized():
                            ray.shutdown()
                        time.sleep(1.0)  # the head could not start this client's server: connect again
                        continue
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    where = ("start a local Ray cluster" if self.address is None
                             else f"connect to the Ray cluster at {self.address}")
                    raise RunFailure(f"could not {where}: {type(e).__name__}: {first}") from None
        finally:
            if on_main:  # ray.init replaces the SIGTERM handler: bnexp holds signals itself while it trains
                for s, h in handlers.items():
                    if h is not None:
                        signal.signal(s, h)
        _quiet_ray_logging()
        self.started, self.connected = self.address is None, True
        self.connect_s = time.perf_counter() - t0
        try:
            self._survey()
        except BaseException:
            self.close()
            raise
        return self

    def _survey(self) -> None:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        self.nodes = nodes
        per_node = [float(n.get("Resources", {}).get("CPU", 0)) for n in nodes]
        self.cpus = sum(per_node)
        fit = sum(int(c // self.cpus_per_run) for c in per_node)
        if fit < 1:
            raise UsageError(f"the Ray cluster has {self.cpus:g} CPUs (at most {max(per_node, default=0):g} on one node), "
                             f"fewer than the {self.cpus_per_run:g} each run asks for (--ray-cpus-per-run); lower "
                             f"--ray-cpus-per-run or add a larger node")
        self.slots = max(1, min(fit, self.max_in_flight or fit))
        if self.started:
            self.line = f"ray: started a local cluster, {self.cpus:g} CPUs"
        else:
            host = ray.get_runtime_context().gcs_address if not str(self.address).startswith("ray://") else self.address
            self.line = (f"ray: connected to {host} ({len(nodes)} node{'s' * (len(nodes) != 1)}, {self.cpus:g} CPUs)")

    # ---- the executor contract

    def start(self, source, dataset) -> None:
        try:
            self._check_versions()
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            try:  # on the driver's node, if it can be (a Ray Client driver has none of its own)
                here = {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                             soft=True)}
            except Exception:  # noqa: BLE001
                here = {}
            self._relay = Relay.options(**here).remote()
            self._data = ray.put(dataset)
            ray.get(self._relay.snapshot.remote(0))  # the relay is up before the first run needs it
        except BaseException:
            self.close()
            raise
        self._pump = threading.Thread(target=self._pump_loop, name="bnexp-ray-pump", daemon=True)
        self._pump.start()

    def _check_versions(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        want = driver_versions()
        probe = ray.remote(_probe_function())
        refs = {}
        for node in self.nodes:
            strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            refs[node["NodeID"]] = probe.options(num_cpus=0, scheduling_strategy=strategy, max_retries=1).remote()
        for node_id, ref in refs.items():
            node = next(n for n in self.nodes if n["NodeID"] == node_id)
            name = f"{node.get('NodeManagerHostname') or node.get('NodeManagerAddress')} (node {node_id[:12]})"
            try:
                have = ray.get(ref, timeout=PROBE_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                raise RunFailure(f"Ray node {name} did not answer bnexp's version check within {PROBE_TIMEOUT_S} s") from None
            except ray.exceptions.RayError as e:
                raise RunFailure(f"Ray node {name} failed bnexp's version check: {_first_line(e)}") from None
            got = {k: have.get(k) for k in want}
            if got != want:
                raise RunFailure(f"Ray node {name} has {_versions_text(got)}; the driver has {_versions_text(want)}; "
                                 f"install the same versions on every node")

    def run(self, task: Task, control) -> Result:
        shipped = dataclasses.replace(task, run_dir=None)  # workers never write in the results folder
        ref = _train.options(num_cpus=self.cpus_per_run, max_retries=self.retries,
                             retry_exceptions=False).remote(shipped, self._data, self._relay)
        return self._follow(task.run_id, ref, control)

    def _follow(self, run_id: str, ref, control) -> Result:
        """Wait for the task `ref` of run `run_id`, relaying its progress and the driver's stop.
        Its end wakes this thread at once (a future Ray completes); it looks at the stop and the
        progress every POLL_S."""
        flight = _Flight(ref)
        with self._lock:
            self._flights[run_id] = flight
        done = ref.future()
        stopping, shown = False, None
        try:
            while True:
                try:
                    kind, value = done.result(timeout=POLL_S)
                    break
                except ray.exceptions.TaskCancelledError:
                    raise KeyboardInterrupt from None
                except ray.exceptions.RayError as e:
                    raise WorkerError(self._died(run_id, e)) from None
                except TimeoutError:  # still training
                    pass
                if not stopping and control.should_stop():
                    stopping = True
                    if ray.get(self._relay.stop.remote(run_id)) is None:  # not begun: it never will
                        ray.cancel(ref)
                        try:
                            ray.get(ref, timeout=10)  # collect the cancellation (else Ray prints it at exit)
                        except Exception:  # noqa: BLE001 - TaskCancelledError, or the task's quick "cancelled"
                            pass
                        raise KeyboardInterrupt
                p = flight.progress
                if p is not None and p != shown:
                    shown = p
                    control.progress(*p)
                    self._signal_hook(p[0])
            if kind == "result":
                return value
            if kind == "usage":
                raise UsageError(value)
            if kind == "cancelled":
                raise KeyboardInterrupt
            raise WorkerError(value)
        finally:
            with self._lock:
                self._flights.pop(run_id, None)
            if self._relay is not None and not self._closing.is_set():
                self._relay.forget.remote(run_id)

    def _died(self, run_id: str, e: BaseException) -> str:
        try:
            where = ray.get(self._relay.where.remote(run_id), timeout=5) or {}
        except Exception:  # noqa: BLE001 - the message is what matters
            where = {}
        at = f" (pid {where['ray_worker_pid']} on {where['hostname']})" if where else ""
        tries = f"after {self.retries} retr{'y' if self.retries == 1 else 'ies'}" if self.retries else "and was not retried"
        return f"the Ray worker training it{at} died {tries}: {type(e).__name__}: {_first_line(e)}"

    def _pump_loop(self) -> None:
        """One driver thread for every run in flight: the relayed progress of all, every POLL_S."""
        version = 0
        while not self._closing.wait(POLL_S):
            with self._lock:
                flights = dict(self._flights)
            if not flights:
                continue
            try:
                version, changed = ray.get(self._relay.snapshot.remote(version), timeout=30)
            except Exception:  # noqa: BLE001 - closing, or the cluster is going: the runs' own waits report it
                continue
            for run_id, p in changed.items():
                if run_id in flights:
                    flights[run_id].progress = p

    def _signal_hook(self, step: int) -> None:
        if self._hook:
            at, _, name = self._hook.partition(":")
            if step >= int(at):
                self._hook = None
                os.kill(os.getpid(), getattr(signal, "SIG" + name.upper().removeprefix("SIG")))

    def close(self) -> None:
        self._closing.set()
        if self._pump is not None:
            self._pump.join(5)
            self._pump = None
        if not self.connected:
            return
        self.connected = False
        self._relay = self._data = None
        if self.started:
            t0 = time.perf_counter()
            try:
                ray.shutdown(wait_for_processes=True)  # its raylet, GCS and agents have exited when this returns
            except TypeError:  # an older Ray
                ray.shutdown()
            self.stop_s = time.perf_counter() - t0
        else:
            ray.shutdown()  # disconnect only: the cluster is someone else's


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__
