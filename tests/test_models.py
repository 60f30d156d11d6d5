"""The model families build what they say: every family x every built-in variant it accepts has its
layers in the right order and the parameter count worked out by hand; the five residual units are
He et al.'s (2016, Figure 4); planning (`reads`, `check`) needs no TensorFlow; a real BN after a
conv keeps per-channel statistics; a saved convnet and ResNet reload and predict the same.

Real Keras, tiny nets (the defaults are already small: a 16-filter 2x2 convnet, ResNet-8).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bnexp import models
from bnexp.config import Config
from bnexp.errors import UsageError
from bnexp.models import FAMILIES, VARIANTS, from_yaml

SHAPE = (28, 28, 1)
BN, GN, ACT, CONV = "BatchNormalization", "GroupNormalization", "Activation", "Conv2D"
NORM_CLASS = {"batch": BN, "renorm": BN, "layer": GN, "group": GN, "instance": GN}
# weights per channel: BN gamma, beta, moving mean, moving variance; Keras's renorm adds moving_stddev,
# renorm_mean, renorm_stddev; GroupNormalization (LN, GN and IN here) gamma and beta
NORM_PARAMS = {"batch": 4, "renorm": 7, "layer": 2, "group": 2, "instance": 2, "none": 0}

ACCEPTED = [(fam, name) for fam in sorted(FAMILIES) for name, v in VARIANTS.items() if fam in v.families]


def _norm(variant, cfg) -> str:
    return variant.norm or cfg.norm


def _classes(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def _inputs(model, name) -> list[str]:
    """Names of the layers whose outputs feed layer `name`."""
    node = model.get_layer(name)._inbound_nodes[0]
    return [t._keras_history.operation.name for t in node.input_tensors]


# --- placements (mlp, cnn): order and parameters from the variant's tokens

def _token_classes(tokens, variant, cfg, dense: str) -> list[str]:
    drop = "SpatialDropout2D" if (dense == CONV and cfg.spatial_dropout) else "Dropout"
    cls = {"dense": dense, "bn": NORM_CLASS.get(_norm(variant, cfg)), "act": ACT, "dropout": drop}
    return [cls[t] for t in tokens if not (t == "bn" and _norm(variant, cfg) == "none")]


def _placement_params(variant, cfg, layers: list[tuple[int, int, int]], logits_in: int) -> int:
    """layers: (kernel positions, in channels, out channels) of each dense/conv in order; the blocks are
    one after another (pooling between stages changes no channel count), then the head. A norm sees the
    channels of the layer before it (or the input's); a layer's bias goes with bn_drop_bias if a norm follows."""
    per = NORM_PARAMS[_norm(variant, cfg)]
    flat = list(variant.block) * len(layers) + list(variant.head)
    total, c, j = 0, layers[0][1], 0
    for i, tok in enumerate(flat):
        if tok == "dense":
            k2, cin, c = layers[j]
            j += 1
            bias = cfg.use_bias and not (cfg.bn_drop_bias and flat[i + 1:i + 2] == ["bn"])
            total += k2 * cin * c + (c if bias else 0)
        elif tok == "bn":
            total += per * c
    return total + logits_in * 10 + 10


def _cnn_expected(variant, cfg):
    kinds = ["InputLayer"]
    for s in range(cfg.stages):
        if s:
            kinds.append("MaxPooling2D")
        kinds += _token_classes(variant.block, variant, cfg, CONV) * cfg.convs_per_stage
    kinds += _token_classes(variant.head, variant, cfg, CONV)
    kinds += ["Flatten" if cfg.cnn_head == "flatten" else "GlobalAveragePooling2D", "Dense"]
    convs, c = [], SHAPE[-1]
    for s in range(cfg.stages):
        for _ in range(cfg.convs_per_stage):
            convs.append((cfg.kernel_size ** 2, c, cfg.filters * 2 ** s))
            c = cfg.filters * 2 ** s
    side = SHAPE[0] // 2 ** (cfg.stages - 1)
    logits_in = c * side * side if cfg.cnn_head == "flatten" else c
    return kinds, _placement_params(variant, cfg, convs, logits_in)


def _mlp_expected(variant, cfg):
    kinds = ["InputLayer", "Flatten"] + _token_classes(variant.block, variant, cfg, "Dense") * cfg.depth
    kinds += _token_classes(variant.head, variant, cfg, "Dense") + ["Dense"]
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    dense = [(1, d if i == 0 else cfg.width, cfg.width) for i in range(cfg.depth)]
    return kinds, _placement_params(variant, cfg, dense, cfg.width)


# Spelled out for the default 2-stage x 2-conv convnet (the formula above must agree)
CNN_LITERAL = {
    "plain": ["InputLayer", CONV, ACT, CONV, ACT, "MaxPooling2D", CONV, ACT, CONV, ACT, "GlobalAveragePooling2D", "Dense"],
    "dropout": ["InputLayer", CONV, ACT, "Dropout", CONV, ACT, "Dropout", "MaxPooling2D", CONV, ACT, "Dropout", CONV, ACT,
                "Dropout", "GlobalAveragePooling2D", "Dense"],
    "bn-pre": ["InputLayer", CONV, BN, ACT, CONV, BN, ACT, "MaxPooling2D", CONV, BN, ACT, CONV, BN, ACT,
               "GlobalAveragePooling2D", "Dense"],
    "bn-post": ["InputLayer", CONV, ACT, BN, CONV, ACT, BN, "MaxPooling2D", CONV, ACT, BN, CONV, ACT, BN,
                "GlobalAveragePooling2D", "Dense"],
    "bn-preact": ["InputLayer", BN, ACT, CONV, BN, ACT, CONV, "MaxPooling2D", BN, ACT, CONV, BN, ACT, CONV, BN, ACT,
                  "GlobalAveragePooling2D", "Dense"],
}
# 3x3 convs 1->16->16, pool, 16->32->32 (with bias), logits 32x10+10
CNN_PLAIN_PARAMS = (9 * 1 * 16 + 16) + (9 * 16 * 16 + 16) + (9 * 16 * 32 + 32) + (9 * 32 * 32 + 32) + (32 * 10 + 10)


# --- residual units (He et al. 2016, Figure 4): (pre-activation shared before the split, branch, after the add)
UNIT = {
    "original": ([], [CONV, BN, ACT, CONV, BN], [ACT]),
    "bn-after-add": ([], [CONV, BN, ACT, CONV], [BN, ACT]),
    "relu-before-add": ([], [CONV, BN, ACT, CONV, BN, ACT], []),
    "relu-preact": ([ACT], [CONV, BN, ACT, CONV, BN], []),
    "full-preact": ([BN, ACT], [CONV, BN, ACT, CONV], []),
}
FIRST_UNIT = {  # the first unit, identity shortcut, as the paper draws it
    "original": [CONV, BN, ACT, CONV, BN, "Add", ACT],
    "bn-after-add": [CONV, BN, ACT, CONV, "Add", BN, ACT],
    "relu-before-add": [CONV, BN, ACT, CONV, BN, ACT, "Add"],
    "relu-preact": [ACT, CONV, BN, ACT, CONV, BN, "Add"],
    "full-preact": [BN, ACT, CONV, BN, ACT, CONV, "Add"],
}
PREACT = ("relu-preact", "full-preact")


def _stem(unit) -> list[str]:
    return ["InputLayer", CONV] if unit in PREACT else ["InputLayer", CONV, BN, ACT]


def _resnet_expected(variant, cfg):
    unit = variant.unit
    pre, branch, post = UNIT[unit]
    kinds = _stem(unit)
    total = 9 * 1 * 16 + 16 + (0 if unit in PREACT else 4 * 16)  # stem conv (+ BN)
    cin = 16
    for s, f in enumerate((16, 32, 64)):
        for b in range(cfg.blocks_per_stage):
            project = s > 0 and b == 0
            kinds += pre + branch + ([CONV] if project else []) + ["Add"] + post  # Keras lists the projection last
            total += (9 * cin * f + f) + (9 * f * f + f) + ((cin * f + f) if project else 0)
            total += 4 * (cin + f if unit == "full-preact" else 2 * f)  # (e) normalizes the unit's input
            cin = f
    if unit in PREACT:
        kinds += [BN, ACT]
        total += 4 * 64
    return kinds + ["GlobalAveragePooling2D", "Dense"], total + 64 * 10 + 10


@pytest.mark.parametrize("fam,name", ACCEPTED)
def test_layer_order_and_parameter_count(fam, name):
    variant, cfg = VARIANTS[name], Config(model=fam)
    model, built = models.build_model(variant, cfg, SHAPE, 10)
    kinds, params = {"mlp": _mlp_expected, "cnn": _cnn_expected, "resnet": _resnet_expected}[fam](variant, cfg)
    assert _classes(model) == kinds
    assert model.count_params() == params
    assert models.count_params(variant, cfg, SHAPE, 10) == params
    assert model.layers[0].name == "images" and model.layers[-1].name == "logits" and model.layers[-1].units == 10
    # taps: the input of every nonlinearity, in graph order; stat layers: every moving-statistics norm
    acts = [l for l in model.layers if type(l).__name__ == ACT]
    assert built.tap_names == [l.name for l in acts] and len(built.taps) == len(acts)
    moving = [l.name for l in model.layers if type(l).__name__ == BN]
    assert built.stat_layers == moving
    if fam == "cnn" and name in CNN_LITERAL:
        assert kinds == CNN_LITERAL[name]
    if fam == "resnet":
        stem = len(_stem(variant.unit))
        assert kinds[stem:stem + 7] == FIRST_UNIT[variant.unit]


def test_cnn_layer_names_and_plain_count():
    model, built = models.build_model(VARIANTS["bn-pre"], Config(model="cnn"), SHAPE, 10)
    assert [l.name for l in model.layers] == [
        "images", "conv_0", "bn_0", "act_0", "conv_1", "bn_1", "act_1", "pool_0",
        "conv_2", "bn_2", "act_2", "conv_3", "bn_3", "act_3", "gap", "logits"]
    assert built.stat_layers == ["bn_0", "bn_1", "bn_2", "bn_3"]
    plain, _ = models.build_model(VARIANTS["plain"], Config(model="cnn"), SHAPE, 10)
    assert plain.count_params() == CNN_PLAIN_PARAMS == 16698


def test_cnn_shape_keys_flatten_head_and_dropped_bias():
    cfg = Config(model="cnn", filters=8, stages=3, convs_per_stage=1, kernel_size=5, cnn_head="flatten", bn_drop_bias=True)
    model, _ = models.build_model(VARIANTS["bn-pre"], cfg, SHAPE, 10)
    convs = [l for l in model.layers if type(l).__name__ == CONV]
    assert [c.filters for c in convs] == [8, 16, 32]
    assert all(c.kernel_size == (5, 5) and c.padding == "same" and not c.use_bias for c in convs)
    assert _classes(model).count("MaxPooling2D") == 2 and model.get_layer("flatten").output.shape == (None, 7 * 7 * 32)
    # 5x5 kernels, no conv bias (BN's beta replaces it), BN on 8/16/32 channels, logits from 28/4 = 7 x 7 x 32
    assert model.count_params() == (25 * 1 * 8 + 25 * 8 * 16 + 25 * 16 * 32) + 4 * (8 + 16 + 32) + (7 * 7 * 32 * 10 + 10)
    assert model.count_params() == _cnn_expected(VARIANTS["bn-pre"], cfg)[1]
    plain, _ = models.build_model(VARIANTS["plain"], cfg, SHAPE, 10)
    assert all(l.use_bias for l in plain.layers if type(l).__name__ == CONV)  # no norm follows: the bias stays


def test_cnn_spatial_dropout_and_a_yaml_placement():
    cfg = Config(model="cnn", stages=1, convs_per_stage=2, spatial_dropout=True, dropout=0.25)
    mine = from_yaml("mine", {"block": ["bn", "dense", "act", "dropout"], "head": ["bn"], "norm": "group"})
    model, built = models.build_model(mine, cfg, SHAPE, 10)
    assert _classes(model) == ["InputLayer", GN, CONV, ACT, "SpatialDropout2D", GN, CONV, ACT, "SpatialDropout2D", GN,
                               "GlobalAveragePooling2D", "Dense"]
    assert model.get_layer("dropout_0").rate == 0.25
    assert model.get_layer("bn_0").groups == 1  # the input image has one channel: GN caps its groups at it
    assert built.stat_layers == []  # GN keeps no moving statistics
    assert model.count_params() == _cnn_expected(mine, cfg)[1]


@pytest.mark.parametrize("unit", list(UNIT))
def test_residual_unit_shortcuts(unit):
    variant = next(v for v in VARIANTS.values() if v.unit == unit)
    model, built = models.build_model(variant, Config(model="resnet"), SHAPE, 10)
    stem_out = "conv_0" if unit in PREACT else "act_0"
    first = model.layers[len(_stem(unit))].name
    # the first unit: identity shortcut from the stem, the branch's last layer added to it
    assert _inputs(model, first) == [stem_out]
    add0 = _inputs(model, "add_0")
    assert add0[1] == stem_out and type(model.get_layer(add0[0])).__name__ == UNIT[unit][1][-1]
    # the first unit of stage 2: a 1x1, stride-2 projection to 32 filters, fed what the branch is fed
    proj = model.get_layer("proj_0")
    assert (proj.kernel_size, proj.strides, proj.filters) == ((1, 1), (2, 2), 32)
    assert _inputs(model, "add_1")[1] == "proj_0"
    source = _inputs(model, "proj_0")[0]
    assert _inputs(model, "conv_3") == [source]
    if unit in PREACT:  # the pre-activation is applied once before the split (He et al.'s code)
        assert type(model.get_layer(source)).__name__ == ACT
        before = _inputs(model, source)[0]  # (d): the previous sum; (e): its norm, fed the previous sum
        assert ["add_0"] == ([before] if unit == "relu-preact" else _inputs(model, before))
        assert unit == "relu-preact" or type(model.get_layer(before)).__name__ == BN
    else:  # the previous unit's output: post-add act, or the sum itself in (c)
        assert source == ("add_0" if unit == "relu-before-add" else "act_2")
    assert model.get_layer("add_2").output.shape == (None, 7, 7, 64)
    if unit == "full-preact":  # per-channel statistics of each BN's input, the stem's 16 to the final 64
        shapes = [tuple(model.get_layer(n).moving_mean.shape) for n in built.stat_layers]
        assert shapes == [(16,), (16,), (16,), (32,), (32,), (64,), (64,)]


def test_resnet_depth_and_a_group_norm_resnet():
    cfg = Config(model="resnet", blocks_per_stage=2, norm="group", norm_groups=8)
    model, built = models.build_model(VARIANTS["res-full-preact"], cfg, SHAPE, 10)
    convs = [l for l in model.layers if type(l).__name__ == CONV and not l.name.startswith("proj")]
    assert len(convs) + 1 == 6 * 2 + 2  # ResNet-14: the convs plus the logits
    gns = [l for l in model.layers if type(l).__name__ == GN]
    assert len(gns) == 2 * 6 + 1 and {l.groups for l in gns} == {8} and built.stat_layers == []
    assert not any(type(l).__name__ == BN for l in model.layers)
    # GN has gamma and beta only: the BN count with 2 per channel instead of 4
    bn_model, _ = models.build_model(VARIANTS["res-full-preact"], Config(model="resnet", blocks_per_stage=2), SHAPE, 10)
    channels = sum(l.moving_mean.shape[0] for l in bn_model.layers if type(l).__name__ == BN)
    assert model.count_params() == bn_model.count_params() - 2 * channels


def test_family_and_variant_mismatch_is_a_usage_error():
    with pytest.raises(UsageError, match="resnet"):
        models.check(VARIANTS["res-full-preact"], Config(model="mlp"))
    with pytest.raises(UsageError, match="--set model=resnet"):
        models.check(VARIANTS["res-original"], Config(model="cnn"))
    with pytest.raises(UsageError, match="mlp, cnn"):
        models.check(VARIANTS["bn-pre"], Config(model="resnet"))
    with pytest.raises(UsageError, match="needs images"):
        models.check(VARIANTS["bn-pre"], Config(model="cnn"), input_shape=(784,))
    with pytest.raises(UsageError, match="stages=5"):  # 28 -> 14 -> 7 -> 3 -> 1: a sixth stage has nothing to pool
        models.check(VARIANTS["plain"], Config(model="cnn", stages=6))
    models.check(VARIANTS["plain"], Config(model="cnn", stages=5))
    with pytest.raises(UsageError, match="norm_groups=3"):  # checked while planning, channel counts in Python
        models.check(VARIANTS["res-original"], Config(model="resnet", norm="group", norm_groups=3))


_READS = r"""
import json, sys
from bnexp import models
from bnexp.config import Config
from bnexp.models import VARIANTS
cases = {"cnn-plain": ("plain", "cnn"), "cnn-bn-pre": ("bn-pre", "cnn"), "cnn-dropout": ("dropout", "cnn"),
         "resnet": ("res-original", "resnet"), "mlp-plain": ("plain", "mlp")}
out = {k: sorted(models.reads(VARIANTS[v], Config(model=m))) for k, (v, m) in cases.items()}
out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps(out))
"""


def test_reads_without_tensorflow():
    res = subprocess.run([sys.executable, "-c", _READS], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    r = {k: set(v) for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}
    assert r.pop("loaded") == set()
    shape = {"filters", "kernel_size", "stages", "convs_per_stage", "cnn_head"}
    assert shape <= r["cnn-plain"] and {"model", "activation", "initializer", "use_bias"} <= r["cnn-plain"]
    assert not r["cnn-plain"] & {"width", "depth", "blocks_per_stage", "bn_momentum", "dropout", "spatial_dropout"}
    assert {"bn_momentum", "bn_epsilon"} <= r["cnn-bn-pre"]
    assert {"dropout", "spatial_dropout"} <= r["cnn-dropout"]
    assert {"blocks_per_stage", "bn_momentum", "activation"} <= r["resnet"]
    assert not r["resnet"] & (shape | {"width", "depth", "dropout", "spatial_dropout"})
    assert "bn_momentum" not in r["mlp-plain"] and not r["mlp-plain"] & shape


def test_bn_after_a_conv_keeps_per_channel_moving_statistics():
    import keras

    keras.utils.set_random_seed(0)
    cfg = Config(model="cnn", filters=4, stages=1, convs_per_stage=1, bn_momentum=0.9)
    model, built = models.build_model(VARIANTS["bn-pre"], cfg, SHAPE, 10)
    bn = model.get_layer("bn_0")
    assert built.stat_layers == ["bn_0"] and bn.moving_mean.shape == (4,) and bn.moving_variance.shape == (4,)
    rng = np.random.default_rng(0)
    x, y = rng.random((16, *SHAPE), dtype=np.float32), rng.integers(0, 10, 16)
    conv = keras.Model(model.input, model.get_layer("conv_0").output)(x).numpy()  # BN's input, before the step
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.train_on_batch(x, y)
    # one step from mean 0, variance 1: moving = 0.9 * initial + 0.1 * the batch's per-channel statistic over N, H, W
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.9 + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fam,name", [("cnn", "bn-pre"), ("resnet", "res-full-preact")])
def test_save_and_load_predict_the_same(fam, name, tmp_path):
    import keras

    cfg = Config(model=fam, filters=4, stages=2, convs_per_stage=1)
    model, _ = models.build_model(VARIANTS[name], cfg, SHAPE, 10)
    x = np.random.default_rng(1).random((4, *SHAPE), dtype=np.float32)
    model(x, training=True)  # move the moving statistics off their initial values
    path = tmp_path / "x.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-5, atol=1e-6)
