"""BatchNormalization's training pass through TensorFlow's fused kernel, in bnexp's step.

Keras 3's BatchNormalization computes a training pass from generic ops: the batch moments, then
(x - mean) / sqrt(var + eps) * gamma + beta, and their gradients, each a pass over the whole
activation. After a convolution on a CPU that is most of a step. TensorFlow's FusedBatchNormV3
(and its gradient, oneDNN on CPU) does the same arithmetic in one kernel each way: on the
benchmark's cnn it cut bnexp's step from 129 to 97 ms, and from 178 to 128 ms on the resnet
(`benchmarks/bench.py --what-if`, before this path existed; benchmarks/README.md).

Only bnexp's compiled training step takes this path. The model, its saved file, inference, the
eval points, batch-statistics eval and recalibration all stay Keras's own layer, so a saved
model.keras is plain Keras. The function is the same as Keras's: the batch mean and biased
variance normalize, and the moving averages get Keras's update,
    moving = moving * momentum + batch * (1 - momentum),
with the kernel's variance, which is Bessel-corrected, scaled back by (n - 1) / n. Results agree
with Keras's path to float32 rounding, not bit for bit. Held against the same net in float64
(tests/test_fused.py), the kernel's batch statistics are 2-5x further from exact than Keras's
two-pass moments, at about 2e-4 of their scale, and its gradients are as close as Keras's or
closer.

A layer takes the fused path only where the kernel computes exactly that function: the plain
BatchNormalization class (not renorm, ghost batches or any subclass) on a 4-D float32 input,
normalizing the last axis, with both gamma and beta, and an epsilon the kernel does not raise
(it clamps epsilons below 1.001e-5). Everything else, the MLP's BN included, runs Keras's call
unchanged, so the MLP's numbers stay bit-identical to earlier versions.
"""

from __future__ import annotations

KERNEL_MIN_EPSILON = 1.001e-5  # tf.compat.v1.nn.fused_batch_norm raises smaller epsilons to this


def fusable(layer) -> bool:
    """Whether `layer`'s training pass can run through the fused kernel with the same result."""
    import keras

    if type(layer) is not keras.layers.BatchNormalization:
        return False
    shape = layer.input.shape
    return (len(shape) == 4 and layer.axis in (-1, 3) and not layer.renorm and layer.center and layer.scale
            and not getattr(layer, "synchronized", False) and layer.epsilon >= KERNEL_MIN_EPSILON
            and layer.input.dtype == "float32" and layer.compute_dtype == "float32")


def training_call(layer):
    """`layer`'s training-mode call through the fused kernel (for a `fusable` layer)."""
    import tensorflow as tf

    def call(x, *args, **kwargs):
        y, mean, var = tf.compat.v1.nn.fused_batch_norm(x, layer.gamma, layer.beta, epsilon=layer.epsilon,
                                                         is_training=True)
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        var = var * ((n - 1.0) / n)  # the kernel's variance is Bessel-corrected; Keras's is not
        m = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * m + mean * (1.0 - m))
        layer.moving_variance.assign(layer.moving_variance * m + var * (1.0 - m))
        return y

    return call


def training_forward(model):
    """model(x, training=True), with every fusable BatchNormalization through the fused kernel;
    None when the model has no such layer (then call the model itself, as before)."""
    from keras.src.models.functional import operation_fn

    fused = {id(layer) for layer in model.layers if fusable(layer)}
    if not fused:
        return None

    def forward(x):
        def op_fn(op):
            return training_call(op) if id(op) in fused else operation_fn(op, training=True)

        h = model._run_through_graph(model._standardize_inputs(x), operation_fn=op_fn)
        return h[0] if isinstance(h, (list, tuple)) else h

    return forward
