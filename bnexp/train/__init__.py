"""Training one run: settings.py (what the loop takes from the config), program.py (the
compiled program and the Engine that shares it), fused.py (BN's training pass through TensorFlow's
fused kernel, after a conv), loop.py (the loop), checkpoint.py (packing
a checkpoint), signals.py (stop requests and progress), tensorboard.py (event files).

Importing this package does not import TensorFlow; `tf()` does, on first use.
"""

from .loop import train
from .program import Engine, tf
from .settings import Settings, settings
from .signals import Control, Interrupted, PollControl, deferred_signals

__all__ = ["Control", "Engine", "Interrupted", "PollControl", "Settings", "deferred_signals", "settings", "tf", "train"]
