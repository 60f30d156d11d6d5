"""Does the reference comparison still give exactly the same numbers?

    python benchmarks/reference_check.py            # trains the 12 runs in a temporary folder (~1 min)
    python benchmarks/reference_check.py --results DIR   # checks the runs already in DIR

Runs `bnexp compare plain dropout bn-pre bn-post --dataset fashion-mnist --seeds 3` and
compares every number in each run's metrics.json, except times, ids and the environment, with
reference-metrics.json (recorded at 96ca90f, before the core was opened). The config is
compared on the keys the reference has, except those whose role is io (where files go), and
the run keys must match too: existing results folders are still reused. Same machine only:
XLA's floating point may differ between CPUs.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COMMAND = ["compare", "plain", "dropout", "bn-pre", "bn-post", "--dataset", "fashion-mnist", "--seeds", "3"]


def main() -> int:
    from bnexp.config import IO, role

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, help="check the runs in this folder instead of training them")
    args = ap.parse_args()
    folder = args.results or Path(tempfile.mkdtemp(prefix="bnexp-reference-"))
    if args.results is None:
        subprocess.run([sys.executable, "-m", "bnexp.cli", *COMMAND, "--results", str(folder), "--json"],
                       check=True, stdout=subprocess.DEVNULL)
    ref = json.loads((HERE / "reference-metrics.json").read_text())["runs"]
    got = {}
    for f in glob.glob(str(folder / "*" / "metrics.json")):
        r = json.loads(Path(f).read_text())
        if r.get("status") in ("finished", "diverged"):
            got[f"{r['variant']}-s{r['seed']}"] = r
    diffs = []
    for name, want in sorted(ref.items()):
        if name not in got:
            diffs.append(f"{name}: no finished run")
            continue
        for key, value in want.items():
            mine = got[name].get(key)
            if key == "config":
                value = {k: v for k, v in value.items() if role(k) != IO}
                mine = {k: v for k, v in (mine or {}).items() if k in value}
            if json.dumps(mine, sort_keys=True) != json.dumps(value, sort_keys=True):
                diffs.append(f"{name} {key}: {str(mine)[:80]} != {str(value)[:80]}")
    for d in diffs:
        print("DIFF", d)
    print(f"{len(ref)} runs, {sum(len(v) for v in ref.values())} values compared: "
          f"{'all equal' if not diffs else f'{len(diffs)} differ'}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
