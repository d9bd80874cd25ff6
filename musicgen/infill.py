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

Measurement (``python -m musicgen.infill <run>``): on the test pieces, the NLL per note of each
true middle given prefix and suffix (the PSM context) against the same model given the prefix only.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX
from musicgen.data.windows import TokenWindows
from musicgen.errors import ConfigError, user_errors

log = logging.getLogger(__name__)

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


def bar_starts(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """(vocab_size,) bool: the ids whose base-token expansion starts with a Bar token."""
    out = np.zeros(vocab_size, dtype=bool)
    for v in range(min(vocab_size, len(tokenizer.backend))):
        toks = tokenizer.tokens([v])
        out[v] = bool(toks) and toks[0].startswith("Bar_")
    return out


def pitch_counts(tokenizer: Any, vocab_size: int) -> np.ndarray:
    """(vocab_size,) int: the Pitch tokens (notes) in each id's base-token expansion."""
    out = np.zeros(vocab_size, dtype=np.int64)
    for v in range(min(vocab_size, len(tokenizer.backend))):
        out[v] = sum(t.startswith("Pitch_") for t in tokenizer.tokens([v]))
    return out


def uses_time_signatures(tokenizer: Any) -> bool:
    """Whether the tokeniser writes time signatures (real bars) rather than 4/4 bars throughout."""
    return bool(getattr(getattr(getattr(tokenizer, "backend", None), "config", None), "use_time_signatures", False))


def bar_lines(score: symusic.Score, time_signatures: bool, until: int | None = None) -> np.ndarray:
    """Ticks of the bar lines of ``score`` as the tokeniser counts bars: ``lines[k]`` starts bar k
    (0-based), the last one at or past ``until`` (default: the score's end), so ``len - 1`` bars
    hold the music. With ``time_signatures``: the score's own (4/4 before the first); without
    (V6-V8's REMI): bars of 4 quarter notes from the start."""
    tpq, end = score.ticks_per_quarter, int(score.end() if until is None else until)
    sigs = [(int(ts.time), ts.numerator, ts.denominator) for ts in score.time_signatures] if time_signatures else []
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0, 4, 4))
    lines: list[int] = []
    for k, (t, num, den) in enumerate(sigs):
        t = max(t, lines[-1] if lines else 0)  # a signature takes effect at a bar line
        length = max(1, 4 * tpq * num // den)
        stop = sigs[k + 1][0] if k + 1 < len(sigs) else max(end, t) + length
        lines.extend(range(t, max(stop, t + 1), length))
    out = np.array(sorted(set(lines)), dtype=np.int64)
    return out[: int(np.searchsorted(out, end, side="left")) + 1]


def bar_numbers(tokenizer: Any, ids: Sequence[int], starts: np.ndarray, n_pitch: np.ndarray) -> np.ndarray:
    """The bar (0-based, as ``bar_lines`` counts them) each bar-start token at ``starts`` opens,
    read from the time of the next note: MidiTok writes a rest that crosses bar lines without Bar
    tokens, so the k-th Bar token need not open bar k. Empty bars (Bar tokens in a row) count back
    from the bar that follows them."""
    score = tokenizer.decode(ids)
    times = np.sort(np.array([n.time for t in score.tracks for n in t.notes], dtype=np.int64))
    lines = bar_lines(score, uses_time_signatures(tokenizer), int(times[-1]) + 1 if len(times) else 0)
    bar_of = np.searchsorted(lines, times, side="right") - 1
    before = np.concatenate([[0], np.cumsum(n_pitch[np.asarray(ids, dtype=np.int64)])])[starts]  # notes before each
    last = (int(bar_of[-1]) if len(times) else 0) + 1
    numbers = np.array([int(bar_of[k]) if k < len(times) else last for k in before], dtype=np.int64)
    for i in range(len(numbers) - 2, -1, -1):
        numbers[i] = min(numbers[i], numbers[i + 1] - 1)
    return numbers


# ----------------------------------------------------------------------------- training windows

def rearrange(seq: np.ndarray, is_bar: np.ndarray, vocab: InfillVocab, rng: np.random.Generator) -> np.ndarray | None:
    """One window ``seq`` (N,) -> ``PRE A SUF B MID M END`` of the same length, around a span ``M`` of
    1..``max_bars`` whole bars of one piece in ``seq[:N-4]``; None when that holds no bar after
    its first token (nothing to rearrange)."""
    n = len(seq) - len(SENTINELS)
    body = seq[:n]
    if n < 2:
        return None
    ends = np.flatnonzero((body == EOS_ID) | (body == BOS_ID))  # a middle never crosses these
    starts = np.flatnonzero(is_bar[body])
    starts = starts[starts > 0]
    if not len(starts):
        return None
    s = int(rng.choice(starts))
    nxt = ends[ends > s]
    limit = int(nxt[0]) if len(nxt) else n  # the piece's EOS, or the window's end
    later = starts[(starts > s) & (starts < limit)]  # the k-th of these ends a middle of k bars
    ends = later[: vocab.max_bars] if len(later) >= vocab.max_bars else np.append(later, limit)
    e = int(rng.choice(ends))  # a later bar line, or the end of the piece (or of the window)
    return np.concatenate([[vocab.pre], body[:s], [vocab.suf], body[e:], [vocab.mid], body[s:e], [vocab.end]]
                          ).astype(seq.dtype)


class InfillWindows(Dataset):
    """Training windows ``windows`` (packed, causal) with ``vocab.rate`` of them rearranged by
    ``rearrange``. Over a conditioned run's windows (the prefixed stream, or ``PrefixedWindows``,
    where a window that starts inside a piece has the piece's attributes in front) the attribute
    ids ``unscored`` stay context in a rearranged window: they are never targets, as the sentinels."""

    def __init__(self, windows: TokenWindows, vocab: InfillVocab, is_bar: np.ndarray, seed: int,
                 unscored: Sequence[int] = ()) -> None:
        self.windows, self.vocab, self.is_bar, self.seed = windows, vocab, is_bar, seed
        self._unscored = np.array([vocab.pre, vocab.suf, vocab.mid, *unscored])

    def __len__(self) -> int:
        return len(self.windows)

    def target_stats(self) -> dict[str, float]:
        return self.windows.target_stats()

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.windows.__getitems__(indices)
        for r, i in enumerate(np.asarray(indices, dtype=np.int64).tolist()):
            rng = np.random.default_rng([self.seed, 11, i])
            if rng.random() >= self.vocab.rate:
                continue
            seq = np.concatenate([x[r].numpy(), y[r, -1:].numpy()])
            new = rearrange(seq, self.is_bar, self.vocab, rng)
            if new is None:
                continue
            target = new[1:].copy()
            target[np.isin(target, self._unscored)] = IGNORE_INDEX
            x[r] = torch.from_numpy(new[:-1])
            y[r] = torch.from_numpy(target)
        return x, y


# ----------------------------------------------------------------------------- decoding a middle

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


class InfillModel(nn.Module):
    """A network decoding a middle for ``musicgen.generation.generate``. The loop's prompt is one
    BOS per row, which stands for ``context``; the logits are the tokeniser's ids (the first
    ``n_out``, default ``vocab.base``; a conditioned run's attribute tokens come after them) with
    END sampled as EOS, a Bar refused once ``n_bars`` bars are started and EOS until then (the
    first token starts a bar)."""

    def __init__(self, model: nn.Module, context: Sequence[int], vocab: InfillVocab, is_bar: np.ndarray,
                 n_bars: int, n_out: int | None = None) -> None:
        super().__init__()
        self.model, self.vocab, self.n_bars = model, vocab, int(n_bars)
        self.n_out = vocab.base if n_out is None else int(n_out)
        self.register_buffer("context", torch.tensor(list(context), dtype=torch.long), persistent=False)
        self.register_buffer("is_bar", torch.from_numpy(is_bar[: self.n_out].copy()), persistent=False)
        self.bars: torch.Tensor | None = None  # (B,) bars started so far in each row

    @property
    def shift(self) -> int:
        return self.context.numel() - 1  # the context takes the BOS's place

    @property
    def context_len(self) -> int:
        return self.model.context_len - self.shift

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, last_only: bool = True) -> torch.Tensor:
        if not last_only:
            raise ValueError("InfillModel gives next-token logits only (last_only=True)")
        B = idx.size(0)
        if input_pos is None or int(input_pos[0]) == 0:  # from the start: the context replaces the BOS
            body = idx[:, 1:]
            x = torch.cat([self.context.expand(B, -1), body], dim=1)
            pos = None if input_pos is None else torch.arange(x.size(1), device=idx.device)
            self.bars = self.is_bar[body.clamp(max=self.n_out - 1)].sum(1)
        else:
            x, pos = idx, input_pos + self.shift
            self.bars = self.bars + self.is_bar[idx.clamp(max=self.n_out - 1)].sum(1)
        out = self.model(x, last_only=True) if pos is None else self.model(x, input_pos=pos, last_only=True)
        logits = out[:, : self.n_out].float().clone()
        logits[:, EOS_ID] = out[:, self.vocab.end].float()
        neg = torch.finfo(logits.dtype).min
        started = self.bars[:, None]
        logits = logits.masked_fill((started >= self.n_bars) & self.is_bar[None, :], neg)  # no further bar
        logits[:, EOS_ID] = logits[:, EOS_ID].masked_fill(self.bars < self.n_bars, neg)  # not before the last
        return logits.masked_fill((started == 0) & ~self.is_bar[None, :], neg)  # a middle starts a bar


class CachedInfillModel(InfillModel):
    """``InfillModel`` over a network with a KV cache (the Transformer)."""

    def setup_cache(self, batch_size: int, max_len: int | None = None, **kw: Any) -> None:
        self.model.setup_cache(batch_size, (max_len or self.context_len) + self.shift, **kw)

    def clear_cache(self) -> None:
        self.model.clear_cache()


def infill_model(model: nn.Module, context: Sequence[int], vocab: InfillVocab, is_bar: np.ndarray,
                 n_bars: int, n_out: int | None = None) -> InfillModel:
    cls = CachedInfillModel if callable(getattr(model, "setup_cache", None)) else InfillModel
    return cls(model, context, vocab, is_bar, n_bars, n_out)


def with_attributes(seq: Sequence[int], prefix: Sequence[int], lead: int = 0) -> list[int]:
    """``seq`` with a conditioned run's attribute ``prefix`` after its BOS, which follows ``lead``
    tokens (``PRE``), or in front of the body when the BOS was cut (as ``GuidedModel`` does)."""
    seq = list(seq)
    at = lead + 1 if len(seq) > lead and seq[lead] == BOS_ID else lead
    return [*seq[:at], *prefix, *seq[at:]]


def continuation_net(run: Any, net: nn.Module) -> nn.Module:
    """The network to continue with: an infilling run's logits cut to the tokeniser's ids (its
    sentinels never sampled), any other run's as they are."""
    if run.infill is None:
        return net
    from musicgen.conditioning import guided

    return guided(net, [], [], 1.0, n_out=run.infill.base)  # no prefix: only the cut


def decoded_middle(tokenizer: Any, head: Sequence[int], middle: Sequence[int], bar: int) -> symusic.Score:
    """The notes of ``middle`` (the ids of bars ``bar``.. of a piece whose ids before it are ``head``)
    as a score from its own tick 0. Decoded after ``head``, so that its bars have the piece's time
    signature (a middle decoded alone would be laid out in 4/4)."""
    full = tokenizer.decode([*head, *middle])
    lines = bar_lines(full, uses_time_signatures(tokenizer))
    out = symusic.Score(full.ticks_per_quarter)
    track = symusic.Track(name="middle", program=0)
    if bar < len(lines):
        start = int(lines[bar])
        for t in full.tracks:
            track.notes.extend(symusic.Note(n.time - start, n.duration, n.pitch, n.velocity)
                               for n in t.notes if n.time >= start)
    out.tracks.append(track)
    return out


def reassemble(original: symusic.Score, middle: symusic.Score, span_ticks: tuple[int, int]) -> symusic.Score:
    """``original`` (ticks) with the notes that start inside ``span_ticks`` replaced by ``middle``'s
    (which starts at its own tick 0), rescaled to the original's resolution; every note outside
    the span is the original's, untouched."""
    lo, hi = span_ticks
    scale = original.ticks_per_quarter / middle.ticks_per_quarter
    out = original.copy()
    melodic = [t for t in out.tracks if not t.is_drum]
    for t in melodic:
        keep = [n for n in t.notes if not lo <= n.time < hi]
        t.notes.clear()
        t.notes.extend(keep)
    new = []
    for t in middle.tracks:
        for n in t.notes:
            start = lo + round(n.time * scale)
            if start >= hi:
                continue
            new.append(symusic.Note(start, max(1, min(round(n.duration * scale), hi - start)), n.pitch, n.velocity))
    if melodic:
        melodic[0].notes.extend(new)
        melodic[0].notes.sort()
    else:
        track = symusic.Track(name="infill", program=0, is_drum=False)
        track.notes.extend(new)
        out.tracks.append(track)
    return out


def infill_run(run: Any, score: symusic.Score, bars: tuple[int, int], num_samples: int, sampling: Any,
               generator: torch.Generator, device: torch.device | str, grammar: Any = None,
               max_tokens: int | None = None, cond: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Sample ``num_samples`` middles for the bar span ``bars`` (0-based, half-open) of ``score``.
    ``cond``: the attributes asked of a conditioned run (``cond.*``), guided by ``sampling.cfg_scale``.
    Returns the context and, per sample, the middle's ids and the reassembled score."""
    from musicgen.conditioning import guided, requested_attributes
    from musicgen.generation import generate

    vocab = run.infill
    if vocab is None:
        raise ConfigError(f"{run.ckpt_path} was trained without infilling: train it with infill=bars "
                          "(e.g. python -m musicgen.train +version=v7 infill=bars)")
    cvocab = run.conditioning
    attrs = requested_attributes(cvocab, cond)  # cond.* a run cannot honour: a one-line error
    cfg_scale = float(getattr(sampling, "cfg_scale", 1.0))
    if cvocab is None and cfg_scale != 1.0:
        raise ConfigError(f"sampling.cfg_scale={cfg_scale} needs a checkpoint trained with conditioning")
    tok = run.tokenizer
    score = score if isinstance(score, symusic.core.ScoreTick) else score.to("tick")
    ids = tok.encode(score)
    is_bar = bar_starts(tok, vocab.base)
    starts = np.flatnonzero(is_bar[np.asarray(ids)])
    numbers = bar_numbers(tok, ids, starts, pitch_counts(tok, vocab.base))
    a, b = bars
    shown = f"infill.bars={a + 1}-{b}"
    time_signatures = uses_time_signatures(tok)
    lines = bar_lines(score, time_signatures)
    n_file = len(lines) - 1
    if b > n_file:
        what = "by its time signatures" if time_signatures else "of 4 quarter notes, the tokeniser's bars"
        raise ConfigError(f"{shown}: the file has {n_file} bars ({what})")
    index = {int(n): i for i, n in enumerate(numbers)}
    for bar in (a, b):
        if bar not in index and bar <= numbers[-1]:
            raise ConfigError(f"{shown}: bar {bar + 1} starts inside a rest that crosses bar lines, where the "
                              "tokens have no bar line; choose bars that start with a note or an empty bar")
    i, j = index[a], index.get(b, len(starts))  # the span in bar-start tokens (to the piece's end past the last)
    true_middle = ids[int(starts[i]) : int(starts[j]) if j < len(starts) else len(ids)]
    window = run.trained_context
    if max_tokens is None:
        max_tokens = max(16, 2 * len(true_middle))
    max_tokens = min(int(max_tokens), window // 2)
    net, n_out, n_prefix, conditioning = run.net.to(device), vocab.base, 0, None
    if cvocab is not None:  # the prefix goes after PRE BOS, as in the rearranged training windows
        prefix = cvocab.prefix(attrs)
        net = guided(net, prefix, cvocab.null_prefix(), cfg_scale, after=1)
        n_out, n_prefix = cvocab.base, len(prefix)
        conditioning = {"attributes": attrs, "prefix_tokens": cvocab.decode(prefix), "cfg_scale": cfg_scale}
    context, _, _ = context_ids(ids, starts, (i, j), vocab, window - max_tokens - n_prefix)
    net = infill_model(net, context, vocab, is_bar, j - i, n_out).to(device)
    prompt = torch.full((num_samples, 1), BOS_ID, dtype=torch.long, device=device)
    out = generate(net, prompt, max_tokens, sampling, generator=generator, stop_at_eos=True,
                   context_len=window - net.shift - n_prefix, grammar=grammar)
    span_ticks = (int(lines[a]), int(lines[b]))
    head = ids[: int(starts[i])]
    samples = []
    for row in out[:, 1:].tolist():
        ended = EOS_ID in row
        middle = row[: row.index(EOS_ID)] if ended else row
        filled = reassemble(score, decoded_middle(tok, head, middle, a), span_ticks)
        samples.append({"ids": middle, "ended": ended, "bars": int(is_bar[np.asarray(middle, dtype=np.int64)].sum())
                        if middle else 0, "score": filled})
    return {"context_tokens": len(context), "max_tokens": max_tokens, "span_ticks": span_ticks, "bar_tokens": j - i,
            "true_middle_tokens": len(true_middle), "conditioning": conditioning, "samples": samples}


# ----------------------------------------------------------------------------- measurement

@torch.no_grad()
def _middle_nll(net: nn.Module, context: list[int], middle: list[int], base: int, device) -> float:
    """Summed NLL (nats) of ``middle`` after ``context``, over the tokeniser's ids (renormalised)."""
    x = torch.tensor([context + middle[:-1]], dtype=torch.long, device=device)
    logits = net(x, last_only=False)[0, len(context) - 1 :, :base].float()
    target = torch.tensor(middle, dtype=torch.long, device=device)
    return float(F.cross_entropy(logits, target, reduction="sum"))


def measure_infilling(ckpt_path: str, n_bars: int = 4, max_pieces: int = 200, device: str = "cpu",
                      seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """On the test pieces with at least ``n_bars`` + 2 bars: the NLL per note of the true middle
    (``n_bars`` bars from the piece's middle) given prefix and suffix, against given the prefix only
    (the same, cut, prefix), with 95% bootstrap intervals over pieces (of the ratio of sums)."""
    from musicgen.checkpoint import load_run, load_run_cache
    from musicgen.metrics.bootstrap import bootstrap_ci, ratio

    run = load_run(ckpt_path, map_location=device)
    vocab = run.infill
    if vocab is None:
        raise ConfigError(f"{ckpt_path} was trained without infilling (infill=bars)")
    tok, net = run.tokenizer, run.net.to(device).eval()
    is_bar = bar_starts(tok, vocab.base)
    test = load_run_cache(run).splits.get("test")
    if test is None or not len(test.originals()):
        raise ConfigError(f"{ckpt_path}: its data has no test pieces")
    window = run.trained_context
    cvocab, n_out, prefixes = run.conditioning, vocab.base, {}
    if cvocab is not None:  # each piece with its own attributes, as validation scores it
        from musicgen.conditioning import piece_attributes

        n_out = cvocab.base
        prefixes = {int(i): cvocab.prefix(a) for i, a in zip(test.originals(),
                                                              piece_attributes(run, test, test.originals()))}
        window -= len(cvocab.attributes)
    rows = []
    for i in test.originals():
        ids = [int(t) for t in test.doc(i)[1:-1]]
        starts = np.flatnonzero(is_bar[np.asarray(ids)])
        if len(starts) < n_bars + 2:
            continue
        a = (len(starts) - n_bars) // 2
        hi = int(starts[a + n_bars]) if a + n_bars < len(starts) else len(ids)
        context, before, middle = context_ids(ids, starts, (a, a + n_bars), vocab, window + 1 - (hi - int(starts[a])))
        if len(middle) < 2 or len(context) + len(middle) > window:
            continue
        notes = sum(len(t.notes) for t in tok.decode(middle).tracks)
        if not notes:
            continue
        if prefixes:
            context, before = with_attributes(context, prefixes[int(i)], lead=1), with_attributes(before,
                                                                                                   prefixes[int(i)])
        rows.append((_middle_nll(net, context, middle, n_out, device),
                     _middle_nll(net, before, middle, n_out, device), notes))
        if len(rows) >= max_pieces:
            break
    if not rows:
        raise ConfigError(f"{ckpt_path}: no test piece has {n_bars + 2} bars within the trained window")
    both, prefix, notes = (np.array(c, dtype=float) for c in zip(*rows))
    stats = np.stack([both, prefix, both - prefix, notes], axis=1)

    def per_note(col: int) -> dict[str, Any]:
        value, lo, hi = bootstrap_ci(stats, ratio(col, 3), n_boot=n_boot, seed=seed)
        return {"value": round(value, 4), "ci95": [round(lo, 4), round(hi, 4)]}

    return {"ckpt_path": str(run.ckpt_path), "pieces": len(rows), "bars": n_bars, "notes": int(notes.sum()),
            "nll_per_note_prefix_and_suffix": per_note(0), "nll_per_note_prefix_only": per_note(1),
            "difference": per_note(2)}


@user_errors
def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Infilling NLL of an infilling checkpoint (musicgen.infill)")
    p.add_argument("ckpt_path")
    p.add_argument("--bars", type=int, default=4, help="bars in each middle")
    p.add_argument("--pieces", type=int, default=200)
    p.add_argument("--out", default=None, help="write the result as JSON here")
    a = p.parse_args(argv)
    text = json.dumps(measure_infilling(a.ckpt_path, a.bars, a.pieces), indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
