#!/usr/bin/env bash
# Item 1b of bench.py (two bnexp runs at once in two threads, two fits at once, and the floor two
# at once) for an older commit and for this tree, alternating, 4 times each, so that the host's
# drift falls on both alike. Then: python benchmarks/ab_two_at_once.py OUT_DIR
#   bash benchmarks/ab_two_at_once.sh BEFORE_WORKTREE OUT_DIR
# (BEFORE_WORKTREE: e.g. `git worktree add /tmp/before 96ca90f`; its own bench.py runs its own bnexp.)
set -u
before=$(cd "$1" && pwd); out=$2; here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
for i in 1 2 3 4; do
  PYTHONPATH="$before" python3 "$before/benchmarks/bench.py" --two-at-once-child --out "$out/before-$i.json" 2> "$out/before-$i.err"
  echo "$(date +%T) before $i rc=$?"
  python3 "$here/benchmarks/bench.py" --two-at-once-child --out "$out/after-$i.json" 2> "$out/after-$i.err"
  echo "$(date +%T) after $i rc=$?"
done
