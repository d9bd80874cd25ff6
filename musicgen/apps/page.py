"""The app's controls and its Gradio page. What each ``SamplingConfig`` field becomes
(``sampling_fields``: read at run time, bounded by its validated range) and what a run's page
holds (``Controls``, which ``musicgen.apps.studio.Studio.controls`` fills in from what the
checkpoint can do); ``build_demo`` draws the page from them: the task (continue a prompt;
regenerate bars of the uploaded file, for a run trained with infilling), the prompt, length and
seed, a conditioned run's attributes and guidance scale, the sampling controls; the piano roll,
audio, MIDI file and a status line out. One endpoint, ``/generate``; its inputs, in order: prompt kind, upload, piece,
length, seed, the sampling fields (``Controls.sampling``), then, where the run has them, one
value per attribute (``Controls.attributes``), ``cfg_scale``, the task and the bars.

Gradio is imported only when the page is built (an optional extra). This module imports
nothing of the studio, which imports it: ``build_demo`` is handed a ``Studio``.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from pathlib import Path
from typing import Any

from musicgen.errors import UserError
from musicgen.generation import SamplingConfig
from musicgen.generation import sampling as sampling_module

log = logging.getLogger(__name__)

SEED_MAX = 2**32 - 1
ANY = "(any)"  # an attribute not asked: its null token
GUIDANCE_FIELDS = ("cfg_scale",)  # sampling fields that mean something to a conditioned run only

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
    "cfg_scale": ("guidance (cfg_scale)", "classifier-free guidance: 1 plain conditional, 0 unconditional, "
                                          "> 1 follows the attributes harder"),
}


@dataclasses.dataclass(frozen=True)
class SamplingField:
    """One field of ``SamplingConfig`` as a control: its type and validated range (``None``: unbounded)."""

    name: str
    kind: type  # bool, int or float
    bounds: tuple[float, float] | None
    label: str
    info: str


def sampling_fields(guidance: bool = False) -> list[SamplingField]:
    """``SamplingConfig``'s fields, in order, each with its range (``<NAME>_RANGE`` in
    ``musicgen.generation.sampling``), read at run time so that a new field gets a control.
    The guidance scale (``GUIDANCE_FIELDS``) only with ``guidance``: a page shows it beside a
    conditioned run's attributes, never among the generic controls."""
    hints = typing.get_type_hints(SamplingConfig)
    out = []
    for f in dataclasses.fields(SamplingConfig):
        if f.name in GUIDANCE_FIELDS and not guidance:
            continue
        kind = hints[f.name]
        bounds = getattr(sampling_module, f"{f.name.upper()}_RANGE", None)
        label, info = SAMPLING_HELP.get(f.name, (f.name.replace("_", " "), ""))
        out.append(SamplingField(f.name, kind if kind in (bool, int) else float, bounds, label, info))
    return out


@dataclasses.dataclass(frozen=True)
class Controls:
    """What the page shows for a run, decided from what its checkpoint can do."""

    sampling: tuple[SamplingField, ...]  # the generic sampling controls (never the guidance scale)
    attributes: dict[str, tuple[tuple[str, str], ...]]  # attribute -> (label, value) choices, (any) first
    cfg_scale: SamplingField | None  # the guidance scale: a conditioned run only
    infill: bool  # the task "regenerate bars of the uploaded file": a run trained with infilling only


def build_demo(studio: Any):
    """The Gradio page around ``studio`` (a ``Studio``): controls in, piano roll, audio, MIDI and a status line out."""
    import gradio as gr

    cfg = studio.cfg
    controls = studio.controls()
    can = [f"conditions on {', '.join(controls.attributes)}"] if controls.attributes else []
    can += ["trained with infilling"] if controls.infill else []
    with gr.Blocks(title=f"musicgen {studio.version}", analytics_enabled=False) as demo:
        gr.Markdown(f"## musicgen: {studio.version}\n`{studio.run.ckpt_path}` · context {studio.context_desc} · "
                    + " · ".join([*can, studio.pieces_note, studio.audio_note]))
        with gr.Row():
            with gr.Column(scale=1):
                task = None
                if controls.infill:
                    task = gr.Radio([("continue a prompt", "continue"),
                                     ("regenerate bars of the uploaded file", "infill")],
                                    value="continue", label="task", elem_id="task")
                kinds = [("no prompt (start token)", "none"),
                         (f"an uploaded MIDI file (its first {cfg.prompt.bars} bars)", "upload")]
                if studio.pieces:
                    kinds.append((f"a {cfg.prompt.split} piece (its first {cfg.prompt.length} tokens)", "data"))
                kind = gr.Radio(kinds, value="none", label="prompt", elem_id="prompt")
                upload = gr.File(label=f"MIDI file (at most {cfg.max_upload_mb:g} MB)", file_types=[".mid", ".midi"],
                                 type="filepath", elem_id="upload")
                bars = None
                if controls.infill:
                    bars = gr.Textbox(value=str(cfg.infill.bars), label="bars to regenerate (FIRST-LAST)",
                                      info="1-based, inclusive: every note outside them is kept", visible=False,
                                      elem_id="bars")
                names = list(studio.pieces)
                piece = gr.Dropdown(names, value=names[0] if names else None, label=f"{cfg.prompt.split} piece",
                                    visible=bool(names), filterable=True)
                length = gr.Slider(1, cfg.max_new_tokens_limit, value=cfg.max_new_tokens, step=1,
                                   label="length (max new tokens)", info="a piece ends at its EOS, or here")
                seed = gr.Number(value=cfg.seed, precision=0, minimum=0, maximum=SEED_MAX, label="seed")
                button = gr.Button("Generate", variant="primary")
                attributes, guidance = [], []
                if controls.attributes:
                    with gr.Accordion("conditioning", open=True):
                        attributes = [gr.Dropdown(list(choices), value=choices[0][1], label=attr,
                                                  info="(any): not asked", filterable=True, elem_id=f"attr-{attr}")
                                      for attr, choices in controls.attributes.items()]
                        guidance = [_control(gr, controls.cfg_scale, studio.defaults.cfg_scale)]
                with gr.Accordion("sampling", open=True):
                    sampling = [_control(gr, f, getattr(studio.defaults, f.name)) for f in controls.sampling]
            with gr.Column(scale=2):
                status = gr.Markdown("Choose the settings and press **Generate**.", elem_id="status")
                roll = gr.Image(label="piano roll", type="filepath", interactive=False, elem_id="roll")
                audio = gr.Audio(label="audio", type="filepath", interactive=False, elem_id="audio",
                                 visible=studio.renderer is not None)
                midi = gr.File(label="MIDI file", interactive=False, elem_id="midi")
                if studio.renderer is None:
                    gr.Markdown(f"*{studio.audio_note}*")
        names_s = [f.name for f in controls.sampling]
        n_s, n_a = len(sampling), len(attributes)

        def on_generate(request: gr.Request, progress=gr.Progress(), *values):  # noqa: B008 (Gradio's idiom)
            kind_v, upload_v, piece_v, length_v, seed_v, *rest = values
            sampling_v = dict(zip(names_s, rest[:n_s]))
            cond_v = dict(zip(controls.attributes, rest[n_s : n_s + n_a]))
            rest = rest[n_s + n_a :]
            if guidance:
                sampling_v["cfg_scale"], *rest = rest
            task_v, bars_v = rest if controls.infill else ("continue", None)

            def report(done: int, total: int) -> None:
                progress((done, total), desc="generating", unit="tokens")

            name = Path(upload_v).name if upload_v else None
            session = getattr(request, "session_hash", "") or ""
            try:
                if task_v == "infill":
                    result = studio.infill(upload_v, name, bars_v, seed_v, sampling_v, cond_v, session=session)
                else:
                    result = studio.generate(kind_v, upload_v, piece_v, length_v, seed_v, sampling_v,
                                             upload_name=name, session=session, progress=report, cond=cond_v)
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
        if task is not None:  # infilling reads the upload and the bars; continuing, the prompt and the length
            def on_task(t: str):
                go_on = t != "infill"
                return (gr.update(visible=go_on), gr.update(visible=go_on and bool(names)),
                        gr.update(visible=go_on), gr.update(visible=not go_on))

            task.change(on_task, inputs=task, outputs=[kind, piece, length, bars], queue=False,
                        api_visibility="private")
        extra = [task, bars] if controls.infill else []
        button.click(on_generate, inputs=[kind, upload, piece, length, seed, *sampling, *attributes, *guidance, *extra],
                     outputs=[roll, audio, midi, status], api_name="generate", concurrency_limit=1,
                     show_progress="full")
    demo.queue(default_concurrency_limit=1, max_size=cfg.queue_size)
    return demo


def _control(gr, f: SamplingField, value: Any):
    """A control for a sampling field: checkbox, number box or bounded slider."""
    if f.kind is bool:
        return gr.Checkbox(value=value, label=f.label, info=f.info)
    if f.bounds is None:
        return gr.Number(value=value, precision=0 if f.kind is int else None, label=f.label, info=f.info)
    lo, hi = f.bounds
    step = 1 if f.kind is int else 0.01
    return gr.Slider(lo, hi, value=value, step=step, label=f.label, info=f.info)
