"""Gallery entry point: ``musicgen gallery [runs=[outputs/demo/v7,...]]``.

Writes one static site, ``output_dir/index.html`` plus the files it shows under ``assets/``, that
works from ``file://`` with no network: inline CSS, no script, no font or URL from elsewhere, and
every path relative. Runs stand side by side, one column each: the run's version and settings,
its headline figures (``evaluation.json`` of ``musicgen.evaluate``, ``metrics.json`` of training),
then its samples (piano roll, an ``<audio>`` player, the prompt, the sample's figures, a MIDI
download link), then real pieces of its test split decoded by the same tokeniser (what
``evaluate`` writes to ``real/``).

A run's samples are its newest ``generate`` output (``samples/**/generation.json``). A run with
none gets ``samples_per_run`` generated with ``musicgen.generate.run_generation`` (written into
the run, under ``samples/gallery/``, as ``generate`` would), unless ``generate_missing=false``, in
which case its column says so. Audio a sample lacks (written before audio existed) is rendered into
the gallery's assets; without a SoundFont the players are replaced by one line saying how to get one.
The site is built in a temporary folder beside ``output_dir`` and moved into place whole.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from musicgen.audio import NO_SOUNDFONT, SEARCH_DIRS, AudioRenderer, renderer_from_config
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_text
from musicgen.generation.sampling import SamplingConfig
from musicgen.runtime import hydra_main

log = logging.getLogger(__name__)

DEMO_RUN = "outputs/demo/v7"
LEADERBOARD_RUNS = "outputs/leaderboard/runs"
#: Headline figures: (key in evaluation.json's rows, label, digits).
HEADLINE = (
    ("nll_per_note", "NLL per note (nats)", 3),
    ("perplexity", "token perplexity", 3),
    ("tonic_pitch_class_overlap", "tonic-relative pitch-class overlap", 3),
    ("scale_consistency", "scale consistency", 3),
    ("pitch_class_overlap", "key distribution (pitch-class overlap)", 3),
    ("interval_overlap", "interval overlap", 3),
    ("notes_per_bar_overlap", "notes-per-bar overlap", 3),
    ("ngram_repetition_4", "4-gram repetition", 3),
    ("copied_8gram_share", "copied 8-grams", 3),
    ("notes_per_piece", "notes per piece", 0),
)
AUDIO_MIME = {"flac": "audio/flac", "ogg": "audio/ogg", "wav": "audio/wav"}


def default_runs(root: Path = Path(".")) -> list[Path]:
    """The leaderboard's runs when there are any, one per entry (its first seed: ``v7_s0`` of ``v7_s0``,
    ``v7_s1``), by name; else the demo run."""
    board = root / LEADERBOARD_RUNS
    runs = sorted(p for p in board.glob("*") if (p / "checkpoints").is_dir()) if board.is_dir() else []
    first: dict[str, Path] = {}
    for p in runs:  # sorted: s0 before s1
        first.setdefault(re.sub(r"_s\d+$", "", p.name), p)
    return list(first.values()) or [root / DEMO_RUN]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def latest_generation(run_dir: Path) -> Path | None:
    """The newest ``generation.json`` under the run's ``samples/`` that wrote at least one MIDI file."""
    found = []
    for p in (run_dir / "samples").rglob("generation.json") if (run_dir / "samples").is_dir() else []:
        rep = _read_json(p)
        if rep and any("midi" in s for s in rep.get("samples", [])):
            found.append(p)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _generate(run_dir: Path, cfg: DictConfig, renderer: AudioRenderer | None) -> Path:
    """``samples_per_run`` samples of a run as ``musicgen generate`` makes them by default (the
    openings of 32 tokens of random validation pieces), into ``<run>/samples/gallery``."""
    from musicgen.api import MusicModel, write_generation
    from musicgen.runtime import pick_device

    log.info("%s has no samples: generating %d", run_dir, cfg.samples_per_run)
    device = pick_device(cfg.device)
    m = MusicModel.load(run_dir, device)
    out_dir = run_dir / "samples" / "gallery"
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts, desc = m.openings("val", cfg.samples_per_run, 32, np.random.default_rng(cfg.seed))
    t0 = time.perf_counter()
    pieces = m.generate(cfg.samples_per_run, prompts, seed=cfg.seed, max_new_tokens=cfg.max_new_tokens)
    settings = {"num_samples": cfg.samples_per_run, "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
                "sampling": dataclasses.asdict(SamplingConfig()), "context": m.context()[1], "device": str(device)}
    report = write_generation(m, pieces, out_dir, settings, desc, time.perf_counter() - t0, renderer)
    return Path(report["output_dir"]) / "generation.json"


def _real_pieces(run_dir: Path, cfg: DictConfig, renderer: AudioRenderer | None) -> tuple[Path, dict] | None:
    """The run's ``real/real.json`` (written by ``evaluate``), written now if missing and asked for."""
    real = run_dir / "real" / "real.json"
    if not real.exists() and cfg.real_pieces and (run_dir / "checkpoints").is_dir():
        from musicgen.checkpoint import load_run, load_run_cache
        from musicgen.evaluation.run import write_real_examples

        run = load_run(run_dir, map_location="cpu")
        cache = load_run_cache(run)
        split = "test" if cache.splits.get("test") is not None and cache.splits["test"].n_docs else "val"
        write_real_examples(run.tokenizer, cache, split, cfg.real_pieces, cfg.seed, run_dir / "real", renderer)
    rep = _read_json(real)
    return (real.parent, rep) if rep else None


def _figure(fig: Any, digits: int) -> str:
    if not isinstance(fig, dict) or fig.get("value") is None:
        return "-"
    v, lo, hi = fig["value"], fig.get("low"), fig.get("high")
    f = f"{{:.{digits}f}}"
    if lo is None or hi is None or lo != lo or hi != hi:  # NaN: no interval
        return f.format(v)
    return f"{f.format(v)} <small>[{f.format(lo)}, {f.format(hi)}]</small>"


def _slug(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "run"
    slug, k = base, 2
    while slug in taken:
        slug, k = f"{base}_{k}", k + 1
    taken.add(slug)
    return slug


class _Assets:
    """Copies files into the site's ``assets/<run>/`` and renders audio a piece lacks."""

    def __init__(self, root: Path, renderer: AudioRenderer | None, formats: list[str]) -> None:
        self.root, self.renderer, self.formats = root, renderer, formats

    def copy(self, src: Path, rel: str) -> str:
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        return rel

    def audio(self, folder: Path, entry: dict, rel_dir: str) -> str | None:
        """The relative path of the piece's audio in the site, in the first of ``formats``: copied
        when the piece has it, else rendered from its MIDI file, else (no SoundFont) any audio the
        piece has; ``None`` when it has none and there is no SoundFont."""
        have = {f: folder / name for f, name in (entry.get("audio") or {}).items() if (folder / name).exists()}
        if self.formats[0] in have:
            return self.copy(have[self.formats[0]], f"{rel_dir}/{have[self.formats[0]].name}")
        if self.renderer is not None:
            (self.root / rel_dir).mkdir(parents=True, exist_ok=True)
            renderer = AudioRenderer(self.renderer.soundfont, self.renderer.sample_rate, formats=self.formats[:1])
            written = renderer.write(folder / entry["midi"], self.root / rel_dir / Path(entry["midi"]).stem)
            return f"{rel_dir}/{next(iter(written.values()))}"
        for fmt in AUDIO_MIME:
            if fmt in have:
                return self.copy(have[fmt], f"{rel_dir}/{have[fmt].name}")
        return None


def _piece_card(title: str, folder: Path, entry: dict, rel_dir: str, assets: _Assets, lines: list[str]) -> str:
    e = html.escape
    img = assets.copy(folder / entry["png"], f"{rel_dir}/{entry['png']}") if entry.get("png") else None
    midi = assets.copy(folder / entry["midi"], f"{rel_dir}/{entry['midi']}")
    sound = assets.audio(folder, entry, rel_dir)
    ext = Path(sound).suffix[1:] if sound else ""
    parts = [f'<div class="card"><h4>{e(title)}</h4>']
    if img:
        parts.append(f'<img src="{e(img)}" alt="piano roll: {e(title)}" width="500" height="200">')
    if sound:
        parts.append(f'<audio controls preload="metadata"><source src="{e(sound)}" type="{AUDIO_MIME[ext]}">'
                     "your browser cannot play this audio</audio>")
    else:
        parts.append('<p class="note">no audio: no SoundFont (apt-get install fluid-soundfont-gm, '
                     "or audio.soundfont=/path/to.sf2)</p>")
    parts.append("<ul>" + "".join(f"<li>{line}</li>" for line in lines) + "</ul>")
    parts.append(f'<a class="dl" href="{e(midi)}" download>download MIDI</a></div>')
    return "".join(parts)


def _prompt_names(desc: str, n: int) -> list[str | None]:
    """The source piece of each sample's prompt, where ``generate``'s prompt description lists them."""
    m = re.search(r"\((.*)\)\s*$", desc or "")
    names = [s.strip() for s in m.group(1).split(",")] if m else []
    return names if len(names) == n else [None] * n


def _run_column(run_dir: Path, slug: str, cfg: DictConfig, assets: _Assets) -> str:
    e = html.escape
    conf = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else OmegaConf.create()
    metrics = _read_json(run_dir / "metrics.json") or {}
    evaluation = _read_json(run_dir / "evaluation.json")
    version = OmegaConf.select(conf, "version.name") or metrics.get("version") or "?"
    out = [f'<section class="run"><h2>{e(run_dir.name)} <span class="tag">{e(str(version))}</span></h2>',
           f'<p class="path">{e(str(run_dir))}</p>']
    desc = OmegaConf.select(conf, "version.description")
    if desc:
        out.append(f"<p>{e(str(desc))}</p>")
    settings = {
        "model": str(OmegaConf.select(conf, "model._target_") or "?").rsplit(".", 1)[-1],
        "tokeniser": str(OmegaConf.select(conf, "tokenizer._target_") or "?").rsplit(".", 1)[-1],
        "vocabulary": metrics.get("vocab_size"),
        "parameters": f"{metrics['n_params']:,}" if "n_params" in metrics else None,
        "steps": metrics.get("global_step"),
        "validation perplexity": f"{metrics['best_val_ppl']:.3f}" if "best_val_ppl" in metrics else None,
        "data": OmegaConf.select(conf, "data.description"),
    }
    out.append('<table class="kv">' + "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>"
                                              for k, v in settings.items() if v is not None) + "</table>")
    if evaluation:
        out.append(f"<h3>evaluation ({e(str(evaluation.get('split', '?')))} split, 95% intervals)</h3>"
                   '<table class="fig"><tr><th></th><th>model</th><th>real</th></tr>')
        for key, label, digits in HEADLINE:
            model, real = evaluation.get("model", {}).get(key), evaluation.get("real", {}).get(key)
            if model is None and real is None:
                continue
            out.append(f"<tr><th>{e(label)}</th><td>{_figure(model, digits)}</td><td>{_figure(real, digits)}</td></tr>")
        out.append("</table>")
    else:
        out.append('<p class="note">no evaluation.json: run python -m musicgen.evaluate ckpt_path=... for figures</p>')

    gen_path = latest_generation(run_dir)
    if gen_path is None and cfg.generate_missing and (run_dir / "checkpoints").is_dir():
        gen_path = _generate(run_dir, cfg, renderer_from_config(cfg.audio))
    out.append("<h3>samples</h3>")
    if gen_path is None:
        out.append('<p class="note">no samples: run python -m musicgen.generate ckpt_path=... '
                   "(or the gallery with generate_missing=true)</p>")
    else:
        gen = json.loads(gen_path.read_text())
        s = gen.get("settings", {})
        sampling = s.get("sampling", {})
        out.append(f'<p class="small">{e(gen.get("prompt", ""))}; sampling temperature '
                   f'{sampling.get("temperature")}, top-k {sampling.get("top_k")}, top-p {sampling.get("top_p")}, '
                   f'seed {s.get("seed")}</p><div class="cards">')
        samples = gen.get("samples", [])
        names = _prompt_names(gen.get("prompt", ""), len(samples))
        for entry, name in list(zip(samples, names))[: cfg.samples_per_run]:
            if "midi" not in entry:
                out.append(f'<div class="card"><h4>sample {entry["index"]}</h4><p class="note">'
                           f'not decodable: {e(entry.get("error", "?"))}</p></div>')
                continue
            n_prompt = len(entry.get("prompt_ids", [])) - 1
            prompt = (f"prompt: the first {n_prompt} tokens of {e(name)}" if name and n_prompt > 0
                      else f"prompt: {n_prompt} tokens" if n_prompt > 0 else "prompt: none (start token)")
            lines = [prompt, f"{entry.get('notes')} notes, {len(entry.get('ids', []))} new tokens",
                     "ended at its EOS" if entry.get("ended_at_eos") else "stopped at max_new_tokens",
                     f"syntax errors: {entry.get('syntax_errors', '-')}"]
            out.append(_piece_card(f"sample {entry['index']}", gen_path.parent, entry, f"assets/{slug}/samples",
                                   assets, lines))
        out.append("</div>")

    real = _real_pieces(run_dir, cfg, assets.renderer)
    out.append("<h3>real test pieces</h3>")
    if real is None:
        out.append('<p class="note">none written: run python -m musicgen.evaluate ckpt_path=...</p>')
    else:
        folder, rep = real
        out.append(f'<p class="small">pieces of the {e(str(rep.get("split")))} split, decoded by this run\'s '
                   'tokeniser (as the model sees them)</p><div class="cards">')
        for entry in rep.get("pieces", [])[: cfg.real_pieces or None]:
            out.append(_piece_card(f"real {entry['index']}", folder, entry, f"assets/{slug}/real", assets,
                                   [e(entry.get("name", "")), f"{entry.get('notes')} notes"]))
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:1em;
background:#f6f7f9;color:#222}
h1{margin:.2em 0}h2{margin:.2em 0}h3{margin:.8em 0 .3em;font-size:1.05em}h4{margin:.2em 0}
.runs{display:flex;gap:1em;overflow-x:auto;align-items:flex-start}
.run{flex:0 0 540px;background:#fff;border:1px solid #ddd;border-radius:8px;padding:.8em}
.tag{background:#2b5fb4;color:#fff;border-radius:4px;padding:0 .4em;font-size:.8em}
.path,.small{color:#666;font-size:.85em}.note{color:#a33;font-size:.9em}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0}th,td{padding:.15em .5em;text-align:left;
border-bottom:1px solid #eee;vertical-align:top}small{color:#777}
.cards{display:flex;flex-direction:column;gap:.6em}.card{border:1px solid #e3e3e3;border-radius:6px;padding:.5em}
.card img{width:100%;height:auto;display:block}.card audio{width:100%;margin:.3em 0}
.card ul{margin:.2em 0;padding-left:1.2em;font-size:.85em}.dl{font-size:.85em}
"""


def build_gallery(cfg: DictConfig) -> dict[str, Any]:
    runs = [Path(str(r)) for r in cfg.runs] if cfg.runs else default_runs()
    missing = [str(r) for r in runs if not r.is_dir()]
    if missing:
        raise ConfigError(f"runs: no such run directory: {', '.join(missing)}")
    formats = list(cfg.audio.formats)
    renderer = renderer_from_config(cfg.audio)
    out_dir = Path(cfg.output_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        assets = _Assets(tmp, renderer, formats)
        taken: set[str] = set()
        columns = [_run_column(r, _slug(r.name, taken), cfg, assets) for r in runs]
        no_audio = "" if renderer else (
            f'<p class="note">{html.escape(NO_SOUNDFONT.format(dirs=", ".join(SEARCH_DIRS)))}</p>')
        page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{html.escape(cfg.title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{html.escape(cfg.title)}</h1><p class=\"small\">{len(runs)} run(s) side by side: samples, "
                "then real test pieces; every figure with its 95% interval. Made by musicgen gallery; "
                f"works offline.</p>{no_audio}<div class=\"runs\">{''.join(columns)}</div></body></html>\n")
        atomic_write_text(tmp / "index.html", page)
        os.chmod(tmp, 0o755)
        old = out_dir.with_name(f".{out_dir.name}.old")
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("gallery of %d run(s): %s", len(runs), out_dir / "index.html")
    return {"index": str(out_dir / "index.html"), "runs": [str(r) for r in runs], "audio": renderer is not None}


@hydra_main("gallery")
def main(cfg: DictConfig) -> None:
    result = build_gallery(cfg)
    print(f"gallery: {result['index']}")


if __name__ == "__main__":
    main()
