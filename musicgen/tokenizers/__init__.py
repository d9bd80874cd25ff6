"""Tokenisers: one interface (``MusicTokenizer``), three kinds.

``pitch`` (V1-V5 note-name strings), ``remi`` (V6) and ``remi_bpe`` (V7, V8; the same
``RemiTokenizer`` class with ``bpe_vocab_size`` set). Build one from Hydra config
(``conf/tokenizer/*.yaml``) or read a saved one with ``load_tokenizer``.
"""

from __future__ import annotations

import json
from pathlib import Path

from musicgen.tokenizers.base import BadMidiError, MusicTokenizer
from musicgen.tokenizers.pitch import PitchTokenizer
from musicgen.tokenizers.remi import RemiTokenizer

#: Saved "kind" -> class that reads it.
TOKENIZER_CLASSES: dict[str, type[MusicTokenizer]] = {
    "pitch": PitchTokenizer,
    "remi": RemiTokenizer,
    "remi_bpe": RemiTokenizer,
}


def load_tokenizer(path: Path | str) -> MusicTokenizer:
    """Read any tokeniser written by ``save``; the file's ``musicgen.kind`` picks the class."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    kind = data.get("musicgen", {}).get("kind") if isinstance(data, dict) else None
    if kind not in TOKENIZER_CLASSES:
        known = sorted(TOKENIZER_CLASSES)
        raise ValueError(f"{path}: unknown tokeniser kind {kind!r} (expected one of {known})")
    return TOKENIZER_CLASSES[kind].load(path)


__all__ = [
    "TOKENIZER_CLASSES",
    "BadMidiError",
    "MusicTokenizer",
    "PitchTokenizer",
    "RemiTokenizer",
    "load_tokenizer",
]
