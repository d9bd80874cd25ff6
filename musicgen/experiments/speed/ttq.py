"""``musicgen ttq`` (conf/ttq.yaml): time to quality against the pipeline users
would build instead of musicgen.

The peer is MidiTok's documented recipe (its README and its Hugging Face notebook): a MidiTok
``REMI`` with our exact ``TokenizerConfig``, BPE learned with ``tokenizer.train(vocab_size=...,
files_paths=<train files>)``, the files cut with ``split_files_for_training``, served by
``DatasetMIDI`` (BOS on a file's first chunk, EOS on its last) and padded by ``DataCollator(pad,
copy_inputs_as_labels=True)``, trained by Hugging Face's ``Trainer`` on a ``LlamaForCausalLM`` of
our Transformer's shape (``musicgen.checkpoint.hf.build_llama``), evaluating on the validation
chunks every ``eval_steps`` and stopped by a ``TrainerCallback`` at the wall-time budget. Ours is
``python -m musicgen.train <train.overrides> trainer.max_time=<budget>`` in a subprocess. Both get
the same files: the train / val / test split ``MidiDataModule.source_files()`` makes for the train
config (the peer never sees test), and run one after the other, each with the whole machine.

The race runs once per seed (``seeds``, 3 by default; ours with seed s against the peer with seed
s, every seed on one data split, ``data.seed``), each seed's record in ``seed_<s>/race.json``: a
finished seed is reused when the command runs again with the same settings. What is reported
(``ttq.json``, ``ttq.md``, ``curves.png``; ``publish=true``: the docs page):

- validation curves in nats per note against wall time (each side's own validation inside its
  clock, as ``trainer.max_time`` counts ours; the harness's scoring of the peer outside it): ours
  ``val/loss`` x the validation split's tokens per note; the peer's whole validation pieces
  scored by our harness at each of its evaluations, and Hugging Face's own ``eval_loss`` on the
  chunks x the tokens per note of the whole pieces, for reference;
- per seed, the time (interpolated between validations) for ours to reach the peer's final
  validation NLL/note, over the peer's own time to it; over seeds, the geometric mean of that
  ratio with a t interval on its logarithm (``ratio_interval``), and whether it is at most
  ``goal_ratio`` interval included (``goal_verdict``);
- final test NLL per note at equal time, both models scored by our harness
  (``musicgen.metrics.likelihood.doc_nll``: every token after BOS once, within the trained window)
  on the same test pieces, each tokenised by its own tokeniser (whole pieces, ``BOS ... EOS``),
  over the pieces' source notes; each side and the difference peer - ours with intervals over
  seeds and pieces, paired by piece (``seed_piece_interval``);
- padding share and music tokens/s of each side (as before: the non-pad tokens of the training
  batches over the training wall time, and over the steps alone).

``musicgen/experiments/speed/ablation.py`` (``make ttq-ablation``) reuses the pieces here to race
the recipe candidates of issue 32 against the default recipe.
"""

from __future__ import annotations

from musicgen.experiments.speed.env import OMP_WAIT_POLICY

# isort: split
import copy
import csv
import itertools
import json
import logging
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from scipy import stats
from torch import nn

from musicgen.checkpoint.hf import build_llama, llama_missing
from musicgen.config import build, version_as_choice
from musicgen.constants import BOS_ID, EOS_ID, PAD_ID
from musicgen.errors import ConfigError, UserError
from musicgen.experiments.speed import with_quick
from musicgen.experiments.speed.harness import machine_info
from musicgen.fs import atomic_write_text
from musicgen.metrics.likelihood import doc_nll
from musicgen.metrics.statistics import seed_piece_interval, t_over_seeds
from musicgen.publish import publish, results_dir
from musicgen.runtime import hydra_main, pick_device
from musicgen.tokenizers.base import BadMidiError

__all__ = ["OMP_WAIT_POLICY", "peer_missing", "race_summary", "ratio_interval", "run", "time_to_reach"]

log = logging.getLogger(__name__)

PIPELINES = ("ours", "peer")


# ----------------------------------------------------------------------------- config


def peer_missing() -> str | None:
    """Why the peer cannot run (None: it can): HF's Trainer needs transformers and accelerate."""
    why = llama_missing()
    if why:
        return why
    try:
        import accelerate  # noqa: F401
    except ImportError:
        return "accelerate is not installed: Hugging Face's Trainer needs it (pip install 'accelerate>=1.1.0')"
    return None


def train_overrides(cfg: DictConfig, seed: int) -> list[str]:
    """The overrides of our run of ``seed`` (and of the config the peer is cut from), budget aside.
    ``data.seed`` is fixed (``cfg.data.seed``), so every seed trains and is scored on one split."""
    out = [*cfg.train.overrides, *cfg.train.extra, f"data.seed={cfg.data.seed}", f"seed={seed}"]
    if cfg.data.root is not None:
        out.append(f"data.root={cfg.data.root}")
    if cfg.data.max_files is not None:
        out.append(f"data.max_files={cfg.data.max_files}")
    if cfg.data.cache_dir is not None:
        out.append(f"paths.cache_dir={cfg.data.cache_dir}")
    return [str(o) for o in out]


def compose_train(overrides: list[str]) -> DictConfig:
    """The train config as ``musicgen.train`` would compose it, inside or outside a Hydra app."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # under @hydra.main: same search path (conf/)
        from hydra import compose as hydra_compose

        return hydra_compose("train", overrides=version_as_choice(overrides))
    from musicgen.config import compose

    return compose("train", overrides)


def max_time(seconds: float) -> str:
    """``trainer.max_time`` (``DD:HH:MM:SS``) of a budget in seconds (at least one second)."""
    s = max(1, int(math.ceil(seconds)))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d:02d}:{h:02d}:{m:02d}:{s:02d}"


# ----------------------------------------------------------------------------- the files


def run_split_files(train_cfg: DictConfig) -> dict[str, Any]:
    """The split our DataModule makes for ``train_cfg`` (name -> path per split), the usable files
    only (``midi_io.read_score`` accepts them, as the token cache does), with each file's notes."""
    from musicgen.midi_io import read_score

    tokenizer = build("tokenizer", train_cfg.tokenizer)
    dm = build("data", train_cfg.data, tokenizer=tokenizer)
    files = dm.source_files()
    out: dict[str, Any] = {"paths": {}, "notes": {}, "skipped": []}
    for split, fl in files.items():
        out["paths"][split] = {}
        for rel, p in fl:
            try:
                score = read_score(p)
            except BadMidiError as e:
                out["skipped"].append({"file": rel, "reason": str(e)})
                continue
            out["paths"][split][rel] = Path(p)
            out["notes"][rel] = len(score.tracks[0].notes)
    return out


# ----------------------------------------------------------------------------- curves


def time_to_reach(curve: list[dict[str, Any]], target: float, key: str = "nats_per_note") -> dict[str, Any] | None:
    """The first point of ``curve`` (ascending ``wall_s``) at or below ``target``: its wall time
    and step, and the wall time linearly interpolated from the point before (None: never)."""
    prev = None
    for point in curve:
        value = point.get(key)
        if value is None or not math.isfinite(value):
            continue
        if value <= target:
            interp = point["wall_s"]
            if prev is not None and prev[key] > value:
                frac = (prev[key] - target) / (prev[key] - value)
                interp = prev["wall_s"] + frac * (point["wall_s"] - prev["wall_s"])
            return {"wall_s": point["wall_s"], "step": point.get("step"), "interpolated_wall_s": interp}
        prev = point
    return None


def reach_ratio(curve: list[dict[str, Any]], reference: list[dict[str, Any]], target: float | None
                ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, float | None]:
    """When ``curve`` and ``reference`` first reach ``target`` (``time_to_reach``) and the ratio of
    those interpolated times (None where either never does, or there is no target)."""
    if target is None:
        return None, None, None
    hit, ref = time_to_reach(curve, target), time_to_reach(reference, target)
    if not (hit and ref and ref["interpolated_wall_s"] > 0):
        return hit, ref, None
    return hit, ref, hit["interpolated_wall_s"] / ref["interpolated_wall_s"]


def tokens_per_note(docs: list[np.ndarray], notes: np.ndarray) -> float:
    """Scored tokens (all but BOS) per source note of a set of documents ``BOS ... EOS``."""
    return float(sum(len(d) - 1 for d in docs) / max(1, int(np.sum(notes))))


# ----------------------------------------------------------------------------- ours


def train_ours(overrides: list[str], budget_s: float, run_dir: Path) -> str:
    """``musicgen.train <overrides>`` in a subprocess for ``budget_s`` into ``run_dir`` (emptied
    first: a race cannot resume mid-run, its clock would restart), its log in ``run_dir.log``;
    returns the command."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run_dir.with_suffix(".log")
    cmd = [sys.executable, "-m", "musicgen.train", *overrides, f"trainer.max_time={max_time(budget_s)}",
           f"hydra.run.dir={run_dir}"]
    log.info("ours: %s", " ".join(cmd))
    with open(log_path, "w") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(True)[-30:])
        raise RuntimeError(f"musicgen.train exited with {proc.returncode}; last lines of {log_path}:\n{tail}")
    return " ".join(cmd[1:]).replace("-m musicgen.train", "python -m musicgen.train", 1)


def read_ours(run_dir: Path) -> dict[str, Any]:
    """A finished run's validation curve (``nats_per_note``: ``val/loss`` x the validation split's
    tokens per note, its own tokeniser), throughput and padding, from its csv, metrics.json, config
    and token cache."""
    from musicgen.checkpoint import load_run, load_run_cache

    metrics = json.loads((run_dir / "metrics.json").read_text())
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    curve, step_rates = [], []
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val/loss") and row.get("time/train_seconds"):
                curve.append({"wall_s": float(row["time/train_seconds"]), "step": int(float(row["step"])),
                              "val_loss": float(row["val/loss"])})
            if row.get("train/tokens_per_second"):
                step_rates.append(float(row["train/tokens_per_second"]))
    curve.sort(key=lambda p: p["wall_s"])
    val = load_run_cache(load_run(run_dir)).splits["val"]
    tpn = tokens_per_note([val.doc(i) for i in range(val.n_docs)], val.notes)
    for point in curve:
        point["nats_per_note"] = point["val_loss"] * tpn
    pad_share = float(metrics["train_target_pad_share"])
    packed = bool(run_cfg.data.pack)
    if packed and run_cfg.data.mode == "causal" and pad_share != 0.0:
        raise RuntimeError(f"packed causal windows should hold no padding, metrics.json says {pad_share}")
    train_s = curve[-1]["wall_s"] if curve else float("nan")
    real = float(metrics["train_target_tokens"]) * (1.0 - pad_share)
    return {
        "run_dir": str(run_dir),
        "steps": int(metrics["global_step"]),
        "epochs": int(metrics["epoch"]),
        "wall_s": train_s,
        "precision": str(run_cfg.trainer.precision),
        "batch_size": int(run_cfg.data.batch_size),
        "seq_len": int(run_cfg.data.seq_len),
        "packed": packed,
        "padding_share": pad_share,
        "train_windows": int(metrics["train_windows"]),
        "music_tokens": real,
        "music_tokens_per_s": real / train_s if curve and train_s > 0 else None,
        # Throughput callback: window tokens per second over the steps alone (median of its logged values)
        "music_tokens_per_s_steps": float(np.median(step_rates)) * (1.0 - pad_share) if step_rates else None,
        "val_loss_final": metrics.get("val_loss"),
        "val_tokens_per_note": tpn,
        "curve": curve,
    }


def run_ours(overrides: list[str], budget_s: float, run_dir: Path) -> dict[str, Any]:
    """Train (``train_ours``) and read (``read_ours``) one of our runs; the setup time outside the
    budget (imports, split, token cache, loading, the end) is the process's time less the curve's."""
    t0 = time.perf_counter()
    command = train_ours(overrides, budget_s, run_dir)
    total = time.perf_counter() - t0
    out = read_ours(run_dir)
    out.update(command=command, process_s=total, setup_s=total - out["wall_s"] if out["curve"] else None)
    return out


def score_ours(run_dir: Path | str, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Our run's best checkpoint on its test split's pieces (originals): each piece's total NLL
    (nats, within the trained window, as the harness scores), scored tokens and source notes."""
    from musicgen.api import MusicModel

    m = MusicModel.load(run_dir, device)
    test = m.pieces_of("test")
    idx = list(test.originals())
    docs = [np.asarray(test.doc(i)) for i in idx]
    return {"names": [test.names[i] for i in idx], "notes": [int(test.notes[i]) for i in idx],
            "tokens": [len(d) - 1 for d in docs], "nll": m.nll(docs, batch_size=batch_size).tolist(),
            "checkpoint": str(m.ckpt_path), "context": m.trained_context}


# ----------------------------------------------------------------------------- the peer


class LogitsOnly(nn.Module):
    """A Hugging Face causal LM as ``doc_nll`` calls a network: ``net(x) -> logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=x).logits


def peer_ids(tokenizer, path: Path) -> list[int] | None:
    """A whole piece as the peer's ``DatasetMIDI`` tokenises a file (its first track; with BOS and
    EOS, since an unsplit file is its own first and last chunk), not cut to a length (None: no tokens)."""
    from symusic import Score

    score = tokenizer.preprocess_score(Score(path))
    seq = tokenizer.encode(score, no_preprocess_score=True)
    ids = seq.ids if tokenizer.one_token_stream else (seq[0].ids if len(seq) else [])
    return [BOS_ID, *map(int, ids), EOS_ID] if len(ids) else None


def _peer_docs(tokenizer, paths: dict[str, Path]) -> dict[str, np.ndarray]:
    out = {}
    for rel, p in paths.items():
        ids = peer_ids(tokenizer, p)
        if ids is not None:
            out[rel] = np.asarray(ids, dtype=np.int64)
    return out


def _peer_classes():
    """The Trainer subclass and callbacks (transformers imported here: the bench extra)."""
    from transformers import Trainer, TrainerCallback

    class CountingTrainer(Trainer):
        """HF's Trainer, counting the tokens of every training batch (measurement only)."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs["attention_mask"]
            if not hasattr(self, "ttq_real"):
                self.ttq_real = torch.zeros((), dtype=torch.long, device=mask.device)
                self.ttq_all = 0
            self.ttq_real += mask.sum()  # on the device: no synchronisation per step
            self.ttq_all += mask.numel()
            return super().training_step(model, inputs, num_items_in_batch)

    class BudgetClock(TrainerCallback):
        """Stops training (with a last evaluation and save) once ``budget_s`` wall seconds have
        passed since training began, not counting the harness's own scoring (``paused``);
        records each evaluation's ``(wall_s, step, eval_loss)`` and calls ``on_eval(model)``
        (the harness's scoring, timed out of the clock); times the steps alone."""

        def __init__(self, budget_s: float | None, on_eval=None) -> None:
            self.budget_s, self.on_eval = budget_s, on_eval
            self.t0 = None
            self.paused = 0.0
            self.points: list[dict[str, Any]] = []
            self.step_times: list[float] = []
            self.step_ends: list[float] = []
            self._step_t0 = None

        def clock(self) -> float:
            return time.perf_counter() - self.t0 - self.paused

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self._step_t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            if self._step_t0 is not None:
                self.step_times.append(now - self._step_t0)
            self.step_ends.append(now)
            out_of_time = self.budget_s is not None and self.clock() >= self.budget_s
            if out_of_time or state.global_step >= state.max_steps:
                control.should_training_stop = True
                if args.eval_strategy != "no":
                    control.should_evaluate = True
                if args.save_strategy != "no":
                    control.should_save = True
            return control

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.t0 is None:  # an evaluation outside training (the probe's)
                return
            point = {"wall_s": self.clock(), "step": state.global_step,
                     "hf_eval_loss": float((metrics or {}).get("eval_loss", math.nan))}
            if self.on_eval is not None:
                t = time.perf_counter()
                point.update(self.on_eval(kwargs["model"]))
                self.paused += time.perf_counter() - t
            self.points.append(point)

    return CountingTrainer, BudgetClock


def run_peer(cfg: DictConfig, train_cfg: DictConfig, files: dict[str, Any], out: Path, seed: int) -> dict[str, Any]:
    """MidiTok's recipe + HF Trainer for ``budget_s`` in ``out/peer``, seeded with ``seed``;
    returns its record and the trained model."""
    import miditok
    from miditok.pytorch_data import DataCollator, DatasetMIDI
    from miditok.utils import split_files_for_training
    from transformers import TrainingArguments

    CountingTrainer, BudgetClock = _peer_classes()
    p = cfg.peer
    peer_dir = out / "peer"
    shutil.rmtree(peer_dir, ignore_errors=True)  # a race cannot resume mid-run
    peer_dir.mkdir(parents=True)
    seq_len, batch_size = int(train_cfg.data.seq_len), int(train_cfg.data.batch_size)
    timings: dict[str, float] = {}

    # 1. the tokeniser: MidiTok's REMI with our exact TokenizerConfig, BPE on the training files
    t = time.perf_counter()
    ours_tok = build("tokenizer", train_cfg.tokenizer)
    tokenizer = miditok.REMI(copy.deepcopy(ours_tok.backend.config))
    if tokenizer.vocab != ours_tok.backend.vocab:
        raise RuntimeError("the peer's REMI vocabulary differs from ours before BPE: not the same TokenizerConfig")
    vocab = int(p.bpe_vocab_size or train_cfg.tokenizer.bpe_vocab_size)
    train_paths = list(files["paths"]["train"].values())
    tokenizer.train(vocab_size=vocab, files_paths=train_paths)
    tokenizer.save(peer_dir / "tokenizer.json")
    pad, bos, eos = tokenizer.pad_token_id, tokenizer["BOS_None"], tokenizer["EOS_None"]
    if (pad, bos, eos) != (PAD_ID, BOS_ID, EOS_ID):
        raise RuntimeError(f"peer special ids {(pad, bos, eos)} differ from ours {(PAD_ID, BOS_ID, EOS_ID)}")
    timings["tokenizer_s"] = time.perf_counter() - t

    # 2. chunks of about seq_len tokens, then DatasetMIDI + DataCollator (the README's recipe)
    t = time.perf_counter()
    chunks = {}
    for split in ("train", "val"):
        d = peer_dir / f"chunks_{split}"
        split_files_for_training(files_paths=list(files["paths"][split].values()), tokenizer=tokenizer, save_dir=d,
                                 max_seq_len=seq_len, num_overlap_bars=int(p.num_overlap_bars))
        if split == "train" and p.augment:  # the notebook's augment_dataset, on the training chunks only
            from miditok.data_augmentation import augment_dataset

            augment_dataset(d, **OmegaConf.to_container(p.augment, resolve=True))
        chunks[split] = sorted(d.glob("**/*.mid"))
    datasets = {split: DatasetMIDI(files_paths=c, tokenizer=tokenizer, max_seq_len=seq_len, bos_token_id=bos,
                                   eos_token_id=eos, pre_tokenize=bool(p.pre_tokenize)) for split, c in chunks.items()}
    collator = DataCollator(pad, copy_inputs_as_labels=True)
    timings["chunks_s"] = time.perf_counter() - t

    # 3. the model: LlamaForCausalLM of our Transformer's shape
    torch.manual_seed(int(seed))
    model_cfg = OmegaConf.to_container(train_cfg.model, resolve=True)
    model_cfg["vocab_size"] = len(tokenizer)
    with torch.device("meta"):
        shape_of = build("model", model_cfg)  # ours, for its shape only
    model = build_llama(shape_of)

    # the harness's scoring of the whole validation pieces, at every evaluation
    val_docs = _peer_docs(tokenizer, files["paths"]["val"])
    val_names = list(val_docs)
    val_notes = np.array([files["notes"][n] for n in val_names])
    val_tpn = tokens_per_note([val_docs[n] for n in val_names], val_notes)

    def harness_val(m) -> dict[str, float]:
        nll = doc_nll(LogitsOnly(m), [val_docs[n] for n in val_names], seq_len, batch_size=int(cfg.scoring.batch_size))
        return {"nats_per_note": float(nll.sum() / val_notes.sum()),
                "nats_per_token": float(nll.sum() / sum(len(val_docs[n]) - 1 for n in val_names))}

    # 4. HF TrainingArguments as the notebook writes them (HF defaults elsewhere); batch size ours
    eval_steps = int(p.eval_steps or train_cfg.trainer.val_check_interval)
    bf16 = (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) if p.bf16 == "auto" else bool(p.bf16)

    def args(output_dir: Path, **kw) -> TrainingArguments:
        base = dict(
            output_dir=str(output_dir), per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=int(p.eval_batch_size), learning_rate=float(p.learning_rate),
            weight_decay=float(p.weight_decay), warmup_steps=float(p.warmup),
            lr_scheduler_type=str(p.lr_scheduler_type), max_grad_norm=float(p.max_grad_norm), optim=str(p.optim),
            logging_strategy="steps",
            logging_steps=int(p.logging_steps), eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps",
            save_steps=eval_steps, save_total_limit=int(p.save_total_limit),
            load_best_model_at_end=bool(p.load_best_model_at_end), bf16=bf16, seed=int(seed), report_to="none",
        )
        if p.gradient_checkpointing:  # transformers 5 renamed it (the old name still works, with a warning)
            new = "activation_checkpointing" in getattr(TrainingArguments, "__dataclass_fields__", {})
            base["activation_checkpointing" if new else "gradient_checkpointing"] = True
        base.update(kw)
        return TrainingArguments(**base)

    # 5. the schedule's length: probed (outside the budget), configured, or HF's 3 epochs
    probe = None
    if p.max_steps == "auto":
        if int(p.probe_steps) < 3:
            raise ValueError(f"peer.probe_steps={p.probe_steps}: at least 3 (the first steps warm up)")
        t = time.perf_counter()
        clock = BudgetClock(None)
        probe_args = args(peer_dir / "probe", max_steps=int(p.probe_steps), eval_strategy="no", save_strategy="no",
                          load_best_model_at_end=False, logging_steps=10**6)
        probe_trainer = CountingTrainer(
            model=copy.deepcopy(model), args=probe_args, data_collator=collator, train_dataset=datasets["train"],
            callbacks=[clock])
        probe_trainer.train()
        ends = clock.step_ends[min(2, len(clock.step_ends) - 2):]  # the first steps warm up
        step_s = (ends[-1] - ends[0]) / max(1, len(ends) - 1)
        te = time.perf_counter()
        probe_trainer.evaluate(datasets["val"])
        eval_s = time.perf_counter() - te
        del probe_trainer
        max_steps = max(1, int(float(p.safety) * cfg.budget_s / (step_s + eval_s / eval_steps)))
        probe = {"steps": int(p.probe_steps), "step_s": step_s, "eval_s": eval_s, "seconds": time.perf_counter() - t,
                 "max_steps": max_steps}
        timings["probe_s"] = probe["seconds"]
    elif p.max_steps == "epochs":
        max_steps = -1
    else:
        max_steps = int(p.max_steps)

    clock = BudgetClock(float(cfg.budget_s), harness_val if p.harness_val else None)
    trainer = CountingTrainer(
        model=model, args=args(peer_dir / "hf", max_steps=max_steps), data_collator=collator,
        train_dataset=datasets["train"], eval_dataset=datasets["val"], callbacks=[clock])
    t = time.perf_counter()
    trainer.train()
    timings["fit_s"] = time.perf_counter() - t
    wall = clock.points[-1]["wall_s"] if clock.points else clock.clock()
    real = int(trainer.ttq_real.item()) if hasattr(trainer, "ttq_real") else 0
    total = int(getattr(trainer, "ttq_all", 0))
    step_tokens = real / max(1, trainer.state.global_step)
    step_s = float(np.median(clock.step_times)) if clock.step_times else None
    curve = []
    for point in clock.points:
        point = dict(point)
        point["hf_nats_per_note"] = point["hf_eval_loss"] * val_tpn
        curve.append(point)
    return {
        "model": trainer.model,
        "tokenizer": tokenizer,
        "record": {
            "steps": int(trainer.state.global_step),
            "epochs": float(trainer.state.epoch or 0.0),
            "max_steps": max_steps,
            "probe": probe,
            "wall_s": wall,
            "setup_s": sum(v for k, v in timings.items() if k != "fit_s"),
            "timings": timings,
            "precision": "bf16-mixed" if bf16 else "fp32",
            "batch_size": batch_size,
            "seq_len": seq_len,
            "vocab_size": len(tokenizer),
            "params": model.num_parameters(),
            "chunks": {s: len(c) for s, c in chunks.items()},
            "padding_share": 1.0 - real / total if total else None,
            "padding_share_source": "pad tokens / all tokens of every collated training batch (attention_mask)",
            "music_tokens": real,
            "music_tokens_per_s": real / wall if wall > 0 else None,
            "music_tokens_per_s_steps": step_tokens / step_s if step_s else None,
            "eval_steps": eval_steps,
            "val_tokens_per_note": val_tpn,
            "val_pieces": len(val_names),
            "curve_key": "nats_per_note" if p.harness_val else "hf_nats_per_note",
            "curve": curve,
            "training_arguments": {k: v for k, v in trainer.args.to_dict().items() if k in (
                "per_device_train_batch_size", "per_device_eval_batch_size", "learning_rate", "weight_decay",
                "warmup_steps", "lr_scheduler_type", "max_grad_norm", "optim", "adam_beta1", "adam_beta2",
                "adam_epsilon", "eval_steps", "save_steps", "load_best_model_at_end", "bf16",
                "gradient_checkpointing", "activation_checkpointing", "dataloader_num_workers", "max_steps", "seed")},
        },
    }


# ----------------------------------------------------------------------------- scoring


def score_peer(peer: dict[str, Any], paths: dict[str, Path], device: torch.device, batch_size: int) -> dict[str, Any]:
    """The peer's final model on whole pieces (``BOS ... EOS`` by its tokeniser), scored by our
    harness within its window: each piece's total NLL and scored tokens."""
    docs = _peer_docs(peer["tokenizer"], paths)
    names = list(docs)
    model = peer["model"].to(device)
    nll = doc_nll(LogitsOnly(model), [docs[n] for n in names], peer["record"]["seq_len"], batch_size=batch_size)
    return {"names": names, "tokens": [len(docs[n]) - 1 for n in names], "nll": np.asarray(nll).tolist()}


def race_key(cfg: DictConfig, seed: int) -> dict[str, Any]:
    """What a seed's race depends on: a finished race with the same key is reused."""
    key = {"budget_s": float(cfg.budget_s), "order": list(cfg.order), "train_overrides": train_overrides(cfg, seed),
           "peer": OmegaConf.to_container(cfg.peer, resolve=True)}
    return json.loads(json.dumps(key))


def race_seed(cfg: DictConfig, train_cfg: DictConfig, files: dict[str, Any], seed: int, seed_dir: Path,
              device: torch.device) -> dict[str, Any]:
    """One seed of the race: ours and the peer for ``budget_s`` each, one after the other, then both
    final models on the same test pieces. The record (curves, per-piece test NLL) is JSON."""
    t0 = time.perf_counter()
    seed_dir.mkdir(parents=True, exist_ok=True)
    got: dict[str, Any] = {}
    for name in cfg.order:
        t = time.perf_counter()
        if name == "ours":
            got["ours"] = run_ours(train_overrides(cfg, seed), float(cfg.budget_s), seed_dir / "ours")
        else:
            got["peer"] = run_peer(cfg, train_cfg, files, seed_dir, seed)
        log.info("seed %d, %s: done in %.0f s", seed, name, time.perf_counter() - t)
    bs = int(cfg.scoring.batch_size)
    ours_test = score_ours(got["ours"]["run_dir"], device, bs)
    mismatch = [n for n, k in zip(ours_test["names"], ours_test["notes"], strict=True)
                if n in files["notes"] and k != files["notes"][n]]
    if mismatch:
        raise RuntimeError(f"note counts differ between our cache and the source files: {mismatch[:3]}")
    test_paths = {n: files["paths"]["test"][n] for n in ours_test["names"] if n in files["paths"]["test"]}
    peer_test = score_peer(got["peer"], test_paths, device, bs)
    return {"seed": int(seed), "ours": got["ours"], "peer": got["peer"]["record"],
            "test": {"ours": ours_test, "peer": peer_test,
                     "left_out": sorted(set(files["paths"]["test"]) - set(peer_test["names"]))},
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- statistics


def ratio_interval(ratios: list[float | None], level: float = 0.95) -> dict[str, Any]:
    """The geometric mean of per-seed time ratios with the Student t interval over seeds on their
    logarithms, exponentiated (a ratio of times is skewed; its log is not). A seed that never
    reached the target (None) leaves the ratio unknown: value, low and high are None."""
    missing = sum(r is None for r in ratios)
    if missing or not ratios:
        return {"value": None, "low": None, "high": None, "seeds": len(ratios), "not_reached": missing}
    if any(r <= 0 for r in ratios):
        raise ValueError(f"time ratios must be positive, got {ratios}")
    iv = t_over_seeds(np.log(ratios), level)
    return {k: float(np.exp(v)) for k, v in iv.items()} | {"seeds": len(ratios), "not_reached": 0}


def unpaired_ratio_interval(times: list[float | None], reference: list[float], level: float = 0.95) -> dict[str, Any]:
    """The ratio of the geometric means of ``times`` and ``reference``, two independent sets of runs
    (other seeds, no pairing), with Welch's t interval on the difference of their mean logarithms,
    exponentiated. A run that never reached the target (None): value, low and high are None."""
    missing = sum(t is None for t in times)
    if missing or not times or not reference:
        return {"value": None, "low": None, "high": None, "seeds": len(times), "not_reached": missing}
    a, b = np.log(np.asarray(times, dtype=np.float64)), np.log(np.asarray(reference, dtype=np.float64))
    diff = float(a.mean() - b.mean())
    out = {"value": math.exp(diff), "low": math.nan, "high": math.nan, "seeds": len(times), "not_reached": 0}
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return out | {"low": out["value"], "high": out["value"]}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + level) / 2, df)) * se
    return out | {"low": math.exp(diff - half), "high": math.exp(diff + half)}


def goal_verdict(ratio: dict[str, Any], goal: float) -> str:
    """``met`` (the whole interval at or below ``goal``), ``missed`` (the whole interval above, or
    the target not reached on some seed) or ``inconclusive`` (the interval straddles it, or one seed)."""
    if ratio["value"] is None:
        return "missed"
    if ratio["high"] is not None and math.isfinite(ratio["high"]) and ratio["high"] <= goal:
        return "met"
    if ratio["low"] is not None and math.isfinite(ratio["low"]) and ratio["low"] > goal:
        return "missed"
    return "inconclusive"


def max_gap(curve: list[dict[str, Any]]) -> float | None:
    """The longest wall time between validations (from the start to the first, and between each)."""
    walls = [0.0] + [p["wall_s"] for p in curve]
    return max(b - a for a, b in itertools.pairwise(walls)) if curve else None


def pieces_by_seed(runs: list[dict[str, Any]], names: list[str]) -> np.ndarray:
    """``(seeds, pieces)``: each run's total NLL of each of ``names``."""
    return np.array([[dict(zip(r["names"], r["nll"], strict=True))[n] for n in names] for r in runs])


def common_pieces(runs: list[dict[str, Any]], max_pieces: int | None = None) -> tuple[list[str], np.ndarray]:
    """The test pieces every run scored (in the first run's order, at most ``max_pieces``) and
    their notes (the runs carrying notes must agree: one split)."""
    names = [n for n in runs[0]["names"] if all(n in set(r["names"]) for r in runs[1:])]
    names = names[: int(max_pieces)] if max_pieces else names
    notes = None
    for r in runs:
        if "notes" in r:
            by = dict(zip(r["names"], r["notes"], strict=True))
            these = np.array([by[n] for n in names], dtype=np.float64)
            if notes is not None and not np.array_equal(these, notes):
                raise ConfigError("the runs were scored on pieces with other note counts: they must share one "
                                  "data split (data.seed)")
            notes = these
    if notes is None:
        raise ValueError("no run carries the pieces' notes")
    return names, notes


def race_summary(records: list[dict[str, Any]], goal: float, budget_s: float, resolution: float,
                 max_pieces: int | None = None) -> dict[str, Any]:
    """The race over seeds from each seed's record: per seed, the target (the peer's final
    validation NLL/note), the interpolated wall time at which ours first reaches it and at which
    the peer first does (its own curve, so at most its final validation), their ratio; over seeds,
    the ratio's interval (``ratio_interval``) and the goal's verdict; each side's final validation
    NLL/note (t over seeds); the test NLL/note of each side and the paired difference peer - ours
    over seeds and the shared pieces (``seed_piece_interval``); the validation resolution."""
    per_seed = []
    for r in records:
        ours, key = r["ours"]["curve"], r["peer"]["curve_key"]
        peer = [{"wall_s": q["wall_s"], "step": q.get("step"), "nats_per_note": q.get(key)} for q in r["peer"]["curve"]]
        target = peer[-1]["nats_per_note"] if peer else None
        ours_final = ours[-1]["nats_per_note"] if ours else None
        ours_hit, peer_hit, ratio = reach_ratio(ours, peer, target)
        # the second reading: the peer's best validation value (the checkpoint load_best_model_at_end ships)
        values = [q["nats_per_note"] for q in peer if q["nats_per_note"] is not None]
        best = min(values) if values else None
        ours_best, peer_best, ratio_best = reach_ratio(ours, peer, best)
        per_seed.append({
            "seed": r["seed"], "target": target, "ours_final_val": ours_final,
            "ours_reach": ours_hit, "peer_reach": peer_hit, "ratio": ratio,
            "peer_best_val": best, "ours_reach_best": ours_best, "peer_reach_best": peer_best,
            "ratio_best": ratio_best,
            "peer_reach_ours_final": time_to_reach(peer, ours_final) if ours_final is not None else None,
            "ours_max_gap_s": max_gap(ours), "peer_max_gap_s": max_gap(peer),
        })
    ratio = ratio_interval([s["ratio"] for s in per_seed])
    ratio_best = ratio_interval([s["ratio_best"] for s in per_seed])
    ours_runs = [r["test"]["ours"] for r in records]
    peer_runs = [r["test"]["peer"] for r in records]
    names, notes = common_pieces(ours_runs + peer_runs, max_pieces)
    ours_nll, peer_nll = pieces_by_seed(ours_runs, names), pieces_by_seed(peer_runs, names)
    for s, o, q in zip(per_seed, ours_nll, peer_nll, strict=True):
        s["ours_test"], s["peer_test"] = float(o.sum() / notes.sum()), float(q.sum() / notes.sum())
    gaps = [s["ours_max_gap_s"] for s in per_seed if s["ours_max_gap_s"] is not None]
    return {
        "per_seed": per_seed,
        "ratio": ratio,
        "goal": {"ratio": goal, "verdict": goal_verdict(ratio, goal),
                 "what": "ours' first wall time at or below the peer's final validation NLL/note over the peer's "
                         "first wall time at it, geometric mean over seeds, 95% t interval on the log ratio"},
        "best": {"ratio": ratio_best, "verdict": goal_verdict(ratio_best, goal),
                 "peer_rose": sum(1 for s in per_seed if s["target"] is not None and s["peer_best_val"] is not None
                                  and s["target"] > s["peer_best_val"] + 0.01),
                 "what": "the same against the peer's best validation NLL/note (the checkpoint its "
                         "load_best_model_at_end ships), a second reading added after the first race"},
        "final_val": {
            "ours": t_over_seeds([s["ours_final_val"] for s in per_seed if s["ours_final_val"] is not None]),
            "peer": t_over_seeds([s["target"] for s in per_seed if s["target"] is not None]),
        },
        "test": {"pieces": len(names), "notes": int(notes.sum()),
                 "ours": seed_piece_interval(ours_nll, notes), "peer": seed_piece_interval(peer_nll, notes),
                 "peer_minus_ours": seed_piece_interval(peer_nll - ours_nll, notes)},
        "resolution": {"goal_share": resolution, "ours_max_gap_s": max(gaps) if gaps else None,
                       "ours_max_gap_share": max(gaps) / budget_s if gaps else None,
                       "met": bool(gaps) and max(gaps) <= resolution * budget_s},
    }


# ----------------------------------------------------------------------------- report


def fmt_value(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def fmt_interval(f: dict[str, Any], digits: int = 3) -> str:
    return f"{fmt_value(f['value'], digits)} [{fmt_value(f['low'], digits)}, {fmt_value(f['high'], digits)}]"


def _reach(r: dict[str, Any] | None) -> str:
    return "not reached" if r is None else f"{r['interpolated_wall_s']:.0f} s (step {r['step']})"


def best_reading(sm: dict[str, Any]) -> list[str]:
    """The second reading's paragraph: against the peer's best validation value rather than its last."""
    b = sm.get("best")
    if b is None:
        return []
    n = len(sm["per_seed"])
    shown = fmt_interval(b["ratio"]) if b["ratio"]["value"] is not None else "not reached"
    cells = ", ".join(f"seed {s['seed']}: {fmt_value(s['peer_best_val'])} ({fmt_value(s['ratio_best'])})"
                      for s in sm["per_seed"])
    return [f"A second reading, added after the first race: the peer's validation NLL/note rose after its best "
            f"point by more than 0.01 on {b['peer_rose']} of {n} seeds, and its `load_best_model_at_end` ships that "
            f"best checkpoint. Against the peer's best value instead of its last ({cells}; the ratio in brackets), "
            f"ours over the peer's time: **{shown}**, goal verdict **{b['verdict']}**. The headline above is the "
            "reading fixed before the run.", ""]


def render_markdown(res: dict[str, Any]) -> str:
    sm, recs = res["summary"], res["records"]
    o0, p0 = recs[0]["ours"], recs[0]["peer"]
    ratio, goal = sm["ratio"], sm["goal"]
    n = len(recs)
    unreached = "" if ratio["value"] is not None else f"; not reached on {ratio['not_reached']} seed(s)"
    shown = fmt_interval(ratio) if ratio["value"] is not None else "not reached"
    lines = [
        "# Time to quality: musicgen.train vs the tuned MidiTok + HF Trainer recipe",
        "",
        f"{n} seed{'s' if n > 1 else ''} per side ({', '.join(str(r['seed']) for r in recs)}; seed s of ours raced "
        f"against seed s of the peer), each trained for {res['budget_s']:.0f} s of wall time (its own validation "
        f"included, as `trainer.max_time` counts ours; the peer's scoring by our harness is outside its clock), one "
        f"after the other on the same split: {res['files']['train']} training files, {res['files']['val']} "
        f"validation, {res['files']['test']} test, all seeds on one split (`data.seed={res['data_seed']}`). "
        f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, device {res['machine']['device']}"
        f"{', ' + res['machine']['gpu'] if res['machine'].get('gpu') else ''}. The races took "
        f"{sum(r['seconds'] for r in recs) / 60:.1f} minutes.",
        "",
        f"**Time to the peer's final validation NLL/note, ours over the peer's: {shown}** "
        f"(geometric mean over seeds, 95% t interval over seeds on the log ratio"
        f"{unreached}). "
        f"The goal, at most {goal['ratio']:g} with the interval included: **{goal['verdict']}**.",
        "",
        *best_reading(sm),
        "| seed | target: peer's final val NLL/note | ours reaches it | the peer reaches it | ratio | "
        "ours' final val | test NLL/note ours | test NLL/note peer |",
        "|---:|---:|---|---|---:|---:|---:|---:|",
    ]
    for s in sm["per_seed"]:
        lines.append(f"| {s['seed']} | {fmt_value(s['target'])} | {_reach(s['ours_reach'])} | "
                     f"{_reach(s['peer_reach'])} | "
                     f"{fmt_value(s['ratio'])} | {fmt_value(s['ours_final_val'])} | {fmt_value(s['ours_test'])} | "
                     f"{fmt_value(s['peer_test'])} |")
    t = sm["test"]
    lines += [
        "",
        "| over seeds [95%] | ours | peer | peer - ours |",
        "|---|---|---|---|",
        f"| final validation NLL/note (t over seeds) | {fmt_interval(sm['final_val']['ours'])} | "
        f"{fmt_interval(sm['final_val']['peer'])} | |",
        f"| test NLL/note at equal time ({t['pieces']} pieces, seeds and pieces) | {fmt_interval(t['ours'])} | "
        f"{fmt_interval(t['peer'])} | {fmt_interval(t['peer_minus_ours'])} |",
        "",
        "Test NLL/note: both final models scored by our harness on the same test pieces (whole pieces, each with its "
        "own tokeniser, every token after BOS within the trained window, over the piece's source notes); the "
        "difference is paired by piece within each seed and its interval covers seeds and pieces "
        "(`seed_piece_interval`). Times are interpolated linearly between validations; "
        f"ours validated at most every {fmt_value(sm['resolution']['ours_max_gap_s'], 0)} s "
        f"({fmt_value(100 * (sm['resolution']['ours_max_gap_share'] or math.nan), 1)}% of the budget, goal at most "
        f"{100 * sm['resolution']['goal_share']:g}%).",
        "",
        "![validation curves](curves.png)",
        "",
        "## Settings",
        "",
        f"- ours (seed {recs[0]['seed']}): `{o0['command']}`; precision {o0['precision']}; batch {o0['batch_size']} x "
        f"{o0['seq_len']} packed={o0['packed']}.",
        f"- peer: MidiTok REMI (our TokenizerConfig) + BPE to {p0['vocab_size']}, split_files_for_training, "
        f"DatasetMIDI, DataCollator; LlamaForCausalLM ({p0['params']:,} parameters); precision {p0['precision']}; "
        f"evaluated every {p0['eval_steps']} steps.",
        f"- peer TrainingArguments: `{json.dumps(p0['training_arguments'], sort_keys=True)}`",
        "- music tokens/s (non-pad tokens over training wall time, mean over seeds): ours "
        f"{fmt_value(float(np.mean([r['ours']['music_tokens_per_s'] or math.nan for r in recs])), 0)}, peer "
        f"{fmt_value(float(np.mean([r['peer']['music_tokens_per_s'] or math.nan for r in recs])), 0)}; padding share: "
        f"ours {fmt_value(o0['padding_share'])}, peer {fmt_value(p0['padding_share'])}.",
    ]
    return "\n".join(lines) + "\n"


def plot_curves(res: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401 (the Agg canvas, as musicgen.plots)
    from matplotlib.figure import Figure

    from musicgen.plots import save_figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    for i, r in enumerate(res["records"]):
        o, p, key = r["ours"]["curve"], r["peer"]["curve"], r["peer"]["curve_key"]
        ax.plot([q["wall_s"] for q in o], [q["nats_per_note"] for q in o], "o-", ms=2, lw=1, color="C0",
                label="musicgen.train" if i == 0 else None)
        ax.plot([q["wall_s"] for q in p], [q.get(key, math.nan) for q in p], "s-", ms=2, lw=1, color="C1",
                label="MidiTok + HF Trainer, tuned (our harness)" if i == 0 else None)
        if p:
            ax.axhline(p[-1].get(key, math.nan), color="C1", ls=":", lw=0.8)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("validation NLL (nats per note)")
    ax.set_title("Validation NLL per note against wall time, one line per seed (dotted: the targets)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- run


def check_seeds(seeds: Any, key: str = "seeds") -> list[int]:
    """A non-empty list of distinct integer seeds, or a one-line ConfigError."""
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={seeds}: a list of integer seeds, e.g. [0,1,2]") from None
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"{key}={out}: at least one seed, each once")
    return out


def run(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The race for each of ``seeds`` (a seed whose ``seed_<s>/race.json`` was written with the same
    settings is reused), pooled; writes ttq.json, ttq.md and curves.png to ``out_dir`` and, with
    ``publish=true``, the page into the docs site."""
    cfg = with_quick(cfg, overrides)
    seeds = check_seeds(cfg.seeds)
    if sorted(cfg.order) != sorted(PIPELINES):
        raise ConfigError(f"order={list(cfg.order)} must name each of {list(PIPELINES)} once")
    why = peer_missing()
    if why:
        raise UserError(f"musicgen ttq needs the peer's packages: {why}")
    if cfg.publish:
        results_dir(cfg.publish_dir, cfg.publish_name)  # a missing docs directory or bad name fails before the work
    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)

    train_cfg = compose_train(train_overrides(cfg, seeds[0]))  # the split and shapes: the same for every seed
    files = run_split_files(train_cfg)
    log.info("split: %s", {s: len(v) for s, v in files["paths"].items()})
    empty = [s for s in ("train", "val", "test") if not files["paths"][s]]
    if empty:
        raise ConfigError(f"the split has no usable {' or '.join(empty)} files: both pipelines need all three "
                          "(more files, or other data.val_frac / data.test_frac in train.extra)")

    records = []
    for seed in seeds:
        path = out / f"seed_{seed}" / "race.json"
        key = race_key(cfg, seed)
        if path.is_file():
            rec = json.loads(path.read_text())
            if rec.get("key") != key:
                raise ConfigError(f"{path} holds a race run with other settings; use another out_dir, or delete "
                                  f"{path.parent} to run seed {seed} again")
            log.info("seed %d: finished race in %s, reused", seed, path)
        else:
            rec = race_seed(cfg, train_cfg, files, seed, path.parent, device) | {"key": key}
            atomic_write_text(path, json.dumps(rec, indent=1, default=str) + "\n")
        records.append(rec)

    summary = race_summary(records, float(cfg.goal_ratio), float(cfg.budget_s), float(cfg.resolution),
                           cfg.scoring.max_pieces)
    res = {
        "budget_s": float(cfg.budget_s),
        "seeds": seeds,
        "data_seed": int(cfg.data.seed),
        "order": list(cfg.order),
        "quick": bool(cfg.quick),
        "machine": machine_info(device),
        "files": {s: len(v) for s, v in files["paths"].items()},
        "skipped_files": files["skipped"],
        "summary": summary,
        "records": records,
        "seconds": time.perf_counter() - start,
        "settings": {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                     for k, v in cfg.items() if k not in ("paths", "quick_overrides", "hydra")},
    }
    md = render_markdown(res)
    atomic_write_text(out / "ttq.json", json.dumps(res, indent=1, default=str) + "\n")
    atomic_write_text(out / "ttq.md", md)
    plot_curves(res, out / "curves.png")
    log.info("wrote %s, %s, %s", out / "ttq.json", out / "ttq.md", out / "curves.png")
    if cfg.publish:
        log.info("published to %s", publish(cfg.publish_name, md, {"curves.png": out / "curves.png"},
                                            docs_dir=cfg.publish_dir))
    r = summary["ratio"]
    log.info("time ratio ours/peer %s: goal %s", fmt_interval(r), summary["goal"]["verdict"])
    return res


@hydra_main("ttq")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
