"""How often ``musicgen control``'s independent readers agree with the labels on real tunes (their
ceiling): the key reader (``readers.key_of``, Temperley-Kostka-Payne profiles) against the notes'
label (``estimate_key``, Krumhansl-Kessler) and the key-signature label, and the labeller itself
against the signature; the metre reader (``readers.metre_from_notes``, never reading TimeSignature
events) against the notated metre (``metre_of``), on the metres it knows. Each with its Wilson 95%
interval (``musicgen.metrics.statistics.wilson``).

    .venv/bin/python scripts/reader_ceiling.py [data/folk | --run <run dir>] [--every 4] [--offset 1] [--publish]

Tunes: every ``--every``-th MIDI file under the folder (sorted), starting at ``--offset``; with
``--run``, of the files that run's data holds (its train, validation and test originals: the folder
may hold more, e.g. after ``make data``). The metre model's onset chances were tuned once on every
4th file from the first of the demo's 2,000 (``--run`` a demo run, ``--offset 0``): report it on
another offset of the same files. ``--publish`` also writes the table into the docs site as
``docs/results/reader-ceiling.md`` (``musicgen.publish``; ``--publish-dir``: another docs tree).
"""

import argparse
import shlex
import sys
from pathlib import Path

from musicgen.control.attributes import METRES, estimate_key, file_key, metre_of
from musicgen.control.readers import key_of, metre_from_notes
from musicgen.errors import UserError
from musicgen.metrics.statistics import wilson
from musicgen.midi_io import read_score
from musicgen.publish import publish, results_dir
from musicgen.tokenizers.base import BadMidiError


def line(name: str, k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"| {name} | {k} / {n} | {k / n:.1%} [{lo:.1%}, {hi:.1%}] |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default="data/folk")
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--offset", type=int, default=1)
    p.add_argument("--run", default=None, help="read the files of this run's data (its splits' originals)")
    p.add_argument("--publish", action="store_true", help="write docs/results/reader-ceiling.md (musicgen.publish)")
    p.add_argument("--publish-dir", default=None, help="the docs directory (default: the checkout's docs/)")
    args = p.parse_args()
    if args.publish:
        try:
            results_dir(args.publish_dir)  # a missing docs directory fails before the work, in one line
        except UserError as e:
            raise SystemExit(f"error: {e}") from None
    if args.run:
        from musicgen.api import MusicModel
        from musicgen.data.sources import document_files

        m = MusicModel.load(args.run, "cpu")
        paths = document_files(m.metadata.config.get("data", {}))
        names = {p.names[int(i)] for s in ("train", "val", "test") for p in [m.pieces_of(s)] for i in p.originals()}
        args.folder = f"the {len(names)} files of {args.run}'s data"
        files = sorted(paths[n] for n in names)[args.offset :: args.every]
    else:
        files = sorted(Path(args.folder).rglob("*.mid"))[args.offset :: args.every]
    counts = {"key_notes": 0, "key_signature": 0, "labeller_signature": 0, "metre": 0}
    n_key = n_metre = 0
    for f in files:
        try:
            score = read_score(f)
        except BadMidiError:
            continue
        read, signature = key_of(score), file_key(score, "signature")
        n_key += 1
        counts["key_notes"] += read == estimate_key(score)
        counts["key_signature"] += read == signature
        counts["labeller_signature"] += estimate_key(score) == signature
        notated = metre_of(score)
        if notated in METRES and notated != "other":
            n_metre += 1
            counts["metre"] += metre_from_notes(score) == notated
    table = [f"{len(files)} files of {args.folder} (every {args.every}th from offset {args.offset})", "",
             "| reader vs label | agree | share [Wilson 95%] |", "|---|---|---|",
             line("key_of vs the notes' label (estimate_key)", counts["key_notes"], n_key),
             line("key_of vs the signature label", counts["key_signature"], n_key),
             line("the labeller (estimate_key) vs the signature label", counts["labeller_signature"], n_key),
             line("metre_from_notes vs the notated metre", counts["metre"], n_metre)]
    print("\n".join(table))
    if args.publish:
        command = " ".join([".venv/bin/python scripts/reader_ceiling.py", *map(shlex.quote, sys.argv[1:])])
        page = ["# How often the control readers agree with the labels on real tunes", "",
                "The ceiling of `musicgen control`'s adherence figures: an independent reader that disagrees with "
                "a real tune's label this often cannot score generated pieces higher. Key: `readers.key_of` "
                "(Temperley-Kostka-Payne profiles) against the label from the notes (`estimate_key`, "
                "Krumhansl-Kessler) and from the key signature; metre: `readers.metre_from_notes` (onsets only) "
                "against the notated metre, on the metres it knows.", "", *table]
        text = "\n".join(page) + "\n"
        print(f"written to {publish('reader-ceiling', text, docs_dir=args.publish_dir, command=command)}")

if __name__ == "__main__":
    main()
