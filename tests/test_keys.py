"""Keys are derived from the config's declared roles and from what a run's builders read.

No list of key names stands in the planning or training code; these tests are where lists
are allowed: the alternative value to try for each field, and the contexts in which a
builder reads it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bnexp.config import CONFIG_KEYS, DATA, GRAPH, IO, ROLES, VALUE, Config, resolved, role
from bnexp.models import VARIANTS
from bnexp.plan import RunSpec, reads
from bnexp.train.program import program_key

SHA = "0" * 64

# Another valid value for each field, to see whether changing it changes a key.
OTHER = {
    "dataset": "fashion-mnist", "data_dir": "/tmp", "test_fraction": 0.3, "image_size": "16x16", "color_mode": "rgb",
    "label_column": "y", "model": "cnn", "depth": 3, "width": 64, "filters": 8, "kernel_size": 5, "stages": 3,
    "convs_per_stage": 1, "cnn_head": "flatten", "spatial_dropout": True, "blocks_per_stage": 2, "activation": "tanh",
    "initializer": "he", "init_std": 0.05, "use_bias": False, "bn_drop_bias": True, "dropout": 0.25, "norm": "group",
    "bn_momentum": 0.9, "bn_epsilon": 1e-5, "bn_virtual_batch": 32, "norm_groups": 16, "renorm_rmax": 2.0,
    "renorm_dmax": 1.0, "renorm_warmup": 100, "optimizer": "sgd", "lr": 0.01, "momentum": 0.5, "batch_size": 64,
    "epochs": 2, "steps": 50, "seed": 1, "eval_every": 7, "eval_samples": 500, "target_accuracy": 0.9,
    "bn_batchstats_eval": True, "bn_recalibrate": 1000, "traces": True, "trace_units": 2, "probe_size": 100,
    "checkpoint_every": 10, "divergence_factor": 10.0, "execution": "graph", "workers": 1, "executor": "process",
    "ray_address": "auto", "ray_cpus_per_run": 2.0, "results": "elsewhere",
}

# Configs under which the builders take each branch: a field read in none of them is never read.
CONTEXTS = [
    (VARIANTS[v], Config(**over))
    for v in ("plain", "dropout", "bn-pre", "bn-post", "gn-pre", "brn-pre")
    for over in ({}, {"optimizer": "momentum", "initializer": "normal", "traces": True}, {"model": "cnn"},
                 {"model": "cnn", "spatial_dropout": True, "use_bias": True}, {"norm": "renorm"})
] + [(VARIANTS["res-original"], Config(model="resnet"))]


def _context(field: str):
    return next(((v, c) for v, c in CONTEXTS if field in reads(v, c)), None)


def _changed(cfg: Config, field: str) -> Config:
    value = OTHER[field]
    if getattr(cfg, field) == value:  # the context already set it
        value = {"cnn": "resnet", True: False, "momentum": "sgd"}.get(value, value)
    return cfg.replace(**{field: value})


def test_auto_execution_is_xla_for_the_mlp_and_graph_for_convnets():
    assert resolved(Config()).execution == "xla"  # as every run before "auto" existed: their keys hold
    assert resolved(Config(model="cnn")).execution == resolved(Config(model="resnet")).execution == "graph"
    assert resolved(Config(model="cnn", execution="xla")).execution == "xla"


def test_every_field_has_a_role_and_an_alternative():
    assert {role(k) for k in CONFIG_KEYS} <= set(ROLES)
    assert set(OTHER) == set(CONFIG_KEYS)


@pytest.mark.parametrize("field", [k for k in CONFIG_KEYS if role(k) == GRAPH])
def test_every_graph_field_is_read_somewhere_and_changes_the_program_key(field):
    found = _context(field)
    assert found, f"{field} shapes the graph but no builder reads it"
    variant, cfg = found
    other = _changed(cfg, field)
    other_variant = VARIANTS["res-original"] if other.model == "resnet" else variant  # resnet builds residual units
    assert program_key(variant, cfg, set(reads(variant, cfg)), SHA) != \
        program_key(other_variant, other, set(reads(other_variant, other)), SHA)


@pytest.mark.parametrize("field", [k for k in CONFIG_KEYS if role(k) in (VALUE, IO)])
def test_values_and_io_never_change_the_program_key(field):
    variant, cfg = _context(field) or (VARIANTS["bn-pre"], Config())
    other = _changed(cfg, field)
    assert program_key(variant, cfg, set(reads(variant, cfg)), SHA) == \
        program_key(variant, other, set(reads(variant, other)), SHA)


@pytest.mark.parametrize("field", CONFIG_KEYS)
@pytest.mark.parametrize("variant", ["plain", "dropout", "bn-pre", "gn-pre"])
def test_the_reuse_key_changes_exactly_when_the_result_can(field, variant):
    v, cfg = VARIANTS[variant], Config()
    other = _changed(cfg, field)
    if other.model != "mlp":
        return  # a placement variant on another family: covered by the family tests
    changes = RunSpec(v, cfg).key(SHA) != RunSpec(v, other).key(SHA)
    read = field in reads(v, cfg) or field in reads(v, other)
    assert changes == (role(field) != IO and (read or role(field) == DATA)), (field, variant)


def test_plain_never_reads_bn_keys_and_a_fixed_norm_ignores_the_norm_key():
    assert not {"bn_momentum", "bn_epsilon", "bn_recalibrate", "norm", "dropout"} & reads(VARIANTS["plain"], Config())
    assert "norm" not in reads(VARIANTS["gn-pre"], Config())  # gn-pre's slot is group norm, whatever --set norm says
    assert "norm_groups" in reads(VARIANTS["gn-pre"], Config())
    assert "norm" in reads(VARIANTS["bn-pre"], Config())


# Computed with bnexp at 96ca90f, before keys were derived: runs made then are still reused.
OLD_KEYS = {
    ("plain", 0): "6e5cb148b35d9752", ("plain", 1): "a4b2985354c9e2e3", ("plain", 2): "3fc66b545d0fb434",
    ("dropout", 0): "5e2c52028cc31206", ("dropout", 1): "b052f2ba4eaa3533", ("dropout", 2): "ff69d8239deec63c",
    ("bn-pre", 0): "0192104a708b7532", ("bn-pre", 1): "922fdb3161b219a1", ("bn-pre", 2): "c921577f29085200",
    ("bn-post", 0): "b2a1834163258d88", ("bn-post", 1): "134ff5c60e7238a1", ("bn-post", 2): "d7f35f003db036b2",
    ("bn-preact", 0): "21c5e6da709dc4f9", ("bn-preact", 1): "aa4f27e72afc43eb", ("bn-preact", 2): "12a8b230fc634eaf",
}
OLD_CONFIGS = ({}, {"steps": 20, "width": 16, "eval_every": 10, "dataset": "mnist-sample"}, {"bn_momentum": 0.9, "lr": 0.01})


@pytest.mark.parametrize("variant, which", list(OLD_KEYS))
def test_runs_made_before_keys_were_derived_keep_their_keys(variant, which):
    spec = RunSpec(VARIANTS[variant], resolved(Config(**OLD_CONFIGS[which])))  # as plan() makes it
    assert spec.key(SHA) == OLD_KEYS[(variant, which)]


def test_planning_imports_no_tensorflow():
    code = ("import sys; from bnexp.plan import RunSpec; from bnexp.models import VARIANTS; from bnexp.config import Config\n"
            "for v in VARIANTS.values():\n"
            "    RunSpec(v, Config(model='resnet' if v.unit else 'cnn')).key('0')\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_no_list_of_key_names_in_planning_or_training_code():
    """The planning, training and executor modules hold no tuple, list or set naming two or more
    config fields: which keys count is derived, so forgetting to update a list is not possible."""
    import ast
    from pathlib import Path

    import bnexp

    root = Path(bnexp.__file__).parent
    for path in [root / "plan.py", *sorted((root / "train").glob("*.py")), *sorted((root / "executors").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                names = [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in CONFIG_KEYS]
                assert len(names) < 2, f"{path.name} line {node.lineno} lists config keys {names}"
