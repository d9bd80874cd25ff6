"""Count-based language models over token ids: the baselines a neural model must beat.

- :class:`UnigramLM`: add-one smoothed token frequencies. Its validation perplexity is
  the floor "a model that learnt only which tokens are common".
- :class:`NgramLM`: an order-N model (N = 3..5 is typical) with interpolated
  Kneser-Ney smoothing (default) or add-k smoothing that backs off to the longest
  context seen in training.

Conventions shared by both (and matching the neural models, which see BOS and predict
from the next token on):

- A sequence is a list / 1-D array / 1-D LongTensor of ids in ``[0, vocab_size)``.
- The history before the first token is ``order - 1`` copies of ``bos_id``. A leading
  ``bos_id`` in the sequence is treated as that context and not predicted; every other
  token (EOS included) is predicted from the ``order - 1`` tokens before it.
- ``nll(seq)`` returns the total negative log-likelihood in nats;
  ``score(seqs)`` returns ``(total nats, predicted tokens)`` and ``perplexity(seqs)``
  ``exp(total / count)``.

Implementation: n-grams are packed into one int64 key each (base ``vocab_size``), so
fitting is a handful of ``np.unique`` calls and scoring is vectorised
``np.searchsorted`` lookups: a few seconds for millions of training tokens. This
needs ``vocab_size ** order < 2**63`` (order 5 with up to ~6,000 tokens).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from musicgen.constants import BOS_ID

_INT64_MAX = np.iinfo(np.int64).max


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``values[keys == q]`` for each query, 0 where the key is absent (``keys`` sorted)."""
    if keys.size == 0:
        return np.zeros(queries.shape, dtype=values.dtype)
    idx = np.minimum(np.searchsorted(keys, queries), keys.size - 1)
    return np.where(keys[idx] == queries, values[idx], 0)


class _TokenLM:
    """Shared plumbing: validation, BOS handling, scoring helpers."""

    order: int = 1

    def __init__(self, vocab_size: int, bos_id: int = BOS_ID) -> None:
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        if not 0 <= bos_id < vocab_size:
            raise ValueError(f"bos_id must lie in [0, vocab_size={vocab_size}), got {bos_id}")
        self.vocab_size = int(vocab_size)
        self.bos_id = int(bos_id)
        self._fitted = False

    # -- input handling --------------------------------------------------------------

    def _as_ids(self, sequence: Any) -> np.ndarray:
        """1-D int64 ids with a leading BOS removed; validates the id range."""
        if hasattr(sequence, "detach"):  # torch.Tensor without importing torch
            sequence = sequence.detach().cpu().numpy()
        ids = np.asarray(sequence, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}")
        if ids.size and ids[0] == self.bos_id:
            ids = ids[1:]
        return ids

    def _windows(self, sequences: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Contexts ``(M, order-1)`` and targets ``(M,)`` for every predicted token."""
        width = self.order - 1
        pad = np.full(width, self.bos_id, dtype=np.int64)
        ctxs, targets = [], []
        for seq in sequences:
            ids = self._as_ids(seq)
            if ids.size == 0:
                continue
            x = np.concatenate([pad, ids])
            if width:
                ctxs.append(np.lib.stride_tricks.sliding_window_view(x[:-1], width))
            targets.append(ids)
        if not targets:
            return np.zeros((0, width), np.int64), np.zeros(0, np.int64)
        ctx = np.concatenate(ctxs) if width else np.zeros((sum(t.size for t in targets), 0), np.int64)
        return ctx, np.concatenate(targets)

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(sequences) first")

    # -- model-specific --------------------------------------------------------------

    def _probs(self, ctx: np.ndarray, targets: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- public scoring --------------------------------------------------------------

    def prob_dist(self, history: Sequence[int] = ()) -> np.ndarray:
        """``P(w | history)`` for every ``w`` in the vocabulary (sums to 1).

        ``history`` is the tokens before the one predicted, oldest first; only its
        last ``order - 1`` are used, and a shorter one is left-padded with BOS.
        """
        self._check_fitted()
        width = self.order - 1
        hist = [int(t) for t in history][-width:] if width else []
        hist = [self.bos_id] * (width - len(hist)) + hist
        ctx = np.tile(np.asarray(hist, dtype=np.int64), (self.vocab_size, 1)).reshape(self.vocab_size, width)
        return self._probs(ctx, np.arange(self.vocab_size, dtype=np.int64))

    def sample(self, length: int, rng: np.random.Generator, history: Sequence[int] = ()) -> list[int]:
        """``length`` tokens drawn one at a time from ``P(w | history)``, starting after BOS."""
        out = [self.bos_id, *[int(t) for t in history]]
        for _ in range(length):
            p = self.prob_dist(out)
            out.append(int(rng.choice(self.vocab_size, p=p / p.sum())))
        return out[1 + len(history) :]

    def log_probs(self, sequence: Any) -> np.ndarray:
        """Natural-log probability of each predicted token of one sequence."""
        self._check_fitted()
        ctx, targets = self._windows([sequence])
        return np.log(self._probs(ctx, targets))

    def nll(self, sequence: Any) -> float:
        """Total negative log-likelihood of one sequence in nats."""
        return float(-self.log_probs(sequence).sum())

    def score(self, sequences: Iterable[Any]) -> tuple[float, int]:
        """``(total NLL in nats, number of predicted tokens)`` over many sequences."""
        self._check_fitted()
        ctx, targets = self._windows(sequences)
        if targets.size == 0:
            return 0.0, 0
        return float(-np.log(self._probs(ctx, targets)).sum()), int(targets.size)

    def perplexity(self, sequences: Iterable[Any]) -> float:
        """``exp(total NLL / predicted tokens)``; NaN for no tokens."""
        total, count = self.score(sequences)
        return math.exp(total / count) if count else float("nan")


class UnigramLM(_TokenLM):
    """Add-one smoothed unigram model: ``P(w) = (c(w) + 1) / (N + V)``.

    ``fit`` counts the predicted tokens of the training sequences (a leading BOS is
    context, not counted). Its perplexity on validation data is the floor a sequence
    model has to go below.
    """

    order = 1

    def __init__(self, vocab_size: int, bos_id: int = BOS_ID) -> None:
        super().__init__(vocab_size, bos_id)
        self.counts = np.zeros(self.vocab_size, dtype=np.int64)
        self._p = np.full(self.vocab_size, 1.0 / self.vocab_size)

    def fit(self, sequences: Iterable[Any]) -> UnigramLM:
        _, targets = self._windows(sequences)
        self.counts = np.bincount(targets, minlength=self.vocab_size).astype(np.int64)
        self._p = (self.counts + 1.0) / (self.counts.sum() + self.vocab_size)
        self._fitted = True
        return self

    def _probs(self, ctx: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return self._p[targets]


class NgramLM(_TokenLM):
    """Order-N language model over token ids.

    ``smoothing="kneser_ney"`` (default): interpolated Kneser-Ney (Chen & Goodman
    1998, one discount per order). The top order uses raw counts, lower orders
    continuation counts (in how many distinct contexts a token follows its history),
    the unigram level interpolates with the uniform distribution, so every token has
    non-zero probability and each conditional distribution sums to 1. An unseen
    history passes the lower-order distribution through unchanged. ``discount=None``
    estimates ``D = n1 / (n1 + 2 n2)`` per order from counts-of-counts (0.75 when
    they are degenerate); a float fixes it for every order.

    ``smoothing="add_k"``: ``P(w | h) = (c(h, w) + k) / (c(h) + k V)`` with ``h`` the
    longest suffix of the history seen in training (the empty history at worst),
    which depends only on the history, so the distribution sums to 1.
    """

    def __init__(
        self,
        order: int = 3,
        vocab_size: int = 512,
        smoothing: str = "kneser_ney",
        discount: float | None = None,
        k: float = 0.1,
        bos_id: int = BOS_ID,
    ) -> None:
        super().__init__(vocab_size, bos_id)
        if order < 2:
            raise ValueError(f"order must be >= 2 (use UnigramLM for 1), got {order}")
        if smoothing not in ("kneser_ney", "add_k"):
            raise ValueError(f"smoothing must be 'kneser_ney' or 'add_k', got {smoothing!r}")
        if self.vocab_size**order > _INT64_MAX:
            raise ValueError(
                f"vocab_size ** order = {self.vocab_size}**{order} does not fit in int64 n-gram keys; lower order"
            )
        if discount is not None and not 0.0 < discount < 1.0:
            raise ValueError(f"discount must lie in (0, 1), got {discount}")
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        self.order = int(order)
        self.smoothing = smoothing
        self.discount = discount
        self.k = float(k)
        # Per order j = 1..N (index j): sorted j-gram keys with their numerator counts,
        # and for j >= 2 the (j-1)-gram histories with the summed counts and the number
        # of distinct continuations. Index 0 is unused.
        self._keys: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._ctx_keys: list[np.ndarray] = []
        self._ctx_den: list[np.ndarray] = []
        self._ctx_types: list[np.ndarray] = []
        self.discounts: list[float] = []

    # -- fitting ---------------------------------------------------------------------

    def fit(self, sequences: Iterable[Any]) -> NgramLM:
        ctx, targets = self._windows(sequences)
        if targets.size == 0:
            raise ValueError("NgramLM.fit got no tokens")
        V, N = self.vocab_size, self.order
        keys = np.zeros(targets.size, dtype=np.int64)
        for j in range(N - 1):
            keys = keys * V + ctx[:, j]
        keys = keys * V + targets
        top_keys, top_counts = np.unique(keys, return_counts=True)

        self._keys = [np.zeros(0, np.int64)] * (N + 1)
        self._vals = [np.zeros(0, np.int64)] * (N + 1)
        self._keys[N], self._vals[N] = top_keys, top_counts.astype(np.int64)
        for j in range(N - 1, 0, -1):
            mod = V**j
            if self.smoothing == "kneser_ney":
                # continuation count of a j-gram: distinct (j+1)-grams that end with it
                self._keys[j], cc = np.unique(self._keys[j + 1] % mod, return_counts=True)
                self._vals[j] = cc.astype(np.int64)
            else:
                # raw count of a j-gram: sum of the top-order counts that end with it
                self._keys[j], inverse = np.unique(top_keys % mod, return_inverse=True)
                self._vals[j] = np.bincount(inverse, weights=top_counts).astype(np.int64)

        self._ctx_keys = [np.zeros(0, np.int64)] * (N + 1)
        self._ctx_den = [np.zeros(0, np.int64)] * (N + 1)
        self._ctx_types = [np.zeros(0, np.int64)] * (N + 1)
        for j in range(2, N + 1):
            hist = self._keys[j] // V  # sorted, because the keys are
            ctx_keys, starts = np.unique(hist, return_index=True)
            self._ctx_keys[j] = ctx_keys
            self._ctx_den[j] = np.add.reduceat(self._vals[j], starts)
            self._ctx_types[j] = np.diff(np.append(starts, hist.size))

        self.discounts = [0.0] * (N + 1)
        for j in range(1, N + 1):
            if self.discount is not None:
                self.discounts[j] = self.discount
                continue
            n1 = int((self._vals[j] == 1).sum())
            n2 = int((self._vals[j] == 2).sum())
            self.discounts[j] = n1 / (n1 + 2 * n2) if n1 and n2 else 0.75
        self._fitted = True
        return self

    # -- scoring ---------------------------------------------------------------------

    def _probs(self, ctx: np.ndarray, targets: np.ndarray) -> np.ndarray:
        V, N = self.vocab_size, self.order
        targets = targets.astype(np.int64)
        c1 = _lookup(self._keys[1], self._vals[1], targets).astype(np.float64)
        den1 = float(self._vals[1].sum())
        if self.smoothing == "kneser_ney":
            d = self.discounts[1]
            types1 = float(self._keys[1].size)
            p = np.maximum(c1 - d, 0.0) / den1 + d * types1 / den1 / V
        else:
            p = (c1 + self.k) / (den1 + self.k * V)

        hist = np.zeros(targets.size, dtype=np.int64)  # key of the last j-1 context tokens
        for j in range(2, N + 1):
            hist = ctx[:, N - j] * V ** (j - 2) + hist
            den = _lookup(self._ctx_keys[j], self._ctx_den[j], hist).astype(np.float64)
            c = _lookup(self._keys[j], self._vals[j], hist * V + targets).astype(np.float64)
            seen = den > 0
            safe_den = np.where(seen, den, 1.0)
            if self.smoothing == "kneser_ney":
                d = self.discounts[j]
                types = _lookup(self._ctx_keys[j], self._ctx_types[j], hist).astype(np.float64)
                p_j = (np.maximum(c - d, 0.0) + d * types * p) / safe_den
            else:
                p_j = (c + self.k) / (safe_den + self.k * V)
            p = np.where(seen, p_j, p)
        return p


__all__ = ["NgramLM", "UnigramLM"]
