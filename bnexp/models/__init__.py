"""Step 3 of the pipeline: the networks. A registry of model families, each a builder.

    FAMILIES[cfg.model].build(kit, cfg, variant, input_shape, num_classes) -> Built

A family builds the variant's placement (variants.py) with the normalizer of its norm slot
(norms.py) and returns the graph's inputs, logits and taps (the input of each nonlinearity,
for traces). The same builder runs for real (Keras) or recording (`kit.Kit.recording()`), so:
- `reads()` is the set of config keys a run of this variant actually reads, found by running
  its builders; keys it never reads stay out of its reuse and program keys (plan.py, train/);
- `check()` raises the usage errors a build would raise (a variant the family cannot build, a
  group count that does not divide the channels) while planning, before TensorFlow loads.
Nothing here imports Keras at module level: listing and planning stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import UsageError, unknown_name
from .kit import Kit, Reads
from .variants import VARIANTS, Variant, from_yaml, resolve


@dataclass
class Built:
    """A built net: what the training program needs besides the Keras model itself."""

    inputs: Any
    logits: Any
    taps: list = field(default_factory=list)  # tensors fed to each nonlinearity, in graph order (traces)
    tap_names: list[str] = field(default_factory=list)
    stat_layers: list[str] = field(default_factory=list)  # names of norm layers with moving statistics


@dataclass(frozen=True)
class Family:
    description: str
    build: Callable[..., Built]  # (kit, cfg, variant, input_shape, num_classes) -> Built
    images_only: bool = False  # needs (H, W, C) inputs
    size_keys: tuple[str, ...] = ()  # the config keys that set its size, largest effect first (for messages)


def _families() -> dict[str, Family]:
    from . import mlp

    fams = {"mlp": mlp.FAMILY}
    try:
        from . import cnn

        fams["cnn"] = cnn.FAMILY
    except ImportError:
        pass
    try:
        from . import resnet

        fams["resnet"] = resnet.FAMILY
    except ImportError:
        pass
    return fams


FAMILIES: dict[str, Family] = _families()


def family(name: str) -> Family:
    if name not in FAMILIES:
        raise unknown_name("model", name, FAMILIES)
    return FAMILIES[name]


def check(variant: Variant, cfg, input_shape: tuple[int, ...] | None = None, num_classes: int = 10) -> None:
    """The usage errors that building `variant` under `cfg` would raise, without Keras."""
    build_with(Kit.recording(), variant, cfg, input_shape or _default_shape(cfg), num_classes)


def notes(variant: Variant, cfg) -> list[str]:
    """What a user should hear before a net that will train but cannot learn: instance norm in the
    MLP normalizes each unit of a Dense over itself alone, so every such layer outputs its beta."""
    if variant.has_norm_slot and (variant.norm or cfg.norm) == "instance" and cfg.model == "mlp":
        return ["instance norm after a Dense normalizes each unit over itself alone, so the layer "
                "outputs its beta and the net learns nothing (test accuracy at chance); it is meant for convnets: "
                "--set model=cnn"]
    return []


def reads(variant: Variant, cfg, input_shape: tuple[int, ...] | None = None) -> set[str]:
    """The config keys building this variant's net reads (with the model key itself)."""
    proxy = Reads(cfg)
    build_with(Kit.recording(), variant, proxy, input_shape or _default_shape(cfg), 10)
    return proxy.read


def build_with(kit: Kit, variant: Variant, cfg, input_shape: tuple[int, ...], num_classes: int) -> Built:
    fam = family(cfg.model)
    if variant.families and cfg.model not in variant.families:
        raise UsageError(f"variant {variant.name!r} is built by model {', '.join(variant.families)}, not "
                         f"{cfg.model!r}; add --set model={variant.families[0]} or pick another variant")
    if fam.images_only and len(input_shape) != 3:
        raise UsageError(f"model {cfg.model!r} needs images (H, W, C), but the data are {len(input_shape)}-d features "
                         f"of shape {tuple(input_shape)}; use --set model=mlp")
    return fam.build(kit, cfg, variant, tuple(input_shape), num_classes)


def build_model(variant: Variant, cfg, input_shape: tuple[int, ...], num_classes: int = 10):
    """(keras.Model, Built) for `variant` under `cfg`; weights drawn from Keras's global seed."""
    import keras

    built = build_with(Kit(), variant, cfg, tuple(input_shape), num_classes)
    return keras.Model(built.inputs, built.logits, name=variant.name), built


def count_params(variant: Variant, cfg, input_shape: tuple[int, ...], num_classes: int) -> int:
    """The net's real parameter count, from shapes alone: nothing is allocated (Keras's stateless
    scope defers every variable), so a typo'd width of 10^9 can be refused before it is built."""
    import keras

    with keras.StatelessScope(initialize_variables=False):  # (True would allocate them all on exit)
        model, _ = build_model(variant, cfg, input_shape, num_classes)
        return int(model.count_params())


def _default_shape(cfg) -> tuple[int, ...]:
    return (28, 28, 1)


__all__ = ["Built", "Family", "FAMILIES", "VARIANTS", "Variant", "build_model", "check", "count_params", "family",
           "from_yaml", "reads", "resolve"]
