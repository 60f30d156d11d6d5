"""The normalizers (bnexp/models/norms.py, layers.py) against numpy: real Keras, no mocks, tiny inputs.

Every layer is built the way the nets build it, `norms.NORMS[name].build(Kit(), cfg)(name, channels)`,
and checked against the paper's formula in float64 numpy, after a Dense (N, D) and after a Conv2D
(N, H, W, C), in training and in inference mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

import bnexp  # noqa: F401  (installs the hook that registers bnexp's layers with Keras)
import keras
from bnexp.config import Config
from bnexp.errors import UsageError
from bnexp.models import norms
from bnexp.models.kit import Kit, Reads

EPS = Config().bn_epsilon
C = 6
SHAPES = {2: (8, C), 4: (4, 3, 3, C)}  # after a Dense: (N, D); after a Conv2D: (N, H, W, C)
# per-channel spread and shift, wide enough that renorm's default clips (3, 5) bite on some channels
SCALE = np.array([0.2, 0.5, 1.0, 2.0, 4.0, 6.0])
SHIFT = np.array([-8.0, -1.0, 0.0, 0.5, 3.0, 9.0])

# case -> (norm, config changes)
CASES = {
    "batch": ("batch", {}),
    "ghost": ("batch", {"bn_virtual_batch": 2, "batch_size": 8}),
    "renorm": ("renorm", {}),
    "renorm-warmup": ("renorm", {"renorm_warmup": 10}),  # its first training step is plain BN
    "layer": ("layer", {}),
    "group": ("group", {"norm_groups": 3}),
    "group-capped": ("group", {}),  # 32 groups, capped at the 6 channels
    "instance": ("instance", {}),
    "none": ("none", {}),
}


def data(rank: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=SHAPES[rank]) * SCALE + SHIFT).astype("float32")


def build(case: str, channels: int = C, name: str = "bn_0"):
    norm, changes = CASES[case]
    return norms.NORMS[norm].build(Kit(), Config(**changes))(name, channels)


def prepare(layer, shape, seed: int = 1):
    """Build the layer and give it non-trivial gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    layer.build(shape)
    layer.gamma.assign(rng.uniform(0.5, 2.0, C).astype("float32"))
    layer.beta.assign(rng.normal(size=C).astype("float32"))
    if hasattr(layer, "moving_mean"):
        layer.moving_mean.assign(rng.normal(size=C).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, C).astype("float32"))
    if getattr(layer, "renorm", False):  # r and d are taken against these
        layer.renorm_mean.assign(np.zeros(C, "float32"))
        layer.renorm_stddev.assign(np.ones(C, "float32"))
    return layer


def arr(v) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)


# ---------------------------------------------------------------- numpy: the papers' formulas

def normalize(x, axes, eps=EPS, mean=None, var=None):
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True) if mean is None else mean
    var = x.var(axis=axes, keepdims=True) if var is None else var
    return (x - mean) / np.sqrt(var + eps)


def batch_axes(x):  # BN: per channel over N (and H, W)
    return tuple(range(x.ndim - 1))


def ref_batch(x, gamma, beta):
    return normalize(x, batch_axes(x)) * gamma + beta


def ref_moving(x, gamma, beta, mean, var):
    return normalize(x, batch_axes(x), mean=mean, var=var) * gamma + beta


def ref_ghost(x, v, gamma, beta):
    return np.concatenate([ref_batch(x[s:s + v], gamma, beta) for s in range(0, len(x), v)])


def ref_layer(x, gamma, beta):  # LN: per sample over all its features (H, W and C)
    return normalize(x, tuple(range(1, x.ndim))) * gamma + beta


def ref_group(x, groups, gamma, beta):  # GN: per sample, per group of C/G channels, over H, W too
    n = len(x)
    g = x.astype(np.float64).reshape(n, -1, groups, x.shape[-1] // groups)
    return normalize(g, (1, 3)).reshape(x.shape) * gamma + beta


def ref_instance(x, gamma, beta):  # IN: per sample, per channel, over H, W (nothing after a Dense)
    return normalize(x, tuple(range(1, x.ndim - 1))) * gamma + beta


def ref_renorm(x, mu, sigma, rmax, dmax, gamma, beta):
    """Ioffe 2017: x_hat * r + d with r = sigma_B / sigma, d = (mu_B - mu) / sigma, clipped."""
    axes = batch_axes(x)
    x = x.astype(np.float64)
    mb, sb = x.mean(axis=axes), np.sqrt(x.var(axis=axes) + EPS)
    r = np.clip(sb / sigma, 1 / rmax, rmax)
    d = np.clip((mb - mu) / sigma, -dmax, dmax)
    return ((x - mb) / sb * r + d) * gamma + beta


def expected(case, layer, x, training):
    if case == "none":
        return x
    gamma, beta = arr(layer.gamma), arr(layer.beta)
    if hasattr(layer, "moving_mean") and not training:
        return ref_moving(x, gamma, beta, arr(layer.moving_mean), arr(layer.moving_variance))
    cfg = Config(**CASES[case][1])
    return {
        "batch": lambda: ref_batch(x, gamma, beta),
        "ghost": lambda: ref_ghost(x, cfg.bn_virtual_batch, gamma, beta),
        "renorm": lambda: ref_renorm(x, 0.0, 1.0, cfg.renorm_rmax, cfg.renorm_dmax, gamma, beta),
        "renorm-warmup": lambda: ref_batch(x, gamma, beta),
        "layer": lambda: ref_layer(x, gamma, beta),
        "group": lambda: ref_group(x, cfg.norm_groups, gamma, beta),
        "group-capped": lambda: ref_group(x, C, gamma, beta),
        "instance": lambda: ref_instance(x, gamma, beta),
    }[case]()


def close(actual, want):
    np.testing.assert_allclose(arr(actual), want, rtol=1e-4, atol=2e-4)


# ---------------------------------------------------------------- every normalizer, both modes, both ranks

@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("rank", [2, 4], ids=["dense", "conv"])
@pytest.mark.parametrize("case", list(CASES))
def test_output_matches_the_formula(case, rank, training):
    x = data(rank)
    layer = build(case)
    if case == "none":
        close(layer(x), x)
        return
    prepare(layer, x.shape)
    want = expected(case, layer, x, training)  # with the statistics from before the call
    close(layer(x, training=training), want)


def test_the_statistics_are_over_the_right_axes_after_a_conv():
    """A conv input whose samples, channels and pixels all differ: each norm's output has zero
    mean and unit variance over exactly its own axes (gamma 1, beta 0)."""
    x = data(4, seed=3) * np.arange(1, 5).reshape(4, 1, 1, 1).astype("float32")  # samples differ in scale
    axes = {"batch": (0, 1, 2), "layer": (1, 2, 3), "instance": (1, 2)}
    for case, over in axes.items():
        y = arr(build(case)(x, training=True))
        np.testing.assert_allclose(y.mean(axis=over), 0, atol=1e-4)
        np.testing.assert_allclose(y.var(axis=over), 1, atol=2e-2)  # var / (var + eps)
    y = arr(build("group")(x, training=True)).reshape(4, 3, 3, 3, 2)  # 3 groups of 2 channels
    np.testing.assert_allclose(y.mean(axis=(1, 2, 4)), 0, atol=1e-4)
    np.testing.assert_allclose(y.var(axis=(1, 2, 4)), 1, atol=2e-2)


def test_layer_norm_is_group_norm_with_one_group_not_keras_layer_normalization():
    x = data(4, seed=4)
    ln = build("layer")
    assert type(ln).__name__ == "GroupNormalization" and ln.groups == 1
    close(ln(x), ref_layer(x, 1.0, 0.0))
    per_pixel = keras.layers.LayerNormalization(axis=-1, epsilon=EPS)(x)  # each pixel over its channels
    assert not np.allclose(arr(per_pixel), ref_layer(x, 1.0, 0.0), atol=1e-2)
    x2 = data(2)
    close(keras.layers.LayerNormalization(axis=-1, epsilon=EPS)(x2), arr(build("layer")(x2)))  # the same after a Dense


def test_instance_norm_after_a_dense_outputs_beta_and_still_trains():
    layer = prepare(build("instance"), SHAPES[2])
    x = keras.ops.convert_to_tensor(data(2))
    np.testing.assert_allclose(arr(layer(x)), np.broadcast_to(arr(layer.beta), SHAPES[2]), atol=1e-4)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.ops.sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(arr(g))) for g in grads)


# ---------------------------------------------------------------- batch: the default stays today's layer

def test_default_batch_is_exactly_keras_batch_normalization():
    cfg = Config(bn_momentum=0.9, bn_epsilon=1e-5)
    layer = norms.NORMS["batch"].build(Kit(), cfg)("bn_3", 16)
    assert type(layer) is keras.layers.BatchNormalization
    assert layer.get_config() == keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bn_3").get_config()


def test_batch_moving_statistics_update():
    x = data(4)
    layer = prepare(build("batch"), x.shape)
    m0, v0 = arr(layer.moving_mean), arr(layer.moving_variance)
    layer(x, training=True)
    mom = Config().bn_momentum
    close(layer.moving_mean, m0 * mom + x.mean(axis=(0, 1, 2)) * (1 - mom))
    close(layer.moving_variance, v0 * mom + x.astype(np.float64).var(axis=(0, 1, 2)) * (1 - mom))


# ---------------------------------------------------------------- ghost batches

@pytest.mark.parametrize("rank", [2, 4], ids=["dense", "conv"])
def test_ghost_batches_moving_statistics_are_the_mean_of_the_sub_batch_statistics(rank):
    x = data(rank, seed=5)
    layer = prepare(build("ghost"), x.shape)
    assert type(layer).__name__ == "GhostBatchNormalization" and isinstance(layer, keras.layers.BatchNormalization)
    m0, v0 = arr(layer.moving_mean), arr(layer.moving_variance)
    close(layer(x, training=True), ref_ghost(x, 2, arr(layer.gamma), arr(layer.beta)))
    subs = [x[s:s + 2].astype(np.float64) for s in range(0, len(x), 2)]
    axes = batch_axes(x)
    mean = np.mean([s.mean(axis=axes) for s in subs], axis=0)
    var = np.mean([s.var(axis=axes) for s in subs], axis=0)  # not the whole batch's variance
    assert not np.allclose(var, x.astype(np.float64).var(axis=axes), rtol=1e-3)
    mom = Config().bn_momentum
    close(layer.moving_mean, m0 * mom + mean * (1 - mom))
    close(layer.moving_variance, v0 * mom + var * (1 - mom))
    # one update per call: inference then uses them, with no batch statistics
    close(layer(x, training=False), ref_moving(x, arr(layer.gamma), arr(layer.beta), arr(layer.moving_mean),
                                               arr(layer.moving_variance)))


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "unknown-batch"])
def test_ghost_batch_that_the_size_does_not_divide_ends_in_a_smaller_sub_batch(dynamic):
    import tensorflow as tf

    x = data(4, seed=6)[:3]  # 3 samples in sub-batches of 2: [0, 1] and [2]
    x = np.concatenate([x, data(4, seed=7)[:3]])  # 6 samples, sub-batches of 4: [0..3], [4, 5]
    layer = prepare(keras.saving.get_registered_object("bnexp>GhostBatchNormalization")(virtual_batch_size=4), x.shape)
    m0 = arr(layer.moving_mean)
    call = lambda t: layer(t, training=True)  # noqa: E731
    if dynamic:
        call = tf.function(call, input_signature=[tf.TensorSpec([None, 3, 3, C], tf.float32)])
    close(call(x), ref_ghost(x, 4, arr(layer.gamma), arr(layer.beta)))
    mean = (x[:4].mean(axis=(0, 1, 2)) * 4 + x[4:].mean(axis=(0, 1, 2)) * 2) / 6  # weighted by sample counts
    mom = Config().bn_momentum
    close(layer.moving_mean, m0 * mom + mean * (1 - mom))


def test_ghost_batch_size_must_divide_the_batch():
    for kit in (Kit(), Kit.recording()):
        with pytest.raises(UsageError) as e:
            norms.NORMS["batch"].build(kit, Config(bn_virtual_batch=48, batch_size=128))
        msg = str(e.value)
        assert "48" in msg and "128" in msg and "\n" not in msg, msg


# ---------------------------------------------------------------- renorm

def _renorm_input():
    x = data(4, seed=8)
    return x, batch_axes(x)


def test_renorm_clips_r_and_d_as_configured():
    x, axes = _renorm_input()
    sb, mb = np.sqrt(x.astype(np.float64).var(axis=axes) + EPS), x.mean(axis=axes)
    # against renorm stats (0, 1): r = sigma_B, d = mu_B; some channels beyond each clip, some inside
    assert (sb > 3).any() and (sb < 1 / 3).any() and ((sb > 1 / 3) & (sb < 3)).any()
    assert (abs(mb) > 5).any() and (abs(mb) < 5).any()
    for warmup in (0, 7):
        for rmax, dmax in ((3.0, 5.0), (1.5, 0.5), (100.0, 100.0)):
            cfg = Config(renorm_rmax=rmax, renorm_dmax=dmax, renorm_warmup=warmup)
            layer = prepare(norms.NORMS["renorm"].build(Kit(), cfg)("bn_0", C), x.shape)
            if warmup:  # past the warm-up: the final clips
                layer.renorm_step.assign(warmup)
            close(layer(x, training=True), ref_renorm(x, 0.0, 1.0, rmax, dmax, arr(layer.gamma), arr(layer.beta)))
    # unclipped it is not BN: r and d do something
    assert not np.allclose(ref_renorm(x, 0.0, 1.0, 100, 100, 1, 0), ref_batch(x, 1, 0), atol=1e-2)


def test_renorm_with_rmax_1_dmax_0_is_plain_bn():
    x, _ = _renorm_input()
    layer = prepare(norms.NORMS["renorm"].build(Kit(), Config(renorm_rmax=1.0, renorm_dmax=0.0))("bn_0", C), x.shape)
    bn = keras.layers.BatchNormalization(epsilon=EPS)
    bn.build(x.shape)
    bn.gamma.assign(layer.gamma)
    bn.beta.assign(layer.beta)
    close(layer(x, training=True), arr(bn(x, training=True)))
    close(layer(x, training=True), ref_batch(x, arr(layer.gamma), arr(layer.beta)))


def test_renorm_uses_one_moving_average_for_r_d_and_inference():
    """renorm_momentum = bn_momentum: the renorm statistics are the moving ones (as in the paper)."""
    x, axes = _renorm_input()
    layer = norms.NORMS["renorm"].build(Kit(), Config(bn_momentum=0.9))("bn_0", C)
    layer.build(x.shape)
    for _ in range(3):
        layer(x, training=True)
    close(layer.renorm_mean, arr(layer.moving_mean))
    close(layer.renorm_stddev, arr(layer.moving_stddev))
    close(layer.moving_mean, x.mean(axis=axes) * (1 - 0.9 ** 3))
    close(layer(x, training=False), ref_moving(x, 1.0, 0.0, arr(layer.moving_mean), arr(layer.moving_variance)))


def test_renorm_warmup_relaxes_the_clips_linearly_over_the_steps():
    x, _ = _renorm_input()
    warmup, rmax, dmax = 4, 3.0, 5.0
    layer = norms.NORMS["renorm"].build(Kit(), Config(renorm_warmup=warmup))("bn_0", C)
    assert type(layer).__name__ == "WarmupBatchRenormalization" and isinstance(layer, keras.layers.BatchNormalization)
    prepare(layer, x.shape)
    gamma, beta = arr(layer.gamma), arr(layer.beta)
    for step in range(warmup + 3):
        s = min(step / warmup, 1.0)
        assert int(arr(layer.renorm_step)) == step
        layer.renorm_mean.assign(np.zeros(C, "float32"))  # the same r and d before the clips each step
        layer.renorm_stddev.assign(np.ones(C, "float32"))
        want = ref_renorm(x, 0.0, 1.0, 1 + (rmax - 1) * s, dmax * s, gamma, beta)
        if step == 0:
            close(want, ref_batch(x, gamma, beta))  # the first step is plain BN
        close(layer(x, training=True), want)
        layer(x, training=False)  # inference neither counts nor clips
    assert int(arr(layer.renorm_step)) == warmup + 3
    layer.trainable = False
    layer(x, training=True)  # frozen: inference, no step
    assert int(arr(layer.renorm_step)) == warmup + 3


# ---------------------------------------------------------------- group: the groups must divide the channels

def test_group_count_that_does_not_divide_the_channels_is_a_usage_error():
    for kit in (Kit(), Kit.recording()):
        make = norms.NORMS["group"].build(kit, Config(norm_groups=7))
        with pytest.raises(UsageError) as e:
            make("bn_0", 32)
        msg = str(e.value)
        assert "norm_groups=7" in msg and "32 channels" in msg and "bn_0" in msg and "e.g. 8" in msg, msg
    make = norms.NORMS["group"].build(Kit(), Config(norm_groups=7))
    assert make("bn_1", 5).groups == 5  # more groups than channels: one per channel
    assert make("bn_2", 14).groups == 7


# ---------------------------------------------------------------- the registry

def test_moving_stats_exactly_for_the_batch_statistics_norms():
    assert {n for n, norm in norms.NORMS.items() if norm.moving_stats} == {"batch", "renorm"}
    for case in CASES:
        layer = build(case)
        assert isinstance(layer, keras.layers.BatchNormalization) == norms.NORMS[CASES[case][0]].moving_stats, case
    for name, norm in norms.NORMS.items():
        assert norm.description and "\n" not in norm.description, name


READS = {
    "batch": {"bn_momentum", "bn_epsilon", "bn_virtual_batch"},
    "ghost": {"bn_momentum", "bn_epsilon", "bn_virtual_batch", "batch_size"},
    "renorm": {"bn_momentum", "bn_epsilon", "renorm_rmax", "renorm_dmax", "renorm_warmup"},
    "renorm-warmup": {"bn_momentum", "bn_epsilon", "renorm_rmax", "renorm_dmax", "renorm_warmup"},
    "layer": {"bn_epsilon"},
    "group": {"norm_groups", "bn_epsilon"},
    "group-capped": {"norm_groups", "bn_epsilon"},
    "instance": {"bn_epsilon"},
    "none": set(),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_norm_reads_exactly_the_keys_it_uses(case):
    norm, changes = CASES[case]
    proxy = Reads(Config(**changes))
    norms.NORMS[norm].build(Kit.recording(), proxy)("bn_0", 24)
    assert proxy.read == READS[case]


def run_python(code: str, timeout: int = 240) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         timeout=timeout)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def test_recording_kit_builds_every_norm_without_tensorflow():
    out = run_python(f"""
        import sys
        from bnexp.config import Config
        from bnexp.models import norms
        from bnexp.models.kit import Kit
        cases = {CASES!r}
        for case, (norm, changes) in cases.items():
            kit = Kit.recording()
            make = norms.NORMS[norm].build(kit, Config(**changes))
            make("bn_0", 24)("x")
            make("bn_1", 12)
            print(case, [c for c, _ in kit.log])
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow was imported"
        print("ok")
    """)
    assert out.strip().endswith("ok")
    assert "ghost ['GhostBatchNormalization', 'GhostBatchNormalization']" in out
    assert "renorm-warmup ['WarmupBatchRenormalization', 'WarmupBatchRenormalization']" in out
    assert "layer ['GroupNormalization', 'GroupNormalization']" in out


def test_import_bnexp_does_not_import_tensorflow():
    out = run_python("""
        import sys, bnexp, bnexp.models, bnexp.models.norms
        print(sorted(m for m in ("tensorflow", "keras", "bnexp.models.layers") if m in sys.modules))
    """)
    assert out.strip() == "[]"


# ---------------------------------------------------------------- save and load

SAVE_CASES = {  # norm_groups 2 divides both the conv's 4 and the dense's 6 channels
    "batch": ("batch", {}),
    "ghost": ("batch", {"bn_virtual_batch": 2, "batch_size": 4}),
    "renorm": ("renorm", {}),
    "renorm-warmup": ("renorm", {"renorm_warmup": 5}),
    "layer": ("layer", {}),
    "group": ("group", {"norm_groups": 2}),
    "instance": ("instance", {}),
    "none": ("none", {}),
}


def tiny_model(norm, changes):
    make = norms.NORMS[norm].build(Kit(), Config(**changes))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_0")(inputs)
    x = make("bn_0", 4)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, name="dense_0")(x)
    x = make("bn_1", 6)(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def saved(tmp_path, case):
    """A tiny conv + dense model with the normalizer, a few training calls in (moving stats, steps)."""
    model = tiny_model(*SAVE_CASES[case])
    x = np.random.default_rng(0).normal(size=(4, 4, 4, 2)).astype("float32")
    for _ in range(3):
        model(x, training=True)
    path = tmp_path / f"{case}.keras"
    model.save(path)
    return model, x, path


@pytest.mark.parametrize("case", list(SAVE_CASES))
def test_saved_model_loads_with_plain_load_model(tmp_path, case):
    model, x, path = saved(tmp_path, case)
    loaded = keras.models.load_model(path)
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in model.layers]
    for a, b in zip(model.weights, loaded.weights):  # moving statistics and renorm steps included
        np.testing.assert_array_equal(arr(a), arr(b))
    close(loaded(x, training=False), arr(model(x, training=False)))
    close(loaded(x, training=True), arr(model(x, training=True)))


@pytest.mark.parametrize("keras_first", [False, True], ids=["bnexp-then-keras", "keras-then-bnexp"])
def test_import_bnexp_registers_the_layers_for_load_model(tmp_path, keras_first):
    model, x, path = saved(tmp_path, "ghost")
    _, _, path2 = saved(tmp_path, "renorm-warmup")
    np.save(tmp_path / "x.npy", x)
    want = arr(model(x, training=False))
    first, second = ("import keras; import bnexp", "") if keras_first else ("import bnexp", "import keras")
    out = run_python(f"""
        import sys
        {first}
        assert {keras_first} or "tensorflow" not in sys.modules, "import bnexp imported TensorFlow"
        {second}
        import numpy as np
        x = np.load({str(tmp_path / "x.npy")!r})
        m = keras.models.load_model({str(path)!r})
        keras.models.load_model({str(path2)!r})
        print(type(m.get_layer("bn_0")).__name__)
        print(np.asarray(m(x, training=False)).tolist())
    """)
    name, values = out.strip().splitlines()[-2:]
    assert name == "GhostBatchNormalization"
    np.testing.assert_allclose(np.array(eval(values)), want, rtol=1e-5, atol=1e-6)


def test_instance_norm_in_the_mlp_trains_and_is_named_once_as_a_net_that_cannot_learn(tmp_path):
    from conftest import TINY, invoke

    res = invoke(["compare", "plain", "in-pre", "--seeds", "2", "--results", tmp_path, *TINY])
    assert res.exit_code == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if "instance norm after a Dense" in line]
    assert len(lines) == 1 and lines[0].startswith("note: in-pre") and "--set model=cnn" in lines[0]
    assert "in-pre" in res.stdout  # it trained and is in the table
    from bnexp import models
    from bnexp.config import Config

    assert models.notes(models.resolve("in-pre"), Config(model="cnn")) == []
    assert models.notes(models.resolve("gn-pre"), Config()) == []
    assert models.notes(models.resolve("plain"), Config(norm="instance")) == []  # no norm slot
    assert models.notes(models.resolve("bn-pre"), Config(norm="instance")) != []  # the config's norm in the slot
