"""The leaderboard on smoke-sized runs: training through Hydra multirun, one evaluation per run,
pooling over seeds with intervals, grouping by tokeniser family, and resuming an interrupted
board (finished runs and evaluations reused, an unfinished run trained again)."""

import json

import pytest
from helpers import run_cli

ENTRIES = ["v1", "v7"]


def board_args(data_dir, tmp):
    common = ["preset=smoke", f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp}/cache",
              f"paths.log_dir={tmp}/outputs", "data=folk", "data.max_files=null", "data.val_frac=0.25",
              "data.test_frac=0.3", "data.seed=0", "trainer.val_check_interval=2",
              "trainer.check_val_every_n_epoch=null",
              "callbacks.sample_metrics=null", "callbacks.progress_bar=null", "logger=csv"]
    return [f"only=[{','.join(ENTRIES)}]", "seeds=2", "budget=00:00:00:30", f"output_dir={tmp}/board",
            "common=[" + ",".join(f"'{c}'" for c in common) + "]",
            "evaluate.num_samples=3", "evaluate.max_new_tokens=16", "evaluate.bootstrap=50"]


@pytest.fixture(scope="module")
def board(tmp_path_factory, prepared_data_dir):
    tmp = tmp_path_factory.mktemp("board")
    run_cli("musicgen", ["leaderboard", *board_args(prepared_data_dir, tmp)], timeout=600, check=True)
    return tmp


def test_board_pools_seeds_and_groups_by_tokeniser(board):
    result = json.loads((board / "board" / "leaderboard.json").read_text())
    assert list(result["entries"]) == ENTRIES
    v1, v7 = result["entries"]["v1"], result["entries"]["v7"]
    assert v1["tokenizer"] == "pitch strings" and v1["family"].startswith("pitch")
    assert v7["tokenizer"].startswith("REMI+BPE") and v7["family"].startswith("REMI")
    for e in (v1, v7):
        assert e["seeds"] == 2 and e["steps"] > 0 and e["parameters"] > 0
        # the per-piece NLL averaged over seeds: with the same pieces, the mean of the seeds' values
        assert e["nll_per_note"]["value"] == pytest.approx(sum(e["seeds_nll_per_note"]) / 2, rel=1e-6)
        assert e["nll_per_note"]["low"] <= e["nll_per_note"]["value"] <= e["nll_per_note"]["high"]
        runs = [json.loads((board / "board" / "runs" / f"{e['entry']}_s{s}" / "evaluation.json").read_text())
                for s in range(2)]
        assert e["sampled_pieces"] == sum(r["settings"]["num_samples"] for r in runs)  # both seeds' samples
    assert set(result["ngram"]) == {"pitch strings", v7["tokenizer"]}  # one n-gram row per tokeniser
    assert set(result["real"]) == {v1["family"], v7["family"]}
    md = (board / "board" / "leaderboard.md").read_text()
    assert "## pitch strings" in md and "## REMI" in md and "| v7 |" in md and "4-gram (pitch strings)" in md
    assert (board / "board" / "metrics.png").stat().st_size > 0 and (board / "board" / "curves.png").exists()


def test_an_interrupted_board_resumes(board, prepared_data_dir):
    runs = board / "board" / "runs"
    kept = {p: p.stat().st_mtime_ns for p in [*runs.glob("v1_s*/checkpoints/*.ckpt"), *runs.glob("v*/evaluation.json")]
            if "v7_s1" not in str(p)}
    (runs / "v7_s1" / "metrics.json").unlink()  # as if killed before it finished
    docs = board / "docs"  # publishing too: the board and its figures as a page of the docs
    docs.mkdir()
    proc = run_cli("musicgen", ["leaderboard", *board_args(prepared_data_dir, board), "publish=true",
                                f"publish_dir={docs}"], timeout=600, check=True)
    assert "v1: 2 finished runs reused" in proc.stdout + proc.stderr
    assert (runs / "v7_s1" / "metrics.json").is_file()  # trained again
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing else retrained or re-evaluated
    page = (docs / "results" / "leaderboard.md").read_text()
    assert page.startswith("# Leaderboard\n") and "Written by `musicgen leaderboard " in page and "| v7 |" in page
    assert "![metrics](leaderboard/metrics.png)" in page
    copy = docs / "results" / "leaderboard" / "metrics.png"
    assert copy.read_bytes() == (board / "board" / "metrics.png").read_bytes()
    assert "- [Leaderboard](leaderboard.md)" in (docs / "results" / "index.md").read_text()


def test_unknown_entries_are_one_line_errors():
    proc = run_cli("musicgen", ["leaderboard", "only=[v9]"], timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: only=['v9']")
