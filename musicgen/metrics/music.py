"""Evaluation metrics as ``torchmetrics.Metric`` subclasses.

Every metric keeps its state as sums (``add_state(..., dist_reduce_fx="sum")``), so
the value after syncing across DDP processes is exactly the value one process would
get from all the data. Metrics take plain tensors or lists of ids / pitches: they know
nothing of tokenisers or MIDI files (the caller decodes).

Integer counts are ``int64`` states; sums of floats (nats, ratios) are ``float32``
states, summed per batch so that precision is not a concern at evaluation sizes and
the states can live on any device (MPS has no float64).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from musicgen.constants import IGNORE_INDEX
from musicgen.metrics import features

if TYPE_CHECKING:  # pragma: no cover
    pass

N_PITCHES = 128

SequenceLike = Tensor | Sequence[int]


# ----------------------------------------------------------------------------- helpers


def _as_1d_long(seq: SequenceLike) -> Tensor:
    t = seq if isinstance(seq, Tensor) else torch.as_tensor(list(seq), dtype=torch.long)
    if t.dim() != 1:
        raise ValueError(f"expected a 1-D sequence of ids, got shape {tuple(t.shape)}")
    return t.long()


def _iter_sequences(sequences: Tensor | Iterable[SequenceLike]) -> Iterable[Tensor]:
    """Yield 1-D LongTensors from a list of sequences or a 2-D tensor (one row each)."""
    if isinstance(sequences, Tensor):
        if sequences.dim() == 1:
            raise ValueError("pass a list of sequences (or a 2-D tensor), not a single 1-D sequence")
        if sequences.dim() != 2:
            raise ValueError(f"expected a 2-D tensor of sequences, got shape {tuple(sequences.shape)}")
        yield from sequences.long()
        return
    for seq in sequences:
        yield _as_1d_long(seq)


def ngram_stats(sequence: SequenceLike, n: int) -> tuple[int, int]:
    """Return ``(unique, total)`` n-gram counts of one sequence.

    ``total = max(len - n + 1, 0)``. The number of n-grams that already occurred earlier
    in the sequence is ``total - unique`` (every distinct n-gram has exactly one first
    occurrence).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    t = _as_1d_long(sequence)
    total = t.numel() - n + 1
    if total <= 0:
        return 0, 0
    grams = t.unfold(0, n, 1)  # (total, n)
    unique = torch.unique(grams, dim=0).shape[0]
    return int(unique), int(total)


def _scalar(x: Tensor | float | int) -> Tensor:
    """Detach and sum anything that is a tensor; wrap plain numbers."""
    if isinstance(x, Tensor):
        return x.detach().sum()
    return torch.tensor(x)


# ----------------------------------------------------------------------------- likelihood


class Perplexity(Metric):
    """Token perplexity: ``exp(sum NLL / number of predicted tokens)`` in nats.

    ``update(logits, targets)`` takes logits ``(B, T, V)`` with targets ``(B, T)`` or
    logits ``(B, V)`` with targets ``(B,)``; positions whose target equals
    ``ignore_index`` are skipped. The cross-entropy is computed in float32 whatever the
    logits' dtype. ``update_nll(sum_nll, count)`` adds an already summed NLL (e.g.
    ``loss * n_tokens`` from the training step) and saves a second softmax.

    The value equals ``exp(F.cross_entropy(all logits, all targets, ignore_index))`` over
    everything seen (a micro-average over tokens, not a mean of per-batch perplexities).
    With no tokens seen, it is NaN.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 1.0

    sum_nll: Tensor
    count: Tensor

    def __init__(self, ignore_index: int = IGNORE_INDEX, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ignore_index = ignore_index
        self.add_state("sum_nll", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        logits: Tensor | None = None,
        targets: Tensor | None = None,
        ignore_index: int | None = None,
        *,
        sum_nll: Tensor | float | None = None,
        count: Tensor | int | None = None,
    ) -> None:
        """Add a batch of ``logits, targets`` (``ignore_index`` overrides the constructor's
        for this call), or a summed NLL via ``sum_nll=..., count=...`` (see ``update_nll``)."""
        if sum_nll is not None or count is not None:
            if sum_nll is None or count is None or logits is not None or targets is not None:
                raise ValueError("pass either logits and targets, or sum_nll and count")
            self.sum_nll += _scalar(sum_nll).to(self.sum_nll)
            self.count += _scalar(count).to(self.count)
            return
        if logits is None or targets is None:
            raise ValueError("pass either logits and targets, or sum_nll and count")
        ignore = self.ignore_index if ignore_index is None else ignore_index
        if logits.dim() != targets.dim() + 1 or logits.shape[:-1] != targets.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)} plus a vocabulary axis"
            )
        flat_logits = logits.detach().reshape(-1, logits.shape[-1]).float()
        flat_targets = targets.reshape(-1).long()
        nll = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore, reduction="sum")
        self.sum_nll += nll
        self.count += (flat_targets != ignore).sum()

    def update_nll(self, sum_nll: Tensor | float, count: Tensor | int) -> None:
        """Add a summed NLL (nats) over ``count`` predicted tokens.

        Goes through ``update`` so torchmetrics' bookkeeping (cached ``compute`` value,
        update count) stays right.
        """
        self.update(sum_nll=sum_nll, count=count)

    def compute(self) -> Tensor:
        return torch.exp(self.sum_nll / self.count)


class NLLPerNote(Metric):
    """Negative log-likelihood per note (nats/note): ``sum NLL of pieces / sum of their notes``.

    Why not token perplexity: a token of a pitch-string tokeniser is a whole note or
    chord, a REMI note takes several tokens (position, pitch, velocity, duration) and a
    BPE token merges a variable number of those. The same piece therefore costs a
    different number of tokens under each tokenisation, and per-token perplexities of
    models with different tokenisers are not comparable: a tokeniser that splits
    music finely gets easy, low-entropy tokens and a flattering perplexity. The total
    NLL of a piece is the code length of the whole piece, whatever the tokens, so
    dividing it by the number of notes (counted from the decoded music, the same for
    every tokeniser) puts all models on one scale.

    ``update(nll_sum, n_notes)``: ``nll_sum`` is the total NLL in nats of one or more
    pieces (a tensor is summed), ``n_notes`` their number of notes.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    nll: Tensor
    notes: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("nll", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("notes", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, nll_sum: Tensor | float, n_notes: Tensor | int) -> None:
        self.nll += _scalar(nll_sum).to(self.nll)
        self.notes += _scalar(n_notes).to(self.notes)

    def compute(self) -> Tensor:
        return self.nll / self.notes


class SyntaxErrorRate(Metric):
    """Share of generated tokens that break the tokeniser's grammar.

    ``update(n_errors, n_tokens)``; the tokeniser decides what an error is and counts
    them (e.g. a duration token with no pitch before it). Micro-average over tokens.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    errors: Tensor
    tokens: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("errors", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, n_errors: Tensor | int, n_tokens: Tensor | int) -> None:
        errors, tokens = _scalar(n_errors), _scalar(n_tokens)
        if bool(errors > tokens) or bool(errors < 0):
            raise ValueError(f"n_errors ({int(errors)}) must lie in [0, n_tokens={int(tokens)}]")
        self.errors += errors.to(self.errors)
        self.tokens += tokens.to(self.tokens)

    def compute(self) -> Tensor:
        return self.errors.float() / self.tokens


# ----------------------------------------------------------------------------- repetition


class NgramRepetition(Metric):
    """Share of a generated sequence's n-grams that already occurred earlier in it.

    For a sequence of length L there are ``max(L - n + 1, 0)`` n-grams; one is repeated
    if the same n-gram occurred at an earlier position of the same sequence (repeats
    across sequences do not count). The states are the summed repeated and total
    counts, so the value is the micro-average over sequences (long sequences weigh
    more); a sequence shorter than n contributes no n-grams. NaN if none were seen.

    Example: ``[1, 2, 1, 2, 1, 2]``, n=2: (1,2) (2,1) (1,2) (2,1) (1,2), 3 of 5 repeated.

    ``update(sequences)``: a list of 1-D LongTensors / lists of ints, or a 2-D tensor
    (one sequence per row). Strip padding and special tokens first: a run of PAD
    counts as repetition.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    repeated: Tensor
    total: Tensor

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.add_state("repeated", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sequences: Tensor | Iterable[SequenceLike]) -> None:
        repeated = total = 0
        for seq in _iter_sequences(sequences):
            unique, count = ngram_stats(seq, self.n)
            repeated += count - unique
            total += count
        self.repeated += repeated
        self.total += total

    def compute(self) -> Tensor:
        return self.repeated.float() / self.total


class CompressionRatio(Metric):
    """Unique n-grams / total n-grams of a sequence: near 1 is diverse, near 0 a loop.

    ``average="macro"`` (default): the mean of the per-sequence ratios, every piece
    weighing the same whatever its length. ``average="micro"``: sum of unique counts /
    sum of totals, which is exactly ``1 - NgramRepetition(n)`` and is offered only for
    that comparison. Both are sums of per-sequence quantities, hence exact under DDP.
    Sequences shorter than n have no n-grams and are skipped (they count in neither
    average). NaN if no sequence had an n-gram.

    ``update(sequences)`` takes the same input as :class:`NgramRepetition`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    unique: Tensor
    total: Tensor
    ratio_sum: Tensor
    n_sequences: Tensor

    def __init__(self, n: int, average: str = "macro", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if average not in ("macro", "micro"):
            raise ValueError(f"average must be 'macro' or 'micro', got {average!r}")
        self.n = n
        self.average = average
        self.add_state("unique", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("ratio_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("n_sequences", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sequences: Tensor | Iterable[SequenceLike]) -> None:
        unique_sum = total_sum = n_seq = 0
        ratio_sum = 0.0
        for seq in _iter_sequences(sequences):
            unique, total = ngram_stats(seq, self.n)
            if total == 0:
                continue
            unique_sum += unique
            total_sum += total
            ratio_sum += unique / total
            n_seq += 1
        self.unique += unique_sum
        self.total += total_sum
        self.ratio_sum += ratio_sum
        self.n_sequences += n_seq

    def compute(self) -> Tensor:
        if self.average == "micro":
            return self.unique.float() / self.total
        return self.ratio_sum / self.n_sequences


# ----------------------------------------------------------------------------- pitch


def pitch_counts(pitches: Tensor | Iterable[int] | Iterable[SequenceLike]) -> Tensor:
    """Count MIDI pitches into a 128-long int64 histogram.

    Accepts a tensor of any shape, a flat list of ints, or a list of per-piece
    sequences. Raises ``ValueError`` on a pitch outside 0..127.
    """
    if isinstance(pitches, Tensor):
        flat = pitches.reshape(-1).long()
    else:
        items = list(pitches)
        if items and not all(isinstance(p, int) or getattr(p, "ndim", None) == 0 for p in items):
            parts = [_as_1d_long(p).reshape(-1).cpu() for p in items]
            flat = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
        else:
            flat = torch.as_tensor([int(p) for p in items], dtype=torch.long)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= N_PITCHES):
        raise ValueError(f"MIDI pitches must lie in 0..127, got range {int(flat.min())}..{int(flat.max())}")
    return torch.bincount(flat, minlength=N_PITCHES)


def _normalise(counts: Tensor) -> Tensor:
    counts = counts.float()
    return counts / counts.sum()


class PitchHistogram(Metric):
    """128-bin histogram of generated MIDI pitches compared with a reference histogram.

    ``reference``: 128 pitch counts (or probabilities) of the training data, e.g.
    ``pitch_counts(training pitches)``. ``pitch_range=(lo, hi)``: the inclusive range
    counted as in range; ``None`` takes the lowest and highest pitch the reference
    has. ``update(pitches)`` accepts what :func:`pitch_counts` does.

    ``compute()`` returns a dict:

    - ``kl``: KL(generated || reference) in nats, ``sum p log(p / q)`` with p the
      generated and q the reference distribution, both smoothed as
      ``(x + eps) / (1 + 128 eps)`` (``features.kl``, which the tokeniser-independent
      histograms use too). This direction is large when the model plays
      pitches the training data (almost) never uses, and forgiving when it only covers
      part of the training range; 0 iff the histograms match.
    - ``overlap``: overlapping area ``sum min(p, q)`` of the unsmoothed normalised
      histograms, in [0, 1]; 1 iff they match (``features.overlap``).
    - ``out_of_range``: share of generated pitches outside ``pitch_range``.
    - ``histogram``: the normalised generated histogram (128 floats).

    ``higher_is_better`` is ``None``: the values point different ways (kl lower,
    overlap higher). Values are NaN before any pitch was seen.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    counts: Tensor
    reference: Tensor

    def __init__(
        self,
        reference: Tensor | Sequence[float],
        pitch_range: tuple[int, int] | None = None,
        eps: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        ref = torch.as_tensor(reference, dtype=torch.float32).detach().reshape(-1)
        if ref.numel() != N_PITCHES:
            raise ValueError(f"reference must have {N_PITCHES} bins, got {ref.numel()}")
        if bool((ref < 0).any()) or float(ref.sum()) <= 0:
            raise ValueError("reference must be non-negative with a positive sum")
        if pitch_range is None:
            nonzero = torch.nonzero(ref > 0).reshape(-1)
            pitch_range = (int(nonzero.min()), int(nonzero.max()))
        lo, hi = (int(v) for v in pitch_range)
        if not 0 <= lo <= hi < N_PITCHES:
            raise ValueError(f"pitch_range must satisfy 0 <= lo <= hi <= 127, got {pitch_range}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.pitch_range = (lo, hi)
        self.eps = eps
        # A constant, not a state: a buffer moves with the metric and is never reduced.
        self.register_buffer("reference", ref / ref.sum(), persistent=False)
        self.add_state("counts", default=torch.zeros(N_PITCHES, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pitches: Tensor | Iterable[int] | Iterable[SequenceLike]) -> None:
        self.counts += pitch_counts(pitches).to(self.counts.device)

    def compute(self) -> dict[str, Tensor]:
        p = _normalise(self.counts)
        counts, ref = self.counts.cpu().numpy(), self.reference.cpu().numpy()
        kl = torch.tensor(features.kl(counts, ref, self.eps), dtype=torch.float32, device=self.counts.device)
        overlap = torch.tensor(features.overlap(counts, ref), dtype=torch.float32, device=self.counts.device)
        lo, hi = self.pitch_range
        inside = self.counts[lo : hi + 1].sum()
        out_of_range = 1.0 - inside.float() / self.counts.sum()
        return {"kl": kl, "overlap": overlap, "out_of_range": out_of_range, "histogram": p}



__all__ = [
    "CompressionRatio",
    "NLLPerNote",
    "NgramRepetition",
    "Perplexity",
    "PitchHistogram",
    "SyntaxErrorRate",
    "ngram_stats",
    "pitch_counts",
]
