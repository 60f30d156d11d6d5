"""What going through Ray costs per run, on this machine.

    python benchmarks/bench_ray.py            # 60 tiny runs each way, plus the probes: ~10 minutes
    python benchmarks/bench_ray.py --quick    # 20 runs each way, smaller probes

Each measurement runs in a child process of its own, so that one's memory or threads never
count in another's:

  1. batch: N tiny runs (plain, mnist-sample, 6 steps, width 8) through `plan.execute`, with
     local threads (--workers 2) and with the Ray executor on a local cluster it starts (2 CPUs).
     Reported: the batch's wall time; the runs' own time (each record's wall_time_s, measured
     inside train() where the run trained); the steady-state slot-seconds a run takes (over the
     second half of the batch, when every worker is warm: its TensorFlow imported, its programs
     compiled) and, over the run's own time, the overhead per run; the first run's latency; the
     driver's CPU time and peak RSS (ru_maxrss: TensorFlow and the decoded data included, since
     the driver decodes and checks them), its RSS growth over the batch; the cluster's processes
     (count and peak RSS); the cluster's start and stop times; a run's files sent back (bytes).
  2. inflight: the driver's cost per run in flight. K tasks that only sleep (an async actor holds
     them, so there are no K worker processes) are followed by the executor's real code
     (RayExecutor._follow: one driver thread per run, woken by the task's end or every 0.2 s to
     look at the stop and the progress; one pump thread fetching all progress); the driver's CPU
     over a 10 s window, for K = 100 and 1,000 (3,000 with --full-inflight). Also the relay
     actor's capacity (progress posts per second from one caller, a report's round trip, reports
     per second from 8 processes at once) and what the CLI's
     display costs with K bars (one Rich refresh; Rich refreshes 10 times a second).
  3. driver: the driver alone: 1,000 runs through the real plan.execute and
     RayExecutor whose tasks return a real tiny run's Result at once instead of training.
  4. scan: a results folder of N finished runs (copies of one real record): plan.by_key (one full
     scan, once per batch) and runs.records_of (one per run the batch trains: a glob of the
     folder), for N = 1,000 and 10,000.

Writes everything to benchmarks/bench-ray-last-run.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SETS = ["steps=6", "width=8", "eval_every=3"]


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                text = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(text[text.rindex(")") + 2:].split()[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class _ClusterWatch(threading.Thread):
    """Samples the processes below this one (a local Ray cluster's) every 0.5 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kb, self.peak_n, self.stop = 0, 0, threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            pids = _descendants(os.getpid())
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in pids))
            self.peak_n = max(self.peak_n, len(pids))


# ---------------------------------------------------------------- 1. a batch


def batch(mode: str, n: int) -> dict:
    from bnexp import data, runs
    from bnexp.config import load
    from bnexp.executors.local import LocalExecutor
    from bnexp.plan import execute, plan, resolve_source
    from bnexp.train import tf

    results = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    exp = load(None, {"dataset": "mnist-sample", "results": str(results), "variants": ["plain"], "seeds": n,
                      "workers": 2, "executor": mode}, SETS)
    specs, source = plan(exp), resolve_source(exp)
    dataset = data.load(source)
    tf()
    out: dict = {"mode": mode, "runs": n}
    watch = _ClusterWatch()
    if mode == "ray":
        from bnexp.executors.ray import RayExecutor

        executor = RayExecutor.from_config(exp.config, say=lambda line: None)
        out["cluster_start_s"] = executor.connect_s
        time.sleep(2)
        pids = _descendants(os.getpid())
        out["cluster_idle_processes"] = len(pids)
        out["cluster_idle_rss_mb"] = sum(_rss_kb(p) for p in pids) / 1024
        watch.start()
    else:
        executor = LocalExecutor(2)
    finished: list[float] = []
    rss: list[int] = []

    def on_event(kind, spec, rec):
        if kind == "finished":
            finished.append(time.perf_counter())
            rss.append(_rss_kb(os.getpid()))

    rss0 = _rss_kb(os.getpid())
    cpu0, t0 = time.process_time(), time.perf_counter()
    res = execute(specs, source, executor=executor, dataset=dataset, on_event=on_event)
    wall = time.perf_counter() - t0
    out["driver_cpu_s"] = time.process_time() - cpu0
    watch.stop.set()
    assert res.trained == n and res.failed == 0, (res.trained, res.failed)
    recs = sorted(res.records, key=lambda r: r["train_start_unix"])
    own = [r["wall_time_s"] for r in recs]
    half = n // 2
    steady_s = finished[-1] - finished[half - 1]  # the runs finished after the first half
    steady_runs = n - half
    slots = executor.slots
    files = [sum(f.stat().st_size for f in (results / r["run_id"]).rglob("*") if f.is_file()
                 and f.name not in (runs.METRICS, runs.CONFIG, runs.LOCK)) for r in recs]
    out.update(
        slots=slots, wall_s=wall, first_run_latency_s=finished[0] - t0,
        runs_own_wall_s_total=sum(own), runs_own_wall_s_mean=sum(own) / n,
        runs_train_s_mean=sum(r["train_time_s"] for r in recs) / n,
        steady_slot_s_per_run=steady_s * slots / steady_runs,
        steady_own_s_per_run=sum(own[half:]) / steady_runs,  # the runs that started last
        driver_peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        driver_rss_growth_mb=(_rss_kb(os.getpid()) - rss0) / 1024,
        # the driver's RSS slope once warm: over the second half of the batch, per run
        driver_rss_kb_per_run_steady=(rss[-1] - rss[half - 1]) / steady_runs,
        run_files_kb_mean=sum(files) / n / 1024,
        record_kb_mean=sum((results / r["run_id"] / runs.METRICS).stat().st_size for r in recs) / n / 1024,
        dataset_mb=sum(a.nbytes for a in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test)) / 2**20,
    )
    out["steady_overhead_s_per_run"] = out["steady_slot_s_per_run"] - out["steady_own_s_per_run"]
    out["steady_ratio"] = out["steady_slot_s_per_run"] / out["steady_own_s_per_run"]
    if mode == "ray":
        out["cluster_peak_processes"] = watch.peak_n
        out["cluster_peak_rss_mb"] = watch.peak_kb / 1024
        out["cluster_stop_s"] = executor.stop_s
        out["processes_left"] = len(_descendants(os.getpid()))
        out["ray_version"] = __import__("ray").__version__
    shutil.rmtree(results, ignore_errors=True)
    return out


# ---------------------------------------------------------------- 2. runs in flight


def inflight(ks: list[int], window: float = 10.0) -> dict:
    import numpy as np
    import ray

    from bnexp.executors.ray import RayExecutor
    from bnexp.train.signals import Control

    class Dummy:  # start() ships "the data": a small stand-in
        x = np.zeros(10)

    ex = RayExecutor(num_cpus=1).connect()
    ex.start(None, Dummy())

    @ray.remote(num_cpus=0)
    class _Caller:
        def __init__(self, relay):
            self.relay = relay

        def hammer(self, seconds):
            n, end = 0, time.perf_counter() + seconds
            while time.perf_counter() < end:
                ray.get(self.relay.report.remote(f"c{id(self)}", (n, 1, 0.5, 0.5)))
                n += 1
            return n

    @ray.remote(num_cpus=0)
    class Sleeper:
        async def nap(self, s):
            await asyncio.sleep(s)
            return "result", None

    out = {}
    try:
        for k in ks:
            sleeper = Sleeper.options(max_concurrency=k + 10).remote()
            ray.get(sleeper.nap.remote(0))
            refs = [sleeper.nap.remote(window + 20) for _ in range(k)]
            threads = [threading.Thread(target=ex._follow, args=(f"r{i}", ref, Control()), daemon=True)
                       for i, ref in enumerate(refs)]
            for th in threads:
                th.start()
            time.sleep(3)  # all in flight
            cpu0, t0 = time.process_time(), time.perf_counter()
            time.sleep(window)
            cpu = time.process_time() - cpu0
            el = time.perf_counter() - t0
            for th in threads:
                th.join(60)
            out[str(k)] = {"driver_cores": cpu / el, "driver_cores_per_1000_runs": cpu / el / k * 1000,
                           "threads": k + 1}
            ray.kill(sleeper)
        # the relay's capacity: progress posts (no wait) then one call that waits behind them
        m = 20000
        t0 = time.perf_counter()
        for i in range(m):
            ex._relay.progress.remote(f"r{i % 1000}", i, m, 0.5, 0.5)
        ray.get(ex._relay.snapshot.remote(0))
        out["relay_calls_per_s"] = m / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(2000):  # what a worker makes at each chunk boundary: progress and "stop?" in one
            ray.get(ex._relay.report.remote("r1", (i, 2000, 0.5, 0.5)))
        out["relay_round_trip_ms"] = (time.perf_counter() - t0) / 2000 * 1000
        # many callers at once: 8 processes each making report calls for 10 s
        callers = [_Caller.remote(ex._relay) for _ in range(8)]
        counts = ray.get([c.hammer.remote(10.0) for c in callers])
        out["relay_reports_per_s_8_callers"] = sum(counts) / 10.0
    finally:
        ex.close()
    out["progress_bars"] = {str(k): _bars(k) for k in sorted({1, 10, *ks})}
    return out


def _bars(k: int) -> dict:
    """What the CLI's display costs with k runs in flight: one Rich bar per run, as cli._progress_bars."""
    import io

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=io.StringIO(), force_terminal=True, width=160, height=50)
    bars = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                    TimeRemainingColumn(), console=console, auto_refresh=False)
    tasks = [bars.add_task(f"plain seed {i}", total=None, detail="") for i in range(k)]
    with bars:
        for t in tasks:
            bars.update(t, completed=10, total=1000, detail="step 10/1000 loss 0.5000 acc 0.500")
        t0 = time.perf_counter()
        for _ in range(10):
            bars.refresh()
        per = (time.perf_counter() - t0) / 10
    return {"refresh_ms": per * 1000, "cores_at_10_per_s": per * 10}


# ---------------------------------------------------------------- 3. the driver alone


def driver(n: int) -> dict:
    """N runs through the real plan.execute and RayExecutor, but each task returns at once a
    Result like a real tiny run's (its metrics, and files of the same sizes) instead of
    training: the driver's own cost per run, and whether its memory keeps growing."""
    import ray

    from bnexp import data, runs
    from bnexp.config import load
    from bnexp.executors import Result
    from bnexp.executors import ray as rayexec
    from bnexp.executors.local import LocalExecutor
    from bnexp.plan import execute, plan, resolve_source
    from bnexp.train import tf

    base = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    one = load(None, {"dataset": "mnist-sample", "results": str(base / "one"), "variants": ["plain"], "seeds": 1}, SETS)
    template = execute(plan(one), resolve_source(one), executor=LocalExecutor(1)).records[0]
    run_dir = Path(template["run_dir"])
    files = {f.relative_to(run_dir).as_posix(): f.read_bytes() for f in run_dir.rglob("*")
             if f.is_file() and f.name not in (runs.METRICS, runs.CONFIG, runs.LOCK)}
    metrics = {k: template[k] for k in ("test_accuracy", "test_loss", "train_accuracy", "train_loss", "steps",
                                        "history", "wall_time_s", "train_time_s")}
    env = runs.trainer_environment()

    @ray.remote
    def stub(task, dataset, relay):
        ray.get(relay.begin.remote(task.run_id, {}))
        relay.progress.remote(task.run_id, 6, 6, 0.5, 0.5)
        return "result", Result({**metrics, "status": "finished"}, dict(env), dict(files))

    exp = load(None, {"dataset": "mnist-sample", "results": str(base / "r"), "variants": ["plain"], "seeds": n,
                      "workers": 2, "executor": "ray"}, SETS)
    specs, source = plan(exp), resolve_source(exp)
    dataset = data.load(source)
    tf()
    executor = rayexec.RayExecutor.from_config(exp.config, say=lambda line: None)
    real, rayexec._train = rayexec._train, stub
    marks: list[tuple[float, int, float]] = []
    lock = threading.Lock()

    def on_event(kind, spec, rec):
        if kind == "finished":
            with lock:
                marks.append((time.perf_counter(), _rss_kb(os.getpid()), time.process_time()))

    try:
        t0 = time.perf_counter()
        res = execute(specs, source, executor=executor, dataset=dataset, on_event=on_event)
        wall = time.perf_counter() - t0
    finally:
        rayexec._train = real
    assert res.trained == n, res.trained
    q = n // 4
    (ta, ra, ca), (tb, rb, cb) = marks[q - 1], marks[-1]
    out = {"runs": n, "wall_s": wall, "slot_s_per_run": (tb - ta) * executor.slots / (n - q),
           "driver_cpu_ms_per_run": (cb - ca) / (n - q) * 1000,
           "rss_kb_per_run_after_first_quarter": (rb - ra) / (n - q),
           "rss_mb_at": {str(i + 1): marks[i][1] / 1024 for i in (q - 1, n // 2 - 1, n - 1)},
           "files_kb": sum(map(len, files.values())) / 1024}
    shutil.rmtree(base, ignore_errors=True)
    return out


# ---------------------------------------------------------------- 4. scanning the results folder


def scan(sizes: list[int]) -> dict:
    from bnexp import plan as plan_mod
    from bnexp import runs
    from bnexp.config import load
    from bnexp.executors.local import LocalExecutor
    from bnexp.plan import execute, plan, resolve_source

    base = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    exp = load(None, {"dataset": "mnist-sample", "results": str(base / "one"), "variants": ["plain"], "seeds": 1},
               SETS)
    rec = execute(plan(exp), resolve_source(exp), executor=LocalExecutor(1)).records[0]
    src = Path(rec["run_dir"])
    metrics, config = (src / runs.METRICS).read_text(), (src / runs.CONFIG).read_text()
    doc = json.loads(metrics)
    out = {"record_kb": len(metrics) / 1024}
    for n in sizes:
        results = base / f"n{n}"
        results.mkdir()
        t0 = time.perf_counter()
        for i in range(n):
            run = results / f"20260101-000000-plain-s{i}-{i:06x}"
            run.mkdir()
            (run / runs.METRICS).write_text(json.dumps({**doc, "run_id": run.name, "seed": i, "run_key": f"k{i}"}))
            (run / runs.CONFIG).write_text(config)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        found = plan_mod.by_key(results)
        full = time.perf_counter() - t0
        assert len(found) == n
        picks = list(range(0, n, max(1, n // 50)))
        t0 = time.perf_counter()
        for i in picks:
            assert len(runs.records_of(results, "plain", i, f"k{i}")) == 1
        per = (time.perf_counter() - t0) / len(picks)
        out[str(n)] = {"make_s": made, "by_key_s": full, "records_of_s": per,
                       "records_of_for_every_run_s": per * n}
    shutil.rmtree(base, ignore_errors=True)
    return out


# ---------------------------------------------------------------- driver


def _child(args: list[str], timeout: float = 3600) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--full-inflight", action="store_true", help="also 3,000 runs in flight")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "batch":
            res = batch(rest[0], int(rest[1]))
        elif kind == "inflight":
            res = inflight([int(k) for k in rest])
        elif kind == "driver":
            res = driver(int(rest[0]))
        else:
            res = scan([int(k) for k in rest])
        print(json.dumps(res))
        return
    from rich.console import Console
    from rich.table import Table

    n = a.runs or (20 if a.quick else 60)
    load0 = os.getloadavg()
    out = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.node(),
           "cpus": os.cpu_count(), "loadavg_before": load0, "python": platform.python_version()}
    out["local"] = _child(["batch", "local", str(n)])
    out["ray"] = _child(["batch", "ray", str(n)])
    ks = [100] if a.quick else [100, 1000] + ([3000] if a.full_inflight else [])
    out["inflight"] = _child(["inflight", *map(str, ks)])
    out["driver"] = _child(["driver", "200" if a.quick else "1000"])
    out["scan"] = _child(["scan", *(["1000"] if a.quick else ["1000", "10000"])])
    out["loadavg_after"] = os.getloadavg()
    (HERE / "bench-ray-last-run.json").write_text(json.dumps(out, indent=1) + "\n")

    c = Console()
    t = Table(title=f"{n} tiny runs, 2 at a time (load average {load0[0]:.1f} before, {out['loadavg_after'][0]:.1f} after)")
    for col in ("", "local threads", "ray (local cluster)"):
        t.add_column(col, justify="right")
    rows = [("batch wall s", "wall_s", "{:.1f}"), ("first run latency s", "first_run_latency_s", "{:.1f}"),
            ("a run's own wall s (steady)", "steady_own_s_per_run", "{:.3f}"),
            ("slot-seconds per run (steady)", "steady_slot_s_per_run", "{:.3f}"),
            ("overhead s per run (steady)", "steady_overhead_s_per_run", "{:.3f}"),
            ("slot time / run's own time", "steady_ratio", "{:.2f}"),
            ("driver CPU s", "driver_cpu_s", "{:.1f}"), ("driver peak RSS MB", "driver_peak_rss_mb", "{:.0f}"),
            ("driver RSS growth MB", "driver_rss_growth_mb", "{:.1f}"),
            ("driver RSS KB per run (steady)", "driver_rss_kb_per_run_steady", "{:.0f}"),
            ("run files sent back KB", "run_files_kb_mean", "{:.0f}")]
    for label, key, fmt in rows:
        t.add_row(label, fmt.format(out["local"][key]), fmt.format(out["ray"][key]))
    c.print(t)
    r = out["ray"]
    c.print(f"cluster: start {r['cluster_start_s']:.1f} s, stop {r['cluster_stop_s']:.1f} s, idle "
            f"{r['cluster_idle_processes']} processes {r['cluster_idle_rss_mb']:.0f} MB, peak {r['cluster_peak_processes']} "
            f"processes {r['cluster_peak_rss_mb']:.0f} MB, left after close: {r['processes_left']}")
    for k, v in out["inflight"].items():
        if not k.isdigit():
            continue
        c.print(f"{k} runs in flight: the driver uses {v['driver_cores']:.3f} cores ({v['driver_cores_per_1000_runs']:.3f} per 1,000)")
    d = out["driver"]
    c.print(f"driver alone ({d['runs']} stub runs): {d['slot_s_per_run']:.3f} slot-seconds and {d['driver_cpu_ms_per_run']:.0f} ms "
            f"of driver CPU per run, RSS +{d['rss_kb_per_run_after_first_quarter']:.0f} KB per run after the first quarter")
    i = out["inflight"]
    c.print(f"relay: {i['relay_calls_per_s']:,.0f} progress posts/s from one caller, {i['relay_round_trip_ms']:.2f} ms "
            f"a report, {i['relay_reports_per_s_8_callers']:,.0f} reports/s from 8 callers at once")
    for k, v in i["progress_bars"].items():
        c.print(f"{k} progress bars: {v['refresh_ms']:.1f} ms a refresh ({v['cores_at_10_per_s']:.2f} cores at 10/s)")
    for k, v in out["scan"].items():
        if k != "record_kb":
            c.print(f"results folder of {k} runs: by_key {v['by_key_s']:.2f} s, records_of {v['records_of_s'] * 1000:.1f} ms "
                    f"(x{k} runs: {v['records_of_for_every_run_s']:.0f} s)")


if __name__ == "__main__":
    main()
