"""Why a run's samples run long: the length (tokens and notes per piece) of samples under several
decoding settings, beside the real test pieces, and the model's probability of EOS where real
test pieces end (``musicgen.evaluation.scoring.eos_at_ends``).

    .venv/bin/python scripts/sample_lengths.py RUN [--n 200] [--seed 1] [--out lengths.md]
        [--json lengths.json] [--publish [--publish-name sample-lengths] [--publish-dir DOCS]]

Rows: the run's default sampling (temperature 0.8, top-k 50, top-p 0.95, grammar mask), then one
change at a time: temperature 1 with the filters, temperature 0.8 without them, plain ancestral
sampling (temperature 1, no filters), the same without the grammar mask, and plain sampling with
twice the trained context. If plain sampling already runs long, the model itself ends pieces too
late; whatever the filters add on top is the decoding's share. Prints a Markdown page (and writes
it to ``--out``, the measured figures as JSON to ``--json``); ``--publish`` writes it into the docs
site as ``docs/results/<publish-name>.md`` through ``musicgen.publish``, its header naming this
command.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicgen.api import MusicModel
from musicgen.checkpoint import load_run_cache
from musicgen.evaluation.scoring import eos_at_ends
from musicgen.fs import atomic_write_text
from musicgen.generation import SamplingConfig
from musicgen.publish import publish, results_dir

SETTINGS = {
    "default (T 0.8, top-k 50, top-p 0.95)": (SamplingConfig(), None),
    "T 1.0, top-k 50, top-p 0.95": (SamplingConfig(temperature=1.0), None),
    "T 0.8, no top-k/top-p": (SamplingConfig(top_k=0, top_p=1.0), None),
    "plain (T 1.0, no filters)": (SamplingConfig(temperature=1.0, top_k=0, top_p=1.0), None),
    "plain, no grammar mask": (SamplingConfig(temperature=1.0, top_k=0, top_p=1.0, constrained=False), None),
    "plain, twice the trained context": (SamplingConfig(temperature=1.0, top_k=0, top_p=1.0), 2),
}
#: The decodings whose filters ``eos_at_ends`` applies where real test pieces end.
EOS_DECODINGS = {"default": SamplingConfig(), "plain": SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)}
TITLE = "# Why samples run long: sample lengths under several decodings"


def lengths(name: str, tokens: Sequence[int], notes: Sequence[int], window: int) -> dict[str, Any]:
    """One row: the tokens' 10th, 50th and 90th percentiles and mean, the notes' mean, and the share
    of pieces that end within the trained window (BOS and EOS included)."""
    t, k = np.asarray(tokens), np.asarray(notes)
    return {"row": name, "tokens_p10": float(np.percentile(t, 10)), "tokens_p50": float(np.percentile(t, 50)),
            "tokens_p90": float(np.percentile(t, 90)), "tokens_mean": float(t.mean()), "notes_mean": float(k.mean()),
            "within_window": float(np.mean(t <= window - 2)), "pieces": int(len(t))}


def measure(run: str, n: int = 200, seed: int = 1, max_new_tokens: int = 1024, batch_size: int = 100,
            settings: Mapping[str, tuple[SamplingConfig, int | None]] = SETTINGS) -> dict[str, Any]:
    """The run's real test pieces and ``n`` samples under each of ``settings`` (name -> sampling, and
    the context as a multiple of the trained window, None: the trained one), then P(EOS) where the
    real test pieces end under each of ``EOS_DECODINGS``."""
    m = MusicModel.load(run)
    split = load_run_cache(m.run).splits["test"]
    originals = split.originals()
    docs = [split.doc(i) for i in originals]
    window = m.trained_context
    rows = [lengths("real test pieces", [len(d) - 2 for d in docs], split.notes[originals], window)]
    for name, (sampling, ctx) in settings.items():
        torch.manual_seed(seed)
        pieces = m.generate(n, sampling=sampling, seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size,
                            context_len=None if ctx is None else ctx * window)
        rows.append(lengths(name, [len(x.ids) for x in pieces], [x.notes for x in pieces], window))
    eos = {name: eos_at_ends(m, docs, sampling, window) for name, sampling in EOS_DECODINGS.items()}
    return {"run": run, "n": n, "seed": seed, "max_new_tokens": max_new_tokens, "real_pieces": len(docs),
            "window": window, "rows": rows, "eos_at_ends": eos}


def markdown(result: Mapping[str, Any]) -> str:
    """The result as a Markdown page: the table of lengths, then P(EOS) where real pieces end."""
    lines = [TITLE, "",
             f"Run `{result['run']}`; {result['n']} samples per row (seed {result['seed']}, at most "
             f"{result['max_new_tokens']} tokens), {result['real_pieces']} real test pieces; trained window "
             f"{result['window']} tokens.", "",
             "| row | tokens p10 | p50 | p90 | tokens mean | notes mean | share within the window |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['row']} | {r['tokens_p10']:.0f} | {r['tokens_p50']:.0f} | {r['tokens_p90']:.0f} | "
                     f"{r['tokens_mean']:.1f} | {r['notes_mean']:.1f} | {r['within_window']:.2f} |")
    for name, e in result["eos_at_ends"].items():
        lines += ["", f"EOS where real test pieces end ({name} decoding): P = {e['p_eos']:.3f} as the model gives it, "
                  f"{e['p_eos_filtered']:.3f} after the filters; kept by the filters at {e['kept_by_filters']:.0%} "
                  f"of the ends; the top token at {e['eos_is_top']:.0%}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--out", default=None, help="write the page here too")
    p.add_argument("--json", default=None, help="write the measured figures here as JSON")
    p.add_argument("--publish", action="store_true", help="write docs/results/<publish-name>.md (musicgen.publish)")
    p.add_argument("--publish-name", default="sample-lengths")
    p.add_argument("--publish-dir", default=None, help="the docs directory (default: the checkout's docs/)")
    args = p.parse_args(argv)
    if args.publish:
        results_dir(args.publish_dir)  # a missing docs directory fails before the work
    result = measure(args.run, args.n, args.seed, args.max_new_tokens)
    text = markdown(result)
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=1) + "\n")
    if args.publish:
        command = "python scripts/sample_lengths.py " + shlex.join(argv)
        page = publish(args.publish_name, text, docs_dir=args.publish_dir, command=command)
        print(f"published to {page}")
        result = {**result, "published": str(page)}
    return result


if __name__ == "__main__":
    main()
