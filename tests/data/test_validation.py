"""Validation and test windows on real tunes: every token scored once, with evaluation's contexts."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from musicgen.constants import IGNORE_INDEX
from musicgen.data import MidiDataModule
from musicgen.data.windows import ScoringWindows, TokenWindows
from musicgen.metrics.likelihood import doc_nll
from musicgen.models.transformer import MusicTransformer
from musicgen.tokenizers import RemiTokenizer


def make_dm(root, cache_dir, **kw):
    kw = {"val_frac": 0.3, "test_frac": 0.2, "mode": "causal", "seq_len": 32, "stride": 16, "batch_size": 4,
          "progress": False, **kw}
    return MidiDataModule(RemiTokenizer(), root=str(root), cache_dir=str(cache_dir), **kw)


@pytest.fixture(scope="module")
def causal_dm(real_midi_dir, tmp_path_factory):
    dm = make_dm(real_midi_dir, tmp_path_factory.mktemp("cache"), seq_len=64)
    dm.setup()
    return dm


def target_counts(loader, tokens: np.ndarray) -> np.ndarray:
    """How often each token of the split's stream is a (non-ignored) target of the loader's batches."""
    ys = torch.cat([y for _, y in loader]).numpy()
    counts = np.zeros(len(tokens), dtype=np.int64)
    ds = loader.dataset
    for (start, _, _), y in zip(ds.windows, ys):
        scored = np.flatnonzero(y != IGNORE_INDEX)
        np.add.at(counts, start + 1 + scored, 1)
        assert (y[scored] == tokens[start + 1 + scored]).all()
    return counts


def test_causal_val_and_test_score_every_token_once(causal_dm):
    dm = causal_dm
    assert isinstance(dm.datasets["train"], TokenWindows)
    for split in ("val", "test"):
        st = dm.cache.splits[split]
        assert st.n_docs > 0, split
        assert isinstance(dm.datasets[split], ScoringWindows)
        loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
        counts = target_counts(loader, np.asarray(st.tokens))
        bos = np.zeros(len(st.tokens), dtype=bool)
        bos[st.offsets[:-1]] = True
        assert (counts[~bos] == 1).all() and (counts[bos] == 0).all()
        # the tunes are longer than a window: several windows per document, yet each token once
        assert len(dm.datasets[split]) > st.n_docs


def test_seq2one_validation_uses_stride_one_whatever_the_training_stride(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache", mode="seq2one", seq_len=20, stride=4)
    dm.setup()
    n_train = len(dm.cache.splits["train"].tokens)
    assert len(dm.datasets["train"]) == (n_train - 21) // 4 + 1
    for split in ("val", "test"):
        n = len(dm.cache.splits[split].tokens)
        assert len(dm.datasets[split]) == n - 20  # every token after the first window, once
        _, y = dm.datasets[split].__getitems__(list(range(len(dm.datasets[split]))))
        assert y.tolist() == np.asarray(dm.cache.splits[split].tokens[20:], dtype=np.int64).tolist()


def test_an_empty_test_split_is_served_as_no_batches(real_midi_dir, tmp_path):
    dm = make_dm(real_midi_dir, tmp_path / "cache", test_frac=0.0)
    dm.setup()
    assert dm.cache.splits["test"].n_docs == 0 and len(dm.datasets["test"]) == 0
    assert list(dm.test_dataloader()) == []
    assert len(dm.datasets["val"]) > 0


@torch.no_grad()
def reference_nll(net, doc: np.ndarray, context_len: int) -> float:
    """Token by token: target t is predicted from ``doc[start:t]``, where ``start`` is 0 while t fits
    the first window and else the start of the full window whose last ``context_len // 2`` targets hold
    t. (The targets of one start share one forward pass: a causal model's output at t - 1 sees only
    ``doc[start:t]``.)"""
    step = max(1, context_len // 2)
    d = torch.as_tensor(doc.astype(np.int64))
    n = len(d)
    by_start: dict[int, list[int]] = {}
    for t in range(1, n):
        if n - 1 <= context_len or t <= context_len:
            start = 0
        else:
            end = min(n, context_len + 1 + math.ceil((t - context_len) / step) * step)
            start = end - 1 - context_len
        by_start.setdefault(start, []).append(t)
    total = 0.0
    for start, targets in by_start.items():
        assert targets[-1] - start <= context_len
        logp = torch.log_softmax(net(d[None, start : targets[-1]])[0].double(), dim=-1)  # predicts start+1..
        total -= sum(float(logp[t - 1 - start, d[t]]) for t in targets)
    return total


@torch.no_grad()
def test_validation_loss_is_evaluations_nll(causal_dm):
    dm = causal_dm
    torch.manual_seed(0)
    net = MusicTransformer(vocab_size=dm.tokenizer.vocab_size, n_layers=2, n_heads=2, d_model=32, d_ff=64,
                           max_seq_len=dm.seq_len, dropout=0.0).eval()
    st = dm.cache.splits["val"]
    total, n_targets = 0.0, 0
    for x, y in dm.val_dataloader():
        logits = net(x).double()
        total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"))
        n_targets += int((y != IGNORE_INDEX).sum())
    docs = [np.asarray(st.doc(i)) for i in range(st.n_docs)]
    assert n_targets == sum(len(d) - 1 for d in docs)
    reference = sum(reference_nll(net, d, dm.seq_len) for d in docs)
    assert total == pytest.approx(reference, rel=1e-5)
    # evaluation's document scoring gives the same sum: val/ppl is evaluation's perplexity
    assert total == pytest.approx(float(doc_nll(net, docs, dm.seq_len).sum()), rel=1e-5)
