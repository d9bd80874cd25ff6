"""``make ttq-ablation``: each candidate wired to its own override (and only it), confirmation
seeds fresh, selection -> combination -> confirmation on constructed runs (the training replaced
by curves whose speed each override sets), finished runs reused; and, marked slow, the real
thing at ``quick=true``."""

import json
import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from musicgen.config import compose
from musicgen.errors import ConfigError
from musicgen.experiments.speed import ablation

# what each shipped candidate must change in the composed train config, and to what
EXPECTED = {"muon": ("optim.name", "muon"), "wsd": ("optim.schedule", "wsd"),
            "document_mask": ("model.document_mask", True), "qk_norm": ("model.qk_norm", True),
            "z_loss": ("optim.z_loss", 1e-4)}


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def test_each_arm_changes_exactly_its_own_setting():
    cfg = compose("ttq_ablation", [])
    arms = ablation.arm_overrides(cfg)
    assert list(arms) == ["default", *EXPECTED] and arms["default"] == []
    base = list(cfg.train.overrides)
    default = _flat(OmegaConf.to_container(compose("train", base), resolve=False))
    for arm, (key, value) in EXPECTED.items():
        composed = _flat(OmegaConf.to_container(compose("train", [*base, *arms[arm]]), resolve=False))
        changed = {k for k in default if composed.get(k) != default[k]}
        assert changed == {key}, arm
        assert composed[key] == value and default[key] != value, arm
    assert list(ablation.arm_overrides(compose("ttq_ablation", ["arms=[wsd]"]))) == ["default", "wsd"]
    with pytest.raises(ConfigError, match="arms="):
        ablation.arm_overrides(compose("ttq_ablation", ["arms=[adam2]"]))


def test_confirmation_seeds_are_fresh():
    seeds, confirm = ablation.check_confirm_seeds(compose("ttq_ablation", []))
    assert len(seeds) == len(confirm) == 3 and not set(seeds) & set(confirm)
    with pytest.raises(ConfigError, match="fresh"):
        ablation.check_confirm_seeds(compose("ttq_ablation", ["confirm_seeds=[2,3,4]"]))


# ----------------------------------------------------------------------------- constructed runs

SPEED = {"optim.name=muon": 0.6, "optim.schedule=wsd": 0.8, "model.qk_norm=true": 1.15}
NAMES = [f"p{i}" for i in range(30)]
NOTES = np.random.default_rng(7).integers(20, 100, size=30)
HARD = np.random.default_rng(8).gamma(2.0, 1.0, size=30)


def fake_arm_run(calls):
    """Curves 2.5 + 3 exp(-t / (150 f)), f the product of the overrides' speeds with a little noise
    per run: an arm with f reaches the default's final value in about f of its time."""

    def arm_run(cfg, overrides, seed, run_dir, device):
        calls.append((tuple(overrides), seed))
        f = math.prod(SPEED.get(o, 1.0) for o in overrides)
        rng = np.random.default_rng(1000 * seed + sum(map(ord, "".join(overrides))))
        f *= math.exp(rng.normal(0, 0.03))
        t = 20.0 * np.arange(1, 31)
        values = 2.5 + 3 * np.exp(-t / (150 * f))
        curve = [{"wall_s": float(w), "step": 10 * (i + 1), "nats_per_note": float(v)}
                 for i, (w, v) in enumerate(zip(t, values))]
        nll = NOTES * (HARD + values[-1] - 2.5) + rng.normal(0, 0.5, size=30)
        return {"seed": seed, "overrides": list(overrides),
                "ours": {"curve": curve, "steps": 300, "run_dir": str(run_dir)},
                "test": {"names": NAMES, "notes": NOTES.tolist(), "nll": nll.tolist()}}

    return arm_run


def test_ablation_selects_combines_confirms_and_resumes(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ablation, "arm_run", fake_arm_run(calls))
    docs = tmp_path / "docs"
    docs.mkdir()
    overrides = [f"out_dir={tmp_path / 'abl'}", "arms=[muon,wsd,qk_norm]", "device=cpu", "publish=true",
                 f"publish_dir={docs}", f"race={tmp_path / 'no_race' / 'ttq.json'}"]
    res = ablation.run(compose("ttq_ablation", overrides), overrides)

    selection = {(o, s) for o, s in calls if s in (0, 1, 2)}
    for arm in ("muon", "wsd", "qk_norm"):
        ovr = tuple(compose("ttq_ablation", []).candidates[arm])
        assert {(ovr, s) for s in (0, 1, 2)} <= selection
    assert {((), s) for s in (0, 1, 2)} <= selection
    assert res["helped"] == ["muon", "wsd"] and res["combo"] == ["muon", "wsd"]
    combo = ("optim.name=muon", "optim.schedule=wsd")
    assert {(combo, s) for s in (0, 1, 2)} <= selection
    assert res["selection"]["muon"]["ratio"]["value"] == pytest.approx(0.6, rel=0.06)
    # slower: it never reaches the default's final value within the same budget, and its test NLL is worse
    assert res["selection"]["qk_norm"]["ratio"]["value"] is None
    assert res["selection"]["qk_norm"]["ratio"]["not_reached"] == 3
    assert res["selection"]["qk_norm"]["test"]["minus_default"]["value"] > 0
    assert res["winner"] == "combo"
    confirmation = [(o, s) for o, s in calls if s not in (0, 1, 2)]
    assert sorted(confirmation) == sorted([((), s) for s in (3, 4, 5)] + [(combo, s) for s in (3, 4, 5)])
    assert res["confirmed"] and res["confirmation"]["combo"]["ratio"]["high"] < 1
    # the default against itself: ratio 1, no difference
    assert res["selection"]["default"]["ratio"]["value"] == pytest.approx(1.0)
    assert res["selection"]["default"]["test"]["minus_default"]["value"] == pytest.approx(0.0)
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "| muon | `optim.name=muon` |" in md and "**confirmed**" in md and "did not help: qk_norm" in md
    for section in ("selection", "confirmation"):  # the performance note shows these tables as written here
        assert f"<!-- --8<-- [start:{section}] -->\n| arm |" in md and f"<!-- --8<-- [end:{section}] -->" in md
    assert (docs / "results" / "ttq-ablation.md").is_file()
    assert json.loads((tmp_path / "abl" / "ablation.json").read_text())["winner"] == "combo"

    # again: every run is reused, nothing trains
    n = len(calls)
    again = ablation.run(compose("ttq_ablation", overrides), overrides)
    assert len(calls) == n and again["selection"] == res["selection"] and again["confirmed"]
    with pytest.raises(ConfigError, match="other settings"):
        ablation.run(compose("ttq_ablation", [*overrides, "budget_s=300"]), [*overrides, "budget_s=300"])


def test_ablation_without_a_helping_candidate_confirms_nothing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ablation, "arm_run", fake_arm_run(calls))
    overrides = [f"out_dir={tmp_path / 'abl'}", "arms=[qk_norm]", "device=cpu",
                 f"race={tmp_path / 'no_race' / 'ttq.json'}"]
    res = ablation.run(compose("ttq_ablation", overrides), overrides)
    assert res["helped"] == [] and res["winner"] is None and res["confirmation"] is None and not res["confirmed"]
    assert all(s in (0, 1, 2) for _, s in calls)
    assert "nothing to confirm" in (tmp_path / "abl" / "ablation.md").read_text()


def test_ablation_against_the_race_peer(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ablation, "arm_run", fake_arm_run(calls))
    race = tmp_path / "ttq.json"
    overrides = [f"out_dir={tmp_path / 'abl'}", "arms=[muon]", "device=cpu", "target=peer", f"race={race}"]
    with pytest.raises(ConfigError, match="make ttq"):
        ablation.run(compose("ttq_ablation", overrides), overrides)
    # the peer's curves floor + 3 exp(-t / 100) end at other values on each seed than the target
    # (2.8); its time to 2.8 is read off each curve, not its time to that seed's own final
    floors, t = [2.55, 2.65, 2.75], 20.0 * np.arange(1, 31)
    curves = [[{"wall_s": float(w), "step": 10 * (i + 1), "nats_per_note": float(f + 3 * math.exp(-w / 100))}
               for i, w in enumerate(t)] for f in floors]
    finals = [c[-1]["nats_per_note"] for c in curves]
    assert all(abs(f - 2.8) > 0.04 for f in finals)
    peer_times = [100 * math.log(3 / (2.8 - f)) for f in floors]  # where each curve crosses 2.8
    race.write_text(json.dumps({"seeds": [0, 1, 2], "records": [{"seed": s, "peer": {"curve": c}}
                                                                 for s, c in enumerate(curves)],
                                "summary": {"final_val": {"peer": {"value": 2.8}},
                                            "per_seed": [{"peer_reach": {"interpolated_wall_s": 600.0}}] * 3}}))
    res = ablation.run(compose("ttq_ablation", overrides), overrides)
    assert res["target"] == 2.8
    # every run races to 2.8: the default's curve 2.5 + 3 exp(-t/150) gets there near 150 ln 10 s
    default = res["selection"]["default"]
    times = [s["reach"]["interpolated_wall_s"] for s in default["per_seed"]]
    assert np.mean(times) == pytest.approx(150 * math.log(10), rel=0.1)
    vs = res["vs_peer"]["selection"]["default"]
    gm = math.exp(np.mean(np.log(times)) - np.mean(np.log(peer_times)))
    assert vs["value"] == pytest.approx(gm, rel=0.02) and vs["low"] < gm < vs["high"]
    assert vs["verdict"] in ("met", "missed", "inconclusive")
    assert res["vs_peer"]["confirmation"]["muon"]["value"] < vs["value"]  # muon: about 0.6 of the default's time
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "## Against the tuned peer" in md and "<!-- --8<-- [start:vs_peer] -->\n| seeds |" in md

    # a seed where the peer never gets down to the target is left out, and the page says so
    race.write_text(json.dumps({"seeds": [0, 1, 2], "records": [{"seed": s, "peer": {"curve": c}}
                                                                 for s, c in enumerate(curves)],
                                "summary": {"final_val": {"peer": {"value": min(finals) - 0.01}}}}))
    cfg = compose("ttq_ablation", overrides)
    value, words, times = ablation.resolve_target(cfg)
    assert times == [] and "reached it on 0 of its 3 seeds" in words


def test_default_reuses_the_race_run_of_the_same_command(tmp_path, monkeypatch):
    """make ttq's run of ours on a seed is the default recipe's run of that seed: reused, not trained
    again; a race run with another budget is not."""
    calls = []
    monkeypatch.setattr(ablation, "arm_run", fake_arm_run(calls))
    race = tmp_path / "ttq"
    overrides = [f"out_dir={tmp_path / 'abl'}", "arms=[wsd]", "device=cpu", f"race={race / 'ttq.json'}"]
    cfg = compose("ttq_ablation", overrides)
    made = fake_arm_run([])
    for seed, budget in ((0, 600.0), (1, 300.0)):
        rec = made(cfg, [], seed, race / f"seed_{seed}" / "ours", None)
        (race / f"seed_{seed}").mkdir(parents=True)
        (race / f"seed_{seed}" / "race.json").write_text(json.dumps(
            {"seed": seed, "ours": rec["ours"], "test": {"ours": rec["test"], "peer": rec["test"]},
             "key": {"budget_s": budget, "train_overrides": ablation.train_overrides(cfg, seed)}}))
    res = ablation.run(cfg, overrides)
    assert ((), 0) not in calls and ((), 1) in calls and ((), 2) in calls
    kept = json.loads((tmp_path / "abl" / "default" / "seed_0" / "record.json").read_text())
    assert kept["from_race"] == str(race / "seed_0" / "race.json") and kept["ours"] == rec_curve(race, 0)
    assert res["runs"]["selection"]["default"][0] == str(race / "seed_0" / "ours")
    n = len(calls)
    ablation.run(compose("ttq_ablation", overrides), overrides)  # reused from its own record now
    assert len(calls) == n
    off = [*overrides, f"out_dir={tmp_path / 'abl2'}", "reuse_race=false"]
    ablation.run(compose("ttq_ablation", off), off)
    assert ((), 0) in calls[n:]


def rec_curve(race, seed):
    return json.loads((race / f"seed_{seed}" / "race.json").read_text())["ours"]


@pytest.mark.slow
def test_quick_ablation_end_to_end(tmp_path, real_midi_dir):
    out = tmp_path / "abl"
    overrides = ["quick=true", f"out_dir={out}", f"data.root={real_midi_dir / 'folk'}",
                 f"data.cache_dir={tmp_path / 'cache'}", "device=cpu", f"race={tmp_path / 'no_race' / 'ttq.json'}"]
    res = ablation.run(compose("ttq_ablation", overrides), overrides)
    sel = res["selection"]
    assert list(sel)[:3] == ["default", "qk_norm", "z_loss"]
    for arm in ("qk_norm", "z_loss"):
        rec = json.loads((out / arm / "seed_0" / "record.json").read_text())
        cfg = OmegaConf.load(out / arm / "seed_0" / "config.yaml")
        assert {"qk_norm": cfg.model.qk_norm is True, "z_loss": cfg.optim.z_loss == 1e-4}[arm]
        assert rec["ours"]["curve"] and sel[arm]["test"]["pieces"] >= 2
        assert math.isfinite(sel[arm]["test"]["minus_default"]["value"])
    assert (out / "ablation.md").is_file() and (out / "curves.png").is_file()
