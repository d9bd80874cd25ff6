"""The notes budget's early stopping at convergence: the rule's figure on constructed curves, and a
real (smoke-sized) run that stops at the first validation where the rule holds, once past its share
of the budget, against the same run without early stopping, which sees its whole budget."""

import csv
import math

import pytest
from helpers import smoke_override_list

from musicgen.config import compose
from musicgen.experiments.leaderboard.protocol import converged
from musicgen.training.fit import train
from musicgen.training.notes_budget import tail_improvement


def test_tail_improvement_is_the_best_nll_gain_over_the_last_fifth():
    falling = [(100.0 * (i + 1), v) for i, v in enumerate([3.0, 2.8, 2.6, 2.4, 2.3, 2.2, 2.1, 2.0, 1.9, 1.8])]
    assert tail_improvement(falling) == pytest.approx((2.0 - 1.8) / 2.0)  # from 800 notes (four fifths) on
    worse_at_the_end = [(100.0, 3.0), (200.0, 2.0), (300.0, 2.5), (400.0, 2.6), (500.0, 2.7)]
    assert tail_improvement(worse_at_the_end) == 0.0  # the best so far, not the last value
    # validations as a run logs them (float32): the one at four fifths of the end still counts
    logged = [(299873.0, 3.549), (599746.0, 3.086), (899618.9375, 2.965), (1199492.0, 2.894), (1499364.875, 2.878)]
    assert tail_improvement(logged) == pytest.approx((2.894 - 2.878) / 2.894)
    assert math.isnan(tail_improvement([(100.0, 3.0)]))  # nothing before the last fifth
    assert math.isnan(tail_improvement([]))


def budget_run(data_dir, tmp_path, stop: str) -> list[dict[str, float]]:
    budget = ("+callbacks.notes_budget={_target_:musicgen.training.notes_budget.NotesBudget,"
              f"max_notes:{NOTES},validations:10{stop}}}")
    cfg = compose("train", ["+version=v7", *smoke_override_list(tmp_path, data_dir), "trainer.max_steps=-1",
                            "trainer.limit_train_batches=null", "trainer.max_epochs=1000",
                            "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=1000",
                            "callbacks.early_stopping=null", "callbacks.sample_metrics=null", "logger=csv", budget])
    train(cfg)
    rows = csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open())
    return [{"notes": float(r["budget/notes_seen"]), "nll_per_note": float(r["val/loss"])} for r in rows
            if r.get("budget/notes_seen") and r.get("val/loss")]


NOTES = 4000


def test_early_stopping_at_convergence_stops_a_run_once_past_its_share(prepared_data_dir, tmp_path):
    whole = budget_run(prepared_data_dir, tmp_path / "whole", "")
    assert whole[-1]["notes"] >= NOTES and len(whole) >= 10
    assert not converged(whole, NOTES)["stopped_early"]
    # a tolerance every improvement is below: the rule holds at the first validation past 30% of the
    # budget that has a validation before its last fifth
    stopped = budget_run(prepared_data_dir, tmp_path / "stopped", ",stop_tolerance:1000.0,stop_after:0.3")
    first = next(p["notes"] for i, p in enumerate(whole) if p["notes"] >= 0.3 * NOTES
                 and any(q["notes"] <= 0.8 * p["notes"] for q in whole[:i]))
    assert stopped[-1]["notes"] == pytest.approx(first) and first < 0.5 * NOTES
    assert [p["notes"] for p in stopped] == [p["notes"] for p in whole[:len(stopped)]]  # the same run until then
    reading = converged(stopped, NOTES)
    assert reading["stopped_early"] and reading["converged"] and "stopped early" in reading["reason"]
