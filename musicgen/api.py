"""The Python API: the one place where a trained run becomes something that samples and scores.

    import musicgen
    m = musicgen.load("outputs/demo/v7")        # a run directory, a .ckpt or an exported HF directory
    pieces = m.generate(n=4, prompt="song.mid", cond={"key": "D", "mode": "major"}, cfg_scale=1.5, seed=0)
    pieces[0].save("a.mid")                     # Piece: .ids, .score (symusic.Score), .save(path)
    filled = m.infill("song.mid", bars=(3, 4))  # bars 3-4 regenerated, the rest of the tune kept
    m.score(pieces)                             # NLL per note, as the evaluation harness computes it

Everything a run needs to decode is applied here, once: its conditioning prefix and classifier-free
guidance (``musicgen.generation.guidance``), an infilling run's sentinels (never sampled when
continuing; the infilling context when infilling, ``musicgen.generation.infilling``), the context
window it trained on, the grammar mask and the sampler. Every front end goes through ``MusicModel``:
the command line, the app, the gallery, the evaluation harness, the training-time sample metrics
(``MusicModel(net, tokenizer, metadata)`` on the live network), the leaderboard and the experiments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
from torch import nn

from musicgen.audio import AudioRenderer
from musicgen.checkpoint import LoadedRun, load_run, load_run_cache
from musicgen.checkpoint.run import RunMetadata
from musicgen.config import CONF_DIR, sampling_config
from musicgen.constants import BOS_ID, EOS_ID
from musicgen.control.conditioning import ConditioningVocab, requested_attributes
from musicgen.control.infilling import InfillVocab, parse_bars
from musicgen.data.prefixed import with_prefixes
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_text
from musicgen.generation import SamplingConfig, generate, sampling_grammar
from musicgen.generation.guidance import conditioned_generation
from musicgen.generation.infilling import continuation_net, infill_run
from musicgen.generation.prompts import file_prompt, read_prompt_file
from musicgen.generation.quantize import apply_quantize
from musicgen.metrics.likelihood import doc_nll, likelihood_metrics, seq2one_nll
from musicgen.midi_io import write_score
from musicgen.plots import plot_piano_roll

log = logging.getLogger(__name__)

__all__ = ["Decoder", "MusicModel", "Piece", "load", "write_generation"]


@dataclass
class Piece:
    """One generated piece. ``prompt``: the ids it continued (BOS first); ``ids``: the new ids, up to
    its EOS; ``score``: the whole piece decoded (prompt included; an infilled piece: the tune with
    its new bars), None when the ids decode to no notes (``error`` says why); ``ended``: it ended at
    EOS (an infilled middle: at the end of its span). ``info``: what else the call knows of it."""

    prompt: list[int]
    ids: list[int]
    score: symusic.Score | None
    ended: bool
    syntax_errors: int = 0
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def notes(self) -> int:
        return 0 if self.score is None else sum(len(t.notes) for t in self.score.tracks)

    @property
    def doc(self) -> list[int]:
        """The piece as a document ``BOS ... EOS`` (what ``MusicModel.score`` scores)."""
        return [BOS_ID, *[t for t in self.prompt if t != BOS_ID], *self.ids, EOS_ID]

    def save(self, path: Path | str) -> Path:
        """Write the piece as a MIDI file (atomically); returns the path."""
        if self.score is None:
            raise ValueError(f"this piece cannot be saved: {self.error}")
        write_score(self.score, path)
        return Path(path)

    def write(self, out_dir: Path | str, stem: str, title: str, renderer: AudioRenderer | None = None,
              span: tuple[int, int] | None = None) -> dict[str, Any]:
        """``<stem>.mid``, a piano roll ``<stem>.png`` (``span``: ticks to shade) and, with a
        ``renderer``, its audio in ``out_dir``; returns the piece's report entry (``error`` instead of
        files when it cannot be decoded: logged, never raised, so one bad sample loses no other)."""
        out_dir = Path(out_dir)
        entry: dict[str, Any] = {"prompt_ids": self.prompt, "ids": self.ids, "ended_at_eos": self.ended}
        if self.score is None:
            log.warning("%s could not be decoded: %s", title, self.error)
            entry["error"] = self.error
            return entry
        try:
            self.save(out_dir / f"{stem}.mid")
            plot_piano_roll(self.score, out_dir / f"{stem}.png", title=title, span=span)
            entry.update(midi=f"{stem}.mid", png=f"{stem}.png", notes=self.notes, syntax_errors=self.syntax_errors)
            if renderer is not None:  # FLAC + WAV beside the MIDI file: {"flac": "sample_00.flac", ...}
                entry["audio"] = renderer.write(self.score, out_dir / stem)
        except Exception as e:  # an ill-formed piece is reported and never loses the others
            log.warning("%s could not be written: %s", title, e)
            entry["error"] = f"{type(e).__name__}: {e}"
        return entry


def _is_score(x: Any) -> bool:
    return isinstance(x, (symusic.core.ScoreTick, symusic.core.ScoreQuarter, symusic.core.ScoreSecond))


@dataclass
class Decoder:
    """What the decoding loop runs for one request: the network (wrapped for guidance and the
    tokeniser's ids), the context left for the body, and the report's ``conditioning`` entry."""

    net: nn.Module
    context: int
    conditioning: dict[str, Any] | None


def sampling_of(sampling: SamplingConfig | Mapping[str, Any] | str | None, cfg_scale: float | None) -> SamplingConfig:
    """A ``SamplingConfig`` from itself, a mapping of its fields, a preset name of ``conf/sampling/``
    or None (the defaults); ``cfg_scale``, where given, replaces its guidance scale."""
    if isinstance(sampling, str):
        preset = CONF_DIR / "sampling" / f"{sampling}.yaml"
        if not preset.is_file():
            known = sorted(f.stem for f in preset.parent.glob("*.yaml"))
            raise ConfigError(f"sampling={sampling} is not a preset; known: {known}")
        from omegaconf import OmegaConf

        sampling = OmegaConf.to_container(OmegaConf.load(preset))
    if sampling is None:
        sampling = SamplingConfig()
    elif not isinstance(sampling, SamplingConfig):
        sampling = sampling_config(sampling)
    if cfg_scale is not None:
        sampling = dataclasses.replace(sampling, cfg_scale=float(cfg_scale))
    return sampling


class MusicModel:
    """A trained network with its tokeniser and metadata, ready to generate, infill and score.

    ``MusicModel.load(path)`` (or ``musicgen.load``) reads a run; ``MusicModel(net, tokenizer,
    metadata)`` wraps parts already in memory (the training-time callback on the live network).
    """

    def __init__(self, net: nn.Module, tokenizer: Any, metadata: RunMetadata | Mapping[str, Any],
                 ckpt_path: Path | str | None = None) -> None:
        meta = metadata if isinstance(metadata, RunMetadata) else RunMetadata.from_dict(metadata)
        # the tokeniser's own ids: a training DataModule hands its ExtendedTokenizer (attribute and
        # sentinel ids counted on top), whose extra ids the vocabularies in ``metadata`` describe
        while hasattr(tokenizer, "base_tokenizer"):  # conditioning and infilling each wrap it once
            tokenizer = tokenizer.base_tokenizer
        self._grammars: dict[bool, Any] = {}  # the tokeniser's grammar tables, built once
        self.run = LoadedRun(net, tokenizer, meta.to_dict(), Path(ckpt_path) if ckpt_path else Path("."))

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device = "cpu", quantize: str | None = None) -> MusicModel:
        """A run directory (its best checkpoint, else its last), a ``.ckpt`` or an exported Hugging
        Face directory, on ``device``; ``quantize="int8"``: weight-only int8 linears (Transformer)."""
        run = load_run(path, map_location=device)
        run.net.to(device)
        apply_quantize(run.net, quantize)
        return cls(run.net, run.tokenizer, run.metadata, run.ckpt_path)

    # ------------------------------------------------------------------ what the run is
    @property
    def net(self) -> nn.Module:
        return self.run.net

    @property
    def tokenizer(self) -> Any:
        return self.run.tokenizer

    @property
    def ckpt_path(self) -> Path:
        return self.run.ckpt_path

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def metadata(self) -> RunMetadata:
        """The run's metadata, typed."""
        return self.run.info

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def conditioning(self) -> ConditioningVocab | None:
        """The attribute vocabulary of a conditioned run (what ``cond`` may ask), else None."""
        return self.run.conditioning

    @property
    def infill_vocab(self) -> InfillVocab | None:
        """The sentinels of a run trained with infilling (``infill`` needs them), else None."""
        return self.run.infill_vocab

    @property
    def trained_context(self) -> int:
        return self.run.trained_context

    def context(self, requested: int | None = None) -> tuple[int, str]:
        """The context to sample and score with (``requested``, else the trained window) and its label."""
        return self.run.context(requested)

    def pieces_of(self, split: str):
        """The documents of a split of the run's token cache (refused if the cache has changed since)."""
        splits = load_run_cache(self.run).splits
        if split not in splits or not len(splits[split].originals()):
            raise ConfigError(f"split={split}: the run's data has no pieces there; use train, val or test")
        return splits[split]

    def openings(self, split: str, n: int, length: int, rng: np.random.Generator) -> tuple[list[list[int]], str]:
        """Prompts from the run's data: BOS + the first ``length`` tokens of ``n`` random whole,
        untransposed pieces of ``split`` (never a transposed copy, never a window that starts
        mid-piece), and a description naming them."""
        pieces = self.pieces_of(split)
        chosen = rng.choice(pieces.originals(), size=n, replace=len(pieces.originals()) < n)
        prompts = [pieces.doc(i)[: 1 + length].astype(np.int64).tolist() for i in chosen]  # BOS + opening
        names = sorted({pieces.names[i] for i in chosen})
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        return prompts, f"data: the first {length} tokens of {n} random {split} pieces ({shown})"

    def grammar(self, sampling: SamplingConfig) -> Any:
        """The tokeniser's grammar mask for ``sampling`` (None unless ``sampling.constrained``), built once."""
        if sampling.constrained not in self._grammars:
            self._grammars[sampling.constrained] = sampling_grammar(self.tokenizer, sampling)
        return self._grammars[sampling.constrained]

    # ------------------------------------------------------------------ the one chain
    def decoder(self, cond: Mapping[str, Any] | None = None, cfg_scale: float = 1.0,
                context_len: int | None = None) -> Decoder:
        """The network the decoding loop runs to continue a piece: an infilling run's logits cut to
        the tokeniser's ids; a conditioned run's with the prefix of ``cond`` (attributes not asked:
        null) after BOS and classifier-free guidance at ``cfg_scale``, its body context shortened by
        the prefix. ``cond`` a run cannot honour is a one-line ``ConfigError``."""
        context, _ = self.context(context_len)
        net = continuation_net(self.infill_vocab, self.net)
        net, context, entry = conditioned_generation(self.conditioning, cond, cfg_scale, net, context)
        return Decoder(net, context, entry)

    def prompts(self, prompt: Any, n: int, bars: int = 2) -> list[list[int]]:
        """``n`` prompts (BOS first) from None (the start token), a MIDI file (its first ``bars``
        bars), a ``symusic.Score`` (the same), a list of ids, or ``n`` lists of ids."""
        if prompt is None:
            return [[BOS_ID] for _ in range(n)]
        if isinstance(prompt, (str, Path)) or _is_score(prompt):
            return [file_prompt(self.tokenizer, prompt, bars)] * n
        rows = list(prompt)
        if rows and not isinstance(rows[0], (int, np.integer)):
            if len(rows) != n:
                raise ConfigError(f"{len(rows)} prompts for n={n} pieces: give one prompt, or n")
            return [self._with_bos(r) for r in rows]
        return [self._with_bos(rows)] * n

    @staticmethod
    def _with_bos(ids: Sequence[int]) -> list[int]:
        ids = [int(t) for t in ids]
        return ids if ids and ids[0] == BOS_ID else [BOS_ID, *ids]

    def piece(self, prompt: list[int], row: Sequence[int], info: dict[str, Any] | None = None) -> Piece:
        """``prompt`` and the decoded row that followed it (up to its EOS) as a ``Piece``."""
        new = [int(t) for t in row]
        ended = EOS_ID in new
        new = new[: new.index(EOS_ID)] if ended else new
        score, error = None, None
        try:
            score = self.tokenizer.decode(prompt + new)  # the whole piece, its prompt included
            if not sum(len(t.notes) for t in score.tracks):
                score, error = None, "ValueError: the sampled tokens decode to no notes"
        except Exception as e:  # ids a tokeniser cannot decode: reported with the piece
            error = f"{type(e).__name__}: {e}"
        return Piece(prompt, new, score, ended, self.tokenizer.syntax_errors(new), error, dict(info or {}))

    # ------------------------------------------------------------------ generate
    def generate(self, n: int = 1, prompt: Any = None, *, cond: Mapping[str, Any] | None = None,
                 cfg_scale: float | None = None, sampling: SamplingConfig | Mapping[str, Any] | str | None = None,
                 seed: int = 0, generator: torch.Generator | None = None, max_new_tokens: int = 1024,
                 prompt_bars: int = 2, context_len: int | None = None, use_cache: bool = True,
                 overflow: str | None = None, batch_size: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> list[Piece]:
        """``n`` pieces, each ending at its EOS or after ``max_new_tokens``.

        ``prompt``: None, a MIDI file (its first ``prompt_bars`` bars), ids, or ``n`` lists of ids
        (``prompts``); ``cond``: attributes for a conditioned run (``{"key": "D", "mode": "major"}``,
        ``metre``, ``tempo``, ``style``, ``density``), guided by ``cfg_scale`` (default:
        ``sampling``'s, 1); ``sampling``: a ``SamplingConfig``, its fields, or a preset name of
        ``conf/sampling`` (default: the defaults, the grammar mask included). ``seed`` seeds the
        draw (``generator``, on the model's device, continues one instead). Same-length prompts
        decode together, at most ``batch_size`` at a time (None: all); ``progress(done, total)``
        is called after each step of each batch."""
        sampler = sampling_of(sampling, cfg_scale)
        prompts = self.prompts(prompt, n, prompt_bars)
        dec = self.decoder(cond, sampler.cfg_scale, context_len)
        if dec.conditioning and dec.conditioning["attributes"] and prompt is not None:
            log.warning("cond with a prompt: the prompt's own key and metre compete with the request "
                        "(no prompt starts from the attributes alone)")
        device = self.device
        gen = generator if generator is not None else torch.Generator(device=device).manual_seed(seed)
        grammar = self.grammar(sampler)  # None unless sampling.constrained
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(len(p), []).append(i)
        rows: dict[int, list[int]] = {}
        for idx in groups.values():
            step = batch_size or len(idx)
            for b in range(0, len(idx), step):
                chunk = idx[b : b + step]
                x = torch.tensor([prompts[i] for i in chunk], dtype=torch.long, device=device)
                out = generate(dec.net, x, max_new_tokens, sampler, generator=gen, use_cache=use_cache,
                               overflow=overflow, stop_at_eos=True, context_len=dec.context, progress=progress,
                               grammar=grammar)
                for r, i in enumerate(chunk):
                    rows[i] = out[r, len(prompts[i]) :].tolist()
        info = {"conditioning": dec.conditioning} if dec.conditioning else {}
        return [self.piece(prompts[i], rows[i], info) for i in range(n)]

    # ------------------------------------------------------------------ infill
    def infill(self, piece: Piece | symusic.Score | str | Path, bars: tuple[int, int] | str, n: int = 1, *,
               cond: Mapping[str, Any] | None = None, cfg_scale: float | None = None,
               sampling: SamplingConfig | Mapping[str, Any] | str | None = None, seed: int = 0,
               generator: torch.Generator | None = None, max_tokens: int | None = None) -> list[Piece]:
        """``n`` versions of a tune (a MIDI file, a score or a ``Piece``) with ``bars`` regenerated:
        ``(3, 4)`` or ``"3-4"`` (1-based, inclusive, the tokeniser's bars). The run must have been
        trained with ``infill=bars``. Each piece's ``score`` is the tune with the file's own notes
        outside the span, note for note; ``ids`` is the middle; ``info`` holds the span (ticks), the
        bars the middle wrote and, in ``info["context"]``, what the call decoded from."""
        sampler = sampling_of(sampling, cfg_scale)
        span = parse_bars(f"{bars[0]}-{bars[1]}" if isinstance(bars, tuple) else bars)
        if isinstance(piece, Piece):
            if piece.score is None:
                raise ConfigError(f"this piece has no notes to infill: {piece.error}")
            score = piece.score
        elif isinstance(piece, (str, Path)):
            score = read_prompt_file(str(piece))
        elif _is_score(piece):
            score = piece
        else:
            raise ConfigError(f"infill takes a MIDI file, a symusic.Score or a Piece, not {type(piece).__name__}")
        gen = generator if generator is not None else torch.Generator(device=self.device).manual_seed(seed)
        result = infill_run(self.run, score, span, n, sampler, gen, self.device,
                            grammar=self.grammar(sampler), max_tokens=max_tokens, cond=cond)
        samples = result.pop("samples")
        return [Piece([BOS_ID], s["ids"], s["score"], s["ended"], self.tokenizer.syntax_errors(s["ids"]), None,
                      {"bars": s["bars"], "span_ticks": result["span_ticks"], "context": result}) for s in samples]

    # ------------------------------------------------------------------ score
    def nll(self, docs: Sequence[Sequence[int] | np.ndarray], attributes: Sequence[Mapping[str, str]] | None = None,
            context_len: int | None = None, batch_size: int | None = None) -> np.ndarray:
        """Total NLL (nats) of each document ``BOS ... EOS``, every token after BOS once, within the
        trained window (or ``context_len``), over the tokeniser's ids. A conditioned run reads each
        document's ``attributes`` (None: the all-null prefix, the model asked nothing) as context that
        is never scored, in every window if it trained so; a seq2one run is scored as it trained.
        ``batch_size``: windows per forward (None: the scorer's default)."""
        docs = [np.asarray(d, dtype=np.int64) for d in docs]
        context, _ = self.context(context_len)
        vocab, infill = self.conditioning, self.infill_vocab
        n_out = vocab.base if vocab is not None else infill.base if infill is not None else None
        score = seq2one_nll if self.metadata.objective == "seq2one" else doc_nll
        kw: dict[str, Any] = {"n_out": n_out} | ({"batch_size": batch_size} if batch_size else {})
        if vocab is None:
            if attributes is not None:
                raise ConfigError("attributes: this run was trained without conditioning")
            return score(self.net, docs, context, **kw)
        null = [vocab.null_prefix()] * len(docs)
        prefixes = [vocab.prefix(a) for a in attributes] if attributes is not None else null
        kw["n_context"] = len(vocab.attributes)
        if score is doc_nll:  # a run trained with every_window reads the prefix in every window (old runs: not)
            kw["repeat_context"] = bool(self.metadata.config.get("conditioning", {}).get("every_window"))
        return score(self.net, with_prefixes(docs, prefixes), context, **kw)

    def score(self, pieces: Sequence[Piece | symusic.Score | str | Path], cond: Mapping[str, Any] | None = None,
              context_len: int | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
        """NLL per note (and per token, perplexity) of ``pieces`` as the evaluation harness computes
        it, each figure with its 95% bootstrap interval over pieces; ``nll`` and ``notes`` per piece.
        A conditioned run scores every piece with the attributes ``cond`` asks (default: none asked)."""
        docs, notes = [], []
        for p in pieces:
            if isinstance(p, Piece):
                if p.score is None:
                    raise ConfigError(f"a piece without notes cannot be scored: {p.error}")
                docs.append(p.doc)
                notes.append(p.notes)
                continue
            score = read_prompt_file(str(p)) if isinstance(p, (str, Path)) else p
            docs.append([BOS_ID, *self.tokenizer.encode(score), EOS_ID])
            notes.append(sum(len(t.notes) for t in score.tracks))
        attrs = None
        if cond:
            asked = requested_attributes(self.conditioning, cond)
            attrs = [asked] * len(docs)
        nll = self.nll(docs, attrs, context_len)
        out = likelihood_metrics(nll, [len(d) - 1 for d in docs], notes, n_boot, seed)
        out.update(nll=nll.tolist(), notes_per_piece=notes)
        return out


def write_generation(m: MusicModel, pieces: Sequence[Piece], out_dir: Path, settings: dict[str, Any],
                     prompt: str, seconds: float, renderer: AudioRenderer | None = None) -> dict[str, Any]:
    """A generation folder: each piece as ``sample_NN`` (``Piece.write``) and ``generation.json``
    (settings, the prompt's source, the conditioning asked, the ids, the timing); returns the report."""
    samples = [{"index": i, **p.write(out_dir, f"sample_{i:02d}", f"{m.version} sample {i}", renderer)}
               for i, p in enumerate(pieces)]
    new_tokens = sum(len(p.ids) + p.ended for p in pieces)
    conditioning = pieces[0].info.get("conditioning") if pieces else None
    report = {
        "ckpt_path": str(m.ckpt_path), "version": m.version, "settings": settings, "prompt": prompt,
        **({"conditioning": conditioning} if conditioning else {}),
        "timing": {"seconds": round(seconds, 3), "tokens_per_second": round(new_tokens / max(seconds, 1e-9), 1)},
        "samples": samples,
    }
    atomic_write_text(out_dir / "generation.json", json.dumps(report, indent=1))
    ok = sum("midi" in s for s in samples)
    log.info("wrote %d of %d samples to %s (%.0f tokens/s)", ok, len(samples), out_dir, new_tokens / max(seconds, 1e-9))
    report["output_dir"] = str(out_dir)
    return report


def load(path: Path | str, device: str | torch.device = "cpu", quantize: str | None = None) -> MusicModel:
    """``MusicModel.load``: a run directory, a ``.ckpt`` or an exported Hugging Face directory."""
    return MusicModel.load(path, device, quantize)
