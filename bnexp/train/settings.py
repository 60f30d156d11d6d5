"""What the training loop takes from the config, in one place and without TensorFlow.

The loop reads these settings, never the config itself, so that `settings()` run on a
recording config (models.kit.Reads) tells exactly which keys a run's training reads: e.g.
`momentum` only with optimizer=momentum, `trace_units` only with traces on, `bn_recalibrate`
only for a net whose norms keep moving statistics. The reuse key is derived from that.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    seed: int
    optimizer: str
    lr: float
    momentum: float | None  # only for optimizer=momentum
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    eval_samples: int
    divergence_factor: float
    checkpoint_every: int
    execution: str
    trace_units: int | None  # None: no traces
    probe_size: int | None
    recalibrate: int  # 0: off
    batchstats_eval: bool

    @property
    def traces(self) -> bool:
        return self.trace_units is not None


def settings(cfg, n_train: int, moving_stats: bool) -> Settings:
    """The loop's settings for `cfg` on `n_train` training examples; `moving_stats`: whether the
    net has a norm layer with moving statistics (recalibration and batch-stats eval apply)."""
    spe = n_train // cfg.batch_size
    total = cfg.steps if cfg.steps is not None else cfg.epochs * spe
    traces = cfg.traces
    return Settings(
        seed=cfg.seed,
        optimizer=cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum if cfg.optimizer == "momentum" else None,
        batch_size=cfg.batch_size,
        steps_per_epoch=spe,
        total_steps=total,
        eval_every=cfg.eval_every or max(1, spe // 10),
        eval_samples=cfg.eval_samples,
        divergence_factor=cfg.divergence_factor,
        checkpoint_every=cfg.checkpoint_every or spe,
        execution=cfg.execution,
        trace_units=cfg.trace_units if traces else None,
        probe_size=cfg.probe_size if traces else None,
        recalibrate=cfg.bn_recalibrate if moving_stats else 0,
        batchstats_eval=cfg.bn_batchstats_eval if moving_stats else False,
    )
