"""What the near-duplicate split does on a folder of MIDI files (the figures in docs/guide/data.md):
how many files the split joins into groups of variants, and how many test pieces keep a similar
training piece (at the leakage threshold and at the split's), with exact copies only and with
near-duplicates joined (``musicgen.data.split``, ``musicgen.metrics.similarity``).

    .venv/bin/python scripts/split_groups.py [data/folk] [--seed 0] [--val 0.1] [--test 0.1]
"""

import argparse
import time
from pathlib import Path

import numpy as np

from musicgen.data.split import assign_splits, merged_groups, near_duplicate_groups, read_pieces
from musicgen.metrics.similarity import LEAKAGE_THRESHOLD, SPLIT_THRESHOLD, nearest, signature


def leaks(files, keys, contours, seed, val, test) -> tuple[int, int, int]:
    """Test pieces, and how many have a training piece at least LEAKAGE_THRESHOLD / SPLIT_THRESHOLD similar."""
    sides = assign_splits(files, seed, val, test, keys)
    sig = {rel: signature(contours[rel]) for rel, _ in files}
    best, _ = nearest([sig[rel] for rel, _ in sides["test"]], [sig[rel] for rel, _ in sides["train"]])
    return len(best), int(np.sum(best >= LEAKAGE_THRESHOLD)), int(np.sum(best >= SPLIT_THRESHOLD))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default="data/folk")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.1)
    args = p.parse_args()
    root = Path(args.folder)
    files = [(str(f.relative_to(root)), f) for f in sorted(root.rglob("*.mid"))]
    t = time.perf_counter()
    exact, contours = read_pieces(files)
    t_read = time.perf_counter() - t
    t = time.perf_counter()
    joined = near_duplicate_groups(exact, contours, SPLIT_THRESHOLD)
    t_search = time.perf_counter() - t
    groups = merged_groups(joined, exact)
    print(f"{len(files)} files of {root}; split seed {args.seed}, val {args.val}, test {args.test}; "
          f"reading {t_read:.1f} s, search {t_search:.1f} s")
    print(f"groups: {groups}")
    print(f"\n| split keys | test pieces | with a training piece >= {LEAKAGE_THRESHOLD} | >= {SPLIT_THRESHOLD} |")
    print("|---|---|---|---|")
    for name, keys in (("exact copies only", exact), ("near-duplicates joined", joined)):
        n, loose, strict = leaks(files, keys, contours, args.seed, args.val, args.test)
        print(f"| {name} | {n} | {loose} ({loose / n:.1%}) | {strict} |")


if __name__ == "__main__":
    main()
