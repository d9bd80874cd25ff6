"""The interactive app (``musicgen app``): launched as a subprocess on a free local port and driven
with gradio_client as the page would be; the parts that need no Gradio directly. A conditioned,
infilling smoke run shows that the app honours what a checkpoint can do (the asked key reaches the
network after BOS, guidance doubles the rows, bars of an upload are regenerated with every other
note kept) and an unconditioned one that it hides what a checkpoint cannot."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import REPO, smoke_override_list

from musicgen.apps.page import ANY, sampling_fields
from musicgen.apps.studio import Studio, UploadError, check_upload
from musicgen.audio import find_soundfont
from musicgen.config import compose
from musicgen.constants import BOS_ID
from musicgen.errors import UserError
from musicgen.generation import SamplingConfig
from musicgen.generation.sampling import CFG_SCALE_RANGE
from musicgen.midi_io import read_score

HAS_GRADIO = all(importlib.util.find_spec(m) for m in ("gradio", "gradio_client"))
needs_gradio = pytest.mark.skipif(not HAS_GRADIO, reason="gradio and gradio_client are not installed "
                                                         "(pip install -e '.[app]')")
START_TIMEOUT = 120  # s: importing torch and gradio, loading the run, launching


def test_every_sampling_field_is_a_control_bounded_by_its_range():
    fields = {f.name: f for f in sampling_fields(guidance=True)}
    assert list(fields) == list(SamplingConfig.__dataclass_fields__)
    assert [f.name for f in sampling_fields()] == [n for n in fields if n != "cfg_scale"]  # guidance: not generic
    assert fields["cfg_scale"].bounds == CFG_SCALE_RANGE
    assert fields["temperature"].bounds == (0.1, 2.0) and fields["temperature"].kind is float
    assert fields["top_k"].kind is int and fields["greedy"].kind is bool
    for f in fields.values():  # every bound is one SamplingConfig accepts
        if f.bounds:
            for b in f.bounds:
                SamplingConfig(**{f.name: f.kind(b)})


def test_check_upload_names_the_problem(broken_midi_dir, broken_midi_names, tmp_path):
    for name, reason in broken_midi_names.items():
        with pytest.raises(UploadError, match=f"^{name} cannot be a prompt: {reason}"):
            check_upload(broken_midi_dir / name, name, max_mb=4)
    big = tmp_path / "big.mid"
    big.write_bytes((broken_midi_dir / "good_0.mid").read_bytes() + b"\0" * (2 * 2**20))
    with pytest.raises(UploadError, match=r"big.mid is 2.0 MB: the limit is 1 MB"):
        check_upload(big, "big.mid", max_mb=1)
    check_upload(broken_midi_dir / "good_0.mid", "good_0.mid", max_mb=1)


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_studio_reads_only_uploaded_files(smoke_run, tmp_path, folk_midi_files):
    cfg = compose("app", [f"ckpt_path={smoke_run}", f"output_dir={tmp_path / 'out'}", "audio.enabled=false",
                          "prompt.split=val"])
    studio = Studio(cfg, tmp_path / "out", tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    with pytest.raises(UploadError, match="not uploaded to this page"):
        studio.prompt("upload", str(folk_midi_files[0]), None, None)  # a path the page did not receive
    with pytest.raises(UploadError, match="not uploaded to this page"):
        studio.prompt("upload", str(tmp_path / "uploads" / ".." / "out" / "x.mid"), None, None)
    with pytest.raises(Exception, match="choose one of the listed pieces"):
        studio.prompt("data", None, "../../etc/passwd", None)
    result = studio.generate("none", None, None, 16, 0, {})
    assert result.midi.is_file() and result.midi.is_relative_to(tmp_path / "out") and result.audio is None


# ----------------------------------------------------------------------------- what a run can do


@pytest.fixture(scope="module")
def cond_infill_run(tmp_path_factory, prepared_data_dir):
    """A smoke run conditioned on key and trained with infilling (as tests/control/test_infilling.py trains one)."""
    from musicgen.training.fit import train

    tmp = tmp_path_factory.mktemp("run_cond_infill")
    train(compose("train", ["+version=v7", *smoke_override_list(tmp, prepared_data_dir), "conditioning=key",
                            "infill=bars", "data.seq_len=128", "model.max_seq_len=128", "trainer.max_steps=8"]))
    return tmp / "run"


def _studio(run, tmp) -> Studio:
    cfg = compose("app", [f"ckpt_path={run}", f"output_dir={tmp / 'out'}", "audio.enabled=false", "prompt.split=val"])
    (tmp / "uploads").mkdir(exist_ok=True)
    return Studio(cfg, tmp / "out", tmp / "uploads")


@pytest.fixture(scope="module")
def cond_studio(cond_infill_run, tmp_path_factory) -> Studio:
    return _studio(cond_infill_run, tmp_path_factory.mktemp("cond_studio"))


def _first_forward(studio: Studio, cond=None, sampling=None):
    """The ids of the first forward pass through the run's own network, and the result."""
    seen = []
    hook = studio.model.net.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().cpu().clone()))
    try:
        result = studio.generate("none", None, None, 16, 0, sampling or {}, cond=cond)
    finally:
        hook.remove()
    return seen[0], result


def test_a_conditioned_run_shows_its_attributes_and_guidance_and_infilling(cond_studio):
    vocab = cond_studio.model.conditioning
    controls = cond_studio.controls()
    assert list(controls.attributes) == ["key"] == list(vocab.attributes)
    choices = controls.attributes["key"]
    assert choices[0] == (ANY, ANY) and [v for _, v in choices[1:]] == list(vocab.values["key"])
    assert len(choices) == 25 and ("D major", "D_major") in choices
    assert controls.cfg_scale.name == "cfg_scale" and controls.cfg_scale.bounds == CFG_SCALE_RANGE
    assert "cfg_scale" not in [f.name for f in controls.sampling] and controls.infill


def test_the_asked_key_reaches_the_network_after_bos(cond_studio):
    vocab = cond_studio.model.conditioning
    x, result = _first_forward(cond_studio, cond={"key": "D_major"})
    assert x.shape[0] == 1 and x[0, 0] == BOS_ID and x[0, 1] == vocab.id("key", "D_major")
    report = json.loads((result.folder / "generation.json").read_text())
    assert report["conditioning"]["attributes"] == {"key": "D_major"} == result.report["conditioning"]["attributes"]
    assert report["conditioning"]["prefix_tokens"] == ["Key_D_major"] and report["conditioning"]["cfg_scale"] == 1.0
    assert all(i < vocab.base for i in report["samples"][0]["ids"])  # attribute tokens are never sampled
    assert result.midi.is_file() and "asked key D_major (cfg_scale 1)" in result.message
    x, result = _first_forward(cond_studio, cond={"key": ANY})  # not asked: the null token
    assert x[0, 0] == BOS_ID and x[0, 1] == vocab.id("key", None) != vocab.id("key", "D_major")
    assert result.report["conditioning"]["attributes"] == {}


def test_guidance_runs_the_conditioned_and_null_rows_together(cond_studio):
    vocab = cond_studio.model.conditioning
    x, result = _first_forward(cond_studio, cond={"key": "D_major"}, sampling={"cfg_scale": 2.0})
    assert x.shape[0] == 2
    assert x[0, 1] == vocab.id("key", "D_major") and x[1, 1] == vocab.id("key", None)
    assert result.report["conditioning"]["cfg_scale"] == 2.0 == result.report["settings"]["sampling"]["cfg_scale"]


def test_a_value_the_run_does_not_know_is_a_one_line_message(cond_studio):
    for cond, match in (({"key": "H_major"}, "^key=H_major is unknown to this run; known values: C_major, "),
                        ({"metre": "6/8"}, "^this run conditions on key only, not metre$")):
        with pytest.raises(UserError, match=match) as e:
            cond_studio.generate("none", None, None, 4, 0, {}, cond=cond)
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_an_unconditioned_run_hides_guidance_attributes_and_infilling(smoke_run, tmp_path, folk_midi_files):
    studio = _studio(smoke_run, tmp_path)
    controls = studio.controls()
    assert controls.attributes == {} and controls.cfg_scale is None and not controls.infill
    assert [f.name for f in controls.sampling] == [f.name for f in sampling_fields()]
    assert "cfg_scale" not in [f.name for f in controls.sampling]
    with pytest.raises(UserError, match="^this run was trained without conditioning: it cannot be asked for key$"):
        studio.generate("none", None, None, 4, 0, {}, cond={"key": "D_major"})
    with pytest.raises(UserError, match="^cfg_scale=2.0: this run was trained without conditioning"):
        studio.generate("none", None, None, 4, 0, {"cfg_scale": 2.0})
    upload = shutil.copy(folk_midi_files[0], tmp_path / "uploads" / "tune.mid")
    with pytest.raises(UserError, match="^this run was trained without infilling"):
        studio.infill(str(upload), "tune.mid", "2-3", 0, {})
    result = studio.generate("none", None, None, 8, 0, {}, cond={"key": ANY})  # "(any)" asks nothing
    assert "conditioning" not in result.report and "asked" not in result.message


def _notes(score, span, inside):
    lo, hi = span
    return sorted((n.time, n.duration, n.pitch) for t in score.tracks for n in t.notes if (lo <= n.time < hi) == inside)


def test_infilling_regenerates_the_bars_and_keeps_every_other_note(cond_studio, folk_midi_files):
    upload = Path(shutil.copy(folk_midi_files[0], cond_studio.upload_dir / "tune.mid"))
    result = cond_studio.infill(str(upload), "tune.mid", "2-3", 0, {"cfg_scale": 1.5}, cond={"key": "D_major"})
    report = json.loads((result.folder / "infill.json").read_text())
    span = report["span_ticks"]
    assert report["task"] == "infill" and report["bars"] == "2-3" and report["file"] == "tune.mid"
    assert report["conditioning"]["attributes"] == {"key": "D_major"} and report["conditioning"]["cfg_scale"] == 1.5
    original, filled = read_score(upload), read_score(result.midi)
    assert 0 < span[0] < span[1]
    assert _notes(filled, span, inside=False) == _notes(original, span, inside=False)
    assert all(t + d <= span[1] for t, d, _ in _notes(filled, span, inside=True))
    assert result.png.is_file() and "bars 2-3 of tune.mid regenerated" in result.message
    with pytest.raises(UploadError, match=r"^tune.mid: bars 90-91: the file has \d+ bars"):
        cond_studio.infill(str(upload), "tune.mid", "90-91", 0, {})
    with pytest.raises(UserError, match="^bars 3-1: bars count from 1 and LAST must not come before FIRST"):
        cond_studio.infill(str(upload), "tune.mid", "3-1", 0, {})
    with pytest.raises(UploadError, match="not uploaded to this page"):
        cond_studio.infill(str(folk_midi_files[0]), "tune.mid", "2-3", 0, {})


# ----------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _launched(run, out, *overrides):
    """The app for ``run`` on a free port of 127.0.0.1 (the default address), as a subprocess; its URL."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "musicgen", "app", f"ckpt_path={run}", f"server_port={port}",
         f"output_dir={out}", "prompt.split=val", *overrides],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    url = None
    try:
        while url is None:
            ln = lines.get(timeout=START_TIMEOUT)
            log.append(ln)
            if ln.startswith("musicgen app for"):
                url = ln.split(" on ", 1)[1].split(" ", 1)[0]
        yield url
    except queue.Empty:
        pytest.fail("the app did not start:\n" + "".join(log[-40:]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def app_server(smoke_run, tmp_path_factory):
    """The app for the v7 smoke run; (url, port, out_dir)."""
    out = tmp_path_factory.mktemp("app")
    with _launched(smoke_run, out, "max_upload_mb=1") as url:
        yield url, int(url.rstrip("/").rsplit(":", 1)[1]), out


@pytest.fixture(scope="module")
def client(app_server, tmp_path_factory):
    from gradio_client import Client

    return Client(app_server[0], download_files=str(tmp_path_factory.mktemp("downloads")), verbose=False)


def _defaults() -> list:
    d = SamplingConfig()
    return [getattr(d, f.name) for f in sampling_fields()]


def _generate(client, kind="none", upload=None, piece=None, length=48, seed=0, extra=()):
    """``/generate`` with the default sampling values; ``extra``: the inputs after them (a
    conditioned run's attributes and cfg_scale, an infilling run's task and bars)."""
    from gradio_client import handle_file

    upload = handle_file(str(upload)) if upload else None
    return client.predict(kind, upload, piece, length, seed, *_defaults(), *extra, api_name="/generate")


def _labels(client) -> list[str]:
    return [p["label"] for p in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
            ["/generate"]["parameters"]]


def _check_outputs(result, out_dir):
    png, audio, midi, status = result
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    score = read_score(midi)
    assert sum(len(t.notes) for t in score.tracks) > 0
    if find_soundfont() is not None:
        assert Path(audio).suffix == ".flac" and Path(audio).stat().st_size > 1000
    else:
        assert audio is None
    assert " notes, " in status
    assert list(Path(out_dir).rglob("sample.mid"))  # written into the app's own folder


@needs_gradio
@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_app_listens_on_loopback_only_by_default(app_server):
    url, port, _ = app_server
    assert url.startswith(f"http://127.0.0.1:{port}")
    if Path("/proc/net/tcp").exists():  # every listening socket on the port is bound to 127.0.0.1
        listening = [ln.split()[1] for ln in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if ln.split()[3] == "0A" and ln.split()[1].endswith(f":{port:04X}")]
        assert listening == [f"0100007F:{port:04X}"]
        v6 = Path("/proc/net/tcp6")
        if v6.exists():
            assert not [ln for ln in v6.read_text().splitlines()[1:]
                        if ln.split()[3] == "0A" and ln.split()[1].endswith(f":{port:04X}")]


@needs_gradio
@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_app_generates_from_no_prompt_an_upload_and_a_piece(app_server, client, folk_midi_files):
    out = app_server[2]
    result = _generate(client, "none", seed=1)
    _check_outputs(result, out)
    assert "prompt: none" in result[3]
    result = _generate(client, "upload", upload=folk_midi_files[0], seed=2)
    _check_outputs(result, out)
    assert f"the first 2 bars of {folk_midi_files[0].name}" in result[3]
    piece = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"][2]
    name = piece["type"]["enum"][0]
    result = _generate(client, "data", piece=name, seed=3)
    _check_outputs(result, out)
    assert name in result[3]


@needs_gradio
@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_app_refuses_bad_uploads_with_a_message_and_keeps_answering(app_server, client, broken_midi_dir, tmp_path):
    import httpx
    from gradio_client.exceptions import AppError

    url, _, out = app_server
    text = tmp_path / "notes.mid"
    text.write_text("This is a text file, not MIDI.\n")
    for path, reason in ((text, "not a MIDI file"), (broken_midi_dir / "drums_only.mid", "drums only"),
                         (broken_midi_dir / "empty.mid", "empty file")):
        with pytest.raises(AppError, match=f"{path.name} cannot be a prompt: {reason}"):
            _generate(client, "upload", upload=path)
    with pytest.raises(AppError, match="choose a MIDI file to upload first"):
        _generate(client, "upload")
    big = tmp_path / "big.mid"
    big.write_bytes((broken_midi_dir / "good_0.mid").read_bytes() + b"\0" * (2 * 2**20))
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):  # the client checks
        _generate(client, "upload", upload=big)
    with big.open("rb") as f:  # and the server refuses it as it arrives, whoever sends it
        r = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.mid", f)}, timeout=30)
    assert r.status_code == 413 and "maximum allowed size" in r.text
    _check_outputs(_generate(client, "none", seed=4), out)  # still answering


@needs_gradio
@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_app_serves_nothing_but_its_outputs(app_server, smoke_run):
    import httpx

    url = app_server[0]
    for path in (Path(smoke_run) / "checkpoints" / "last.ckpt", Path(smoke_run) / "config.yaml",
                 REPO / "pyproject.toml"):
        assert path.is_file()
        r = httpx.get(f"{url}gradio_api/file={path}", timeout=30)
        assert r.status_code in (403, 404), (path, r.status_code)


@needs_gradio
@pytest.mark.parametrize("smoke_run", ["v7"], indirect=True)
def test_the_page_of_an_unconditioned_run_has_no_guidance_attributes_or_task(client):
    labels = _labels(client)
    assert len(labels) == 5 + len(sampling_fields())  # prompt, upload, piece, length, seed, the sampling fields
    assert not {"guidance (cfg_scale)", "key", "task"} & set(labels)


@pytest.fixture(scope="module")
def cond_app(cond_infill_run, tmp_path_factory):
    """The launched app for the conditioned, infilling run and a client; (client, out_dir)."""
    from gradio_client import Client

    out = tmp_path_factory.mktemp("cond_app")
    with _launched(cond_infill_run, out, "audio.enabled=false") as url:
        yield Client(url, download_files=str(tmp_path_factory.mktemp("cond_downloads")), verbose=False), out


@needs_gradio
def test_the_launched_app_asks_a_conditioned_run_for_a_key_and_regenerates_bars(cond_app, folk_midi_files):
    from gradio_client.exceptions import AppError

    client, out = cond_app
    assert _labels(client)[-4:] == ["key", "guidance (cfg_scale)", "task", "bars to regenerate (FIRST-LAST)"]
    result = _generate(client, length=16, seed=5, extra=("D_major", 1.5, "continue", "2-3"))
    assert "asked key D_major (cfg_scale 1.5)" in result[3]
    reports = [json.loads(p.read_text()) for p in out.rglob("generation.json")]
    assert [(r["conditioning"]["prefix_tokens"], r["conditioning"]["cfg_scale"]) for r in reports] == [
        (["Key_D_major"], 1.5)]
    tune = folk_midi_files[0]
    png, _, midi, status = _generate(client, upload=tune, seed=6, extra=(ANY, 1.0, "infill", "2-3"))
    assert f"bars 2-3 of {tune.name} regenerated" in status and Path(png).is_file()
    report = json.loads(next(out.rglob("infill.json")).read_text())
    span = report["span_ticks"]
    assert _notes(read_score(midi), span, inside=False) == _notes(read_score(tune), span, inside=False)
    with pytest.raises(AppError, match=f"{tune.name}: bars 90-91: the file has"):
        _generate(client, upload=tune, extra=(ANY, 1.0, "infill", "90-91"))

