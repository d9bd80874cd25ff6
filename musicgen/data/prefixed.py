"""Training and scoring windows over a conditioned stream: each document's attribute prefix after
its BOS, attribute dropout, and windows that carry a piece's prefix (``musicgen.control``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from musicgen.constants import IGNORE_INDEX
from musicgen.control.attributes import COPY_SUFFIX, extract_attributes, transpose_key
from musicgen.control.conditioning import ConditioningVocab, attributes_of
from musicgen.data.sources import document_files
from musicgen.data.windows import ScoringWindows, TokenWindows
from musicgen.errors import ConfigError
from musicgen.midi_io import read_score


@dataclass
class PrefixedSplit:
    """A split's stream with a prefix after each document's BOS; ``is_prefix`` marks its positions."""

    tokens: np.ndarray
    offsets: np.ndarray
    is_prefix: np.ndarray  # (N,) bool

def insert_prefixes(tokens: np.ndarray, offsets: np.ndarray, prefixes: Sequence[Sequence[int]]) -> PrefixedSplit:
    """``BOS doc EOS`` documents -> ``BOS prefix doc EOS`` (one prefix per document, equal lengths)."""
    n_docs = len(offsets) - 1
    P = len(prefixes[0]) if n_docs else 0
    new_offsets = np.asarray(offsets, dtype=np.int64) + P * np.arange(n_docs + 1, dtype=np.int64)
    out = np.empty(int(new_offsets[-1]), dtype=np.int32 if len(tokens) == 0 else np.result_type(tokens.dtype, np.int32))
    is_prefix = np.zeros(len(out), dtype=bool)
    pre = np.asarray(prefixes, dtype=out.dtype).reshape(n_docs, P)
    for i in range(n_docs):
        a, b, s = int(offsets[i]), int(offsets[i + 1]), int(new_offsets[i])
        out[s] = tokens[a]
        out[s + 1 : s + 1 + P] = pre[i]
        out[s + 1 + P : s + P + (b - a)] = tokens[a + 1 : b]
        is_prefix[s + 1 : s + 1 + P] = True
    return PrefixedSplit(out, new_offsets, is_prefix)

def drop_attributes(prefixes: np.ndarray, null: Sequence[int], rate: float, rng: np.random.Generator) -> np.ndarray:
    """(n_docs, P) prefixes with each entry replaced by its attribute's null id with probability ``rate``."""
    drop = rng.random(prefixes.shape) < rate
    return np.where(drop, np.asarray(null)[None, :], prefixes)

class Conditioner:
    """What a conditioned DataModule uses: the vocabulary, each document's attributes and the
    prefixed datasets. ``files``: document name (without a copy suffix) -> its MIDI path."""

    def __init__(self, config: Mapping[str, Any], names: dict[str, list[str]], files: Mapping[str, Path],
                 base_vocab: int, seed: int) -> None:
        from musicgen.midi_io import read_score

        self.attributes = attributes_of(config)
        self.drop_rate = float(config.get("drop_rate", 0.2))
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ConfigError(f"conditioning.drop_rate={self.drop_rate} must be in [0, 1]")
        self.every_window = bool(config.get("every_window", True))
        self.key_source = str(config.get("key_source", "notes"))  # checked by file_key
        self.seed = seed
        per_file: dict[str, dict[str, str]] = {}
        self.attrs: dict[str, list[dict[str, str]]] = {}
        for split, doc_names in names.items():
            rows = []
            for name in doc_names:
                orig = COPY_SUFFIX.sub("", name)
                if orig not in per_file:
                    per_file[orig] = extract_attributes(read_score(files[orig]), orig, self.key_source)
                row = dict(per_file[orig])
                m = COPY_SUFFIX.search(name)
                if m:
                    row["key"] = transpose_key(row["key"], int(m.group(1)))
                rows.append(row)
            self.attrs[split] = rows
        styles = [a["style"] for a in self.attrs.get("train", [])]
        self.vocab = ConditioningVocab.build(self.attributes, styles, base_vocab, self.key_source)

    def prefixes(self, split: str) -> np.ndarray:
        """(n_docs, P) prefix ids of a split: full for val/test, with attribute dropout for train."""
        rows = [self.vocab.prefix(a) for a in self.attrs[split]]
        pre = np.array(rows, dtype=np.int64).reshape(-1, len(self.attributes))
        if split == "train" and self.drop_rate > 0:
            pre = drop_attributes(pre, self.vocab.null_prefix(), self.drop_rate, np.random.default_rng([self.seed, 7]))
        return pre

    def prefixed(self, split: str, st) -> PrefixedSplit:
        """A cache split's stream with each document's prefix after its BOS."""
        return insert_prefixes(np.asarray(st.tokens), st.offsets, self.prefixes(split))

    def dataset(self, split: str, st, seq_len: int, stride: int, mode: str, pack: bool):
        """The DataModule's dataset of a split, over the prefixed stream (see ``MidiDataModule._dataset``)."""
        ps = self.prefixed(split, st)
        if split == "train" and mode == "causal" and pack and self.every_window:
            return PrefixedWindows(ps.tokens, ps.offsets, seq_len, stride, ps.is_prefix, len(self.attributes))
        if split == "train":
            return TokenWindows(ps.tokens, ps.offsets, seq_len, stride, mode, pack)
        if mode == "causal":
            return PrefixScoringWindows(ps.tokens, ps.offsets, seq_len, ps.is_prefix, self.every_window,
                                        len(self.attributes))
        return TokenWindows(ps.tokens, ps.offsets, seq_len, 1, mode, pack)

def starts_in_music(starts: np.ndarray, offsets: np.ndarray, is_prefix: np.ndarray,
                    n_prefix: int) -> tuple[np.ndarray, np.ndarray]:
    """Of windows starting at stream positions ``starts`` of a prefixed stream, those that start
    inside a piece's music (past its BOS and its prefix), and their pieces' prefix positions (R, P)."""
    doc = np.searchsorted(offsets, starts, side="right") - 1
    rows = np.flatnonzero((starts != offsets[doc]) & ~is_prefix[starts])
    return rows, offsets[doc[rows]][:, None] + 1 + np.arange(n_prefix)

class PrefixedWindows(TokenWindows):
    """Packed causal training windows in which every window sees the attributes of the piece it
    starts in: a window that starts inside a piece's music is ``prefix + stream[s : s + L + 1 - P]``,
    the prefix's own positions not scored (their targets are IGNORE_INDEX). That is the context
    generation gives a window that slid past BOS (``GuidedModel``: the prefix in front), so the
    attributes steer the whole piece, not only its first window. Windows that start at a BOS or
    inside a prefix are the stream as it is. Window count and starts are ``TokenWindows``'."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, stride: int,
                 is_prefix: np.ndarray, n_prefix: int) -> None:
        if n_prefix >= seq_len:
            raise ConfigError(f"{n_prefix} attribute tokens leave no room in seq_len={seq_len}")
        super().__init__(tokens, offsets, seq_len, stride, "causal", pack=True)
        self.is_prefix, self.n_prefix = is_prefix, n_prefix

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitems__(indices)
        P, L = self.n_prefix, self.seq_len
        if P == 0:
            return x, y
        s = np.asarray(indices, dtype=np.int64) * self.stride  # window starts
        rows, pre = starts_in_music(s, self.offsets, self.is_prefix, P)
        if len(rows):
            body = s[rows][:, None] + np.arange(L + 1 - P)  # (R, L + 1 - P)
            seq = torch.from_numpy(self.tokens[np.concatenate([pre, body], axis=1)].astype(np.int64))
            r = torch.from_numpy(rows)
            x[r] = seq[:, :L]
            y[r] = seq[:, 1:]
            y[r, : P] = IGNORE_INDEX  # the prefix and the first music token from the prefix alone
        return x, y

class PrefixScoringWindows(ScoringWindows):
    """Evaluation's windows over a prefixed stream; the prefix positions are context, never targets.
    ``repeat`` (a run trained with ``every_window``): a later window of a piece longer than one
    window, which starts past its prefix, reads the prefix in place of its first ``n_prefix``
    context tokens (the context that run trained on and generation gives); the targets it scores
    are the same."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int, is_prefix: np.ndarray,
                 repeat: bool = False, n_prefix: int = 0) -> None:
        super().__init__(tokens, offsets, seq_len)
        self.is_prefix = is_prefix
        self.n_prefix = n_prefix if repeat else 0
        if 2 * self.n_prefix > seq_len:
            raise ConfigError(f"{n_prefix} attribute tokens take more than half of seq_len={seq_len}")

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        x, y = super().__getitems__(idx)
        P = self.n_prefix
        start = self.windows[idx, 0]
        rows, pre = starts_in_music(start, self.offsets, self.is_prefix, P)
        if P and len(rows):
            x[torch.from_numpy(rows), :P] = torch.from_numpy(self.tokens[pre].astype(np.int64))
        pos = start[:, None] + self._arange[1:]  # (B, L) target positions
        masked = self.is_prefix[np.minimum(pos, max(0, len(self.is_prefix) - 1))]
        y[torch.from_numpy(masked)] = IGNORE_INDEX
        return x, y

    def n_targets(self) -> int:
        return super().n_targets() - int(self.is_prefix.sum())

def with_prefixes(docs: Sequence[np.ndarray], prefixes: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """``BOS doc EOS`` documents -> ``BOS prefix doc EOS``, one prefix each."""
    return [np.concatenate([d[:1], np.asarray(p, dtype=d.dtype), d[1:]]) for d, p in zip(docs, prefixes)]


def piece_attributes(data: Mapping[str, Any], names: Sequence[str], key_source: str) -> list[dict[str, str]]:
    """The attributes of the documents ``names`` of a run whose ``data`` config is given, read from
    their source files (``document_files``, as the DataModule names them); a source file that is
    gone is a one-line error."""
    files = document_files(data)
    out = []
    for name in names:
        path = files.get(COPY_SUFFIX.sub("", name))
        if path is None or not Path(path).exists():
            raise ConfigError(f"{name}: the source file of this piece is gone ({path or 'not in the run data'}); "
                              "its attributes cannot be read")
        out.append(extract_attributes(read_score(path), name, key_source))
    return out
