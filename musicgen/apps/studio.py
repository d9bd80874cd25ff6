"""Interactive app: ``musicgen app ckpt_path=<run dir or .ckpt>`` (``make app RUN=...``).

A local Gradio page around one trained run. A user picks the sampling settings (one control per
field of ``SamplingConfig``, read at run time, bounded by its validated range), a prompt (none, an
uploaded MIDI file's first bars, or the opening of a piece of the run's data), a length and a
seed; the page shows the piano roll, plays the audio (where a SoundFont is found; it says so
otherwise) and offers the MIDI file. Decoding is ``musicgen.generation.generate`` and the files are
written by ``musicgen.api`` (``MusicModel.generate``, ``Piece.write``), as ``musicgen generate`` does.

Safety: it listens on ``server_name`` (127.0.0.1 unless told otherwise) and never opens a share
link. It reads only the checkpoint it was started with, the run's token cache (for the listed
pieces, chosen by name from a fixed list) and files uploaded to it; it writes, and Gradio serves,
only under its output folder (``<run dir>/app/<date_time>`` or ``output_dir``), where Gradio's own
upload and cache folder is put too. Uploads over ``max_upload_mb`` are refused by the server as
they arrive; an unusable one (not MIDI, empty, drums only, no notes) is a message in the page.
The model is loaded once and generations run one at a time (a queue of ``queue_size``).

Everything but the page itself (``Studio``: settings to files) needs no Gradio, which is an
optional extra: ``pip install -e '.[app]'``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import re
import threading
import time
import typing
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from musicgen.api import MusicModel
from musicgen.audio import SEARCH_DIRS, renderer_from_config
from musicgen.checkpoint import find_checkpoint, load_run_cache
from musicgen.config import sampling_config
from musicgen.constants import BOS_ID
from musicgen.errors import ConfigError, UserError
from musicgen.fs import atomic_write_text
from musicgen.generation import SamplingConfig
from musicgen.generation import sampling as sampling_module
from musicgen.midi_io import BadMidiError, read_score
from musicgen.runtime import hydra_main, pick_device

log = logging.getLogger(__name__)

PROMPT_KINDS = ("none", "upload", "data")
SEED_MAX = 2**32 - 1

#: Labels and one-line help for the sampling fields known today; a field added to
#: ``SamplingConfig`` later gets a control too, labelled with its name.
SAMPLING_HELP: dict[str, tuple[str, str]] = {
    "temperature": ("temperature", "< 1 sharpens the distribution, > 1 flattens it"),
    "top_k": ("top-k", "keep the k most probable tokens; 0 disables"),
    "top_p": ("top-p", "keep the smallest set whose probability reaches p; 1 disables"),
    "greedy": ("greedy", "argmax (after the repetition penalty), ignoring the filters: deterministic"),
    "min_p": ("min-p", "keep tokens at least min-p times as probable as the most probable; 0 disables"),
    "repetition_penalty": ("repetition penalty", "CTRL penalty on the tokens of the recent context; 1 disables"),
    "repetition_window": ("repetition window", "how many of the most recent tokens the penalty looks at"),
    "constrained": ("constrained", "only tokens the tokeniser's grammar admits (where it has one)"),
}


@dataclasses.dataclass(frozen=True)
class SamplingField:
    """One field of ``SamplingConfig`` as a control: its type and validated range (``None``: unbounded)."""

    name: str
    kind: type  # bool, int or float
    bounds: tuple[float, float] | None
    label: str
    info: str


def sampling_fields() -> list[SamplingField]:
    """``SamplingConfig``'s fields, in order, each with its range (``<NAME>_RANGE`` in
    ``musicgen.generation.sampling``), read at run time so that a new field gets a control."""
    hints = typing.get_type_hints(SamplingConfig)
    out = []
    for f in dataclasses.fields(SamplingConfig):
        kind = hints[f.name]
        bounds = getattr(sampling_module, f"{f.name.upper()}_RANGE", None)
        label, info = SAMPLING_HELP.get(f.name, (f.name.replace("_", " "), ""))
        out.append(SamplingField(f.name, kind if kind in (bool, int) else float, bounds, label, info))
    return out


class UploadError(UserError):
    """An uploaded prompt that cannot be used; the message is for the page."""


def check_upload(path: str | Path, name: str, max_mb: float) -> None:
    """Raise ``UploadError`` unless ``path`` is a usable MIDI file of at most ``max_mb`` MB,
    naming the file as ``name`` (its name on the user's side, never the server's path)."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_mb * 2**20:
        raise UploadError(f"{name} is {size / 2**20:.1f} MB: the limit is {max_mb:g} MB (max_upload_mb)")
    try:
        read_score(path)
    except BadMidiError as e:
        reason = str(e).removeprefix(f"{path}: ")
        raise UploadError(f"{name} cannot be a prompt: {reason}. Upload a MIDI file with notes.") from None


@dataclasses.dataclass
class Result:
    """What one generation wrote (paths under the app's output folder) and a line about it."""

    midi: Path | None
    png: Path | None
    audio: Path | None
    message: str
    report: dict[str, Any]


class Studio:
    """The loaded run and everything a generation needs; knows nothing of Gradio.

    ``generate`` takes the page's values, checks them (``UserError`` with a message for the
    page), decodes one piece with ``musicgen.generation.generate`` and writes it with
    ``write_sample`` into a new folder under ``out_dir``.
    """

    def __init__(self, cfg: DictConfig, out_dir: Path, upload_dir: Path | None = None):
        self.cfg = cfg
        self.defaults = sampling_config(cfg.sampling)  # range errors before any model is loaded
        if not 1 <= cfg.max_new_tokens <= cfg.max_new_tokens_limit:
            raise ConfigError(f"max_new_tokens={cfg.max_new_tokens} must be in 1..max_new_tokens_limit "
                              f"({cfg.max_new_tokens_limit})")
        if not cfg.max_upload_mb > 0:
            raise ConfigError(f"max_upload_mb={cfg.max_upload_mb} must be > 0")
        self.renderer = renderer_from_config(cfg.get("audio"))
        self.device = pick_device(cfg.device)
        self.model = MusicModel.load(cfg.ckpt_path, self.device)  # once, for every user
        self.run = self.model.run
        self.context, self.context_desc = self.model.context(cfg.context_len)
        self.version = self.model.version
        self.out_dir = out_dir
        self.upload_dir = (upload_dir or out_dir).resolve()
        self.pieces, self.pieces_note = self._pieces()
        self._count = itertools.count(1)
        self._lock = threading.Lock()  # the queue already runs one generation at a time; this keeps it so

    def _pieces(self):
        """``({name: index}, note)``: the listed pieces of ``prompt.split``, or none and why."""
        split = self.cfg.prompt.split
        try:
            splits = load_run_cache(self.run).splits
        except UserError as e:
            return {}, f"no pieces of the run's data to prompt with: {e}"
        if split not in splits or not len(splits[split].originals()):
            return {}, f"the run's data has no {split} pieces to prompt with"
        pieces = splits[split]
        self._split = pieces
        chosen = pieces.originals()[: self.cfg.prompt.max_pieces]
        return {pieces.names[int(i)]: int(i) for i in chosen}, f"{len(chosen)} {split} pieces of the run's data"

    @property
    def audio_note(self) -> str:
        if self.renderer is not None:
            return f"audio rendered with {self.renderer.soundfont.name}"
        if self.cfg.get("audio") is not None and not self.cfg.audio.get("enabled", True):
            return "audio is off (audio.enabled=false)"
        return ("no audio: no General MIDI SoundFont found in " + ", ".join(SEARCH_DIRS)
                + " (apt-get install fluid-soundfont-gm, or start with audio.soundfont=/path/to.sf2)")

    def sampling(self, values: dict[str, Any]) -> SamplingConfig:
        """The page's sampling values as a ``SamplingConfig`` (whole numbers for int fields)."""
        kw = {}
        for f in sampling_fields():
            v = values.get(f.name, getattr(self.defaults, f.name))
            if f.kind is int and isinstance(v, float) and v.is_integer():
                v = int(v)
            elif f.kind is bool and v is not None:
                v = bool(v)
            kw[f.name] = v
        try:
            return SamplingConfig(**kw)
        except (TypeError, ValueError) as e:
            raise UserError(f"sampling: {e}") from None

    def prompt(self, kind: str, upload: str | None, upload_name: str | None, piece: str | None):
        """``(prompt ids, description)`` for the page's prompt choice."""
        if kind == "none":
            return [BOS_ID], "none (start token)"
        if kind == "upload":
            if not upload:
                raise UploadError("choose a MIDI file to upload first (or another prompt)")
            path = Path(upload).resolve()
            if not path.is_relative_to(self.upload_dir) or not path.is_file():
                raise UploadError("that file was not uploaded to this page: upload it again")
            name = upload_name or path.name
            check_upload(path, name, self.cfg.max_upload_mb)
            bars = self.cfg.prompt.bars
            try:
                ids = self.model.prompts(str(path), 1, bars)[0]
            except ConfigError as e:
                raise UploadError(f"{name}: " + str(e).split(": ", 1)[-1]) from None
            return ids, f"the first {bars} bars of {name}"
        if kind == "data":
            if not self.pieces:
                raise UserError(self.pieces_note)
            if piece not in self.pieces:
                raise UserError("choose one of the listed pieces")
            length = self.cfg.prompt.length
            ids = self._split.doc(self.pieces[piece])[: 1 + length].astype(np.int64).tolist()  # BOS + opening
            return ids, f"the first {length} tokens of {piece}"
        raise UserError(f"prompt {kind!r} must be one of {', '.join(PROMPT_KINDS)}")

    def generate(self, kind: str, upload: str | None, piece: str | None, max_new_tokens: Any, seed: Any,
                 sampling: dict[str, Any], upload_name: str | None = None, session: str = "",
                 progress: Callable[[int, int], None] | None = None) -> Result:
        sampling_cfg = self.sampling(sampling)
        try:
            max_new = int(max_new_tokens)
            seed = int(seed)
        except (TypeError, ValueError):
            raise UserError(f"length {max_new_tokens!r} and seed {seed!r} must be whole numbers") from None
        if not 1 <= max_new <= self.cfg.max_new_tokens_limit:
            raise UserError(f"length={max_new} must be in 1..{self.cfg.max_new_tokens_limit}")
        if not 0 <= seed <= SEED_MAX:
            raise UserError(f"seed={seed} must be in 0..{SEED_MAX}")
        prompt, prompt_desc = self.prompt(kind, upload, upload_name, piece)
        with self._lock:
            n = next(self._count)
            folder = self.out_dir / (re.sub(r"[^A-Za-z0-9_-]", "", session)[:16] or "local") / f"{n:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            piece = self.model.generate(1, prompt, sampling=sampling_cfg, seed=seed, max_new_tokens=max_new,
                                        context_len=self.context, use_cache=self.cfg.use_cache,
                                        overflow=self.cfg.overflow, progress=progress)[0]
            seconds = time.perf_counter() - t0
            entry = piece.write(folder, "sample", f"seed {seed}", self.renderer)
        report = {
            "ckpt_path": str(self.run.ckpt_path), "version": self.version,
            "settings": {"max_new_tokens": max_new, "seed": seed, "sampling": dataclasses.asdict(sampling_cfg),
                         "use_cache": self.cfg.use_cache, "overflow": self.cfg.overflow,
                         "context": self.context_desc, "device": str(self.device)},
            "prompt": prompt_desc, "timing": {"seconds": round(seconds, 3)}, "samples": [entry],
        }
        atomic_write_text(folder / "generation.json", json.dumps(report, indent=1))
        if "error" in entry:
            return Result(None, None, None, f"the sampled tokens could not be decoded ({entry['error']}); "
                                            "try another seed or settings", report)
        audio = entry.get("audio", {})
        end = "ended at its EOS" if entry["ended_at_eos"] else f"stopped at the length limit ({max_new})"
        message = (f"{entry['notes']} notes, {len(entry['ids'])} new tokens in {seconds:.1f} s ({end}); "
                   f"prompt: {prompt_desc}; seed {seed}")
        return Result(folder / entry["midi"], folder / entry["png"],
                      folder / next(iter(audio.values())) if audio else None, message, report)


# ----------------------------------------------------------------------------- the page

def build_demo(studio: Studio):
    """The Gradio page around ``studio``: controls in, piano roll, audio, MIDI and a status line out."""
    import gradio as gr

    cfg = studio.cfg
    fields = sampling_fields()
    with gr.Blocks(title=f"musicgen {studio.version}", analytics_enabled=False) as demo:
        gr.Markdown(f"## musicgen: {studio.version}\n`{studio.run.ckpt_path}` · context {studio.context_desc} · "
                    f"{studio.pieces_note} · {studio.audio_note}")
        with gr.Row():
            with gr.Column(scale=1):
                kinds = [("no prompt (start token)", "none"),
                         (f"an uploaded MIDI file (its first {cfg.prompt.bars} bars)", "upload")]
                if studio.pieces:
                    kinds.append((f"a {cfg.prompt.split} piece (its first {cfg.prompt.length} tokens)", "data"))
                kind = gr.Radio(kinds, value="none", label="prompt")
                upload = gr.File(label=f"MIDI file (at most {cfg.max_upload_mb:g} MB)", file_types=[".mid", ".midi"],
                                 type="filepath")
                names = list(studio.pieces)
                piece = gr.Dropdown(names, value=names[0] if names else None, label=f"{cfg.prompt.split} piece",
                                    visible=bool(names), filterable=True)
                length = gr.Slider(1, cfg.max_new_tokens_limit, value=cfg.max_new_tokens, step=1,
                                   label="length (max new tokens)", info="a piece ends at its EOS, or here")
                seed = gr.Number(value=cfg.seed, precision=0, minimum=0, maximum=SEED_MAX, label="seed")
                button = gr.Button("Generate", variant="primary")
                with gr.Accordion("sampling", open=True):
                    controls = [_control(gr, f, getattr(studio.defaults, f.name)) for f in fields]
            with gr.Column(scale=2):
                status = gr.Markdown("Choose the settings and press **Generate**.", elem_id="status")
                roll = gr.Image(label="piano roll", type="filepath", interactive=False, elem_id="roll")
                audio = gr.Audio(label="audio", type="filepath", interactive=False, elem_id="audio",
                                 visible=studio.renderer is not None)
                midi = gr.File(label="MIDI file", interactive=False, elem_id="midi")
                if studio.renderer is None:
                    gr.Markdown(f"*{studio.audio_note}*")

        def on_generate(request: gr.Request, progress=gr.Progress(), *values):  # noqa: B008 (Gradio's idiom)
            kind_v, upload_v, piece_v, length_v, seed_v, *sampling_v = values

            def report(done: int, total: int) -> None:
                progress((done, total), desc="generating", unit="tokens")

            try:
                result = studio.generate(
                    kind_v, upload_v, piece_v, length_v, seed_v, dict(zip([f.name for f in fields], sampling_v)),
                    upload_name=Path(upload_v).name if upload_v else None,
                    session=getattr(request, "session_hash", "") or "", progress=report,
                )
            except UserError as e:
                raise gr.Error(str(e), print_exception=False) from None
            except Exception as e:  # a bug: logged with its traceback, shown as one line, the server goes on
                log.exception("generation failed")
                raise gr.Error(f"generation failed: {type(e).__name__}: {e}") from None
            return (str(result.png) if result.png else None, str(result.audio) if result.audio else None,
                    str(result.midi) if result.midi else None, result.message)

        on_generate.__annotations__["request"] = gr.Request  # resolved: `gr` is local, Gradio reads the hint

        upload.upload(lambda: "upload", outputs=kind, queue=False, api_visibility="private")
        piece.input(lambda: "data", outputs=kind, queue=False, api_visibility="private")
        button.click(on_generate, inputs=[kind, upload, piece, length, seed, *controls],
                     outputs=[roll, audio, midi, status], api_name="generate", concurrency_limit=1,
                     show_progress="full")
    demo.queue(default_concurrency_limit=1, max_size=cfg.queue_size)
    return demo


def _control(gr, f: SamplingField, value: Any):
    if f.kind is bool:
        return gr.Checkbox(value=value, label=f.label, info=f.info)
    if f.bounds is None:
        return gr.Number(value=value, precision=0 if f.kind is int else None, label=f.label, info=f.info)
    lo, hi = f.bounds
    step = 1 if f.kind is int else 0.01
    return gr.Slider(lo, hi, value=value, step=step, label=f.label, info=f.info)


def output_folder(cfg: DictConfig) -> Path:
    """This server's folder: ``output_dir``, else ``<run dir>/app/<date_time>`` (nothing loaded yet)."""
    if cfg.output_dir:
        return Path(cfg.output_dir).resolve()
    run_dir = find_checkpoint(cfg.ckpt_path).resolve().parent.parent
    return run_dir / "app" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def serve(cfg: DictConfig, block: bool = True, on_start: Callable[[str], None] | None = None):
    """Load the run, build the page and launch it on ``server_name``:``server_port``; returns the
    Gradio app once it has stopped (``block``) or at once."""
    sampling_config(cfg.sampling)  # range errors before any folder is made or model loaded
    out_dir = output_folder(cfg)
    upload_dir = out_dir / "gradio"  # Gradio's uploads and its cache of served files: inside the output folder
    upload_dir.mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(upload_dir)  # read by gradio at import and when the page is built
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own requests to itself, one line each
    import gradio as gr

    studio = Studio(cfg, out_dir, upload_dir)
    demo = build_demo(studio)
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts to fetch
                              font_mono=["ui-monospace", "monospace"])
    demo.launch(
        server_name=cfg.server_name, server_port=cfg.server_port, share=False, inbrowser=False,
        allowed_paths=[str(out_dir)], max_file_size=f"{cfg.max_upload_mb}mb", prevent_thread_lock=True,
        show_error=True, ssr_mode=False, mcp_server=False, pwa=False, footer_links=["api", "settings"],
        theme=theme, quiet=True,
    )
    print(f"musicgen app for {studio.run.ckpt_path} on {demo.local_url} (outputs in {out_dir})", flush=True)
    if on_start is not None:
        on_start(demo.local_url)
    if block:
        try:
            demo.block_thread()
        finally:
            demo.close()
    return demo


@hydra_main("app")
def main(cfg: DictConfig) -> None:
    log.info("app settings: %s", json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))
    serve(cfg)


if __name__ == "__main__":
    main()
