"""The Ray executor against real Ray clusters, started and stopped here: a local cluster that bnexp
starts itself (through the CLI, in a subprocess, so that we can watch its processes come and go),
a cluster started outside bnexp (`ray start --head`, one per session), and a two-node
`ray.cluster_utils.Cluster`. No mocks, no network; tiny runs (mnist-sample, 6 steps, width 8).

Metrics are compared with tolerance 0: same machine, same code, same data (checked by hash), same
seeds; a Ray worker runs the same compiled programs as a local thread, in the same order, so the
floats are the same bits (as `--workers 2` equals `--workers 1` in test_train).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import invoke, run_folders

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed: pip install 'bnexp[ray]'")

TINY = ["--dataset", "mnist-sample", "--set", "steps=6", "--set", "width=8", "--set", "eval_every=3"]
SETS = ["steps=6", "width=8", "eval_every=3"]
COMPARE = ["compare", "plain", "bn-pre", "--seeds", "2", *TINY]
METRIC_KEYS = ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "steps", "history")
AUTH = {"RAY_AUTH_MODE": "token"}  # explicit, for every cluster and client here: see `ray_auth`


def _strict(text: str):
    def no(c):
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(text, parse_constant=no)


def _records(results: Path) -> dict[tuple, dict]:
    out = {}
    for m in sorted(Path(results).glob("*/metrics.json")):
        rec = json.loads(m.read_text())
        out[(rec["variant"], rec["seed"])] = rec
    return out


# ---------------------------------------------------------------- processes


def _stat(pid: int):
    """(ppid, session id, start time, state) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text[text.rindex(")") + 2:].split()
    return int(f[1]), int(f[3]), int(f[19]), f[0]


def _all_stats() -> dict[int, tuple]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _stat(int(d))
            if st:
                out[int(d)] = st
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """Every process below `pid`: pid -> (start time, command line)."""
    stats = _all_stats()
    children: dict[int, list[int]] = {}
    for p, st in stats.items():
        children.setdefault(st[0], []).append(p)
    out, todo = {}, [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out[c] = (stats[c][2], _cmdline(c))
            todo.append(c)
    return out


def alive(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[2] == start and st[3] != "Z"


def session_members(sid: int) -> list[int]:
    return [p for p, st in _all_stats().items() if st[1] == sid and st[3] != "Z"]


def _stop_pids(pids, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace`: only processes this file started (by pid)."""
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.time() + grace
    while time.time() < end and any(_stat(p) and _stat(p)[3] != "Z" for p in pids):
        time.sleep(0.1)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str
    pid: int
    seen: dict  # every process seen below the CLI while it ran: pid -> (start time, command line)

    def left(self) -> list[str]:
        """Processes started below the CLI that are still alive (a leaked Ray process)."""
        return [f"{p} {cmd[:120]}" for p, (start, cmd) in self.seen.items() if alive(p, start)]

    def ray_processes(self) -> list[str]:
        return [cmd for _, cmd in self.seen.values() if "raylet" in cmd or "gcs_server" in cmd]


def _remember(seen: dict, now: dict) -> None:
    """Add the processes seen now; keep the last non-empty command line read. (An exiting process
    reads empty; one caught between fork and exec reads its parent's, so the first read may be wrong.)"""
    for p, (start, cmd) in now.items():
        same = p in seen and seen[p][0] == start
        if not same or cmd:
            seen[p] = (start, cmd or "")


def bnexp_cli(args, cwd: Path, env: dict | None = None, timeout: float = 240) -> Ran:
    """The CLI in a subprocess, watching the processes it starts (every 0.1 s)."""
    out, err = cwd / f".out-{time.time_ns()}", cwd / f".err-{time.time_ns()}"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "bnexp.cli", *map(str, args)], stdout=fo, stderr=fe, cwd=cwd,
                                env={**os.environ, **(env or {})})
        seen: dict = {}
        end = time.time() + timeout
        while proc.poll() is None:
            _remember(seen, descendants(proc.pid))
            if time.time() > end:
                proc.kill()
                raise AssertionError(f"bnexp {' '.join(map(str, args))} took over {timeout} s")
            time.sleep(0.1)
    ran = Ran(proc.returncode, out.read_text(), err.read_text(), proc.pid, seen)
    leaked = [p for p, (start, _) in seen.items() if alive(p, start)]
    if leaked:  # fail the test below, but never leave them running
        ran.leaked_then_stopped = ran.left()
        _stop_pids(leaked)
    return ran


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", autouse=True)
def ray_auth():
    """Ray turns token auth on for any cluster once ~/.ray/auth_token exists (any local ray.init
    writes it), and a client must then be in token mode too: set the mode explicitly for every
    process of this file, so that the suite passes the same on the first run and every later one."""
    mp = pytest.MonkeyPatch()
    for k, v in AUTH.items():
        mp.setenv(k, v)
    mp.delenv("RAY_ADDRESS", raising=False)
    yield
    mp.undo()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class External:
    address: str
    sid: int  # the session id of every process of the cluster (`ray start` ran in a new session)
    temp_dir: str
    client_port: int = 0  # its Ray Client server: ray://127.0.0.1:PORT

    def members(self) -> list[int]:
        return session_members(self.sid)


@pytest.fixture(scope="session")
def external():
    """A 2-CPU cluster started outside bnexp, as a user would: `ray start --head`, in a new
    session and its own --temp-dir (so that `auto` elsewhere never finds it), stopped at the end
    by the pids of that session alone."""
    if not HAS_RAY:
        pytest.skip("Ray is not installed")
    temp = tempfile.mkdtemp(prefix="bnexp-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray_bin = Path(sys.executable).with_name("ray")
    client_port = _free_port()
    cmd = [str(ray_bin) if ray_bin.exists() else shutil.which("ray"), "start", "--head", "--port", "0",
           "--num-cpus", "2", "--temp-dir", temp, "--include-dashboard", "false", "--disable-usage-stats",
           "--ray-client-server-port", str(client_port), "--dashboard-agent-listen-port", str(_free_port())]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **AUTH})
    out, _ = proc.communicate(timeout=180)
    ext = External("", proc.pid, temp, client_port)
    try:
        assert proc.returncode == 0, out
        ext.address = (Path(temp) / "ray_current_cluster").read_text().strip()
        yield ext
    finally:
        _stop_pids(ext.members())
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The tiny comparison with `--executor local --workers 1`: what every executor must give."""
    base = tmp_path_factory.mktemp("local")
    res = invoke([*COMPARE, "--executor", "local", "--workers", "1", "--results", base / "results", "--json"])
    assert res.exit_code == 0, res.stderr
    return _records(base / "results")


def _assert_same_metrics(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        for key in METRIC_KEYS:
            assert got[k][key] == want[k][key], (k, key)  # tolerance 0: see the module docstring


# ---------------------------------------------------------------- a local cluster bnexp starts


@pytest.fixture(scope="module")
def on_local_cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("ray-local")
    ran = bnexp_cli([*COMPARE, "--executor", "ray", "--workers", "2", "--results", base / "results", "--json"], base)
    return base, ran


@needs_ray
def test_compare_on_a_local_cluster_equals_local_threads(on_local_cluster, local_reference):
    from bnexp.data import load_dataset
    from bnexp.evaluate import score_saved

    base, ran = on_local_cluster
    assert ran.code == 0, ran.stderr
    assert [ln for ln in ran.stderr.splitlines() if "ray" in ln.lower()] == ["ray: started a local cluster, 2 CPUs"]
    doc = _strict(ran.stdout)  # Ray printed nothing on stdout
    assert (doc["trained"], doc["failed"]) == (4, 0)
    recs = _records(base / "results")
    assert len(recs) == 4 and all(r["status"] == "finished" for r in recs.values())
    sample = load_dataset("mnist-sample")
    for rec in recs.values():
        run = base / "results" / rec["run_id"]
        for f in ("config.yaml", "metrics.json", "model.keras", "checkpoint.npz"):
            assert (run / f).is_file(), f
        assert list((run / "tb").glob("events.out.tfevents.*"))
        # trained by a Ray worker, not by the driver
        assert rec["pid"] != ran.pid and rec["ray_worker_pid"] == rec["pid"] and len(rec["ray_node_id"]) == 56
        assert rec["hostname"] == socket.gethostname()
        loss, acc = score_saved(run / "model.keras", sample.x_test, sample.y_test)
        assert abs(acc - rec["test_accuracy"]) < 1e-4 and abs(loss - rec["test_loss"]) < 1e-4
    _assert_same_metrics(recs, local_reference)
    # the cluster it started is gone: its raylet and GCS were seen, and no process of it is left
    assert any("raylet" in c for c in ran.ray_processes()) and any("gcs_server" in c for c in ran.ray_processes())
    assert not getattr(ran, "leaked_then_stopped", None), ran.leaked_then_stopped


_NO_RAY_PROBE = """
import sys
from typer.testing import CliRunner
from bnexp.cli import app
for args in {runs!r}:
    res = CliRunner().invoke(app, args)
    print(res.exit_code, "ray" in sys.modules, res.stdout.count("reused"), repr(res.stderr[-300:]))
"""


@needs_ray
def test_the_same_command_again_reuses_every_run_without_ray(on_local_cluster, tmp_path):
    """Reusing finished runs, --help and --dry-run never import Ray, so they start no cluster."""
    base, first = on_local_cluster
    assert first.code == 0
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("variants: [plain]\nseeds: 1\ngrid: {lr: [0.001, 0.01]}\n")
    runs_ = [["--help"], ["sweep", str(sweep), "--dry-run", "--executor", "ray", *TINY, "--results", str(base / "results")],
             [*COMPARE, "--executor", "ray", "--workers", "2", "--results", str(base / "results"), "--json"]]
    before = {p: s for p, s in ((p, _stat(p)) for p in map(int, filter(str.isdigit, os.listdir("/proc")))) if s}
    proc = subprocess.Popen([sys.executable, "-c", _NO_RAY_PROBE.format(runs=runs_)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=base)
    seen: dict = {}
    while proc.poll() is None:
        _remember(seen, descendants(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    lines = out.strip().splitlines()
    assert len(lines) == 3, out + err
    for line in lines:
        code, imported = line.split()[:2]
        assert code == "0" and imported == "False", line
    assert "ray:" not in out
    assert not [cmd for _, cmd in seen.values() if "raylet" in cmd or "gcs_server" in cmd]
    assert len(_records(base / "results")) == 4  # nothing trained again
    del before


# ---------------------------------------------------------------- a cluster started outside bnexp


@needs_ray
@pytest.mark.parametrize("form", ["gcs", "client"], ids=["HOST:PORT", "ray-client"])
def test_a_cluster_started_outside_bnexp_by_address_and_json(form, external, local_reference, isolated, tmp_path):
    """--ray-address joins it, as HOST:PORT or through Ray Client (ray://); the runs match local
    threads; --json is strict JSON; the cluster is left running (bnexp only disconnects from a
    cluster it did not start)."""
    members = external.members()
    address = external.address if form == "gcs" else f"ray://127.0.0.1:{external.client_port}"
    res = invoke([*COMPARE, "--executor", "ray", "--ray-address", address, "--results", tmp_path / "r", "--json"])
    assert res.exit_code == 0, res.stderr
    assert f"ray: connected to {address} (1 node, 2 CPUs)" in res.stderr.splitlines()
    doc = _strict(res.stdout)
    assert (doc["trained"], doc["failed"]) == (4, 0)
    recs = _records(tmp_path / "r")
    _assert_same_metrics(recs, local_reference)
    assert all(r["pid"] != os.getpid() for r in recs.values())
    assert set(members) <= set(external.members())  # still up, every process of it


@needs_ray
def test_ray_address_from_the_environment_and_a_worker_that_dies_is_retried(external, isolated, tmp_path, monkeypatch):
    """RAY_ADDRESS names the cluster. A worker that dies at its first chunk boundary (os._exit) is
    retried by Ray and the run finishes; with no retries the run is recorded failed with one line,
    the batch goes on, and --retry-failed trains it."""
    from bnexp.config import load
    from bnexp.executors import build
    from bnexp.plan import execute, plan, resolve_source

    def exp_in(results, seeds):
        return load(None, {"dataset": "mnist-sample", "results": str(results), "variants": ["plain"], "seeds": seeds,
                           "executor": "ray", "ray_cpus_per_run": 2.0}, SETS)  # 2 CPUs a run: one at a time

    monkeypatch.setenv("RAY_ADDRESS", external.address)
    exp = exp_in(tmp_path / "r", [0])
    source = resolve_source(exp)

    monkeypatch.setenv("BNEXP_TEST_CRASH_ONCE", str(tmp_path / "crashed-1"))
    executor = build(exp.config)
    assert executor.address == external.address and executor.slots == 1 and executor.retries == 2
    out = execute(plan(exp), source, executor=executor)
    assert (tmp_path / "crashed-1").exists()  # a worker did die
    assert (out.trained, out.failed) == (1, 0)
    first = out.records[0]

    monkeypatch.setenv("BNEXP_TEST_CRASH_ONCE", str(tmp_path / "crashed-2"))
    monkeypatch.setenv("BNEXP_RAY_RETRIES", "0")
    exp2 = exp_in(tmp_path / "r2", [0, 1])
    out = execute(plan(exp2), source, executor=build(exp2.config))
    assert (out.trained, out.failed) == (1, 1)
    failed = next(r for r in out.records if r["status"] == "failed")
    assert failed["seed"] == 0 and failed["error"].startswith("the Ray worker training it (pid ")
    assert "died and was not retried: WorkerCrashedError" in failed["error"] and "\n" not in failed["error"]

    monkeypatch.delenv("BNEXP_TEST_CRASH_ONCE")
    again = execute(plan(exp2), source)  # builds its executor from the config (RAY_ADDRESS) if it has runs to train
    assert (again.trained, again.reused, again.failed) == (0, 1, 1)  # reported, not retried
    retried = execute(plan(exp2), source, retry_failed=True)
    assert (retried.trained, retried.reused, retried.failed) == (1, 1, 0)
    again_first = next(r for r in retried.records if r["seed"] == 0)
    assert {k: again_first[k] for k in METRIC_KEYS} == {k: first[k] for k in METRIC_KEYS}  # a retry changes nothing


@needs_ray
def test_a_node_with_other_versions_is_refused_before_any_run(external, tmp_path):
    """A node whose bnexp differs (here: another bnexp that the workers import first, shipped as
    the job's working_dir) is one line naming the node and both sets of versions (exit 1), before
    a run folder exists."""
    from bnexp.errors import RunFailure
    from bnexp.executors.ray import RayExecutor, driver_versions

    fake = tmp_path / "site" / "bnexp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "0.0.1-other"\n')
    ex = RayExecutor(address=external.address, runtime_env={"working_dir": str(fake.parent)}).connect()
    with pytest.raises(RunFailure) as info:
        ex.start(None, None)
    msg = str(info.value)
    want = driver_versions()
    assert "\n" not in msg and msg.startswith("Ray node ") and "bnexp 0.0.1-other" in msg, msg
    assert f"the driver has bnexp {want['bnexp']}, tensorflow {want['tensorflow']}, keras {want['keras']}" in msg
    assert not ex.connected  # start() closed what it opened
    import ray

    assert not ray.is_initialized()


# ---------------------------------------------------------------- bad input, before any folder


def test_no_ray_installed_names_the_extra(tmp_path):
    """Without Ray, --executor ray is one line naming the extra, from the command alone: before
    the data are looked for or TensorFlow is imported (compare, sweep and train)."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("variants: [plain]\nseeds: 1\ngrid: {lr: [0.001, 0.01]}\n")
    tail = ["--executor", "ray", "--results", str(tmp_path / "r")]
    commands = [[*COMPARE, *tail], ["sweep", str(sweep), *TINY, *tail], ["train", "--variant", "plain", *TINY, *tail],
                [*COMPARE, "--executor", "rya", "--results", str(tmp_path / "r")]]  # and a typo, just as early
    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` raises ImportError, as without Ray
            "from typer.testing import CliRunner\nfrom bnexp.cli import app\n"
            f"for args in {commands!r}:\n"
            "    res = CliRunner().invoke(app, args)\n"
            "    print(res.exit_code, 'tensorflow' in sys.modules, res.stderr.strip())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4, out.stdout + out.stderr
    for line, want in zip(lines, ["pip install 'bnexp[ray]'"] * 3 + ["unknown executor 'rya' (did you mean 'ray'?)"]):
        exit_code, tf_loaded, msg = line.split(" ", 2)
        assert (exit_code, tf_loaded) == ("2", "False"), line
        assert msg.startswith("error: ") and want in msg, line
    assert not list((tmp_path / "r").glob("*-s*-*"))


@needs_ray
@pytest.mark.parametrize("case", ["unknown-executor", "no-answer", "too-few-cpus-local", "too-few-cpus-cluster"])
def test_bad_ray_input_is_one_line_before_any_folder(case, external, isolated, tmp_path):
    from conftest import assert_one_error_line

    results = tmp_path / "r"
    closed = _free_port()  # nothing listens there
    args, code, phrases = {
        "unknown-executor": (["--executor", "rya"], 2, ["unknown executor 'rya'", "did you mean 'ray'", "local, process, ray"]),
        "no-answer": (["--executor", "ray", "--ray-address", f"127.0.0.1:{closed}"], 1, [f"127.0.0.1:{closed}"]),
        "too-few-cpus-local": (["--executor", "ray", "--workers", "1", "--ray-cpus-per-run", "2"], 2,
                               ["1 CPU", "2 CPUs", "--ray-cpus-per-run"]),
        "too-few-cpus-cluster": (["--executor", "ray", "--ray-address", external.address, "--ray-cpus-per-run", "3"], 2,
                                 ["2 CPUs", "the 3 each run asks for", "--ray-cpus-per-run"]),
    }[case]
    t0 = time.time()
    res = invoke([*COMPARE, *args, "--results", results])
    assert_one_error_line(res, code, *phrases)
    assert time.time() - t0 < 30
    assert not [p for p in results.glob("*") if p.is_dir() and p.name[0].isdigit()]  # no run folder claimed
    import ray

    assert not ray.is_initialized()


# ---------------------------------------------------------------- two nodes


@needs_ray
def test_two_nodes_the_worker_node_trains_and_never_writes_in_the_results(tmp_path, isolated):
    """A head with no CPUs and one 2-CPU worker node: every run is trained on the worker node, by a
    process other than the driver, and no process of that node opens, renames or creates anything
    under the results folder (strace on the node's raylet and every worker it starts)."""
    from ray.cluster_utils import Cluster

    from bnexp.config import load
    from bnexp.executors.ray import RayExecutor
    from bnexp.plan import execute, plan, resolve_source

    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    results = tmp_path / "results"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    tracer = None
    try:
        node = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        raylet = node.all_processes["raylet"][0].process.pid
        log = tmp_path / "strace.log"
        pids = [raylet, *descendants(raylet)]
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", str(log), "-e",
                                   "trace=open,openat,creat,rename,renameat,renameat2,mkdir,mkdirat,unlink,unlinkat",
                                   *[a for p in pids for a in ("-p", str(p))]], stderr=subprocess.PIPE)
        time.sleep(1)
        if tracer.poll() is not None:
            why = tracer.stderr.read().decode(errors="replace").strip()
            if "not permitted" in why:  # a container without ptrace (CAP_SYS_PTRACE, yama)
                pytest.skip(f"strace cannot attach here: {why.splitlines()[-1]}")
            raise AssertionError(why)
        exp = load(None, {"dataset": "mnist-sample", "results": str(results), "variants": ["plain"], "seeds": [0, 1]},
                   SETS)
        executor = RayExecutor(address=cluster.address).connect()
        assert (executor.cpus, executor.slots, len(executor.nodes)) == (2, 2, 2)
        out = execute(plan(exp), resolve_source(exp), executor=executor)
        assert out.trained == 2
    finally:
        if tracer is not None:
            tracer.kill()  # the kernel detaches the tracees; they go on
            tracer.wait()
        cluster.shutdown()
    for rec in out.records:
        assert rec["ray_node_id"] == node.node_id and rec["pid"] != os.getpid()
    trace = log.read_text()
    assert "bnexp-ray-run-" in trace and "tfevents" in trace  # the trace saw the workers write their files
    assert str(results) not in trace.replace(str(results) + "/.cache", "")  # ...and nothing under the results


# ---------------------------------------------------------------- Ctrl-C and SIGTERM

# long enough to be stopped mid-run: 1,000 XLA steps with a chunk boundary (and checkpoint) every 10
LONG = ["compare", "plain", "--seeds", "3", "--dataset", "mnist-sample", "--set", "steps=1000", "--set", "width=16",
        "--set", "eval_every=250", "--set", "checkpoint_every=10"]
SIGNAL_AT = "BNEXP_TEST_RAY_DRIVER_SIGNAL_AT"  # the driver signals itself once a run's relayed progress reaches it


def _assert_cut(results: Path) -> dict:
    """Two runs began (2 CPUs) and stopped at a boundary with a checkpoint; the third left no folder."""
    cut = _records(results)
    assert len(cut) == 2, cut
    assert len(run_folders(results)) == 2
    for rec in cut.values():
        assert rec["status"] == "interrupted" and 0 < rec["step"] < 1000
        assert (results / rec["run_id"] / "checkpoint.npz").is_file()
    return cut


@needs_ray
def test_ctrl_c_checkpoints_started_runs_cancels_the_rest_and_stops_the_cluster(tmp_path, external):
    """SIGINT to the driver once a run reached step 100: the runs that began return interrupted
    with a checkpoint, the run not yet started leaves no folder, the CLI exits 130, no process of
    the cluster it started is left, and the same command resumes through Ray (on the session's
    cluster, which saves starting another) to the metrics of an uninterrupted run."""
    whole = invoke([*LONG, "--workers", "1", "--results", tmp_path / "whole", "--json"])
    assert whole.exit_code == 0, whole.stderr
    expected = _records(tmp_path / "whole")
    results = tmp_path / "cut"
    args = [*LONG, "--executor", "ray", "--workers", "2", "--results", results]
    ran = bnexp_cli(args, tmp_path, env={SIGNAL_AT: "100:INT"})
    assert ran.code == 130, ran.stderr
    assert "Traceback" not in ran.stderr and "interrupted by SIGINT" in ran.stderr, ran.stderr
    cut = _assert_cut(results)
    assert ran.ray_processes() and not getattr(ran, "leaked_then_stopped", None), ran.leaked_then_stopped

    again = bnexp_cli([*LONG, "--executor", "ray", "--ray-address", external.address, "--results", results, "--json"],
                      tmp_path)
    assert again.code == 0, again.stderr
    final = _records(results)
    for k, rec in final.items():
        assert rec["status"] == "finished"
        if k in cut:
            assert rec["run_id"] == cut[k]["run_id"] and rec["resumed_from_step"] == cut[k]["step"]
    _assert_same_metrics(final, expected)
    assert not getattr(again, "leaked_then_stopped", None), again.leaked_then_stopped


@needs_ray
def test_sigterm_is_held_by_bnexp_not_by_ray(external, tmp_path):
    """ray.init installs its own SIGTERM handler (exit at once); bnexp puts its own back, so a
    SIGTERM checkpoints the runs in flight like Ctrl-C and exits 143 (here on the outside cluster,
    which stays up)."""
    results = tmp_path / "cut"
    members = external.members()
    ran = bnexp_cli([*LONG, "--executor", "ray", "--ray-address", external.address, "--results", results], tmp_path,
                    env={SIGNAL_AT: "100:TERM"})
    assert ran.code == 143, ran.stderr
    assert "Traceback" not in ran.stderr and "interrupted by SIGTERM" in ran.stderr, ran.stderr
    _assert_cut(results)
    assert set(members) <= set(external.members())


@needs_ray
def test_kill_9_of_the_driver_leaves_folders_that_read_interrupted_and_the_next_run_resumes_them(tmp_path):
    """kill -9 of the driver: the folders of the runs it had handed out say running, their locks
    died with it, so they read as interrupted, and the same command resumes those very folders
    (from step 0: the checkpoints were in the workers' folders). The cluster's raylet and GCS die
    with the driver; Ray's agents outlive it a while, and are stopped here by pid."""
    from bnexp import runs

    results = tmp_path / "r"
    ran = bnexp_cli([*LONG, "--executor", "ray", "--workers", "2", "--results", results], tmp_path,
                    env={SIGNAL_AT: "100:KILL"})
    assert ran.code == -signal.SIGKILL, ran.stderr
    cut = _records(results)
    assert len(cut) == 2 and {r["status"] for r in cut.values()} == {"running"}
    assert {runs.read_record(results / r["run_id"])["status"] for r in cut.values()} == {"interrupted"}
    left = getattr(ran, "leaked_then_stopped", [])
    assert not [p for p in left if "raylet" in p or "gcs_server" in p], left
    again = invoke([*LONG, "--workers", "2", "--results", results, "--json"])
    assert again.exit_code == 0, again.stderr
    final = _records(results)
    assert len(final) == 3 and {r["status"] for r in final.values()} == {"finished"}
    for k, rec in cut.items():
        assert final[k]["run_id"] == rec["run_id"]


_HOLDER = """
import ray, sys, time
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_cpus=2)
class Holder:
    def ready(self):
        return True

h = Holder.remote()
ray.get(h.ready.remote())
print("held", flush=True)
time.sleep(600)
"""


@needs_ray
def test_a_stop_cancels_tasks_the_cluster_has_not_started(external, tmp_path):
    """Another job holds every CPU of the cluster, so bnexp's tasks wait in Ray's queue: Ctrl-C
    cancels them at once (no waiting for CPUs), and their new run folders are removed."""
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, external.address], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, **AUTH})
    try:
        assert holder.stdout.readline().strip() == "held"
        results = tmp_path / "r"
        proc = subprocess.Popen([sys.executable, "-m", "bnexp.cli", *COMPARE, "--executor", "ray", "--ray-address",
                                 external.address, "--results", str(results)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        end = time.time() + 180
        while len(list(results.glob("*/metrics.json"))) < 2:  # two runs handed to Ray (2 CPUs), both queued
            assert proc.poll() is None and time.time() < end, proc.communicate()
            time.sleep(0.05)
        time.sleep(1)
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        _, err = proc.communicate()
        assert time.time() - t0 < 20  # it did not wait for the CPUs
        assert code == 130 and "Traceback" not in err, err
        assert not run_folders(results)  # no run folder is left
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- scale


@needs_ray
def test_a_hundred_runs(external, tmp_path, isolated):
    from bnexp.config import load
    from bnexp.executors.ray import RayExecutor
    from bnexp.plan import execute, plan, resolve_source

    exp = load(None, {"dataset": "mnist-sample", "results": str(tmp_path / "r"), "variants": ["plain"],
                      "seeds": 100}, SETS)
    t0 = time.time()
    out = execute(plan(exp), resolve_source(exp), executor=RayExecutor(address=external.address).connect())
    wall = time.time() - t0
    assert (out.trained, out.failed) == (100, 0)
    recs = _records(tmp_path / "r")
    assert len(recs) == 100 and {r["status"] for r in recs.values()} == {"finished"}
    assert len({r["test_loss"] for r in recs.values()}) > 50  # different seeds, different runs
    assert all(r["pid"] != os.getpid() for r in recs.values())
    print(f"100 runs through Ray in {wall:.1f} s")
