"""Fill-in-the-middle training windows over bars (``PRE A SUF B MID M END``, Bavarian et al. 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX
from musicgen.control.infilling import SENTINELS, InfillVocab
from musicgen.data.windows import TokenWindows


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
