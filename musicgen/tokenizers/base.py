"""The one tokeniser interface every tokeniser implements.

A tokeniser turns a MIDI file (all non-drum tracks merged into one stream) into a list of
integer ids and back into a one-track ``symusic.Score``. Ids 0..3 are always the special
tokens PAD, BOS, EOS, UNK (in that order, ``musicgen.constants``), so data, models and
generation can rely on them without knowing which tokeniser is in use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import symusic

from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from musicgen.midi_io import BadMidiError

__all__ = ["BadMidiError", "ExtendedTokenizer", "MusicTokenizer"]


class MusicTokenizer(ABC):
    """Interface shared by the ``pitch``, ``remi`` and ``remi_bpe`` tokenisers."""

    pad_id: int = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    unk_id: int = UNK_ID

    #: Short name stored in the saved file, used by ``load_tokenizer`` to pick the class.
    kind: str = ""

    @abstractmethod
    def train(self, paths: Sequence[Path]) -> None:
        """Learn from training files only (vocabulary, BPE merges). A no-op where nothing is learned."""

    @abstractmethod
    def encode(self, source: Path | str | symusic.Score) -> list[int]:
        """Token ids of one piece, without BOS/EOS. Raises ``BadMidiError`` for unusable input."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> symusic.Score:
        """A one-track (piano) score from ids. Special tokens are ignored."""

    @abstractmethod
    def save(self, path: Path | str) -> None:
        """Write the tokeniser (config and anything learned) to one JSON file, atomically."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path | str) -> MusicTokenizer:
        """Read a tokeniser written by ``save``."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Size a model's embedding needs (special and learned tokens included)."""

    @property
    @abstractmethod
    def pitch_range(self) -> tuple[int, int]:
        """Lowest and highest MIDI pitch the tokeniser can represent (inclusive)."""

    @abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """Everything that changes the ids this tokeniser produces (hashed into cache keys)."""

    @abstractmethod
    def syntax_errors(self, ids: Sequence[int]) -> int:
        """Number of base tokens in ``ids`` that break this tokeniser's grammar.

        Counted over base tokens (what ``base_length`` counts), so ``syntax_errors / base_length``
        is a rate per base token that means the same with or without BPE. Stray PAD, BOS or EOS
        inside the sequence count as errors but not in ``base_length``: pass the body of a piece
        (``scoring.body`` drops them) when computing a rate.
        """

    def base_length(self, ids: Sequence[int]) -> int:
        """Number of base tokens the ids stand for, specials PAD/BOS/EOS not counted: the
        denominator of a syntax error rate. One per other id here (UNK and unknown ids
        included, each one erroneous token), which is right for tokenisers without merged
        tokens; a BPE tokeniser counts the base tokens each id expands to."""
        return sum(1 for i in ids if int(i) not in (self.pad_id, self.bos_id, self.eos_id))

    def count_notes(self, ids: Sequence[int]) -> int:
        """Number of notes ``ids`` decode to."""
        return sum(len(track.notes) for track in self.decode(ids).tracks)


class ExtendedTokenizer:
    """A trained tokeniser whose ``vocab_size`` also counts ``extra`` ids after its own (a
    conditioned run's attribute tokens, an infilling run's sentinels): what such a DataModule hands
    to training, so the model's embedding covers them. Everything else is the tokeniser's own,
    which ignores those ids when decoding."""

    def __init__(self, tokenizer: MusicTokenizer, extra: int) -> None:
        self.base_tokenizer = tokenizer
        self.extra = int(extra)

    @property
    def vocab_size(self) -> int:
        return self.base_tokenizer.vocab_size + self.extra

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["base_tokenizer"], name)
