"""bnexp: does batch normalization help here, and where should it go?

The pipeline, one module per step: config -> data -> variants -> train -> runs -> report.
Nothing here imports TensorFlow at import time; `train` and `models` import it when they build.
Once Keras is imported, so is bnexp.models.layers, so that `keras.models.load_model` knows
bnexp's own layers (see `_register_layers_with_keras`).
"""

__version__ = "0.1.0"


def _register_layers_with_keras() -> None:
    """Import bnexp.models.layers (which registers bnexp's Keras layers) when Keras is imported.

    `import bnexp` must stay free of TensorFlow (the CLI's --help stays fast), yet a saved
    model.keras holding a GhostBatchNormalization must load with plain `keras.models.load_model`
    after `import bnexp`. So: if Keras is already loaded, import the layers now; otherwise put a
    one-shot finder on sys.meta_path that wraps the `keras` package's exec_module to import them
    right after Keras itself. Any failure here is a warning, never a broken import.
    """
    import importlib.util
    import sys

    def load_layers():
        try:
            import bnexp.models.layers  # noqa: F401
        except Exception as e:  # keras itself must still import
            import warnings

            warnings.warn(f"bnexp: could not register its Keras layers ({e!r}); saved bnexp models may not load")

    if "keras" in sys.modules:
        load_layers()
        return

    class KerasHook:
        def find_spec(self, name, path=None, target=None):
            if name != "keras":
                return None
            sys.meta_path[:] = [f for f in sys.meta_path if f is not self]  # one shot; also avoids recursion
            try:
                spec = importlib.util.find_spec(name)  # the real spec, from the finders after us
                exec_module = spec.loader.exec_module
            except Exception:
                return None  # let the import system report whatever it reports without us

            def exec_then_register(module):
                exec_module(module)  # Keras itself; if it raises, so does `import keras`
                load_layers()

            spec.loader.exec_module = exec_then_register  # on this loader instance only
            return spec

    if not any(type(f).__name__ == "KerasHook" for f in sys.meta_path):
        sys.meta_path.insert(0, KerasHook())


_register_layers_with_keras()
