"""bnexp's own Keras layers, registered for serialization under the package name "bnexp".

This is the one bnexp module that imports Keras at top level. Builders reach it through
`kit.custom("ClassName")`; `import bnexp` imports it as soon as Keras is imported (the hook in
bnexp/__init__.py), so a saved `model.keras` loads with plain `keras.models.load_model`.

- GhostBatchNormalization: BN whose training statistics come from sub-batches ("ghost batches").
- WarmupBatchRenormalization: Keras's batch renorm with clips that relax over a warm-up.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="bnexp")
class GhostBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization over ghost batches of `virtual_batch_size` samples (Hoffer et al. 2017).

    Training: the batch is cut, in order, into sub-batches of `virtual_batch_size` samples, and
    each is normalized with its own mean and variance (per channel, over the sub-batch's samples
    and, after a conv, its H and W). A batch that the size does not divide ends in one smaller
    sub-batch (bnexp refuses such a training batch up front; this only keeps batch-statistics
    evaluation and a last partial batch working).
    Moving statistics: one update per training call, as TF1's `virtual_batch_size` did, with the
    mean of the sub-batches' means and of their variances (weighted by their sample counts, so
    equal weights when the size divides the batch). The mean of the variances leaves out the
    spread between sub-batch means: it is the variance the training-time normalization used.
    Inference: plain BN with the moving statistics.
    """

    def __init__(self, virtual_batch_size: int, **kwargs):
        super().__init__(**kwargs)
        if int(virtual_batch_size) < 1:
            raise ValueError(f"virtual_batch_size must be at least 1, got {virtual_batch_size}")
        if self.renorm:
            raise ValueError("GhostBatchNormalization does not combine with renorm=True")
        self.virtual_batch_size = int(virtual_batch_size)
        self.supports_masking = False  # sub-batch moments ignore masks; refuse them rather than mis-normalize

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):  # trainable=False means inference, as in Keras's BN
            return super().call(inputs, training=training)
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        rank, v = len(x.shape), self.virtual_batch_size
        axis = self.axis % rank
        dyn = ops.shape(x)
        n = dyn[0]
        rest = [d if d is not None else dyn[i + 1] for i, d in enumerate(x.shape[1:])]
        exact = x.shape[0] is not None and x.shape[0] % v == 0  # the training case: a plain reshape
        pad = 0 if exact else (v - n % v) % v
        if not exact:
            x = ops.pad(x, [[0, pad]] + [[0, 0]] * (rank - 1))
        g = ops.reshape(x, [-1, v] + rest)  # (sub-batches, v, ...)
        axes = [i for i in range(1, rank + 1) if i != axis + 1]
        if exact:
            mean, var = ops.moments(g, axes, keepdims=True)
            weight = None
        else:  # the padded rows are zeros: leave them out of every sum
            w = ops.reshape(ops.pad(ops.ones([n], x.dtype), [[0, pad]]), [-1, v] + [1] * (rank - 1))
            count = ops.sum(ops.broadcast_to(w, ops.shape(g)), axes, keepdims=True)
            mean = ops.sum(g * w, axes, keepdims=True) / count
            var = ops.sum(ops.square((g - mean) * w), axes, keepdims=True) / count
            weight = ops.sum(w, axis=list(range(1, rank + 1)))  # real samples per sub-batch
        shape = [1] * (rank + 1)
        shape[axis + 1] = -1
        inv = ops.rsqrt(var + self.epsilon)
        if self.scale:
            inv = inv * ops.reshape(ops.cast(self.gamma, x.dtype), shape)
        out = g * inv - mean * inv
        if self.center:
            out = out + ops.reshape(ops.cast(self.beta, x.dtype), shape)
        out = ops.reshape(out, [-1] + rest)
        if not exact:
            out = out[:n]
        # one moving-average update per call, with the mean of the sub-batch statistics
        channels = x.shape[axis] if x.shape[axis] is not None else dyn[axis]
        m, s = ops.reshape(mean, [-1, channels]), ops.reshape(var, [-1, channels])  # (sub-batches, channels)
        if weight is None:
            batch_mean, batch_var = ops.mean(m, axis=0), ops.mean(s, axis=0)
        else:
            wt = ops.reshape(weight / ops.sum(weight), [-1, 1])
            batch_mean, batch_var = ops.sum(m * wt, axis=0), ops.sum(s * wt, axis=0)
        mom = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, x.dtype) * mom + batch_mean * (1.0 - mom))
        self.moving_variance.assign(ops.cast(self.moving_variance, x.dtype) * mom + batch_var * (1.0 - mom))
        return ops.cast(out, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "virtual_batch_size": self.virtual_batch_size}


@keras.saving.register_keras_serializable(package="bnexp")
class WarmupBatchRenormalization(keras.layers.BatchNormalization):
    """Batch renormalization (Ioffe 2017) whose clips relax linearly over `warmup` steps.

    Keras's `renorm_clipping` is fixed at construction (Python floats read in `call`), so this
    subclass keeps a step counter instead: a non-trainable int64 weight `renorm_step`, read and
    incremented by one in each training call (inference calls and `trainable=False` leave it
    alone; it is saved with the model). At step t (0 for the first training call), with
    s = min(t / warmup, 1): rmax_t = 1 + (rmax - 1) * s, dmax_t = dmax * s, and r is clipped to
    [1 / rmax_t, rmax_t], d to [-dmax_t, dmax_t]. Step 0 is plain BN (r = 1, d = 0); from step
    `warmup` on the clips are (rmax, dmax). Everything else, including inference, is Keras's
    renorm: r and d without gradient, moving averages with `momentum` and `renorm_momentum`.
    The counter counts training calls, i.e. optimizer steps when the net is called once a step.
    """

    def __init__(self, rmax: float = 3.0, dmax: float = 5.0, warmup: int = 0, **kwargs):
        kwargs.pop("renorm", None)
        kwargs.pop("renorm_clipping", None)
        super().__init__(renorm=True, renorm_clipping={}, **kwargs)  # {}: Keras leaves r and d unclipped
        if rmax < 1 or dmax < 0 or warmup < 0:
            raise ValueError(f"need rmax >= 1, dmax >= 0, warmup >= 0; got rmax={rmax}, dmax={dmax}, warmup={warmup}")
        self.rmax, self.dmax, self.warmup = float(rmax), float(dmax), int(warmup)

    def build(self, input_shape):
        super().build(input_shape)
        self.renorm_step = self.add_weight(shape=(), dtype="int64", initializer="zeros", trainable=False,
                                           autocast=False, name="renorm_step")

    def clips(self, step):
        """(rmax_t, dmax_t) at training step `step`."""
        s = ops.cast(step, "float32")
        s = ops.minimum(s / self.warmup, 1.0) if self.warmup else ops.ones_like(s)
        return 1.0 + (self.rmax - 1.0) * s, self.dmax * s

    def _renorm_correction_and_moments(self, mean, variance):
        # Keras calls this once per training call, to get r and d: the place to clip them by step
        r, d, mean, variance = super()._renorm_correction_and_moments(mean, variance)
        rmax, dmax = self.clips(self.renorm_step)
        self.renorm_step.assign_add(ops.cast(1, "int64"))
        rmax, dmax = ops.cast(rmax, r.dtype), ops.cast(dmax, d.dtype)
        r = ops.clip(r, 1.0 / rmax, rmax)
        d = ops.clip(d, -dmax, dmax)
        return r, d, mean, variance

    def get_config(self):
        config = super().get_config()
        config.pop("renorm")
        config.pop("renorm_clipping")
        return {**config, "rmax": self.rmax, "dmax": self.dmax, "warmup": self.warmup}
