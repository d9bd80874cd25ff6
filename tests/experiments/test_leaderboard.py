"""The leaderboard on smoke-sized runs (``quick=true``): every run of every entry sees the same
notes of training music, the claims' contrasts are computed from the right entries' per-piece
figures and judged, convergence is reported per run, and an interrupted board resumes (finished
runs and evaluations reused, an unfinished run trained again) and publishes its page."""

import json

import numpy as np
import pytest
from helpers import run_cli

ENTRIES = ["lstm_pitch", "v7", "v6_causal"]  # a seq2one and two causal entries; one claim fully on the board
VERDICTS = {"supported", "contradicted", "equivalent", "inconclusive"}


def board_args(data_dir, tmp):
    extra = [f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp}/cache", f"paths.log_dir={tmp}/outputs",
             "data.max_files=null", "data.val_frac=0.25", "data.test_frac=0.3", "data.encode_workers=1",
             "data.progress=false"]
    return ["quick=true", f"only=[{','.join(ENTRIES)}]", f"output_dir={tmp}/board",
            "extra=[" + ",".join(f"'{c}'" for c in extra) + "]"]


@pytest.fixture(scope="module")
def board(tmp_path_factory, prepared_data_dir):
    tmp = tmp_path_factory.mktemp("board")
    run_cli("musicgen", ["leaderboard", *board_args(prepared_data_dir, tmp)], timeout=900, check=True)
    return tmp


def result(board):
    return json.loads((board / "board" / "leaderboard.json").read_text())


def test_every_run_sees_the_same_notes_of_training_music(board):
    r = result(board)
    budget = r["settings"]["budget"]["notes"]
    assert list(r["entries"]) == ENTRIES
    per_step = {}
    for name, e in r["entries"].items():
        assert e["seeds"] == 2 and len(e["converged"]) == 2
        per_step[name] = e["notes_seen"] / e["steps"]
        # the budget reached, and passed by less than one optimizer step's notes
        assert budget <= e["notes_seen"] < budget + per_step[name], name
        assert e["flops"] > 0 and e["train_seconds"] > 0
    # the seq2one entry scores one target per window, the causal ones a whole window: far fewer notes a step
    assert per_step["lstm_pitch"] < per_step["v7"] / 2
    assert r["entries"]["v7"]["seq_len"] == r["entries"]["v6_causal"]["seq_len"]
    assert abs(r["entries"]["v6_causal"]["parameters"] / r["entries"]["v7"]["parameters"] - 1) < 0.1


def test_the_claims_are_computed_from_their_entries_and_judged(board):
    r = result(board)
    claims = {c["name"]: c for c in r["claims"]}
    c = claims["transformer_over_lstm"]
    assert c["verdict"] in VERDICTS and c["seeds"] == 2 and c["pieces"] > 0
    assert c["low"] <= c["effect"] <= c["high"] and c["holm_low"] <= c["low"]
    v7, lstm = r["entries"]["v7"]["nll_per_note"], r["entries"]["v6_causal"]["nll_per_note"]
    # positive: the Transformer's NLL per note below the LSTM's; the same test pieces for both
    assert c["effect"] == pytest.approx(lstm["value"] - v7["value"], rel=1e-6)
    unconverged = {f"{e}_s{v['seed']}" for e in ("v7", "v6_causal") for v in r["entries"][e]["converged"]
                   if not v["converged"]}
    assert set(c["unconverged"]) == unconverged
    assert claims["tokenisation_over_capacity"]["verdict"] == "not run"  # v5, v6 are not on this board
    assert "not on this board" in claims["tokenisation_over_capacity"]["reason"]
    assert claims["music_aware_position"]["verdict"] == "not run" and claims["music_aware_position"]["reason"]
    md = (board / "board" / "leaderboard.md").read_text()
    assert "## Claims" in md and "| v6_causal |" in md and f"**{c['verdict']}**" in md
    for fig in ("curves.png", "metrics.png"):
        assert (board / "board" / fig).stat().st_size > 0


def test_each_entry_pools_its_seeds_on_the_same_pieces(board):
    r = result(board)
    runs = board / "board" / "runs"
    for name in ENTRIES:
        with np.load(runs / f"{name}_s0" / "evaluation_pieces.npz") as a, \
                np.load(runs / f"{name}_s1" / "evaluation_pieces.npz") as b:
            assert np.array_equal(a["likelihood/notes"], b["likelihood/notes"])
            total = a["likelihood/model_nll"].sum() + b["likelihood/model_nll"].sum()
            notes = 2 * a["likelihood/notes"].sum()
        assert r["entries"][name]["nll_per_note"]["value"] == pytest.approx(total / notes, rel=1e-6)


def test_an_interrupted_board_resumes(board, prepared_data_dir):
    runs = board / "board" / "runs"
    kept = {p: p.stat().st_mtime_ns for p in [*runs.glob("*/checkpoints/*.ckpt"), *runs.glob("*/evaluation.json")]
            if "v7_s1" not in str(p)}
    assert kept
    (runs / "v7_s1" / "metrics.json").unlink()  # as if killed before it finished
    docs = board / "docs"  # publishing too: the page and its figures in the docs site
    docs.mkdir()
    proc = run_cli("musicgen", ["leaderboard", *board_args(prepared_data_dir, board), "publish=true",
                                f"publish_dir={docs}"], timeout=900, check=True)
    assert "lstm_pitch: 2 finished runs reused" in proc.stdout + proc.stderr
    assert (runs / "v7_s1" / "metrics.json").is_file()  # trained again
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing else retrained or re-evaluated
    page = (docs / "results" / "leaderboard.md").read_text()
    assert page.startswith("# Leaderboard\n") and "Written by `musicgen leaderboard " in page and "| v7 |" in page
    assert "![metrics](leaderboard/metrics.png)" in page
    copy = docs / "results" / "leaderboard" / "curves.png"
    assert copy.read_bytes() == (board / "board" / "curves.png").read_bytes()


def test_unknown_entries_are_one_line_errors():
    proc = run_cli("musicgen", ["leaderboard", "only=[v9]"], timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: only=['v9']")
