"""What a model builder builds with: Keras's layers, or stand-ins that only record.

Builders never import Keras themselves. They take a `Kit` and write `kit.layers.Dense(...)`,
`kit.initializers.HeNormal()`, `kit.custom("GhostBatchNormalization")(...)`. With the real
kit that is Keras. With `Kit.recording()` every constructor returns a stand-in layer whose
call returns a stand-in tensor, so the same builder runs with no TensorFlow at all. That is how
bnexp learns which config keys a net reads (`models.reads`) while planning, e.g. that `plain`
never reads `bn_momentum`, without anyone keeping a list of them.

Builders track channel counts in Python (they never ask a tensor for its shape), so the
recording run takes the same branches as the real one.
"""

from __future__ import annotations

from dataclasses import fields


class _Stub:
    """A stand-in layer, tensor, initializer or anything else a builder makes in recording mode."""

    def __init__(self, what: str = "", args: tuple = (), kwargs: dict | None = None, log: list | None = None):
        self.what, self.args, self.kwargs, self.log = what, args, kwargs or {}, log

    def __call__(self, *args, **kwargs):
        return _Stub(f"{self.what}()", log=self.log)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(f"{self.what}.{name}", log=self.log)

    def __iter__(self):
        return iter(())


class _Namespace:
    """`kit.layers` / `kit.initializers` in recording mode: each constructor call is logged."""

    def __init__(self, prefix: str, log: list):
        self._prefix, self._log = prefix, log

    def __getattr__(self, name):
        def make(*args, **kwargs):
            self._log.append((name, kwargs.get("name")))
            return _Stub(f"{self._prefix}.{name}", args, kwargs, self._log)

        return make


class Kit:
    """Keras's namespaces (real) or recording stand-ins (`Kit.recording()`)."""

    def __init__(self, recording: bool = False):
        self.recording = recording
        self.log: list[tuple[str, str | None]] = []  # (class name, layer name) of every layer built, in order
        if recording:
            self.layers = _Namespace("layers", self.log)
            self.initializers = _Namespace("initializers", [])
        else:
            import keras

            self.layers = keras.layers
            self.initializers = keras.initializers

    @classmethod
    def recording(cls) -> "Kit":
        return cls(recording=True)

    def custom(self, name: str):
        """One of bnexp's own Keras layers (bnexp.models.layers), by class name."""
        if self.recording:
            return getattr(self.layers, name)
        from . import layers

        return getattr(layers, name)


class Reads:
    """A config proxy that records which fields were read."""

    def __init__(self, cfg):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name):
        cfg = object.__getattribute__(self, "_cfg")
        if name in {f.name for f in fields(cfg)}:
            object.__getattribute__(self, "read").add(name)
        return getattr(cfg, name)

    def __setattr__(self, name, value):
        raise AttributeError("a builder must not change the config")
