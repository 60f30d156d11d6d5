"""Summarize ab_two_at_once.sh: bnexp's two-at-once epoch as a share of the floor (the 8 products,
two at once), before and after, per alternation; writes a compact JSON beside the bench's.

    python benchmarks/ab_two_at_once.py OUT_DIR [--json benchmarks/ab-two-at-once-last-run.json]
"""

import argparse
import glob
import json
import statistics as S
from pathlib import Path


def summary(path: str) -> dict:
    sm = json.loads(Path(path).read_text())["samples"]
    b = [s["s"] for s in sm["bnexp_two_at_once"]]
    fl = [s["s"] for s in sm["products_alone_two_at_once"]]
    fit = [s["s"] for s in sm["fit_jit_spe50_two_at_once"]]
    return {"bnexp_s": {"best": min(b), "median": S.median(b)}, "floor_s": {"best": min(fl), "median": S.median(fl)},
            "fit_s": {"best": min(fit), "median": S.median(fit)},
            "share_of_floor": {"best": min(fl) / min(b), "median": S.median(fl) / S.median(b)},
            "fit_over_bnexp_median": S.median(fit) / S.median(b), "rounds": len(b)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    runs = {Path(f).stem: summary(f) for f in sorted(glob.glob(f"{a.out_dir}/*-[0-9].json"))}
    for name, r in runs.items():
        print(f"{name:9s} bnexp {r['bnexp_s']['best']:.3f} ({r['bnexp_s']['median']:.3f}) s  floor "
              f"{r['floor_s']['best']:.3f} ({r['floor_s']['median']:.3f}) s  share {r['share_of_floor']['best']:.1%} "
              f"({r['share_of_floor']['median']:.1%})  fit/bnexp {r['fit_over_bnexp_median']:.2f}")
    for who in ("before", "after"):
        mine = [r for n, r in runs.items() if n.startswith(who)]
        for stat in ("best", "median"):
            xs = [r["share_of_floor"][stat] for r in mine]
            print(f"{who:6s} share by {stat:6s}: mean {S.mean(xs):.1%}, range {min(xs):.1%}-{max(xs):.1%}")
    pairs = [(runs[f"after-{i}"]["share_of_floor"]["median"] - runs[f"before-{i}"]["share_of_floor"]["median"])
             for i in range(1, 5) if f"after-{i}" in runs and f"before-{i}" in runs]
    print("after - before, share by medians, per pair:", ", ".join(f"{100 * d:+.1f}" for d in pairs),
          f"points; mean {100 * S.mean(pairs):+.1f}, sd {100 * S.stdev(pairs):.1f}" if len(pairs) > 1 else "")
    if a.json:
        a.json.write_text(json.dumps({"runs": runs, "after_minus_before_median_share": pairs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
