"""Every registry entry builds the lab's net with its block in the right order."""

import pytest

from bnexp.config import Config, load
from bnexp.errors import UsageError
from bnexp import models
from bnexp.models import VARIANTS, from_yaml, resolve

def build(variant, cfg):
    return models.build_model(variant, cfg, (28, 28, 1), 10)[0]


def test_the_labs_layers():
    """Layer order and parameter counts of every family x variant: tests/test_models.py. Here:
    the lab's defaults, glorot-uniform Dense with bias, ReLU, Keras's BN momentum and epsilon."""
    model = build(VARIANTS["bn-pre"], Config())
    for layer in model.layers:
        if type(layer).__name__ == "Dense":
            assert layer.use_bias and type(layer.kernel_initializer).__name__ == "GlorotUniform"
        if type(layer).__name__ == "Activation":
            assert layer.activation.__name__ == "relu"
        if type(layer).__name__ == "BatchNormalization":
            assert (layer.momentum, layer.epsilon) == (0.99, 1e-3)
    assert [type(l).__name__ for l in model.layers] == ["InputLayer", "Flatten"] + ["Dense", "BatchNormalization",
                                                                                      "Activation"] * 2 + ["Dense"]


def test_tf2_net_is_a_config_change():
    cfg = load("experiments/lab-tf2.yaml").config
    model = build(VARIANTS["bn-pre"], cfg)
    assert [l.units for l in model.layers if type(l).__name__ == "Dense"] == [512] * 4 + [10]


def test_paper_net_drops_bias_before_bn_and_uses_sigmoid():
    cfg = Config(depth=3, width=100, activation="sigmoid", initializer="normal", bn_drop_bias=True)
    model = build(VARIANTS["bn-pre"], cfg)
    dense = [l for l in model.layers if type(l).__name__ == "Dense"]
    assert [d.use_bias for d in dense] == [False, False, False, True]
    assert all(type(d.kernel_initializer).__name__ == "RandomNormal" for d in dense)
    plain = build(VARIANTS["plain"], cfg)
    assert all(l.use_bias for l in plain.layers if type(l).__name__ == "Dense")


def test_yaml_defined_variant():
    v = from_yaml("mine", ["dense", "act", "bn", "dropout"])
    model = build(v, Config(depth=1, width=8))
    assert [type(l).__name__ for l in model.layers][2:] == ["Dense", "Activation", "BatchNormalization", "Dropout", "Dense"]
    assert resolve("mine", {"mine": ["dense", "act"]}).block == ("dense", "act")


@pytest.mark.parametrize("spec, phrase", [
    (["dense", "conv"], "unknown layer 'conv'"),
    (["act", "bn"], "exactly one dense"),
    ({"block": ["dense"], "head": ["dense"]}, "may not hold a dense"),
    ("dense", "write a list of layers"),
])
def test_bad_yaml_variants(spec, phrase):
    with pytest.raises(UsageError, match=phrase):
        from_yaml("bad", spec)


def test_unknown_variant_lists_names_and_nearest():
    with pytest.raises(UsageError) as e:
        resolve("bn-per")
    assert "did you mean 'bn-pre'" in str(e.value) and "plain" in str(e.value)
