"""Precedence defaults < YAML < --set < flags, and errors that name the key."""

import math
from pathlib import Path

import pytest

from bnexp.config import CONFIG_KEYS, Config, documented_keys, key_dict, load
from bnexp.errors import UsageError

EXPERIMENTS = sorted(Path("experiments").glob("*.yaml"))


def test_defaults_are_the_labs():
    c = Config()
    assert (c.optimizer, c.lr, c.batch_size, c.epochs, c.depth, c.width, c.dropout) == ("adam", 0.001, 128, 1, 2, 256, 0.5)
    assert c.steps_per_epoch(60_000) == 468 and c.resolved_eval_every(60_000) == 46


def test_precedence(tmp_path):
    y = tmp_path / "x.yaml"
    y.write_text("lr: 0.01\nwidth: 64\nbatch_size: 32\n")
    exp = load(y, {"lr": 0.5, "epochs": None}, ["width=128"])
    assert (exp.config.lr, exp.config.width, exp.config.batch_size, exp.config.epochs) == (0.5, 128, 32, 1)
    assert not exp.dataset_named


def test_experiment_keys(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("variants: [plain, bn-pre]\nseeds: 3\ngrid: {lr: [0.1, 1]}\ndataset: fashion-mnist\n")
    exp = load(y)
    assert exp.variants == ["plain", "bn-pre"] and exp.seeds == [0, 1, 2] and exp.grid == {"lr": [0.1, 1.0]}
    assert exp.dataset_named


def test_seeds_default_to_three_unless_named(tmp_path):
    """compare and sweep run 3 seeds unless the YAML or a flag says otherwise; train runs `seed`."""
    exp = load()
    assert (exp.seeds, exp.seeds_named, exp.config.seed) == ([0, 1, 2], False, 0)
    assert (load(None, {"seed": 4}).seeds, load(None, {"seed": 4}).seeds_named) == ([4], True)
    assert load(None, None, ["seed=5"]).seeds == [5]
    assert load(None, {"seeds": 1}).seeds == [0]
    y = tmp_path / "one.yaml"
    y.write_text("seeds: [7]\n")
    assert (load(y).seeds, load(y).seeds_named) == ([7], True)


@pytest.mark.parametrize("text, phrase", [
    ("lr: fast\n", "'lr' must be float"),
    ("widht: 3\n", "unknown key 'widht' (did you mean 'width'?)"),
    ("batch_size: 0\n", "invalid batch_size=0"),
    ("epochs: 1.5\n", "'epochs' must be int"),
    ("use_bias: 1\n", "'use_bias' must be bool"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("lr: [1\n", "line"),
    ("grid: {seed: [1, 2]}\n", "cannot be swept"),
    ("seeds: 0\n", "seeds must be at least 1"),
])
def test_errors_name_the_key(tmp_path, text, phrase):
    y = tmp_path / "bad.yaml"
    y.write_text(text)
    with pytest.raises(UsageError, match=None) as e:
        load(y)
    assert phrase in str(e.value)


def test_nan_lr_is_refused():
    with pytest.raises(UsageError, match="invalid lr"):
        load(None, {"lr": math.nan})


def test_result_key_ignores_where_things_go():
    a, b = key_dict(Config(results="a", data_dir="x"), None), key_dict(Config(results="b"), None)
    assert a == b and key_dict(Config(seed=1), None) != b


def test_image_size_may_be_a_number_in_yaml(tmp_path):
    f = tmp_path / "e.yaml"
    f.write_text("image_size: 32\n")
    assert load(f).config.image_size == "32"


def test_every_key_is_documented():
    docs = {k: d for k, _, _, d in documented_keys()}
    assert set(docs) == set(CONFIG_KEYS) and all(docs.values())


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_shipped_experiments_load_and_say_what_to_expect(path):
    text = path.read_text()
    header = text.split("\n\n")[0]
    assert header.startswith("#") and "bnexp " in header and "xpect" in header
    load(path)
