"""The evaluation report as Markdown (``evaluation.md``): every figure with its 95% interval."""

from __future__ import annotations

import math
from typing import Any

LIKELIHOOD_KEYS = ("perplexity", "nll_per_token", "nll_per_note")
TONAL_KEYS = (
    "tonic_pitch_class_overlap", "scale_consistency", "pitch_in_scale", "key_clarity", "pitch_class_entropy",
    "pitch_class_overlap",
)
SAMPLE_KEYS = (
    "interval_overlap", "duration_overlap", "ioi_overlap", "notes_per_bar_overlap",
    "pitch_overlap", "pitch_kl", "ngram_repetition_4", "syntax_error_rate", "out_of_range_pitch_share",
)
LENGTH_KEYS = ("notes_per_piece", "tokens_per_piece", "ended_at_eos", "notes_read_share")
COPY_KEYS = (
    "copied_8gram_share", "copied_16gram_share", "longest_copied_run",
    "copied_8gram_share_with_duration", "copied_16gram_share_with_duration", "longest_copied_run_with_duration",
)
COPY_INTERVAL_KEYS = (
    "copied_8gram_share_interval", "copied_16gram_share_interval", "longest_copied_run_interval",
    "copied_8gram_share_interval_with_duration", "copied_16gram_share_interval_with_duration",
    "longest_copied_run_interval_with_duration",
)


def describe_sampling(sampling: dict[str, Any]) -> str:
    if sampling.get("greedy"):
        return "greedy decoding"
    text = (f"temperature {sampling['temperature']}, top-k {sampling['top_k'] or 'off'}, "
            f"top-p {sampling['top_p'] if sampling['top_p'] < 1 else 'off'}")
    if sampling.get("min_p"):
        text += f", min-p {sampling['min_p']}"
    if sampling.get("repetition_penalty", 1.0) != 1.0:
        text += f", repetition penalty {sampling['repetition_penalty']} over {sampling['repetition_window']} tokens"
    if "constrained" in sampling:
        text += ", grammar-constrained" if sampling["constrained"] else ", unconstrained"
    return text


def fmt(figure: dict[str, float] | None, digits: int = 3) -> str:
    """``0.750 [0.712, 0.781]``; ``-`` where the row has no such figure."""
    if not figure:
        return "-"
    value = f"{figure['value']:.{digits}f}"
    if math.isnan(figure["low"]):
        return value
    return f"{value} [{figure['low']:.{digits}f}, {figure['high']:.{digits}f}]"


#: Column headers that are not the figure's name in ``evaluation.json``.
LABELS = {"pitch_class_overlap": "key distribution"}


def _table(keys: tuple[str, ...], rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["| | " + " | ".join(LABELS.get(k, k) for k in keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(fmt(row.get(k)) for k in keys) + " |" for name, row in rows]
    return lines


def separable(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two figures' intervals do not overlap."""
    return a["high"] < b["low"] or b["high"] < a["low"]


def _null_prefix_row(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cond = result.get("conditioning")
    return [("model, asked nothing (all-null prefix)", cond["null_prefix"])] if cond else []


def _conditioning_note(result: dict[str, Any]) -> list[str]:
    cond = result.get("conditioning")
    if not cond:
        return []
    return [f"A conditioned run ({', '.join(cond['attributes'])}): the model row gives each piece its own "
            "attributes as context (as validation does; the prefix is not scored), the row below it the "
            "all-null prefix; both over the tokeniser's ids, so they compare with an unconditioned run. "
            "Its samples are asked nothing.", ""]


def _quantile_row(name: str, q: dict[str, float]) -> str:
    cells = " | ".join(f"{q[k]:.0f}" for k in ("p10", "p25", "p50", "p75", "p90"))
    return f"| {name} | {cells} | {q['mean']:.1f} |"


def _length_section(result: dict[str, Any], names: dict[str, str]) -> list[str]:
    lengths = result.get("lengths")
    if not lengths:
        return []
    eos, tpn = lengths["eos_at_real_ends"], lengths["training_tokens_per_note"]
    lines = ["## Length", "",
             "Whole pieces (before the cut that matches lengths): notes per piece, percentiles and mean.", "",
             "| | p10 | p25 | p50 | p75 | p90 | mean |", "|---|---|---|---|---|---|---|"]
    lines += [_quantile_row(names[row], q) for row, q in lengths["notes_per_piece"].items() if q]
    lines += ["", f"Where the {eos['pieces']} real pieces end, the model gives EOS a probability of "
              f"{eos['p_eos']:.3f} on average (its top token at {eos['eos_is_top']:.0%} of the ends); after the "
              f"sampling filters {eos['p_eos_filtered']:.3f}, and the filters keep EOS at all at "
              f"{eos['kept_by_filters']:.0%} of the ends."]
    if "copies" in tpn and "originals" in tpn:
        lines += ["", f"Training material: {tpn['originals']:.3f} tokens per note in the untransposed pieces, "
                  f"{tpn['copies']:.3f} in their transposed copies (they differ where BPE merges learned on "
                  "the untransposed pieces fit the copies' keys less well: `tokenizer.bpe_from_copies`)."]
    return lines + [""]


def _transposed_section(result: dict[str, Any], ngram_name: str) -> list[str]:
    t = result.get("transposed")
    if not t:
        return []
    shifts = ", ".join(f"{s:+d}" for s in t["shifts"])
    return [f"Transposed {result['split']} pieces (shifts {shifts} semitones; {t['copies']} copies, "
            f"{t['skipped_copies']} skipped because a note would leave the tokeniser's pitch range, "
            f"{t['pieces_without_copies']} pieces with no copy): NLL per note, model "
            f"{fmt(t['model']['nll_per_note'])}, {ngram_name} {fmt(t['ngram']['nll_per_note'])} nats.", ""]


def _leakage_section(result: dict[str, Any]) -> list[str]:
    leak = result.get("leakage")
    if not leak:
        return []
    like, copy = leak["likelihood"], leak["copying"]
    share = leak["leaked_share"]
    lines = ["## Leakage", "",
             f"{leak['leaked']} of {leak['pieces']} {result['split']} pieces ({fmt(share)}, Wilson) have a "
             f"variant among the untransposed training pieces at interval-figure similarity >= {leak['threshold']} "
             "(looser than the split's own threshold, so this is not zero by construction; "
             "`musicgen.metrics.similarity`). The model's NLL per note and the real pieces' interval copying, on "
             "every piece and on the clean ones (no such variant):", "",
             "| pieces | n | model NLL per note | copied 8-grams (intervals) | copied 16-grams (intervals) |",
             "|---|---|---|---|---|"]
    for part, n in (("all", leak["pieces"]), ("clean", leak["clean_pieces"])):
        if like.get(part) is None:
            continue
        c = copy[part]
        lines.append(f"| {part} | {n} | {fmt(like[part]['nll_per_note'])} | "
                     f"{fmt(c['copied_8gram_share_interval'])} | {fmt(c['copied_16gram_share_interval'])} |")
    return lines + [""]


def _critic_section(result: dict[str, Any], names: dict[str, str]) -> list[str]:
    critic = result.get("critic")
    if not critic:
        return []
    lines = ["## Critic", "",
             "A classifier two-sample test: a critic (L2 logistic regression on each piece's features of its "
             "decoded notes: tonic-relative pitch-class, interval, duration, inter-onset and notes-per-bar "
             "histograms, tonal figures, interval and duration n-gram repetition) is trained to tell real "
             f"{result['split']} pieces from each row's pieces, paired and cut to matched lengths so that length "
             "alone cannot tell them apart. Its held-out AUC: 0.5 means it cannot tell them apart, 1 that it "
             "always can (the mean over 5 repeated 2-fold splits, with a conservative 95% DeLong interval). "
             "The last row, real against real (one half of the real pieces against the other), is the floor.", "",
             "| | pieces per side | critic AUC |", "|---|---|---|"]
    label = {**names, "real_vs_real": f"real against real ({result['split']} pieces, halves)"}
    lines += [f"| {label[row]} | {fig['pieces']} | {fmt(fig)} |" for row, fig in critic.items()]
    return lines + [""]


def report_markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    model, ngram, real = result["model"], result["ngram"], result["real"]
    ngram_name = f"n-gram (order {s['ngram_order']})"
    rows = [("model", model), (ngram_name, ngram), (f"real {result['split']} pieces", real)]
    verdict = ("the model is better" if model["nll_per_note"]["value"] < ngram["nll_per_note"]["value"]
               else "the model is NOT better")
    if not separable(model["nll_per_note"], ngram["nll_per_note"]):
        verdict += ", but the intervals overlap"
    lines = [
        f"# Evaluation of {result['version']} on the {result['split']} split",
        "",
        f"Checkpoint `{result['ckpt_path']}`; tokeniser {result['tokenizer']}; context {s['context']}; "
        f"scoring {s['scoring']}. Every figure is its value and a {s['interval']} "
        f"({s['bootstrap']} redraws).",
        "",
        f"## Likelihood ({model['pieces']} pieces, {model['tokens']} tokens, {model['notes']} notes)",
        "",
        *_table(LIKELIHOOD_KEYS, rows[:1] + _null_prefix_row(result) + rows[1:2]),
        "",
        *_conditioning_note(result),
        f"NLL per note: model {fmt(model['nll_per_note'])} vs {ngram_name} {fmt(ngram['nll_per_note'])} nats "
        f"({verdict}). Notes are counted once, in the source files. Token perplexity and NLL per note compare "
        "models on one tokeniser, and REMI with REMI+BPE (BPE is lossless); they do not compare pitch strings "
        "with REMI, which encode different information (pitch strings drop durations, rests and velocities).",
        "",
        *_transposed_section(result, ngram_name),
        f"## Samples ({s['num_samples']} pieces per row)",
        "",
        f"Model and n-gram samples start from the start token and end at their EOS (or after "
        f"{s['max_new_tokens']} tokens), both decoded with {describe_sampling(s['sampling'])}; the real row is "
        f"{s['num_samples']} pieces drawn from the {result['split']} split. Overlaps (1 = identical) and KL are "
        f"against the {s['reference_pieces']} untransposed training pieces, computed on the decoded notes, so "
        "they compare across tokenisers; repetition is over the melody's pitches. "
        + ("Every row pools the same number of pieces, and the same amount of music per piece: each model and "
           "n-gram sample is read up to the note count of a real piece drawn at random (`notes_read_share`: the "
           "share of the samples' notes that was read); length figures describe the whole pieces."
           if s.get("length_matching") else "Samples are read whole (this report predates length matching)."),
        "",
        "Tonality, per piece (so transposing a piece changes none of it): the tonic-relative pitch-class "
        "overlap (each piece's notes rotated to its estimated key's tonic, against the training pieces rotated "
        "alike), scale consistency (the largest share of notes in one major or natural-minor scale, as MusPy), "
        "the share in the scale of the estimated key (duration-weighted Krumhansl-Schmuckler), key clarity "
        "(that key's profile correlation) and pitch-class entropy (bits), means over pieces. Key distribution "
        "(`pitch_class_overlap`) is the absolute pitch-class overlap, which also compares which keys the pieces "
        "are in: a model trained on transposed copies is penalised by it by construction.",
        "",
        *_table(TONAL_KEYS, rows),
        "",
        *_table(SAMPLE_KEYS, rows),
        "",
        *_table(LENGTH_KEYS, rows),
        "",
        *_length_section(result, {"model": "model", "ngram": ngram_name, "real": f"real {result['split']} pieces"}),
        "## Copying",
        "",
        "Share of each piece's 8- and 16-note melodic n-grams (pitch, and pitch with duration) found in the "
        "training pieces (transposed copies included), and the longest run (notes) found inside one "
        "training piece, averaged over pieces; the real row is the reference for chance overlap.",
        "",
        *_table(COPY_KEYS, rows),
        "",
        "The same in intervals (successive pitch differences, so a transposed copy counts): an n-gram of "
        "intervals spans n + 1 notes, and the longest run is counted in intervals (notes - 1).",
        "",
        *_table(COPY_INTERVAL_KEYS, rows),
        "",
        *_leakage_section(result),
        *_critic_section(result, {"model": "model", "ngram": ngram_name}),
        "![metrics](metrics.png)",
        "",
        "![distributions](distributions.png)",
        "",
    ]
    return "\n".join(lines)
