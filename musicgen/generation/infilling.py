"""Decoding a middle: the infilling context, the network wrapper that decodes exactly the asked
bars, and the tune reassembled with the file's own notes outside the span."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import symusic
import torch
import torch.nn as nn

from musicgen.constants import BOS_ID, EOS_ID
from musicgen.control.infilling import InfillVocab, context_ids
from musicgen.errors import ConfigError
from musicgen.tokenizers.bars import bar_lines, locate_bars, uses_time_signatures


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


def continuation_net(vocab: InfillVocab | None, net: nn.Module) -> nn.Module:
    """The network to continue with: the logits of a run trained with infilling (sentinels
    ``vocab``) cut to the ids before its sentinels (never sampled), any other run's as they are."""
    if vocab is None:
        return net
    from musicgen.generation.guidance import guided

    return guided(net, [], [], 1.0, n_out=vocab.base)  # no prefix: only the cut

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
    ``run``: a ``musicgen.checkpoint.LoadedRun`` trained with ``infill=bars`` (its network, tokeniser,
    vocabularies and trained window). Returns the context and, per sample, the middle's ids and the
    reassembled score."""
    from musicgen.control.conditioning import requested_attributes
    from musicgen.generation import generate
    from musicgen.generation.guidance import guided

    vocab = run.infill_vocab
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
    ids, starts, is_bar, lines, i, j = locate_bars(tok, vocab.base, score, bars)
    a, b = bars
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
