"""Bar infilling: fill-in-the-middle training over bars, and regenerating bars of a tune.

Training (``infill=bars`` in train.yaml's defaults; ``none`` changes nothing): a share
(``infill.rate``) of the training windows is rearranged "prefix, suffix, middle" (Bavarian et al.,
2022, PSM) around a span of whole bars inside one piece:

    window  = A | M | B                  (M: 1..``max_bars`` bars, from a Bar token to a Bar token
                                          or the piece's EOS; the window's last 4 tokens dropped)
    trained = PRE A SUF B MID M END      (the same length: 4 sentinel ids after the tokeniser's)

so one model continues (the other windows, and every validation window, are left to right:
``val/ppl`` stays comparable with a run trained without infilling) and infills. The sentinels are
never targets except END, which ends a middle. Which windows are rearranged, and where, is drawn
from ``data.seed`` and the window's index, so a resumed run sees the same windows.

Bars are the tokeniser's: REMI as V6-V8 configure it has no time signatures and lays every piece
out in 4/4, so "bar 5" is quarter notes 16..20 of the file, whatever its metre; a tokeniser that
writes time signatures (``conditioning=full`` turns them on) has the file's bars (``bar_lines``).
In the tokens a bar line is an id whose base expansion starts with ``Bar`` (BPE merges never
cross a bar line: ``encode_ids_split: bar``), but MidiTok writes a rest that reaches a bar line
without the Bar token, so generation finds each written bar line's bar from the time of the next
note (``bar_numbers``) and refuses, in one line, a span that starts or ends inside such a rest.

Generation (``python -m musicgen.generate task=infill prompt.file=tune.mid infill.bars=5-8``): the
file is tokenised, the context ``PRE BOS <bars before> SUF <bars after> EOS MID`` (cut to the
trained window, the bars nearest the span kept) decodes a middle of exactly as many bars as asked
(a Bar is refused once they are all started, END until then; END is sampled as EOS), and the tune
is written back with the file's own notes outside the span, note for note, and the generated ones
inside it (durations cut at the span's end).

With conditioning (``conditioning=key|full`` and ``infill=bars``): the rearranged windows are cut
from the conditioned run's own training windows, so a window from a piece's start reads ``PRE BOS
<attributes> A SUF B MID M END`` (and, with ``conditioning.every_window``, one from inside a piece
``PRE <attributes> A SUF B MID M END``); attribute tokens are never targets there. ``task=infill``
with ``cond.*`` puts the asked attributes after ``PRE BOS`` and guides with ``sampling.cfg_scale``,
and the measurement gives each piece its own attributes.

Measurement (``musicgen infilling ckpt_path=<run>``): on the test pieces, the NLL per note of each
true middle given prefix and suffix (the PSM context) against the same model given the prefix only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from musicgen.constants import BOS_ID, EOS_ID
from musicgen.errors import ConfigError

SENTINELS = ("FIM_PRE", "FIM_SUF", "FIM_MID", "FIM_END")

@dataclass(frozen=True)
class InfillVocab:
    """The four sentinel ids, after the tokeniser's ``base`` ids."""

    base: int
    rate: float = 0.5
    max_bars: int = 8

    @property
    def pre(self) -> int:
        return self.base

    @property
    def suf(self) -> int:
        return self.base + 1

    @property
    def mid(self) -> int:
        return self.base + 2

    @property
    def end(self) -> int:
        return self.base + 3

    @property
    def vocab_size(self) -> int:
        return self.base + len(SENTINELS)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "rate": self.rate, "max_bars": self.max_bars, "tokens": list(SENTINELS)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InfillVocab:
        return cls(int(d["base"]), float(d["rate"]), int(d["max_bars"]))

def check_config(infill: Mapping[str, Any]) -> tuple[float, int]:
    """``infill.rate`` and ``infill.max_bars`` of a config, checked."""
    rate, max_bars = float(infill.get("rate", 0.0)), int(infill.get("max_bars", 8))
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"infill.rate={rate} must be in [0, 1]")
    if max_bars < 1:
        raise ConfigError(f"infill.max_bars={max_bars} must be >= 1")
    return rate, max_bars

def parse_bars(spec: Any) -> tuple[int, int]:
    """``"5-8"`` (1-based, inclusive; ``"5"`` for one bar) -> the 0-based half-open span (4, 8)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(spec)) if spec is not None else None
    if not m:
        raise ConfigError(f"infill.bars={spec}: give the bars to regenerate as FIRST-LAST, e.g. infill.bars=5-8")
    first, last = int(m.group(1)), int(m.group(2) or m.group(1))
    if first < 1 or last < first:
        raise ConfigError(f"infill.bars={spec}: bars count from 1 and LAST must not come before FIRST")
    return first - 1, last


def context_ids(ids: Sequence[int], bars: np.ndarray, span: tuple[int, int], vocab: InfillVocab,
                budget: int) -> tuple[list[int], list[int], list[int]]:
    """``PRE BOS <before> SUF <after> EOS MID`` for the bar ``span`` of a piece's ``ids`` (no BOS/EOS;
    ``bars``: the index of each bar's first token), at most ``budget`` tokens (the bars nearest the
    span kept); also the prefix-only context ``BOS <before>`` (as cut) and the true middle."""
    a, b = span
    lo = int(bars[a])
    hi = int(bars[b]) if b < len(bars) else len(ids)
    before, after, middle = [BOS_ID, *ids[:lo]], [*ids[hi:], EOS_ID], list(ids[lo:hi])
    while len(before) + len(after) + 3 > budget and (len(before) > 1 or len(after) > 1):
        if len(before) >= len(after):
            before = before[1:]
        else:
            after = after[:-1]
    return [vocab.pre, *before, vocab.suf, *after, vocab.mid], before, middle

def with_attributes(seq: Sequence[int], prefix: Sequence[int], lead: int = 0) -> list[int]:
    """``seq`` with a conditioned run's attribute ``prefix`` after its BOS, which follows ``lead``
    tokens (``PRE``), or in front of the body when the BOS was cut (as ``GuidedModel`` does)."""
    seq = list(seq)
    at = lead + 1 if len(seq) > lead and seq[lead] == BOS_ID else lead
    return [*seq[:at], *prefix, *seq[at:]]
