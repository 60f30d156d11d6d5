"""bnexp: does batch normalization help here, and where should it go?

The pipeline, one module per step: config -> data -> variants -> train -> runs -> report.
Nothing here imports TensorFlow at import time; `train` and `variants` import it when they build.
"""

__version__ = "0.1.0"
