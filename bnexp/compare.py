"""`compare` and `sweep` as library functions: check, run, aggregate, write the report folder.

The CLI only parses and renders; a notebook can call `run_comparison()` and get the rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from . import runs
from .config import Experiment, digest
from .errors import RunFailure, UsageError

FORMATS = (None, "md", "csv", "table")


@dataclass
class Comparison:
    rows: list[dict]
    records: list[dict]
    baseline: str
    summary: dict
    folder: Path
    outcome: object  # plan.Outcome
    plots: dict[str, str] = field(default_factory=dict)
    markdown: str = ""
    csv: str = ""
    json: str = ""


def check(exp: Experiment, baseline: str | None, fmt: str | None) -> str:
    """What a comparison can check from the command alone, before the data are looked for or
    anything is planned: the output format, the baseline, the executor, the results folder.
    Returns the baseline."""
    from . import executors

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: choose md, csv or table (or --json)")
    names = list(dict.fromkeys(exp.variants))
    base = baseline or exp.baseline or names[0]
    if base not in names:
        from .errors import nearest

        raise UsageError(f"baseline {base!r} is not among the variants compared{nearest(base, names)}: {', '.join(names)}")
    executors.check(exp.config)
    runs.ensure_results(exp.config.results)
    return base


def run_comparison(exp: Experiment, specs, source, *, baseline: str, force: bool = False, retry_failed: bool = False,
                   on_event=None, progress=None, executor=None, sweep_keys: tuple = ()) -> Comparison:
    """Train (or reuse) every spec, then write compare.json, report.md, rows.csv and the plots
    into a new report folder under the results folder."""
    from . import report
    from .plan import execute
    from .report import plots

    started = time.perf_counter()
    outcome = execute(specs, source, executor=executor, force=force, retry_failed=retry_failed, on_event=on_event,
                      progress=progress)
    records = outcome.records
    rows = report.compare_rows(records, baseline, exp.config.target_accuracy)
    results = runs.ensure_results(exp.config.results)
    folder = _report_folder(results, f"compare-{time.strftime('%Y%m%d-%H%M%S')}-"
                                     f"{digest(sorted(r['run_id'] for r in records))[:6]}")
    made = {"curves": plots.curves(records, str(folder / "curves.png"))}
    for key in sweep_keys:
        first = exp.grid[key][0]
        x = next(iter(first)) if isinstance(first, dict) else key  # a composite grid is plotted by its first key
        made[f"sweep-{x}"] = plots.sweep(records, x, str(folder / f"sweep-{x}.png"))
        if any("test_accuracy_batchstats" in r for r in records):
            made[f"sweep-{x}-batchstats"] = plots.sweep(records, x, str(folder / f"sweep-{x}-batchstats.png"),
                                                        metric="test_accuracy_batchstats")
    traced = [r for r in records if r.get("traces") and r.get("status") == "finished"]
    if traced:
        made["traces"] = plots.traces_compare(traced, str(folder / "traces.png"))
    env = runs.environment()
    summary = {"compare_id": folder.name, "baseline": baseline, "dataset": source.name, "dataset_sha256": source.sha256,
               "seeds": exp.seeds, "trained": outcome.trained, "reused": outcome.reused, "resumed": outcome.resumed,
               "failed": outcome.failed, "wall_time_s": time.perf_counter() - started, "plots": made,
               "folder": str(folder), **env}
    cmp = Comparison(rows, records, baseline, summary, folder, outcome, made)
    cmp.json = report.to_json(rows, records, summary)
    report.save(folder / "compare.json", cmp.json)
    cmp.markdown = report.to_markdown(rows, baseline, "curves.png", env["command"])
    report.save(folder / "report.md", cmp.markdown)
    cmp.csv = report.to_csv(rows)
    report.save(folder / "rows.csv", cmp.csv)
    return cmp


def _report_folder(results: Path, stem: str) -> Path:
    for n in range(1, 1000):  # the same comparison repeated within a second gets -2, -3, ...
        folder = results / (stem if n == 1 else f"{stem}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except OSError as e:
            raise RunFailure(f"cannot create the report folder {folder}: {e.strerror or e}; "
                             "check the results folder and run the same command again (finished runs are reused)") from None
    raise RunFailure(f"cannot find a free report folder name {stem}-N in {results}")


def resume_spec(ref: str, data_dir: str | None, results: str | None):
    """(spec, source) of an interrupted run, from its folder's config.yaml, for `train --resume`."""
    import yaml

    from . import data
    from .config import Config, coerce, validate
    from .models import VARIANTS, from_yaml
    from .plan import RunSpec

    run = runs.find_run(ref, results or "results")
    rec = runs.read_record(run)
    if rec["status"] in runs.DONE:
        raise UsageError(f"run {run.name} is already {rec['status']}; nothing to resume")
    if rec["status"] == "running":
        raise UsageError(f"run {run.name} is still running in another process")
    if not (run / runs.CHECKPOINT).exists() and not (run / runs.PREVIOUS_CHECKPOINT).exists():
        raise RunFailure(f"run {run.name} has no checkpoint to resume from; train it again")
    doc = yaml.safe_load((run / runs.CONFIG).read_text())
    name, vspec, group = doc.pop("variant"), doc.pop("variant_spec"), doc.pop("group", "")
    cfg = validate(Config(**{k: coerce(k, v) for k, v in doc.items()}))
    if results:
        cfg = cfg.replace(results=results)
    elif run.parent != Path(cfg.results):
        cfg = cfg.replace(results=str(run.parent))
    if data_dir:
        cfg = cfg.replace(data_dir=data_dir)
    source = data.resolve_config(cfg)
    if rec.get("dataset_sha256") and rec["dataset_sha256"] != source.sha256:
        raise UsageError(f"the {cfg.dataset} files found now differ from the ones run {run.name} trained on; "
                         "point --data-dir at the original files")
    variant = VARIANTS[name] if name in VARIANTS and VARIANTS[name].spec() == vspec else from_yaml(name, vspec)
    return RunSpec(variant, cfg, group), source
