"""Measuring infilling (``musicgen infilling ckpt_path=<run>``, conf/infilling.yaml). ``measure=nll``
(the default): on the test pieces, the NLL per note of each true middle given prefix and suffix
against the same model given the prefix only; ``ckpt_path=[<run>,<run>,...]`` (one run per
training seed, one data split): each measured, then pooled over seeds and pieces.
``measure=coverage``: which bar spans of the test pieces can be infilled at all (bars 1-2, 3-4
and the last two), with MidiTok's REMI encoding (a rest that reaches a bar line hides that bar's
Bar token) and with the run's, and bars 3-4 of every piece regenerated, its notes outside the
span checked against the file's. The feature itself: ``musicgen.control.infilling``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from musicgen.api import MusicModel
from musicgen.checkpoint import load_run_cache
from musicgen.control.infilling import context_ids, with_attributes
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_text
from musicgen.metrics.bootstrap import bootstrap_ci, ratio
from musicgen.metrics.statistics import seed_piece_interval, wilson
from musicgen.publish import publish, results_dir
from musicgen.runtime import hydra_main, pick_device
from musicgen.tokenizers.bars import bar_starts


@torch.no_grad()
def _middle_nll(net: nn.Module, context: list[int], middle: list[int], base: int, device) -> float:
    """Summed NLL (nats) of ``middle`` after ``context``, over the tokeniser's ids (renormalised)."""
    x = torch.tensor([context + middle[:-1]], dtype=torch.long, device=device)
    logits = net(x, last_only=False)[0, len(context) - 1 :, :base].float()
    target = torch.tensor(middle, dtype=torch.long, device=device)
    return float(F.cross_entropy(logits, target, reduction="sum"))


def measure_infilling(model: str | Path | MusicModel, n_bars: int = 4, max_pieces: int = 200,
                      device: str = "cpu", seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """On the test pieces of ``model`` (a run directory, a ``.ckpt`` or an exported directory,
    loaded on ``device``; or a ``MusicModel``) with at least ``n_bars`` + 2 bars: the NLL per note
    of the true middle (``n_bars`` bars from the piece's middle) given prefix and suffix, against
    given the prefix only (the same, cut, prefix), with 95% bootstrap intervals over pieces (of the
    ratio of sums)."""
    m = model if isinstance(model, MusicModel) else MusicModel.load(model, device)
    run, vocab, ckpt_path = m.run, m.infill_vocab, m.ckpt_path
    if vocab is None:
        raise ConfigError(f"{ckpt_path} was trained without infilling (infill=bars)")
    tok, net, device = m.tokenizer, m.net.eval(), m.device
    is_bar = bar_starts(tok, vocab.base)
    test = load_run_cache(run).splits.get("test")
    if test is None or not len(test.originals()):
        raise ConfigError(f"{ckpt_path}: its data has no test pieces")
    window = m.trained_context
    cvocab, n_out, prefixes = m.conditioning, vocab.base, {}
    if cvocab is not None:  # each piece with its own attributes, as validation scores it
        n_out = cvocab.base
        prefixes = {int(i): cvocab.prefix(a) for i, a in zip(test.originals(),
                                                              run.piece_attributes(test, test.originals()))}
        window -= len(cvocab.attributes)
    rows, kept = [], []
    for i in test.originals():
        ids = [int(t) for t in test.doc(i)[1:-1]]
        starts = np.flatnonzero(is_bar[np.asarray(ids)])
        if len(starts) < n_bars + 2:
            continue
        a = (len(starts) - n_bars) // 2
        hi = int(starts[a + n_bars]) if a + n_bars < len(starts) else len(ids)
        context, before, middle = context_ids(ids, starts, (a, a + n_bars), vocab, window + 1 - (hi - int(starts[a])))
        if len(middle) < 2 or len(context) + len(middle) > window:
            continue
        notes = sum(len(t.notes) for t in tok.decode(middle).tracks)
        if not notes:
            continue
        if prefixes:
            context, before = with_attributes(context, prefixes[int(i)], lead=1), with_attributes(before,
                                                                                                   prefixes[int(i)])
        rows.append((_middle_nll(net, context, middle, n_out, device),
                     _middle_nll(net, before, middle, n_out, device), notes))
        kept.append(int(i))
        if len(rows) >= max_pieces:
            break
    if not rows:
        raise ConfigError(f"{ckpt_path}: no test piece has {n_bars + 2} bars within the trained window")
    both, prefix, notes = (np.array(c, dtype=float) for c in zip(*rows))
    stats = np.stack([both, prefix, both - prefix, notes], axis=1)

    def per_note(col: int) -> dict[str, Any]:
        value, lo, hi = bootstrap_ci(stats, ratio(col, 3), n_boot=n_boot, seed=seed)
        return {"value": round(value, 4), "ci95": [round(lo, 4), round(hi, 4)]}

    return {"ckpt_path": str(run.ckpt_path), "pieces": len(rows), "bars": n_bars, "notes": int(notes.sum()),
            "nll_per_note_prefix_and_suffix": per_note(0), "nll_per_note_prefix_only": per_note(1),
            "difference": per_note(2),
            "per_piece": {"piece": kept, "prefix_and_suffix": [round(x, 5) for x in both],
                          "prefix_only": [round(x, 5) for x in prefix], "notes": [int(x) for x in notes]}}


#: The figures of ``measure_infilling``, each a ratio of sums over pieces: (numerator, in ``per_piece``).
FIGURES = {"nll_per_note_prefix_and_suffix": ("prefix_and_suffix",), "nll_per_note_prefix_only": ("prefix_only",),
           "difference": ("prefix_and_suffix", "prefix_only")}


def pool_seeds(results: Sequence[Mapping[str, Any]], level: float = 0.95) -> dict[str, Any]:
    """``measure_infilling``'s results of one setup trained with several seeds (each scored on the
    same test split), pooled over seeds and pieces: on the pieces every seed measured, each figure's
    ratio of sums with the interval of ``seed_piece_interval`` (its t method: it covers what another
    training seed and other pieces would give; the difference paired piece by piece within each seed)
    beside each seed's own value."""
    if len(results) < 2:
        raise ConfigError(f"pooling over seeds needs 2 runs or more, got {len(results)}")
    common = sorted(set.intersection(*(set(r["per_piece"]["piece"]) for r in results)))
    if not common:
        raise ConfigError("the runs measured no test piece in common: were they trained on one data split?")
    cols = []
    for r in results:
        at = {p: j for j, p in enumerate(r["per_piece"]["piece"])}
        idx = [at[p] for p in common]
        cols.append({k: np.asarray(v, dtype=float)[idx] for k, v in r["per_piece"].items() if k != "piece"})
    notes = np.stack([c["notes"] for c in cols])
    out: dict[str, Any] = {"runs": [r["ckpt_path"] for r in results], "seeds": len(results), "pieces": len(common),
                           "bars": results[0]["bars"], "notes_per_seed": int(notes[0].sum())}
    for name, keys in FIGURES.items():
        num = np.stack([c[keys[0]] - (c[keys[1]] if len(keys) > 1 else 0.0) for c in cols])
        ci = seed_piece_interval(num, notes, level=level)
        out[name] = {"value": round(ci["value"], 4), "ci95": [round(ci["low"], 4), round(ci["high"], 4)],
                     "per_seed": [round(float(a.sum() / n.sum()), 4) for a, n in zip(num, notes, strict=True)]}
    return out


#: The spans ``measure=coverage`` tries on every piece of ``n`` bars (0-based, half-open).
SPANS = {"1-2": lambda n: (0, 2), "3-4": lambda n: (2, 4), "last two": lambda n: (n - 2, n)}


def _notes(score: symusic.Score, outside: tuple[int, int]) -> list[tuple[int, int, int]]:
    lo, hi = outside
    return sorted((n.time, n.pitch, n.duration) for t in score.tracks for n in t.notes if not lo <= n.time < hi)


def measure_coverage(model: str | Path | MusicModel, max_pieces: int = 200, seed: int = 0,
                     max_tokens: int | None = None) -> dict[str, Any]:
    """On up to ``max_pieces`` test pieces (their source files): for each span of ``SPANS``, the
    share of pieces whose span the tokens can locate, with MidiTok's REMI encoding
    (``rests_cross_bars=True``, the encoding before issue 33) and with the run's own tokeniser, each
    refusal counted by its reason (a bar hidden inside a rest; a span outside the piece); then bars
    3-4 of every piece of at least 4 bars regenerated by the run (``MusicModel.infill``, one sample
    each), and whether every note outside the span (onset, pitch, duration) is the file's."""
    from musicgen.data.sources import document_files
    from musicgen.midi_io import read_score
    from musicgen.tokenizers import RemiTokenizer
    from musicgen.tokenizers.bars import bar_lines, bar_tables, locate_bars, uses_time_signatures

    m = model if isinstance(model, MusicModel) else MusicModel.load(model)
    if m.infill_vocab is None:
        raise ConfigError(f"{m.ckpt_path} was trained without infilling (infill=bars)")
    if not isinstance(m.tokenizer, RemiTokenizer):
        raise ConfigError(f"{m.ckpt_path}: infilling needs a REMI tokeniser")
    options = {k: v for k, v in m.tokenizer.config_dict()["options"].items() if k != "bpe_vocab_size"}
    midi_tok = RemiTokenizer(**{**options, "rests_cross_bars": True})
    encodings = {name: (tok, base, bar_tables(tok, base)) for name, (tok, base) in  # tables: once per encoding
                 {"miditok": (midi_tok, midi_tok.vocab_size), "run": (m.tokenizer, m.infill_vocab.base)}.items()}
    test = m.pieces_of("test")
    files = document_files(m.metadata.config.get("data", {}))
    names = [test.names[int(i)] for i in test.originals()[:max_pieces]]
    reasons = {"inside a rest": "hidden bar", "after the last bar line": "held last note", "": "outside the piece"}
    counts = {span: {enc: {"ok": 0, **{r: 0 for r in reasons.values()}} for enc in encodings} for span in SPANS}
    regenerated = {"pieces": 0, "kept_identical": 0, "ended": 0, "failed": []}
    time_signatures = uses_time_signatures(m.tokenizer)
    for name in names:
        score = read_score(files[name])
        score = score if isinstance(score, symusic.core.ScoreTick) else score.to("tick")
        n_bars = len(bar_lines(score, time_signatures)) - 1
        for span, bars_of in SPANS.items():
            a, b = bars_of(n_bars)
            for enc, (tok, base, tables) in encodings.items():
                if a < 0 or b > n_bars:
                    counts[span][enc]["outside the piece"] += 1
                    continue
                try:
                    locate_bars(tok, base, score, (a, b), tables)
                    counts[span][enc]["ok"] += 1
                except ConfigError as e:
                    counts[span][enc][next(r for k, r in reasons.items() if k in str(e))] += 1
        if n_bars >= 4:
            regenerated["pieces"] += 1
            try:
                piece = m.infill(score, bars=(3, 4), n=1, seed=seed, max_tokens=max_tokens)[0]
            except ConfigError as e:
                regenerated["failed"].append(f"{name}: {e}")
                continue
            span = piece.info["span_ticks"]
            regenerated["kept_identical"] += _notes(piece.score, span) == _notes(score, span)
            regenerated["ended"] += piece.ended
    table = {}
    for span, by_enc in counts.items():
        table[span] = {}
        for enc, c in by_enc.items():
            n = sum(c.values())
            lo, hi = wilson(c["hidden bar"], n)
            table[span][enc] = {**c, "pieces": n, "refused_share": round((n - c["ok"]) / n, 4) if n else None,
                                "hidden_share": round(c["hidden bar"] / n, 4) if n else None,
                                "hidden_ci95": [round(lo, 4), round(hi, 4)]}
    return {"ckpt_path": str(m.ckpt_path), "pieces": len(names), "split": "test", "spans": table,
            "encodings": {"miditok": "MidiTok's REMI (rests_cross_bars=true)",
                          "run": f"the run's tokeniser (rests_cross_bars={options.get('rests_cross_bars', True)})"},
            "regenerated_bars_3_4": regenerated}


def coverage_markdown(result: Mapping[str, Any]) -> str:
    """The coverage measurement as a Markdown page (a table of refusals, before and after)."""
    enc = result["encodings"]
    lines = ["# Infilling coverage", "",
             f"Bar spans of {result['pieces']} test pieces of `{result['ckpt_path']}`: how many the tokens can "
             f"locate, with {enc['miditok']} and with {enc['run']}. A refusal is a hidden bar (a span end "
             "inside a rest that reaches a bar line, which the encoding writes without its Bar token), a held "
             "last note (a span that starts after the last bar line the tokens write: no note starts after it) "
             "or a span outside the piece (the piece is shorter). Hidden-bar shares with 95% Wilson intervals.", "",
             "| bars | encoding | pieces | located | hidden bar | held last note | outside the piece | "
             "hidden share [95% CI] |",
             "|---|---|---|---|---|---|---|---|"]
    for span, by_enc in result["spans"].items():
        for name, row in by_enc.items():
            ci = row["hidden_ci95"]
            share = f"{row['hidden_share']:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]" if row["pieces"] else "-"
            lines.append(f"| {span} | {name} | {row['pieces']} | {row['ok']} | {row['hidden bar']} | "
                         f"{row['held last note']} | {row['outside the piece']} | {share} |")
    r = result["regenerated_bars_3_4"]
    lines += ["", f"Bars 3-4 regenerated by the run (one sample each) on the {r['pieces']} pieces of at least 4 "
              f"bars: {r['pieces'] - len(r['failed'])} regenerated, {len(r['failed'])} refused; every note outside "
              f"the span (onset, pitch, duration) equal to the file's in {r['kept_identical']}; the middle ended "
              f"within its bars in {r['ended']}.", ""]
    lines += [f"- refused: {f}" for f in r["failed"][:10]]
    return "\n".join(lines) + "\n"


def summary_line(result: Mapping[str, Any]) -> str:
    """The three NLLs per note with their intervals, and what they were measured on."""
    def show(key: str) -> str:
        r = result[key]
        return f"{r['value']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"

    over = (f"{result['seeds']} training seeds, test pieces: {result['pieces']}, notes: {result['notes_per_seed']} "
            "per seed" if "seeds" in result else f"test pieces: {result['pieces']}, notes: {result['notes']}")
    return (f"NLL per note of {result['bars']}-bar middles: given prefix and suffix "
            f"{show('nll_per_note_prefix_and_suffix')}, prefix only {show('nll_per_note_prefix_only')}, "
            f"difference {show('difference')} ({over})")


def nll_markdown(result: Mapping[str, Any]) -> str:
    """The suffix measurement (one run, or pooled over seeds) as a Markdown page."""
    title = f"# Infilling: what the bars after the gap are worth ({result['bars']}-bar middles)\n\n"
    if "seeds" not in result:
        return (f"{title}Run `{result['ckpt_path']}`, {result['bars']}-bar middles from the middle of each test "
                "piece; 95% bootstrap intervals over pieces, the difference paired (the same middles).\n\n"
                f"{summary_line(result)}.\n")
    lines = [f"{title}{result['seeds']} runs of one setup, one per training seed, each scored on the same "
             f"{result['pieces']} test pieces ({result['bars']}-bar middles from the middle of each piece, "
             f"{result['notes_per_seed']} notes). Every figure is NLL per note (nats), a ratio of sums over seeds "
             "and pieces; the 95% intervals cover what another training seed and other pieces would give "
             "(`musicgen.metrics.statistics.seed_piece_interval`, t method); the difference is paired piece by "
             "piece within each seed (negative: the bars after the gap help).", "",
             "| | pooled [95% CI] | " + " | ".join(f"`{r}`" for r in result["runs"]) + " |",
             "|---|---|" + "---|" * len(result["runs"])]
    names = {"nll_per_note_prefix_and_suffix": "given prefix and suffix", "nll_per_note_prefix_only":
             "given the prefix only", "difference": "difference (suffix minus prefix only)"}
    for key, name in names.items():
        r = result[key]
        lines.append(f"| {name} | {r['value']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                     + " | ".join(f"{v:.3f}" for v in r["per_seed"]) + " |")
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig) -> dict[str, Any]:
    """The measurement conf/infilling.yaml describes, written as JSON to ``cfg.out`` (null: the run
    directory's ``infilling.json``, or ``infilling_seeds.json`` beside the runs when ``ckpt_path``
    lists several, one per training seed); the result, with ``out`` (where it went) added."""
    if cfg.measure not in ("nll", "coverage"):
        raise ConfigError(f"measure={cfg.measure}: choose nll or coverage")
    paths = [str(p) for p in cfg.ckpt_path] if OmegaConf.is_list(cfg.ckpt_path) else [str(cfg.ckpt_path)]
    if len(paths) > 1 and cfg.measure != "nll":
        raise ConfigError(f"measure={cfg.measure} takes one run; a list of runs (one per seed) is for measure=nll")
    if cfg.publish:
        results_dir(cfg.publish_dir)  # a missing docs directory fails before the work
    device = pick_device(cfg.device)
    results, dirs = [], []
    for path in paths:
        m = MusicModel.load(path, device)
        dirs.append(m.run_dir.resolve())
        if cfg.measure == "coverage":
            result, name = measure_coverage(m, cfg.pieces, seed=cfg.seed), "infill_coverage"
        else:
            result, name = measure_infilling(m, cfg.bars, cfg.pieces, seed=cfg.seed, n_boot=cfg.n_boot), "infilling"
        out = Path(cfg.out) if cfg.out and len(paths) == 1 else m.run_dir / f"{name}.json"
        atomic_write_text(out, json.dumps(result, indent=1) + "\n")
        results.append(result)
    if len(paths) > 1:
        result = pool_seeds(results)
        out = Path(cfg.out) if cfg.out else Path(os.path.commonpath(dirs)) / "infilling_seeds.json"
        atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    if cfg.publish:
        coverage = cfg.measure == "coverage"
        page, markdown = ("infill-coverage", coverage_markdown) if coverage else ("infilling", nll_markdown)
        publish(cfg.publish_name or page, markdown(result), docs_dir=cfg.publish_dir)
    return {**result, "out": str(out)}


@hydra_main("infilling")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print(coverage_markdown(result) if cfg.measure == "coverage" else summary_line(result))
    print(f"written to {result['out']}")


if __name__ == "__main__":
    main()
