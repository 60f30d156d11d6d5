"""Property tests: whatever a YAML file or the command line holds, bnexp answers with a config
or one UsageError line, never a crash."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bnexp import config, data
from bnexp.config import CONFIG_KEYS, EXPERIMENT_KEYS, Config, Experiment
from bnexp.errors import UsageError
from conftest import invoke

pytestmark = pytest.mark.usefixtures("isolated")

KEYS = CONFIG_KEYS + tuple(EXPERIMENT_KEYS)
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- strategies

junk_text = st.text(max_size=12)
scalars = st.one_of(
    st.integers(-(10**30), 10**30),
    st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1),
    junk_text,
    st.sampled_from(["relu", "tanh", "adam", "sgd", "xla", "eager", "he", "normal", "mnist", "mnist-sample",
                     "plain", "bn-pre", "dense", "bn", "act", "dropout", "[/x]", "[bold]"]),
    st.booleans(),
    st.none(),
)
keys = st.one_of(st.sampled_from(KEYS), junk_text, st.integers(-2, 2), st.none(), st.booleans())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=8)
grid = st.dictionaries(keys, st.lists(scalars, max_size=3) | st.lists(st.dictionaries(keys, scalars, max_size=2),
                                                                         min_size=1, max_size=2) | scalars,
                       max_size=3)
define = st.dictionaries(junk_text | st.sampled_from(["mine", "plain"]),
                         st.lists(st.sampled_from(["dense", "bn", "act", "dropout", "relu"]), max_size=5) | values,
                         max_size=2)
documents = st.dictionaries(keys, values, max_size=6) | st.fixed_dictionaries(
    {},
    optional={"variants": st.lists(st.sampled_from(["plain", "bn-pre", "mine"]) | junk_text, max_size=3) | values,
              "seeds": st.integers(-2, 5) | st.lists(st.integers(-2, 5), max_size=3) | values,
              "grid": grid, "define": define, "baseline": scalars,
              "lr": st.floats(allow_nan=True, allow_infinity=True), "batch_size": st.integers(-2, 600),
              "epochs": st.integers(-1, 3), "dropout": st.floats(-1, 2), "activation": scalars,
              "steps": st.integers(-1, 100) | st.none(), "width": st.integers(-1, 64)},
)


def mutate(text: str, draws: list[tuple[int, str]]) -> str:
    for pos, piece in draws:
        i = pos % (len(text) + 1)
        text = text[:i] + piece + text[i:]
    return text


yaml_texts = st.one_of(
    documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.builds(mutate, documents.map(lambda d: yaml.safe_dump(d, default_flow_style=True)),
              st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(list(":-[]{}#&*!|>'\"%@`\t\n ,?") + ["\n  ", "\x00"])),
                       min_size=1, max_size=4)),
    st.text(max_size=80),
    st.text(alphabet=":-[]{}#&*!|>'\"%@ \n\tabc123.e", max_size=60),
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------- (1) config.load on random YAML


@FUZZ
@given(text=yaml_texts)
@example(text="lr: 1e-3\n")
@example(text="grid: {1: [1]}\n")
@example(text="grid: {lr: [{1: 2}]}\n")
@example(text='"[/x]": 1\n')
@example(text="lr: .nan\n")
@example(text="seeds: [true]\n")
@example(text="variants: []\n")
@example(text="? [a]\n: 1\n")
@example(text="!!python/object:os.system {}\n")
@example(text="*undefined_alias\n")
@example(text="\ufeffa: b\n")
def test_load_random_yaml_gives_a_config_or_a_usage_error(scratch, text):
    path = scratch / "fuzz.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        exp = config.load(path)
    except UsageError as e:
        event("load: UsageError")
        msg = str(e)
        assert msg and "\n" not in msg
        return
    event("load: a config")
    assert isinstance(exp, Experiment) and isinstance(exp.config, Config)
    assert config.validate(exp.config) is exp.config
    assert math.isfinite(exp.config.lr) and exp.config.lr > 0
    assert exp.seeds and all(isinstance(s, int) and s >= 0 for s in exp.seeds)
    for key, vals in exp.grid.items():
        assert isinstance(vals, list) and vals


# ---------------------------------------------------------------- (2) random option values through the CLI


def _tiny_idx(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (rng.integers(0, 256, (16, 28, 28)), rng.integers(0, 10, 16), rng.integers(0, 256, (8, 28, 28)),
              rng.integers(0, 10, 8))
    for name, arr, magic in zip(data.IDX_FILES, arrays, (0x803, 0x801) * 2):
        a = np.asarray(arr, np.uint8)
        head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
        (folder / name).write_bytes(gzip.compress(head + a.tobytes()))


SWEEP = """\
variants: [plain, bn-pre]
seeds: 2
dataset: mnist
data_dir: {data}
batch_size: 4
steps: 20
width: 16
grid:
  lr: [0.001, 0.01]
"""

set_values = st.one_of(
    st.text(max_size=15),
    st.integers(-1000, 1000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from([".nan", ".inf", "-.inf", "1e-3", "1e400", "null", "~", "true", "no", "[1, 2]", "{a: 1}",
                     "[/x]", "[red]x", "'", '"', "[", "{", ":", "- a", "0x10", "0o7", "1_000", "", " "]),
)
set_pairs = st.one_of(
    st.tuples(st.sampled_from(KEYS) | st.text(max_size=8), set_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=12),
)
numbers = st.one_of(st.integers(-3, 50).map(str), st.text(max_size=6), st.sampled_from(["nan", "inf", "-0", "1e3", "1.5"]))
options = st.lists(st.one_of(
    set_pairs.map(lambda p: ["--set", p]),
    numbers.map(lambda v: ["--epochs", v]),
    numbers.map(lambda v: ["--seeds", v]),
    st.sampled_from(["mnist", "fashion-mnist", "cifar10", "mnist-sample", "fashon-mnist", "", "[/x]"]).map(lambda v: ["--dataset", v]),
    st.sampled_from(["md", "csv", "table", "xml"]).map(lambda v: ["--format", v]),
    st.just(["--json"]),
), max_size=4)


@pytest.fixture(scope="module")
def sweep_file(scratch) -> Path:
    _tiny_idx(scratch / "idx")
    f = scratch / "sweep.yaml"
    f.write_text(SWEEP.format(data=scratch / "idx"))
    return f


@FUZZ
@given(opts=options)
@example(opts=[])
@example(opts=[["--set", "lr=1e-3"], ["--json"]])
@example(opts=[["--set", "seeds=[/x]"]])
@example(opts=[["--set", "grid={1: [1]}"]])
@example(opts=[["--set", "variants=[/x]"]])
@example(opts=[["--epochs", "nan"]])
@example(opts=[["--seeds", "0"]])
def test_sweep_dry_run_with_random_options_never_crashes(sweep_file, scratch, opts):
    results = scratch / "never-created"
    args = ["sweep", sweep_file, "--dry-run", "--results", results] + [a for o in opts for a in o]
    res = invoke(args)
    detail = f"{args}\nexit {res.exit_code}\nstdout {res.stdout!r}\nstderr {res.stderr!r}\n{res.exception!r}"
    event(f"exit {res.exit_code}")
    assert res.exit_code in (0, 2), detail
    assert res.exception is None or isinstance(res.exception, SystemExit), detail
    assert "Traceback" not in res.stdout + res.stderr, detail
    if res.exit_code == 2 and res.stderr.startswith("error:"):
        assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, detail
    if res.exit_code == 0 and "--json" in args:
        doc = json.loads(res.stdout)
        assert doc["n"] == len(doc["runs"]) > 0, detail
    assert not results.exists(), "a dry run created the results folder"
