"""Step 1 of the pipeline: one typed config, resolved as defaults < YAML file < flags.

A YAML file holds config keys (the names below, which are also the CLI option names)
and, for `compare` and `sweep`, a few experiment keys (EXPERIMENT_KEYS). Unknown keys,
wrong types and out-of-range values are `UsageError`s that name the key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError, nearest

ACTIVATIONS = ("relu", "sigmoid", "tanh")
INITIALIZERS = ("glorot_uniform", "he", "normal")
OPTIMIZERS = ("adam", "sgd", "momentum")
EXECUTIONS = ("auto", "xla", "graph", "eager")
CNN_HEADS = ("gap", "flatten")
COLOR_MODES = ("grayscale", "rgb")

# The roles a config field can have (see Config).
GRAPH, VALUE, DATA, IO = "graph", "value", "data", "io"
ROLES = (GRAPH, VALUE, DATA, IO)


def _f(default, role: str, since: int = 1, key=None, auto=None):
    """A config field with its role, the schema it was added in, (`key`) what of its value goes
    into the reuse key when not the value itself, and (`auto`) how the value "auto" is resolved
    from the rest of the config when a run is planned."""
    assert role in ROLES
    return field(default=default, metadata={"role": role, "since": since, "key": key, "auto": auto})


def _fastest_execution(cfg) -> str:
    """XLA for the MLP (its fused loop is bnexp's fastest); TensorFlow's graph for convnets, whose
    oneDNN convolutions beat XLA's by two orders of magnitude on CPUs (benchmarks/README.md)."""
    return "xla" if cfg.model == "mlp" else "graph"


def _dataset_identity(name: str) -> str:
    """A KIND:PATH dataset is identified by its kind and content hash (which the key holds
    anyway), not its path: a renamed folder is the same dataset, a changed byte is not."""
    kind, sep, _ = name.partition(":")
    return f"{kind}:" if sep else name


@dataclass
class Config:
    """Everything one run depends on. Defaults are the lab's (Lab10-4).

    Each field declares its role (`role` in its metadata), from which every key is derived:
    - graph: shapes the compiled program (and so the result); part of the program key;
    - value: fed to the program (seed, lr, run length) or used around it; changes the result;
    - data: chooses or shapes the data; always part of the reuse key;
    - io: only where things are read or written, or how they are shown; in no key.
    A graph or value key that the run's builders never read (`plain` never reads `bn_momentum`)
    counts at its default. A key added after schema 1 (`since=2`) is left out of the reuse key at
    its default, so runs made before it existed keep their keys.
    """

    # --- data
    dataset: str = _f("mnist", DATA, key=_dataset_identity)  # registry name or KIND:PATH; the unnamed default falls back to mnist-sample offline
    data_dir: str | None = _f(None, IO)  # folder with .npz or IDX .gz files; else $BNEXP_DATA_DIR
    test_fraction: float = _f(0.2, DATA, 2)  # npz with only x, y and folders without train/test: held-out share (stratified)
    image_size: str | None = _f(None, DATA, 2)  # folder: resize images to HxW, e.g. 32x32; default: the files' size
    color_mode: str | None = _f(None, DATA, 2)  # folder: grayscale | rgb; default: what the files are
    label_column: str | None = _f(None, DATA, 2)  # csv: the class column; default `label`, else the last column

    # --- network: model family, then its shape
    model: str = _f("mlp", GRAPH, 2)  # mlp (the lab's net) | cnn (VGG-style) | resnet (CIFAR-style, depth 6n+2)
    depth: int = _f(2, GRAPH)  # mlp: hidden Dense layers (the lab: 2; the course's TF2 net: 4)
    width: int = _f(256, GRAPH)  # mlp: units per hidden layer (TF2 net: 512)
    filters: int = _f(16, GRAPH, 2)  # cnn: filters of the first stage, doubling per stage (16 keeps a compare in minutes on 2 cores)
    kernel_size: int = _f(3, GRAPH, 2)  # cnn: conv kernel size
    stages: int = _f(2, GRAPH, 2)  # cnn: stages, max-pooling between them
    convs_per_stage: int = _f(2, GRAPH, 2)  # cnn: conv blocks per stage
    cnn_head: str = _f("gap", GRAPH, 2)  # cnn: gap (global average pooling) | flatten, before the logits
    spatial_dropout: bool = _f(False, GRAPH, 2)  # cnn dropout variant: drop whole channels (SpatialDropout2D)
    blocks_per_stage: int = _f(1, GRAPH, 2)  # resnet: residual units per stage, n; depth 6n+2 (1: ResNet-8, 3: ResNet-20)
    activation: str = _f("relu", GRAPH)  # relu | sigmoid | tanh (Ioffe & Szegedy's MNIST net: sigmoid)
    initializer: str = _f("glorot_uniform", GRAPH)  # glorot_uniform | he | normal (with init_std)
    init_std: float = _f(0.01, GRAPH)  # sigma of the `normal` initializer; the paper's "small random Gaussian"
    use_bias: bool = _f(True, GRAPH)  # the lab keeps the Dense bias everywhere
    bn_drop_bias: bool = _f(False, GRAPH)  # drop the Dense bias where a norm follows it (its beta makes it redundant)
    dropout: float = _f(0.5, GRAPH)  # rate of the dropout variant's layers (the lab: 0.5)

    # --- normalization: what fills a variant's norm slot
    norm: str = _f("batch", GRAPH, 2)  # batch | renorm | layer | group | instance | none; `bnexp list` describes each
    bn_momentum: float = _f(0.99, GRAPH)  # Keras default; PyTorch's 0.1 is 0.9 here
    bn_epsilon: float = _f(1e-3, GRAPH)  # Keras default; PyTorch uses 1e-5
    bn_virtual_batch: int | None = _f(None, GRAPH, 2)  # ghost batches: BN statistics over sub-batches of this size
    norm_groups: int = _f(32, GRAPH, 2)  # group: groups (Wu & He's default), capped at the channel count
    renorm_rmax: float = _f(3.0, GRAPH, 2)  # renorm: final clip of r to [1/rmax, rmax] (Ioffe 2017)
    renorm_dmax: float = _f(5.0, GRAPH, 2)  # renorm: final clip of d to [-dmax, dmax] (Ioffe 2017)
    renorm_warmup: int = _f(0, GRAPH, 2)  # renorm: steps over which the clips relax from plain BN (rmax 1, dmax 0); 0: none

    # --- optimization
    optimizer: str = _f("adam", GRAPH)  # adam | sgd | momentum (SGD with `momentum`)
    lr: float = _f(0.001, VALUE)  # the lab's Adam rate
    momentum: float = _f(0.9, GRAPH)  # only for optimizer=momentum
    batch_size: int = _f(128, GRAPH)  # the lab: 128
    epochs: int = _f(1, VALUE)  # steps per epoch = train size // batch_size, whole set reshuffled each epoch
    steps: int | None = _f(None, VALUE)  # total steps; overrides epochs (the paper counts 50,000 steps)
    seed: int = _f(0, VALUE)  # sets initial weights, data order and dropout masks

    # --- evaluation
    eval_every: int | None = _f(None, VALUE)  # steps between eval points; default about 1/10 epoch
    eval_samples: int = _f(1000, GRAPH)  # test images scored at intermediate eval points (the final eval uses all);
    # 1,000 keeps periodic evaluation at 1-7% of training time (benchmarks/README.md)
    target_accuracy: float = _f(0.8, IO)  # compare's convergence column: first step reaching this test accuracy
    bn_batchstats_eval: bool = _f(False, VALUE)  # also score the test set with norms using batch statistics
    bn_recalibrate: int = _f(0, VALUE)  # after training, set each moving-statistics norm's mean/variance to the exact
    # statistics of its input over this many training images, with the final weights ("precise BN",
    # Wu & Johnson 2021); the moving-average score is kept as test_accuracy_moving_avg. 0: off (the lab)
    traces: bool = _f(False, VALUE)  # record percentiles of each nonlinearity's input at eval points
    trace_units: int = _f(3, VALUE)  # units (channels, in a convnet) traced per nonlinearity (the first ones)
    probe_size: int = _f(1000, VALUE)  # fixed probe batch for traces: the first test images

    # --- reliability
    checkpoint_every: int | None = _f(None, IO)  # steps between checkpoints; default: once per epoch (and at the end)
    divergence_factor: float = _f(100.0, VALUE)  # stop as diverged when loss > factor x first-step loss

    # --- execution
    execution: str = _f("auto", GRAPH, auto=_fastest_execution)  # auto: the fastest for the model (xla for the mlp,
    # graph for cnn/resnet) | xla (XLA-compiled loop) | graph (tf.function) | eager (the lab's loop, for debugging)
    workers: int = _f(0, IO)  # runs that compare and sweep train at the same time; results are the same as one
    # at a time. 0: 2 on a machine with 2 or more cores, else 1; 1 for execution=eager (Python-bound:
    # threads only slow it, and debugging wants one run at a time); with executor=ray: cluster CPUs / ray_cpus_per_run
    executor: str = _f("local", IO, 2)  # local (threads in this process) | process (a child process per run) | ray
    ray_address: str | None = _f(None, IO, 2)  # ray: auto, HOST:PORT or ray://...; default $RAY_ADDRESS, else a new local cluster
    ray_cpus_per_run: float = _f(1.0, IO, 2)  # ray: CPUs each run asks the cluster for
    results: str = _f("results", IO)  # where run folders go

    def steps_per_epoch(self, n_train: int) -> int:
        return n_train // self.batch_size

    def total_steps(self, n_train: int) -> int:
        return self.steps if self.steps is not None else self.epochs * self.steps_per_epoch(n_train)

    def resolved_eval_every(self, n_train: int) -> int:
        return self.eval_every or max(1, self.steps_per_epoch(n_train) // 10)

    def resolved_workers(self) -> int:
        if self.workers:
            return self.workers
        if self.execution == "eager":
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return 2 if cores >= 2 else 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Config":
        return validate(dataclasses.replace(self, **changes))


# Keys a YAML file may hold besides config keys; they shape a comparison or sweep.
EXPERIMENT_KEYS = {
    "variants": "variants to compare, in order (the first is the default baseline)",
    "seeds": "number of seeds (runs seeds 0..N-1) or an explicit list; compare and sweep default to "
             "3 (train: one run, `seed`)",
    "baseline": "variant the paired differences are taken against",
    "grid": "sweep: mapping of config key -> list of values",
    "define": "new variants as layer lists: NAME: [dense, bn, act, dropout, ...] or {block: [...], head: [...]}",
}

CONFIG_KEYS = tuple(f.name for f in fields(Config))
_FIELDS = {f.name: f for f in fields(Config)}


@functools.cache
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Config)
    return {k: hints[k] for k in CONFIG_KEYS}


def coerce(key: str, value: Any) -> Any:
    """Check `value` against the type of config field `key`; return it converted."""
    if key not in CONFIG_KEYS:
        raise UsageError(f"unknown config key {key!r}{nearest(str(key), CONFIG_KEYS)}; see `bnexp train --help`")
    typ = _field_types()[key]
    args = typing.get_args(typ)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), typ) if args else typ
    if value is None:
        if optional:
            return None
        raise UsageError(f"config key {key!r} needs a value of type {base.__name__}")
    ok = (
        (base is bool and isinstance(value, bool))
        or (base is int and isinstance(value, int) and not isinstance(value, bool))
        or (base is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (base is str and isinstance(value, str))
        or (base is str and isinstance(value, int) and not isinstance(value, bool))  # image_size: 32
    )
    if not ok:
        raise UsageError(
            f"config key {key!r} must be {base.__name__}, got {type(value).__name__} {value!r}"
        )
    if base is str and not isinstance(value, str):
        return str(value)
    return float(value) if base is float else value


def _check(cond: bool, key: str, value: Any, need: str) -> None:
    if not cond:
        raise UsageError(f"invalid {key}={value!r}: {need}")


def _hw(text) -> tuple[int, int] | None:
    """"32x32" or "32" -> (32, 32); None if it is neither."""
    parts = str(text).lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        return None
    h, w = (int(parts[0]), int(parts[-1]))
    return h, w


def validate(cfg: Config) -> Config:
    """Range checks; returns cfg unchanged or raises UsageError naming the key."""
    c = cfg

    def finite(x):
        return isinstance(x, (int, float)) and math.isfinite(x)

    _check(c.batch_size >= 1, "batch_size", c.batch_size, "must be at least 1")
    _check(finite(c.lr) and c.lr > 0, "lr", c.lr, "must be a positive finite number, e.g. 0.001")
    _check(c.epochs >= 1, "epochs", c.epochs, "must be at least 1")
    _check(c.steps is None or c.steps >= 1, "steps", c.steps, "must be at least 1 (or unset to use epochs)")
    _check(c.depth >= 1, "depth", c.depth, "must be at least 1")
    _check(c.width >= 1, "width", c.width, "must be at least 1")
    _check(finite(c.dropout) and 0 <= c.dropout < 1, "dropout", c.dropout, "must be in [0, 1)")
    _check(finite(c.bn_momentum) and 0 <= c.bn_momentum < 1, "bn_momentum", c.bn_momentum, "must be in [0, 1)")
    _check(finite(c.bn_epsilon) and c.bn_epsilon > 0, "bn_epsilon", c.bn_epsilon, "must be positive")
    _check(finite(c.init_std) and c.init_std > 0, "init_std", c.init_std, "must be positive")
    _check(finite(c.momentum) and 0 <= c.momentum < 1, "momentum", c.momentum, "must be in [0, 1)")
    _check(c.seed >= 0, "seed", c.seed, "must be 0 or more")
    _check(c.workers >= 0, "workers", c.workers, "must be 0 (automatic) or a number of runs at once")
    _check(c.eval_every is None or c.eval_every >= 1, "eval_every", c.eval_every, "must be at least 1")
    _check(c.eval_samples >= 1, "eval_samples", c.eval_samples, "must be at least 1")
    _check(finite(c.target_accuracy) and 0 < c.target_accuracy <= 1, "target_accuracy", c.target_accuracy, "must be in (0, 1]")
    _check(c.bn_recalibrate >= 0, "bn_recalibrate", c.bn_recalibrate, "must be 0 (off) or a number of training images")
    _check(c.trace_units >= 1, "trace_units", c.trace_units, "must be at least 1")
    _check(c.probe_size >= 2, "probe_size", c.probe_size, "must be at least 2")
    _check(c.checkpoint_every is None or c.checkpoint_every >= 1, "checkpoint_every", c.checkpoint_every, "must be at least 1")
    _check(finite(c.divergence_factor) and c.divergence_factor > 1, "divergence_factor", c.divergence_factor, "must be a finite number above 1")
    _check(finite(c.test_fraction) and 0 < c.test_fraction < 1, "test_fraction", c.test_fraction, "must be in (0, 1)")
    _check(c.image_size is None or _hw(c.image_size) is not None, "image_size", c.image_size,
           "write HxW, e.g. 32x32 (or one number for a square)")
    for key in ("filters", "kernel_size", "stages", "convs_per_stage", "blocks_per_stage", "norm_groups"):
        _check(getattr(c, key) >= 1, key, getattr(c, key), "must be at least 1")
    _check(c.bn_virtual_batch is None or c.bn_virtual_batch >= 1, "bn_virtual_batch", c.bn_virtual_batch,
           "must be at least 1 (or unset for the whole batch)")
    _check(finite(c.renorm_rmax) and c.renorm_rmax >= 1, "renorm_rmax", c.renorm_rmax, "must be at least 1 (1: plain BN)")
    _check(finite(c.renorm_dmax) and c.renorm_dmax >= 0, "renorm_dmax", c.renorm_dmax, "must be 0 (plain BN) or more")
    _check(c.renorm_warmup >= 0, "renorm_warmup", c.renorm_warmup, "must be 0 (no warm-up) or a number of steps")
    _check(finite(c.ray_cpus_per_run) and c.ray_cpus_per_run > 0, "ray_cpus_per_run", c.ray_cpus_per_run, "must be positive")
    for key, allowed in (("activation", ACTIVATIONS), ("initializer", INITIALIZERS),
                         ("optimizer", OPTIMIZERS), ("execution", EXECUTIONS), ("cnn_head", CNN_HEADS)):
        value = getattr(c, key)
        _check(value in allowed, key, value, f"choose one of {', '.join(allowed)}{nearest(str(value), allowed)}")
    if c.color_mode is not None:
        _check(c.color_mode in COLOR_MODES, "color_mode", c.color_mode, f"choose one of {', '.join(COLOR_MODES)}")
    _check(bool(c.dataset), "dataset", c.dataset, "must name a dataset; see `bnexp list`")
    _check(bool(c.results), "results", c.results, "must name a folder")
    return c


# compare and sweep run this many seeds unless told otherwise. One seed is a single draw:
# after one epoch on Fashion-MNIST a BN net's test accuracy varies by about 2.5 points
# (std) from seed to seed, so one run cannot say whether BN helped, and with n = 1 there is
# no interval and no test. Three is the fewest that give both; `--seeds 1` asks for one.
DEFAULT_SEEDS = 3


@dataclass
class Experiment:
    """A config plus what a compare or sweep runs over it."""

    config: Config
    variants: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: list(range(DEFAULT_SEEDS)))
    seeds_named: bool = False  # did the user (YAML or flag) give seeds or a seed?
    baseline: str | None = None
    grid: dict[str, list] = field(default_factory=dict)
    define: dict[str, Any] = field(default_factory=dict)
    dataset_named: bool = False  # did the user (YAML or flag) name the dataset?
    source: str | None = None  # the YAML file, if any


_LOADER = None


def _yaml_load(text: str) -> Any:
    """yaml.safe_load, except that `1e-3` is a float, as in YAML 1.2 and Python.

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-3`), so `lr: 1e-3` would be
    the string '1e-3' and be refused as a wrong type.
    """
    global _LOADER
    import re

    import yaml

    if _LOADER is None:
        class Loader(yaml.SafeLoader):
            pass

        # checked after the built-in int and float patterns, so it only adds dot-less exponents
        Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                     list("-+0123456789"))
        _LOADER = Loader
    return yaml.load(text, Loader=_LOADER)


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from `path`, or a UsageError naming the file (and line)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UsageError(f"config file {str(p)!r} not found; check the path (experiments/ holds examples)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read config file {str(p)!r}: {e}") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"malformed YAML in {p}{where}: {problem}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{p}: the top level must be a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_set(pairs: list[str] | None) -> dict:
    """`--set KEY=VALUE` pairs; VALUE is read as YAML (so 1e-3, true, null work)."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: write KEY=VALUE, e.g. --set width=512")
        try:
            out[key] = _yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def _seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, bool):
        raise UsageError(f"{where}: seeds must be a count or a list of integers")
    if isinstance(value, int):
        if value < 1:
            raise UsageError(f"{where}: seeds must be at least 1, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value):
        return list(dict.fromkeys(value))
    raise UsageError(f"{where}: seeds must be a count or a non-empty list of integers >= 0, got {value!r}")


def load(yaml_path: str | Path | None = None, flags: dict | None = None,
         set_pairs: list[str] | None = None) -> Experiment:
    """Resolve defaults < YAML < `--set` < explicit flags into a validated Experiment.

    `flags` holds only the options the user actually passed (None values are dropped);
    experiment keys (variants, seeds, baseline, grid, define) may appear there too.
    """
    values: dict[str, Any] = {}
    exp_values: dict[str, Any] = {}
    where = "command line"
    layers = []
    if yaml_path is not None:
        layers.append((str(yaml_path), read_yaml(yaml_path)))
    layers.append(("--set", parse_set(set_pairs)))
    layers.append(("command line", {k: v for k, v in (flags or {}).items() if v is not None}))
    for where, layer in layers:
        for key, value in layer.items():
            key = str(key).replace("-", "_") if str(key).replace("-", "_") in CONFIG_KEYS else str(key)
            if key in EXPERIMENT_KEYS:
                exp_values[key] = value
            elif key in CONFIG_KEYS:
                try:
                    values[key] = coerce(key, value)
                except UsageError as e:
                    raise UsageError(f"{where}: {e}") from None
            else:
                valid = CONFIG_KEYS + tuple(EXPERIMENT_KEYS)
                raise UsageError(f"{where}: unknown key {key!r}{nearest(key, valid)}; valid keys are listed by `bnexp list --keys`")
    cfg = validate(Config(**values))
    exp = Experiment(config=cfg, dataset_named="dataset" in values, source=str(yaml_path) if yaml_path else None)
    if "variants" in exp_values:
        v = exp_values["variants"]
        if isinstance(v, str):
            v = [v]
        if not (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
            raise UsageError("variants must be a non-empty list of variant names, e.g. [plain, bn-pre]")
        exp.variants = list(dict.fromkeys(v))
    if "seeds" in exp_values:
        exp.seeds, exp.seeds_named = _seeds(exp_values["seeds"], "seeds"), True
    elif "seed" in values:
        exp.seeds, exp.seeds_named = [cfg.seed], True
    if "baseline" in exp_values:
        if not isinstance(exp_values["baseline"], str):
            raise UsageError("baseline must be a variant name")
        exp.baseline = exp_values["baseline"]
    if "grid" in exp_values:
        exp.grid = _grid(exp_values["grid"], cfg)
    if "define" in exp_values:
        if not isinstance(exp_values["define"], dict):
            raise UsageError("define must map new variant names to layer lists, e.g. {my-net: [dense, act, bn]}")
        exp.define = exp_values["define"]
    return exp


def _grid(grid: Any, cfg: Config) -> dict[str, list]:
    """Each grid key is a config key with a list of values, or a label whose values are
    mappings of several keys changed together (e.g. batch_size with a scaled lr)."""
    if not isinstance(grid, dict) or not grid:
        raise UsageError("grid must map config keys to lists of values, e.g. {lr: [0.01, 0.1, 1.0]}")
    out = {}
    for key, vals in grid.items():
        if key in ("seed", "dataset", "results", "data_dir"):
            raise UsageError(f"grid key {key!r} cannot be swept; use seeds: for seeds")
        if not isinstance(vals, list) or not vals:
            raise UsageError(f"grid key {key!r} needs a non-empty list of values")
        if all(isinstance(v, dict) for v in vals):
            checked = [{k: coerce(k, x) for k, x in v.items()} for v in vals]
            for v in checked:
                validate(dataclasses.replace(cfg, **v))
        elif key not in CONFIG_KEYS:
            raise UsageError(f"grid key {key!r} is not a config key{nearest(str(key), CONFIG_KEYS)}; "
                             "give a config key, or a label whose values are mappings of keys")
        else:
            checked = [coerce(key, v) for v in vals]
            for v in checked:
                validate(dataclasses.replace(cfg, **{key: v}))
        out[key] = checked
    return out


def grid_changes(key: str, value: Any) -> dict:
    """The config changes one grid value stands for."""
    return dict(value) if isinstance(value, dict) else {key: value}


def role(key: str) -> str:
    return _FIELDS[key].metadata["role"]


def resolved(cfg: Config) -> Config:
    """`cfg` with every "auto" value resolved (the fields' `auto`): what a run is planned, keyed,
    trained and recorded with, so a run's record says what it ran."""
    changes = {f.name: f.metadata["auto"](cfg) for f in fields(Config)
               if f.metadata["auto"] and getattr(cfg, f.name) == "auto"}
    return dataclasses.replace(cfg, **changes) if changes else cfg


def key_dict(cfg: Config, read: set[str] | None, roles: tuple[str, ...] = (GRAPH, VALUE, DATA)) -> dict:
    """The config part of a key: each field of those roles, at its value where the run reads it
    (`read`: None for every field; data fields always count) and at its default where it does
    not. A field added after schema 1 is left out at its default, so older runs keep their keys."""
    out = {}
    for f in fields(Config):
        r = f.metadata["role"]
        if r not in roles:
            continue
        value = getattr(cfg, f.name) if (read is None or f.name in read or r == DATA) else f.default
        if f.metadata["since"] > 1 and value == f.default:
            continue
        out[f.name] = f.metadata["key"](value) if f.metadata["key"] and value is not None else value
    return out


def digest(obj: Any) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def documented_keys() -> list[tuple[str, str, str, str]]:
    """(key, type, default, the comment beside it in Config) for `bnexp list --keys`."""
    import inspect
    import re

    docs, last = {}, None
    for line in inspect.getsource(Config).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)$", line)
        if m:
            last = m.group(1)
            docs[last] = m.group(2)
        elif last and line.strip().startswith("#"):  # the comment goes on below its field
            docs[last] += " " + line.strip().lstrip("#").strip()
        else:
            last = None
    hints = _field_types()
    return [(f.name, str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", ""),
             repr(f.default), docs.get(f.name, "")) for f in fields(Config)]
