"""Prediction by Partial Match over an integer alphabet: the model of Pearce (2005, ch. 6), IDyOM.

``PPM`` counts every substring of the sequences it is given in a suffix trie (a node per
distinct substring, its count the substring's occurrences), and predicts the next symbol of a
context by interpolated smoothing (thesis Eq. 6.8): from a chosen context down to order 0 each
order's estimate is mixed in with weight ``lambda``, the rest escapes to the next shorter
context, and what is left at the end goes to the order -1 model, uniform over the alphabet.

- Context choice: PPM* (``order=None``, unbounded) takes the shortest deterministic context
  (one that has been followed by exactly one thing, the end of a sequence counting as one) when
  the longest matching context is deterministic, else the longest matching context; with an
  integer ``order`` the longest matching context no longer than it. A context "matches" when it
  has occurred before followed by something.
- Escape methods (thesis §6.2.3.2, in Bunton's form ``lambda = n / (n + t / d)``, each count
  ``c + k``): ``a`` (``lambda = n / (n + 1)``), ``b`` (``k = -1``), ``c`` (``t`` the number of
  symbol types seen in the context; the thesis's choice) and ``x`` (AX: ``t`` one more than the
  number of types seen exactly once).
- ``exclusion`` (on in the thesis): a shorter context's total ``n`` leaves out the counts of the
  symbols the context above it has seen, and the order -1 model gives each symbol
  ``1 / (|A| + 1 - t(order 0))``; the estimate is then renormalised (thesis §6.2.3.4). Off:
  plain interpolation, which sums to one by itself.
- ``update_exclusion`` (off in the thesis's C*I models): besides the full counts each substring
  keeps an update-excluded count, raised only in the longest context in which the symbol had
  been seen before (and set to one where it is new); predictions use those counts, except at a
  context PPM* chose below the longest matching one, which uses its full counts (thesis
  §6.2.3.6). Off: every order's count is raised for every symbol.

The long- and short-term models and their entropy-weighted combination (thesis §6.2.4,
Eq. 6.9) are built from this class by the caller: ``predict_sequence`` scores a sequence symbol
by symbol, each distribution computed before that symbol is counted (``learn=True``, the short
term model and the long-term model updated online) or without counting anything (``learn=False``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

END = -1  # the end of a sequence: a continuation that is no symbol of the alphabet
ESCAPES = ("a", "b", "c", "x")


class _Node:
    """A substring: what followed it (``children``, by symbol index or ``END``), how often it
    occurred (``count``) and its update-excluded count."""

    __slots__ = ("children", "count", "excluded_count")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.count = 1
        self.excluded_count = 1


class PPM:
    """A PPM model over ``alphabet`` (distinct integers); distributions follow its order."""

    def __init__(self, alphabet: Sequence[int], order: int | None = None, escape: str = "c",
                 exclusion: bool = True, update_exclusion: bool = False):
        self.alphabet = [int(a) for a in alphabet]
        self.index = {a: i for i, a in enumerate(self.alphabet)}
        if len(self.index) != len(self.alphabet) or not self.alphabet:
            raise ValueError(f"the alphabet must be distinct symbols, at least one, got {list(alphabet)}")
        if escape not in ESCAPES:
            raise ValueError(f"escape method {escape!r} unknown: one of {', '.join(ESCAPES)}")
        if order is not None and order < 0:
            raise ValueError(f"order must be >= 0 or None (unbounded), got {order}")
        self.order, self.escape = order, escape
        self.exclusion, self.update_exclusion = exclusion, update_exclusion
        self.k = -1 if escape == "b" else 0
        self.root = _Node()
        self._open = [self.root]  # the suffixes of the sequence being added, longest first

    # ------------------------------------------------------------------ counting

    def _symbol(self, s: int) -> int:
        try:
            return self.index[int(s)]
        except KeyError:
            raise ValueError(f"symbol {s} is not in the model's alphabet") from None

    def _count(self, active: list[_Node], sym: int) -> list[_Node]:
        """Count ``sym`` after every suffix in ``active`` (longest first, all present); the
        suffixes of the extended sequence, longest first."""
        out, first_seen = [], True
        for node in active:
            child = node.children.get(sym)
            if child is None:
                node.children[sym] = child = _Node()
            else:
                child.count += 1
                if first_seen:  # the longest context that had seen it: the only update-excluded raise
                    child.excluded_count += 1
                    first_seen = False
            out.append(child)
        out.append(self.root)
        return out if self.order is None else out[-(self.order + 1):]

    def update(self, symbols: int | Iterable[int]) -> PPM:
        """Extend the open sequence by one symbol or several, counting each at every order."""
        for s in [symbols] if isinstance(symbols, (int, np.integer)) else symbols:
            self._open = self._count(self._open, self._symbol(s))
        return self

    def end(self) -> PPM:
        """Close the open sequence (its end is recorded as what followed its suffixes)."""
        self._count(self._open, END)
        self._open = [self.root]
        return self

    def fit(self, sequences: Iterable[Sequence[int]]) -> PPM:
        """Add whole sequences, each closed; contexts never run from one into the next."""
        for seq in sequences:
            self.update(seq).end()
        return self

    # ------------------------------------------------------------------ prediction

    def _suffixes(self, context: Sequence[int]) -> list[_Node]:
        """The nodes of the context's suffixes that occur in the trie, longest first."""
        syms = [self._symbol(s) for s in context]
        start = 0 if self.order is None else max(len(syms) - self.order, 0)
        out = [self.root]
        for j in range(len(syms) - 1, start - 1, -1):  # shortest first: a suffix absent ends it
            node = self.root
            for s in syms[j:]:
                node = node.children.get(s)
                if node is None:
                    return out
            out.insert(0, node)
        return out

    def _distribution(self, suffixes: list[_Node]) -> np.ndarray:
        """The interpolated estimate from the suffix nodes of a context (longest first)."""
        chain = [n for n in suffixes if n.children]  # matching contexts: followed by something before
        selected = False
        if self.order is None:  # PPM*: the shortest deterministic context, if the longest is one
            i = 0
            while i < len(chain) - 1 and len(chain[i].children) == 1:  # order 0 is never chosen so
                i += 1
            if i > 1:
                chain, selected = chain[i - 1:], True
        size = len(self.alphabet)
        p = [0.0] * size
        escape, seen = 1.0, ()
        for level, node in enumerate(chain):
            full = not self.update_exclusion or (level == 0 and selected)
            raw = {s: (c.count if full else c.excluded_count) for s, c in node.children.items() if s != END}
            counts = {s: c + self.k for s, c in raw.items()}
            n = sum(c for s, c in counts.items() if not (self.exclusion and s in seen))
            if self.escape == "a":
                lam = n / (n + 1)
            else:
                t = 1 + sum(c == 1 for c in raw.values()) if self.escape == "x" else len(raw)
                lam = n / (n + t) if n + t > 0 else 0.0
            if n > 0:
                for s, c in counts.items():
                    p[s] += escape * lam * c / n
            escape *= 1.0 - lam
            seen = counts
        types0 = sum(s != END for s in self.root.children)
        uniform = 1.0 / (size + 1 - types0) if self.exclusion else 1.0 / size
        out = np.asarray(p) + escape * uniform
        return out / out.sum()

    def predict(self, context: Sequence[int] = ()) -> np.ndarray:
        """The distribution over the alphabet of the symbol that follows ``context`` (a sequence
        of alphabet symbols; empty: the first symbol of a sequence)."""
        return self._distribution(self._suffixes(context))

    def predict_sequence(self, sequence: Sequence[int], learn: bool) -> np.ndarray:
        """``(len(sequence), |A|)``: each symbol's distribution given the ones before it in the
        sequence, computed before it is counted. ``learn``: each symbol is then counted (and the
        sequence closed at the end), so the model has learnt the sequence when this returns;
        otherwise the model is left as it was."""
        if self._open != [self.root]:
            raise ValueError("a sequence is open (update without end): close it before scoring another")
        out = np.empty((len(sequence), len(self.alphabet)))
        active = [self.root]
        for i, s in enumerate(sequence):
            sym = self._symbol(s)
            out[i] = self._distribution(active)
            if learn:
                active = self._count(active, sym)
            else:
                active = [n.children[sym] for n in active if sym in n.children] + [self.root]
                if self.order is not None:
                    active = active[-(self.order + 1):]
        if learn:
            self._count(active, END)
        return out

    def log_probs(self, sequence: Sequence[int], learn: bool) -> np.ndarray:
        """Natural-log probability of each symbol of ``sequence`` (``predict_sequence``)."""
        dist = self.predict_sequence(sequence, learn)
        return np.log(dist[np.arange(len(sequence)), [self._symbol(s) for s in sequence]])


def entropy_weights(distributions: Sequence[np.ndarray], bias: float) -> np.ndarray:
    """Each model's weight in the combination (thesis Eq. 6.9): ``H_relative ** -bias``, with
    ``H_relative`` the entropy of its distribution over the log of the alphabet's size (1 for an
    alphabet of one). ``distributions``: ``M`` arrays ``(..., |A|)``; returns ``(M, ...)``."""
    d = np.stack([np.asarray(x, dtype=np.float64) for x in distributions])
    size = d.shape[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(d > 0, d * np.log2(d), 0.0).sum(-1)
    rel = h / math.log2(size) if size > 1 else np.ones_like(h)
    return np.maximum(rel, np.finfo(np.float64).tiny) ** -float(bias)


def combine(distributions: Sequence[np.ndarray], bias: float) -> np.ndarray:
    """The entropy-weighted arithmetic mean of models' distributions over one alphabet (thesis
    §6.2.4): ``sum_m w_m p_m / sum_m w_m``, ``w_m`` from ``entropy_weights``; ``bias=0`` is the
    plain mean. Works row by row on ``(..., |A|)`` arrays."""
    d = np.stack([np.asarray(x, dtype=np.float64) for x in distributions])
    w = entropy_weights(d, bias)[..., None]
    out = (w * d).sum(0) / w.sum(0)
    return out / out.sum(-1, keepdims=True)
