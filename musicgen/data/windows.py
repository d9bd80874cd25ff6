"""Training windows as index arithmetic over a split's token array (never materialised copies).

Two modes:
- ``seq2one`` (LSTM): ``seq_len`` tokens in, the single next token as target.
- ``causal`` (Transformer): ``seq_len`` tokens in, the same window shifted by one as targets.

Packed (default): windows run over the split's whole stream ``BOS doc EOS BOS doc EOS ...``,
as language models do; folk tunes are shorter than a window, so stopping at file boundaries
would drop or pad most of the corpus. Padded (``pack=False``): windows stay inside one
document; inputs are padded with PAD and padded targets are ``IGNORE_INDEX`` (masked loss).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID


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
            y = seq[:, L] if self.mode == "seq2one" else seq[:, 1:]
            return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(y))
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

    def target_stats(self) -> dict[str, float]:
        """Share of target positions that are padding (masked) or separators (BOS/EOS).

        Exact: counts, for every stream position, how many windows use it as a target.
        """
        n_pos = len(self.tokens)
        cover = np.zeros(n_pos + 1, dtype=np.int64)
        L = self.seq_len
        if self._n == 0:
            return {"windows": 0, "targets": 0, "pad_share": 0.0, "separator_share": 0.0}
        if self.pack:
            starts = np.arange(self._n, dtype=np.int64) * self.stride
            first = starts + (L if self.mode == "seq2one" else 1)
            last = starts + L + 1  # exclusive
        else:
            idx = np.arange(self._n, dtype=np.int64)
            doc = np.searchsorted(self._cum, idx, side="right") - 1
            k = idx - self._cum[doc]
            start, end = self.offsets[doc], self.offsets[doc + 1]
            if self.mode == "seq2one":
                first = start + 1 + k * self.stride
                last = first + 1
            else:
                first = start + k * self.stride + 1
                last = np.minimum(first + L, end)
        np.add.at(cover, first, 1)
        np.add.at(cover, last, -1)
        cover = np.cumsum(cover)[:n_pos]
        real = int(cover.sum())
        slots = self._n * (1 if self.mode == "seq2one" else L)
        sep = int(cover[(self.tokens == BOS_ID) | (self.tokens == EOS_ID)].sum())
        return {
            "windows": self._n,
            "targets": slots,
            "pad_share": (slots - real) / slots,
            "separator_share": sep / slots,
        }
