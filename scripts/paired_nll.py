"""Paired difference of two evaluated runs' NLL per note on the same pieces, with a 95% bootstrap
interval over pieces (each redraw takes the same pieces for both runs;
``musicgen.metrics.statistics.paired_difference``, a BCa bootstrap). Both runs must have been
evaluated (`musicgen evaluate`) on the same split of the same files; notes are counted in the
source files, so runs on different tokenisers of the same music compare.

    .venv/bin/python scripts/paired_nll.py RUN_A RUN_B [--boot 2000] [--seed 0]

Prints A's and B's NLL per note and A - B with its interval.
"""

import argparse
from pathlib import Path

import numpy as np

from musicgen.metrics.statistics import paired_difference


def load(run: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(run) / "evaluation_pieces.npz"
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing; run musicgen evaluate ckpt_path={run} first")
    z = np.load(path)
    return z["likelihood/model_nll"], z["likelihood/notes"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    (nll_a, notes_a), (nll_b, notes_b) = load(a.run_a), load(a.run_b)
    if len(nll_a) != len(nll_b) or not np.array_equal(notes_a, notes_b):
        raise SystemExit("error: the two runs were not evaluated on the same pieces (piece counts or notes differ)")
    diff = paired_difference(nll_a, nll_b, notes_a, n_boot=a.boot, seed=a.seed)
    print(f"{len(nll_a)} pieces, {int(notes_a.sum())} notes")
    print(f"A {a.run_a}: {nll_a.sum() / notes_a.sum():.4f} nats/note")
    print(f"B {a.run_b}: {nll_b.sum() / notes_b.sum():.4f} nats/note")
    print(f"A - B: {diff['value']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}] (95% paired BCa bootstrap)")


if __name__ == "__main__":
    main()
