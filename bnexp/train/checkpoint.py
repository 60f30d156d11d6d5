"""A run's checkpoint as bytes: every model and optimizer variable, and the loop's own state.

Packing and unpacking only; where checkpoints are kept, rotated and checked is runs.py's job.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass


@dataclass
class LoopState:
    """Everything besides the variables that a resumed run needs to go on exactly."""

    step: int = 0
    ref_loss: float = -1.0
    interval_loss: float = 0.0  # training-loss sum since the last eval point
    interval_correct: float = 0.0  # correct training predictions since the last eval point
    last_point: int = 0  # step of the last eval point
    train_time_s: float = 0.0
    history: list | None = None
    traces: dict | None = None
    moving_avg: list | None = None  # [test loss, test accuracy] before bn_recalibrate changed the statistics


def pack(prog, st: LoopState) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    state = np.frombuffer(json.dumps(asdict(st), allow_nan=True).encode(), dtype=np.uint8)
    np.savez(buf, state=state, **{f"v{i}": a for i, a in enumerate(prog.state())})
    return buf.getvalue()


def unpack(data: bytes, prog) -> LoopState:
    """Load the variables into `prog` and return the loop state."""
    import numpy as np

    with np.load(io.BytesIO(data)) as z:
        st = LoopState(**json.loads(bytes(z["state"]).decode()))
        n = len([k for k in z.files if k.startswith("v")])
        prog.load_state([z[f"v{i}"] for i in range(n)])
    return st


def readable(data: bytes) -> str | None:
    """None if `data` is a checkpoint this module can unpack, else what is wrong with it."""
    import numpy as np

    try:
        with np.load(io.BytesIO(data)) as z:
            json.loads(bytes(z["state"]).decode())
            for k in z.files:
                z[k]
    except Exception as e:  # a damaged zip can raise nearly anything
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None
