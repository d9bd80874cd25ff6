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

What is reported for each (``ttq.json``, ``ttq.md``, ``curves.png``):

- padding share: pad tokens / all tokens of the training batches (ours: the DataModule's exact
  ``train_target_pad_share``, 0 for packed windows, read with ``data.pack`` from the run's config);
- music tokens/s: the non-pad tokens of the training batches over the training wall time
  (validation and checkpoints included, as the budget counts them), and over the steps alone;
- final test NLL per note with 95% bootstrap intervals over pieces, both models scored by our
  harness (``musicgen.metrics.likelihood.doc_nll``: every token after BOS once, within the trained window) on
  the same test pieces, each tokenised by its own tokeniser (whole pieces, ``BOS ... EOS``), each
  piece's NLL divided by its source notes; and the paired difference;
- validation curves in nats per note against wall time: ours ``val/loss`` x the validation
  split's tokens per note; the peer's whole validation pieces scored by the same harness at each
  of its evaluations (clock paused), and Hugging Face's own ``eval_loss`` on the chunks x the
  tokens per note of the whole pieces, for reference; from them, the first wall time each reaches
  the other's final value.
"""

from __future__ import annotations

from musicgen.experiments.speed.env import OMP_WAIT_POLICY

# isort: split
import copy
import csv
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
from torch import nn

from musicgen.checkpoint.hf import build_llama, llama_missing
from musicgen.config import build, version_as_choice
from musicgen.constants import BOS_ID, EOS_ID, PAD_ID
from musicgen.experiments.speed import with_quick
from musicgen.experiments.speed.harness import machine_info
from musicgen.fs import atomic_write_text
from musicgen.metrics.likelihood import doc_nll, likelihood_metrics
from musicgen.metrics.statistics import paired_difference
from musicgen.runtime import hydra_main, pick_device
from musicgen.tokenizers.base import BadMidiError

__all__ = ["OMP_WAIT_POLICY", "peer_missing", "run", "time_to_reach"]

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


def train_overrides(cfg: DictConfig) -> list[str]:
    """The overrides of our run (and of the config the peer is cut from), budget aside."""
    out = [*cfg.train.overrides, *cfg.train.extra, f"seed={cfg.seed}"]
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


def tokens_per_note(docs: list[np.ndarray], notes: np.ndarray) -> float:
    """Scored tokens (all but BOS) per source note of a set of documents ``BOS ... EOS``."""
    return float(sum(len(d) - 1 for d in docs) / max(1, int(np.sum(notes))))


# ----------------------------------------------------------------------------- ours


def run_ours(cfg: DictConfig, overrides: list[str], out: Path) -> dict[str, Any]:
    """``musicgen.train`` in a subprocess for ``budget_s`` (its log in ``out/ours.log``); its
    validation curve, throughput and padding from the run's csv, metrics.json and config."""
    run_dir = out / "ours"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "musicgen.train", *overrides, f"trainer.max_time={max_time(cfg.budget_s)}",
           f"hydra.run.dir={run_dir}"]
    log.info("ours: %s", " ".join(cmd))
    t0 = time.perf_counter()
    with open(out / "ours.log", "w") as logf:
        proc = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, check=False)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "".join((out / "ours.log").read_text(errors="replace").splitlines(True)[-30:])
        raise RuntimeError(f"musicgen.train exited with {proc.returncode}; last lines of {out / 'ours.log'}:\n{tail}")
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
    pad_share = float(metrics["train_target_pad_share"])
    packed = bool(run_cfg.data.pack)
    if packed and run_cfg.data.mode == "causal" and pad_share != 0.0:
        raise RuntimeError(f"packed causal windows should hold no padding, metrics.json says {pad_share}")
    train_s = curve[-1]["wall_s"] if curve else float("nan")
    real = float(metrics["train_target_tokens"]) * (1.0 - pad_share)
    return {
        "command": " ".join(cmd[1:]).replace("-m musicgen.train", "python -m musicgen.train", 1),
        "run_dir": str(run_dir),
        "steps": int(metrics["global_step"]),
        "epochs": int(metrics["epoch"]),
        "wall_s": train_s,
        "process_s": total,
        "setup_s": total - train_s if curve else None,  # imports, split, token cache (BPE), loading, the end
        "precision": str(run_cfg.trainer.precision),
        "batch_size": int(run_cfg.data.batch_size),
        "seq_len": int(run_cfg.data.seq_len),
        "packed": packed,
        "padding_share": pad_share,
        "padding_share_source": "metrics.json train_target_pad_share (exact, from the training windows; "
                                f"data.pack={packed})",
        "train_windows": int(metrics["train_windows"]),
        "music_tokens": real,
        "music_tokens_per_s": real / train_s if curve and train_s > 0 else None,
        # Throughput callback: window tokens per second over the steps alone (median of its logged values)
        "music_tokens_per_s_steps": float(np.median(step_rates)) * (1.0 - pad_share) if step_rates else None,
        "val_loss_final": metrics.get("val_loss"),
        "curve": curve,
    }


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


def run_peer(cfg: DictConfig, train_cfg: DictConfig, files: dict[str, Any], out: Path) -> dict[str, Any]:
    """MidiTok's recipe + HF Trainer for ``budget_s``; returns its record and the trained model."""
    import miditok
    from miditok.pytorch_data import DataCollator, DatasetMIDI
    from miditok.utils import split_files_for_training
    from transformers import TrainingArguments

    CountingTrainer, BudgetClock = _peer_classes()
    p = cfg.peer
    peer_dir = out / "peer"
    shutil.rmtree(peer_dir, ignore_errors=True)
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
    torch.manual_seed(int(cfg.seed))
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
            load_best_model_at_end=bool(p.load_best_model_at_end), bf16=bf16, seed=int(cfg.seed), report_to="none",
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


def score_test(ours: dict[str, Any], peer: dict[str, Any], files: dict[str, Any], cfg: DictConfig,
               device: torch.device) -> dict[str, Any]:
    """Both final models on the same test pieces, each piece tokenised by each model's tokeniser:
    NLL per note with intervals, and the paired difference (peer - ours)."""
    from musicgen.api import MusicModel
    from musicgen.checkpoint import load_run_cache

    m = MusicModel.load(ours["run_dir"], device)
    cache = load_run_cache(m.run)
    test = cache.splits["test"]
    ours_docs = {test.names[i]: test.doc(i) for i in test.originals()}
    ours_notes = {test.names[i]: int(test.notes[i]) for i in test.originals()}
    peer_docs = _peer_docs(peer["tokenizer"], {n: p for n, p in files["paths"]["test"].items() if n in ours_docs})
    names = [n for n in ours_docs if n in peer_docs]
    if cfg.scoring.max_pieces:
        names = names[: int(cfg.scoring.max_pieces)]
    mismatch = [n for n in names if ours_notes[n] != files["notes"][n]]
    if mismatch:
        raise RuntimeError(f"note counts differ between our cache and the source files: {mismatch[:3]}")
    notes = np.array([ours_notes[n] for n in names])
    n_boot, seed = int(cfg.scoring.bootstrap), int(cfg.seed)
    bs = int(cfg.scoring.batch_size)

    ours_seq = [np.asarray(ours_docs[n]) for n in names]
    ours_nll = m.nll(ours_seq, batch_size=bs)  # within the trained window, as the harness scores
    peer_model = peer["model"].to(device)
    peer_seq = [peer_docs[n] for n in names]
    peer_nll = doc_nll(LogitsOnly(peer_model), peer_seq, peer["record"]["seq_len"], batch_size=bs)
    rows = {
        "ours": likelihood_metrics(ours_nll, [len(d) - 1 for d in ours_seq], notes, n_boot, seed),
        "peer": likelihood_metrics(peer_nll, [len(d) - 1 for d in peer_seq], notes, n_boot, seed),
    }
    return {
        "pieces": len(names),
        "left_out": sorted(set(files["paths"]["test"]) - set(names)),
        "ours": rows["ours"],
        "peer": rows["peer"],
        "paired_difference_peer_minus_ours": paired_difference(peer_nll, ours_nll, notes, n_boot, seed),
        "checkpoint": str(m.ckpt_path),
        "ours_context": m.trained_context,
    }


# ----------------------------------------------------------------------------- report


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}" if abs(x) < 1000 else f"{x:,.0f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def _interval(f: dict[str, float]) -> str:
    return f"{_fmt(f['value'])} [{_fmt(f['low'])}, {_fmt(f['high'])}]"


def _reach(r: dict[str, Any] | None) -> str:
    if r is None:
        return "not reached"
    return f"{r['wall_s']:.0f} s (step {r['step']}; interpolated {r['interpolated_wall_s']:.0f} s)"


def render_markdown(res: dict[str, Any]) -> str:
    o, p, t = res["ours"], res["peer"], res["test"]
    lines = [
        "# Time to quality: musicgen.train vs MidiTok's recipe + HF Trainer",
        "",
        f"Budget {res['budget_s']:.0f} s of training wall time each, one after the other; the same "
        f"{res['files']['train']} training files ({res['files']['val']} validation, {res['files']['test']} test); "
        f"both scored by our harness on the same {t['pieces']} test pieces (each with its own tokeniser). "
        f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores, device {res['machine']['device']}"
        f"{', ' + res['machine']['gpu'] if res['machine'].get('gpu') else ''}.",
        "",
        "| pipeline | steps | wall s | padding share | music tokens/s (all / steps only) | final test NLL/note [95%] | "
        "time to reach the other's final |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, r, label in (("ours", o, "musicgen.train"), ("peer", p, "MidiTok + HF Trainer")):
        lines.append(
            f"| {label} | {r['steps']:,} | {_fmt(r['wall_s'], 0)} | {_fmt(r['padding_share'])} | "
            f"{_fmt(r['music_tokens_per_s'], 0)} / {_fmt(r['music_tokens_per_s_steps'], 0)} | "
            f"{_interval(t[name]['nll_per_note'])} | {_reach(res['time_to_reach'][name])} |")
    d = t["paired_difference_peer_minus_ours"]
    goal = res["goal"]
    lines += [
        "",
        f"Paired difference peer - ours, NLL/note: {_interval(d)} (positive: ours is better).",
        "",
        f"Final validation NLL/note: ours {_fmt(res['final_val']['ours'])}, peer {_fmt(res['final_val']['peer'])} "
        f"(curves.png; the peer's whole validation pieces scored by our harness, as ours are). Goal: ours reaches "
        f"the peer's final value in at most a third of the peer's time: ratio {_fmt(goal['ratio'])}, "
        f"{'met' if goal['met'] else 'not met'}.",
        "",
        "## Settings",
        "",
        f"- ours: `{o['command']}`; precision {o['precision']}; batch {o['batch_size']} x {o['seq_len']} "
        f"packed={o['packed']}; {o['epochs']} epochs; setup outside the budget {_fmt(o['setup_s'], 0)} s.",
        f"- peer: MidiTok REMI (our TokenizerConfig) + BPE to {p['vocab_size']}, split_files_for_training "
        f"({p['chunks']['train']:,} train / {p['chunks']['val']:,} val chunks), DatasetMIDI, DataCollator; "
        f"LlamaForCausalLM ({p['params']:,} parameters); precision {p['precision']}; {p['epochs']:.2f} epochs; "
        f"max_steps {p['max_steps']}; setup outside the budget {_fmt(p['setup_s'], 0)} s.",
        f"- peer TrainingArguments: `{json.dumps(p['training_arguments'], sort_keys=True)}`",
        "- music tokens/s: the non-pad tokens of the training batches over the training wall time (validation and "
        "checkpoints included); steps only: ours the Throughput callback's median, the peer's median step.",
        "- the peer's Hugging Face eval_loss on its validation chunks, in nats/note (x tokens per note of the whole "
        f"pieces, {_fmt(p['val_tokens_per_note'])}): final {_fmt(res['final_val']['peer_hf'])}.",
    ]
    return "\n".join(lines) + "\n"


def plot_curves(res: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401 (the Agg canvas, as musicgen.plots)
    from matplotlib.figure import Figure

    from musicgen.plots import save_figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    ax = fig.add_subplot()
    o, p = res["ours"]["curve"], res["peer"]["curve"]
    ax.plot([q["wall_s"] for q in o], [q["nats_per_note"] for q in o], "o-", ms=3, color="C0", label="musicgen.train")
    if any("nats_per_note" in q for q in p):
        ax.plot([q["wall_s"] for q in p], [q.get("nats_per_note", math.nan) for q in p], "s-", ms=3, color="C1",
                label="MidiTok + HF Trainer (our harness)")
    ax.plot([q["wall_s"] for q in p], [q["hf_nats_per_note"] for q in p], "s--", ms=2, alpha=0.5, color="C1",
            label="MidiTok + HF Trainer (HF eval_loss on chunks)")
    for name, color in (("ours", "C0"), ("peer", "C1")):
        v = res["final_val"][name]
        if v is not None and math.isfinite(v):
            ax.axhline(v, color=color, ls=":", lw=1)
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("validation NLL (nats per note)")
    ax.set_title("Validation NLL per note against wall time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- run


def run(cfg: DictConfig, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Both pipelines for ``budget_s`` each; writes ttq.json, ttq.md and curves.png to ``out_dir``."""
    cfg = with_quick(cfg, overrides)
    why = peer_missing()
    if why:
        raise RuntimeError(f"musicgen ttq needs the peer's packages: {why}")
    if sorted(cfg.order) != sorted(PIPELINES):
        raise ValueError(f"order={list(cfg.order)} must name each of {list(PIPELINES)} once")
    start = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    machine = machine_info(device)

    overrides_train = train_overrides(cfg)
    train_cfg = compose_train(overrides_train)
    files = run_split_files(train_cfg)
    log.info("split: %s", {s: len(v) for s, v in files["paths"].items()})
    empty = [s for s in ("train", "val", "test") if not files["paths"][s]]
    if empty:
        raise ValueError(f"the split has no usable {' or '.join(empty)} files: both pipelines need all three "
                         "(more files, or other data.val_frac / data.test_frac in train.extra)")

    results: dict[str, Any] = {}
    for name in cfg.order:
        t = time.perf_counter()
        if name == "ours":
            results["ours"] = run_ours(cfg, overrides_train, out)
        else:
            results["peer"] = run_peer(cfg, train_cfg, files, out)
        log.info("%s: done in %.0f s", name, time.perf_counter() - t)
    ours, peer = results["ours"], results["peer"]

    # ours' curve in nats per note: val/loss x the validation split's tokens per note (its tokeniser)
    from musicgen.checkpoint import load_run, load_run_cache

    cache = load_run_cache(load_run(ours["run_dir"]))
    val = cache.splits["val"]
    ours_tpn = tokens_per_note([val.doc(i) for i in range(val.n_docs)], val.notes)
    ours["val_tokens_per_note"] = ours_tpn
    for point in ours["curve"]:
        point["nats_per_note"] = point["val_loss"] * ours_tpn

    test = score_test(ours, peer, files, cfg, device)
    rec = peer["record"]
    key = rec["curve_key"]
    final = {
        "ours": ours["curve"][-1]["nats_per_note"] if ours["curve"] else None,
        "peer": rec["curve"][-1].get(key) if rec["curve"] else None,
        "peer_hf": rec["curve"][-1]["hf_nats_per_note"] if rec["curve"] else None,
    }
    reach = {
        "ours": time_to_reach(ours["curve"], final["peer"]) if final["peer"] is not None else None,
        "peer": time_to_reach(rec["curve"], final["ours"], key) if final["ours"] is not None else None,
    }
    peer_time = rec["curve"][-1]["wall_s"] if rec["curve"] else None
    ratio = reach["ours"]["wall_s"] / peer_time if reach["ours"] and peer_time else None
    res = {
        "budget_s": float(cfg.budget_s),
        "order": list(cfg.order),
        "quick": bool(cfg.quick),
        "machine": machine,
        "files": {s: len(v) for s, v in files["paths"].items()},
        "skipped_files": files["skipped"],
        "train_overrides": overrides_train,
        "ours": ours,
        "peer": rec,
        "test": test,
        "final_val": final,
        "time_to_reach": reach,
        "goal": {"target_ratio": 1 / 3, "ratio": ratio, "met": ratio is not None and ratio <= 1 / 3,
                 "what": "ours' first wall time at or below the peer's final validation NLL/note, over the "
                         "peer's wall time at its final validation"},
        "seconds": time.perf_counter() - start,
        "settings": {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                     for k, v in cfg.items() if k not in ("paths", "quick_overrides", "hydra")},
    }
    atomic_write_text(out / "ttq.json", json.dumps(res, indent=1, default=str) + "\n")
    atomic_write_text(out / "ttq.md", render_markdown(res))
    plot_curves(res, out / "curves.png")
    log.info("wrote %s, %s, %s", out / "ttq.json", out / "ttq.md", out / "curves.png")
    return res


@hydra_main("ttq")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    run(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    main()
