"""The README's flags work where it says they do, and its two set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import invoke

README = Path(__file__).resolve().parent.parent / "README.md"


def _flag_rows():
    table = README.read_text().split("| flag | commands |", 1)[1].split("\n\n", 1)[0]
    for line in table.splitlines()[2:]:
        flags_cell, commands_cell = line.strip("|").split("|")
        for flag in re.findall(r"`(--[a-z-]+)`", flags_cell):
            for command in (c.strip() for c in commands_cell.split(",")):
                yield flag, command


ROWS = sorted(set(_flag_rows()))


def test_the_table_is_there():
    assert len(ROWS) > 30


@pytest.mark.parametrize("flag, command", ROWS, ids=[f"{c} {f}" for f, c in ROWS])
def test_every_flag_the_readme_lists_is_accepted_by_the_command_it_names(flag, command):
    res = invoke([command, "--help"])
    assert res.exit_code == 0, res.output
    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", res.output), f"{command} has no {flag}"


def test_the_ci_runs_the_readmes_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", README.read_text(), re.S)
    assert blocks[0].startswith("pip install -e . && bnexp compare")
    pip, *test_cmds = [c.strip() for c in blocks[1].split("&&")]
    assert pip == "pip install -e '.[test]'" and test_cmds
    assert all(c.startswith("python3 -m pytest") and c in ci for c in test_cmds)
    # together they run every test file, each once: what one command ignores, the other runs
    ignored = {a.split("=", 1)[1] for c in test_cmds for a in c.split() if a.startswith("--ignore=")}
    named = {a for c in test_cmds for a in c.split() if a.startswith("tests/")}
    assert ignored == named and len(test_cmds) == 1 + len(named)
