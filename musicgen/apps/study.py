"""A listening study made once: each contestant's pieces written under opaque ids, the pairs drawn,
both stored in the study's SQLite file (``musicgen.data.preferences``), so that every listener
hears the same pieces and a restart regenerates nothing.

A study definition (``conf/study/<name>.yaml``) names its contestants, each of one kind:

- ``run``: samples of a trained run (``MusicModel.generate``, no prompt), with the study's sampling
  settings, ``max_new_tokens`` and seed;
- ``real``: untransposed pieces of a split of a run's data, decoded by its tokeniser (what the model
  would have to match);
- ``ngram``: samples of an n-gram (``order``) fitted to a run's training tokens, decoded by the same
  rules as the model's (``musicgen.evaluation.scoring.sample_ngram``).

Every piece is written as ``pieces/<id>.mid``, ``.png`` (a piano roll titled by its note count
only) and, with a SoundFont, audio; its provenance (run, checkpoint and its sha256, sampling
settings, seed, source piece) goes into the store, never onto the page. ``study.json`` records
the definition; a study folder holding another definition under the same name is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import symusic
from omegaconf import DictConfig, OmegaConf

from musicgen.audio import AudioRenderer
from musicgen.config import sampling_config
from musicgen.constants import BOS_ID
from musicgen.data.preferences import PreferenceStore, StudyPiece, draw_pairs, hash_text
from musicgen.errors import ConfigError, UserError
from musicgen.fs import atomic_write_text
from musicgen.midi_io import write_score
from musicgen.plots import plot_piano_roll

log = logging.getLogger(__name__)

KINDS = ("run", "real", "ngram")
STORE = "answers.sqlite"
MANIFEST = "study.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_piece(score: symusic.Score, out_dir: Path, stem: str, renderer: AudioRenderer | None) -> dict[str, Any]:
    """``stem.mid``, its piano roll ``stem.png`` and, with a renderer, its audio (the first format)."""
    write_score(score, out_dir / f"{stem}.mid")
    plot_piano_roll(score, out_dir / f"{stem}.png")  # titled by its note count: nothing of its source
    audio = renderer.write(score, out_dir / stem) if renderer is not None else {}
    return {"midi": f"pieces/{stem}.mid", "png": f"pieces/{stem}.png",
            "audio": f"pieces/{next(iter(audio.values()))}" if audio else None}


def contestant_scores(name: str, spec: DictConfig, study: DictConfig, models: dict) -> list[tuple[symusic.Score, dict]]:
    """``study.pieces_per_contestant`` decoded pieces of one contestant, each with its provenance;
    ``models``: run path -> ``MusicModel``, each run loaded once for the whole study."""
    kind = spec.kind
    n, seed = int(study.pieces_per_contestant), int(study.seed)
    sampling = sampling_config(study.sampling)
    m = models[str(spec.run)]
    base = {"kind": kind, "run": str(m.run_dir), "version": m.version}
    if kind == "real":
        split = m.pieces_of(spec.get("split", "test"))
        originals = split.originals()
        chosen = np.random.default_rng(seed).choice(originals, size=min(n, len(originals)), replace=False)
        return [(m.tokenizer.decode(split.doc(i).tolist()),
                 {**base, "split": spec.get("split", "test"), "name": split.names[i]}) for i in chosen]
    sampled = {**base, "ckpt": str(m.ckpt_path), "ckpt_sha256": file_sha256(m.ckpt_path),
               "sampling": dataclasses.asdict(sampling), "max_new_tokens": int(study.max_new_tokens)}
    if kind == "run":
        pieces = m.generate(n, sampling=sampling, seed=seed, max_new_tokens=int(study.max_new_tokens))
        drawn = [(p, {**sampled, "seed": seed, "index": i}) for i, p in enumerate(pieces)]
    else:
        from musicgen.evaluation.scoring import ngram_baseline, sample_ngram

        train = m.pieces_of("train")
        order = int(spec.get("order", 3))
        lm = ngram_baseline([train.doc(i) for i in range(train.n_docs)], m.tokenizer.vocab_size, order)
        rng = np.random.default_rng(seed)
        grammar = m.grammar(sampling)
        drawn = []
        for i in range(n):
            ids, _ = sample_ngram(lm, int(study.max_new_tokens), sampling, rng, grammar)
            drawn.append((m.piece([BOS_ID], ids), {**sampled, "order": order, "seed": seed, "index": i}))
    out = []
    for piece, prov in drawn:
        if piece.score is None or not piece.notes:
            log.warning("%s piece %d left out: %s", name, prov["index"], piece.error or "no notes")
            continue
        out.append((piece.score, prov))
    return out


def materialise(study: DictConfig, out_dir: Path | str, renderer: AudioRenderer | None,
                device: str = "cpu") -> PreferenceStore:
    """The study's store in ``out_dir``, its pieces and pairs made now if they are not there yet."""
    out_dir = Path(out_dir)
    definition = OmegaConf.to_container(study, resolve=True)
    manifest = out_dir / MANIFEST
    if manifest.exists():
        made = json.loads(manifest.read_text())["definition"]
        if made != definition:
            raise UserError(f"{out_dir} holds study {study.name!r} made from another definition; "
                            "give the changed study a new name (or remove the folder)")
        log.info("study %s: reusing the pieces in %s", study.name, out_dir)
        return PreferenceStore(out_dir / STORE)
    if len(study.contestants) < 2:
        raise ConfigError(f"study.contestants: at least two, got {list(study.contestants)}")
    for name, spec in study.contestants.items():  # every contestant checked before any work
        if spec.get("kind") not in KINDS:
            raise ConfigError(f"study.contestants.{name}.kind={spec.get('kind')!r}: one of {', '.join(KINDS)}")
        if not spec.get("run"):
            raise ConfigError(f"study.contestants.{name}.run: the run it comes from is missing")
    sampling_config(study.sampling)
    from musicgen.api import MusicModel

    models: dict[str, MusicModel] = {}
    pieces, by = [], {}
    for name, spec in study.contestants.items():
        if str(spec.run) not in models:
            models[str(spec.run)] = MusicModel.load(spec.run, device)
        by[name] = []
        for i, (score, prov) in enumerate(contestant_scores(name, spec, study, models)):
            pid = f"{hash_text(f'{study.name}:{name}:{i}:{study.seed}'):016x}"  # opaque: nothing of its source
            files = write_piece(score, out_dir / "pieces", pid, renderer)
            pieces.append(StudyPiece(pid, name, files["midi"], files["png"], files["audio"], prov))
            by[name].append(pid)
        log.info("study %s: %d pieces of %s", study.name, len(by[name]), name)
    store = PreferenceStore(out_dir / STORE)
    store.add_study(pieces, draw_pairs(by, int(study.pairs), int(study.seed)))
    atomic_write_text(manifest, json.dumps({"definition": definition, "pieces": len(pieces)}, indent=1))
    return store
