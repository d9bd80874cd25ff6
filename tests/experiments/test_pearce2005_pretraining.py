"""The Pearce (2005) benchmark's fair pre-training: PPM* given the networks' pre-training corpus
(its capped trie, its fold rollback, its rows wired and paired), the pre-training variants' corpora
(the similarity filter on real tunes beside the contour 8-gram filter, every German Essen song and
every Bach chorale dropped), their report lines, and the main pre-training's stored name."""

import numpy as np
import pytest

from musicgen.experiments import pearce2005 as bm
from musicgen.experiments.pearce2005 import ppm_models
from musicgen.metrics.ppm import PPM

PPM_SETTINGS = {"escape": "c", "exclusion": True, "update_exclusion": False, "bias": 2, "tolerance": 0.03,
                "extra_stm": None}


@pytest.fixture(scope="module")
def kinder():
    """The first 40 tunes of the Essen kinder collection, as the benchmark extracts them."""
    return bm.essen_melodies(bm.ESSEN["kinder"], limit=40)


# ----------------------------------------------------------------------------- PPM* on a corpus


def test_capped_ppm_is_ppm_star_when_the_cap_is_never_reached_and_rolls_back_exactly(kinder):
    train, test = kinder[:30], kinder[30:]
    longest = max(map(len, kinder))
    full, capped = PPM(sorted({p for m in kinder for p in m})), bm.CorpusPPM(sorted({p for m in kinder for p in m}),
                                                                             longest + 1)
    full.fit(train)
    capped.fit(train)
    for m in test:
        assert np.array_equal(full.predict_sequence(m, learn=False), capped.predict_sequence(m, learn=False))
    before = [capped.predict_sequence(m, learn=False) for m in test]
    capped.checkpoint()
    capped.fit(kinder[:5])  # counts raised and nodes created ...
    assert [capped.predict_sequence(m, learn=True) for m in test]  # ... and online updates too
    capped.rollback()
    assert all(np.array_equal(b, capped.predict_sequence(m, learn=False)) for b, m in zip(before, test))
    small = bm.CorpusPPM(full.alphabet, 3).fit(train)  # a short cap keeps fewer nodes, still a distribution
    d = small.predict_sequence(test[0], learn=False)
    assert np.allclose(d.sum(1), 1.0)


def test_pretrained_ppm_with_an_empty_corpus_is_the_fold_only_reproduction(kinder):
    """Wired like Table 6.6's rows: on the same folds, an empty corpus gives exactly the reproduced
    LTM, LTM+ and combined models melody by melody (no test melody ever in its own training)."""
    ours = bm.ppm_pretrained_log_probs({"kinder": kinder}, [], PPM_SETTINGS, max_context=200, k=5)["kinder"]
    ref = bm.ppm_log_probs(kinder, **{k: PPM_SETTINGS[k] for k in ("escape", "exclusion", "update_exclusion",
                                                                    "bias")}, k=5)
    for row in ("ltm", "ltm_plus", "combined"):
        assert all(np.allclose(a, b, atol=1e-12) for a, b in zip(ours[row], ref[row])), row
    # the corpus is used: given the test melodies themselves (a leak, on purpose) the LTM is far better
    leaked = bm.ppm_pretrained_log_probs({"kinder": kinder}, kinder, PPM_SETTINGS, max_context=200, k=5)["kinder"]
    assert bm.bits_per_note(leaked["ltm"])["per_melody"] < bm.bits_per_note(ours["ltm"])["per_melody"] - 0.5


def test_pretrained_ppm_rows_resume_and_pair_with_the_pretrained_networks(kinder, tmp_path, monkeypatch):
    corpus = bm.essen_melodies("essenFolksong/erk5.abc")
    data = {"chorales": kinder[:20], "kinder": kinder[20:]}
    store = bm.Store(tmp_path)
    rows = bm.ppm_pretrained_rows(data, corpus, PPM_SETTINGS, 12, store, "pre-training corpus and training folds",
                                  k=4, n_boot=20)
    assert list(rows) == [f"{m}, pre-training corpus and training folds" for m in bm.PPM_PRETRAINED.values()]
    ltm = rows["PPM* LTM C*I, pre-training corpus and training folds"]
    assert ltm["sees"] == "training folds; pre-training" and ltm["ppm_row"] == "ltm"
    assert all(r[ds]["melodies"] == 20 for r in rows.values() for ds in data)
    assert len(list(tmp_path.glob("kinder-ppm-pretrained-*/*.npz"))) == 3

    def no_rerun(*args, **kwargs):
        raise AssertionError("computed again")

    monkeypatch.setattr(ppm_models, "ppm_pretrained_log_probs", no_rerun)  # where ppm_pretrained_rows calls it
    again = bm.ppm_pretrained_rows(data, corpus, PPM_SETTINGS, 12, store, "pre-training corpus and training folds",
                                   k=4, n_boot=20)
    assert again[next(iter(again))]["kinder"]["melody_bits"] == ltm["kinder"]["melody_bits"]
    with pytest.raises(AssertionError, match="computed again"):  # another corpus: not reused
        bm.ppm_pretrained_rows(data, corpus[:-1], PPM_SETTINGS, 12, store, "x", k=4)
    # a pre-trained network row (two seeds) pairs with the PPM* row of its corpus, melody by melody
    rng = np.random.default_rng(0)
    net = {"sees": bm.SEES["pre"], "corpus": "main", "seed_values": [0, 1]}
    for ds in data:
        by_seed = np.asarray(ltm[ds]["melody_bits"])[None] - 0.2 + rng.normal(0, 0.05, (2, 20))
        net[ds] = {"melody_bits_by_seed": by_seed.tolist(), "melody_bits": by_seed.mean(0).tolist()}
    variant = {**net, "corpus": "v", "base": "net", "seed_values": [0],
               **{ds: {"melody_bits_by_seed": (np.asarray(net[ds]["melody_bits_by_seed"][:1]) + 0.1).tolist()}
                  for ds in data}}
    every = {**{n: {**r, "corpus": "main"} for n, r in rows.items()}, "net": net, "net, variant": variant}
    out = bm.paired_pretrained(every, n_boot=50)
    d = out["against_ppm"]["net"]["kinder"]["ltm"]
    assert d["value"] == pytest.approx(-0.2, abs=0.03) and d["high"] < 0
    assert set(out["against_ppm"]["net"]["chorales"]) == {"combined", "ltm"}
    assert out["against_ppm"]["net, variant"]["kinder"] == {"combined": None, "ltm": None}  # no PPM* on corpus v
    moved = out["moves"]["net, variant"]  # on seed 0, the only seed both ran
    assert moved["base"] == "net" and moved["kinder"]["value"] == pytest.approx(0.1)


# ----------------------------------------------------------------------------- the corpora


E = "essenFolksong/"
#: Exported tunes (``<abc stem>/<tune index>``) of a small corpus: each with what the filters and
#: the variants should do with it. The similarities are those measured in tests/metrics/test_similarity.py.
CORPUS = {
    "erk30/0569": "a variant of kinder0/0060 (similarity 0.417): removed at 0.4 and 0.25; German",
    "ballad20/0011": "not a variant of fink0/0048 (0.324): removed at 0.25 only; German",
    "lux/0077": "Luxembourg: kept by the German drop",
    "test1/0000": "a tune from Germany in a mixed test file: German",
    "test1/0006": "a Chinese tune in the same file: kept",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A corpus exported as ``make data`` does (folk tunes from music21's ABC files, one Bach
    chorale outside BWV 253-438) and the benchmark melodies it must not hold (kinder tune 60, fink tune 48)."""
    from musicgen.data.corpus import export_abc_file, export_score_file, music21_corpus_dir
    from musicgen.data.music21_midi import parse_abc_tune, split_abc_tunes

    root, m21 = tmp_path_factory.mktemp("corpus"), music21_corpus_dir()
    folk = root / "folk"
    for name in CORPUS:
        stem, index = name.split("/")
        names, failed, _ = export_abc_file(m21 / E / f"{stem}.abc", folk / E / stem, {int(index)})
        assert names == [f"{index}.mid"] and not failed
    (folk / "manifest.json").write_text("{}")
    (root / "chorales").mkdir()
    export_score_file(m21 / "bach" / "bwv10.7.mxl", root / "chorales" / "bwv10.7.mid")

    def tune(stem, index):
        text = split_abc_tunes((m21 / E / f"{stem}.abc").read_text(encoding="utf-8"))[index]
        return bm.melody_events(parse_abc_tune(text).parts[0])

    return root, [tune("kinder0", 60), tune("fink0", 48)]


VARIANTS = {"strict": {"name": "strict", "similarity": 0.25, "drop": []},
            "loose": {"name": "loose", "similarity": 0.4, "drop": []},
            "nobg": {"name": "no Bach, no German", "similarity": 0.4, "drop": ["bach", "german_essen"]}}


def test_the_filters_on_real_tunes_remove_the_known_variant_and_count_what_they_remove(exported):
    root, protected = exported
    corpus, stats, by_variant, filters = bm.pretraining_corpora(root, protected, VARIANTS)
    files, _ = bm.corpus_files(root)
    sources = [s for s, _ in files]
    melody = {s: bm.midi_melody(p) for s, p in files}
    assert stats["files"] == 6 and stats["left_out_by_name"] == 0 and filters["melodies_read"] == 6
    # the contour 8-gram filter misses the known variant (a short chant sung to other figures)
    assert stats["duplicates_removed"] == filters["contour_8gram"] == 0 and len(corpus) == 6
    variant, other = melody[f"folk/{E}erk30/0569.mid"], melody[f"folk/{E}ballad20/0011.mid"]
    assert filters["similarity"]["0.4"] == {"alone": 1, "beyond_8gram": 1, "8gram_only": 0}
    assert filters["similarity"]["0.25"] == {"alone": 2, "beyond_8gram": 2, "8gram_only": 0}
    assert variant not in by_variant["loose"] and other in by_variant["loose"] and len(by_variant["loose"]) == 5
    assert variant not in by_variant["strict"] and other not in by_variant["strict"] and len(by_variant["strict"]) == 4
    assert filters["variants"]["strict"]["similarity_beyond_8gram"] == 2
    assert sources[-1] == "chorales/bwv10.7.mid" and corpus == [melody[s] for s in sources]  # order kept
    # the main corpus is what pretraining_melodies gave and gives (its stored runs are reused)
    assert bm.pretraining_melodies(root, protected) == (corpus, stats)


def test_the_german_and_bach_variant_keeps_no_german_essen_song_and_no_chorale(exported):
    root, protected = exported
    _, _, by_variant, filters = bm.pretraining_corpora(root, protected, VARIANTS)
    files, _ = bm.corpus_files(root)
    melody = {s: bm.midi_melody(p) for s, p in files}
    kept = by_variant["nobg"]
    assert [s for s, m in melody.items() if m in kept] == [f"folk/{E}lux/0077.mid", f"folk/{E}test1/0006.mid"]
    v = filters["variants"]["nobg"]
    assert v == {"dropped_by_name": 4, "contour_8gram": 0, "similarity_beyond_8gram": 0, "melodies": 2,
                 "notes": sum(map(len, kept)), "dropped_bach": 1, "dropped_german_essen": 3}
    # every Essen file of music21 is classed: the German collections by name, the rest by each tune's origin
    german = bm.essen_tune_is_german
    assert german(f"folk/{E}zuccal0/0000.mid") and german(f"folk/{E}ballad50/0001.mid")
    assert not german(f"folk/{E}han1/0000.mid") and not german(f"folk/{E}lot/0000.mid")
    assert not bm.essen_tune_is_german("folk/oneills1850/0001-0050/0000.mid")
    with pytest.raises(Exception, match="drop"):
        bm.pretraining_corpora(root, protected, {"x": {"name": "x", "similarity": None, "drop": ["german"]}})


# ----------------------------------------------------------------------------- config, report, names


def test_the_variants_config_names_known_variants_and_drops():
    from omegaconf import OmegaConf

    from musicgen.config import compose

    cfg = compose("benchmark", [])
    v = OmegaConf.to_container(cfg.pretraining_variants, resolve=True)
    assert v["model"] in cfg.models and v["run"] and set(v["run"]) <= set(v["variants"])
    assert all(set(x["drop"]) <= set(bm.DROPS) for x in v["variants"].values())
    assert v["variants"]["similarity_strict"]["similarity"] < 0.4  # stricter than the split's threshold
    assert cfg.ppm_pretrained.run and cfg.ppm_pretrained.max_context >= 8


def test_the_main_pretraining_keeps_its_stored_name(tmp_path):
    """The variants pre-train under names of their own; the main pre-training's name is the one
    the code gave before they existed (computed at d112271)."""
    spec = {"kind": "transformer", "n_layers": 1, "n_heads": 2, "d_model": 16, "d_ff": 32, "dropout": 0.0}
    train = {"steps": 0, "batch_size": 2, "lr": 1e-3, "weight_decay": 0.0, "warmup": 0, "transpose": 0}
    bm.pretrain("transformer", spec, train, [[60, 62, 64], [67, 65]], bm.Store(tmp_path), 0)
    bm.pretrain("transformer-no_bach_no_german", spec, train, [[60, 62, 64], [67, 65]], bm.Store(tmp_path), 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pretrain-transformer-d8bccedc93af.pt", "pretrain-transformer-no_bach_no_german-d8bccedc93af.pt"]


def test_the_report_shows_the_filters_the_pretrained_ppm_and_the_paired_tables():
    filters = {"melodies_read": 12000, "contour_8gram": 596, "corpus": {},
               "similarity": {"0.4": {"alone": 500, "beyond_8gram": 40, "8gram_only": 136},
                              "0.25": {"alone": 900, "beyond_8gram": 350, "8gram_only": 46}},
               "variants": {"nobg": {"dropped_by_name": 7000, "contour_8gram": 100, "similarity_beyond_8gram": 20,
                                     "melodies": 4880, "notes": 300000, "dropped_bach": 400,
                                     "dropped_german_essen": 6600}}}
    d = {"value": -0.1, "low": -0.15, "high": -0.05}
    paired = {"against_ppm": {"transformer, pre-trained and fine-tuned per fold": {
                  "chorales": {"combined": d, "ltm": d}, "kinder": {"combined": None, "ltm": d}}},
              "moves": {"PPM* LTM C*I, pre-training corpus (x) and training folds": {
                  "base": "PPM* LTM C*I, pre-training corpus and training folds", "chorales": d, "kinder": d}}}
    text = "\n".join(bm.pretraining_report(filters, {"max_context": 12, "rows": {}}, paired))
    assert "the contour 8-gram filter (the pre-training corpus's) removes 596" in text
    assert "at 0.4: 500 (40 of them kept by the 8-gram filter, which removes 136 this one keeps)" in text
    assert ("- Variant `nobg`: 4,880 melodies, 300,000 notes; dropped by name 7,000 (bach: 400, german_essen: "
            "6,600)") in text
    assert "contexts of up to 12 notes" in text
    assert ("| musicgen transformer, pre-trained and fine-tuned per fold | -0.100 [-0.150, -0.050] | -0.100 "
            "[-0.150, -0.050] | - | -0.100 [-0.150, -0.050] |") in text
    assert ("| PPM* LTM C*I, pre-training corpus (x) and training folds | PPM* LTM C*I, pre-training corpus and "
            "training folds | -0.100 [-0.150, -0.050] | -0.100 [-0.150, -0.050] |") in text


def test_quick_benchmark_with_pretraining_runs_the_pretrained_ppm_and_the_variants(tmp_path):
    """``quick=true`` with pre-training on a tiny exported corpus: the pre-trained PPM* rows on the
    main and the variant corpora, the variant network rows (one seed) beside the main ones, each
    pre-trained row paired with the PPM* of its corpus and each variant row with its main row."""
    import json

    from musicgen.config import compose

    rng = np.random.default_rng(0)

    def tune(n):
        return (64 + np.cumsum(rng.choice([-2, -1, 1, 2], size=n))).tolist()

    data = tmp_path / "data"
    (data / "benchmarks").mkdir(parents=True)
    melodies = {name: [tune(int(rng.integers(10, 20))) for _ in range(30)] for name in ("chorales", "kinder", "fink")}
    (data / "benchmarks" / "pearce2005.json").write_text(json.dumps(melodies))
    (data / "folk").mkdir()
    (data / "folk" / "manifest.json").write_text("{}")
    from tests.experiments.test_pearce2005 import _write_midi

    for i in range(6):
        _write_midi(data / f"folk/{E}erk10/{i:04d}.mid", [("", list(enumerate(tune(30))))])  # German
        _write_midi(data / f"folk/oneills1850/0001-0050/{i:04d}.mid", [("", list(enumerate(tune(30))))])
    _write_midi(data / "folk/oneills1850/0001-0050/0006.mid", [("", list(enumerate(melodies["kinder"][0])))])  # dup
    _write_midi(data / "chorales/bwv10.7.mid", [("Soprano", list(enumerate(tune(30))))])
    q = "quick_overrides"
    cfg = compose("benchmark", ["quick=true", f"paths.data_dir={data}", f"output_dir={tmp_path / 'out'}",
                                f"{q}.pretrained=true", f"{q}.rhythm.run=[]", "pretraining.steps=4",
                                "pretraining.batch_size=4", "fine_tuning.steps=3", "fine_tuning.batch_size=4",
                                "tune.fine_grid.lr=[3e-4]"])
    result = bm.pearce2005(cfg)
    f = result["pretraining_filters"]
    assert f["corpus"]["melodies"] == 13 and f["corpus"]["duplicates_removed"] == 1
    assert f["variants"]["no_bach_no_german"]["melodies"] == 6  # the O'Neill tunes
    ppm_rows = result["ppm_pretrained"]["rows"]
    assert len(ppm_rows) == 9 and {r["corpus"] for r in ppm_rows.values()} == {"main", "similarity_strict",
                                                                               "no_bach_no_german"}
    rows = result["neural"]["rows"]
    main = bm.row_names("transformer", "pre-trained and fine-tuned per fold")
    strict = bm.row_names("transformer", "pre-trained (filtered at interval-figure similarity 0.25) and fine-tuned "
                          "per fold")
    assert all(rows[r]["kinder"]["seeds"] == 2 for r in main) and all(rows[r]["kinder"]["seeds"] == 1 for r in strict)
    assert rows[strict[2]]["base"] == main[2] and rows[strict[0]]["sees"] == "training folds; pre-training"
    paired = result["paired_pretrained"]
    assert set(paired["against_ppm"][main[0]]["kinder"]) == {"combined", "ltm"}
    assert paired["against_ppm"][strict[2]]["chorales"]["combined"] is not None
    assert paired["moves"][strict[1]]["base"] == main[1] and paired["moves"][strict[1]]["kinder"] is not None
    assert any(n.startswith("PPM* LTM C*I, pre-training corpus (without Bach") for n in paired["moves"])
    report = bm.report_markdown(result)
    assert ("| training folds; pre-training | PPM* LTM C*I, pre-training corpus and training folds | "
            "exploratory |") in report
    assert "Pre-trained rows paired with PPM* pre-trained on the same corpus" in report
    assert f"| musicgen {strict[1]} | {main[1]} |" in report
