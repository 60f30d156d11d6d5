"""A CIFAR-style ResNet (He et al. 2016), depth 6n+2 with n = blocks_per_stage:

    stem conv(16, 3x3) -> 3 stages x n basic units (16, 32, 64 filters) -> [final norm -> act]
    -> global average pooling -> logits

The first unit of stages 2 and 3 has stride 2, and its shortcut is a projection, a 1x1 conv
with stride 2 and no norm (He et al.'s resnet-pre-act.lua); every other shortcut is the
identity. The five units are He et al.'s Figure 4 / Table 2 (x: the unit's input, F: the
residual branch):

    (a) original         F = conv-norm-act-conv-norm,     x' = act(x + F(x))
    (b) bn-after-add     F = conv-norm-act-conv,          x' = act(norm(x + F(x)))
    (c) relu-before-add  F = conv-norm-act-conv-norm-act, x' = x + F(x)
    (d) relu-preact      F = act-conv-norm-act-conv-norm, x' = x + F(x)
    (e) full-preact      F = norm-act-conv-norm-act-conv, x' = x + F(x)

Stem and head per unit:
- (a), (b), (c): the stem is conv -> norm -> act, as in the original ResNet, so every unit is fed
  an activated tensor; no final norm (the last unit's output already went through its act).
- (d), (e): the stem is the conv alone and a final norm -> act comes before the pooling, as in
  He et al.'s code: the first unit's pre-activation normalizes and activates the stem's output.
  A projection unit applies its pre-activation (act, or norm -> act) once before the split, so
  the projection sees the activated input (resnet-pre-act.lua's "common BN, ReLU").

Every norm comes from the norm slot (`--set norm=group` gives a GN ResNet). A conv's bias is
dropped with bn_drop_bias when a norm follows it directly (or, in (b), through the addition).

Layer names, numbered in graph order per kind: images, conv_i (conv_0 is the stem), bn_i, act_i,
proj_i (projection shortcuts), add_i (one per unit), gap, logits.
"""

from __future__ import annotations

from ..errors import UsageError
from . import norms
from .kit import Kit
from .mlp import initializer

STEM_FILTERS = 16
STAGE_FILTERS = (16, 32, 64)
PREACT = ("relu-preact", "full-preact")


class _Net:
    """The layer makers of one build, with their name counters, taps and stat layers."""

    def __init__(self, kit: Kit, cfg, slot, built):
        self.kit, self.cfg, self.slot, self.built = kit, cfg, slot, built
        self.counts: dict[str, int] = {}

    def name(self, kind: str) -> str:
        i = self.counts.get(kind, 0)
        self.counts[kind] = i + 1
        return f"{kind}_{i}"

    def conv(self, x, filters: int, stride: int = 1, normed: bool = False, kernel: int = 3, kind: str = "conv"):
        cfg = self.cfg
        use_bias = cfg.use_bias and not (normed and cfg.bn_drop_bias)
        return self.kit.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                                      kernel_initializer=initializer(self.kit, cfg), name=self.name(kind))(x)

    def norm(self, x, channels: int):
        name = self.name("bn")
        if self.slot.moving_stats:
            self.built.stat_layers.append(name)
        return self.slot(name, channels)(x)

    def act(self, x):
        name = self.name("act")
        self.built.taps.append(x)
        self.built.tap_names.append(name)
        return self.kit.layers.Activation(self.cfg.activation, name=name)(x)

    def add(self, residual, shortcut):
        return self.kit.layers.Add(name=self.name("add"))([residual, shortcut])

    def shortcut(self, x, filters: int, stride: int, project: bool):
        return self.conv(x, filters, stride, kernel=1, kind="proj") if project else x


def _original(net: _Net, x, cin, cout, stride, project):
    r = net.act(net.norm(net.conv(x, cout, stride, normed=True), cout))
    r = net.norm(net.conv(r, cout, normed=True), cout)
    return net.act(net.add(r, net.shortcut(x, cout, stride, project)))


def _bn_after_add(net: _Net, x, cin, cout, stride, project):
    r = net.act(net.norm(net.conv(x, cout, stride, normed=True), cout))
    r = net.conv(r, cout, normed=True)  # the norm after the addition follows it
    return net.act(net.norm(net.add(r, net.shortcut(x, cout, stride, project)), cout))


def _relu_before_add(net: _Net, x, cin, cout, stride, project):
    r = net.act(net.norm(net.conv(x, cout, stride, normed=True), cout))
    r = net.act(net.norm(net.conv(r, cout, normed=True), cout))
    return net.add(r, net.shortcut(x, cout, stride, project))


def _relu_preact(net: _Net, x, cin, cout, stride, project):
    if project:  # one pre-activation before the split: the projection sees it too
        x = net.act(x)
        r = x
    else:
        r = net.act(x)
    r = net.act(net.norm(net.conv(r, cout, stride, normed=True), cout))
    r = net.norm(net.conv(r, cout, normed=True), cout)
    return net.add(r, net.shortcut(x, cout, stride, project))


def _full_preact(net: _Net, x, cin, cout, stride, project):
    if project:
        x = net.act(net.norm(x, cin))
        r = x
    else:
        r = net.act(net.norm(x, cin))
    r = net.act(net.norm(net.conv(r, cout, stride, normed=True), cout))
    r = net.conv(r, cout)
    return net.add(r, net.shortcut(x, cout, stride, project))


UNITS = {
    "original": _original,
    "bn-after-add": _bn_after_add,
    "relu-before-add": _relu_before_add,
    "relu-preact": _relu_preact,
    "full-preact": _full_preact,
}


def build(kit: Kit, cfg, variant, input_shape, num_classes):
    from . import Built

    if variant.unit not in UNITS:
        raise UsageError(f"model resnet builds the residual variants (res-original, res-full-preact, ...), not "
                         f"{variant.name!r}; use --set model=cnn for a placement variant")
    unit, blocks = UNITS[variant.unit], cfg.blocks_per_stage
    preact = variant.unit in PREACT
    inputs = kit.layers.Input(shape=input_shape, name="images")
    built = Built(inputs, None)
    net = _Net(kit, cfg, norms.slot(kit, cfg, variant), built)
    x = net.conv(inputs, STEM_FILTERS, normed=not preact)
    if not preact:
        x = net.act(net.norm(x, STEM_FILTERS))
    channels = STEM_FILTERS
    for s, filters in enumerate(STAGE_FILTERS):
        for b in range(blocks):
            stride = 2 if (s > 0 and b == 0) else 1
            project = stride != 1 or channels != filters
            x = unit(net, x, channels, filters, stride, project)
            channels = filters
    if preact:
        x = net.act(net.norm(x, channels))
    x = kit.layers.GlobalAveragePooling2D(name="gap")(x)
    built.logits = kit.layers.Dense(num_classes, kernel_initializer=initializer(kit, cfg), name="logits")(x)
    return built


def _family():
    from . import Family

    return Family("CIFAR-style ResNet, depth 6n+2 (n = blocks_per_stage): stem conv -> 3 stages x n residual units "
                  "(16/32/64 filters) -> gap -> logits; the unit is the variant's (He et al. 2016)", build,
                  images_only=True)


FAMILY = _family()
