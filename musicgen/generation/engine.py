"""One decoding loop over token ids for every model family.

What a model must offer (duck-typed; see ``musicgen.models``):
    model(idx (B, T), last_only=True) -> logits (B, V)
    model.context_len -> int: the longest context it can take (Transformer: max_seq_len, LSTM:
        its training window); callers pass ``context_len`` to stay within the window the model
        trained on (``LoadedRun.trained_context``), which is what ``generate`` and ``evaluate`` do
and, to decode with a KV cache (the Transformer), gpt-fast style:
    model.setup_cache(batch_size, max_len), model(idx, input_pos=pos, last_only=True),
    model.clear_cache(), and optionally model.cache_size -> (batch, max_len) | None.
A cache the caller set up beforehand (``cache_size`` at least (B, context_len)) is used as it
is and left in place: that is how a caller keeps the buffers of a compiled decoder across
calls (``torch.compile`` guards on them). Otherwise each call makes its own and frees it.

The context the model conditions on is ``seq[:, start:n]`` for the ``n`` tokens so far. It
never exceeds ``context_len`` (W); when it would, ``overflow`` moves ``start``:
    "slide"  -> keep the most recent ``W - slide_margin`` tokens (default margin W // 4: the
                last 3/4 of the window), re-encoded in one prefill; context shrinks, never vanishes
    "reset"  -> keep only the newest token (the original's behaviour: the cache was reset)
    "window" -> keep the most recent W tokens, every step (a true sliding window: the context
                the model was trained with; with a KV cache this is a prefill per step)
The same rule applies with and without the cache, so both give the same logits (and identical
greedy tokens) under any policy. The default (``overflow=None``) is "slide" when decoding with a
cache and "window" without one, where every step is a full forward anyway (the LSTM's case).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from musicgen.constants import EOS_ID, PAD_ID
from musicgen.generation.grammar import TokenGrammar
from musicgen.generation.sampling import SamplingConfig, sample_next

OVERFLOW_POLICIES = ("slide", "reset", "window")


def supports_cache(model: nn.Module) -> bool:
    return callable(getattr(model, "setup_cache", None))


class NextTokenLogits:
    """Next-token logits for a growing sequence, reusing a KV cache where the model has one.

    Call ``next_logits(seq)`` with the whole sequence so far (B, n), n growing by any number of
    tokens between calls; returns logits (B, V) for token n, conditioned on ``seq[:, start:n]``.
    ``start`` follows the overflow policy (module docstring). Tokens already in the cache are not
    re-encoded; a moved ``start`` means one prefill of the kept tail. Call ``close()`` when done
    (frees the cache, unless it was the caller's).
    """

    def __init__(self, model: nn.Module, batch_size: int, use_cache: bool = True,
                 overflow: str | None = None, slide_margin: int | None = None, context_len: int | None = None):
        self.model = model
        self.window = int(context_len or model.context_len)
        self.use_cache = use_cache and supports_cache(model)
        if overflow is None:
            overflow = "slide" if self.use_cache else "window"
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow={overflow!r} must be one of {OVERFLOW_POLICIES}")
        self.overflow = overflow
        margin = self.window // 4 if slide_margin is None else slide_margin
        if not 0 <= margin < self.window:
            raise ValueError(
                f"slide_margin={slide_margin!r} must be in [0, {self.window - 1}] (context_len={self.window})"
            )
        self.keep = self.window - margin  # tokens kept by a slide
        self.start = 0  # first token of the context
        self.cached = None  # absolute index one past the last token in the cache; None: nothing cached
        # a cache the caller set up (and keeps) is reused; its stale entries are never read:
        # every position is written before a query at or after it attends to it
        size = getattr(model, "cache_size", None) if self.use_cache else None
        self.owns_cache = self.use_cache and not (size and size[0] >= batch_size and size[1] >= self.window)
        if self.owns_cache:
            model.setup_cache(batch_size, self.window)

    def _context_start(self, n: int) -> int:
        if n - self.start <= self.window:
            return self.start
        if self.overflow == "slide":
            return n - self.keep
        if self.overflow == "reset":
            return n - 1
        return n - self.window  # "window"

    def next_logits(self, seq: torch.Tensor) -> torch.Tensor:
        n = seq.size(1)
        start = self._context_start(n)
        if not self.use_cache:
            self.start = start
            return self.model(seq[:, start:n], last_only=True)
        if start != self.start or self.cached is None:
            self.start, self.cached = start, start  # prefill the kept tail from cache position 0
        # cache position of token j is j - start, always < window
        input_pos = torch.arange(self.cached - start, n - start, device=seq.device)
        # a fresh tensor: a view of seq would carry seq's row stride, which a compiled model guards on
        idx = seq[:, self.cached:n].clone(memory_format=torch.contiguous_format)
        logits = self.model(idx, input_pos=input_pos, last_only=True)
        self.cached = n
        return logits

    def close(self) -> None:
        if self.owns_cache:
            self.model.clear_cache()


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    overflow: str | None = None,
    slide_margin: int | None = None,
    stop_at_eos: bool = False,
    context_len: int | None = None,
    eos_id: int = EOS_ID,
    pad_id: int = PAD_ID,
    progress: Callable[[int, int], None] | None = None,
    grammar: TokenGrammar | None = None,
) -> torch.Tensor:
    """Extend ``prompt`` (B, T) long by ``max_new_tokens`` sampled tokens -> (B, T + max_new_tokens).

    All B rows decode together (one forward per step). ``sampling`` defaults to
    ``SamplingConfig()``; ``generator`` (on the model's device) makes the draw reproducible.
    ``use_cache``: use the model's KV cache if it has one. ``overflow``/``slide_margin``: what
    happens when the context would exceed ``context_len`` (default ``model.context_len``; module
    docstring).
    ``stop_at_eos``: a row that emits ``eos_id`` is filled with ``pad_id`` afterwards, and the
    loop ends early once every row has; the shape stays (B, T + max_new_tokens).
    ``progress(done, total)`` is called after each step. The model runs in eval mode and gets its
    training flag back afterwards.
    ``grammar`` (with ``sampling.constrained``): each step's logits are masked to the tokens the
    grammar admits before sampling (greedy included); its state starts from the prompt's tokens
    and advances with each sampled one (``musicgen.generation.grammar``). The repetition penalty
    sees the last ``sampling.repetition_window`` tokens, prompt included.
    """
    if prompt.dim() != 2 or prompt.size(1) < 1 or prompt.dtype != torch.long:
        raise ValueError(f"prompt must be a (B, T>=1) long tensor, got {tuple(prompt.shape)} {prompt.dtype}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    sampling = SamplingConfig() if sampling is None else sampling
    B, T = prompt.shape
    out = torch.full((B, T + max_new_tokens), pad_id, dtype=torch.long, device=prompt.device)
    out[:, :T] = prompt
    if max_new_tokens == 0:
        return out

    if grammar is not None and sampling.constrained:
        grammar = grammar.to(prompt.device)
        state = grammar.feed(grammar.initial(B), prompt)  # (B,) the grammar state after the prompt
    else:
        grammar = None
    was_training = model.training
    model.eval()
    decoder = NextTokenLogits(model, B, use_cache=use_cache, overflow=overflow, slide_margin=slide_margin,
                              context_len=context_len)
    done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    window = sampling.repetition_window if sampling.repetition_penalty != 1.0 else 0
    try:
        for i in range(max_new_tokens):
            logits = decoder.next_logits(out[:, : T + i])  # (B, V)
            if grammar is not None:
                logits = grammar.mask(logits, state)
            context = out[:, max(0, T + i - window) : T + i] if window else None
            nxt = sample_next(logits, sampling, generator, context)  # (B,)
            if stop_at_eos:
                nxt = nxt.masked_fill(done, pad_id)
                done |= nxt == eos_id
            out[:, T + i] = nxt
            if grammar is not None:
                state = grammar.advance(state, nxt)
            if progress is not None:
                progress(i + 1, max_new_tokens)
            if stop_at_eos and bool(done.all()):
                break  # the rest is already pad_id
    finally:
        decoder.close()
        model.train(was_training)
    return out
