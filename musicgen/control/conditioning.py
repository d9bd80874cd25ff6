"""Conditioning: attribute tokens before the music, attribute dropout and classifier-free guidance.

A conditioned run (``conditioning=key|full`` in train.yaml's defaults; ``none`` changes nothing)
lays every document out as ``BOS <one token per attribute> music EOS``: the prefix follows BOS.
Each attribute has one token per value plus a null token (``Key_none``), and its tokens are
ordinary ids after the tokeniser's own (``vocab_size = len(tokenizer) + len(ConditioningVocab)``),
learned like any other token. The vocabulary is stored in every checkpoint (``conditioning``
metadata), so generation knows it.

Attributes (``ATTRIBUTES``, in prefix order), taken from each source MIDI file:
- key: tonic and mode. With a key signature: its tonic pair (the major key of that signature and
  its relative minor); a signature marked minor is taken as minor, one marked major is decided
  between the pair by the estimator below, because MIDI writers (music21's included) mark every
  signature major when the source gives only the accidentals (modal folk tunes, most chorales
  written without a mode). Without a key signature: the Krumhansl-Schmuckler estimate over all 24
  keys. A transposed training copy's tonic moves with it. That is ``conditioning.key_source=signature``;
  the default, ``notes``, labels every piece by the estimator instead, whatever its signature: the
  key a listener (and the adherence reader) hears, where a signature names the key a modal tune is
  written in (a D-mixolydian reel carries G major's one sharp; the estimator and the signature
  disagree on about 29% of folk tunes).
- metre: the first time signature (``METRES``; anything else is ``other``; none is 4/4).
- tempo: bins of the first tempo in quarter notes per minute (``TEMPO_EDGES``; none is 120).
- style: the source collection: ``folk/<collection>/...`` -> the collection (essenFolksong,
  oneills1850, airdsAirs, ryansMammoth, miscFolk), ``chorales/...`` -> chorales, ``maestro/...`` ->
  maestro, a user's ``data.root`` -> the top-level folder (a file at the root itself: ``user``).
  The values are those of the training split.
- density: bins of notes per bar (bars of the first time signature; ``DENSITY_EDGES``).

Key estimator (``estimate_key``): Krumhansl-Schmuckler, the Pearson correlation of the
duration-weighted pitch-class histogram with the 24 rotations of the Krumhansl-Kessler profiles.

Dropout (``conditioning.drop_rate``): when the DataModule builds the training stream, each
attribute token of each document (each transposed copy on its own) is replaced by its
attribute's null token with that probability, drawn once per build from ``data.seed``. So the same
model samples with any subset of attributes, or none, and classifier-free guidance is possible.
Training windows are packed (they cross piece boundaries); with ``conditioning.every_window``
(the default; measured, it raises key and density adherence and halves tempo's: docs/notes/conditioning.md) a window
that starts inside a piece's music gets that piece's prefix in front (``PrefixedWindows``), as
generation does for a context that slid past BOS, so every music token is trained with its
attributes in view; with ``every_window=false`` only windows that start at a BOS see them.
Validation and test documents carry the full prefix, and the prefix positions are not scored
(``val/ppl`` covers the music tokens only, the same targets as an unconditioned run's).

Guidance (``generation.guidance.GuidedModel``): wraps a network for the decoding loop. The loop sees the body only
(BOS, the prompt, the sampled tokens); the wrapper inserts the prefix after BOS, runs the
conditioned and the all-null ("unconditional") sequences as one batch of 2B rows (KV cache
included) and returns ``uncond + s * (cond - uncond)`` over the tokeniser's own ids, so attribute
tokens are never sampled. ``cfg_scale`` 1 runs the conditioned rows only; 0 is unconditional.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from musicgen.control.attributes import ATTRIBUTES, DENSITIES, KEYS, METRES, MODES, NULL, TEMPOS, TONIC_ALIASES, TONICS
from musicgen.errors import ConfigError

#: The groups of conf/conditioning/ and the attributes each conditions on.
PRESETS = {"none": (), "key": ("key",), "full": ATTRIBUTES}

#: Attribute whose token prefix names it: Key_D_major, Metre_6/8, Tempo_110-130, Style_chorales, Density_4-6.
_PREFIX = {a: a.capitalize() for a in ATTRIBUTES}

def attributes_of(preset: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The attributes a ``conditioning`` config conditions on (checked)."""
    if not preset:
        return ()
    attrs = tuple(preset.get("attributes") or ())
    bad = [a for a in attrs if a not in ATTRIBUTES]
    if bad:
        raise ConfigError(f"conditioning.attributes has unknown {bad}; choose from {list(ATTRIBUTES)}")
    return attrs

@dataclass
class ConditioningVocab:
    """Attribute tokens: for each attribute its values then its null token, ids from ``base``."""

    attributes: tuple[str, ...]
    values: dict[str, tuple[str, ...]]
    base: int  # the tokeniser's vocabulary size: the first attribute id
    key_source: str = "signature"  # where the training pieces' key attribute came from (file_key)
    tokens: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.attributes = tuple(self.attributes)
        self.values = {a: tuple(self.values[a]) for a in self.attributes}
        self.tokens = [f"{_PREFIX[a]}_{v}" for a in self.attributes for v in (*self.values[a], NULL)]
        self._ids = {t: self.base + i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, attributes: Sequence[str], styles: Sequence[str], base: int,
              key_source: str = "signature") -> ConditioningVocab:
        fixed = {"key": KEYS, "metre": METRES, "tempo": TEMPOS, "density": DENSITIES,
                 "style": tuple(sorted(set(styles)))}
        return cls(tuple(attributes), {a: fixed[a] for a in attributes}, base, key_source)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: the tokeniser's ids and the attribute tokens."""
        return self.base + len(self)

    def id(self, attribute: str, value: str | None) -> int:
        """The id of ``attribute=value`` (None or a value the vocabulary lacks: the null token)."""
        token = f"{_PREFIX[attribute]}_{value}"
        return self._ids.get(token, self._ids[f"{_PREFIX[attribute]}_{NULL}"])

    def prefix(self, attrs: Mapping[str, str | None]) -> list[int]:
        """Ids of the prefix for ``attrs`` (missing attributes: null)."""
        return [self.id(a, attrs.get(a)) for a in self.attributes]

    def null_prefix(self) -> list[int]:
        return self.prefix({})

    def decode(self, ids: Sequence[int]) -> list[str]:
        return [self.tokens[i - self.base] if 0 <= i - self.base < len(self) else f"<{i}>" for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"attributes": list(self.attributes), "values": {a: list(v) for a, v in self.values.items()},
                "base": self.base, "key_source": self.key_source, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConditioningVocab:
        return cls(tuple(d["attributes"]), {a: tuple(v) for a, v in d["values"].items()}, int(d["base"]),
                   d.get("key_source", "signature"))  # checkpoints from before key_source: signatures

#: ``cond.*`` keys of generate.yaml -> the attribute each sets (``mode`` goes with ``key``).
COND_KEYS = ("key", "mode", "metre", "tempo", "style", "density")

def requested_attributes(vocab: ConditioningVocab | None, cond: Mapping[str, Any] | None) -> dict[str, str]:
    """``cond.*`` of a generate config as attribute values the vocabulary knows; a value it does not
    know, or any ``cond.*`` for a checkpoint without conditioning, is a one-line ``ConfigError``."""
    given = {k: v for k, v in (cond or {}).items() if v is not None}
    unknown_keys = sorted(set(given) - set(COND_KEYS))
    if unknown_keys:
        raise ConfigError(f"cond has unknown keys {unknown_keys}; known: {list(COND_KEYS)}")
    if not given:
        return {}
    if vocab is None:
        shown = " ".join(f"cond.{k}={v}" for k, v in given.items())
        raise ConfigError(f"{shown}: this checkpoint was trained without conditioning "
                          "(train with conditioning=key or conditioning=full)")
    out: dict[str, str] = {}
    if "mode" in given and "key" not in given:
        raise ConfigError(f"cond.mode={given['mode']} needs cond.key=<tonic> too (one of {list(TONICS)})")
    if "key" in given:
        tonic = str(given.pop("key"))
        mode = str(given.pop("mode", "major"))
        if "_" in tonic:  # cond.key=D_minor
            tonic, mode = tonic.split("_", 1)
        tonic = TONIC_ALIASES.get(tonic, tonic)
        if tonic not in TONICS or mode not in MODES:
            raise ConfigError(f"cond.key={tonic} cond.mode={mode}: unknown; tonics {list(TONICS)}, modes {list(MODES)}")
        given["key"] = f"{tonic}_{mode}"
    for attr, value in given.items():
        value = str(value)
        if attr not in vocab.attributes:
            raise ConfigError(f"cond.{attr}={value}: this checkpoint conditions on {list(vocab.attributes)} only")
        if value not in vocab.values[attr]:
            raise ConfigError(f"cond.{attr}={value} is unknown to this checkpoint; known values: "
                              f"{', '.join(vocab.values[attr])}")
        out[attr] = value
    return out
