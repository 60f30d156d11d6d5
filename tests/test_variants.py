"""Every registry entry builds the lab's net with its block in the right order."""

import pytest

from bnexp.config import Config, load
from bnexp.errors import UsageError
from bnexp.variants import VARIANTS, build_model, from_yaml, resolve

EXPECTED = {
    "plain": ["Dense", "Activation"],
    "dropout": ["Dense", "Activation", "Dropout"],
    "bn-pre": ["Dense", "BatchNormalization", "Activation"],
    "bn-post": ["Dense", "Activation", "BatchNormalization"],
    "bn-preact": ["BatchNormalization", "Activation", "Dense"],
}


def _params(cfg, name):
    d, w, bn = 784, cfg.width, 0
    dense = (d * w + w) + (cfg.depth - 1) * (w * w + w) + (w * 10 + 10)
    bn_layers = {"bn-pre": cfg.depth, "bn-post": cfg.depth}.get(name, 0)
    if name == "bn-preact":  # BN on the input, then before each later Dense and the logits
        return dense + 4 * d + 4 * w * cfg.depth
    return dense + 4 * w * bn_layers + bn


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_layer_order_and_parameter_count(name):
    cfg = Config()
    model = build_model(VARIANTS[name], cfg, (28, 28, 1))
    kinds = [type(l).__name__ for l in model.layers][2:-1]  # skip InputLayer and Flatten, and the logits
    head = {"bn-preact": ["BatchNormalization", "Activation"]}.get(name, [])
    assert kinds == EXPECTED[name] * cfg.depth + head
    assert [type(l).__name__ for l in model.layers][:2] == ["InputLayer", "Flatten"]
    assert type(model.layers[-1]).__name__ == "Dense" and model.layers[-1].units == 10
    assert model.count_params() == _params(cfg, name)
    # the lab's layers: glorot-uniform Dense with bias, ReLU, Keras BN defaults
    for layer in model.layers:
        if type(layer).__name__ == "Dense":
            assert layer.use_bias and type(layer.kernel_initializer).__name__ == "GlorotUniform"
        if type(layer).__name__ == "Activation":
            assert layer.activation.__name__ == "relu"
        if type(layer).__name__ == "BatchNormalization":
            assert (layer.momentum, layer.epsilon) == (0.99, 1e-3)


def test_tf2_net_is_a_config_change():
    cfg = load("experiments/lab-tf2.yaml").config
    model = build_model(VARIANTS["bn-pre"], cfg, (28, 28, 1))
    assert [l.units for l in model.layers if type(l).__name__ == "Dense"] == [512] * 4 + [10]


def test_paper_net_drops_bias_before_bn_and_uses_sigmoid():
    cfg = Config(depth=3, width=100, activation="sigmoid", initializer="normal", bn_drop_bias=True)
    model = build_model(VARIANTS["bn-pre"], cfg, (28, 28, 1))
    dense = [l for l in model.layers if type(l).__name__ == "Dense"]
    assert [d.use_bias for d in dense] == [False, False, False, True]
    assert all(type(d.kernel_initializer).__name__ == "RandomNormal" for d in dense)
    plain = build_model(VARIANTS["plain"], cfg, (28, 28, 1))
    assert all(l.use_bias for l in plain.layers if type(l).__name__ == "Dense")


def test_yaml_defined_variant():
    v = from_yaml("mine", ["dense", "act", "bn", "dropout"])
    model = build_model(v, Config(depth=1, width=8), (28, 28, 1))
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
