"""Run records -> flat rows: the comparison rows of `compare` and `sweep`, and the flat keys
of one record (`show`, `diff`)."""

from __future__ import annotations

import math

from . import stats

METRICS = ("test_accuracy", "test_loss")

# A BN moving average starts at mean 0, variance 1 and keeps momentum**steps of that start.
# Above this share, inference-mode scores describe the initializer as much as the data.
BN_INITIAL_SHARE_NOTE = 0.05
# A run's bn_variance_ratio: per moving-statistics norm, the test-time variance of its input over
# its moving variance (1 when the moving statistics describe test time). Outside these bounds
# (the geometric mean over a row's layers and finished runs) inference runs on statistics of
# other inputs: a convnet after a few hundred steps at bn_momentum 0.99 measured 0.05-0.4.
BN_VARIANCE_RATIO_NOTE = (0.5, 2.0)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def compare_rows(records: list[dict], baseline: str, target: float) -> list[dict]:
    """One flat row per (group, variant): `stats.compare_table` (statistics, divergence and the
    verdict) plus convergence (``steps_to_target``), the normalizer (``norm``), reuse and the
    run ids."""
    metrics = METRICS + (("test_accuracy_batchstats",) if any("test_accuracy_batchstats" in r for r in records) else ())
    rows = stats.compare_table(records, baseline=baseline, metrics=metrics)
    shared = trained_together(records)
    for row in rows:
        mine = [r for r in records if r.get("variant") == row["variant"] and (r.get("group") or "") == row["group"]]
        done = [r for r in mine if r.get("status") == "finished"]
        reached = [stats.steps_to_target(r.get("history") or [], target) for r in done]
        hit = [s for s in reached if s is not None]
        norms = sorted({n for n in (norm_of(r) for r in mine) if n})
        row["norm"] = ", ".join(norms) or None
        row["target_accuracy"] = target
        row["steps_to_target"] = sum(hit) / len(hit) if hit and len(hit) == len(reached) else None
        row["n_reached_target"] = len(hit)
        row["bn_initial_share"] = max((bn_initial_share(r) for r in done), default=None, key=lambda x: x or 0)
        row["bn_variance_ratio"] = bn_variance_ratio(done)
        row["n_reused"] = sum(1 for r in mine if r.get("reused"))
        row["n_trained_together"] = sum(1 for r in done if r.get("run_id") in shared)
        row["statuses"] = sorted({r.get("status") for r in mine})
        row["run_ids"] = [r.get("run_id") for r in mine]
    return rows


def norm_of(rec: dict) -> str | None:
    """The normalizer in a run's norm slot: the variant's own (``variant_spec.norm``), else the
    config's ``norm`` (records older than norms: ``batch``); None for a variant without a slot."""
    spec = rec.get("variant_spec") or {}
    if "unit" not in spec and "bn" not in list(spec.get("block") or []) + list(spec.get("head") or []):
        return None  # (a residual unit always has norm slots)
    return spec.get("norm") or (rec.get("config") or {}).get("norm") or "batch"


def trained_together(records: list[dict]) -> set[str]:
    """The run ids, among `records`, whose training loop overlapped another's in time
    (compare's --workers): their wall times include sharing the cores."""
    spans = sorted(((r["train_start_unix"], r["train_end_unix"], r.get("run_id")) for r in records
                    if _finite(r.get("train_start_unix")) and _finite(r.get("train_end_unix"))), key=lambda s: s[0])
    out = set()
    for i, (_, end, run_id) in enumerate(spans):
        for start2, _, other in spans[i + 1:]:
            if start2 >= end:
                break
            out |= {run_id, other}
    return out


def bn_initial_share(rec: dict) -> float | None:
    """The share of BN's initial statistics still in the moving averages at the end of a run
    (bn_momentum ** steps); None for a run without norms that keep moving statistics (group,
    layer, instance norm: the run records `moving_stat_layers`; older runs: a BN token in the
    variant), or whose statistics were recalibrated."""
    cfg, spec = rec.get("config") or {}, rec.get("variant_spec") or {}
    if "moving_stat_layers" in rec:
        has_stats = bool(rec["moving_stat_layers"])
    else:
        has_stats = "bn" in list(spec.get("block") or []) + list(spec.get("head") or [])
    if not has_stats or cfg.get("bn_recalibrate") or not _finite(cfg.get("bn_momentum")) or not rec.get("steps"):
        return None
    return float(cfg["bn_momentum"]) ** int(rec["steps"])


def bn_variance_ratio(records: list[dict]) -> float | None:
    """The geometric mean of the runs' recorded bn_variance_ratio, over their layers; None when
    no run recorded one (no norm with moving statistics, or a run older than the ratio)."""
    logs = [math.log(v) for r in records for v in (r.get("bn_variance_ratio") or []) if _finite(v) and v > 0]
    return math.exp(sum(logs) / len(logs)) if logs else None


def bn_statistics_off(row: dict) -> bool:
    """Whether a row's moving statistics do not describe its test inputs (BN_VARIANCE_RATIO_NOTE)."""
    ratio = row.get("bn_variance_ratio")
    return _finite(ratio) and not BN_VARIANCE_RATIO_NOTE[0] <= ratio <= BN_VARIANCE_RATIO_NOTE[1]


def flatten(rec: dict, prefix: str = "") -> dict:
    """A record's keys as one flat dict (config.seed, ...), without history, traces, run_dir."""
    out = {}
    for k, v in rec.items():
        if k in ("history", "traces", "run_dir"):
            continue
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, a, b) for every flat key whose values differ, config and environment included."""
    fa, fb = flatten(a), flatten(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
