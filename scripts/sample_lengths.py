"""Why a run's samples run long: the length (tokens and notes per piece) of samples under several
decoding settings, beside the real test pieces, and the model's probability of EOS where real
test pieces end (``musicgen.evaluation.scoring.eos_at_ends``).

    .venv/bin/python scripts/sample_lengths.py RUN [--n 200] [--seed 1] [--out lengths.md]

Rows: the run's default sampling (temperature 0.8, top-k 50, top-p 0.95, grammar mask), then one
change at a time: temperature 1 with the filters, temperature 0.8 without them, plain ancestral
sampling (temperature 1, no filters), the same without the grammar mask, and plain sampling with
twice the trained context. If plain sampling already runs long, the model itself ends pieces too
late; whatever the filters add on top is the decoding's share. Prints a Markdown table (and writes
it to ``--out``).
"""

import argparse
from pathlib import Path

import numpy as np
import torch

from musicgen.api import MusicModel
from musicgen.checkpoint import load_run_cache
from musicgen.evaluation.scoring import eos_at_ends
from musicgen.fs import atomic_write_text
from musicgen.generation import SamplingConfig

SETTINGS = {
    "default (T 0.8, top-k 50, top-p 0.95)": (SamplingConfig(), None),
    "T 1.0, top-k 50, top-p 0.95": (SamplingConfig(temperature=1.0), None),
    "T 0.8, no top-k/top-p": (SamplingConfig(top_k=0, top_p=1.0), None),
    "plain (T 1.0, no filters)": (SamplingConfig(temperature=1.0, top_k=0, top_p=1.0), None),
    "plain, no grammar mask": (SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, constrained=False), None),
    "plain, twice the trained context": (SamplingConfig(temperature=1.0, top_k=0, top_p=1.0), 2),
}


def row(name: str, tokens: np.ndarray, notes: np.ndarray, window: int) -> str:
    q = " | ".join(f"{np.percentile(tokens, p):.0f}" for p in (10, 50, 90))
    return (f"| {name} | {q} | {tokens.mean():.1f} | {notes.mean():.1f} | "
            f"{np.mean(tokens <= window - 2):.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    m = MusicModel.load(args.run)
    split = load_run_cache(m.run).splits["test"]
    originals = split.originals()
    docs = [split.doc(i) for i in originals]
    window = m.trained_context
    lines = [f"Run `{args.run}`; {args.n} samples per row (seed {args.seed}), {len(docs)} real test pieces; "
             f"trained window {window} tokens.", "",
             "| row | tokens p10 | p50 | p90 | tokens mean | notes mean | share within the window |",
             "|---|---|---|---|---|---|---|",
             row("real test pieces", np.array([len(d) - 2 for d in docs]), split.notes[originals], window)]
    for name, (sampling, ctx) in SETTINGS.items():
        torch.manual_seed(args.seed)
        pieces = m.generate(args.n, sampling=sampling, seed=args.seed, max_new_tokens=1024, batch_size=100,
                            context_len=None if ctx is None else ctx * window)
        lines.append(row(name, np.array([len(x.ids) for x in pieces]), np.array([x.notes for x in pieces]), window))
    for name, sampling in (("default", SamplingConfig()), ("plain", SamplingConfig(temperature=1.0, top_k=0,
                                                                                    top_p=1.0))):
        e = eos_at_ends(m, docs, sampling, window)
        lines.append("")
        lines.append(f"EOS where real test pieces end ({name} decoding): P = {e['p_eos']:.3f} as the model gives it, "
                     f"{e['p_eos_filtered']:.3f} after the filters; kept by the filters at {e['kept_by_filters']:.0%} "
                     f"of the ends; the top token at {e['eos_is_top']:.0%}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)


if __name__ == "__main__":
    main()
