"""Shared fixtures for the CLI tests: an isolated environment, ONE tiny finished run per session,
and a snapshot helper to prove that nothing already in a results folder was lost or changed.

Training is real (TensorFlow, no mocks) but tiny: mnist-sample, 20 steps, width 16.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bnexp import data
from bnexp.cli import app

# The tiny config every training test uses: 4,000 real digits, 20 steps of a 16-unit net. CLI tests
# pass TINY; library tests build the same experiment with tiny(), overriding keys with `sets`.
TINY_SETS = ["steps=20", "width=16", "eval_every=10"]
TINY = ["--dataset", "mnist-sample", *(a for s in TINY_SETS for a in ("--set", s))]


def tiny(results, variants, seeds=(0,), sets=(), **flags):
    """The tiny experiment on mnist-sample: TINY_SETS, then `sets` (later keys win), then flags."""
    from bnexp.config import load

    return load(None, {"dataset": "mnist-sample", "results": str(results), "variants": list(variants),
                       "seeds": list(seeds), **flags}, TINY_SETS + list(sets))


def run_tiny(exp, workers: int = 1, **kw):
    """Execute the experiment with local threads (`workers` at once), as compare does."""
    from bnexp.executors.local import LocalExecutor
    from bnexp.plan import execute, plan, resolve_source

    kw.setdefault("executor", LocalExecutor(workers))
    return execute(plan(exp), resolve_source(exp), **kw)
RUN_ID = re.compile(r"^\d{8}-\d{6}-[a-z0-9-]+-s\d+-[0-9a-f]{6}$")


def run_folders(results: str | Path) -> list[Path]:
    """The run folders under `results`, by name (not .keys/ or any other bookkeeping)."""
    return sorted(p for p in Path(results).iterdir() if p.is_dir() and RUN_ID.match(p.name))


def snapshot(folder: str | Path) -> dict[str, str]:
    """relative path -> sha256 of the bytes, for every file under `folder` ({} if it does not exist)."""
    root = Path(folder)
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def invoke(args: list[str], **kw):
    """Run the CLI in-process; click >= 8.2 keeps result.stdout and result.stderr apart."""
    return CliRunner().invoke(app, [str(a) for a in args], **kw)


def assert_one_error_line(res, code: int, *phrases: str) -> str:
    """The bnexp error convention: exit `code`, nothing on stdout, ONE `error: ...` line on stderr
    holding every phrase, no traceback, and no exception escaping the command."""
    detail = f"exit {res.exit_code}\nstdout: {res.stdout!r}\nstderr: {res.stderr!r}\nexception: {res.exception!r}"
    assert res.exit_code == code, detail
    assert isinstance(res.exception, SystemExit), detail  # an escaped exception would be a crash
    assert res.stdout == "", detail
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), detail
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} not in the error line\n{detail}"
    assert "Traceback" not in res.stdout + res.stderr, detail
    return lines[0]


@dataclass
class Trained:
    """The session's one finished tiny run (bn-pre, seed 0), trained by `bnexp train --json`."""

    results: Path
    run_dir: Path
    record: dict  # what `train --json` printed
    stdout: str
    stderr: str
    files: dict = field(default_factory=dict)  # snapshot right after training

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def _isolate(mp: pytest.MonkeyPatch, home: Path) -> None:
    """No real Keras cache, no BNEXP_DATA_DIR, and downloads aimed at a file:// URL that does not exist."""
    mp.setenv("KERAS_HOME", str(home / "keras_home"))
    mp.delenv("BNEXP_DATA_DIR", raising=False)
    nowhere = (home / "no_server").as_uri() + "/"
    mp.setattr(data, "KERAS_BASE_URL", nowhere)
    mp.setattr(data, "CIFAR10_URL", nowhere + "cifar-10-python.tar.gz")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Per test: isolated data lookup, and the working folder is tmp_path (so a stray default
    `results/` never lands in the repository)."""
    _isolate(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    base = tmp_path_factory.mktemp("session")
    results = base / "results"
    mp = pytest.MonkeyPatch()
    try:
        _isolate(mp, base)
        mp.chdir(base)
        res = invoke(["train", "--variant", "bn-pre", *TINY, "--results", results, "--json"])
    finally:
        mp.undo()
    assert res.exit_code == 0, f"{res.stderr}\n{res.exception!r}"
    record = json.loads(res.stdout)
    run_dir = results / record["run_id"]
    t = Trained(results, run_dir, record, res.stdout, res.stderr)
    t.files = snapshot(results)
    return t


@dataclass
class Earlier:
    """A private copy of the session's results folder, and its snapshot taken before the test acts."""

    results: Path
    run_dir: Path
    before: dict

    def unchanged(self) -> bool:
        return snapshot(self.results) == self.before


@pytest.fixture
def earlier(trained, tmp_path) -> Earlier:
    """An earlier finished run in this test's own results folder; the test must leave it exactly as is."""
    results = tmp_path / "results"
    shutil.copytree(trained.results, results)
    return Earlier(results, results / trained.run_id, snapshot(results))
