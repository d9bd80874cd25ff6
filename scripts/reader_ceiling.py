"""How often ``musicgen control``'s independent readers agree with the labels on real tunes (their
ceiling): the key reader (``readers.key_of``, Temperley-Kostka-Payne profiles) against the notes'
label (``estimate_key``, Krumhansl-Kessler) and the key-signature label, and the labeller itself
against the signature; the metre reader (``readers.metre_from_notes``, never reading TimeSignature
events) against the notated metre (``metre_of``), on the metres it knows. Each with its Wilson 95%
interval (``musicgen.metrics.statistics.wilson``).

    .venv/bin/python scripts/reader_ceiling.py [data/folk] [--every 4] [--offset 1]

Tunes: every ``--every``-th MIDI file under the folder (sorted), starting at ``--offset``. The
metre model's onset chances were tuned once on the files at offset 0 (every 4th from the first):
report it on another offset.
"""

import argparse
from pathlib import Path

from musicgen.control.attributes import METRES, estimate_key, file_key, metre_of
from musicgen.control.readers import key_of, metre_from_notes
from musicgen.metrics.statistics import wilson
from musicgen.midi_io import read_score
from musicgen.tokenizers.base import BadMidiError


def line(name: str, k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"| {name} | {k} / {n} | {k / n:.1%} [{lo:.1%}, {hi:.1%}] |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", nargs="?", default="data/folk")
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--offset", type=int, default=1)
    args = p.parse_args()
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
    print(f"{len(files)} files of {args.folder} (every {args.every}th from offset {args.offset})\n")
    print("| reader vs label | agree | share [Wilson 95%] |\n|---|---|---|")
    print(line("key_of vs the notes' label (estimate_key)", counts["key_notes"], n_key))
    print(line("key_of vs the signature label", counts["key_signature"], n_key))
    print(line("the labeller (estimate_key) vs the signature label", counts["labeller_signature"], n_key))
    print(line("metre_from_notes vs the notated metre", counts["metre"], n_metre))


if __name__ == "__main__":
    main()
