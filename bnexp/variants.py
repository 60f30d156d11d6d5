"""Step 3 of the pipeline: the network variants.

Every variant is the lab's net, Flatten -> depth x block -> [head] -> Dense(10) logits,
with its own block: a list of layer tokens. LAYERS maps each token to its builder, so a
new variant is a list of tokens, in code (VARIANTS) or in a YAML file (`define:`).
Keras is imported only inside `build_model`, so listing variants stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageError, unknown_name


@dataclass(frozen=True)
class Variant:
    name: str
    block: tuple[str, ...]  # repeated `depth` times; must hold exactly one "dense"
    head: tuple[str, ...] = ()  # once, after the blocks, before the logits
    description: str = ""

    def spec(self) -> dict:
        return {"block": list(self.block), "head": list(self.head)}


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("plain", ("dense", "act"), description="Dense -> ReLU: the lab's baseline"),
        Variant("dropout", ("dense", "act", "dropout"), description="Dense -> ReLU -> Dropout(rate): the lab's regularized net"),
        Variant("bn-pre", ("dense", "bn", "act"), description="Dense -> BatchNorm -> ReLU: BN before the activation (the paper, the lab)"),
        Variant("bn-post", ("dense", "act", "bn"), description="Dense -> ReLU -> BatchNorm: BN after the activation"),
        Variant("bn-preact", ("bn", "act", "dense"), ("bn", "act"),
                description="BatchNorm -> ReLU -> Dense, then BN -> ReLU before the logits: the slides' norm -> activation -> layer"),
    )
}

TOKENS = ("dense", "bn", "act", "dropout")


def _layer(token: str, cfg, i: int, next_token: str | None):
    import keras

    name = f"{token}_{i}"
    if token == "dense":
        use_bias = cfg.use_bias and not (cfg.bn_drop_bias and next_token == "bn")
        return keras.layers.Dense(cfg.width, use_bias=use_bias, kernel_initializer=_initializer(cfg), name=name)
    if token == "bn":
        return keras.layers.BatchNormalization(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, name=name)
    if token == "act":
        return keras.layers.Activation(cfg.activation, name=name)
    if token == "dropout":
        return keras.layers.Dropout(cfg.dropout, name=name)
    raise AssertionError(token)


def _initializer(cfg):
    import keras

    return {
        "glorot_uniform": lambda: keras.initializers.GlorotUniform(),
        "he": lambda: keras.initializers.HeNormal(),
        "normal": lambda: keras.initializers.RandomNormal(stddev=cfg.init_std),
    }[cfg.initializer]()


def resolve(name: str, define: dict | None = None) -> Variant:
    """The variant called `name`: built in, or defined in an experiment's `define:`."""
    if define and name in define:
        return from_yaml(name, define[name])
    if name not in VARIANTS:
        raise unknown_name("variant", name, list(VARIANTS) + list(define or {}))
    return VARIANTS[name]


def from_yaml(name: str, spec) -> Variant:
    """A Variant from `[dense, bn, act]` or `{block: [...], head: [...], description: ...}`."""
    if isinstance(spec, list):
        spec = {"block": spec}
    if not isinstance(spec, dict) or not isinstance(spec.get("block"), list):
        raise UsageError(f"variant {name!r}: write a list of layers, e.g. [dense, bn, act]")
    unknown = set(spec) - {"block", "head", "description"}
    if unknown:
        raise UsageError(f"variant {name!r}: unknown key {sorted(unknown)[0]!r}; use block, head, description")
    if not isinstance(spec.get("head") or [], list):
        raise UsageError(f"variant {name!r}: head must be a list of layers, e.g. [bn, act]")
    block, head = tuple(spec["block"]), tuple(spec.get("head") or ())
    for tok in block + head:
        if tok not in TOKENS:
            raise UsageError(f"variant {name!r}: unknown layer {tok!r}; use {', '.join(TOKENS)}")
    if block.count("dense") != 1:
        raise UsageError(f"variant {name!r}: the block needs exactly one dense layer, got {block.count('dense')}")
    if "dense" in head:
        raise UsageError(f"variant {name!r}: the head goes before the logits and may not hold a dense layer")
    return Variant(name, block, head, str(spec.get("description", "defined in YAML: " + " -> ".join(block))))


def build_model(variant: Variant, cfg, input_shape: tuple[int, ...], num_classes: int = 10):
    """The Keras model for `variant` under `cfg`; weights drawn from Keras's global seed."""
    import keras

    tokens = list(variant.block) * cfg.depth + list(variant.head)
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Flatten(name="flatten")(inputs)
    counts: dict[str, int] = {}
    for j, tok in enumerate(tokens):
        nxt = tokens[j + 1] if j + 1 < len(tokens) else None
        x = _layer(tok, cfg, counts.get(tok, 0), nxt)(x)
        counts[tok] = counts.get(tok, 0) + 1
    logits = keras.layers.Dense(num_classes, kernel_initializer=_initializer(cfg), name="logits")(x)
    return keras.Model(inputs, logits, name=variant.name)
