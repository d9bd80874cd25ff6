"""Generation entry point: ``python -m musicgen.generate ckpt_path=<run dir or .ckpt>``.

A sample is one piece: decoding stops at its EOS (or after ``max_new_tokens``), within the
context the model trained on unless ``context_len`` asks for more. Writes per sample a ``.mid``
file, a piano-roll PNG of the whole piece (prompt included) and, where a SoundFont is found, its
audio (``.flac``, ``.wav``: ``musicgen.audio``), and one ``generation.json``
with the settings, the prompt's source, the token ids and the timing.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from musicgen.audio import AudioRenderer, renderer_from_config
from musicgen.checkpoint import LoadedRun, load_run
from musicgen.conditioning import conditioned_generation
from musicgen.config import pick_device, sampling_config
from musicgen.constants import EOS_ID
from musicgen.errors import ConfigError, user_errors
from musicgen.fs import atomic_write_text
from musicgen.generation import generate, sampling_grammar
from musicgen.generation.prompts import build_prompt, read_prompt_file
from musicgen.generation.quantize import apply_quantize
from musicgen.infill import continuation_net, infill_run, parse_bars
from musicgen.midi_io import write_score
from musicgen.plots import plot_piano_roll

log = logging.getLogger(__name__)


def write_sample(run: LoadedRun, prompt: list[int], output: list[int], out_dir: Path, stem: str, label: str,
                 renderer: AudioRenderer | None = None) -> dict[str, Any]:
    """One sampled piece (``output``: ``prompt`` and what followed, as ``generate`` returns it): its new
    ids up to EOS and, unless they cannot be decoded, ``<stem>.mid``, a piano roll ``<stem>.png`` of
    the whole piece (prompt included) and its audio in ``out_dir``. Returns the sample's report
    entry; a sample that cannot be decoded gets ``error`` instead of files (logged, never raised)."""
    new = output[len(prompt) :]
    ended = EOS_ID in new
    new = new[: new.index(EOS_ID)] if ended else new
    entry: dict[str, Any] = {"prompt_ids": prompt, "ids": new, "ended_at_eos": ended}
    try:
        score = run.tokenizer.decode(prompt + new)  # the whole piece, its prompt included
        n_notes = sum(len(t.notes) for t in score.tracks)
        if n_notes == 0:
            raise ValueError("the sampled tokens decode to no notes")
        write_score(score, out_dir / f"{stem}.mid")
        plot_piano_roll(score, out_dir / f"{stem}.png", title=f"{run.metadata['version']} {label}")
        entry.update(midi=f"{stem}.mid", png=f"{stem}.png", notes=n_notes,
                     syntax_errors=run.tokenizer.syntax_errors(new))
        if renderer is not None:  # FLAC + WAV beside the MIDI file: {"flac": "sample_00.flac", ...}
            entry["audio"] = renderer.write(score, out_dir / stem)
    except Exception as e:  # one ill-formed sample is reported and never loses the others
        log.warning("%s could not be decoded: %s", label, e)
        entry["error"] = f"{type(e).__name__}: {e}"
    return entry


def run_infill(cfg: DictConfig) -> dict[str, Any]:
    """``task=infill``: ``num_samples`` versions of ``prompt.file`` with ``infill.bars`` regenerated,
    each written as ``sample_NN.mid`` (piano roll, audio) beside ``original.png`` and ``infill.json``."""
    sampling = sampling_config(cfg.sampling)
    bars = parse_bars(cfg.infill.bars)
    score = read_prompt_file(cfg.prompt.file)
    renderer = renderer_from_config(cfg.get("audio"))
    device = pick_device(cfg.device)
    run = load_run(cfg.ckpt_path, map_location=device)
    apply_quantize(run.net, cfg.get("quantize"))  # null | int8 (weight-only, in place)
    out_dir = Path(cfg.output_dir) if cfg.output_dir else \
        run.run_dir / "samples" / f"infill_{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    t0 = time.perf_counter()
    result = infill_run(run, score, bars, cfg.num_samples, sampling, gen, device,
                        grammar=sampling_grammar(run.tokenizer, sampling), max_tokens=cfg.infill.max_tokens,
                        cond=cfg.get("cond"))
    seconds = time.perf_counter() - t0
    label = f"bars {bars[0] + 1}-{bars[1]}"
    plot_piano_roll(score, out_dir / "original.png", title=f"{Path(cfg.prompt.file).name} (before)",
                    span=result["span_ticks"])
    samples = []
    for i, s in enumerate(result.pop("samples")):
        stem = f"sample_{i:02d}"
        write_score(s["score"], out_dir / f"{stem}.mid")
        plot_piano_roll(s["score"], out_dir / f"{stem}.png", title=f"{run.metadata['version']} {label} infilled",
                        span=result["span_ticks"])
        entry = {"index": i, "midi": f"{stem}.mid", "png": f"{stem}.png", "ids": s["ids"], "bars": s["bars"],
                 "ended_at_end": s["ended"], "syntax_errors": run.tokenizer.syntax_errors(s["ids"])}
        if renderer is not None:
            entry["audio"] = renderer.write(s["score"], out_dir / stem)
        samples.append(entry)
    report = {"ckpt_path": str(run.ckpt_path), "version": run.metadata.get("version"), "task": "infill",
              "file": str(cfg.prompt.file), "bars": f"{bars[0] + 1}-{bars[1]}", "original_png": "original.png",
              "settings": {"num_samples": cfg.num_samples, "seed": cfg.seed,
                           "sampling": OmegaConf.to_container(cfg.sampling), "device": str(device)},
              **result, "timing": {"seconds": round(seconds, 3)}, "samples": samples}
    atomic_write_text(out_dir / "infill.json", json.dumps(report, indent=1))
    log.info("wrote %d infilled versions of %s (%s) to %s", len(samples), cfg.prompt.file, label, out_dir)
    report["output_dir"] = str(out_dir)
    return report


def run_generation(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("task", "continue") == "infill":
        return run_infill(cfg)
    if cfg.get("task", "continue") != "continue":
        raise ConfigError(f"task={cfg.task}: choose continue or infill")
    sampling = sampling_config(cfg.sampling)  # range errors before any model is loaded
    if cfg.prompt.source == "file":
        read_prompt_file(cfg.prompt.file)  # and an unusable prompt file
    renderer = renderer_from_config(cfg.get("audio"))  # a bad audio.soundfont fails here; none found: no audio
    device = pick_device(cfg.device)
    run = load_run(cfg.ckpt_path, map_location=device)
    apply_quantize(run.net, cfg.get("quantize"))  # null | int8 (weight-only, in place)
    context, context_desc = run.context(cfg.context_len)
    # a conditioned run decodes through classifier-free guidance (prefix inserted after BOS), its
    # body context shortened by the prefix; cond.* it cannot honour fail here, before any output
    net, context, conditioning = conditioned_generation(run, cfg.get("cond"), sampling.cfg_scale,
                                                       continuation_net(run, run.net.to(device)), context)
    if conditioning and conditioning["attributes"] and cfg.prompt.source != "none":
        log.warning("cond.* with prompt.source=%s: the prompt's own key and metre compete with the request "
                    "(prompt.source=none starts from the attributes alone)", cfg.prompt.source)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out_dir = Path(cfg.output_dir) if cfg.output_dir else run.run_dir / "samples" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    prompts, prompt_desc = build_prompt(run, cfg, rng)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    grammar = sampling_grammar(run.tokenizer, sampling)  # None unless sampling.constrained

    samples = []
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(f"generating {cfg.num_samples} samples", total=cfg.max_new_tokens)
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):  # same-length prompts decode together in one batch
            groups.setdefault(len(p), []).append(i)
        outputs: dict[int, list[int]] = {}
        for idx in groups.values():
            prompt = torch.tensor([prompts[i] for i in idx], dtype=torch.long, device=device)
            bar.reset(task)
            ids = generate(
                net, prompt, cfg.max_new_tokens, sampling, generator=gen,
                use_cache=cfg.use_cache, overflow=cfg.overflow, stop_at_eos=True, context_len=context,
                progress=lambda done, total: bar.update(task, completed=done), grammar=grammar,
            )
            for row, i in enumerate(idx):
                outputs[i] = ids[row].tolist()
    seconds = time.perf_counter() - t0
    new_tokens = 0

    for i in range(cfg.num_samples):
        entry = {"index": i, **write_sample(run, prompts[i], outputs[i], out_dir, f"sample_{i:02d}", f"sample {i}",
                                            renderer)}
        new_tokens += len(entry["ids"]) + entry["ended_at_eos"]
        samples.append(entry)

    report = {
        "ckpt_path": str(run.ckpt_path),
        "version": run.metadata.get("version"),
        "settings": {
            "num_samples": cfg.num_samples, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
            "sampling": OmegaConf.to_container(cfg.sampling), "use_cache": cfg.use_cache,
            "overflow": cfg.overflow, "context": context_desc, "device": str(device),
            "quantize": cfg.get("quantize"),
        },
        "prompt": prompt_desc,
        **({"conditioning": conditioning} if conditioning else {}),
        "timing": {"seconds": round(seconds, 3), "tokens_per_second": round(new_tokens / seconds, 1)},
        "samples": samples,
    }
    atomic_write_text(out_dir / "generation.json", json.dumps(report, indent=1))
    ok = sum("midi" in s for s in samples)
    log.info("wrote %d of %d samples to %s (%.0f tokens/s)", ok, len(samples), out_dir, new_tokens / seconds)
    report["output_dir"] = str(out_dir)
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
@user_errors
def main(cfg: DictConfig) -> None:
    report = run_generation(cfg)
    print(f"samples: {report['output_dir']}")


if __name__ == "__main__":
    main()
