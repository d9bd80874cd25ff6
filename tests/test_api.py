"""The Python API (``musicgen.api``) on trained smoke runs, and the issue's "every front end goes
through it": the generate command line, the evaluation harness, the training-time sample metrics,
the gallery and the control experiment each decode a conditioned run with its attribute prefix
right after BOS in the network's input, as a forward pre-hook on the raw network sees it.

The app (``musicgen.apps.studio``) has its own test (tests/apps/test_studio.py); the leaderboard scores
its runs with ``musicgen.evaluation.run.evaluate``, the harness tested here."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import musicgen
from musicgen import api
from musicgen.config import compose
from musicgen.constants import BOS_ID
from musicgen.errors import ConfigError
from musicgen.midi_io import read_score

V7 = pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)


# ----------------------------------------------------------------------------- helpers

class Spy:
    """A forward pre-hook recording the token ids (and ``last_only``) of every forward of a network."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, bool]] = []

    def __call__(self, module, args, kwargs) -> None:
        x = args[0] if args else kwargs["idx"]
        self.calls.append((x.detach().cpu().clone(), bool(kwargs.get("last_only", False))))

    def attach(self, net: torch.nn.Module) -> Spy:
        net.register_forward_pre_hook(self, with_kwargs=True)
        return self

    @property
    def first(self) -> torch.Tensor:
        assert self.calls, "the network was never called"
        return self.calls[0][0]

    def prefills(self) -> list[torch.Tensor]:
        """The decoding loop's first forward of each call: next-token logits of more than one token."""
        return [x for x, last in self.calls if last and x.size(1) > 1]


@pytest.fixture
def spied_loads(monkeypatch) -> Spy:
    """Every run ``MusicModel.load`` reads (the name ``musicgen.api`` imports) gets a ``Spy`` on its network."""
    spy, real = Spy(), api.load_run

    def load_run(*args, **kwargs):
        run = real(*args, **kwargs)
        spy.attach(run.net)
        return run

    monkeypatch.setattr(api, "load_run", load_run)
    return spy


def sounding_at_bar_lines(score, n: int) -> bool:
    """A note starts or sounds at each of the first ``n`` bar lines (bars of 4 quarter notes, the
    tokeniser's): no rest there, so the tokens have a bar line at each (MidiTok writes a rest that
    starts at a bar line without one)."""
    notes = [(x.time, x.end) for t in score.tracks for x in t.notes]
    lines = [k * 4 * score.ticks_per_quarter for k in range(n)]
    return all(any(start <= line < end for start, end in notes) for line in lines)


@pytest.fixture(scope="module")
def folk_file(prepared_data_dir) -> Path:
    """A prepared folk tune with notes at its first 6 bar lines (bars 2-3 can be infilled)."""
    files = sorted((prepared_data_dir / "folk").rglob("*.mid"))
    return next(f for f in files if sounding_at_bar_lines(read_score(f), 6))


def ticks_at(score, tpq: int) -> list[tuple[int, int]]:
    """(onset, pitch) of every note of ``score``, the onset in ticks at ``tpq`` per quarter note."""
    scale = tpq / score.ticks_per_quarter
    return sorted((round(n.time * scale), n.pitch) for t in score.tracks for n in t.notes)


# ----------------------------------------------------------------------------- the API on an unconditioned run

@pytest.fixture(scope="module")
def smoke_model(smoke_run):
    return musicgen.load(smoke_run)


def test_the_public_names_are_the_api_s():
    from musicgen.checkpoint.run import RunMetadata
    from musicgen.generation.sampling import SamplingConfig

    assert musicgen.load is api.load and musicgen.MusicModel is api.MusicModel and musicgen.Piece is api.Piece
    assert musicgen.RunMetadata is RunMetadata and musicgen.SamplingConfig is SamplingConfig
    assert isinstance(musicgen.__version__, str)
    with pytest.raises(AttributeError, match="no attribute 'generator'"):
        musicgen.generator  # noqa: B018


@V7
def test_generate_gives_pieces_that_save_as_midi(smoke_model, tmp_path):
    m = smoke_model
    assert isinstance(m.metadata, musicgen.RunMetadata)
    assert m.metadata.version == "v7" and m.conditioning is None and m.infill_vocab is None
    assert m.metadata.seq_len == m.metadata.config["data"]["seq_len"] == m.trained_context
    pieces = m.generate(n=2, seed=0, max_new_tokens=32)
    assert len(pieces) == 2 and all(isinstance(p, musicgen.Piece) for p in pieces)
    for p in pieces:
        assert p.prompt == [BOS_ID] and 0 < len(p.ids) <= 32 and all(isinstance(t, int) for t in p.ids)
        assert (p.score is None) == (p.error is not None)  # a score, or why there is none
    saved = [p for p in pieces if p.score is not None]
    assert saved, [p.error for p in pieces]
    path = saved[0].save(tmp_path / "a.mid")
    assert path == tmp_path / "a.mid"
    assert ticks_at(read_score(path), 480) == ticks_at(saved[0].score, 480)
    assert [p.ids for p in m.generate(n=2, seed=0, max_new_tokens=32)] == [p.ids for p in pieces]
    assert [p.ids for p in m.generate(n=2, seed=1, max_new_tokens=32)] != [p.ids for p in pieces]


@V7
def test_a_prompt_file_starts_every_piece_with_its_first_bars(smoke_model, folk_file):
    m = smoke_model
    pieces = m.generate(n=2, prompt=folk_file, seed=0, max_new_tokens=16)
    prompt = m.prompts(folk_file, 1, 2)[0]
    assert prompt[0] == BOS_ID and len(prompt) > 2
    original = read_score(folk_file)
    tpq = original.ticks_per_quarter
    two_bars = Counter(n for n in ticks_at(original, tpq) if n[0] < 8 * tpq)
    assert len(two_bars) >= 4
    for p in pieces:
        assert p.prompt == prompt and p.score is not None
        # the file's own notes (the continuation may add notes to bar 2 after them)
        assert not two_bars - Counter(ticks_at(p.score, tpq)), p.score


@V7
def test_sampling_presets_and_one_line_errors(smoke_model, folk_file):
    m = smoke_model
    a = m.generate(n=2, sampling="greedy", seed=0, max_new_tokens=16)
    b = m.generate(n=2, sampling="greedy", seed=7, max_new_tokens=16)
    assert [p.ids for p in a] == [p.ids for p in b] and a[0].ids == a[1].ids
    with pytest.raises(ConfigError, match=r"sampling=hot is not a preset; known: \[.*'greedy'"):
        m.generate(n=1, sampling="hot")
    for call, what in ((lambda: m.generate(n=1, cond={"key": "D"}, max_new_tokens=4), "conditioning"),
                       (lambda: m.infill(folk_file, bars=(2, 3)), "infilling")):
        with pytest.raises(ConfigError, match=f"trained without {what}") as err:
            call()
        assert "\n" not in str(err.value)  # one line


@V7
def test_score_is_the_nll_of_each_piece(smoke_model, folk_file):
    m = smoke_model
    pieces = m.generate(n=2, prompt=folk_file, seed=0, max_new_tokens=16)
    out = m.score(pieces, n_boot=50)
    fig = out["nll_per_note"]
    assert set(fig) == {"value", "low", "high"} and fig["low"] <= fig["value"] <= fig["high"]
    assert np.allclose(out["nll"], m.nll([p.doc for p in pieces]))
    assert out["notes_per_piece"] == [p.notes for p in pieces]
    assert fig["value"] == pytest.approx(sum(out["nll"]) / sum(out["notes_per_piece"]))


@V7
def test_a_model_from_parts_in_memory_decodes_as_the_loaded_one(smoke_model):
    m = smoke_model
    parts = musicgen.MusicModel(m.net, m.tokenizer, m.metadata)  # what the training callback builds
    assert [p.ids for p in parts.generate(n=2, seed=3, max_new_tokens=24)] == \
        [p.ids for p in m.generate(n=2, seed=3, max_new_tokens=24)]


# ----------------------------------------------------------------------------- a conditioned, infilling run

@pytest.fixture(scope="module")
def control_model(control_run):
    return musicgen.load(control_run)


def test_cond_puts_the_prefix_after_bos_and_guidance_doubles_the_rows(control_model):
    m = control_model
    vocab = m.conditioning
    assert vocab is not None and vocab.attributes == ("key",) and m.infill_vocab is not None
    d_major, null = vocab.id("key", "D_major"), vocab.id("key", None)
    spy = Spy()
    handle = m.net.register_forward_pre_hook(spy, with_kwargs=True)
    try:
        pieces = m.generate(n=2, cond={"key": "D", "mode": "major"}, seed=0, max_new_tokens=16)
        assert spy.first[:, :2].tolist() == [[BOS_ID, d_major]] * 2
        spy.calls.clear()
        guided = m.generate(n=2, cond={"key": "D", "mode": "major"}, cfg_scale=2.0, seed=0, max_new_tokens=16)
        assert spy.first[:, :2].tolist() == [[BOS_ID, d_major]] * 2 + [[BOS_ID, null]] * 2
    finally:
        handle.remove()
    for p in [*pieces, *guided]:
        assert p.ids and max(p.ids) < vocab.base  # neither attribute tokens nor sentinels are sampled
        assert p.info["conditioning"]["attributes"] == {"key": "D_major"}


def test_infill_keeps_every_note_outside_the_span(control_model, folk_file):
    original = read_score(folk_file)
    tpq = original.ticks_per_quarter
    (piece,) = control_model.infill(folk_file, bars=(2, 3), n=1, seed=0)
    lo, hi = piece.info["span_ticks"]
    assert (lo, hi) == (4 * tpq, 12 * tpq)  # bars 2-3 of the tokeniser's 4-quarter bars, in the file's ticks
    assert piece.score is not None and piece.prompt == [BOS_ID]

    def outside(score):
        return [n for n in ticks_at(score, tpq) if not lo <= n[0] < hi]

    assert outside(piece.score) == outside(original) and outside(original)
    assert piece.info["bars"] <= 2 and all(t < control_model.infill_vocab.base for t in piece.ids)


# ----------------------------------------------------------------------------- every front end goes through it

def test_the_generate_command_line_sends_the_prefix(control_run, control_model, spied_loads, tmp_path):
    from musicgen.cli.generate import run_generation

    cfg = compose("generate", [f"ckpt_path={control_run}", "num_samples=1", "max_new_tokens=4", "prompt.source=none",
                               "cond.key=D", f"output_dir={tmp_path}", "audio.enabled=false"])
    report = run_generation(cfg)
    vocab = control_model.conditioning
    assert spied_loads.first.tolist() == [[BOS_ID, vocab.id("key", "D_major")]]
    assert report["conditioning"]["prefix_tokens"] == ["Key_D_major"]


def test_the_evaluation_harness_scores_with_each_piece_s_prefix_and_samples_with_the_null_one(
        control_run, control_model, spied_loads, tmp_path):
    """(The leaderboard scores its runs with this ``evaluate``: covered here.)"""
    from musicgen.evaluation.run import evaluate

    cfg = compose("evaluate", [f"ckpt_path={control_run}", f"output_dir={tmp_path}", "num_samples=1",
                               "max_new_tokens=4", "bootstrap=10", "real_examples=0", "reference_pieces=20",
                               "audio.enabled=false"])
    result = evaluate(cfg)
    m = control_model
    vocab, null = m.conditioning, m.conditioning.id("key", None)
    split = m.pieces_of("test")
    own = [vocab.prefix(a)[0] for a in m.run.piece_attributes(split, split.originals())]
    assert len(own) == result["model"]["pieces"] and null not in own
    # likelihood: each piece scored once with its own key after BOS, once with the null prefix
    scored = [x for x, last in spied_loads.calls if not last]
    after_bos = sorted(int(r[1]) for x in scored for r in x if int(r[0]) == BOS_ID)
    assert after_bos == sorted([*own, *[null] * len(own)])
    # sampling: asked nothing, the null prefix; the other prefills are the length section's EOS
    # diagnosis (each real test piece's end, asked nothing too)
    prefills = [x.tolist() for x in spied_loads.prefills()]
    assert prefills.count([[BOS_ID, null]]) == 1
    assert len(prefills) == 1 + len(own) and all(null in x[0] for x in prefills)


def test_the_sample_metrics_callback_samples_with_the_null_prefix(control_run, tmp_path):
    """The callback's method called directly with the few trainer and module attributes it reads
    (cheaper than a training run): the live network it is handed reaches the API unwrapped."""
    from musicgen.checkpoint import load_run, load_run_cache
    from musicgen.training.callbacks import SampleMetrics

    run = load_run(control_run)
    spy = Spy().attach(run.net)
    dm = SimpleNamespace(tokenizer=run.tokenizer, cache=load_run_cache(run), seq_len=run.trained_context)
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, is_global_zero=True, datamodule=dm,
                              global_step=8, loggers=[])
    module = SimpleNamespace(net=run.net, metadata=run.metadata)  # what training stores in every checkpoint
    SampleMetrics(str(tmp_path), every_n_epochs=1, num_samples=2, max_new_tokens=4).on_validation_epoch_end(
        trainer, module)
    (prefill,) = spy.prefills()
    assert prefill.tolist() == [[BOS_ID, run.conditioning.id("key", None)]] * 2
    assert (tmp_path / "epoch_000" / "samples.json").is_file()


def test_the_gallery_samples_with_the_null_prefix(control_run, control_model, spied_loads, tmp_path):
    from musicgen.apps.gallery import _generate

    run_dir = tmp_path / "run"  # the gallery writes into the run: a copy of the session's
    shutil.copytree(control_run, run_dir)
    cfg = compose("gallery", ["samples_per_run=1", "max_new_tokens=4", "device=cpu"])
    report = _generate(run_dir, cfg, renderer=None)
    assert report.is_file()
    (prefill,) = spied_loads.prefills()
    null = control_model.conditioning.id("key", None)
    assert prefill[:, :2].tolist() == [[BOS_ID, null]] and prefill.size(1) == 2 + 32  # + an opening of 32 tokens


def test_the_control_experiment_sends_each_asked_value(control_run, control_model, spied_loads):
    from musicgen.experiments.control import measure_control

    res = measure_control(str(control_run), {"key": ["D_major"]}, n=1, max_new_tokens=4, test_pieces=2)
    assert res["attributes"]["key"]["values"] == ["D_major"]
    vocab = control_model.conditioning
    firsts = sorted(x.tolist() for x in spied_loads.prefills())  # asked nothing (the reference), asked D major
    assert firsts == sorted([[[BOS_ID, vocab.id("key", None)]], [[BOS_ID, vocab.id("key", "D_major")]]])
