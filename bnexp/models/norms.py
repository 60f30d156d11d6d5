"""The normalizers a variant's norm slot can hold: a registry of builders.

    NORMS[name].build(kit, cfg) -> make(layer_name, channels) -> layer

`build` reads the config (through attribute access, so `models.reads` sees exactly the keys
a normalizer uses); `make` creates one layer for an input with `channels` channels (the last
axis), after a Dense or a Conv2D. `moving_stats` says whether the layer keeps moving averages
of batch statistics, i.e. whether recalibration, batch-statistics eval and the moving-average
notes apply to it.

Decisions: every norm's epsilon is `bn_epsilon` (one knob for the slot; its default is Keras's
1e-3), so layer/group/instance read it and nothing else of BN's. Ghost batches update the moving
statistics once a step with the mean of the sub-batch statistics (TF1's rule; layers.py). Renorm
keeps one moving average (renorm_momentum = bn_momentum, as in the paper) and clips r to
[1/rmax, rmax]; with a warm-up its clips follow a step counter (layers.WarmupBatchRenormalization).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import UsageError, unknown_name
from .kit import Kit


@dataclass(frozen=True)
class Norm:
    description: str
    build: Callable  # (kit, cfg) -> make(layer_name, channels) -> layer
    moving_stats: bool


def _batch(kit: Kit, cfg):
    momentum, epsilon, virtual = cfg.bn_momentum, cfg.bn_epsilon, cfg.bn_virtual_batch  # read while planning
    if virtual is None:
        def make(name: str, channels: int):  # exactly the lab's layer: results stay bit-identical
            return kit.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, name=name)

        return make
    batch = cfg.batch_size  # only ghost batches depend on it
    if batch % virtual:
        raise UsageError(f"bn_virtual_batch={virtual} does not divide batch_size={batch}; "
                         f"pick a divisor of {batch} (e.g. {_near_divisor(batch, virtual)})")

    def make(name: str, channels: int):
        return kit.custom("GhostBatchNormalization")(virtual_batch_size=virtual, momentum=momentum, epsilon=epsilon,
                                                     name=name)

    return make


def _renorm(kit: Kit, cfg):
    momentum, epsilon = cfg.bn_momentum, cfg.bn_epsilon
    rmax, dmax, warmup = cfg.renorm_rmax, cfg.renorm_dmax, cfg.renorm_warmup
    # renorm_momentum = momentum: the paper keeps ONE moving mean and std for r, d and inference
    if not warmup:
        def make(name: str, channels: int):
            return kit.layers.BatchNormalization(momentum=momentum, epsilon=epsilon, renorm=True, renorm_momentum=momentum,
                                                 renorm_clipping={"rmin": 1.0 / rmax, "rmax": rmax, "dmax": dmax}, name=name)

        return make

    def make(name: str, channels: int):  # Keras's clips are constants: a subclass moves them with a step counter
        return kit.custom("WarmupBatchRenormalization")(rmax=rmax, dmax=dmax, warmup=warmup, momentum=momentum,
                                                        epsilon=epsilon, renorm_momentum=momentum, name=name)

    return make


# The non-BN norms use bn_epsilon too: one knob for the slot's epsilon (e.g. PyTorch's 1e-5 for all),
# and its default is Keras's own (1e-3). They read no other BN key.
def _layer(kit: Kit, cfg):
    epsilon = cfg.bn_epsilon

    def make(name: str, channels: int):
        # GroupNormalization(groups=1) normalizes each sample over H, W and C (Wu & He's LN);
        # LayerNormalization(axis=-1) would normalize each pixel over its channels only
        return kit.layers.GroupNormalization(groups=1, epsilon=epsilon, name=name)

    return make


def _group(kit: Kit, cfg):
    groups, epsilon = cfg.norm_groups, cfg.bn_epsilon

    def make(name: str, channels: int):
        g = min(groups, channels)
        if channels % g:
            raise UsageError(f"norm_groups={groups} does not divide the {channels} channels of {name}; "
                             f"pick a divisor of {channels} (e.g. {_near_divisor(channels, groups)})")
        return kit.layers.GroupNormalization(groups=g, epsilon=epsilon, name=name)

    return make


def _instance(kit: Kit, cfg):
    epsilon = cfg.bn_epsilon

    def make(name: str, channels: int):
        return kit.layers.GroupNormalization(groups=channels, epsilon=epsilon, name=name)

    return make


def _none(kit: Kit, cfg):
    def make(name: str, channels: int):
        return lambda x: x

    return make


def _near_divisor(n: int, k: int) -> int:
    """The divisor of n nearest k (the smaller on a tie): the example in a 'does not divide' error."""
    return min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: (abs(d - k), d))


NORMS: dict[str, Norm] = {
    "batch": Norm("BatchNormalization: batch statistics in training, moving averages in inference (Ioffe & Szegedy "
                  "2015); bn_virtual_batch: per ghost batch", _batch, moving_stats=True),
    "renorm": Norm("Batch Renormalization: BN corrected toward the moving averages by r, d clipped to renorm_rmax, "
                   "renorm_dmax after renorm_warmup steps (Ioffe 2017)", _renorm, moving_stats=True),
    "layer": Norm("LayerNorm: each sample over all its features (after a conv: H, W and C), per-channel gamma, beta "
                  "(Ba et al. 2016; Wu & He 2018)", _layer, moving_stats=False),
    "group": Norm("GroupNorm: each sample over groups of channels (norm_groups, capped at the channels) and H, W "
                  "(Wu & He 2018)", _group, moving_stats=False),
    "instance": Norm("InstanceNorm: each sample and channel over H, W; after a Dense each unit is alone, so it "
                     "outputs beta", _instance, moving_stats=False),
    "none": Norm("the norm slot left empty: the same net without normalization", _none, moving_stats=False),
}


def get(name: str) -> Norm:
    if name not in NORMS:
        raise unknown_name("norm", name, NORMS)
    return NORMS[name]


class _Slot:
    def __init__(self, make, moving_stats: bool, norm: str):
        self.make, self.moving_stats, self.norm = make, moving_stats, norm

    def __call__(self, name: str, channels: int):
        return self.make(name, channels)


def slot(kit: Kit, cfg, variant) -> _Slot:
    """The variant's norm slot: its own normalizer, else the config's `norm`."""
    name = variant.norm or cfg.norm
    n = get(name)
    return _Slot(n.build(kit, cfg), n.moving_stats, name)
