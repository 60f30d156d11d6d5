"""A VGG-style convnet: stages x [convs_per_stage x block], max-pooling between stages, then
global average pooling (cnn_head=gap) or Flatten (flatten) and the Dense logits.

The block is the variant's placement, the same tokens as the MLP's (variants.py), one block per
conv: "dense" is Conv2D(filters, kernel_size, padding="same"), "bn" the norm slot (per channel:
BN keeps moving statistics of shape (filters,)), "act" Activation(activation), "dropout" Dropout
(or SpatialDropout2D with spatial_dropout). The first stage has `filters` filters, each later
stage twice as many. The variant's head (bn-preact's BN -> ReLU) comes once after the last
stage, before the pooling. A pre-activation block starts on the input images themselves, as
the MLP's starts on the flattened pixels.

Layer names: images, conv_i, bn_i, act_i, dropout_i (numbered in graph order per kind),
pool_i (between stages), gap or flatten, logits.
"""

from __future__ import annotations

from ..errors import UsageError
from . import norms
from .kit import Kit
from .mlp import initializer


def build(kit: Kit, cfg, variant, input_shape, num_classes):
    from . import Built

    stages, per_stage = cfg.stages, cfg.convs_per_stage
    # (stage, token): the blocks of every stage, then the head (stage None)
    tokens = [(s, tok) for s in range(stages) for _ in range(per_stage) for tok in variant.block]
    tokens += [(None, tok) for tok in variant.head]
    slot = norms.slot(kit, cfg, variant) if variant.has_norm_slot else None
    height, width, channels = input_shape
    inputs = kit.layers.Input(shape=input_shape, name="images")
    x = inputs
    built = Built(inputs, None)
    counts: dict[str, int] = {}

    def name(kind: str) -> str:
        i = counts.get(kind, 0)
        counts[kind] = i + 1
        return f"{kind}_{i}"

    stage = 0
    for j, (s, tok) in enumerate(tokens):
        if s is not None and s != stage:  # a new stage: halve the feature map first
            if min(height, width) < 2:
                raise UsageError(f"model cnn: {stages} stages halve {input_shape[0]}x{input_shape[1]} images to nothing; "
                                 f"use --set stages={_max_stages(input_shape)} or fewer")
            x = kit.layers.MaxPooling2D(2, name=name("pool"))(x)
            height, width, stage = height // 2, width // 2, s
        nxt = tokens[j + 1][1] if j + 1 < len(tokens) else None
        if tok == "dense":
            filters = cfg.filters * 2 ** stage
            use_bias = cfg.use_bias and not (nxt == "bn" and cfg.bn_drop_bias)
            x = kit.layers.Conv2D(filters, cfg.kernel_size, padding="same", use_bias=use_bias,
                                  kernel_initializer=initializer(kit, cfg), name=name("conv"))(x)
            channels = filters
        elif tok == "bn":
            layer_name = name("bn")
            x = slot(layer_name, channels)(x)
            if slot.moving_stats:
                built.stat_layers.append(layer_name)
        elif tok == "act":
            layer_name = name("act")
            built.taps.append(x)
            built.tap_names.append(layer_name)
            x = kit.layers.Activation(cfg.activation, name=layer_name)(x)
        elif tok == "dropout":
            rate = cfg.dropout
            drop = kit.layers.SpatialDropout2D if cfg.spatial_dropout else kit.layers.Dropout
            x = drop(rate, name=name("dropout"))(x)
    if cfg.cnn_head == "flatten":
        x = kit.layers.Flatten(name="flatten")(x)
    else:
        x = kit.layers.GlobalAveragePooling2D(name="gap")(x)
    built.logits = kit.layers.Dense(num_classes, kernel_initializer=initializer(kit, cfg), name="logits")(x)
    return built


def _max_stages(input_shape) -> int:
    side, n = min(input_shape[0], input_shape[1]), 1
    while side >= 2:
        side, n = side // 2, n + 1
    return n


def _family():
    from . import Family

    return Family("VGG-style convnet: stages x [convs_per_stage x conv block] with max-pooling between, "
                  "filters doubling per stage -> gap | flatten -> logits", build, images_only=True)


FAMILY = _family()
