"""The evaluation report as Markdown (``evaluation.md``)."""

from __future__ import annotations

from typing import Any

TABLE_KEYS = (
    "perplexity", "nll_per_note", "ngram_repetition_4", "compression_ratio_4",
    "pitch_hist_kl", "pitch_hist_overlap", "syntax_error_rate",
)


def describe_sampling(sampling: dict[str, Any]) -> str:
    if sampling.get("greedy"):
        return "greedy decoding"
    return (f"temperature {sampling['temperature']}, top-k {sampling['top_k'] or 'off'}, "
            f"top-p {sampling['top_p'] if sampling['top_p'] < 1 else 'off'}")


def report_markdown(result: dict[str, Any]) -> str:
    rows = [
        ("model", result["model"]),
        (f"n-gram (order {result['ngram_baseline']['order']})", result["ngram_baseline"]),
        (f"real {result['split']} pieces", result["validation_pieces"]),
    ]

    def cell(row, k):
        v = row.get(k)
        return "-" if v is None else f"{v:.3f}"

    lines = [
        f"# Evaluation of {result['version']}",
        "",
        f"Checkpoint `{result['ckpt_path']}`, {result['model']['pieces']} {result['split']} pieces scored, "
        f"{result['settings']['num_samples']} samples of {result['settings']['max_new_tokens']} tokens, "
        f"model and n-gram both decoded with {describe_sampling(result['settings']['sampling'])}.",
        "",
        "| | " + " | ".join(TABLE_KEYS) + " |",
        "|---|" + "---|" * len(TABLE_KEYS),
    ]
    lines += [f"| {name} | " + " | ".join(cell(row, k) for k in TABLE_KEYS) + " |" for name, row in rows]
    beat = result["model"]["nll_per_note"] < result["ngram_baseline"]["nll_per_note"]
    lines += [
        "",
        f"NLL per note: model {result['model']['nll_per_note']:.3f} "
        f"vs n-gram {result['ngram_baseline']['nll_per_note']:.3f} "
        f"nats ({'the model beats the baseline' if beat else 'the model does NOT beat the baseline'}).",
        "Token perplexity compares models on the same tokeniser only; nats per note compare across tokenisations.",
        "",
        "![pitch histogram](pitch_histogram.png) ![repetition](repetition.png)",
        "",
    ]
    return "\n".join(lines)
