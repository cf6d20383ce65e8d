"""The purity stage against one hand-drawn trap at a time (issue 34): does it drop a real cut, or
invent a transition, where fast animation meets it?

For each trap of dataengine.cartoon_edits (a sweep, a flapping wing, an occluder, repeated wing
beats) and each seed, two short toy-world videos are made and run through the stage exactly as
ingest runs it (the thumbnails of every frame, then dataengine.purity.purify):

- **cut then trap**: shot A, a hard cut, then shot B whose first frames hold the trap. The
  detector's cut is given; the stage must keep it.
- **pass**: one shot with the trap in its middle and no cut. The stage must exclude nothing.

Seeds 0-19 are the tuning seeds, 20-39 are held out (`--seeds 20-39`).

    python benchmarks/cartoon_traps.py                 # tuning seeds
    python benchmarks/cartoon_traps.py --seeds 20-39   # held out
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(seeds: range) -> list[dict]:
    from dataengine.cartoon_edits import TRAPS, cut_then_trap, trap_in_shot
    from dataengine.purity import purify, thumbnails

    rows = []
    for trap in TRAPS:
        dropped = invented = 0
        reasons: dict = {}
        for seed in seeds:
            fr, c = cut_then_trap(trap, seed)
            r = purify(thumbnails(fr), [c])
            if c not in r.cuts:
                dropped += 1
                reasons[r.dropped_cuts.get(c)] = reasons.get(r.dropped_cuts.get(c), 0) + 1
            if purify(thumbnails(trap_in_shot(trap, seed)), []).spans:
                invented += 1
        rows.append({"trap": trap, "seeds": len(seeds), "cuts_dropped": dropped, "why": reasons,
                     "passes_with_spans": invented})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0-19", help="A-B (inclusive): 0-19 tune, 20-39 held out")
    a = ap.parse_args(argv)
    lo, hi = (int(x) for x in a.seeds.split("-"))
    rows = run(range(lo, hi + 1))
    print("| trap | real cuts dropped (why) | passes with an invented transition |")
    print("|---|---|---|")
    for r in rows:
        why = ", ".join(f"{k}: {v}" for k, v in r["why"].items()) or "-"
        print(f"| {r['trap']} | {r['cuts_dropped']}/{r['seeds']} ({why}) | {r['passes_with_spans']}/{r['seeds']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
