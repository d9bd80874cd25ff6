"""Bar infilling (control.infilling, data.fim, generation.infilling): training windows rearranged
on real tokens, an infilling run trained at smoke size, the bar-count constraint on random logits,
a real tune regenerated in bars 2-3 with every other note kept as it was, the measurement, the
one-line errors, and infilling together with conditioning (bars of the file's own metre, the
asked key after PRE BOS)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import gen_cfg, run_cli, smoke_override_list

from musicgen.checkpoint import load_run, load_run_cache
from musicgen.cli.generate import run_generation
from musicgen.config import compose
from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX
from musicgen.control.infilling import context_ids, parse_bars
from musicgen.data.fim import InfillWindows, rearrange
from musicgen.data.prefixed import PrefixedWindows
from musicgen.data.windows import TokenWindows
from musicgen.errors import ConfigError
from musicgen.evaluation.run import evaluate
from musicgen.experiments.infilling import measure_infilling
from musicgen.generation import SamplingConfig, generate, sampling_grammar
from musicgen.generation.infilling import infill_model
from musicgen.midi_io import read_score
from musicgen.tokenizers.bars import bar_starts
from musicgen.tokenizers.base import ExtendedTokenizer
from musicgen.training.fit import train
from musicgen.training.preflight import preflight

WINDOW = 128


@pytest.fixture(scope="module")
def infill_run(tmp_path_factory, prepared_data_dir):
    tmp = tmp_path_factory.mktemp("infill")
    train(compose("train", ["+version=v7", *smoke_override_list(tmp, prepared_data_dir), "infill=bars",
                            f"data.seq_len={WINDOW}", f"model.max_seq_len={WINDOW}", "trainer.max_steps=8"]))
    return tmp / "run"


@pytest.fixture(scope="module")
def loaded(infill_run):
    run = load_run(infill_run)
    return run, bar_starts(run.tokenizer, run.infill_vocab.base), load_run_cache(run).splits["train"]


def test_the_run_records_its_sentinels_and_its_vocabulary(loaded):
    run, is_bar, _ = loaded
    assert run.infill_vocab.base == run.tokenizer.vocab_size and run.infill_vocab.rate == 0.5
    assert run.net.config.vocab_size == run.tokenizer.vocab_size + 4
    assert is_bar.sum() >= 1 and run.tokenizer.tokens([int(np.flatnonzero(is_bar)[0])])[0] == "Bar_None"
    # the training-time sampler's grammar covers the sentinels and never admits them
    grammar = sampling_grammar(ExtendedTokenizer(run.tokenizer, 4), SamplingConfig())
    assert grammar.vocab_size == run.infill_vocab.vocab_size and not grammar.allowed[:, run.infill_vocab.base :].any()


def test_a_rearranged_window_is_the_window_reordered_around_whole_bars(loaded):
    run, is_bar, train_split = loaded
    vocab, tokens = run.infill_vocab, np.asarray(train_split.tokens, dtype=np.int64)
    rng, done = np.random.default_rng(0), 0
    for start in range(0, len(tokens) - WINDOW - 1, 29):
        seq = tokens[start : start + WINDOW + 1]
        new = rearrange(seq, is_bar, vocab, rng)
        if new is None:
            continue
        done += 1
        assert len(new) == len(seq)
        p, s, m, e = (np.flatnonzero(new == t) for t in (vocab.pre, vocab.suf, vocab.mid, vocab.end))
        assert [len(p), len(s), len(m), len(e)] == [1, 1, 1, 1] and p[0] == 0 and e[0] == len(new) - 1
        before, after, middle = new[1 : s[0]], new[s[0] + 1 : m[0]], new[m[0] + 1 : e[0]]
        assert np.array_equal(np.concatenate([before, middle, after]), seq[: len(seq) - 4])  # nothing lost
        assert is_bar[middle[0]] and not np.isin(middle, [BOS_ID, EOS_ID]).any()  # whole bars of one piece
        assert 1 <= is_bar[middle].sum() <= vocab.max_bars
        assert len(after) == 0 or is_bar[after[0]] or after[0] == EOS_ID  # the span ends at a bar line
    assert done >= 10


def test_a_share_of_training_windows_is_rearranged_the_same_way_every_time(loaded):
    run, is_bar, st = loaded
    vocab = run.infill_vocab
    plain = TokenWindows(st.tokens, st.offsets, WINDOW, 8, "causal")
    ds = InfillWindows(plain, vocab, is_bar, seed=0)
    x, y = ds.__getitems__(list(range(len(ds))))
    px, py = plain.__getitems__(list(range(len(ds))))
    fim = x[:, 0] == vocab.pre
    assert len(ds) >= 40 and 0.3 < fim.float().mean() < 0.7
    assert torch.equal(x[~fim], px[~fim]) and torch.equal(y[~fim], py[~fim])  # the others are left to right
    assert (y[fim][:, -1] == vocab.end).all()  # END is learned, ending the middle
    assert not torch.isin(y[fim], torch.tensor([vocab.pre, vocab.suf, vocab.mid])).any()
    assert (y[fim] == IGNORE_INDEX).sum() == 2 * int(fim.sum())  # the SUF and MID targets
    x2, y2 = ds.__getitems__(list(range(len(ds))))
    assert torch.equal(x, x2) and torch.equal(y, y2)  # the same windows after a resume


class RandomLogits(nn.Module):
    """A stand-in network: random logits over a vocabulary, whatever the context."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size, self.context_len = vocab_size, 512
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, idx, input_pos=None, last_only=True):
        return 4 * torch.randn(idx.size(0), self.vocab_size, generator=self.gen)


def test_a_middle_has_exactly_the_bars_asked_for_under_random_logits(loaded):
    run, is_bar, _ = loaded
    vocab = run.infill_vocab
    grammar = sampling_grammar(run.tokenizer, SamplingConfig())
    for n_bars in (1, 3):
        net = infill_model(RandomLogits(vocab.vocab_size), [vocab.pre, BOS_ID, vocab.suf, EOS_ID, vocab.mid], vocab,
                           is_bar, n_bars)
        out = generate(net, torch.full((64, 1), BOS_ID), 96, SamplingConfig(temperature=1.5, top_k=0, top_p=1.0),
                       generator=torch.Generator().manual_seed(1), stop_at_eos=True, grammar=grammar)
        ended = 0
        for row in out[:, 1:].tolist():
            middle = row[: row.index(EOS_ID)] if EOS_ID in row else row
            assert middle and is_bar[middle[0]] and max(middle) < vocab.base  # a bar first, no sentinel
            bars = int(is_bar[middle].sum())
            assert bars <= n_bars and (EOS_ID not in row or bars == n_bars)
            ended += EOS_ID in row
            assert run.tokenizer.syntax_errors(middle) == 0
        assert ended > 0


def test_infilling_a_real_tune_keeps_every_note_outside_the_bars(infill_run, folk_midi_files, tmp_path):
    f = folk_midi_files[0]
    report = run_generation(gen_cfg(infill_run, tmp_path, ["task=infill", f"prompt.file={f}", "infill.bars=2-3",
                                                           "audio.enabled=false"], num_samples=3))
    original = read_score(f)
    lo, hi = report["span_ticks"]
    assert (lo, hi) == (4 * original.ticks_per_quarter, 12 * original.ticks_per_quarter)

    def notes(score, inside):
        return sorted((n.time, n.duration, n.pitch, n.velocity) for t in score.tracks for n in t.notes
                      if (lo <= n.time < hi) == inside)

    assert (tmp_path / "original.png").stat().st_size > 0
    saved = json.loads((tmp_path / "infill.json").read_text())
    assert saved["bars"] == "2-3" and len(saved["samples"]) == 3
    for s in saved["samples"]:
        filled = read_score(tmp_path / s["midi"])
        assert notes(filled, inside=False) == notes(original, inside=False)  # note for note
        assert all(t + d <= hi for t, d, _, _ in notes(filled, inside=True))
        assert s["bars"] <= 2 and (not s["ended_at_end"] or s["bars"] == 2) and s["syntax_errors"] == 0
        assert (tmp_path / s["png"]).stat().st_size > 0


def test_an_infilling_run_continues_without_sentinels_and_is_measured(infill_run, tmp_path):
    report = run_generation(gen_cfg(infill_run, tmp_path, ["audio.enabled=false"], num_samples=2,
                                    max_new_tokens=24, **{"prompt.source": "none"}))
    base = load_run(infill_run).infill_vocab.base
    assert all(s["ids"] and max(s["ids"]) < base for s in report["samples"])
    ev = evaluate(compose("evaluate", [f"ckpt_path={infill_run}", f"output_dir={tmp_path / 'eval'}", "num_samples=2",
                                       "max_new_tokens=16", "bootstrap=20", "real_examples=0", "audio.enabled=false"]))
    assert ev["model"]["nll_per_note"]["value"] > 0  # scored over the tokeniser's ids, sampled without sentinels
    m = measure_infilling(str(infill_run), n_bars=1, n_boot=50)
    assert m["pieces"] >= 1 and m["notes"] > 0
    both, prefix = m["nll_per_note_prefix_and_suffix"]["value"], m["nll_per_note_prefix_only"]["value"]
    assert both > 0 and prefix > 0 and m["difference"]["value"] == pytest.approx(both - prefix, abs=1e-3)


def test_musicgen_infilling_writes_the_measurement_into_the_run(infill_run, tmp_path):
    from musicgen.experiments.infilling import run

    copy = tmp_path / "run"  # the shared run stays as it is
    shutil.copytree(infill_run, copy)
    result = run(compose("infilling", [f"ckpt_path={copy}", "bars=1", "n_boot=50", "device=cpu"]))
    assert result.pop("out") == str(copy / "infilling.json")
    text = (copy / "infilling.json").read_text()
    written, direct = json.loads(text), measure_infilling(str(copy), n_bars=1, n_boot=50)
    assert text == json.dumps(result, indent=1) + "\n" == json.dumps(direct, indent=1) + "\n"  # as text: NaN != NaN
    assert written["bars"] == 1 and written["pieces"] >= 1 and written["ckpt_path"].startswith(str(copy))


def test_context_keeps_the_bars_nearest_the_span():
    from musicgen.control.infilling import InfillVocab

    vocab, bar = InfillVocab(base=100), 50
    ids = [bar, 10, 11, bar, 12, bar, 13, 14, bar, 15, bar, 16]  # five bars
    starts = np.flatnonzero(np.asarray(ids) == bar)
    context, before, middle = context_ids(ids, starts, (2, 3), vocab, budget=100)
    assert middle == [bar, 13, 14]
    assert context == [100, BOS_ID, bar, 10, 11, bar, 12, 101, bar, 15, bar, 16, EOS_ID, 102] and before[0] == BOS_ID
    context, before, _ = context_ids(ids, starts, (2, 3), vocab, budget=8)
    assert context == [100, bar, 12, 101, bar, 15, bar, 102] and before == [bar, 12]  # the nearest tokens kept


def test_bad_requests_are_one_line_errors(smoke_run, infill_run, folk_midi_files, tmp_path):
    f = folk_midi_files[0]
    with pytest.raises(ConfigError, match="trained without infilling"):
        run_generation(gen_cfg(smoke_run, tmp_path, ["task=infill", f"prompt.file={f}", "infill.bars=2-3"]))
    proc = run_cli("musicgen", ["infilling", f"ckpt_path={smoke_run}", "device=cpu"], timeout=120)
    lines = proc.stderr.strip().splitlines()  # the CLI: one line
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert lines[0].endswith("was trained without infilling (infill=bars)")
    for bad in ("3-2", "0-1", "x", "null"):
        with pytest.raises(ConfigError, match="infill.bars="):
            parse_bars(None if bad == "null" else bad)
    with pytest.raises(ConfigError, match="the file has"):
        run_generation(gen_cfg(infill_run, tmp_path, ["task=infill", f"prompt.file={f}", "infill.bars=90-99"]))
    with pytest.raises(ConfigError, match="task=remix"):
        run_generation(gen_cfg(infill_run, tmp_path, ["task=remix"]))
    with pytest.raises(ConfigError, match="REMI"):
        preflight(compose("train", ["+version=v2", "infill=bars"]))
    with pytest.raises(ConfigError, match="packed causal"):
        preflight(compose("train", ["+version=v6", "infill=bars"]))
    with pytest.raises(ConfigError, match="infill.rate"):
        preflight(compose("train", ["+version=v7", "infill=bars", "infill.rate=2"]))


def _rest_across_bars(tmp_path) -> tuple[Path, int]:
    """A tune with a rest from the end of bar 2 to bar 4: notes in bars 1, 2, 4 and 5."""
    import symusic

    tpq = 480
    score = symusic.Score(tpq)
    track = symusic.Track(name="melody", program=0)
    for start, duration, pitch in ((0, 4 * tpq, 60), (4 * tpq, tpq, 62), (12 * tpq, 4 * tpq, 64), (16 * tpq, tpq, 65)):
        track.notes.append(symusic.Note(start, duration, pitch, 80))
    score.tracks.append(track)
    path = tmp_path / "rest.mid"
    score.dump_midi(str(path))
    return path, tpq


def test_bars_inside_a_rest_that_crosses_bar_lines_are_regenerable(loaded, infill_run, tmp_path):
    """Issue 33: the shipped tokeniser (``rests_cross_bars: false``) writes a Bar token at every bar
    line, so bars 3-4, which start inside a rest, are regenerated, every other note kept (onset,
    pitch, duration)."""
    from musicgen.tokenizers.bars import bar_numbers, notes_per_id

    run, is_bar, _ = loaded
    path, tpq = _rest_across_bars(tmp_path)
    ids = run.tokenizer.encode(read_score(path))
    starts = np.flatnonzero(is_bar[np.asarray(ids)])
    numbers = bar_numbers(run.tokenizer, ids, starts, notes_per_id(run.tokenizer, run.infill_vocab.base))
    assert numbers.tolist() == [0, 1, 2, 3, 4]  # MidiTok's own encoding writes [0, 1, 4] (below)
    report = run_generation(gen_cfg(infill_run, tmp_path / "a", ["task=infill", f"prompt.file={path}",
                                                                 "infill.bars=3-4", "audio.enabled=false"]))
    assert report["bar_tokens"] == 2 and report["span_ticks"] == (8 * tpq, 16 * tpq)
    filled = read_score(tmp_path / "a" / "sample_00.mid")
    outside = [n for t in filled.tracks for n in t.notes if not 8 * tpq <= n.time < 16 * tpq]
    kept = sorted((n.time, n.pitch, n.duration) for n in outside)
    assert kept == [(0, 60, 4 * tpq), (4 * tpq, 62, tpq), (16 * tpq, 65, tpq)]


def test_a_run_with_midi_toks_rests_counts_bars_in_time_and_refuses_hidden_bars_in_one_line(tmp_path_factory,
                                                                                            prepared_data_dir):
    """A run trained before ``rests_cross_bars`` (MidiTok's encoding: a rest that crosses bar lines
    has no Bar tokens) counts the bars it can see in time, fills spans whose ends it can see, and
    refuses the others in one line."""
    from musicgen.tokenizers.bars import bar_numbers, notes_per_id

    tmp = tmp_path_factory.mktemp("infill_old")
    train(compose("train", ["+version=v7", *smoke_override_list(tmp, prepared_data_dir), "infill=bars",
                            "tokenizer.rests_cross_bars=true", f"data.seq_len={WINDOW}", f"model.max_seq_len={WINDOW}",
                            "trainer.max_steps=4"]))
    run = load_run(tmp / "run")
    path, tpq = _rest_across_bars(tmp)
    ids = run.tokenizer.encode(read_score(path))
    is_bar = bar_starts(run.tokenizer, run.infill_vocab.base)
    starts = np.flatnonzero(is_bar[np.asarray(ids)])
    numbers = bar_numbers(run.tokenizer, ids, starts, notes_per_id(run.tokenizer, run.infill_vocab.base))
    assert numbers.tolist() == [0, 1, 4]
    with pytest.raises(ConfigError, match="bar 3 starts inside a rest"):
        run_generation(gen_cfg(tmp / "run", tmp / "a", ["task=infill", f"prompt.file={path}", "infill.bars=3-4"]))
    report = run_generation(gen_cfg(tmp / "run", tmp / "b", ["task=infill", f"prompt.file={path}",
                                                             "infill.bars=2-4", "audio.enabled=false"]))
    assert report["bar_tokens"] == 1 and report["span_ticks"] == (4 * tpq, 16 * tpq)  # one written bar line
    filled = read_score(tmp / "b" / "sample_00.mid")
    kept = sorted((n.time, n.pitch) for t in filled.tracks for n in t.notes if not 4 * tpq <= n.time < 16 * tpq)
    assert kept == [(0, 60), (16 * tpq, 65)]


# ----------------------------------------------------------------------------- with conditioning

def test_bar_lines_follow_time_signatures_when_the_tokeniser_writes_them():
    import symusic

    from musicgen.tokenizers.bars import bar_lines

    q = 480
    score = symusic.Score(q)
    score.time_signatures.append(symusic.TimeSignature(0, 3, 4))
    score.time_signatures.append(symusic.TimeSignature(6 * q, 6, 8))  # after two bars of 3/4
    track = symusic.Track(name="m", program=0)
    track.notes.append(symusic.Note(13 * q, q, 60, 80))  # the music ends at 14 quarter notes
    score.tracks.append(track)
    assert bar_lines(score, True).tolist() == [0, 3 * q, 6 * q, 9 * q, 12 * q, 15 * q]
    assert bar_lines(score, False).tolist() == [0, 4 * q, 8 * q, 12 * q, 16 * q]  # V6-V8's 4/4 bars


@pytest.fixture(scope="module")
def cond_infill_run(tmp_path_factory, prepared_data_dir):
    tmp = tmp_path_factory.mktemp("cond_infill")
    train(compose("train", ["+version=v7", *smoke_override_list(tmp, prepared_data_dir), "infill=bars",
                            "conditioning=full", f"data.seq_len={WINDOW}", f"model.max_seq_len={WINDOW}",
                            "trainer.max_steps=8"]))
    return tmp / "run"


@pytest.mark.parametrize("every_window", [True, False])
def test_rearranged_windows_of_a_conditioned_run_keep_the_attributes(tmp_path, prepared_data_dir, every_window):
    cfg = compose("train", ["+version=v7", *smoke_override_list(tmp_path, prepared_data_dir), "infill=bars",
                            "conditioning=key", "conditioning.drop_rate=0.0", "infill.rate=1.0",
                            f"conditioning.every_window={every_window}"])
    dm = preflight(cfg).datamodule
    dm.setup("fit")
    cbase, vocab = dm.conditioner.vocab.base, dm.infill_vocab
    assert vocab.base == cbase + len(dm.conditioner.vocab) and dm.checkpoint_metadata.keys() >= {"conditioning",
                                                                                                "infill"}
    train_ds = dm.datasets["train"]
    assert isinstance(train_ds, InfillWindows) and len(train_ds) == len(train_ds.windows)
    assert isinstance(train_ds.windows, PrefixedWindows) == every_window
    x, y = train_ds.__getitems__(list(range(len(train_ds))))

    def attribute(t):
        return (t >= cbase) & (t < vocab.base)

    rearranged = x[:, 0] == vocab.pre
    assert rearranged.float().mean() > 0.5
    at_bos = rearranged & (x[:, 1] == BOS_ID)
    inside = rearranged & (x[:, 1] != BOS_ID)  # windows that start inside a piece
    assert at_bos.sum() >= 1 and inside.sum() >= 10
    assert attribute(x[at_bos, 2]).all()  # PRE BOS <key> ...
    # with every_window, PRE <key> ... (the piece's key in front); without, only a window that starts
    # on its piece's key token has one there
    share = attribute(x[inside, 1]).float().mean()
    assert share == 1.0 if every_window else share < 0.2
    assert not attribute(y[rearranged]).any()  # attributes are context, never targets
    for row in x[rearranged]:
        mid = int((row == vocab.mid).nonzero()[0])
        assert not attribute(row[mid + 1:]).any()  # a middle is music only


def test_a_conditioned_infilling_run_fills_bars_of_its_metre_as_asked(cond_infill_run, folk_midi_files, tmp_path):
    run = load_run(cond_infill_run)
    assert run.conditioning is not None and run.infill_vocab is not None
    assert run.infill_vocab.base == run.conditioning.vocab_size
    tune = next(f for f in folk_midi_files if len(read_score(f).time_signatures)
                and read_score(f).time_signatures[0].numerator in (3, 6))
    original = read_score(tune)
    ts = original.time_signatures[0]
    bar = 4 * original.ticks_per_quarter * ts.numerator // ts.denominator  # a bar of the tune's own metre
    report = run_generation(gen_cfg(cond_infill_run, tmp_path, ["task=infill", f"prompt.file={tune}",
                                                               "infill.bars=2-3", "audio.enabled=false",
                                                               "cond.key=D", "cond.mode=major",
                                                               "sampling.cfg_scale=2.0"], num_samples=2))
    lo, hi = report["span_ticks"]
    assert (lo, hi) == (bar, 3 * bar)
    assert report["conditioning"]["attributes"]["key"] == "D_major" and report["conditioning"]["cfg_scale"] == 2.0

    def notes(score, inside):
        return sorted((n.time, n.duration, n.pitch) for t in score.tracks for n in t.notes
                      if (lo <= n.time < hi) == inside)

    for s in report["samples"]:
        assert all(i < run.conditioning.base for i in s["ids"])  # neither attribute tokens nor sentinels
        filled = read_score(tmp_path / s["midi"])
        assert notes(filled, inside=False) == notes(original, inside=False)
        assert all(t + d <= hi for t, d, _ in notes(filled, inside=True))
    with pytest.raises(ConfigError, match="cond.key=H"):
        run_generation(gen_cfg(cond_infill_run, tmp_path, ["task=infill", f"prompt.file={tune}", "infill.bars=2-3",
                                                           "cond.key=H"]))
    m = measure_infilling(str(cond_infill_run), n_bars=1, n_boot=50)
    assert m["pieces"] >= 1 and m["nll_per_note_prefix_and_suffix"]["value"] > 0


def test_cond_on_an_infilling_run_without_conditioning_is_an_error(infill_run, folk_midi_files, tmp_path):
    with pytest.raises(ConfigError, match="without conditioning"):
        run_generation(gen_cfg(infill_run, tmp_path, ["task=infill", f"prompt.file={folk_midi_files[0]}",
                                                      "infill.bars=2-3", "cond.key=D"]))


def test_coverage_locates_every_span_with_the_run_s_encoding_and_keeps_the_other_notes(infill_run, tmp_path):
    """``musicgen infilling measure=coverage``: on the run's test pieces, no span is refused for a
    hidden bar with the shipped encoding; bars 3-4 of every piece of 4 bars or more are regenerated
    with every other note the file's; the page is published where asked."""
    from musicgen.experiments.infilling import coverage_markdown, run

    (tmp_path / "docs").mkdir()
    cfg = compose("infilling", [f"ckpt_path={infill_run}", "measure=coverage", f"out={tmp_path / 'c.json'}",
                                "publish=true", f"publish_dir={tmp_path / 'docs'}", "device=cpu"])
    res = run(cfg)
    assert res["pieces"] >= 1 and json.loads((tmp_path / "c.json").read_text())["spans"] == res["spans"]
    for span in ("1-2", "3-4", "last two"):
        row = res["spans"][span]["run"]
        assert row["hidden bar"] == 0
        assert row["ok"] + row["held last note"] + row["outside the piece"] == res["pieces"]
        old = res["spans"][span]["miditok"]
        assert old["ok"] + old["hidden bar"] + old["held last note"] + old["outside the piece"] == res["pieces"]
    regen = res["regenerated_bars_3_4"]
    assert regen["pieces"] >= 1 and not regen["failed"] and regen["kept_identical"] == regen["pieces"]
    page = (tmp_path / "docs" / "results" / "infill-coverage.md").read_text()
    assert "| 3-4 | run |" in page and coverage_markdown(res).splitlines()[0] in page


def test_corpus_tunes_whose_rests_hide_bars_from_miditok_are_regenerable(infill_run, folk_midi_files,
                                                                          chorale_midi_files):
    """Issue 33 on real tunes: every fixture piece with a bar that MidiTok's REMI hides inside a rest
    has a two-bar span starting there regenerated by the run (shipped encoding), every note outside
    the span (onset, pitch, duration) the file's."""
    from musicgen.api import MusicModel
    from musicgen.tokenizers import RemiTokenizer
    from musicgen.tokenizers.bars import bar_lines, bar_tables, locate_bars

    m = MusicModel.load(infill_run)
    options = {k: v for k, v in m.tokenizer.config_dict()["options"].items() if k != "bpe_vocab_size"}
    midi_tok = RemiTokenizer(**{**options, "rests_cross_bars": True})
    tables = bar_tables(midi_tok, midi_tok.vocab_size)  # built once for every tune
    regenerated = 0
    for path in [*folk_midi_files, *chorale_midi_files]:
        score = read_score(path)
        n_bars = len(bar_lines(score, False)) - 1
        hidden = []
        for a in range(n_bars - 1):
            try:
                locate_bars(midi_tok, midi_tok.vocab_size, score, (a, a + 2), tables)
            except ConfigError as e:
                if "inside a rest" in str(e):
                    hidden.append(a)
        if not hidden:
            continue
        a = hidden[0]
        piece = m.infill(path, bars=(a + 1, a + 2), n=1, seed=0)[0]
        lo, hi = piece.info["span_ticks"]
        outside = [[(n.time, n.pitch, n.duration) for t in s.tracks for n in t.notes if not lo <= n.time < hi]
                   for s in (score, piece.score)]
        assert sorted(outside[0]) == sorted(outside[1]), path.name
        regenerated += 1
    assert regenerated >= 1  # the fixture has such tunes (its MidiTok encoding hides bars: test_remi)


def test_the_suffix_measurement_is_published_when_asked(infill_run, tmp_path):
    from musicgen.experiments.infilling import run, summary_line

    (tmp_path / "docs").mkdir()
    res = run(compose("infilling", [f"ckpt_path={infill_run}", "bars=1", "n_boot=50", f"out={tmp_path / 'i.json'}",
                                    "publish=true", f"publish_dir={tmp_path / 'docs'}", "device=cpu"]))
    page = (tmp_path / "docs" / "results" / "infilling.md").read_text()
    assert summary_line(res) in page and page.startswith("# Infilling")


def test_seeds_are_pooled_piece_by_piece_on_the_pieces_every_seed_measured():
    from musicgen.experiments.infilling import pool_seeds
    from musicgen.metrics.statistics import seed_piece_interval

    rng = np.random.default_rng(0)
    pieces, notes = np.arange(30), rng.integers(5, 40, 30)
    truth = [(rng.normal(2.5, 0.3, 30) * notes, rng.normal(2.7, 0.3, 30) * notes) for _ in range(3)]
    results = []
    for s, (both, prefix) in enumerate(truth):
        order = rng.permutation(30)[: 30 - s]  # each seed lists its pieces in its own order; seeds 1, 2 miss some
        results.append({"ckpt_path": f"seed_{s}", "bars": 4, "per_piece": {
            "piece": [int(p) for p in pieces[order]], "prefix_and_suffix": list(both[order]),
            "prefix_only": list(prefix[order]), "notes": [int(n) for n in notes[order]]}})
    pooled = pool_seeds(results)
    common = sorted(set.intersection(*(set(r["per_piece"]["piece"]) for r in results)))
    assert pooled["pieces"] == len(common) < 30 and pooled["seeds"] == 3
    diff = np.stack([b[common] - p[common] for b, p in truth])
    want = seed_piece_interval(diff, notes[common])
    got = pooled["difference"]
    assert got["value"] == pytest.approx(want["value"], abs=1e-4)
    assert got["ci95"] == pytest.approx([want["low"], want["high"]], abs=1e-4)
    assert got["per_seed"] == pytest.approx([d.sum() / notes[common].sum() for d in diff], abs=1e-4)
    with pytest.raises(ConfigError, match="2 runs or more"):
        pool_seeds(results[:1])


def test_musicgen_infilling_pools_a_list_of_runs_into_one_page(infill_run, tmp_path):
    from musicgen.experiments.infilling import nll_markdown, run

    runs = [tmp_path / "runs" / f"seed_{s}" for s in (0, 1)]
    for r in runs:
        shutil.copytree(infill_run, r)
    (tmp_path / "docs").mkdir()
    res = run(compose("infilling", [f"ckpt_path=[{runs[0]},{runs[1]}]", "bars=1", "n_boot=50", "device=cpu",
                                    "publish=true", f"publish_dir={tmp_path / 'docs'}", "publish_name=infilling-1"]))
    assert res.pop("out") == str(tmp_path / "runs" / "infilling_seeds.json")
    single = json.loads((runs[0] / "infilling.json").read_text())  # each run keeps its own measurement
    assert res["seeds"] == 2 and res["pieces"] == single["pieces"]
    for key in ("nll_per_note_prefix_and_suffix", "difference"):  # two copies of one run: the one run's figures
        assert res[key]["value"] == pytest.approx(single[key]["value"], abs=1e-3)
        assert res[key]["per_seed"][0] == res[key]["per_seed"][1]
    page = (tmp_path / "docs" / "results" / "infilling-1.md").read_text()
    assert nll_markdown(res).splitlines()[2] in page and "seed_1" in page
    with pytest.raises(ConfigError, match="one run"):
        run(compose("infilling", [f"ckpt_path=[{runs[0]},{runs[1]}]", "measure=coverage", "device=cpu"]))
