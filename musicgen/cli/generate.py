"""``musicgen generate ckpt_path=<run dir or .ckpt>`` (``python -m musicgen.generate``).

A sample is one piece: decoding stops at its EOS (or after ``max_new_tokens``), within the
context the model trained on unless ``context_len`` asks for more. Writes per sample a ``.mid``
file, a piano-roll PNG of the whole piece (prompt included) and, where a SoundFont is found, its
audio (``.flac``, ``.wav``: ``musicgen.audio``), and one ``generation.json`` with the settings, the
prompt's source, the token ids and the timing. ``task=infill`` regenerates ``infill.bars`` of
``prompt.file``. The decoding is ``musicgen.api.MusicModel``'s.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from musicgen.api import MusicModel, write_generation
from musicgen.audio import renderer_from_config
from musicgen.config import sampling_config
from musicgen.control.infilling import parse_bars
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_text
from musicgen.generation.prompts import read_prompt_file
from musicgen.plots import plot_piano_roll
from musicgen.runtime import hydra_main, pick_device

log = logging.getLogger(__name__)


def prompt_of(m: MusicModel, cfg: DictConfig, rng: np.random.Generator) -> tuple[Any, str]:
    """The API's ``prompt`` for ``prompt.source`` and a description of where it came from."""
    source = cfg.prompt.source
    if source == "none":
        return None, "none (start token)"
    if source == "file":
        described = f"file {cfg.prompt.file} (first {cfg.prompt.bars} bars)"
        return m.prompts(cfg.prompt.file, 1, cfg.prompt.bars)[0], described
    if source == "data":
        return m.openings(cfg.prompt.split, cfg.num_samples, cfg.prompt.length, rng)
    raise ConfigError(f"prompt.source={source!r} must be one of data, file, none")


def output_dir(cfg: DictConfig, m: MusicModel, kind: str = "") -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(cfg.output_dir) if cfg.output_dir else m.run_dir / "samples" / f"{kind}{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_infill(cfg: DictConfig) -> dict[str, Any]:
    """``task=infill``: ``num_samples`` versions of ``prompt.file`` with ``infill.bars`` regenerated,
    each written as ``sample_NN.mid`` (piano roll, audio) beside ``original.png`` and ``infill.json``."""
    sampling = sampling_config(cfg.sampling)
    bars = parse_bars(cfg.infill.bars)
    score = read_prompt_file(cfg.prompt.file)
    renderer = renderer_from_config(cfg.get("audio"))
    device = pick_device(cfg.device)
    m = MusicModel.load(cfg.ckpt_path, device, quantize=cfg.get("quantize"))
    out_dir = output_dir(cfg, m, "infill_")
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    pieces = m.infill(score, f"{bars[0] + 1}-{bars[1]}", cfg.num_samples, cond=cfg.get("cond"), sampling=sampling,
                      seed=cfg.seed, max_tokens=cfg.infill.max_tokens)
    seconds = time.perf_counter() - t0
    result = pieces[0].info["context"]
    span = result["span_ticks"]
    label = f"bars {bars[0] + 1}-{bars[1]}"
    plot_piano_roll(score, out_dir / "original.png", title=f"{Path(cfg.prompt.file).name} (before)", span=span)
    samples = []
    for i, p in enumerate(pieces):
        entry = p.write(out_dir, f"sample_{i:02d}", f"{m.version} {label} infilled", renderer, span=span)
        entry = {"index": i, **{k: v for k, v in entry.items() if k in ("midi", "png", "audio", "error")},
                 "ids": p.ids, "bars": p.info["bars"], "ended_at_end": p.ended, "syntax_errors": p.syntax_errors}
        samples.append(entry)
    report = {"ckpt_path": str(m.ckpt_path), "version": m.version, "task": "infill",
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
    m = MusicModel.load(cfg.ckpt_path, device, quantize=cfg.get("quantize"))  # quantize: null | int8
    _, context_desc = m.context(cfg.context_len)
    m.decoder(cfg.get("cond"), sampling.cfg_scale)  # cond.* it cannot honour fail here, before any output
    out_dir = output_dir(cfg, m)
    prompt, prompt_desc = prompt_of(m, cfg, np.random.default_rng(cfg.seed))
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task(f"generating {cfg.num_samples} samples", total=cfg.max_new_tokens)

        def progress(done: int, total: int) -> None:
            if done == 1:
                bar.reset(task)
            bar.update(task, completed=done)

        pieces = m.generate(cfg.num_samples, prompt, cond=cfg.get("cond"), sampling=sampling, seed=cfg.seed,
                            max_new_tokens=cfg.max_new_tokens, prompt_bars=cfg.prompt.bars,
                            context_len=cfg.context_len, use_cache=cfg.use_cache, overflow=cfg.overflow,
                            progress=progress)
    seconds = time.perf_counter() - t0
    settings = {
        "num_samples": cfg.num_samples, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
        "sampling": OmegaConf.to_container(cfg.sampling), "use_cache": cfg.use_cache,
        "overflow": cfg.overflow, "context": context_desc, "device": str(device), "quantize": cfg.get("quantize"),
    }
    return write_generation(m, pieces, out_dir, settings, prompt_desc, seconds, renderer)


@hydra_main("generate")
def main(cfg: DictConfig) -> None:
    report = run_generation(cfg)
    print(f"samples: {report['output_dir']}")


if __name__ == "__main__":
    main()
