"""musicgen seeds: one setup trained over seeds, each evaluated on the same test pieces, pooled
with intervals that cover another seed; finished runs and evaluations are reused."""

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import cli_overrides, smoke_override_list

from musicgen.config import compose
from musicgen.errors import ConfigError
from musicgen.experiments.seeds import run


def test_seeds_trains_evaluates_pools_and_reuses(tmp_path, prepared_data_dir):
    train = cli_overrides(smoke_override_list(tmp_path, prepared_data_dir))
    quoted = ",".join(f"'{o}'" for o in ["+version=v7", *train])
    overrides = [f"train.overrides=[{quoted}]", "train.seeds=[1,2]", f"dir={tmp_path}/seeds",
                 "evaluate=['num_samples=2','max_new_tokens=32','bootstrap=20','split=train']"]
    cfg = compose("seeds", overrides)
    cli = [sys.executable, "-m", "musicgen", "seeds", *overrides]
    assert subprocess.run(cli).returncode == 0  # the command users run (one Hydra app per process)
    result = json.loads((tmp_path / "seeds" / "seeds.json").read_text())
    dirs = [tmp_path / "seeds" / f"seed_{s}" for s in (1, 2)]
    per_seed = result["per_seed"]["nll_per_note"]
    assert len(per_seed) == 2 and per_seed[0] != per_seed[1]  # the training seed matters
    pieces = [np.load(d / "evaluation_pieces.npz") for d in dirs]
    nll = np.stack([p["likelihood/model_nll"] for p in pieces])
    notes = pieces[0]["likelihood/notes"]
    pooled = result["model"]["nll_per_note"]
    assert pooled["value"] == pytest.approx(nll.sum() / (2 * notes.sum()))  # over seeds and pieces
    assert pooled["low"] < pooled["value"] < pooled["high"]
    assert "model_minus_ngram_nll_per_note" in result["model"]
    md = (tmp_path / "seeds" / "seeds.md").read_text()
    assert result["seeds"] == [1, 2] and "| seed 1 | seed 2 |" in md and "seed 0" not in md  # named by seed
    assert "nll_per_note" in md
    assert json.loads((tmp_path / "seeds" / "seeds.json").read_text())["steps"]
    evals = [json.loads((d / "evaluation.json").read_text()) for d in dirs]  # lengths as each run measured them
    assert result["lengths"]["real row's notes per piece"] == [e["real"]["notes_per_piece"]["value"] for e in evals]
    assert result["lengths"]["training tokens per note, originals"] == [
        e["lengths"]["training_tokens_per_note"]["originals"] for e in evals]
    assert "| real row's notes per piece |" in md
    stamps = [(d / "evaluation.json").stat().st_mtime_ns for d in dirs]
    run(cfg)  # again: nothing is retrained or re-evaluated
    assert stamps == [(d / "evaluation.json").stat().st_mtime_ns for d in dirs]

    # against a baseline setup (here itself): NLL paired by piece and seed, sample figures by Welch
    compared = run(compose("seeds", [*overrides, f"baseline={tmp_path}/seeds"]))["comparison"]["difference"]
    assert compared["nll_per_note"]["value"] == 0.0 and compared["nll_per_note"]["high"] == 0.0
    key = next(k for k in compared if k != "nll_per_note")
    assert compared[key]["value"] == 0.0 and (np.isnan(compared[key]["low"]) or compared[key]["low"] <= 0.0)
    assert "## Against the baseline" in (tmp_path / "seeds" / "seeds.md").read_text()
    run(compose("seeds", [*overrides, "title=Fine-tuned against its start"]))
    assert (tmp_path / "seeds" / "seeds.md").read_text().startswith("# Fine-tuned against its start\n")
    paired = run(compose("seeds", [*overrides, f"baseline={tmp_path}/seeds", "baseline_paired=true"]))["comparison"]
    assert paired["paired"] and paired["difference"][key] == {"value": 0.0, "low": 0.0, "high": 0.0}
    other = tmp_path / "other_seeds"
    other.mkdir()
    (other / "seeds.json").write_text(json.dumps({**result, "seeds": [7, 8]}))
    with pytest.raises(ConfigError, match="seeds differ"):
        run(compose("seeds", [*overrides, f"baseline={other}", "baseline_paired=true"]))
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "seeds.json").write_text(json.dumps({**result, "runs": result["runs"][:1]}))
    with pytest.raises(ConfigError, match="baseline's 1"):
        run(compose("seeds", [*overrides, f"baseline={tmp_path}/one"]))
    with pytest.raises(ConfigError, match="no seeds.json"):
        run(compose("seeds", [*overrides, f"baseline={tmp_path}/none"]))


def test_seeds_needs_a_setup(tmp_path):
    with pytest.raises(ConfigError, match="train.seeds"):
        run(compose("seeds", [f"dir={tmp_path}"]))


def test_each_seed_can_start_from_its_own_run(tmp_path, monkeypatch):
    import musicgen.experiments.seeds as seeds

    cfg = compose("seeds", ["train.overrides=['objective=dpo','objective.module.init_from=runs/seed_{seed}']",
                            "train.seeds=[3,5]"])
    calls = []
    monkeypatch.setattr(seeds.subprocess, "run", lambda cmd: calls.append(cmd) or subprocess.CompletedProcess(cmd, 0))
    seeds.train_seeds(list(cfg.train.overrides), list(cfg.train.seeds), tmp_path)
    assert [c[c.index("objective=dpo") + 1] for c in calls] == [f"objective.module.init_from=runs/seed_{s}"
                                                                 for s in (3, 5)]
    assert [c for c in calls[0] if c.startswith("seed=")] == ["seed=3"]
