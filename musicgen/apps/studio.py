"""Interactive app: ``musicgen app ckpt_path=<run dir or .ckpt>`` (``make app RUN=...``).

A local Gradio page around one trained run, showing what that run can do and nothing else
(``Studio.controls``). Every run: the sampling settings (one control per field of
``SamplingConfig`` but the guidance scale, read at run time, bounded by its validated range), a
prompt (none, an uploaded MIDI file's first bars, or the opening of a piece of the run's data), a
length and a seed. A conditioned run (``conditioning=key|full``) adds one choice per attribute it
conditions on ("(any)": not asked, its null token; else one of the run's own values, keys as
``D_major``) and the guidance scale ``cfg_scale``; the prefix and the guidance are the API's. A
run trained with ``infill=bars`` adds a second task: regenerate bars FIRST-LAST of the uploaded
file, every note outside them kept. The page shows the piano roll, plays the audio (where a
SoundFont is found; it says so otherwise) and offers the MIDI file. Decoding and writing are
``musicgen.api``'s (``MusicModel.generate``, ``MusicModel.infill``, ``Piece.write``), as
``musicgen generate`` does; the page itself is ``musicgen.apps.page``.

Safety: it listens on ``server_name`` (127.0.0.1 unless told otherwise) and never opens a share
link. It reads only the checkpoint it was started with, the run's token cache (for the listed
pieces, chosen by name from a fixed list) and files uploaded to it; it writes, and Gradio serves,
only under its output folder (``<run dir>/app/<date_time>`` or ``output_dir``), where Gradio's own
upload and cache folder is put too. Uploads over ``max_upload_mb`` are refused by the server as
they arrive; an unusable one (not MIDI, empty, drums only, no notes) is a message in the page, and
so are bars the file cannot give and attribute values the run does not know. The model is loaded
once and generations run one at a time (a queue of ``queue_size``).

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
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from musicgen.api import MusicModel
from musicgen.apps.page import ANY, SEED_MAX, Controls, build_demo, sampling_fields
from musicgen.audio import SEARCH_DIRS, renderer_from_config
from musicgen.checkpoint import find_checkpoint, load_run_cache
from musicgen.config import sampling_config
from musicgen.constants import BOS_ID
from musicgen.control.infilling import parse_bars
from musicgen.errors import ConfigError, UserError
from musicgen.fs import atomic_write_text
from musicgen.generation import SamplingConfig
from musicgen.midi_io import BadMidiError, read_score
from musicgen.runtime import hydra_main, pick_device

log = logging.getLogger(__name__)

PROMPT_KINDS = ("none", "upload", "data")


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
    folder: Path | None = None  # where it was written (the report, and the files when they could be)


class Studio:
    """The loaded run and everything a generation needs; knows nothing of Gradio.

    ``generate`` (continue a prompt) and ``infill`` (regenerate bars of an uploaded file) take the
    page's values, check them (``UserError`` with a message for the page), decode one piece with
    ``musicgen.api.MusicModel`` and write it with ``Piece.write`` into a new folder under ``out_dir``.
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

    def controls(self) -> Controls:
        """The controls this run gets: attributes and guidance only if it was trained with
        conditioning (its own values, "(any)" first), the infilling task only if with infilling."""
        vocab = self.model.conditioning
        attributes = {}
        if vocab is not None:
            for attr in vocab.attributes:
                shown = [(v.replace("_", " ") if attr == "key" else v, v) for v in vocab.values[attr]]
                attributes[attr] = ((ANY, ANY), *shown)
        guidance = next(f for f in sampling_fields(guidance=True) if f.name == "cfg_scale")
        return Controls(tuple(sampling_fields()), attributes, guidance if vocab is not None else None,
                        self.model.infill_vocab is not None)

    def sampling(self, values: Mapping[str, Any]) -> SamplingConfig:
        """The page's sampling values as a ``SamplingConfig`` (whole numbers for int fields); the
        guidance scale of an unconditioned run stays at 1 (another is a ``UserError``)."""
        kw = {}
        for f in sampling_fields(guidance=True):
            v = values.get(f.name, getattr(self.defaults, f.name))
            if f.kind is int and isinstance(v, float) and v.is_integer():
                v = int(v)
            elif f.kind is bool and v is not None:
                v = bool(v)
            kw[f.name] = v
        if self.model.conditioning is None:
            if values.get("cfg_scale") not in (None, 1, 1.0):
                raise UserError(f"cfg_scale={values['cfg_scale']}: this run was trained without conditioning, "
                                "so there is nothing to guide")
            kw["cfg_scale"] = 1.0
        try:
            return SamplingConfig(**kw)
        except (TypeError, ValueError) as e:
            raise UserError(f"sampling: {e}") from None

    def condition(self, cond: Mapping[str, Any] | None) -> dict[str, str]:
        """The attributes asked on the page (``{"key": "D_major"}``; "(any)" or empty: not asked),
        checked against the run's vocabulary: a value it does not know is a one-line ``UserError``."""
        asked = {a: str(v) for a, v in (cond or {}).items() if v not in (None, "", ANY)}
        vocab = self.model.conditioning
        if asked and vocab is None:
            raise UserError(f"this run was trained without conditioning: it cannot be asked for {', '.join(asked)}")
        for attr, value in asked.items():
            if attr not in vocab.attributes:
                raise UserError(f"this run conditions on {', '.join(vocab.attributes)} only, not {attr}")
            if value not in vocab.values[attr]:
                raise UserError(f"{attr}={value} is unknown to this run; known values: {', '.join(vocab.values[attr])}")
        return asked

    def uploaded(self, upload: str | None, upload_name: str | None) -> tuple[Path, str]:
        """``(path, name)`` of a file uploaded to this page, checked (``UploadError`` otherwise)."""
        if not upload:
            raise UploadError("choose a MIDI file to upload first (or another prompt)")
        path = Path(upload).resolve()
        if not path.is_relative_to(self.upload_dir) or not path.is_file():
            raise UploadError("that file was not uploaded to this page: upload it again")
        name = upload_name or path.name
        check_upload(path, name, self.cfg.max_upload_mb)
        return path, name

    def prompt(self, kind: str, upload: str | None, upload_name: str | None, piece: str | None):
        """``(prompt ids, description)`` for the page's prompt choice."""
        if kind == "none":
            return [BOS_ID], "none (start token)"
        if kind == "upload":
            path, name = self.uploaded(upload, upload_name)
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

    @staticmethod
    def _seed(seed: Any) -> int:
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise UserError(f"seed {seed!r} must be a whole number") from None
        if not 0 <= seed <= SEED_MAX:
            raise UserError(f"seed={seed} must be in 0..{SEED_MAX}")
        return seed

    def _folder(self, session: str) -> Path:
        """A new folder for one result: ``<out_dir>/<session>/<NNNN>``."""
        folder = self.out_dir / (re.sub(r"[^A-Za-z0-9_-]", "", session)[:16] or "local") / f"{next(self._count):04d}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def generate(self, kind: str, upload: str | None, piece: str | None, max_new_tokens: Any, seed: Any,
                 sampling: Mapping[str, Any], upload_name: str | None = None, session: str = "",
                 progress: Callable[[int, int], None] | None = None,
                 cond: Mapping[str, Any] | None = None) -> Result:
        """Continue a prompt: one piece, written with ``generation.json`` (its ``conditioning``
        entry, for a conditioned run, says what was asked and at what guidance)."""
        sampling_cfg = self.sampling(sampling)
        asked = self.condition(cond)
        try:
            max_new = int(max_new_tokens)
        except (TypeError, ValueError):
            raise UserError(f"length {max_new_tokens!r} must be a whole number") from None
        if not 1 <= max_new <= self.cfg.max_new_tokens_limit:
            raise UserError(f"length={max_new} must be in 1..{self.cfg.max_new_tokens_limit}")
        seed = self._seed(seed)
        prompt, prompt_desc = self.prompt(kind, upload, upload_name, piece)
        with self._lock:
            folder = self._folder(session)
            t0 = time.perf_counter()
            piece = self.model.generate(1, prompt, cond=asked, cfg_scale=sampling_cfg.cfg_scale, sampling=sampling_cfg,
                                        seed=seed, max_new_tokens=max_new, context_len=self.context,
                                        use_cache=self.cfg.use_cache, overflow=self.cfg.overflow,
                                        progress=progress)[0]
            seconds = time.perf_counter() - t0
            entry = piece.write(folder, "sample", f"seed {seed}", self.renderer)
        conditioning = piece.info.get("conditioning")
        report = {
            "ckpt_path": str(self.run.ckpt_path), "version": self.version, "task": "continue",
            "settings": {"max_new_tokens": max_new, "seed": seed, "sampling": dataclasses.asdict(sampling_cfg),
                         "use_cache": self.cfg.use_cache, "overflow": self.cfg.overflow,
                         "context": self.context_desc, "device": str(self.device)},
            "prompt": prompt_desc, **({"conditioning": conditioning} if conditioning else {}),
            "timing": {"seconds": round(seconds, 3)}, "samples": [entry],
        }
        atomic_write_text(folder / "generation.json", json.dumps(report, indent=1))
        end = "ended at its EOS" if entry["ended_at_eos"] else f"stopped at the length limit ({max_new})"
        return self._result(folder, entry, report, f"{len(entry['ids'])} new tokens in {seconds:.1f} s ({end}); "
                                                   f"prompt: {prompt_desc}{_asked(conditioning)}; seed {seed}")

    def infill(self, upload: str | None, upload_name: str | None, bars: Any, seed: Any, sampling: Mapping[str, Any],
               cond: Mapping[str, Any] | None = None, session: str = "",
               progress: Callable[[int, int], None] | None = None) -> Result:
        """Regenerate ``bars`` ("FIRST-LAST", 1-based) of an uploaded file, every other note kept:
        one piece, written with its span shaded and ``infill.json`` (as ``musicgen generate
        task=infill`` writes it). Bars the file cannot give are a ``UserError`` naming the file.
        ``progress`` is accepted for the page's sake; infilling reports none."""
        if self.model.infill_vocab is None:
            raise UserError("this run was trained without infilling (train with infill=bars): it can only continue")
        sampling_cfg = self.sampling(sampling)
        asked = self.condition(cond)
        seed = self._seed(seed)
        path, name = self.uploaded(upload, upload_name)
        try:
            first, last = parse_bars(bars)
        except ConfigError as e:
            raise UserError(_bars_message(e)) from None
        shown = f"{first + 1}-{last}"
        with self._lock:
            t0 = time.perf_counter()
            try:
                piece = self.model.infill(str(path), bars=(first + 1, last), n=1, cond=asked,
                                          cfg_scale=sampling_cfg.cfg_scale, sampling=sampling_cfg, seed=seed,
                                          max_tokens=self.cfg.infill.max_tokens)[0]
            except ConfigError as e:  # a span the file cannot give
                raise UploadError(f"{name}: {_bars_message(e)}") from None
            seconds = time.perf_counter() - t0
            folder = self._folder(session)
            entry = piece.write(folder, "sample", f"{name}, bars {shown} regenerated (seed {seed})", self.renderer,
                                span=piece.info["span_ticks"])
        sample = {**{k: v for k, v in entry.items() if k not in ("prompt_ids", "ended_at_eos")},
                  "bars": piece.info["bars"], "ended_at_end": piece.ended}
        report = {"ckpt_path": str(self.run.ckpt_path), "version": self.version, "task": "infill", "file": name,
                  "bars": shown, "settings": {"seed": seed, "sampling": dataclasses.asdict(sampling_cfg),
                                              "max_tokens": self.cfg.infill.max_tokens, "device": str(self.device)},
                  **piece.info["context"], "timing": {"seconds": round(seconds, 3)}, "samples": [sample]}
        atomic_write_text(folder / "infill.json", json.dumps(report, indent=1))
        end = "" if piece.ended else f", stopped at the token limit ({report['max_tokens']})"
        return self._result(folder, entry, report, f"{len(piece.ids)} new tokens in {seconds:.1f} s "
                                                   f"(bars {shown} of {name} regenerated{end})"
                                                   f"{_asked(report.get('conditioning'))}; seed {seed}")

    @staticmethod
    def _result(folder: Path, entry: dict[str, Any], report: dict[str, Any], line: str) -> Result:
        if "error" in entry:
            return Result(None, None, None, f"the sampled tokens could not be decoded ({entry['error']}); "
                                            "try another seed or settings", report, folder)
        audio = entry.get("audio", {})
        return Result(folder / entry["midi"], folder / entry["png"], folder / next(iter(audio.values())) if audio
                      else None, f"{entry['notes']} notes, {line}", report, folder)


def _asked(conditioning: Mapping[str, Any] | None) -> str:
    """``; asked key D_major (cfg_scale 1.5)`` for a status line; nothing for an unconditioned run."""
    if not conditioning:
        return ""
    attrs = ", ".join(f"{a} {v}" for a, v in conditioning["attributes"].items()) or "nothing"
    return f"; asked {attrs} (cfg_scale {conditioning['cfg_scale']:g})"


def _bars_message(e: ConfigError) -> str:
    """The API's message about ``infill.bars=...`` in the page's words."""
    return str(e).replace("infill.bars=", "bars ")


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
