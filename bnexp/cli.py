"""The thin CLI: parse, call one library function, render. TensorFlow loads only to train or eval."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from . import __version__
from .errors import BnexpError, RunFailure, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="bnexp: does batch normalization help here, and where should it go? "
                       "Train, compare and test the batch-norm variants of the lab's MNIST net.")
# TensorFlow's C++ start-up lines (oneDNN, "no CUDA driver") are noise in a CLI; --debug keeps them.
if "--debug" not in sys.argv:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)  # results: tables, JSON, reports
err = Console(stderr=True, highlight=False)  # progress, notes, errors
_debug = False

# ---------------------------------------------------------------- shared options
Config_ = Annotated[Optional[Path], typer.Option("--config", "-c", help="experiment YAML (defaults < YAML < flags)")]
Dataset_ = Annotated[Optional[str], typer.Option(help="mnist | fashion-mnist | cifar10 | mnist-sample [default: mnist]")]
Epochs_ = Annotated[Optional[int], typer.Option(help="epochs [default: 1]")]
Lr_ = Annotated[Optional[float], typer.Option(help="learning rate [default: 0.001]")]
Batch_ = Annotated[Optional[int], typer.Option("--batch-size", help="batch size [default: 128]")]
Seed_ = Annotated[Optional[list[int]], typer.Option("--seed", help="seed; repeat for several [default: 0; compare and sweep: 0, 1, 2]")]
Seeds_ = Annotated[Optional[int], typer.Option("--seeds", help="run seeds 0..N-1 (default 3)")]
DataDir_ = Annotated[Optional[str], typer.Option("--data-dir", help="folder with .npz or IDX files [$BNEXP_DATA_DIR]")]
Results_ = Annotated[Optional[str], typer.Option("--results", help="results folder [default: results]")]
Set_ = Annotated[Optional[list[str]], typer.Option("--set", help="any config key: --set width=512 (repeatable)")]
Exec_ = Annotated[Optional[str], typer.Option("--execution", help="xla | graph | eager [default: xla]")]
Workers_ = Annotated[Optional[int], typer.Option("--workers", help="runs trained at the same time [default: 2 on 2+ cores]")]
Executor_ = Annotated[Optional[str], typer.Option("--executor", help="local | process | ray [default: local]")]
RayAddress_ = Annotated[Optional[str], typer.Option("--ray-address", help="ray: auto, HOST:PORT or ray://... [$RAY_ADDRESS; "
                                                    "default: start a local cluster]")]
RayCpus_ = Annotated[Optional[float], typer.Option("--ray-cpus-per-run", help="ray: CPUs per run [default: 1]")]
Json_ = Annotated[bool, typer.Option("--json", help="print JSON only on stdout")]
Wide_ = Annotated[bool, typer.Option("--wide", help="show every column of the table, whatever the terminal width")]
Debug_ = Annotated[bool, typer.Option("--debug", help="show tracebacks")]


def command(fn):
    """Run a command; turn bnexp errors into one red line and the right exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = _debug or kwargs.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BnexpError as e:
            if debug:
                raise
            err.print(f"[red]error:[/] {_line(e)}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            if debug:
                raise
            err.print("[yellow]interrupted: finished runs are kept; run the same command again to go on[/]", soft_wrap=True)
            raise typer.Exit(130) from None
        except Exception as e:
            from .train import Interrupted

            if isinstance(e, Interrupted):
                err.print(f"[yellow]{_line(e)}[/]", soft_wrap=True)
                raise typer.Exit(130 if e.signum == 2 else 143) from None
            if debug:
                raise
            first = (str(e).splitlines() or [""])[0]
            err.print(f"[red]error:[/] {_line(f'{type(e).__name__}: {first}')} (run again with --debug for the traceback)",
                      soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _line(text) -> str:
    """A message as one line, printed verbatim: Rich must neither wrap it at the console width
    nor read its brackets ("e.g. [dense, bn]", a path with "[/x]") as markup."""
    from rich.markup import escape

    return escape(" ".join(str(text).splitlines()))


def _print_version(value: bool):
    if value:
        out.print(f"bnexp {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(debug: Debug_ = False,
          version: Annotated[bool, typer.Option("--version", help="print the version", is_eager=True,
                                                callback=_print_version)] = False):
    # --version is eager: it prints and exits before click asks for a command
    global _debug
    _debug = debug


def _experiment(config, flags: dict, sets, seeds: Optional[int] = None, seed: Optional[list[int]] = None):
    from . import config as cfgmod

    flags = dict(flags)
    if seeds is not None:
        flags["seeds"] = seeds
    if seed:
        flags["seed"] = seed[0]
        if len(seed) > 1 or seeds is None:
            flags["seeds"] = list(seed)
    if seeds is not None and seed:
        raise UsageError("give either --seeds N or --seed S (repeatable), not both")
    return cfgmod.load(config, flags, sets)


def _note_fallback(source) -> None:
    if source is not None and source.fallback_note:
        err.print(f"[yellow]note:[/] {_line(source.fallback_note)}", soft_wrap=True)


def _planned(exp, allow_missing_data: bool = False):
    """(experiment, source, specs): the dataset first, since a fallback (mnist -> mnist-sample)
    is the dataset the runs then use; usage errors in the plan come before the fallback note."""
    from .plan import pinned, plan, resolve_source

    try:
        source = resolve_source(exp)
    except UsageError as e:
        if not allow_missing_data:
            raise
        source = None  # a dry run still lists the grid
        err.print(f"[yellow]note:[/] {_line(e)}", soft_wrap=True)
    exp = pinned(exp, source)
    specs = plan(exp)
    _note_fallback(source)
    return exp, source, specs


class _Overall:
    """The batch's line under the per-run bars: runs done, running and queued, and an ETA from
    the runs finished so far (Rich's estimate over the completed count)."""

    def __init__(self):
        self.bars, self.task = None, None
        self.done = self.running = self.queued = 0

    def show(self) -> None:
        if self.bars is not None and self.task is not None:
            self.bars.update(self.task, completed=self.done,
                             description=f"runs: {self.done} done, {self.running} running, {self.queued} queued")

    def event(self, kind: str) -> None:
        if kind == "training" or kind == "resuming":
            self.queued, self.running = self.queued - 1, self.running + 1
        elif kind == "unqueued":  # another process made it meanwhile
            self.queued, self.done = self.queued - 1, self.done + 1
        elif kind in ("finished", "diverged", "failed"):
            self.running, self.done = self.running - 1, self.done + 1
        self.show()


@contextmanager
def _progress_bars(quiet: bool, overall: _Overall | None = None):
    """One Rich display for a batch; each run in flight gets a bar (runs may train at once), and
    the batch an overall line."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    if quiet:
        yield lambda spec: nullcontext()
        return
    bars = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                    TimeRemainingColumn(), console=err, transient=True)
    if overall is not None:
        overall.bars = bars

    @contextmanager
    def bar(spec):
        task = bars.add_task(spec.label, total=None, detail="")

        def on_progress(step, total, loss, acc):
            bars.update(task, completed=step, total=total, detail=f"step {step}/{total} loss {loss:.4f} acc {acc:.3f}")

        try:
            yield on_progress
        finally:
            bars.remove_task(task)

    with bars:
        yield bar


def _events(quiet: bool, overall: _Overall | None = None):
    def say(msg: str) -> None:  # one line each, even where stderr is not a terminal
        err.print(msg, soft_wrap=True)

    def emit(kind, spec, rec):
        if overall is not None and overall.bars is not None:
            if kind == "planned" and rec["to_train"] > 1:
                overall.queued = rec["to_train"]
                overall.task = overall.bars.add_task("runs", total=rec["to_train"], detail="")
            overall.event(kind)
        if kind == "broken":  # even with --json: stderr only
            say(f"[yellow]note:[/] skipping run folder {_line(rec['run_id'])}: {_line(rec['problem'])}")
            return
        if kind == "note":  # even with --json: stderr only
            say(f"[yellow]note:[/] {spec.label}: {_line(rec['note'])}")
            return
        if quiet:
            return
        if kind in ("finished", "diverged"):
            acc = rec.get("test_accuracy")
            say(f"  {spec.label}: {kind}, test acc {acc:.4f}, {rec.get('wall_time_s', 0):.1f}s  [dim]{rec['run_id']}[/]")
        elif kind == "failed":
            say(f"  [red]{spec.label}: failed[/] ({_line(rec.get('error'))})  [dim]{rec['run_id']}[/]")
        elif kind == "resuming":
            say(f"  {spec.label}: resuming {rec['run_id']}")
        elif kind == "failed-before":
            say(f"  {spec.label}: failed earlier ({rec.get('run_id')}); --retry-failed trains it again")
    return emit


def _run(specs, source, *, reuse=True, force=False, retry_failed=False, quiet=False):
    from .plan import execute

    overall = _Overall()
    with _progress_bars(quiet, overall) as bar:
        return execute(specs, source, reuse=reuse, force=force, retry_failed=retry_failed,
                       on_event=_events(quiet, overall), progress=bar)


# ---------------------------------------------------------------- commands
@app.command("list")
@command
def list_(keys: Annotated[bool, typer.Option("--keys", help="also list every config key")] = False,
          debug: Debug_ = False):
    """Show the models, variants, normalizers, datasets and executors (and, with --keys, the config keys)."""
    from rich.markup import escape
    from rich.table import Table

    from . import data, models
    from .executors import EXECUTORS
    from .models.norms import NORMS

    def table(title, columns, rows):
        t = Table(title=title)
        for k, c in enumerate(columns):
            t.add_column(c, style="bold" if k == 0 else None)
        for row in rows:
            t.add_row(*map(escape, row))  # plain text: "[ray]" in a description is not Rich markup
        out.print(t)

    table("models (--set model=NAME)", ("name", "description"), [(n, f.description) for n, f in models.FAMILIES.items()])
    table("variants", ("name", "layers per block", "models", "description"),
          [(v.name, v.layers_text(), ", ".join(v.families), v.description) for v in models.VARIANTS.values()])
    table("normalizers (--set norm=NAME fills the norm slot of bn-* and res-* variants)",
          ("name", "moving statistics", "description"),
          [(n, "yes" if x.moving_stats else "no", x.description) for n, x in NORMS.items()])
    table("datasets (--dataset NAME or KIND:PATH)", ("name", "description"), data.describe())
    table("executors (--executor NAME)", ("name", "description"),
          [(n, (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "") for n, fn in EXECUTORS.items()])
    if keys:
        from .config import EXPERIMENT_KEYS, documented_keys

        t = Table(title="config keys (YAML keys = option names; --set KEY=VALUE)")
        for c in ("key", "type", "default", "meaning"):
            t.add_column(c)
        for row in documented_keys():
            t.add_row(*map(escape, row))
        for k, doc in EXPERIMENT_KEYS.items():
            t.add_row(k, "experiment", "", escape(doc))
        out.print(t)


@app.command()
@command
def train(variant: Annotated[Optional[str], typer.Option("--variant", "-v", help="a variant from `bnexp list`, e.g. bn-pre")] = None,
          config: Config_ = None, dataset: Dataset_ = None, epochs: Epochs_ = None, lr: Lr_ = None,
          batch_size: Batch_ = None, seed: Seed_ = None, data_dir: DataDir_ = None, results: Results_ = None,
          set_: Set_ = None, execution: Exec_ = None, workers: Workers_ = None, executor: Executor_ = None,
          resume: Annotated[Optional[str], typer.Option("--resume", help="resume an interrupted run (id or path)")] = None,
          json_: Json_ = False, debug: Debug_ = False):
    """Train one variant; write results/<run-id>/ with metrics.json, model.keras, config.yaml, tb/."""
    from .compare import resume_spec

    if resume:
        spec, source = resume_spec(resume, data_dir, results)
        specs = [spec]
    else:
        flags = dict(dataset=dataset, epochs=epochs, lr=lr, batch_size=batch_size, data_dir=data_dir,
                     results=results, execution=execution, workers=workers, executor=executor)
        exp = _experiment(config, flags, set_, seed=seed)
        from .executors import check

        check(exp.config)  # before the data are looked for
        if exp.seeds_named and len(exp.seeds) > 1:
            raise UsageError("train takes one --seed; use `bnexp compare VARIANT --seeds N` for several")
        name = variant or (exp.variants[0] if len(exp.variants) == 1 else None)
        if name is None:
            raise UsageError("name the variant: bnexp train --variant bn-pre (see `bnexp list`)")
        exp.variants = [name]
        seed = exp.seeds[0] if exp.seeds_named else exp.config.seed
        exp.seeds = [seed]
        exp, source, specs = _planned(exp)
    outcome = _run(specs, source, reuse=False, quiet=json_)
    rec = outcome.records[0]
    if json_:
        _print_json(rec)
    else:
        _print_run(rec)
    if rec["status"] == "failed":
        raise typer.Exit(1)


def _print_json(obj) -> None:
    """Strict JSON on stdout: NaN and infinities are null, so any parser reads it."""
    from .runs import strict

    out.file.write(json.dumps(strict(obj), allow_nan=False, default=str) + "\n")


def _print_run(rec):
    from .report import record_table

    keys = ("run_id", "status", "variant", "seed", "dataset", "n_train", "n_test", "steps", "test_accuracy",
            "test_loss", "train_accuracy", "train_loss", "test_accuracy_batchstats", "diverged_step",
            "wall_time_s", "train_time_s", "samples_per_s", "run_dir", "error")
    out.print(record_table({k: rec[k] for k in keys if rec.get(k) is not None}), markup=False)  # values verbatim


@app.command("eval")
@command
def eval_(run: Annotated[str, typer.Argument(help="run id, id prefix or folder")],
          dataset: Dataset_ = None, data_dir: DataDir_ = None, results: Results_ = None,
          json_: Json_ = False, debug: Debug_ = False):
    """Reload a run's model.keras and score it on a test set."""
    from rich.table import Table

    from .evaluate import evaluate_run

    res = evaluate_run(run, dataset=dataset, data_dir=data_dir, results=results or "results")
    if json_:
        _print_json(res)
        return
    t = Table(title=f"eval {res['run_id']}")
    for c in ("dataset", "n_test", "test loss", "test acc", "recorded test acc", "status"):
        t.add_column(c)
    rec_acc = res.get("recorded_test_accuracy")
    t.add_row(res["dataset"], str(res["n_test"]), f"{res['test_loss']:.4f}", f"{res['test_accuracy']:.4f}",
              "—" if rec_acc is None else f"{rec_acc:.4f}", res["status"])
    out.print(t)


def _compare_like(exp, specs, source, *, baseline, force, retry_failed, json_, fmt, title, sweep_keys=(), wide=False):
    """Shared tail of compare and sweep: check, run, render."""
    from . import compare, report

    base = compare.check(exp, baseline, fmt)
    quiet = json_ or fmt in ("md", "csv")
    overall = _Overall()
    with _progress_bars(quiet, overall) as bar:
        cmp = compare.run_comparison(exp, specs, source, baseline=base, force=force, retry_failed=retry_failed,
                                     on_event=_events(quiet, overall), progress=bar, sweep_keys=sweep_keys)
    if json_:
        out.file.write(cmp.json + "\n")
    elif fmt == "md":
        out.file.write(cmp.markdown)
    elif fmt == "csv":
        out.file.write(cmp.csv)
    else:
        out.print(report.compare_table(cmp.rows, base, title, wide=wide))
        o, summary = cmp.outcome, cmp.summary
        err.print(f"trained {o.trained}, reused {o.reused}, resumed {o.resumed}, failed {o.failed} "
                  f"in {summary['wall_time_s']:.1f}s")
        for name, path in cmp.plots.items():
            err.print(f"{name}: {path}", markup=False, soft_wrap=True)
        err.print(f"report: {cmp.folder / 'report.md'}", markup=False, soft_wrap=True)
    if cmp.outcome.failed:
        raise typer.Exit(1)


@app.command()
@command
def compare(variants: Annotated[Optional[list[str]], typer.Argument(help="variants to compare (default: from --config)")] = None,
            config: Config_ = None, dataset: Dataset_ = None, epochs: Epochs_ = None, lr: Lr_ = None,
            batch_size: Batch_ = None, seed: Seed_ = None, seeds: Seeds_ = None, data_dir: DataDir_ = None,
            results: Results_ = None, set_: Set_ = None, execution: Exec_ = None, workers: Workers_ = None,
            executor: Executor_ = None, ray_address: RayAddress_ = None, ray_cpus_per_run: RayCpus_ = None,
            baseline: Annotated[Optional[str], typer.Option(help="variant the others are paired against [default: the first]")] = None,
            force: Annotated[bool, typer.Option("--force", help="train again even where a finished run matches")] = False,
            retry_failed: Annotated[bool, typer.Option("--retry-failed", help="train again the runs that failed before")] = False,
            json_: Json_ = False,
            format_: Annotated[Optional[str], typer.Option("--format", help="md | csv: print that instead of the table")] = None,
            wide: Wide_ = False, debug: Debug_ = False):
    """Train (or reuse) each variant over the seeds and compare them in one table."""

    flags = dict(dataset=dataset, epochs=epochs, lr=lr, batch_size=batch_size, data_dir=data_dir,
                 results=results, execution=execution, workers=workers, executor=executor, ray_address=ray_address,
                 ray_cpus_per_run=ray_cpus_per_run, variants=variants or None)
    exp = _experiment(config, flags, set_, seeds=seeds, seed=seed)
    if exp.grid:
        raise UsageError(f"{exp.source} has a grid: run it with `bnexp sweep {exp.source}`")
    from .compare import check

    check(exp, baseline, format_)  # a typo costs nothing: before the data are looked for
    exp, source, specs = _planned(exp)
    title = f"{source.name}: {', '.join(dict.fromkeys(s.variant.name for s in specs))} × {len(exp.seeds)} seed(s)"
    _compare_like(exp, specs, source, baseline=baseline, force=force, retry_failed=retry_failed,
                  json_=json_, fmt=format_, title=title, wide=wide)


@app.command()
@command
def sweep(file: Annotated[Path, typer.Argument(help="sweep YAML with variants, seeds and a grid")],
          dry_run: Annotated[bool, typer.Option("--dry-run", help="list the runs, train nothing")] = False,
          dataset: Dataset_ = None, epochs: Epochs_ = None, seeds: Seeds_ = None, data_dir: DataDir_ = None,
          results: Results_ = None, set_: Set_ = None, workers: Workers_ = None,
          executor: Executor_ = None, ray_address: RayAddress_ = None, ray_cpus_per_run: RayCpus_ = None,
          force: Annotated[bool, typer.Option("--force")] = False,
          retry_failed: Annotated[bool, typer.Option("--retry-failed")] = False,
          json_: Json_ = False,
          format_: Annotated[Optional[str], typer.Option("--format", help="md | csv")] = None,
          wide: Wide_ = False, debug: Debug_ = False):
    """Run a grid of variants x config values x seeds; one compare row per grid point."""
    from rich.table import Table

    from .plan import dry_run as plan_dry_run

    flags = dict(dataset=dataset, epochs=epochs, data_dir=data_dir, results=results, workers=workers, executor=executor,
                 ray_address=ray_address, ray_cpus_per_run=ray_cpus_per_run)
    exp = _experiment(file, flags, set_, seeds=seeds)
    if not dry_run:
        from .compare import check

        check(exp, None, format_)  # before the data are looked for
    exp, source, specs = _planned(exp, allow_missing_data=dry_run)
    if dry_run:
        rows = plan_dry_run(specs, source)
        if json_:
            _print_json({"runs": rows, "n": len(rows)})
            return
        t = Table(title=f"{file}: {len(specs)} runs ({', '.join(f'{k}: {len(v)} values' for k, v in exp.grid.items()) or 'no grid'})")
        for c in ("#", "group", "variant", "seed", "status"):
            t.add_column(c)
        for i, r in enumerate(rows, 1):
            t.add_row(str(i), r["group"], r["variant"], str(r["seed"]), r["status"])
        out.print(t, markup=False)
        return
    _compare_like(exp, specs, source, baseline=None, force=force, retry_failed=retry_failed, json_=json_,
                  fmt=format_, title=f"sweep {file} on {source.name}", sweep_keys=tuple(exp.grid), wide=wide)


def _readable_runs(refs: list[str], root: str) -> list[dict]:
    """The runs' records; a run whose metrics.json cannot be read stops the command."""
    from . import runs

    records = [runs.read_record(runs.find_run(r, root)) for r in refs]
    broken = [r for r in records if r["status"] == "broken"]
    if broken:
        raise RunFailure(f"run {broken[0]['run_id']} cannot be read: {broken[0]['problem']}")
    return records


@app.command()
@command
def plot(run_refs: Annotated[list[str], typer.Argument(metavar="RUN...", help="run ids or folders")],
         out_path: Annotated[Optional[Path], typer.Option("--out", help="PNG path [default: results/plot-<time>.png]")] = None,
         results: Results_ = None, debug: Debug_ = False):
    """Plot learning curves (and activation traces, where recorded) of any set of runs."""
    from .report import plots

    root = results or "results"
    records = _readable_runs(run_refs, root)
    path = out_path or Path(root) / f"plot-{time.strftime('%Y%m%d-%H%M%S')}.png"
    out.print(f"curves: {plots.curves(records, str(path))}", markup=False, soft_wrap=True)
    traced = [r for r in records if r.get("traces")]
    if traced:
        tpath = path.with_name(path.stem + "-traces.png")
        out.print(f"traces: {plots.traces_compare(traced, str(tpath))}", markup=False, soft_wrap=True)


@app.command()
@command
def show(run: Annotated[str, typer.Argument(help="run id or folder")], results: Results_ = None,
         json_: Json_ = False, debug: Debug_ = False):
    """Print a run's provenance and metrics: config, dataset, environment, status."""
    from . import report, runs

    rec = runs.read_record(runs.find_run(run, results or "results"))
    if json_:
        _print_json(rec)
        return
    out.print(report.record_table(rec), markup=False)  # paths like results/[exp1] verbatim
    if rec["status"] == "broken":
        raise RunFailure(f"run {rec['run_id']}: {rec['problem']}")


@app.command()
@command
def diff(run_a: Annotated[str, typer.Argument()], run_b: Annotated[str, typer.Argument()],
         results: Results_ = None, json_: Json_ = False, debug: Debug_ = False):
    """Show what differs between two runs: config, environment and metrics."""
    from rich.table import Table

    from . import report

    a, b = _readable_runs([run_a, run_b], results or "results")
    rows = report.diff(a, b)
    if json_:
        _print_json([{"key": k, "a": x, "b": y} for k, x, y in rows])
        return
    t = Table(title=f"{a['run_id']} vs {b['run_id']}")
    for c in ("key", a["run_id"], b["run_id"]):
        t.add_column(c)
    for k, x, y in rows:
        t.add_row(k, str(x), str(y))
    out.print(t, markup=False)  # values verbatim: a path or command may hold [brackets]


def main():
    app()


if __name__ == "__main__":
    main()
