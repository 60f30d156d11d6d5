"""BN's training pass through TensorFlow's fused kernel (bnexp/train/fused.py) computes what
Keras's own BatchNormalization computes: the same outputs, gradients and moving statistics, to
float32 rounding, on real images through bnexp's nets; and it is taken only where that holds."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from bnexp import data, models
from bnexp.config import Config
from bnexp.train import fused


@pytest.fixture(scope="module")
def images():
    sample = data.load(data.resolve("mnist-sample"))
    return tf.constant(sample.x_train[:64].astype(np.float32) / np.float32(255.0)), tf.constant(sample.y_train[:64])


def _model(variant: str, **changes):
    keras.utils.set_random_seed(0)
    cfg = Config(dataset="mnist-sample", filters=8).replace(**changes)
    model, _ = models.build_model(models.resolve(variant), cfg, (28, 28, 1), 10)
    return model


def _one_step(model, forward, x, y):
    """Logits, gradients and the moving statistics after one training-mode pass, from the
    model's weights as they are; the weights are put back afterwards."""
    start = [v.numpy() for v in model.variables]
    with tf.GradientTape() as tape:
        logits = forward(x)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, model.trainable_variables)]
    moving = [v.numpy().astype(np.float64) for v in model.non_trainable_variables]
    for v, a in zip(model.variables, start):
        v.assign(a)
    return logits.numpy().astype(np.float64), grads, moving


def _float64_twin(variant, net, **changes):
    """The same net with the same weights in float64: the reference both float32 paths are held to."""
    policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        twin = _model(variant, **changes)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy(policy)
    assert {layer.compute_dtype for layer in twin.layers[1:]} == {"float64"}
    for a, b in zip(twin.variables, net.variables):
        a.assign(b.numpy().astype(np.float64))
    return twin


def _err(a, b):
    """The largest error of a list of arrays against the exact ones, each relative to its array's
    scale; an array that is 0 in exact arithmetic (a conv's bias before BN) is held to 1e-3 of the
    largest array's scale instead."""
    top = max(float(np.max(np.abs(y))) for y in b)
    return max(float(np.max(np.abs(x - y))) / max(float(np.max(np.abs(y))), 1e-3 * top) for x, y in zip(a, b))


@pytest.mark.parametrize("variant,model", [("bn-pre", "cnn"), ("bn-post", "cnn"), ("res-original", "resnet"),
                                           ("res-full-preact", "resnet")])
def test_the_fused_pass_is_float32_rounding_away_from_the_exact_result(images, variant, model):
    """Both float32 paths against the same net in float64. The two differ from each other by
    float32 rounding, which the backward pass through several BNs amplifies to ~0.5 % of a
    gradient (a variance of 0.003 normalized next to epsilon 0.001 is ill-conditioned), so each
    is held to the exact result instead: the fused pass's logits and moving statistics within
    float32 rounding of it, and its gradients no further from it than Keras's own."""
    x, y = images
    net = _model(variant, model=model)
    forward = fused.training_forward(net)
    assert forward is not None
    twin = _float64_twin(variant, net, model=model)
    assert fused.training_forward(twin) is None  # float64: Keras's own call
    exact = _one_step(twin, tf.function(lambda b: twin(b, training=True)), tf.cast(x, tf.float64), y)
    ours = _one_step(net, tf.function(forward), x, y)
    keras_own = _one_step(net, tf.function(lambda b: net(b, training=True)), x, y)
    assert len(ours[1]) == len(exact[1]) > 0 and len(ours[2]) == len(exact[2]) > 0
    errors = {what: (_err(ours[i] if i else [ours[0]], exact[i] if i else [exact[0]]),
                     _err(keras_own[i] if i else [keras_own[0]], exact[i] if i else [exact[0]]))
              for i, what in enumerate(("logits", "gradients", "moving statistics"))}
    # measured (4 nets): the kernel's statistics are 2-5x further from exact than Keras's two-pass
    # moments, at ~2e-4 of their scale; its gradients are as close as Keras's or closer
    assert errors["logits"][0] < 2e-4 and errors["moving statistics"][0] < 1e-3, errors
    assert errors["gradients"][0] <= 1.5 * errors["gradients"][1] + 1e-6, errors
    moved = [v.numpy() for v in net.non_trainable_variables]
    assert any(not np.allclose(m, s) for m, s in zip(ours[2], moved))  # the pass did move the statistics


@pytest.mark.parametrize("variant,changes", [
    ("bn-pre", {}),  # the MLP: BN after a Dense sees 2-D inputs
    ("bn-pre", {"model": "cnn", "bn_epsilon": 1e-5}),  # the kernel would raise it to 1.001e-5
    ("brn-pre", {"model": "cnn"}),  # renorm
    ("bn-pre", {"model": "cnn", "bn_virtual_batch": 16}),  # ghost batches: a subclass
    ("gn-pre", {"model": "cnn"}),
    ("plain", {"model": "cnn"}),
])
def test_only_layers_the_kernel_computes_exactly_take_the_fused_path(variant, changes):
    assert fused.training_forward(_model(variant, **changes)) is None


def test_a_cnn_with_the_default_epsilon_is_fused_in_every_bn_layer():
    net = _model("bn-pre", model="cnn")
    bns = [layer for layer in net.layers if type(layer).__name__ == "BatchNormalization"]
    assert len(bns) >= 4 and all(fused.fusable(layer) for layer in bns)
