"""musicgen.evaluate on smoke checkpoints of both model families: the report's sections, metrics
and figures."""

import json

import pytest

from musicgen.config import compose
from musicgen.evaluate import evaluate

VERSIONS = ["v6", "v7"]  # the LSTM (sliding window) and the Transformer (KV cache)


@pytest.mark.parametrize("smoke_run", VERSIONS, indirect=True)
def test_evaluate_writes_report(smoke_run, tmp_path):
    cfg = compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path}", "num_samples=2",
                               "max_new_tokens=32"])
    result = evaluate(cfg)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    for section in ("model", "ngram_baseline", "validation_pieces"):
        assert section in saved
    for key in ("perplexity", "nll_per_note", "ngram_repetition_4", "compression_ratio_4",
                "pitch_hist_kl", "pitch_hist_overlap", "syntax_error_rate"):
        assert key in saved["model"], key
    assert saved["model"]["nll_per_note"] > 0 and saved["ngram_baseline"]["nll_per_note"] > 0
    assert saved["validation_pieces"]["syntax_error_rate"] == 0.0  # real pieces are well-formed
    md = (tmp_path / "evaluation.md").read_text()
    assert "| model |" in md and "n-gram" in md
    assert (tmp_path / "pitch_histogram.png").exists() and (tmp_path / "repetition.png").exists()
    assert result["model"]["tokens"] == saved["ngram_baseline"]["tokens"]  # same tokens scored
