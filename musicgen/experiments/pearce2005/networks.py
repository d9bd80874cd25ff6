"""The networks on pitch tokens (a token per MIDI pitch after the specials): the LSTM and the
Transformer (``build_model``; given note features, ``rhythm.RhythmNet``), next-note training
(``fit``), scoring over a dataset's pitch alphabet, and short-term learning from the test melody:

- Dynamic evaluation (``dynamic_log_dists``): while a test melody is scored, after each note is
  predicted the network takes ``steps`` plain SGD steps (step size ``lr``, gradients clipped at 1)
  on the cross-entropy of the notes predicted so far, that note included; the distribution of
  note ``t`` is read before any step has seen note ``t``. The network is copied per melody, so
  every melody starts from the weights training left (the thesis's STM is emptied per melody too).
- The combination with the thesis's short-term model (``with_stm``): the network's distribution
  and PPM* C*I's short-term model of the melody so far, mixed by the entropy-weighted arithmetic
  mean of ``musicgen.metrics.ppm.combine`` (thesis Eq. 6.9), its bias chosen on fink.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from musicgen.constants import BOS_ID, PAD_ID
from musicgen.errors import ConfigError
from musicgen.metrics.ppm import PPM, combine
from musicgen.runtime import cpu_does_bf16

log = logging.getLogger(__name__)


N_SPECIAL = 4  # ids 0..3: PAD, BOS, EOS, UNK, as in every tokeniser
VOCAB = N_SPECIAL + 128  # a token per MIDI pitch after the specials


def encode(melody: list[int]) -> np.ndarray:
    return np.array([BOS_ID, *(N_SPECIAL + p for p in melody)], dtype=np.int64)


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    """The network of ``spec`` (``kind``: lstm | transformer, then its arguments); with a ``rhythm``
    entry (``{earlier: [...], current: [...]}``) wrapped in a ``RhythmNet`` that also embeds those
    note features."""
    from musicgen.models import MelodyLSTM, MusicTransformer

    spec = dict(spec)
    kind, rhythm = spec.pop("kind"), spec.pop("rhythm", None)
    if kind == "lstm":
        net = MelodyLSTM(vocab_size=VOCAB, input_mode="embedding", context_len=MAX_LEN, **spec)
    elif kind == "transformer":
        net = MusicTransformer(vocab_size=VOCAB, max_seq_len=MAX_LEN, **spec)
    else:
        raise ConfigError(f"benchmark model kind {kind!r} unknown: lstm | transformer")
    if rhythm is None:
        return net
    from musicgen.experiments.pearce2005.rhythm import RhythmNet

    return RhythmNet(net, rhythm.get("earlier", []), rhythm.get("current", []))


def _logits(model: torch.nn.Module, ids: torch.Tensor, feats: torch.Tensor | None) -> torch.Tensor:
    """The network's logits (B, T, V) for ids (B, T), with input features (B, T, slots) where it takes them."""
    return model(ids) if feats is None else model(ids, feats)


def training_precision(name: str) -> str:
    """``fp32`` or ``bf16`` (autocast) for ``fit``: ``auto`` is bf16 where the CPU does bf16 fast
    (AVX-512 BF16 or AMX, the project's default precision on a CPU), else fp32."""
    if name == "auto":
        return "bf16" if cpu_does_bf16() else "fp32"
    if name not in ("fp32", "bf16"):
        raise ConfigError(f"precision={name!r}: one of auto, fp32, bf16")
    return name


MAX_LEN = 512  # training windows: longer melodies are cut into pieces this long


def _batch(seqs: list[np.ndarray], rng: np.random.Generator, transpose: int,
           shifts: list[int] | None = None) -> torch.Tensor:
    """Right-padded (B, T) ids; each melody shifted by a random interval within +-``transpose``
    semitones that keeps it inside MIDI's range (0 leaves the pitches as they are); each shift is
    appended to ``shifts`` when given."""
    T = max(len(s) for s in seqs)
    out = np.full((len(seqs), T), PAD_ID, dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s.copy()
        shift = 0
        if transpose:
            body = s[1:] - N_SPECIAL
            lo, hi = max(-transpose, -int(body.min())), min(transpose, 127 - int(body.max()))
            shift = int(rng.integers(lo, hi + 1))
            s[1:] += shift
        if shifts is not None:
            shifts.append(shift)
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def _feature_batch(rows: list[np.ndarray], T: int) -> torch.Tensor:
    """Right-padded (B, T, slots) input features (0: none)."""
    out = np.zeros((len(rows), T, rows[0].shape[1]), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def _epoch(seqs: list[np.ndarray], batch_size: int, rng: np.random.Generator, pool: int = 16) -> list[np.ndarray]:
    """One epoch's batches in random order, each drawn from ``pool`` batches' worth of melodies
    sorted by length, so that a batch pads little (melodies range from 10 to 500 notes)."""
    order, out = rng.permutation(len(seqs)), []
    for i in range(0, len(order), batch_size * pool):
        chunk = sorted(order[i : i + batch_size * pool], key=lambda j: len(seqs[j]))
        out += [np.array(chunk[j : j + batch_size]) for j in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def fit(model: torch.nn.Module, melodies: list[list[int]], train: dict[str, Any], seed: int,
        label: str = "", features: list[np.ndarray] | None = None) -> torch.nn.Module:
    """Next-note training on whole melodies (cut into ``MAX_LEN`` windows): AdamW, linear warm-up
    then cosine decay to a tenth, gradient clipping at 1, fp32 (``train["precision"]`` bf16:
    the forward pass under bf16 autocast, the loss in fp32), padding ignored by the loss. A
    ``RhythmNet`` also gets each melody's ``features`` (``feature_ids``), as ``model.inputs`` lays
    them out (key signatures moved with a transposed copy)."""
    seqs, where = [], []
    for j, m in enumerate(melodies):
        e = encode(m)
        starts = range(0, max(len(e) - 1, 1), MAX_LEN)
        seqs += [e[i : i + MAX_LEN] for i in starts]
        where += [(j, i) for i in starts]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    steps, warmup = int(train["steps"]), int(train.get("warmup", 0))
    bf16 = training_precision(train.get("precision", "fp32")) == "bf16"
    if steps == 0:
        return model.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"], betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))))
    model.train()
    batches: list[np.ndarray] = []
    t0 = time.perf_counter()
    for step in range(steps):
        if not batches:
            batches = _epoch(seqs, int(train["batch_size"]), rng)
        chosen, shifts = batches.pop(), []
        batch = _batch([seqs[i] for i in chosen], rng, int(train.get("transpose", 0)), shifts)
        feats = None
        if features is not None:  # the features of each window's input positions
            feats = _feature_batch([model.inputs(features[where[i][0]], s)[where[i][1]: where[i][1] + len(seqs[i]) - 1]
                                    for i, s in zip(chosen, shifts)], batch.size(1) - 1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = _logits(model, batch[:, :-1], feats).float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), ignore_index=PAD_ID)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if label and (step + 1) % max(steps // 10, 1) == 0:
            log.info("%s: step %d/%d, loss %.3f, %.0f s", label, step + 1, steps, loss.item(), time.perf_counter() - t0)
    return model.eval()


@torch.no_grad()
def melody_log_probs(model: torch.nn.Module, melodies: list[list[int]], alphabet: list[int]) -> list[np.ndarray]:
    """Natural-log probability of every note of each melody, the first predicted from the start
    token alone, over the dataset's pitch alphabet (the n-gram's): the model's distribution
    renormalised over those pitches."""
    model.eval()
    ids = torch.tensor([N_SPECIAL + p for p in alphabet])
    col = {p: i for i, p in enumerate(alphabet)}
    out = []
    for m in melodies:
        e = torch.from_numpy(encode(m))[None]
        assert e.size(1) - 1 <= MAX_LEN, f"a melody of {len(m)} notes is longer than the window ({MAX_LEN})"
        logp = model(e[:, :-1])[0].float()[:, ids].log_softmax(-1)  # (n, |alphabet|)
        out.append(logp[torch.arange(len(m)), torch.tensor([col[p] for p in m])].double().numpy())
    return out


LN2 = math.log(2)


# ----------------------------------------------------------------------------- short-term learning


def dynamic_log_dists(model: torch.nn.Module, melody: list[int], alphabet: list[int], lr: float = 0.0,
                      steps: int = 0, features: np.ndarray | None = None) -> np.ndarray:
    """``(len(melody), |alphabet|)`` natural-log distributions of each note given the notes before
    it, over the alphabet (the network's distribution renormalised over it). With ``lr`` and
    ``steps`` (dynamic evaluation), after note ``t`` is predicted a copy of the model takes ``steps``
    SGD steps on the notes ``0..t``; note ``t``'s distribution is read before the first of them.
    ``model`` itself is never changed (every melody starts from the same weights). A ``RhythmNet``
    also gets the melody's ``features`` (``feature_ids``): at note ``t`` those of input positions
    ``0..t`` (``RhythmNet.inputs``: never a later note's, nor note ``t``'s beyond its ``current`` ones)."""
    f = None if features is None else torch.from_numpy(model.inputs(features))[None]  # (1, n, slots)
    ids = torch.tensor([N_SPECIAL + p for p in alphabet])
    col = {p: i for i, p in enumerate(alphabet)}
    e = torch.from_numpy(encode(melody))[None]  # (1, n + 1): BOS, then the notes
    n = len(melody)
    if n + 1 > MAX_LEN + 1:
        raise ValueError(f"a melody of {n} notes is longer than the window ({MAX_LEN})")
    model.eval()
    if not (lr and steps):
        with torch.no_grad():
            return _logits(model, e[:, :-1], f)[0].float()[:, ids].log_softmax(-1).double().numpy()
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=float(lr))
    targets = torch.tensor([col[p] for p in melody])
    out = np.empty((n, len(alphabet)))
    for t in range(n):
        for step in range(int(steps)):
            ft = None if f is None else f[:, : t + 1]
            logp = _logits(model, e[:, : t + 1], ft)[0].float()[:, ids].log_softmax(-1)  # (t + 1, |A|): notes 0..t
            if step == 0:
                out[t] = logp[-1].detach().double().numpy()  # note t, before any step has seen it
            loss = F.nll_loss(logp, targets[: t + 1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    return out


def stm_dists(melody: list[int], alphabet: list[int], ppm: dict[str, Any]) -> np.ndarray:
    """PPM*'s short-term model of the melody so far (thesis STM, emptied per melody): each note's
    distribution computed before the note is counted."""
    settings = {k: ppm[k] for k in ("escape", "exclusion", "update_exclusion")}
    return PPM(alphabet, **settings).predict_sequence(melody, learn=True)


def with_stm(log_dists: np.ndarray, stm: np.ndarray, bias: float) -> np.ndarray:
    """The network's log-distributions combined with the short-term model's distributions, note
    by note (``combine``, thesis Eq. 6.9); natural-log distributions."""
    return np.log(combine([np.exp(log_dists), stm], bias))


def true_log_probs(log_dists: np.ndarray, melody: list[int], alphabet: list[int]) -> np.ndarray:
    col = {p: i for i, p in enumerate(alphabet)}
    return log_dists[np.arange(len(melody)), [col[p] for p in melody]]


def melody_bits(log_probs: np.ndarray) -> float:
    return float(-np.sum(log_probs) / LN2 / len(log_probs))
