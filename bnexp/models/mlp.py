"""The lab's net: Flatten -> depth x block -> [head] -> Dense(num_classes) logits."""

from __future__ import annotations

from . import norms
from .kit import Kit


def initializer(kit: Kit, cfg):
    """A fresh kernel initializer (each layer draws its own from Keras's global seed)."""
    kind = cfg.initializer
    if kind == "normal":
        return kit.initializers.RandomNormal(stddev=cfg.init_std)
    return {"glorot_uniform": kit.initializers.GlorotUniform, "he": kit.initializers.HeNormal}[kind]()


def build(kit: Kit, cfg, variant, input_shape, num_classes):
    from . import Built

    tokens = list(variant.block) * cfg.depth + list(variant.head)
    slot = norms.slot(kit, cfg, variant) if variant.has_norm_slot else None
    inputs = kit.layers.Input(shape=input_shape, name="images")
    x = kit.layers.Flatten(name="flatten")(inputs)
    features = 1
    for d in input_shape:
        features *= int(d)  # what a norm before the first Dense (bn-preact) normalizes
    built = Built(inputs, None)
    counts: dict[str, int] = {}
    for j, tok in enumerate(tokens):
        nxt = tokens[j + 1] if j + 1 < len(tokens) else None
        i = counts.get(tok, 0)
        counts[tok] = i + 1
        name = f"{tok}_{i}"
        if tok == "dense":
            use_bias = cfg.use_bias and not (nxt == "bn" and cfg.bn_drop_bias)
            x = kit.layers.Dense(cfg.width, use_bias=use_bias, kernel_initializer=initializer(kit, cfg), name=name)(x)
            features = cfg.width
        elif tok == "bn":
            x = slot(name, features)(x)
            if slot.moving_stats:
                built.stat_layers.append(name)
        elif tok == "act":
            built.taps.append(x)
            built.tap_names.append(name)
            x = kit.layers.Activation(cfg.activation, name=name)(x)
        elif tok == "dropout":
            x = kit.layers.Dropout(cfg.dropout, name=name)(x)
    built.logits = kit.layers.Dense(num_classes, kernel_initializer=initializer(kit, cfg), name="logits")(x)
    return built


def _family():
    from . import Family

    return Family("the lab's MLP: Flatten -> depth x [block of width units] -> logits", build,
                  size_keys=("width", "depth"))


FAMILY = _family()
