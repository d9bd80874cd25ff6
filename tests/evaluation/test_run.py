"""musicgen.evaluate on smoke checkpoints of both model families: the test split by default, equal
piece counts per row, every figure with its interval, the same tokens for model and n-gram, and
validation perplexity equal to evaluation's on the same checkpoint and split."""

import json
import math

import numpy as np
import pytest

from musicgen.config import compose
from musicgen.evaluation.run import evaluate
from musicgen.midi_io import read_score

VERSIONS = ["v6", "v7"]  # the LSTM (sliding window) and the Transformer (KV cache)


@pytest.mark.parametrize("smoke_run", VERSIONS, indirect=True)
def test_evaluate_writes_report(smoke_run, tmp_path):
    cfg = compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path}", "num_samples=3",
                               "max_new_tokens=32", "bootstrap=50"])
    assert cfg.split == "test"  # model selection used val; the report is on held-out pieces
    result = evaluate(cfg)
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["split"] == "test" and "trained window" in saved["settings"]["context"]
    n = saved["settings"]["num_samples"]
    for row in ("model", "ngram", "real"):
        for key in ("pitch_class_overlap", "interval_overlap", "duration_overlap", "ioi_overlap",
                    "notes_per_bar_overlap", "ngram_repetition_4", "copied_8gram_share", "longest_copied_run",
                    "syntax_error_rate", "notes_per_piece", "copied_8gram_share_interval",
                    "copied_16gram_share_interval", "longest_copied_run_interval",
                    "copied_8gram_share_interval_with_duration", "longest_copied_run_interval_with_duration",
                    "scale_consistency", "pitch_in_scale", "key_clarity", "tonic_pitch_class_overlap"):
            figure = saved[row][key]
            assert set(figure) == {"value", "low", "high"}, (row, key)
            assert math.isnan(figure["low"]) or figure["low"] <= figure["high"]
        assert sum(saved["histograms"][row]["pitch"]) > 0 or row != "real"
    assert n == min(3, saved["model"]["pieces"])  # as many samples as real pieces: equal counts
    assert saved["real"]["syntax_error_rate"]["value"] == 0.0  # real pieces are well-formed
    assert saved["real"]["ended_at_eos"]["value"] == 1.0
    assert saved["model"]["nll_per_note"]["value"] > 0 and saved["ngram"]["nll_per_note"]["value"] > 0
    assert result["model"]["tokens"] == saved["ngram"]["tokens"]  # same tokens scored
    assert saved["settings"]["scoring"] == ("seq2one (as trained)" if "v6" in str(smoke_run) else "causal")
    md = (tmp_path / "evaluation.md").read_text()
    assert "| model |" in md and "n-gram" in md and "[" in md
    assert (tmp_path / "metrics.png").exists() and (tmp_path / "distributions.png").exists()
    assert "copied_8gram_share_interval" in md
    assert "| key distribution |" in md and "tonic_pitch_class_overlap" in md


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_evaluate_keeps_every_scored_piece_as_midi(smoke_run, tmp_path):
    """pieces/<row>/NNN.mid for the model, n-gram and real rows, as many as each row scored; each
    file is readable and has the note count of its row of evaluation_pieces.npz (an outside tool
    recomputes the figure from the file), or is listed as skipped."""
    cfg = compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path}", "num_samples=3",
                               "max_new_tokens=48", "bootstrap=20", "split=train"])  # test has 1 piece
    (tmp_path / "pieces" / "model").mkdir(parents=True)
    (tmp_path / "pieces" / "model" / "007.mid").write_bytes(b"stale")  # an earlier, larger evaluation's
    saved = evaluate(cfg)
    n = saved["settings"]["num_samples"]
    assert n == 3
    index = json.loads((tmp_path / "pieces" / "index.json").read_text())
    per_piece = np.load(tmp_path / "evaluation_pieces.npz")
    assert index["rows"] == {"model": n, "ngram": n, "real": n}
    skipped = {(s["row"], s["index"]) for s in index["skipped"]}
    for row in ("model", "ngram", "real"):
        written = sorted(p.name for p in (tmp_path / "pieces" / row).glob("*.mid"))
        assert len(written) + sum(r == row for r, _ in skipped) == n
        for k in range(n):
            name = f"{row}/{k:03d}.mid"
            if (row, k) in skipped:
                assert name not in index["files"]
                continue
            entry = index["files"][name]
            assert entry["row"] == row and entry["index"] == entry["npz_row"] == k
            notes = per_piece[f"{row}/notes"][entry["npz_row"], 0]
            if notes == 0:  # a sample with no note is a valid file that read_score refuses
                assert (tmp_path / "pieces" / name).stat().st_size > 0
                continue
            score = read_score(tmp_path / "pieces" / name)
            assert sum(len(t.notes) for t in score.tracks) == notes
    assert all("name" in index["files"][f"real/{k:03d}.mid"] for k in range(n) if ("real", k) not in skipped)
    assert not skipped or all(s["reason"] for s in index["skipped"])
    assert not (tmp_path / "pieces" / "model" / "007.mid").exists()


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_validation_perplexity_is_evaluations(smoke_run, tmp_path):
    """Validation scores each token once with the evaluation's windows: on the checkpoint it
    selected, val/ppl and evaluate's perplexity on the val split agree within 1%."""
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    cfg = compose("evaluate", [f"ckpt_path={smoke_run}/checkpoints/best.ckpt", f"output_dir={tmp_path}",
                               "split=val", "num_samples=1", "max_new_tokens=8", "bootstrap=10"])
    ppl = evaluate(cfg)["model"]["perplexity"]["value"]
    assert ppl == pytest.approx(metrics["best_val_ppl"], rel=0.01)


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_transposed_test_pieces_are_scored_per_copy_and_named(smoke_run, tmp_path):
    """transpose=[...]: every piece of the split is scored at each shift that fits the tokeniser's
    pitch range, each copy on its own row of evaluation_pieces.npz with its piece's source notes
    and its name; the untransposed rows name their pieces, and differ from the copies' NLL."""
    shifts = [-5, -1, 2, 6, 40]  # +40 lifts every folk tune past the range (21..109)
    cfg = compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path}", "num_samples=2",
                               "max_new_tokens=16", "bootstrap=20", "split=train", "max_pieces=4",
                               "real_examples=0", f"transpose=[{','.join(map(str, shifts))}]"])
    saved = evaluate(cfg)
    with np.load(tmp_path / "evaluation_pieces.npz") as z:
        names, like, notes = z["likelihood/names"], z["likelihood/model_nll"], z["likelihood/notes"]
        t = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("transposed/")}
    assert len(names) == len(like) == 4 and all(n.startswith("folk/") for n in names)
    assert set(t["shift"].tolist()) == {-5, -1, 2, 6}  # no tune fits +40
    row = saved["transposed"]
    assert row["copies"] == len(t["model_nll"]) and row["skipped_copies"] == 4 * len(shifts) - row["copies"]
    assert row["skipped_copies"] >= 4
    for k, (p, s) in enumerate(zip(t["piece"], t["shift"], strict=True)):
        assert t["names"][k] == f"{names[p]}@{s:+d}"
        assert t["notes"][k] == notes[p]  # the original's source notes
    assert not np.allclose(t["model_nll"], like[t["piece"]])  # a transposed copy is another sequence to score
    assert row["model"]["nll_per_note"]["value"] > 0
    assert "Transposed train pieces" in (tmp_path / "evaluation.md").read_text()


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_transpose_settings_are_checked_in_one_line(smoke_run, tmp_path):
    from musicgen.errors import ConfigError

    cfg = compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path}", "transpose=[1,1]"])
    with pytest.raises(ConfigError, match=r"transpose=.*give distinct semitone shifts") as e:
        evaluate(cfg)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_the_real_pieces_drawn_do_not_depend_on_the_ngrams_samples(smoke_run, tmp_path):
    """The real row's pieces come from a random stream of their own: an n-gram of another order,
    whose samples draw other random numbers, leaves them as they were."""
    real, ngram = [], []
    for order in (2, 4):
        out = tmp_path / str(order)
        evaluate(compose("evaluate", [f"ckpt_path={smoke_run}", f"output_dir={out}", "num_samples=4",
                                      "max_new_tokens=48", "bootstrap=20", "split=train", f"ngram_order={order}",
                                      "real_examples=0", "audio.enabled=false"]))
        with np.load(out / "evaluation_pieces.npz") as z:
            real.append(z["real/notes"].copy())
            ngram.append(z["ngram/tokens"].copy())
    assert not np.array_equal(ngram[0], ngram[1])  # the n-grams drew differently...
    assert np.array_equal(real[0], real[1])  # ...and the same real pieces were scored
