"""The leaderboard on smoke-sized runs (``quick=true``): every run of every entry sees the same
notes of training music, the claims' contrasts are computed from the right entries' per-piece
figures and judged, convergence is reported per run, and an interrupted board resumes (finished
runs and evaluations reused, an unfinished run trained again) and publishes its page."""

import json

import numpy as np
import pytest
from helpers import run_cli

CORE = ["lstm_pitch", "v7"]  # a seq2one and a causal entry (v6_causal's matching: test_leaderboard_protocol)
#: and the entries of the three claims that needed a change outside the board (V7's runs serve both)
ENTRIES = [*CORE, "v7_no_augment", "v7_bar_position", "v7_oneills", "v7_pooled_folk"]
VERDICTS = {"supported", "contradicted", "equivalent", "inconclusive"}


def board_args(data_dir, tmp):
    extra = [f"paths.data_dir={data_dir}", f"paths.cache_dir={tmp}/cache", f"paths.log_dir={tmp}/outputs",
             "data.max_files=null", "data.val_frac=0.25", "data.test_frac=0.3", "data.encode_workers=1",
             "data.progress=false"]
    # the smoke corpus holds O'Neill's and Essen tunes only: the pooled entry pools those two
    pool = ["data.max_files=2000", "data.include=[folk/oneills1850/,folk/essenFolksong/]"]
    return ["quick=true", f"only=[{','.join(ENTRIES)}]", f"output_dir={tmp}/board",
            "extra=[" + ",".join(f"'{c}'" for c in extra) + "]",
            "entries.v7_pooled_folk.after_common=[" + ",".join(f"'{c}'" for c in pool) + "]"]


@pytest.fixture(scope="module")
def board(tmp_path_factory, prepared_data_dir):
    tmp = tmp_path_factory.mktemp("board")
    run_cli("musicgen", ["leaderboard", *board_args(prepared_data_dir, tmp)], timeout=1500, check=True)
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
        # the budget reached, and passed by less than one optimizer step's notes (unless the
        # early stopping at convergence stopped a seed: then the rule held where it stopped)
        if not any(v["stopped_early"] for v in e["converged"]):
            assert budget <= e["notes_seen"] < budget + per_step[name], name
        assert all(v["converged"] for v in e["converged"] if v["stopped_early"])
        assert e["flops"] > 0 and e["train_seconds"] > 0
    # the seq2one entry scores one target per window, the causal ones a whole window: far fewer notes a step
    assert per_step["lstm_pitch"] < per_step["v7"] / 2


def test_the_claims_are_computed_from_their_entries_and_judged(board):
    r = result(board)
    claims = {c["name"]: c for c in r["claims"]}
    c = claims["augmentation"]
    assert c["verdict"] in VERDICTS and c["seeds"] == 2 and c["pieces"] > 0
    assert c["low"] <= c["effect"] <= c["high"] and c["holm_low"] <= c["low"]
    v7, plain = r["entries"]["v7"]["nll_per_note"], r["entries"]["v7_no_augment"]["nll_per_note"]
    # positive: V7's NLL per note below V7's without transposed copies; the same test pieces for both
    assert c["effect"] == pytest.approx(plain["value"] - v7["value"], rel=1e-6)
    unconverged = {f"{e}_s{v['seed']}" for e in ("v7", "v7_no_augment") for v in r["entries"][e]["converged"]
                   if not v["converged"]}
    assert set(c["unconverged"]) == unconverged
    for name in ("tokenisation_over_capacity", "transformer_over_lstm"):  # v5, v6, v6_causal are not on this board
        assert claims[name]["verdict"] == "not run" and "not on this board" in claims[name]["reason"]
    md = (board / "board" / "leaderboard.md").read_text()
    assert "## Claims" in md and "| v7_no_augment |" in md and f"**{c['verdict']}**" in md
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


def test_runs_are_evaluated_while_others_still_train(board):
    """Two at once (the default): a run's evaluation is taken up as soon as it has trained, so the
    first evaluation is written before the last training ends."""
    runs = board / "board" / "runs"
    first_evaluated = min(p.stat().st_mtime_ns for p in runs.glob("*/evaluation.json"))
    last_trained = max(p.stat().st_mtime_ns for p in runs.glob("*/metrics.json"))
    assert first_evaluated < last_trained
    assert all(json.loads(p.read_text())["split"] == "test" for p in runs.glob("*/board_evaluation.json"))


def test_an_interrupted_board_resumes(board, prepared_data_dir):
    runs = board / "board" / "runs"
    kept = {p: p.stat().st_mtime_ns for p in [*runs.glob("*/checkpoints/*.ckpt"), *runs.glob("*/evaluation.json")]
            if "v7_s1" not in str(p)}
    assert kept
    (runs / "v7_s1" / "metrics.json").unlink()  # as if killed before it finished
    docs = board / "docs"  # publishing too: the page and its figures in the docs site
    docs.mkdir()
    # one run at a time this time (the board above trained two at once): both ways resume the same
    proc = run_cli("musicgen", ["leaderboard", *board_args(prepared_data_dir, board), "parallel=1", "publish=true",
                                "publish_name=board-smoke", "title='Smoke board'", f"publish_dir={docs}"],
                   timeout=900, check=True)
    assert "lstm_pitch: 2 finished runs reused" in proc.stdout + proc.stderr
    assert "v7 seed 1 trained: " in proc.stdout + proc.stderr  # where it stopped, its time, converged or not
    assert (runs / "v7_s1" / "metrics.json").is_file()  # trained again
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # nothing else retrained or re-evaluated
    page = (docs / "results" / "board-smoke.md").read_text()
    assert page.startswith("# Smoke board\n") and "Written by `musicgen leaderboard " in page and "| v7 |" in page
    assert "![metrics](board-smoke/metrics.png)" in page
    # timed as one run over its two sittings: each counted to the last file it wrote
    assert "over 2 invocations of the command" in page
    timed = json.loads((board / "board" / "leaderboard.json").read_text())["wall_time"]
    assert len(timed["invocations"]) == 2 and all(i["pieces"] > 0 for i in timed["invocations"])
    for section in ("entries", "claims"):  # marked, so that the docs' leaderboard note can include them
        assert f"<!-- --8<-- [start:{section}] -->" in page and f"<!-- --8<-- [end:{section}] -->" in page
    copy = docs / "results" / "board-smoke" / "curves.png"
    assert copy.read_bytes() == (board / "board" / "curves.png").read_bytes()


def test_a_trained_run_without_its_evaluation_is_evaluated_and_nothing_else_redone(board, prepared_data_dir):
    """Killed between a run's training and its evaluation: the next invocation (two at once)
    evaluates that run first and trains or evaluates nothing else."""
    runs = board / "board" / "runs"
    (runs / "lstm_pitch_s0" / "board_evaluation.json").unlink()
    others = {p: p.stat().st_mtime_ns for p in [*runs.glob("*/metrics.json"), *runs.glob("*/evaluation.json")]
              if "lstm_pitch_s0" not in str(p)}
    before = (runs / "lstm_pitch_s0" / "evaluation.json").stat().st_mtime_ns
    proc = run_cli("musicgen", ["leaderboard", *board_args(prepared_data_dir, board)], timeout=900, check=True)
    assert "lstm_pitch seed 0: evaluating" in proc.stdout + proc.stderr
    assert (runs / "lstm_pitch_s0" / "evaluation.json").stat().st_mtime_ns > before
    assert (runs / "lstm_pitch_s0" / "board_evaluation.json").is_file()
    assert {p: p.stat().st_mtime_ns for p in others} == others


def test_a_finished_run_of_other_settings_is_refused_not_deleted(board, prepared_data_dir):
    runs = board / "board" / "runs"
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    changed = "quick_settings.budget.notes=401"
    proc = run_cli("musicgen", ["leaderboard", *board_args(prepared_data_dir, board), changed], timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and last.startswith("error: ") and "finished run of other settings" in last
    assert "max_notes:401" in last
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == before  # nothing touched


def test_unknown_entries_are_one_line_errors():
    proc = run_cli("musicgen", ["leaderboard", "only=[v9]"], timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: only=['v9']")


def test_a_bad_page_name_fails_before_any_training(tmp_path):
    proc = run_cli("musicgen", ["leaderboard", "publish=true", "publish_name=../up", f"output_dir={tmp_path}"],
                   timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: page name '../up'")
    assert not any(tmp_path.iterdir())


def test_transposed_test_genre_and_position_claims_run_in_quick_mode(board):
    r = result(board)
    claims = {c["name"]: c for c in r["claims"]}
    runs = board / "board" / "runs"
    for name in ("augmentation_transposed_test", "genre_over_pooled", "music_aware_position"):
        c = claims[name]
        assert c["verdict"] in VERDICTS, (name, c.get("reason"))
        assert c["seeds"] == 2 and c["pieces"] > 0 and c["low"] <= c["effect"] <= c["high"]
    with np.load(runs / "v7_s0" / "evaluation_pieces.npz") as z:
        test_names = list(z["likelihood/names"])
        copies = list(z["transposed/names"])
        assert np.array_equal(z["transposed/notes"], z["likelihood/notes"][z["transposed/piece"]])
    # augmentation on the transposed copies: every test piece's copies that fit, paired copy by copy
    assert claims["augmentation_transposed_test"]["pieces"] == len(copies) > len(test_names)
    assert "transposed by -5, -4" in claims["augmentation_transposed_test"]["scored_on"]
    with np.load(runs / "v7_no_augment_s1" / "evaluation_pieces.npz") as z:
        assert list(z["transposed/names"]) == copies
    with np.load(runs / "v7_bar_position_s0" / "evaluation_pieces.npz") as z:
        assert "transposed/names" not in z.files  # only the claim's entries score the copies
    # genre against pooled: the pooled model's O'Neill's test pieces, paired by name with the O'Neill's model's
    with np.load(runs / "v7_pooled_folk_s0" / "evaluation_pieces.npz") as z:
        pooled = [str(n) for n in z["likelihood/names"]]
    with np.load(runs / "v7_oneills_s0" / "evaluation_pieces.npz") as z:
        alone = [str(n) for n in z["likelihood/names"]]
    assert any(n.startswith("folk/essenFolksong/") for n in pooled) and alone
    assert all(n.startswith("folk/oneills1850/") for n in alone)
    assert sorted(n for n in pooled if n.startswith("folk/oneills1850/")) == sorted(alone)
    assert claims["genre_over_pooled"]["pieces"] == len(alone)
    # the music-aware position: the one difference from V7
    e = r["entries"]
    assert e["v7_bar_position"]["parameters"] > e["v7"]["parameters"]
    assert "model.bar_position=true" in e["v7_bar_position"]["overrides"]
    md = (board / "board" / "leaderboard.md").read_text()
    for name in ("augmentation_transposed_test", "genre_over_pooled", "music_aware_position"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {claims[name]['hypothesis']} |"))
        assert f"**{claims[name]['verdict']}**" in row and "not run" not in row, row
    assert "(on the test pieces named folk/oneills1850/...)" in md


def test_the_estimate_projects_the_board_from_a_short_probe(board, prepared_data_dir):
    """``estimate.run=true``: one short run per entry (seed 0, early stopping off) in its own folder,
    the board's runs untouched, and the board's training minutes projected from seconds per note."""
    runs = board / "board" / "runs"
    before = {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")}
    args = [*board_args(prepared_data_dir, board), "estimate.run=true", "only=[v7]"]
    proc = run_cli("musicgen", ["leaderboard", *args], timeout=600, check=True)
    out = board / "board" / "estimate"
    est = json.loads((out / "estimate.json").read_text())
    r = result(board)
    budget = r["settings"]["budget"]["notes"]
    assert list(est["entries"]) == ["v7"] and est["seeds"] == 2 and est["budget_notes"] == budget
    for name, e in est["entries"].items():
        assert est["probe_notes"] <= e["probe_notes"] < budget  # the probe's notes, not the board's
        assert not (out / "runs" / f"{name}_s0" / "evaluation.json").exists()  # trained only
        per_note = e["probe_seconds"] / e["probe_notes"]
        assert e["minutes_whole_budget"] == pytest.approx(2 * budget * per_note / 60)
        # at the notes the board's two finished runs of the entry saw (the page's mean per run)
        assert e["board_notes"] == pytest.approx(2 * r["entries"][name]["notes_seen"])
        assert e["minutes_board_notes"] == pytest.approx(e["board_notes"] * per_note / 60)
        assert f"| {name} | {e['probe_notes']:,.0f} |" in proc.stdout
    assert est["minutes_whole_budget"] == pytest.approx(sum(e["minutes_whole_budget"] for e in est["entries"].values()))
    assert (out / "estimate.md").read_text() in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/metrics.json")} == before
