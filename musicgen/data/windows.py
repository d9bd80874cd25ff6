"""Training windows as index arithmetic over a split's token array (never materialised copies).

Two modes:
- ``seq2one`` (LSTM): ``seq_len`` tokens in, the single next token as target.
- ``causal`` (Transformer): ``seq_len`` tokens in, the same window shifted by one as targets.

Packed (default): windows run over the split's whole stream ``BOS doc EOS BOS doc EOS ...``,
as language models do; folk tunes are shorter than a window, so stopping at file boundaries
would drop or pad most of the corpus. Padded (``pack=False``): windows stay inside one
document; inputs are padded with PAD and padded targets are ``IGNORE_INDEX`` (masked loss).

Validation and test in causal mode use ``ScoringWindows`` instead: evaluation's plan
(``scoring_plan``), which scores every token of every document exactly once, each document on
its own, so ``val/ppl`` is the perplexity evaluation reports.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID
from musicgen.metrics.likelihood import scoring_plan

#: stream positions (and windows) ``TokenWindows.target_stats`` handles at a time
TARGET_STATS_CHUNK = 1 << 16


def n_packed_windows(n_tokens: int, seq_len: int, stride: int) -> int:
    """Windows of ``seq_len`` inputs plus one more token for the (last) target."""
    return max(0, (n_tokens - seq_len - 1) // stride + 1)


def windows_per_doc(doc_len: int, seq_len: int, stride: int, mode: str) -> int:
    """Padded mode: number of windows inside one document of ``doc_len`` tokens (BOS/EOS included)."""
    n_targets = doc_len - 1  # every token after BOS is a target
    if n_targets <= 0:
        return 0
    if mode == "seq2one":
        return (n_targets - 1) // stride + 1
    return max(0, -(-(n_targets - seq_len) // stride)) + 1  # ceil, at least one window


def check_window_args(mode: str, seq_len: int, stride: int) -> None:
    if mode not in ("seq2one", "causal"):
        raise ValueError(f"data.mode={mode!r} must be 'seq2one' or 'causal'")
    if seq_len < 1 or stride < 1:
        raise ValueError(f"data.seq_len={seq_len} and data.stride={stride} must be >= 1")




class TokenWindows(Dataset):
    """Windows over one split. ``__getitems__`` serves a whole batch with one gather."""

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        seq_len: int,
        stride: int,
        mode: str,
        pack: bool = True,
    ) -> None:
        check_window_args(mode, seq_len, stride)
        self.tokens, self.offsets = tokens, np.asarray(offsets, dtype=np.int64)
        self.seq_len, self.stride, self.mode, self.pack = seq_len, stride, mode, pack
        if pack:
            self._n = n_packed_windows(len(tokens), seq_len, stride)
        else:
            lens = np.diff(self.offsets)
            per_doc = np.array([windows_per_doc(int(n), seq_len, stride, mode) for n in lens], dtype=np.int64)
            self._cum = np.zeros(len(per_doc) + 1, dtype=np.int64)
            np.cumsum(per_doc, out=self._cum[1:])
            self._n = int(self._cum[-1])
        self._arange = np.arange(seq_len + 1, dtype=np.int64)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"window index out of range 0..{self._n - 1}")
        L = self.seq_len
        if self.pack:
            pos = (idx * self.stride)[:, None] + self._arange  # (B, L+1)
            seq = self.tokens[pos].astype(np.int64)
            x = seq[:, :L]
            # a copy, always: for one window seq[:, 1:] is contiguous, and a view of it would share
            # memory with x, so a caller masking a target (y[..] = IGNORE_INDEX) would change an input
            y = (seq[:, L] if self.mode == "seq2one" else seq[:, 1:]).copy()
            return torch.from_numpy(x), torch.from_numpy(y)
        doc = np.searchsorted(self._cum, idx, side="right") - 1
        k = idx - self._cum[doc]
        start, end = self.offsets[doc], self.offsets[doc + 1]  # document [start, end)
        if self.mode == "seq2one":
            target = start + 1 + k * self.stride  # (B,) position of the target token
            pos = target[:, None] - L + self._arange[:L]  # (B, L) left context
            valid = pos >= start[:, None]
            x = np.where(valid, self.tokens[np.maximum(pos, 0)], PAD_ID).astype(np.int64)
            y = self.tokens[target].astype(np.int64)
            return torch.from_numpy(x), torch.from_numpy(y)
        s = start + k * self.stride
        pos = s[:, None] + self._arange  # (B, L+1)
        valid = pos < end[:, None]
        seq = self.tokens[np.minimum(pos, len(self.tokens) - 1)].astype(np.int64)
        x = np.where(valid[:, :L], seq[:, :L], PAD_ID)
        y = np.where(valid[:, 1:], seq[:, 1:], IGNORE_INDEX)
        return torch.from_numpy(x), torch.from_numpy(y)

    def _target_spans(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stream positions ``[first, last)`` of the real (unpadded) targets of windows ``idx``."""
        L = self.seq_len
        if self.pack:
            starts = idx * self.stride
            return starts + (L if self.mode == "seq2one" else 1), starts + L + 1
        doc = np.searchsorted(self._cum, idx, side="right") - 1
        k = idx - self._cum[doc]
        start, end = self.offsets[doc], self.offsets[doc + 1]
        first = start + 1 + k * self.stride
        # causal: up to L targets, none past the document's end (an empty span when stride > L
        # leaves a window entirely past it)
        return first, (first + 1 if self.mode == "seq2one" else np.clip(end, first, first + L))

    def target_stats(self, chunk: int = TARGET_STATS_CHUNK) -> dict[str, float]:
        """Share of target positions that are padding (masked) or separators (BOS/EOS).

        Exact: a window's real targets are the stream positions ``[first, last)``, its separator
        targets the BOS/EOS positions among them. Memory: the BOS/EOS positions (two per document)
        and ``chunk`` stream positions or windows at a time, never a per-position or per-window array.
        """
        if self._n == 0:
            return {"windows": 0, "targets": 0, "pad_share": 0.0, "separator_share": 0.0}
        seps = np.concatenate([
            a + np.flatnonzero(np.isin(self.tokens[a : a + chunk], (BOS_ID, EOS_ID)))
            for a in range(0, len(self.tokens), chunk)
        ])
        real = sep = 0
        for i in range(0, self._n, chunk):
            first, last = self._target_spans(np.arange(i, min(i + chunk, self._n), dtype=np.int64))
            real += int((last - first).sum())
            sep += int((np.searchsorted(seps, last) - np.searchsorted(seps, first)).sum())
        slots = self._n * (1 if self.mode == "seq2one" else self.seq_len)
        return {
            "windows": self._n,
            "targets": slots,
            "pad_share": (slots - real) / slots,
            "separator_share": sep / slots,
        }


class ScoringWindows(Dataset):
    """Evaluation's windows over one split (``scoring_plan`` per document), for causal validation.

    Each document on its own (never packed with its neighbours), every token after its BOS a
    target exactly once. Inputs are right-padded with PAD to ``seq_len``; padded targets and
    targets a window only gives context for are ``IGNORE_INDEX``, so a causal model's masked loss
    over all windows is the summed NLL evaluation computes. Serves batches like ``TokenWindows``.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> None:
        check_window_args("causal", seq_len, 1)
        self.tokens, self.offsets = tokens, np.asarray(offsets, dtype=np.int64)
        self.seq_len = seq_len
        rows = [
            (doc_start + s, doc_start + e, doc_start + f)
            for doc_start, doc_end in zip(self.offsets[:-1].tolist(), self.offsets[1:].tolist())
            for s, e, f in scoring_plan(doc_end - doc_start, seq_len)
        ]
        # (n, 3) absolute positions in the split's stream: start, end, first scored target
        self.windows = np.array(rows, dtype=np.int64).reshape(-1, 3)
        self._arange = np.arange(seq_len + 1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.__getitems__([i])
        return x[0], y[0]

    def __getitems__(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"window index out of range 0..{len(self) - 1}")
        start, end, first = (self.windows[idx, k][:, None] for k in range(3))
        pos = start + self._arange  # (B, L+1): inputs, and the targets one further
        seq = self.tokens[np.minimum(pos, max(0, len(self.tokens) - 1))].astype(np.int64)
        x = np.where(pos[:, :-1] < end - 1, seq[:, :-1], PAD_ID)
        scored = (pos[:, 1:] >= first) & (pos[:, 1:] < end)
        y = np.where(scored, seq[:, 1:], IGNORE_INDEX)
        return torch.from_numpy(x), torch.from_numpy(y)

    def n_targets(self) -> int:
        """Scored targets over all windows: every token of every document but its BOS."""
        return int((self.windows[:, 1] - self.windows[:, 2]).sum())
