"""REMI (V6) and REMI + BPE (V7, V8) tokenisers, wrapping ``miditok.REMI`` (MidiTok 3.1).

One class serves both: ``bpe_vocab_size=None`` is plain REMI (kind "remi"); an integer makes
``train`` learn BPE merges on the training split up to that total vocabulary size (kind
"remi_bpe"). The base vocabulary of the default options is the original's V6 vocabulary of 362
tokens: 4 specials, Bar, 89 Pitch, 32 Velocity, 64 Duration, 32 Position, 14 Chord,
32 Rest, 32 Tempo and 62 PitchDrum tokens.

Every MidiTok option that has changed default between releases is set explicitly below
(``_FIXED_OPTIONS``), so a MidiTok upgrade cannot silently change the ids; the options that
a version may want to vary are constructor arguments (and the Hydra YAML keys).

Special tokens are ``PAD, BOS, EOS, UNK`` in that order: MidiTok's default list ends with
MASK, which nothing here uses, so UNK takes its place and ids 0..3 match ``base.py`` (checked
at construction). MidiTok itself never emits UNK; it is there so every tokeniser has one.

``rests_cross_bars=False`` (the shipped configs) encodes with ``BarLinesREMI``: a rest that reaches
a bar line is written as that bar's Bar token, so every bar line is in the tokens (MidiTok writes
the rest alone); the vocabulary and the decoded notes are the same. The constructor's default keeps
MidiTok's encoding, so tokeniser files written before the option load and encode as they did.

Input is always merged into one non-drum track first (``musicgen.midi_io``), so REMI without
programs yields exactly one token sequence per piece. Time is quantised to 8 positions per
beat for the first 4 beats of a note (``beat_res``), no time signatures: bars are 4/4.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import miditok
import symusic
from miditok import TokSequence
from miditok.constants import CURRENT_MIDITOK_VERSION

from musicgen import midi_io
from musicgen.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from musicgen.fs import atomic_write_text
from musicgen.tokenizers.base import BadMidiError, MusicTokenizer
from musicgen.tokenizers.pitch import strip_bos_eos
from musicgen.tokenizers.remi_bar_lines import BarLinesREMI

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["PAD", "BOS", "EOS", "UNK"]

#: MidiTok 3.1's chord qualities, written out because the default table has changed before.
CHORD_MAPS = {
    "min": (0, 3, 7),
    "maj": (0, 4, 7),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
    "7dom": (0, 4, 7, 10),
    "7min": (0, 3, 7, 10),
    "7maj": (0, 4, 7, 11),
    "7halfdim": (0, 3, 6, 10),
    "7dim": (0, 3, 6, 9),
    "7aug": (0, 4, 8, 11),
    "9maj": (0, 4, 7, 10, 14),
    "9min": (0, 4, 7, 10, 13),
}

#: Options fixed for every version; explicit because their defaults moved across releases.
_FIXED_OPTIONS: dict[str, Any] = {
    "special_tokens": SPECIAL_TOKENS,
    "use_velocities": True,
    "use_note_duration_programs": list(range(-1, 128)),  # durations for every program
    "use_key_signatures": False,
    "use_sustain_pedals": False,
    "sustain_pedal_duration": False,
    "use_pitch_bends": False,
    "use_control_changes": False,
    "use_pitch_intervals": False,
    "use_pitchdrum_tokens": True,  # part of the 362 (never used: drums are dropped)
    "default_note_duration": 0.5,
    "beat_res_rest": {(0, 1): 8, (1, 2): 4, (2, 12): 2},
    "chord_maps": CHORD_MAPS,
    "chord_tokens_with_root_note": False,
    "chord_unknown": None,
    "log_tempos": False,
    "remove_duplicated_notes": False,
    "delete_equal_successive_tempo_changes": False,
    "delete_equal_successive_time_sig_changes": False,
    "time_signature_range": {8: [3, 12, 6], 4: [5, 6, 3, 2, 1, 4]},
    "programs": list(range(-1, 128)),
    "program_changes": False,
    # REMI-only "additional params"
    "max_bar_embedding": None,
    "use_bar_end_tokens": False,
    "add_trailing_bars": False,
}


#: The time signatures a tokeniser with ``use_time_signatures`` writes (conditioning=full): MidiTok's
#: range above lays 9/8, 2/2, 3/2 and 4/2 pieces out in 4/4 bars; this one gives them their own bars.
#: Without time signatures the range above stays, so the versions' ids never change.
TIME_SIGNATURE_RANGE = {8: [3, 6, 9, 12], 4: [1, 2, 3, 4, 5, 6], 2: [2, 3, 4]}


def _beat_res(value: Mapping) -> dict[tuple[int, int], int]:
    """``{"0_4": 8}`` (YAML/JSON form) or ``{(0, 4): 8}`` -> ``{(0, 4): 8}``."""
    out = {}
    for key, res in value.items():
        if isinstance(key, str):
            start, _, end = key.partition("_")
            key = (int(start), int(end))
        out[(int(key[0]), int(key[1]))] = int(res)
    return out


def _jsonable(value: Any) -> Any:
    """Sorted, JSON-friendly copy of a MidiTok config value (sets sorted, tuple keys joined)."""
    if isinstance(value, Mapping):
        items = {"_".join(map(str, k)) if isinstance(k, tuple) else str(k): _jsonable(v) for k, v in value.items()}
        return dict(sorted(items.items()))
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value




class RemiTokenizer(MusicTokenizer):
    """REMI, optionally with BPE (``bpe_vocab_size``); see the module docstring."""

    def __init__(
        self,
        num_velocities: int = 32,
        use_chords: bool = True,
        use_tempos: bool = True,
        use_rests: bool = True,
        use_time_signatures: bool = False,
        use_programs: bool = False,
        beat_res: Mapping = {"0_4": 8, "4_12": 4},  # noqa: B006 (never mutated)
        num_tempos: int = 32,
        tempo_range: Sequence[int] = (40, 250),
        pitch_range: Sequence[int] = (21, 109),
        encode_ids_split: str = "bar",
        bpe_vocab_size: int | None = None,
        rests_cross_bars: bool = True,
        bpe_from_copies: bool = False,
    ) -> None:
        # JSON-friendly copy of the arguments: saved with the tokeniser and part of config_dict
        self._options: dict[str, Any] = {
            "num_velocities": int(num_velocities),
            "use_chords": bool(use_chords),
            "use_tempos": bool(use_tempos),
            "use_rests": bool(use_rests),
            "use_time_signatures": bool(use_time_signatures),
            "use_programs": bool(use_programs),
            "beat_res": {f"{a}_{b}": r for (a, b), r in _beat_res(beat_res).items()},
            "num_tempos": int(num_tempos),
            "tempo_range": [int(v) for v in tempo_range],
            "pitch_range": [int(v) for v in pitch_range],
            "encode_ids_split": str(encode_ids_split),
            "bpe_vocab_size": None if bpe_vocab_size is None else int(bpe_vocab_size),
        }
        if not rests_cross_bars:  # stored only when set, so files written before it load unchanged
            self._options["rests_cross_bars"] = False
        if bpe_from_copies:  # the same
            self._options["bpe_from_copies"] = True
        self._tok = self._backend_class(self._miditok_config())
        self._check_special_ids()
        self.bpe_vocab_size = self._options["bpe_vocab_size"]
        self.kind = "remi" if self.bpe_vocab_size is None else "remi_bpe"
        base = len(self._tok)
        if self.bpe_vocab_size is not None and self.bpe_vocab_size <= base:
            raise ValueError(
                f"RemiTokenizer: bpe_vocab_size={self.bpe_vocab_size} must be larger than the "
                f"base REMI vocabulary ({base} tokens), or None for plain REMI"
            )

    def _miditok_config(self) -> miditok.TokenizerConfig:
        o = self._options
        return miditok.TokenizerConfig(
            pitch_range=tuple(o["pitch_range"]),
            beat_res=_beat_res(o["beat_res"]),
            num_velocities=o["num_velocities"],
            use_chords=o["use_chords"],
            use_rests=o["use_rests"],
            use_tempos=o["use_tempos"],
            use_time_signatures=o["use_time_signatures"],
            use_programs=o["use_programs"],
            one_token_stream_for_programs=o["use_programs"],
            num_tempos=o["num_tempos"],
            tempo_range=tuple(o["tempo_range"]),
            encode_ids_split=o["encode_ids_split"],
            **{**copy.deepcopy(_FIXED_OPTIONS),
               **({"time_signature_range": TIME_SIGNATURE_RANGE} if o["use_time_signatures"] else {})},
        )

    def _check_special_ids(self) -> None:
        expected = {"PAD_None": PAD_ID, "BOS_None": BOS_ID, "EOS_None": EOS_ID, "UNK_None": UNK_ID}
        got = {name: self._tok.vocab.get(name) for name in expected}
        if got != expected:
            raise RuntimeError(f"RemiTokenizer: special token ids {got} differ from {expected}")

    @property
    def _backend_class(self) -> type[miditok.REMI]:
        """MidiTok's REMI, or ``BarLinesREMI`` (a Bar token at every bar line) with ``rests_cross_bars=False``."""
        return miditok.REMI if self._options.get("rests_cross_bars", True) else BarLinesREMI

    @property
    def backend(self) -> miditok.REMI:
        """The wrapped ``miditok.REMI`` (read it; changing it changes the ids)."""
        return self._tok

    # ----------------------------------------------------------------- training
    @property
    def learns_from_copies(self) -> bool:
        """Whether BPE learns its merges from the training pieces and their transposed copies (what
        the model trains on) rather than from the untransposed pieces alone: merges learned on the
        originals favour their keys, so a copy in another key encodes into more tokens per note
        (``musicgen.data.cache`` hands ``train`` the copies when this is True)."""
        return bool(self._options.get("bpe_from_copies", False)) and self.bpe_vocab_size is not None

    @property
    def is_trained(self) -> bool:
        """True once BPE merges are learned (always False for plain REMI)."""
        return self._tok.is_trained

    def train(self, paths: Iterable[Path | symusic.Score]) -> None:
        """Learn BPE merges on ``paths`` (the training split's files, or its scores with their
        transposed copies when ``learns_from_copies``); nothing to learn for plain REMI.

        Each file is read, merged and tokenised once, inside the iterator handed to the
        Hugging Face trainer (MidiTok's own file iterator would not merge tracks).
        """
        if self.bpe_vocab_size is None:
            return
        bars = _BarBytes(self._tok, list(paths))  # scores of copies: read one file at a time upstream
        self._tok.train(vocab_size=self.bpe_vocab_size, model="BPE", iterator=bars)
        if bars.n_used == 0:
            raise ValueError(f"RemiTokenizer.train: none of the {len(bars)} files was usable")
        if bars.n_bad:
            log.warning("BPE training skipped %d of %d unusable files", bars.n_bad, len(bars))
        if len(self._tok) < self.bpe_vocab_size:
            log.warning(
                "BPE found only %d tokens of the %d asked for: the training data has too few "
                "distinct token pairs",
                len(self._tok),
                self.bpe_vocab_size,
            )

    # ----------------------------------------------------------------- encoding
    def _sequences(self, source: Path | str | symusic.Score, encode_ids: bool) -> TokSequence:
        if isinstance(source, (str, Path)):
            score = midi_io.read_score(source)
        else:
            score = midi_io.merge_tracks(source)
        if not isinstance(score, symusic.core.ScoreTick):
            score = score.to("tick")
        out = self._tok.encode(score, encode_ids=encode_ids)
        seq = out if isinstance(out, TokSequence) else (out[0] if out else None)
        if seq is None or len(seq.ids) == 0:
            lo, hi = self.pitch_range
            name = source if isinstance(source, (str, Path)) else "score"
            raise BadMidiError(f"{name}: no notes in the tokeniser's pitch range {lo}..{hi}")
        return seq

    def encode(self, source: Path | str | symusic.Score) -> list[int]:
        if self.bpe_vocab_size is not None and not self.is_trained:
            raise RuntimeError("RemiTokenizer.encode: BPE not trained yet; call train() or load() first")
        return list(self._sequences(source, encode_ids=True).ids)

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """Base REMI token strings of ``ids`` (BPE tokens expanded), for inspection."""
        return list(self._base_seq([i for i in map(int, ids) if 0 <= i < len(self._tok)]).tokens)

    def _base_seq(self, ids: list[int]) -> TokSequence:
        """A base-REMI ``TokSequence`` (ids and token strings) of known ids, BPE ids expanded."""
        seq = self._to_tokseq(ids)
        if seq.are_ids_encoded:
            self._tok.decode_token_ids(seq)
        self._tok.complete_sequence(seq)
        return seq

    # ----------------------------------------------------------------- decoding
    def _to_tokseq(self, ids: list[int]) -> TokSequence:
        seq = TokSequence(ids=ids)
        seq.are_ids_encoded = self.is_trained
        return seq

    def _body(self, ids: Sequence[int]) -> list[int]:
        """Ids without specials and without ids this tokeniser does not know."""
        n = len(self._tok)
        return [i for i in map(int, ids) if len(SPECIAL_TOKENS) <= i < n]

    def decode(self, ids: Sequence[int]) -> symusic.Score:
        """One piano track. Specials and unknown ids are dropped; MidiTok skips notes whose
        Velocity/Duration tokens are missing, so any sequence decodes."""
        body = self._body(ids)
        track = symusic.Track(name="piano", program=0, is_drum=False)
        if not body:
            score = symusic.Score(self._tok.time_division)
            score.tracks.append(track)
            return score
        seq = self._to_tokseq(body)
        score = self._tok.decode(seq if self._tok.one_token_stream else [seq])
        for t in score.tracks:  # one track, or one per program with use_programs
            track.notes.extend(t.notes)
        track.notes.sort()
        score.tracks = [track]
        return score

    def base_length(self, ids: Sequence[int]) -> int:
        """Base REMI tokens the ids stand for: each known id's expansion (one token without
        BPE), plus one for each UNK or unknown id; PAD, BOS and EOS are not counted."""
        ids = [i for i in map(int, ids) if i not in (self.pad_id, self.bos_id, self.eos_id)]
        clean = self._body(ids)
        return len(ids) - len(clean) + (len(self._base_seq(clean).ids) if clean else 0)

    def syntax_errors(self, ids: Sequence[int]) -> int:
        """Erroneous base tokens: specials inside the body, unknown ids, and the base tokens of
        the known ids that MidiTok's grammar check rejects (a wrong type after the previous
        token, going back in time, or with ``remove_duplicated_notes`` repeating a note). A
        leading BOS and trailing EOS are fine.

        MidiTok 3.1's ``tokens_errors(seq)`` counts errors over the base tokens but divides by
        ``len(seq)`` as given, the number of BPE ids for a BPE sequence. The check therefore runs
        on the expanded base sequence, whose ratio times its length is the count either way.
        """
        body = strip_bos_eos([int(i) for i in ids], self.bos_id, self.eos_id)
        clean = self._body(body)
        errors = len(body) - len(clean)
        if clean:
            base = self._base_seq(clean)
            errors += round(self._tok.tokens_errors(base) * len(base))
        return errors

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path | str) -> None:
        """MidiTok's own JSON (loadable with ``miditok.REMI(params=path)``) plus a "musicgen"
        entry with the kind and constructor options, written atomically."""
        data = self._tok.to_dict()
        data["musicgen"] = {"kind": self.kind, "options": self._options}
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> RemiTokenizer:
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("musicgen", {})
        if meta.get("kind") not in ("remi", "remi_bpe"):
            raise ValueError(f"{path}: not a REMI tokeniser file (kind {meta.get('kind')!r})")
        tok = cls(**meta["options"])
        loaded = tok._backend_class(params=path)
        if loaded.config != tok._tok.config or loaded._vocab_base != tok._tok._vocab_base:
            raise ValueError(f"{path}: MidiTok rebuilt a different configuration from this file")
        tok._tok = loaded
        tok._check_special_ids()
        if tok.bpe_vocab_size is not None and not tok.is_trained:
            log.warning("%s: REMI+BPE tokeniser saved before training", path)
        return tok

    # ----------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """``len(tokenizer)``: base vocabulary plus learned BPE tokens."""
        return len(self._tok)

    @property
    def pitch_range(self) -> tuple[int, int]:
        lo, hi = self._tok.config.pitch_range
        return (int(lo), int(hi))

    def config_dict(self) -> dict[str, Any]:
        """Kind, MidiTok version, the full MidiTok config and, once trained, a hash of the
        BPE model (merges and their ids)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "miditok_version": CURRENT_MIDITOK_VERSION,
            "options": self._options,
            "miditok_config": _jsonable(self._tok.config.to_dict()),
            "vocab_size": len(self._tok),
        }
        if self.is_trained:
            model = json.loads(self._tok._model.to_str())["model"]
            blob = json.dumps({"vocab": model["vocab"], "merges": model["merges"]}, sort_keys=True)
            out["bpe_sha256"] = hashlib.sha256(blob.encode()).hexdigest()
        return out


class _BarBytes:
    """The training files as Hugging Face ``tokenizers`` input: per file, one string per bar
    in MidiTok's byte alphabet (what MidiTok's own ``TokTrainingIterator`` yields, but reading
    through ``read_score`` so tracks are merged and drums dropped)."""

    def __init__(self, tok: miditok.REMI, paths: list[Path | symusic.Score]) -> None:
        self.tok, self.paths = tok, paths
        self.n_used = self.n_bad = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[list[str]]:
        self.n_used = self.n_bad = 0
        split = self.tok.config.encode_ids_split
        for path in self.paths:
            try:
                score = path if isinstance(path, symusic.core.ScoreTick) else midi_io.read_score(path)
                out = self.tok.encode(score, encode_ids=False)
            except BadMidiError as e:
                log.warning("BPE training: skipping %s", e)
                self.n_bad += 1
                continue
            seqs = [out] if isinstance(out, TokSequence) else out
            chunks = []
            for seq in seqs:
                if split == "bar":
                    chunks += seq.split_per_bars()
                elif split == "beat":
                    chunks += seq.split_per_beats()
                else:
                    chunks.append(seq)
            self.n_used += 1
            # private helper, as in MidiTok's TokTrainingIterator: id -> its one-character byte
            yield [self.tok._ids_to_bytes(c.ids, as_one_str=True) for c in chunks if len(c.ids) > 0]
