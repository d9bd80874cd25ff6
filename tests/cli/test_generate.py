"""musicgen.generate on smoke checkpoints of both model families: MIDI, PNG and JSON written,
reproducible with a seed, each prompt source, and sampling settings checked before loading."""

import json

import mido
import pretty_midi
import pytest
import symusic
from helpers import gen_cfg

from musicgen.cli.generate import run_generation

VERSIONS = ["v6", "v7"]  # the LSTM (sliding window) and the Transformer (KV cache)


@pytest.mark.parametrize("smoke_run", VERSIONS, indirect=True)
def test_generate_writes_midi_png_and_json(smoke_run, tmp_path):
    report = run_generation(gen_cfg(smoke_run, tmp_path, num_samples=3, max_new_tokens=48))
    saved = json.loads((tmp_path / "generation.json").read_text())
    assert saved["settings"]["num_samples"] == 3 and saved["timing"]["tokens_per_second"] > 0
    assert saved["prompt"].startswith("data")
    assert len(saved["samples"]) == 3
    for s in saved["samples"]:
        assert len(s["ids"]) <= 48 and 2 not in s["ids"]  # one piece: it ends at its EOS, nothing after
        assert len(s["ids"]) == 48 or s["ended_at_eos"]
        if "error" in s:
            continue
        path = tmp_path / s["midi"]
        assert (tmp_path / s["png"]).stat().st_size > 0
        # the file opens with the three common readers and holds the decoded notes
        n_sym = symusic.Score(str(path)).note_num()
        n_pm = sum(len(i.notes) for i in pretty_midi.PrettyMIDI(str(path)).instruments)
        n_mido = sum(1 for t in mido.MidiFile(str(path)).tracks for m in t if m.type == "note_on" and m.velocity > 0)
        assert n_sym == n_pm == n_mido == s["notes"] > 0
    assert report["output_dir"] == str(tmp_path)


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_generation_is_reproducible_and_prompts_work(smoke_run, tmp_path, folk_midi_files):
    a = run_generation(gen_cfg(smoke_run, tmp_path / "a", num_samples=2, max_new_tokens=16, seed=3))
    b = run_generation(gen_cfg(smoke_run, tmp_path / "b", num_samples=2, max_new_tokens=16, seed=3))
    assert [s["ids"] for s in a["samples"]] == [s["ids"] for s in b["samples"]]
    none = run_generation(gen_cfg(smoke_run, tmp_path / "c", num_samples=1, max_new_tokens=8,
                                  **{"prompt.source": "none"}))
    assert none["samples"][0]["prompt_ids"] == [1]
    f = run_generation(gen_cfg(smoke_run, tmp_path / "d", num_samples=1, max_new_tokens=8,
                               **{"prompt.source": "file", "prompt.file": str(folk_midi_files[0])}))
    assert f["samples"][0]["prompt_ids"][0] == 1 and len(f["samples"][0]["prompt_ids"]) > 3


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_data_prompts_are_openings_of_whole_untransposed_pieces(smoke_run, tmp_path):
    from musicgen.checkpoint import load_run, load_run_cache

    report = run_generation(gen_cfg(smoke_run, tmp_path, num_samples=4, max_new_tokens=4,
                                    **{"prompt.length": 6, "prompt.split": "train"}))
    train = load_run_cache(load_run(smoke_run)).splits["train"]
    openings = {tuple(train.doc(i)[:7].tolist()): train.names[i] for i in range(train.n_docs)}
    for s in report["samples"]:
        name = openings[tuple(s["prompt_ids"])]  # BOS + the first 6 tokens of a training piece
        assert "@" not in name  # never a transposed copy
    assert "train pieces" in report["prompt"]


def test_sampling_values_out_of_range_fail_before_loading(tmp_path):
    cfg = gen_cfg(tmp_path / "does-not-exist", tmp_path, **{"sampling.top_p": 1.5})
    with pytest.raises(ValueError, match="top_p"):
        run_generation(cfg)
