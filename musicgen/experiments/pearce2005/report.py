"""The benchmark's report in markdown (``pearce2005.md``, and the docs page): the datasets, every
row beside the thesis's figures, the reproduction, the contenders, the settings chosen on fink,
the pre-training corpus's filters and the paired differences."""

from __future__ import annotations

from typing import Any

from musicgen.experiments.pearce2005.protocol import ngram_name
from musicgen.experiments.pearce2005.thesis import DYNAMIC, FOLD_ONLY, PPM_NAMES, PUBLISHED, STM, THESIS_SEES
from musicgen.experiments.sittings import wall_time_line


def goal_report(tests: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> list[str]:
    """Each contender's goal, met or missed and by how much, with its paired difference to the PPM*
    reproduction; for a missed one, what else was tried that came below the thesis's figure on
    that dataset (exploratory rows: they see more than the contender may)."""
    lines = ["", "Goals: each contender against the thesis's figure, with its paired difference to the reproduced "
             "PPM* model (negative: the contender predicts better, melody by melody).", ""]
    for c in tests:
        where = f"{c['dataset']}, {c['question'].replace('_', ' ')} ({c['row']})"
        if not c["run"]:
            lines.append(f"- {where}: not run.")
            continue
        p = c["paired"].get(c["reference"])
        pair = (f"paired against PPM* {PPM_LABEL.get(c['reference'], c['reference'])}: {p['value']:+.3f} "
                f"[{p['low']:+.3f}, {p['high']:+.3f}]" if p else "no paired difference (the reproduction is off)")
        gap = c["figure"] - c["thesis"]
        if c["below_thesis"]:
            lines.append(f"- {where}: **met**, {c['figure']:.3f} is {-gap:.3f} bits below the thesis's "
                         f"{c['thesis']:.3f} (Holm p {c['holm_p']:.3g}); {pair}.")
            continue
        below = sorted([(r[c["dataset"]]["per_melody"], row, r.get("sees", "-")) for row, r in rows.items()
                        if row != c["row"] and c["dataset"] in r and r[c["dataset"]]["per_melody"] < c["thesis"]])
        contenders = {t["row"]: t["question"].replace("_", " ") for t in tests if t["dataset"] == c["dataset"]}
        tried = "; ".join(f"{row} {v:.3f} (" + (f"the {contenders[row]} contender; " if row in contenders else "")
                          + f"may see: {sees})" for v, row, sees in below[:4]) or "none"
        if len(below) > 4:
            tried += f"; and {len(below) - 4} more"
        how = (f"by {gap:.3f} bits" if gap >= 0 else f"below it by {-gap:.3f} bits but not significantly")
        lines.append(f"- {where}: **missed**, {how} ({c['figure']:.3f} against the thesis's {c['thesis']:.3f}, "
                     f"Holm p {c['holm_p']:.3g}); {pair}. The other rows on {c['dataset']} below "
                     f"{c['thesis']:.3f}, best first: {tried}.")
    return lines


def contender_report(tests: list[dict[str, Any]], alpha: float = 0.05) -> list[str]:
    lines = ["", "Pre-registered contenders (named in `contenders:` of `musicgen/conf/benchmark.yaml` before the "
             "reported run): only these are compared with the thesis's figures, one-sided (below it?), with Holm's "
             f"correction over those run (alpha {alpha}); every other row is exploratory. Paired: the contender minus "
             "the reproduced PPM* model melody by melody, seed-aware (`seed_piece_interval` over seeds and melodies).",
             "", "| dataset | question | row | bits per note | thesis | Holm p | below the thesis | "
             "paired: minus PPM* |",
             "|---|---|---|---|---|---|---|---|"]
    def paired(c: dict) -> str:
        return "; ".join(f"{PPM_LABEL.get(ref, ref)}: {p['value']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]"
                         if p else f"{PPM_LABEL.get(ref, ref)}: reproduction off" for ref, p in c["paired"].items())

    for c in tests:
        if not c["run"]:
            lines.append(f"| {c['dataset']} | {c['question']} | {c['row']} | not run | {c['thesis']:.3f} | - | - | - |")
        else:
            lo, hi = c["interval"]
            lines.append(f"| {c['dataset']} | {c['question']} | {c['row']} | {c['figure']:.3f} [{lo:.3f}, {hi:.3f}] | "
                         f"{c['thesis']:.3f} | {c['holm_p']:.3g} | {'yes' if c['below_thesis'] else 'no'} | "
                         f"{paired(c)} |")
        b = c.get("beside")
        if b:  # reported beside the contender, not tested
            figure = f"{b['figure']:.3f} [{b['interval'][0]:.3f}, {b['interval'][1]:.3f}]" if b["run"] else "not run"
            lines.append(f"| {c['dataset']} | {c['question']}: beside it (exploratory, not tested) | {b['row']} | "
                         f"{figure} | {c['thesis']:.3f} | - | - | {paired(b) if b['run'] else '-'} |")
    return lines


PPM_LABEL = {"combined": "combined", "ltm": "LTM", "ltm_plus": "LTM+", "stm": "STM"}


def report_markdown(result: dict[str, Any]) -> str:
    lines = ["# Pearce (2005): pitch prediction in monophonic melodies", ""]
    if result.get("wall_time"):
        lines += [wall_time_line(result["wall_time"]), ""]
    lines += ["| dataset | melodies | events | distinct pitches | thesis (Table 4.1) | within 2% |",
             "|---|---|---|---|---|---|"]
    for d in result["datasets"]:
        lines.append(f"| {d['dataset']} | {d['ours'][0]} | {d['ours'][1]} | {d['ours'][2]} | "
                     f"{' / '.join(map(str, d['thesis']))} | {'yes' if all(d['within_2_percent']) else 'NO'} |")
    ch, ki = result["ngram"]["chorales"], result["ngram"]["kinder"]

    def cell(r):
        lo, hi = r["per_melody_interval"]
        seeds = f", {r['seeds']} seeds" if r.get("seeds", 1) > 1 else ""
        return f"{r['per_melody']:.3f} [{lo:.3f}, {hi:.3f}] (per note {r['per_note']:.3f}{seeds})"

    lines += ["", "Bits per note of each note's pitch, 10-fold cross-validation, from the pitches alone (the rhythm "
              "rows: also the note features the first column names); ours: the mean over melodies of the "
              "per-melody cross-entropy (thesis Eq. 6.6) with a 95% bootstrap interval over melodies; a network "
              "row: the mean over its training seeds and melodies, with the two-level interval over seeds and "
              "melodies (`seed_piece_interval`)."]
    if result.get("ppm"):
        lines += ppm_report(result["ppm"], cell)
    tests = (result.get("contenders") or {}).get("tests", [])
    role = {}
    for t in tests:
        role.setdefault(t["row"], []).append(t["dataset"])

    def label(row):
        return f"contender ({', '.join(role[row])})" if row in role else "exploratory"

    lines += ["", "| may see | model | role | chorales (BWV 253-438) | kinder |", "|---|---|---|---|---|",
              f"| {FOLD_ONLY} | musicgen {ngram_name(result['order'])} | exploratory | {cell(ch)} | {cell(ki)} |"]
    lines += [f"| {r['sees']} | {row} | exploratory | {cell(r['chorales'])} | {cell(r['kinder'])} |"
              for row, r in (result.get("ppm_pretrained") or {}).get("rows", {}).items()]
    neural = result.get("neural")
    if neural:
        lines += [f"| {r.get('sees', '-')} | musicgen {row} | {label(row)} | "
                  f"{cell(r['chorales']) if 'chorales' in r else '-'} | {cell(r['kinder']) if 'kinder' in r else '-'} |"
                  for row, r in neural["rows"].items()]
    lines += [f"| {sees} | thesis: {name} | published | {c:.3f} | {'-' if k is None else f'{k:.3f}'} |"
              for sees, (name, c, k) in zip(THESIS_SEES, PUBLISHED)]
    rhythm = [(row, r["thesis"]) for row, r in (neural or {}).get("rows", {}).items() if "thesis" in r]
    if rhythm:
        lines += ["", "The rhythm rows (`rhythm:` in the config; `musicgen.experiments.pearce2005.rhythm`) predict the "
                  "same pitches over the same alphabet and folds; each note's duration, inter-onset interval, position "
                  "in the bar and fermata reach the network as embeddings summed with the pitch embedding. \"Rhythm of "
                  "earlier notes\": those of the notes before the one predicted (the strict variant); \"rhythm of the "
                  "current note\": also that note's position in the bar, duration and inter-onset interval (the "
                  "like-for-like variant: IDyOM's linked viewpoints see the onset and duration of the note whose "
                  "pitch they predict), never its pitch. A row that sees the key signature or the mode compares with "
                  "the thesis's 1.911 (Table 9.8), the others with 1.953 (Table 7.3): "
                  + "; ".join(f"{row}: {t:.3f}" for row, t in rhythm if row.endswith(f"{DYNAMIC} + {STM}")) + "."]
    if tests:
        lines += contender_report(tests)
        lines += goal_report(tests, (neural or {}).get("rows", {}))
    if neural:
        c = neural["pretraining_corpus"]
        if c:
            lines += ["", f"Pre-training corpus: {c['melodies']:,} melodies, {c['notes']:,} notes, from the "
                      f"{c['files']:,} exported folk and chorale files less {c['left_out_by_name']:,} left out by name "
                      f"(kinder, fink, BWV 253-438) and {c['duplicates_removed']:,} duplicates of a benchmark melody "
                      "(same contour, or half the contour 8-grams of either shared)."]
        lines += ["", "Settings chosen by cross-validation on fink, never on kinder or the chorales (bits per note, "
                  "mean over melodies; one setting at a time in the grid's order, the others at their values so far):",
                  ""]
        for name, t in neural["tuning"].items():
            fold = t["fold_only"]
            chosen = fold["chosen"]
            lines.append(f"- {name}, chosen on {fold['date']}: model {chosen['model']}, training {chosen['training']}, "
                         f"dynamic evaluation {chosen['dynamic']}, combination bias {chosen['bias']}")
            for step in fold["trace"]:
                scores = ", ".join(f"{v}: {s:.3f}" for v, s in step["scores"])
                lines.append(f"    - {step['setting']}: {scores} -> {step['chose']}")
            for variant, rec in t.get("rhythm", {}).items():
                picked = rec["chosen"]
                lines.append(f"- {name} with rhythm ({variant}: {picked['model']['rhythm']}), chosen on {rec['date']} "
                             f"from the settings above: training {picked['training']}, dynamic evaluation "
                             f"{picked['dynamic']}, combination bias {picked['bias']}")
                for step in rec["trace"]:
                    scores = ", ".join(f"{v}: {s:.3f}" for v, s in step["scores"])
                    lines.append(f"    - {step['setting']}: {scores} -> {step['chose']}")
            if "fine_tuning" in t:
                d = t["fine_tuning"]
                grid = ", ".join(f"{ {k: v for k, v in r.items() if k != 'per_melody'} } {r['per_melody']:.3f}"
                                 for r in d["grid"])
                keys = {k: d["chosen"][k] for k in d["grid"][0] if k != "per_melody"}
                lines.append(f"- {name}, fine-tuning: chose {keys} from {grid}")
    if result.get("pretraining_filters"):
        lines += pretraining_report(result["pretraining_filters"], result.get("ppm_pretrained"),
                                    result.get("paired_pretrained"))
    if result.get("paired"):
        lines += paired_report(result["paired"], result["ppm"]["settings"]["tolerance"])
    lines.append("")
    return "\n".join(lines)


def ppm_report(ppm: dict[str, Any], cell) -> list[str]:
    """The reproduction's table: each PPM* row beside the thesis's figure (Table 6.6)."""
    s, tol = ppm["settings"], ppm["settings"]["tolerance"]
    on = {True: "on", False: "off"}
    lines = ["", "The thesis's models reproduced on the same folds (`musicgen.metrics.ppm`: escape "
             f"{s['escape'].upper()}, unbounded order (PPM*), interpolated smoothing, exclusion {on[s['exclusion']]}, "
             f"update exclusion {on[s['update_exclusion']]}; combination bias {s['bias']}); a row holds when it is "
             f"within {tol} bits of Table 6.6:", "",
             "| model | chorales | thesis | holds | kinder | thesis | holds |", "|---|---|---|---|---|---|---|"]
    extra = s.get("extra_stm") or {}
    tag = f"{str(extra.get('escape', s['escape'])).upper()}*{'U' if extra.get('update_exclusion') else ''}I"
    for row in ppm["rows"]["chorales"]:
        by_ds = (ppm["rows"]["chorales"][row], ppm["rows"]["kinder"][row])
        name = PPM_NAMES[row].format(tag)
        check = ppm["reproduction"].get(row)
        cells = []
        for ds, r in zip(("chorales", "kinder"), by_ds):
            if check:
                c = check[ds]
                verdict = "yes" if c["holds"] else "NO"
                cells += [cell(r), f"{c['thesis']:.3f}", f"{verdict} ({c['ours'] - c['thesis']:+.3f})"]
            else:
                cells += [cell(r), "-", "-"]
        lines.append(f"| PPM* {name} | {' | '.join(cells)} |")
    return lines


def paired_report(paired: dict[str, dict[str, dict | None]], tolerance: float) -> list[str]:
    """Each row's paired difference from the reproduced combined and long-term models."""
    def fig(d):
        if d is None:
            return f"reproduction off by more than {tolerance}"
        return f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    lines = ["", "Paired over melodies: each row minus the reproduced PPM* model on the same melodies (bits per "
             "note, mean over melodies of the per-melody difference; 95% paired BCa interval over melodies, "
             "`musicgen.metrics.statistics.paired_difference`; for a network row, the mean over its training seeds "
             "too, with the two-level interval over seeds and melodies, `seed_piece_interval`); negative: the row "
             "predicts better. The long-term "
             "model is the reference of the rows trained on the training folds alone.", "",
             "| model | chorales: minus combined | chorales: minus LTM | kinder: minus combined | kinder: minus LTM |",
             "|---|---|---|---|---|"]
    for name, by_ds in paired.items():
        cells = [fig(by_ds[ds][ref]) if ref in by_ds.get(ds, {}) else "-" for ds in ("chorales", "kinder")
                 for ref in ("combined", "ltm")]
        lines.append(f"| {'' if name.startswith('PPM*') else 'musicgen '}{name} | {' | '.join(cells)} |")
    return lines


def pretraining_report(filters: dict[str, Any], ppm_pre: dict | None, paired: dict | None) -> list[str]:
    """What each near-duplicate filter removed from the pre-training corpus, the variants' corpora,
    and the pre-trained rows paired with the pre-trained PPM* and with the main corpus's rows."""
    sim = "; ".join(f"at {t}: {c['alone']:,} ({c['beyond_8gram']:,} of them kept by the 8-gram filter, which "
                    f"removes {c['8gram_only']:,} this one keeps)" for t, c in filters["similarity"].items())
    lines = ["", f"Near-duplicate filters on the {filters['melodies_read']:,} melodies left after the files left out "
             f"by name: the contour 8-gram filter (the pre-training corpus's) removes {filters['contour_8gram']:,}; "
             "the interval-figure similarity filter (`musicgen.metrics.similarity`, transposition-invariant; 0.4 "
             f"is the split's threshold, 0.25 the leakage check's) would remove {sim}. The main pre-training corpus "
             "keeps the 8-gram filter alone; the variants below add the similarity filter."]
    for vid, v in filters.get("variants", {}).items():
        by_name = ", ".join(f"{k.removeprefix('dropped_')}: {n:,}" for k, n in v.items() if k.startswith("dropped_")
                            and k != "dropped_by_name")
        lines.append(f"- Variant `{vid}`: {v['melodies']:,} melodies, {v['notes']:,} notes; dropped by name "
                     f"{v['dropped_by_name']:,}{f' ({by_name})' if by_name else ''}, then {v['contour_8gram']:,} by "
                     f"the 8-gram filter and {v['similarity_beyond_8gram']:,} more by the similarity filter.")
    if ppm_pre:
        lines += ["", f"The pre-trained PPM* rows: the thesis's C*I models trained on the same pre-training corpus "
                  "as the networks plus the training folds (no transposition), over the pitches of the corpus and "
                  "the datasets, each distribution renormalised over the dataset's alphabet (as the networks'); "
                  f"contexts of up to {ppm_pre['max_context']} notes are kept (`CorpusPPM`)."]
    if not paired:
        return lines

    def fig(d):
        return "-" if d is None else f"{d['value']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"

    if paired.get("against_ppm"):
        lines += ["", "Pre-trained rows paired with PPM* pre-trained on the same corpus (row minus PPM*, bits per "
                  "note, melody by melody, seed-aware `seed_piece_interval`); negative: the row predicts better.", "",
                  "| model | chorales: minus PPM* combined | chorales: minus PPM* LTM | kinder: minus PPM* combined "
                  "| kinder: minus PPM* LTM |", "|---|---|---|---|---|"]
        for name, by_ds in paired["against_ppm"].items():
            cells = [fig(by_ds.get(ds, {}).get(ref)) if ref in by_ds.get(ds, {}) else "-"
                     for ds in ("chorales", "kinder") for ref in ("combined", "ltm")]
            lines.append(f"| musicgen {name} | {' | '.join(cells)} |")
    if paired.get("moves"):
        lines += ["", "How much the pre-trained figures move on a variant corpus: each row minus the same row "
                  "pre-trained on the main corpus (paired melody by melody; network rows on the training seeds "
                  "both ran); positive: worse on the variant corpus.", "",
                  "| row | minus | chorales | kinder |", "|---|---|---|---|"]
        for name, m in paired["moves"].items():
            lines.append(f"| {'' if name.startswith('PPM*') else 'musicgen '}{name} | {m['base']} | "
                         f"{fig(m.get('chorales'))} | {fig(m.get('kinder'))} |")
    return lines
