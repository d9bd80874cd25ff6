"""The interactive app (``python -m musicgen.app``): launched as a subprocess on a free local port
and driven with gradio_client as the page would be; the parts that need no Gradio directly."""

from __future__ import annotations

import importlib.util
import os
import queue
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import REPO

from musicgen.apps.studio import Studio, UploadError, check_upload, sampling_fields
from musicgen.audio import find_soundfont
from musicgen.config import compose
from musicgen.generation import SamplingConfig
from musicgen.midi_io import read_score

HAS_GRADIO = all(importlib.util.find_spec(m) for m in ("gradio", "gradio_client"))
needs_gradio = pytest.mark.skipif(not HAS_GRADIO, reason="gradio and gradio_client are not installed "
                                                         "(pip install -e '.[app]')")
START_TIMEOUT = 120  # s: importing torch and gradio, loading the run, launching


def test_every_sampling_field_is_a_control_bounded_by_its_range():
    fields = {f.name: f for f in sampling_fields()}
    assert list(fields) == list(SamplingConfig.__dataclass_fields__)
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


# ----------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(smoke_run, tmp_path_factory):
    """The app on a free port of 127.0.0.1 (the default address), as a subprocess; (url, port, out_dir)."""
    out = tmp_path_factory.mktemp("app")
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "musicgen", "app", f"ckpt_path={smoke_run}", f"server_port={port}",
         f"output_dir={out}", "prompt.split=val", "max_upload_mb=1"],
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
        yield url, port, out
    except queue.Empty:
        pytest.fail("the app did not start:\n" + "".join(log[-40:]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def client(app_server, tmp_path_factory):
    from gradio_client import Client

    return Client(app_server[0], download_files=str(tmp_path_factory.mktemp("downloads")), verbose=False)


def _defaults() -> list:
    d = SamplingConfig()
    return [getattr(d, f.name) for f in sampling_fields()]


def _generate(client, kind="none", upload=None, piece=None, length=48, seed=0):
    from gradio_client import handle_file

    upload = handle_file(str(upload)) if upload else None
    return client.predict(kind, upload, piece, length, seed, *_defaults(), api_name="/generate")


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
