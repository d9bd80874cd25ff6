"""Evaluation logic behind ``python -m musicgen.evaluate`` and the sample-metrics callback.

What is compared, and how:

- **Likelihood**, on every piece of the evaluated split: the model, and a smoothed n-gram on the
  same tokens. Each token after BOS is scored once, within the context the model trained on
  (``scoring_plan``); a seq2one LSTM predicts each token from the window before it, as it
  trained. ``nll_per_note`` divides by the notes of the source files (the same count for every
  tokeniser), but what it compares is limited: see the docs' notes, "What the numbers compare".
- **Samples**, three rows of the same number of whole pieces: the model's samples and the
  n-gram's (both decoded with the same sampling rules, each ending at its EOS or at the length
  cap), and real pieces drawn from the split. Their figures are computed on the decoded music
  (``musicgen.metrics.features``: the same for every tokeniser) and compared with the untransposed
  training pieces; copying is measured against everything the model trained on.
- **Transposed test pieces** (``transpose``: a list of semitone shifts, off by default): the
  model and the n-gram also score every piece of the split at each shift, each copy made by
  decoding the piece's ids, transposing the notes and encoding again (``transposed_copies``).
  A shift that would take a note of the piece outside the tokeniser's pitch range is skipped for
  that piece (counted in the report; a piece that fits no shift has no copies). Each copy is
  scored like an original (its NLL over the original's source notes) and kept per copy, with its
  name (``<piece>@+3``), in the per-piece statistics (``transposed/...``): what tells whether the
  model learned the music or the keys it saw.
- **The critic** (``critic_rows``): a classifier trained to tell the real pieces from each
  sample row, on decoded notes cut to matched lengths; its held-out AUC (0.5: indistinguishable)
  for the model, the n-gram, and real against real (the floor).

Every figure is ``{"value", "low", "high"}``: its value and a 95% percentile-bootstrap interval
over pieces (``musicgen.metrics.bootstrap``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from musicgen.api import MusicModel
from musicgen.constants import BOS_ID, EOS_ID
from musicgen.errors import ConfigError
from musicgen.evaluation.leakage import leakage
from musicgen.generation import SamplingConfig, TokenGrammar, filter_logits, sample_next
from musicgen.metrics import NgramLM
from musicgen.metrics.critic import critic_test
from musicgen.metrics.features import HISTOGRAMS
from musicgen.metrics.likelihood import likelihood_metrics
from musicgen.metrics.samples import body, length_targets, piece_stats, sample_figures, training_reference

# ----------------------------------------------------------------------------- sampling


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


def quantiles(values: np.ndarray) -> dict[str, float]:
    """The 10th, 25th, 50th, 75th and 90th percentiles and the mean of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return {}
    return {**{f"p{q}": float(np.percentile(values, q)) for q in (10, 25, 50, 75, 90)}, "mean": float(values.mean())}


@torch.no_grad()
def eos_at_ends(m: MusicModel, docs: Sequence[np.ndarray], sampling: SamplingConfig, context: int) -> dict[str, Any]:
    """Where real pieces end, how likely the model makes EOS: its probability of EOS at each
    piece's last position (the piece's last ``context`` tokens as context, asked nothing, as the
    samples are), as the model gives it and after the sampling filters (temperature, top-k, top-p),
    the share of ends where the filters keep EOS at all, and where EOS is the model's top token.
    A model that ends pieces where real ones end shows a high probability here; filters that cut
    or shrink it make samples run long."""
    dec = m.decoder(None, 1.0, context)
    raw, filtered, top = [], [], []
    for d in docs:
        x = torch.as_tensor(np.asarray(d[:-1][-dec.context:], dtype=np.int64), device=m.device)[None]
        logits = dec.net(x, last_only=True).float()  # (1, V)
        raw.append(logits.softmax(-1)[0, EOS_ID].item())
        filtered.append(filter_logits(logits, sampling, x).softmax(-1)[0, EOS_ID].item())
        top.append(float(logits[0].argmax().item() == EOS_ID))
    raw_a, filt_a = np.array(raw), np.array(filtered)
    return {"pieces": len(docs), "p_eos": float(raw_a.mean()), "p_eos_filtered": float(filt_a.mean()),
            "kept_by_filters": float((filt_a > 0).mean()), "eos_is_top": float(np.mean(top))}


def tokens_per_note(train) -> dict[str, float]:
    """Tokens per source note of the training split's untransposed pieces and of its transposed
    copies: a BPE vocabulary learned on the untransposed pieces encodes the copies longer."""
    originals = train.originals()
    copies = np.setdiff1d(np.arange(train.n_docs), originals)
    out = {}
    for name, idx in (("originals", originals), ("copies", copies)):
        n_notes = int(train.notes[idx].sum()) if len(idx) else 0
        if n_notes:
            out[name] = sum(len(train.doc(i)) - 2 for i in idx) / n_notes
    return out


def critic_rows(tok, pieces: dict[str, list[list[int]]], seed: int) -> dict[str, dict[str, float]]:
    """The learned critic's held-out AUC (``musicgen.metrics.critic``: a classifier two-sample
    test on decoded notes, lengths matched) of the real pieces against the model's samples and
    against the n-gram's, and of one half of the real pieces against the other: the floor, what
    it reaches on pieces of one distribution (on half as many pieces, so a wider interval)."""
    scores = {name: [tok.decode(ids) for ids in ids_list] for name, ids_list in pieces.items()}
    real = scores["real"]
    half = len(real) // 2
    return {"model": critic_test(real, scores["model"], seed=seed),
            "ngram": critic_test(real, scores["ngram"], seed=seed),
            "real_vs_real": critic_test(real[:half], real[half:], seed=seed)}


def check_shifts(transpose: Any) -> list[int]:
    """``evaluate.transpose`` as a list of distinct semitone shifts (a ``ConfigError`` otherwise)."""
    values = list(transpose) if isinstance(transpose, Sequence) and not isinstance(transpose, str) else None
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or abs(v) > 127 for v in values) \
            or len(set(values)) != len(values):
        raise ConfigError(f"transpose={transpose!r}: give distinct semitone shifts (integers), e.g. "
                          "transpose=[-5,-4,-3,-2,-1,1,2,3,4,5,6]")
    return [int(v) for v in values]


def transposed_copies(tok, docs: Sequence[np.ndarray], shifts: Sequence[int]) -> dict[str, Any]:
    """Each document (``BOS ids EOS``) transposed by each shift that keeps its notes inside the
    tokeniser's pitch range: its ids decoded, the notes moved, encoded again. -> ``docs`` (the
    copies, ``BOS ids EOS``), ``piece`` (each copy's document index), ``shift``, ``skipped`` (copies
    whose shift did not fit)."""
    lo, hi = tok.pitch_range
    out: dict[str, Any] = {"docs": [], "piece": [], "shift": [], "skipped": 0}
    for k, d in enumerate(docs):
        score = tok.decode([int(t) for t in d[1:-1]])
        pitches = [n.pitch for track in score.tracks for n in track.notes]
        for s in shifts:
            if not pitches or min(pitches) + s < lo or max(pitches) + s > hi:
                out["skipped"] += 1
                continue
            ids = tok.encode(score.shift_pitch(s)) if s else [int(t) for t in d[1:-1]]
            out["docs"].append(np.array([BOS_ID, *ids, EOS_ID], dtype=np.int64))
            out["piece"].append(k)
            out["shift"].append(s)
    return out


def transposed_likelihood(m: MusicModel, ngram: NgramLM, docs: Sequence[np.ndarray], notes: np.ndarray,
                          names: Sequence[str], shifts: Sequence[int], context: int, n_boot: int,
                          seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The model's and the n-gram's likelihood of the transposed copies of ``docs`` (report row,
    per-copy statistics)."""
    if m.conditioning is not None:
        raise ConfigError("transpose: a conditioned run's pieces carry attributes (their key among them) that a "
                          "transposed copy would contradict; evaluate it without transpose")
    copies = transposed_copies(m.tokenizer, docs, shifts)
    if not copies["docs"]:
        raise ConfigError(f"transpose={list(shifts)}: no piece of the split fits the tokeniser's pitch range "
                          f"{m.tokenizer.pitch_range} at any of these shifts")
    piece = np.array(copies["piece"], dtype=np.int64)
    nll = m.nll(copies["docs"], context_len=context)
    ngram_nll = np.array([ngram.nll(d) for d in copies["docs"]])
    tokens = np.array([len(d) - 1 for d in copies["docs"]])
    row = {"shifts": list(shifts), "copies": len(piece), "skipped_copies": copies["skipped"],
           "pieces_without_copies": int(len(docs) - len(np.unique(piece))),
           "model": likelihood_metrics(nll, tokens, notes[piece], n_boot, seed),
           "ngram": likelihood_metrics(ngram_nll, tokens, notes[piece], n_boot, seed)}
    block = {"model_nll": nll, "ngram_nll": ngram_nll, "tokens": tokens, "notes": notes[piece],
             "piece": piece, "shift": np.array(copies["shift"], dtype=np.int64),
             "names": np.array([f"{names[k]}@{s:+d}" for k, s in zip(piece, copies["shift"], strict=True)])}
    return row, block


def evaluate_run(m: MusicModel, cache, cfg, sampling: SamplingConfig) -> dict[str, Any]:
    """The evaluation report of a loaded run (``MusicModel``) on ``cfg.split`` of its token cache
    (``cfg``: the ``evaluate`` config): likelihood of the model and of a smoothed n-gram on every
    piece of the split, and the sample figures of ``cfg.num_samples`` model samples, as many n-gram
    samples and as many real pieces of the split (fewer of each if the split has fewer pieces)."""
    t0 = time.perf_counter()
    tok = m.tokenizer
    split, train = cache.splits[cfg.split], cache.splits["train"]
    originals = split.originals()[: cfg.max_pieces or None]
    docs = [split.doc(i) for i in originals]
    notes = split.notes[originals]
    names = [str(split.names[i]) for i in originals]  # each piece's source name (pairs runs by piece)
    shifts = check_shifts(cfg.transpose) if cfg.get("transpose") is not None else None
    train_docs = [train.doc(i) for i in range(train.n_docs)]
    context, context_desc = m.context(cfg.context_len)
    n_boot, seed = cfg.bootstrap, cfg.seed

    # likelihood: model vs smoothed n-gram on the same tokens, over the tokeniser's ids; a
    # conditioned run's pieces carry their own attributes as context, as in validation, and are
    # scored again with the all-null prefix (the same model asked nothing)
    seq2one = m.metadata.objective == "seq2one"
    tokens = np.array([len(d) - 1 for d in docs])
    conditioning = None
    if m.conditioning is None:
        nll = m.nll(docs, context_len=context)
    else:
        nll = m.nll(docs, m.run.piece_attributes(split, originals), context_len=context)
        null_nll = m.nll(docs, None, context_len=context)
        conditioning = {"attributes": list(m.conditioning.attributes), "scored_with": "each piece's own attributes",
                        "null_prefix": likelihood_metrics(null_nll, tokens, notes, n_boot, seed)}
    model_row = likelihood_metrics(nll, tokens, notes, n_boot, seed)
    ngram = ngram_baseline(train_docs, tok.vocab_size, cfg.ngram_order)
    ngram_nll = np.array([ngram.nll(d) for d in docs])
    ngram_row = likelihood_metrics(ngram_nll, tokens, notes, n_boot, seed)
    transposed = None
    if shifts is not None:
        transposed = transposed_likelihood(m, ngram, docs, notes, names, shifts, context, n_boot, seed)

    # samples: equal numbers of model samples, n-gram samples and real pieces
    n = min(cfg.num_samples, len(docs))
    reference = training_reference(tok, train, cfg.reference_pieces)
    grammar = m.grammar(sampling)  # None unless sampling.constrained: the model's, built once, for the n-gram too
    # a conditioned run samples asked nothing (the all-null prefix), as an unconditioned run does
    t1 = time.perf_counter()
    pieces = m.generate(n, sampling=dataclasses.replace(sampling, cfg_scale=1.0), seed=seed,
                        max_new_tokens=cfg.max_new_tokens, context_len=context, batch_size=32)
    seconds = time.perf_counter() - t1
    model_ids, model_ended = [p.ids for p in pieces], [p.ended for p in pieces]
    rng = np.random.default_rng(seed)
    drawn = [sample_ngram(ngram, cfg.max_new_tokens, sampling, rng, grammar) for _ in range(n)]
    # the real pieces from a stream of their own: how many numbers the n-gram's sampling draws
    # (its tokeniser, its samples' lengths) must not decide which real pieces are scored
    real = np.random.default_rng([seed, 1]).choice(len(docs), size=n, replace=False)
    rows = {
        "model": (model_ids, model_ended),
        "ngram": ([d[0] for d in drawn], [d[1] for d in drawn]),
        "real": ([body(docs[i]) for i in real], None),
    }
    # length-matched material: each sample is read up to the length (in notes) of a real piece
    # drawn at random, so rows whose samples run long pool no more music per piece than the real row
    stats = {"real": piece_stats(tok, rows["real"][0], reference)}
    targets = length_targets(stats["real"]["notes"][:, 0], n, seed)
    for name in ("model", "ngram"):
        stats[name] = piece_stats(tok, rows[name][0], reference, rows[name][1], cut_notes=targets)
    samples = {name: sample_figures(s, reference, n_boot, seed) for name, s in stats.items()}
    model_row.update(samples["model"])
    model_row["generation_tokens_per_second"] = sum(len(p) + e for p, e in zip(model_ids, model_ended)) / seconds
    ngram_row.update(samples["ngram"])
    lengths = {"notes_per_piece": {name: quantiles(st["notes"][:, 0]) for name, st in stats.items()},
               "tokens_per_piece": {name: quantiles(st["tokens"][:, 0]) for name, st in stats.items()},
               "eos_at_real_ends": eos_at_ends(m, docs, sampling, context),
               "training_tokens_per_note": tokens_per_note(train)}

    return {
        "ckpt_path": str(m.ckpt_path),
        "version": m.version,
        "tokenizer": type(tok).__name__,
        "split": cfg.split,
        "settings": {
            "num_samples": n, "max_new_tokens": cfg.max_new_tokens, "seed": seed,
            "sampling": OmegaConf.to_container(cfg.sampling), "ngram_order": cfg.ngram_order,
            "context": context_desc, "scoring": "seq2one (as trained)" if seq2one else "causal",
            "bootstrap": n_boot, "interval": "95% percentile bootstrap over pieces",
            "length_matching": "model and n-gram samples read up to the note count of a real piece drawn at random",
            "reference_pieces": reference.pieces, "reference_pitch_range": list(reference.pitch_range),
            "critic": "L2 logistic regression on per-piece features of decoded notes, pairs cut to matched "
                      "lengths; held-out AUC over 5 repeated 2-fold splits, 95% DeLong interval (conservative)",
        },
        "model": model_row,
        **({"conditioning": conditioning} if conditioning else {}),
        "ngram": ngram_row,
        **({"transposed": transposed[0]} if transposed else {}),
        "real": samples["real"],
        "lengths": lengths,
        "critic": critic_rows(tok, {name: ids for name, (ids, _) in rows.items()}, seed),
        "leakage": leakage(tok, train, split, originals, nll, tokens, notes, n_boot, seed),
        "histograms": {
            "reference": {h: v.tolist() for h, v in reference.histograms.items()},
            **{name: {h: s[h].sum(axis=0).tolist() for h in HISTOGRAMS} for name, s in stats.items()},
        },
        "seconds": round(time.perf_counter() - t0, 1),
        # the scored pieces of each sample row (ids without BOS/EOS; real ones with their source names),
        # which evaluate writes as MIDI files beside the per-piece statistics
        "_ids": {name: ids for name, (ids, _) in rows.items()},
        "_names": {"real": [str(split.names[originals[i]]) for i in real]},
        # per-piece statistics, for pooling runs (the leaderboard); evaluate writes them to an .npz
        "_pieces": {"likelihood": {"model_nll": nll, "ngram_nll": ngram_nll, "tokens": tokens, "notes": notes,
                                   "names": np.array(names)},
                    **({"transposed": transposed[1]} if transposed else {}), **stats},
    }
