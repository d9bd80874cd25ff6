"""``python -m musicgen.bench.ttq quick=true`` end to end (both pipelines for a few seconds on the
12-tune fixture), and the curve arithmetic it reports. The end-to-end test needs the peer's
packages: transformers and accelerate (Hugging Face's Trainer)."""

import json
import math

import pytest

from musicgen.config import compose
from musicgen.experiments.speed.ttq import max_time, time_to_reach


def test_time_to_reach_takes_the_first_point_at_or_below_and_interpolates():
    curve = [{"wall_s": 10.0, "step": 1, "v": 9.0}, {"wall_s": 20.0, "step": 2, "v": 7.0},
             {"wall_s": 30.0, "step": 3, "v": 5.0}, {"wall_s": 40.0, "step": 4, "v": 6.0}]
    hit = time_to_reach(curve, 6.0, key="v")
    assert hit["wall_s"] == 30.0 and hit["step"] == 3
    assert hit["interpolated_wall_s"] == pytest.approx(25.0)
    assert time_to_reach(curve, 9.0, key="v")["wall_s"] == 10.0  # reached at once: no interpolation
    assert time_to_reach(curve, 9.0, key="v")["interpolated_wall_s"] == 10.0
    assert time_to_reach(curve, 4.9, key="v") is None
    assert time_to_reach([], 1.0) is None


def test_max_time_formats_the_budget_for_lightning():
    assert max_time(600) == "00:00:10:00"
    assert max_time(5.2) == "00:00:00:06"
    assert max_time(90061) == "01:01:01:01"


def test_quick_ttq_end_to_end(tmp_path, real_midi_dir):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from musicgen.experiments.speed import ttq

    out = tmp_path / "ttq"
    overrides = ["quick=true", f"out_dir={out}", f"data.root={real_midi_dir / 'folk'}",
                 f"data.cache_dir={tmp_path / 'cache'}", "device=cpu"]
    res = ttq.run(compose("ttq", overrides), overrides)

    saved = json.loads((out / "ttq.json").read_text())
    md = (out / "ttq.md").read_text()
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["test"]["pieces"] == res["test"]["pieces"] >= 1 and not saved["test"]["left_out"]
    for name in ("ours", "peer"):
        nll = saved["test"][name]["nll_per_note"]["value"]
        assert math.isfinite(nll) and nll > 0, name
        run = saved[name]
        assert run["steps"] > 0 and 0 < run["wall_s"] < 3 * saved["budget_s"], name
        assert run["music_tokens_per_s"] > 0, name
        curve = run["curve"]
        assert curve, name
        assert all(math.isfinite(p["nats_per_note"]) and p["nats_per_note"] > 0 for p in curve), name
        assert [p["wall_s"] for p in curve] == sorted(p["wall_s"] for p in curve), name
    assert saved["ours"]["packed"] is True and saved["ours"]["padding_share"] == 0.0
    assert 0.0 <= saved["peer"]["padding_share"] < 1.0
    assert saved["peer"]["chunks"]["train"] > 0 and saved["peer"]["chunks"]["val"] > 0
    # the same shape and tokeniser config: the vocabularies agree (both BPE on the same training files)
    assert saved["peer"]["vocab_size"] == res["peer"]["vocab_size"] > 362
    diff = saved["test"]["paired_difference_peer_minus_ours"]["value"]
    assert diff == pytest.approx(saved["test"]["peer"]["nll_per_note"]["value"]
                                 - saved["test"]["ours"]["nll_per_note"]["value"])
    # the final values the times to reach are measured against are the curves' last points
    assert saved["final_val"]["ours"] == saved["ours"]["curve"][-1]["nats_per_note"]
    assert saved["final_val"]["peer"] == saved["peer"]["curve"][-1]["nats_per_note"]
    for name in ("ours", "peer"):
        hit = saved["time_to_reach"][name]
        assert hit is None or 0 < hit["wall_s"] <= saved[name]["curve"][-1]["wall_s"]
    assert "| musicgen.train |" in md and "| MidiTok + HF Trainer |" in md and "Paired difference" in md
