"""Evaluation logic behind ``python -m musicgen.evaluate`` and the sample-metrics callback.

What is compared, and how:

- **Likelihood**, on every piece of the evaluated split: the model, and a smoothed n-gram on the
  same tokens. Each token after BOS is scored once, within the context the model trained on
  (``scoring_plan``); a seq2one LSTM predicts each token from the window before it, as it
  trained. ``nll_per_note`` divides by the notes of the source files (the same count for every
  tokeniser), but what it compares is limited: see the README's "What the numbers compare".
- **Samples**, three rows of the same number of whole pieces: the model's samples and the
  n-gram's (both decoded with the same sampling rules, each ending at its EOS or at the length
  cap), and real pieces drawn from the split. Their figures are computed on the decoded music
  (``musicgen.metrics.features``: the same for every tokeniser) and compared with the untransposed
  training pieces; copying is measured against everything the model trained on.

Every figure is ``{"value", "low", "high"}``: its value and a 95% percentile-bootstrap interval
over pieces (``musicgen.metrics.bootstrap``).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from musicgen.conditioning import conditioned_generation, piece_attributes, with_prefixes
from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID
from musicgen.data.windows import scoring_plan
from musicgen.generation import SamplingConfig, TokenGrammar, filter_logits, generate, sample_next, sampling_grammar
from musicgen.infill import continuation_net
from musicgen.metrics import NgramLM
from musicgen.metrics.bootstrap import bootstrap_ci, kl_from, mean_of, overlap_with, ratio
from musicgen.metrics.copying import CopyIndex, melody_symbols
from musicgen.metrics.features import HISTOGRAMS, piece_features
from musicgen.metrics.music import ngram_stats
from musicgen.tokenizers.base import MusicTokenizer

REPETITION_NS = (2, 4, 8, 16)
COPY_SYMBOLS = ("pitch", "pitch_duration")


# ----------------------------------------------------------------------------- likelihood


def _batches(items: list, key: Callable, batch_size: int):
    items = sorted(items, key=key)
    for b in range(0, len(items), batch_size):
        yield items[b : b + batch_size]


@torch.inference_mode()
def doc_nll(net: nn.Module, docs: Sequence[np.ndarray], context_len: int, batch_size: int = 32,
            n_out: int | None = None, n_context: int = 0, repeat_context: bool = False) -> np.ndarray:
    """Total NLL (nats) of each document ``BOS ... EOS`` under a causal model, every token after
    BOS predicted once, windows as ``scoring_plan`` lays them out (what validation does too).
    ``n_out``: the distribution over the first ``n_out`` ids only (the tokeniser's ids, without an
    infilling run's sentinels or a conditioned run's attribute tokens). ``n_context``: the tokens
    after BOS that are context, not scored (a conditioned run's attribute prefix); with
    ``repeat_context`` (a run trained with ``conditioning.every_window``) a later window that
    starts past them reads them in place of its first ``n_context`` tokens (``PrefixScoringWindows``)."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = np.zeros(len(docs))
    windows = [(i, *w) for i, d in enumerate(docs) for w in scoring_plan(len(d), context_len)]
    for batch in _batches(windows, key=lambda w: w[2] - w[1], batch_size=batch_size):
        T = max(end - 1 - start for _, start, end, _ in batch)
        x = torch.full((len(batch), T), PAD_ID, dtype=torch.long)
        y = torch.full((len(batch), T), IGNORE_INDEX, dtype=torch.long)
        for row, (i, start, end, first) in enumerate(batch):
            d = torch.tensor(np.asarray(docs[i][start:end], dtype=np.int64))  # a copy: docs are the caller's
            if repeat_context and start > n_context:  # the prefix in place of the first context tokens
                d[:n_context] = torch.as_tensor(np.asarray(docs[i][1 : 1 + n_context], dtype=np.int64))
            x[row, : len(d) - 1] = d[:-1]
            keep = first - start - 1  # targets before this were scored by an earlier window
            y[row, keep : len(d) - 1] = d[keep + 1 :]
            y[row, : max(0, n_context - start)] = IGNORE_INDEX  # targets start + 1 .. n_context
        logits = net(x.to(device))[..., :n_out].float()  # (B, T, V)
        nll = F.cross_entropy(logits.transpose(1, 2), y.to(device), ignore_index=IGNORE_INDEX, reduction="none")
        np.add.at(out, [w[0] for w in batch], nll.sum(dim=1).cpu().numpy())
    net.train(was_training)
    return out


@torch.inference_mode()
def seq2one_nll(net: nn.Module, docs: Sequence[np.ndarray], context_len: int, batch_size: int = 256,
                n_out: int | None = None, n_context: int = 0) -> np.ndarray:
    """Total NLL of each document under a seq2one model, scored as it trained: each token after
    BOS (and after the ``n_context`` tokens that follow it) predicted from the last output over the
    (up to ``context_len``) tokens before it; ``n_out`` as in ``doc_nll``."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = np.zeros(len(docs))
    by_length = defaultdict(list)  # one batch shape per context length
    for i, d in enumerate(docs):
        for t in range(1 + n_context, len(d)):
            by_length[min(t, context_len)].append((i, t))
    for n, targets in by_length.items():
        for b in range(0, len(targets), batch_size):
            chunk = targets[b : b + batch_size]
            x = torch.as_tensor(np.stack([np.asarray(docs[i][t - n : t], dtype=np.int64) for i, t in chunk]))
            y = torch.as_tensor([int(docs[i][t]) for i, t in chunk])
            logits = net(x.to(device), last_only=True)[..., :n_out].float()  # (B, V)
            nll = F.cross_entropy(logits, y.to(device), reduction="none")
            np.add.at(out, [i for i, _ in chunk], nll.cpu().numpy())
    net.train(was_training)
    return out


def likelihood_metrics(nll: np.ndarray, tokens: Sequence[int], notes: Sequence[int], n_boot: int = 1000,
                       seed: int = 0) -> dict[str, Any]:
    """Token perplexity, nats per token and per note over documents, from each document's NLL,
    scored tokens (all but BOS) and source notes, each figure with its interval over documents."""
    stats = np.column_stack([nll, tokens, notes]).astype(np.float64)
    out = {
        "perplexity": _figure(stats, lambda m: np.exp(m[:, 0] / m[:, 1]), n_boot, seed),
        "nll_per_token": _figure(stats, ratio(0, 1), n_boot, seed),
        "nll_per_note": _figure(stats, ratio(0, 2), n_boot, seed),
    }
    out.update(pieces=len(stats), tokens=int(stats[:, 1].sum()), notes=int(stats[:, 2].sum()))
    return out


def paired_difference(nll: np.ndarray, base_nll: np.ndarray, denom: Sequence[int], n_boot: int = 1000,
                      seed: int = 0) -> dict[str, float]:
    """``sum(nll - base_nll) / sum(denom)`` over the same pieces (e.g. nats per note of one model
    minus another's), with its 95% interval: each redraw takes the same pieces for both (paired)."""
    stats = np.column_stack([np.asarray(nll) - np.asarray(base_nll), denom]).astype(np.float64)
    return _figure(stats, ratio(0, 1), n_boot, seed)


# ----------------------------------------------------------------------------- samples


def body(ids: Sequence[int]) -> list[int]:
    """The ids of one piece without its BOS and what follows its first EOS (and without PAD)."""
    out = []
    for t in map(int, ids):
        if t == EOS_ID:
            break
        if t not in (BOS_ID, PAD_ID):
            out.append(t)
    return out


@dataclass
class Reference:
    """What samples are compared with: the training pieces. ``histograms``: the feature counts
    of the untransposed training pieces (real test pieces are not transposed either);
    ``pitch_range``: the lowest and highest pitch of everything the model trained on;
    ``copies``: a ``CopyIndex`` per symbol kind over everything it trained on (copies included:
    replaying a transposed training piece is copying too)."""

    histograms: dict[str, np.ndarray]
    pitch_range: tuple[int, int]
    copies: dict[str, CopyIndex]
    pieces: int


def _spread(idx: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` of ``idx``, evenly spread."""
    return idx if len(idx) <= k else idx[np.linspace(0, len(idx) - 1, max(k, 0)).astype(int)]


def training_reference(tokenizer: MusicTokenizer, train, max_pieces: int | None = None) -> Reference:
    """The ``Reference`` of a cache's training split (``SplitTokens``), from at most
    ``max_pieces`` documents (null: all): every untransposed piece first, then evenly spread
    transposed copies (for the pitch range and the copy index)."""
    originals = train.originals()
    copies = np.setdiff1d(np.arange(train.n_docs), originals)
    if max_pieces and train.n_docs > max_pieces:  # every original first, then evenly spread copies
        originals = _spread(originals, max_pieces)
        copies = _spread(copies, max_pieces - len(originals))
    idx = np.concatenate([originals, copies]).tolist()
    originals = set(originals.tolist())
    hist = {h: np.zeros(len(bins), dtype=np.int64) for h, bins in HISTOGRAMS.items()}
    all_pitches = np.zeros(128, dtype=np.int64)
    symbols: dict[str, list[np.ndarray]] = {k: [] for k in COPY_SYMBOLS}
    used = 0
    for i in idx:
        score = tokenizer.decode(body(train.doc(i)))
        feats = piece_features(score)
        all_pitches += feats["pitch"]
        symbols["pitch"].append(melody_symbols(score))
        symbols["pitch_duration"].append(melody_symbols(score, with_duration=True))
        if i in originals:
            used += 1
            for h in hist:
                hist[h] += feats[h]
    played = np.nonzero(all_pitches)[0]
    pitch_range = (int(played.min()), int(played.max())) if len(played) else (0, 127)
    return Reference(hist, pitch_range, {k: CopyIndex(v) for k, v in symbols.items()}, used)


def piece_stats(tokenizer: MusicTokenizer, pieces: Sequence[Sequence[int]], reference: Reference,
                ended: Sequence[bool] | None = None) -> dict[str, np.ndarray]:
    """Per-piece statistics blocks ``(P, K)`` of whole pieces (ids without BOS/EOS): the feature
    histograms, note and token counts, melodic n-gram repetition, syntax errors per base token,
    copying, and whether the piece ended at its EOS (``ended``; real pieces always do)."""
    rows: dict[str, list] = defaultdict(list)
    for k, ids in enumerate(pieces):
        ids = [int(t) for t in ids]
        score = tokenizer.decode(ids)
        feats = piece_features(score)
        for h in HISTOGRAMS:
            rows[h].append(feats[h])
        melody = melody_symbols(score)
        for n in REPETITION_NS:
            unique, total = ngram_stats(torch.as_tensor(melody), n)
            rows[f"repetition_{n}"].append([total - unique, total])
        rows["notes"].append([int(feats["notes"][0])])
        rows["tokens"].append([len(ids)])
        rows["syntax"].append([tokenizer.syntax_errors(ids), tokenizer.base_length(ids)])
        rows["ended"].append([1.0 if ended is None else float(ended[k])])
        rows["copy_pitch"].append(reference.copies["pitch"].stats(melody))
        rows["copy_pitch_duration"].append(
            reference.copies["pitch_duration"].stats(melody_symbols(score, with_duration=True)))
    width = {h: len(b) for h, b in HISTOGRAMS.items()}
    empty = {k: np.zeros((0, width.get(k, 1))) for k in rows}
    return {k: np.asarray(v, dtype=np.float64).reshape(len(pieces), -1) if v else empty[k] for k, v in rows.items()}


def _figure(stats: np.ndarray, statistic, n_boot: int, seed: int) -> dict[str, float]:
    if n_boot == 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = float(np.asarray(statistic(stats.mean(axis=0, keepdims=True))).reshape(-1)[0]) if len(stats) \
                else math.nan
        return {"value": value, "low": math.nan, "high": math.nan}
    value, low, high = bootstrap_ci(stats, statistic, n_boot=n_boot, seed=seed)
    return {"value": value, "low": low, "high": high}


def _outside(lo: int, hi: int):
    """The share of notes whose pitch is outside ``lo..hi`` (statistic over pitch histograms)."""
    def statistic(rows: np.ndarray) -> np.ndarray:
        outside = rows[:, :lo].sum(axis=1) + rows[:, hi + 1 :].sum(axis=1)
        return outside / rows.sum(axis=1)
    return statistic


def sample_figures(stats: dict[str, np.ndarray], reference: Reference, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, dict[str, float]]:
    """The sample figures of one row from its ``piece_stats``, each with its interval."""
    out = {}
    for h in HISTOGRAMS:
        out[f"{h}_overlap"] = _figure(stats[h], overlap_with(reference.histograms[h]), n_boot, seed)
    out["pitch_kl"] = _figure(stats["pitch"], kl_from(reference.histograms["pitch"]), n_boot, seed)
    out["out_of_range_pitch_share"] = _figure(stats["pitch"], _outside(*reference.pitch_range), n_boot, seed)
    for n in REPETITION_NS:
        out[f"ngram_repetition_{n}"] = _figure(stats[f"repetition_{n}"], ratio(0, 1), n_boot, seed)
    for kind in COPY_SYMBOLS:
        suffix = "" if kind == "pitch" else "_with_duration"
        block = stats[f"copy_{kind}"]
        out[f"copied_8gram_share{suffix}"] = _figure(block, ratio(0, 1), n_boot, seed)
        out[f"copied_16gram_share{suffix}"] = _figure(block, ratio(2, 3), n_boot, seed)
        out[f"longest_copied_run{suffix}"] = _figure(block, mean_of(4), n_boot, seed)
    out["syntax_error_rate"] = _figure(stats["syntax"], ratio(0, 1), n_boot, seed)
    out["notes_per_piece"] = _figure(stats["notes"], mean_of(0), n_boot, seed)
    out["tokens_per_piece"] = _figure(stats["tokens"], mean_of(0), n_boot, seed)
    out["ended_at_eos"] = _figure(stats["ended"], mean_of(0), n_boot, seed)
    return out


def sample_metrics(tokenizer: MusicTokenizer, pieces: Sequence[Sequence[int]], reference: Reference,
                   ended: Sequence[bool] | None = None, n_boot: int = 0, seed: int = 0) -> dict[str, float]:
    """Plain values of the sample figures of a set of pieces (the sample-metrics callback's)."""
    figures = sample_figures(piece_stats(tokenizer, pieces, reference, ended), reference, n_boot, seed)
    return {k: v["value"] for k, v in figures.items()}


# ----------------------------------------------------------------------------- sampling


def sample_pieces(net: nn.Module, n: int, max_new_tokens: int, sampling: SamplingConfig, context_len: int,
                  seed: int, batch_size: int = 32, grammar: TokenGrammar | None = None,
                  ) -> tuple[list[list[int]], list[bool], float]:
    """``n`` pieces from the start token, each ending at its EOS or after ``max_new_tokens``:
    (ids without BOS/EOS, whether each ended at EOS, seconds spent decoding). ``grammar``: decode
    grammar-valid tokens only (with ``sampling.constrained``)."""
    device = next(net.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    pieces, ended = [], []
    t0 = time.perf_counter()
    for b in range(0, n, batch_size):
        prompt = torch.full((min(batch_size, n - b), 1), BOS_ID, dtype=torch.long, device=device)
        ids = generate(net, prompt, max_new_tokens, sampling, generator=gen, stop_at_eos=True,
                       context_len=context_len, grammar=grammar)[:, 1:].tolist()
        pieces += [body(row) for row in ids]
        ended += [EOS_ID in row for row in ids]
    return pieces, ended, time.perf_counter() - t0


def sample_ngram(
    lm: NgramLM, max_len: int, sampling: SamplingConfig, rng: np.random.Generator,
    grammar: TokenGrammar | None = None,
) -> tuple[list[int], bool]:
    """One piece from the n-gram after BOS, decoded by the same rules as the model's samples
    (the same filters and, with ``grammar`` and ``sampling.constrained``, the same grammar mask;
    greedy: the most likely token), ending at its EOS or after ``max_len`` tokens: (ids without
    BOS/EOS, whether it ended at EOS)."""
    out = [lm.bos_id]
    grammar = grammar if sampling.constrained else None
    state = grammar.feed(grammar.initial(1), torch.tensor([out])) if grammar is not None else None
    for _ in range(max_len):
        logits = torch.from_numpy(np.log(lm.prob_dist(out)))[None]  # (1, V)
        if grammar is not None:
            logits = grammar.mask(logits, state)
        context = torch.tensor([out[-sampling.repetition_window :]])  # (1, n), for the repetition penalty
        if sampling.greedy:
            nxt = int(sample_next(logits, sampling, context=context))
        else:
            p = filter_logits(logits, sampling, context).softmax(dim=-1)[0].double().numpy()
            nxt = int(rng.choice(lm.vocab_size, p=p / p.sum()))
        if grammar is not None:
            state = grammar.advance(state, torch.tensor([nxt]))
        if nxt == EOS_ID:
            return body(out), True
        out.append(nxt)
    return body(out), False


def ngram_baseline(train_docs: Sequence[np.ndarray], vocab_size: int, order: int) -> NgramLM:
    return NgramLM(order=order, vocab_size=vocab_size).fit([np.asarray(d) for d in train_docs])


# ----------------------------------------------------------------------------- the report


def evaluate_run(run, cache, cfg, sampling: SamplingConfig, device: torch.device) -> dict[str, Any]:
    """The evaluation report of a loaded run on ``cfg.split`` of its token cache (``cfg``: the
    ``evaluate`` config): likelihood of the model and of a smoothed n-gram on every piece of the
    split, and the sample figures of ``cfg.num_samples`` model samples, as many n-gram samples and
    as many real pieces of the split (fewer of each if the split has fewer pieces)."""
    t0 = time.perf_counter()
    tok, net = run.tokenizer, run.net.to(device)
    split, train = cache.splits[cfg.split], cache.splits["train"]
    originals = split.originals()[: cfg.max_pieces or None]
    docs = [split.doc(i) for i in originals]
    notes = split.notes[originals]
    train_docs = [train.doc(i) for i in range(train.n_docs)]
    context, context_desc = run.context(cfg.context_len)
    n_boot, seed = cfg.bootstrap, cfg.seed

    # likelihood: model vs smoothed n-gram on the same tokens
    seq2one = run.metadata.get("objective") == "seq2one"
    tokens = np.array([len(d) - 1 for d in docs])
    # scored over the tokeniser's ids (an infilling run's sentinels, a conditioned run's attribute
    # tokens left out); a conditioned run's pieces carry their own attributes as context, as in
    # validation, and are scored again with the all-null prefix (the same model asked nothing)
    score = seq2one_nll if seq2one else doc_nll
    vocab = run.conditioning
    n_out = vocab.base if vocab is not None else run.infill.base if run.infill is not None else None
    conditioning = None
    if vocab is None:
        nll = score(net, docs, context, n_out=n_out)
    else:
        attrs = piece_attributes(run, split, originals)
        prefix = {"n_context": len(vocab.attributes)}
        if score is doc_nll:  # a run trained with every_window reads the prefix in every window (old runs: not)
            prefix["repeat_context"] = bool(run.metadata.get("config", {}).get("conditioning", {}).get("every_window"))
        nll = score(net, with_prefixes(docs, [vocab.prefix(a) for a in attrs]), context, n_out=n_out, **prefix)
        null_nll = score(net, with_prefixes(docs, [vocab.null_prefix()] * len(docs)), context, n_out=n_out, **prefix)
        conditioning = {"attributes": list(vocab.attributes), "scored_with": "each piece's own attributes",
                        "null_prefix": likelihood_metrics(null_nll, tokens, notes, n_boot, seed)}
    model_row = likelihood_metrics(nll, tokens, notes, n_boot, seed)
    ngram = ngram_baseline(train_docs, tok.vocab_size, cfg.ngram_order)
    ngram_nll = np.array([ngram.nll(d) for d in docs])
    ngram_row = likelihood_metrics(ngram_nll, tokens, notes, n_boot, seed)

    # samples: equal numbers of model samples, n-gram samples and real pieces
    n = min(cfg.num_samples, len(docs))
    reference = training_reference(tok, train, cfg.reference_pieces)
    grammar = sampling_grammar(tok, sampling)  # None unless sampling.constrained
    # a conditioned run samples asked nothing (the all-null prefix), as an unconditioned run does
    sampler, sample_context, _ = conditioned_generation(run, None, 1.0, continuation_net(run, net), context)
    model_ids, model_ended, seconds = sample_pieces(sampler, n, cfg.max_new_tokens, sampling, sample_context, seed,
                                                    grammar=grammar)
    rng = np.random.default_rng(seed)
    drawn = [sample_ngram(ngram, cfg.max_new_tokens, sampling, rng, grammar) for _ in range(n)]
    real = rng.choice(len(docs), size=n, replace=False)
    rows = {
        "model": (model_ids, model_ended),
        "ngram": ([d[0] for d in drawn], [d[1] for d in drawn]),
        "real": ([body(docs[i]) for i in real], None),
    }
    stats = {name: piece_stats(tok, ids, reference, ended) for name, (ids, ended) in rows.items()}
    samples = {name: sample_figures(s, reference, n_boot, seed) for name, s in stats.items()}
    model_row.update(samples["model"])
    model_row["generation_tokens_per_second"] = sum(len(p) + e for p, e in zip(model_ids, model_ended)) / seconds
    ngram_row.update(samples["ngram"])

    return {
        "ckpt_path": str(run.ckpt_path),
        "version": run.metadata.get("version"),
        "tokenizer": type(tok).__name__,
        "split": cfg.split,
        "settings": {
            "num_samples": n, "max_new_tokens": cfg.max_new_tokens, "seed": seed,
            "sampling": OmegaConf.to_container(cfg.sampling), "ngram_order": cfg.ngram_order,
            "context": context_desc, "scoring": "seq2one (as trained)" if seq2one else "causal",
            "bootstrap": n_boot, "interval": "95% percentile bootstrap over pieces",
            "reference_pieces": reference.pieces, "reference_pitch_range": list(reference.pitch_range),
        },
        "model": model_row,
        **({"conditioning": conditioning} if conditioning else {}),
        "ngram": ngram_row,
        "real": samples["real"],
        "histograms": {
            "reference": {h: v.tolist() for h, v in reference.histograms.items()},
            **{name: {h: s[h].sum(axis=0).tolist() for h in HISTOGRAMS} for name, s in stats.items()},
        },
        "seconds": round(time.perf_counter() - t0, 1),
        # per-piece statistics, for pooling runs (the leaderboard); evaluate writes them to an .npz
        "_pieces": {"likelihood": {"model_nll": nll, "ngram_nll": ngram_nll, "tokens": tokens, "notes": notes},
                    **stats},
    }
