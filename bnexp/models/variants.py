"""The variants: where the norm slot and the nonlinearity go.

A placement variant is a block of layer tokens, repeated `depth` times in the MLP and
`convs_per_stage` times per stage in the CNN: "dense" is the layer (Dense, or Conv2D in a
convnet), "bn" the norm slot, "act" the nonlinearity, "dropout" a dropout layer. The norm slot
holds the variant's own normalizer (`norm`, e.g. gn-pre: group) or else the config's `norm`
(default `batch`, i.e. BatchNormalization), so `--set norm=group` swaps the normalizer of any
placement. A residual variant names one of He et al.'s units instead (`unit`). A new
placement is a list of tokens, in code or in a YAML file (`define:`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError, unknown_name


@dataclass(frozen=True)
class Variant:
    name: str
    block: tuple[str, ...] = ()  # repeated per layer; must hold exactly one "dense"
    head: tuple[str, ...] = ()  # once, after the blocks, before the logits
    description: str = ""
    norm: str | None = None  # the norm slot's normalizer; None: the config's `norm`
    unit: str | None = None  # residual unit (resnet only), e.g. "original"
    families: tuple[str, ...] = ("mlp", "cnn")  # models that can build it

    def spec(self) -> dict:
        """What the variant is, for the reuse key and the record (a placement's spec is what it
        was before norms and residual units existed, so old runs keep their keys)."""
        if self.unit is not None:
            return {"unit": self.unit}
        out = {"block": list(self.block), "head": list(self.head)}
        if self.norm is not None:
            out["norm"] = self.norm
        return out

    @property
    def has_norm_slot(self) -> bool:
        return self.unit is not None or "bn" in self.block or "bn" in self.head

    def layers_text(self) -> str:
        if self.unit is not None:
            return f"residual unit: {self.unit}"
        text = " -> ".join(self.block) + (f" (head: {' -> '.join(self.head)})" if self.head else "")
        return text.replace("bn", self.norm or "norm") if self.norm else text


def _placement(name, block, description, head=(), norm=None):
    return Variant(name, tuple(block), tuple(head), description, norm=norm)


def _unit(name, unit, description):
    return Variant(name, description=description, unit=unit, families=("resnet",))


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        _placement("plain", ("dense", "act"), "Dense/Conv -> ReLU: the lab's baseline"),
        _placement("dropout", ("dense", "act", "dropout"), "Dense/Conv -> ReLU -> Dropout(rate): the lab's regularized net"),
        _placement("bn-pre", ("dense", "bn", "act"), "Dense/Conv -> BatchNorm -> ReLU: BN before the activation (the paper, the lab)"),
        _placement("bn-post", ("dense", "act", "bn"), "Dense/Conv -> ReLU -> BatchNorm: BN after the activation"),
        _placement("bn-preact", ("bn", "act", "dense"),
                   "BatchNorm -> ReLU -> Dense/Conv, then BN -> ReLU before the logits: the slides' norm -> activation -> layer",
                   head=("bn", "act")),
        _placement("ln-pre", ("dense", "bn", "act"), "Dense/Conv -> LayerNorm (over all of a sample's features) -> ReLU",
                   norm="layer"),
        _placement("gn-pre", ("dense", "bn", "act"), "Dense/Conv -> GroupNorm (norm_groups) -> ReLU (Wu & He 2018)",
                   norm="group"),
        _placement("in-pre", ("dense", "bn", "act"), "Dense/Conv -> InstanceNorm (one group per channel) -> ReLU",
                   norm="instance"),
        _placement("brn-pre", ("dense", "bn", "act"), "Dense/Conv -> Batch Renorm (renorm_rmax, renorm_dmax) -> ReLU (Ioffe 2017)",
                   norm="renorm"),
        _unit("res-original", "original", "He et al. (a): conv-BN-ReLU-conv-BN, add, then ReLU"),
        _unit("res-bn-after-add", "bn-after-add", "He et al. (b): conv-BN-ReLU-conv, add, then BN-ReLU"),
        _unit("res-relu-before-add", "relu-before-add", "He et al. (c): conv-BN-ReLU-conv-BN-ReLU, then add"),
        _unit("res-relu-preact", "relu-preact", "He et al. (d): ReLU-conv-BN-ReLU-conv-BN, then add"),
        _unit("res-full-preact", "full-preact", "He et al. (e): BN-ReLU-conv-BN-ReLU-conv, then add"),
    )
}

TOKENS = ("dense", "bn", "act", "dropout")
UNITS = tuple(v.unit for v in VARIANTS.values() if v.unit)


def resolve(name: str, define: dict | None = None) -> Variant:
    """The variant called `name`: built in, or defined in an experiment's `define:`."""
    if define and name in define:
        return from_yaml(name, define[name])
    if name not in VARIANTS:
        raise unknown_name("variant", name, list(VARIANTS) + list(define or {}))
    return VARIANTS[name]


def from_yaml(name: str, spec) -> Variant:
    """A Variant from `[dense, bn, act]` or `{block: [...], head: [...], norm: ..., description: ...}`,
    or `{unit: original}` for a residual net."""
    if isinstance(spec, list):
        spec = {"block": spec}
    if isinstance(spec, dict) and "unit" in spec:
        unknown = set(spec) - {"unit", "description"}
        if unknown:
            raise UsageError(f"variant {name!r}: unknown key {sorted(unknown)[0]!r}; a residual variant takes unit, description")
        if spec["unit"] not in UNITS:
            raise unknown_name(f"residual unit of variant {name!r}", str(spec["unit"]), UNITS)
        return _unit(name, spec["unit"], str(spec.get("description", f"defined in YAML: residual unit {spec['unit']}")))
    if not isinstance(spec, dict) or not isinstance(spec.get("block"), list):
        raise UsageError(f"variant {name!r}: write a list of layers, e.g. [dense, bn, act]")
    unknown = set(spec) - {"block", "head", "description", "norm"}
    if unknown:
        raise UsageError(f"variant {name!r}: unknown key {sorted(unknown)[0]!r}; use block, head, norm, description")
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
    norm = spec.get("norm")
    if norm is not None:
        from .norms import NORMS

        if norm not in NORMS:
            raise unknown_name(f"norm of variant {name!r}", str(norm), NORMS)
    return Variant(name, block, head, str(spec.get("description", "defined in YAML: " + " -> ".join(block))), norm=norm)
