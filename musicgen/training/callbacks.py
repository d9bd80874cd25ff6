"""Training callbacks. ``SampleMetrics`` generates and measures samples during training;
``Budget`` ends a run by its budget with the learning rate at its floor; the rest is what makes
a run survive a kill: atomic checkpoint files, a ``last.ckpt`` every N steps and
on SIGTERM / Ctrl-C, and the state a resumed run needs to continue exactly.

Exact resume needs five things restored; Lightning restores the first two itself:
1. weights, optimizer, scheduler, loop counters (global step, epoch, batch in epoch);
2. callback states (best score, early-stopping patience);
3. the data position: ``MidiDataModule`` orders each epoch by ``(seed, epoch)`` and skips the
   batches of an interrupted epoch already trained on (its ``state_dict``);
4. the running mean of the epoch's training loss (a persistent metric of the module);
5. the global RNGs (dropout) and the last logged metrics: ``ResumeState`` below.

Checkpoints are only written where a run can continue exactly from: after an optimizer step
inside an epoch (``ResumeCheckpoint``) and at validation end (``ModelCheckpoint`` with
``save_on_train_epoch_end: false``; after the epoch-end hooks, Lightning would run them twice).
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from musicgen.api import MusicModel
from musicgen.audio import AudioRenderer, renderer_from_config
from musicgen.fs import atomic_path, atomic_write_text
from musicgen.generation import SamplingConfig
from musicgen.metrics.samples import Reference, sample_metrics, training_reference
from musicgen.midi_io import write_score
from musicgen.plots import plot_piano_roll, plot_pitch_histograms, save_figure
from musicgen.training.optim import WarmupCosine

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a hidden temporary file beside the target, then ``os.replace``.

    Lightning's own writer stages the file in the system temp folder and moves it, which is a
    copy (not atomic) when that folder is on another file system; a kill then can leave a
    truncated ``last.ckpt``. Here a kill leaves the previous checkpoint intact.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
        log.info("wrote checkpoint %s (step %s)", path, checkpoint.get("global_step"))


class ResumeCheckpoint(L.Callback):
    """Writes ``path`` (``last.ckpt``) every ``every_n_train_steps`` optimizer steps inside an
    epoch, and on SIGTERM (SLURM pre-emption, ``kill``) or a first Ctrl-C, after which training
    stops with ``SIGTERMException``; a second Ctrl-C stops at once, without a checkpoint.

    Writes happen only after an optimizer step (never inside a gradient accumulation window)
    and never after an epoch's last batch: from there Lightning resumes by skipping that epoch's
    validation. A signal during an epoch's last batch or its validation is acted on at the
    epoch's end instead, before the epoch-end hooks, once validation and the best-checkpoint
    bookkeeping are done. Lightning's own SIGTERM handling is replaced while training runs,
    because it stops in the middle of a validation, which a resumed run cannot finish with the
    right loss. Under DDP the ranks agree at every step whether any of them was signalled, so
    all stop at the same step. Other exceptions (a NaN loss, a bug) write nothing: the last good
    checkpoint stays.
    """

    def __init__(self, path: str, every_n_train_steps: int | None = None) -> None:
        self.path = Path(path)
        self.every_n_train_steps = every_n_train_steps
        self.signal: int | None = None  # the signal that stopped training, if any
        self._previous_handlers: dict[int, Any] = {}
        self._last_saved_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signal = None
        self._last_saved_step = trainer.global_step  # the checkpoint resumed from, if any
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: leave the handlers alone
                break

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal is None:
            again = " (Ctrl-C again to stop without it)" if signum == signal.SIGINT else ""
            log.warning("%s: finishing this step, then writing %s%s", signal.Signals(signum).name, self.path, again)
            self.signal = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if not stepped or batch_idx + 1 >= trainer.num_training_batches:
            return
        if self._stop_requested(trainer):
            self._save_and_stop(trainer)
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0 and trainer.global_step != self._last_saved_step:
            trainer.save_checkpoint(self.path)
            self._last_saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stop_requested(trainer):
            self._save_and_stop(trainer)

    def _stop_requested(self, trainer: L.Trainer) -> bool:
        return bool(trainer.strategy.reduce_boolean_decision(self.signal is not None, all=False))

    def _save_and_stop(self, trainer: L.Trainer) -> None:
        self.signal = self.signal or signal.SIGTERM  # a rank that was not signalled itself
        trainer.save_checkpoint(self.path)
        name = signal.Signals(self.signal).name
        log.warning("stopped by %s at step %d; wrote %s", name, trainer.global_step, self.path)
        raise SIGTERMException

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()  # before Lightning restores the handlers it found

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}


class ResumeState(L.Callback):
    """What else a resumed run needs to go on exactly as if never stopped, saved in every
    checkpoint: the global RNG states (python, numpy, torch, CUDA: dropout) and the metrics last
    logged (``trainer.callback_metrics``).

    The metrics matter because a checkpoint written at validation end comes before that epoch's
    ``on_train_epoch_end`` hooks, which the resumed run then runs; without the validation result
    early stopping fails there ("val/loss not available", Lightning issue #18595), and
    ``metrics.json`` of a run that ends before validating again would have no validation loss.

    Both are restored in ``on_train_start`` (after the data loaders are set up, before the first
    batch), not when the checkpoint is read: setting up the run in between draws random numbers.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        checkpoint["resume_state"] = {
            "python": random.getstate(),
            "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],  # plain lists: loadable with weights_only
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "metrics": {k: v.detach().cpu() for k, v in trainer.callback_metrics.items()},
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get("resume_state")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for k, v in state["metrics"].items():
            trainer.callback_metrics.setdefault(k, v.to(pl_module.device))


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, size: int = 1024, seconds: float = 0.3) -> float:
    """FLOP/s of a square ``size`` matrix product in ``dtype`` on ``device``, timed for about
    ``seconds``: the peak the ``Throughput`` callback divides by where none is given."""
    import time

    gen = torch.Generator(device=device).manual_seed(0)  # never the global RNG: resumed runs must match
    a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b  # warm-up
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
        sync()
    return 2 * size**3 * n / (time.perf_counter() - t0)


class Throughput(L.Callback):
    """Logs ``train/tokens_per_second`` (window tokens through the optimizer per second, padding
    included, mean over the last ``window`` steps; all ranks together) and ``train/mfu``: model
    FLOPs (the model's ``flops_per_token``, else 6 x its parameters) per second over
    ``peak_flops`` (FLOP/s of the whole run; null: a square matrix product in the training
    precision, measured once at the start on this process's device, times the world size)."""

    def __init__(self, window: int = 20, peak_flops: float | None = None):
        self.window, self.peak_flops = window, peak_flops
        self._times: list[float] = []
        self._tokens: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.peak_flops is None:
            bf16 = "bf16" in str(trainer.precision)
            dtype = torch.bfloat16 if bf16 else (torch.float16 if "16" in str(trainer.precision) else torch.float32)
            self.peak_flops = matmul_peak_flops(pl_module.device, dtype) * trainer.world_size

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        import time

        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        import time

        x = batch[0]
        self._times = (self._times + [time.perf_counter() - self._t0])[-self.window :]
        self._tokens = (self._tokens + [x.numel() * trainer.world_size])[-self.window :]
        rate = sum(self._tokens) / max(sum(self._times), 1e-9)
        net = pl_module.net
        per_token = (net.flops_per_token(x.size(1)) if hasattr(net, "flops_per_token")
                     else 6.0 * sum(p.numel() for p in net.parameters()))
        pl_module.log("train/tokens_per_second", rate, on_step=True, on_epoch=False)
        if self.peak_flops:
            pl_module.log("train/mfu", per_token * rate / self.peak_flops, on_step=True, on_epoch=False)


class Budget(L.Callback):
    """Ends a run by its budget with the learning rate at its floor and a final validation.

    Time (``trainer.max_time``): Lightning sizes the schedule from ``max_epochs``
    (``estimated_stepping_batches``) and knows nothing of the time limit, so a time-capped run
    would stop with its learning rate near the peak. Here, once ``skip_steps`` optimizer steps
    are done (compilation, warm caches), and again every ``every_n_steps``, the throughput since
    then (validation and sampling included: the time limit counts them) gives the steps that fit
    in the remaining time; the run's end becomes ``step + rate x remaining x safety``, never
    later than the epoch limit. That count becomes the schedule's ``total_steps`` and the
    trainer's ``max_steps``, so the run ends by steps, just before the time limit. The estimate
    is saved in every checkpoint (here and in the scheduler's state), so a resumed run keeps
    the same schedule; under DDP rank 0's estimate is used by all.

    Steps (``trainer.max_steps``, or the estimate): at the last step the trainer is asked to stop,
    which makes Lightning validate once more (and write ``best.ckpt``/``last.ckpt``) instead of
    leaving with the last validation possibly hundreds of steps old.
    """

    def __init__(self, skip_steps: int = 10, every_n_steps: int = 10, safety: float = 0.97) -> None:
        if not 0 < safety <= 1:
            raise ValueError(f"safety={safety} must be in (0, 1]")
        self.skip_steps, self.every_n_steps, self.safety = skip_steps, every_n_steps, safety
        self.ref: tuple[int, float] | None = None  # (step, seconds elapsed) where the measurement starts
        self.total_steps: int | None = None  # the run's end, once estimated from the time budget
        self._epoch_limit = -1
        self._last_step = -1
        self._timer: Timer | None = None  # Lightning's max_time timer, found once per fit

    @staticmethod
    def _schedule(trainer: L.Trainer):
        for config in trainer.lr_scheduler_configs:
            for fn in getattr(config.scheduler, "lr_lambdas", []):
                if isinstance(fn, WarmupCosine):
                    return fn
        return None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        limit = trainer.estimated_stepping_batches
        self._epoch_limit = int(limit) if limit != float("inf") else -1
        self._last_step = trainer.global_step
        self._timer = next((c for c in trainer.callbacks if isinstance(c, Timer) and c._duration is not None), None)
        if self.total_steps is not None and self._timer is not None:  # resumed
            self._apply(trainer, self.total_steps)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self._last_step:  # inside a gradient-accumulation window
            return
        self._last_step = step
        if self._timer is not None:
            self._estimate(trainer, self._timer, step)
        if 0 < trainer.max_steps <= step:
            trainer.should_stop = True  # Lightning validates before it leaves

    def _estimate(self, trainer: L.Trainer, timer, step: int) -> None:
        if self.ref is None:
            if step >= self.skip_steps:
                self.ref = (step, timer.time_elapsed())
            return
        ref_step, ref_time = self.ref
        if (step - ref_step) % self.every_n_steps:
            return
        rate = (step - ref_step) / max(1e-9, timer.time_elapsed() - ref_time)
        # keep room for the final validation (as long as the last one took) and one step of headroom,
        # so the run ends by steps, with the schedule at its floor, rather than by the clock
        spare = max(0.0, timer.time_remaining() - timer.time_elapsed("validate"))
        total = max(step + 1, step + int(rate * spare * self.safety) - 1)
        if self._epoch_limit > 0:
            total = min(total, self._epoch_limit)
        total = int(trainer.strategy.broadcast(total, src=0))
        if total != self.total_steps:
            log.debug("time budget: %.2f steps/s, %.0f s left: the run ends at step %d",
                      rate, timer.time_remaining(), total)
        self._apply(trainer, total)

    def _apply(self, trainer: L.Trainer, total: int) -> None:
        self.total_steps = total
        trainer.fit_loop.epoch_loop.max_steps = total
        schedule = self._schedule(trainer)
        if schedule is not None:
            schedule.total_steps = total

    def state_dict(self) -> dict[str, Any]:
        return {"ref": list(self.ref) if self.ref else None, "total_steps": self.total_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ref = tuple(state_dict["ref"]) if state_dict.get("ref") else None
        self.total_steps = state_dict.get("total_steps")


TABLE_COLUMNS = ("sample", "notes", "tokens", "ended_at_eos", "ngram_repetition_4", "syntax_error_rate")


class SampleMetrics(L.Callback):
    """Generate ``num_samples`` pieces every ``every_n_epochs`` validation epochs and log their
    figures (``musicgen.metrics.samples.sample_metrics``: distribution overlaps with the training pieces,
    repetition, copying, syntax errors) as ``samples/*``; write the MIDI files and a
    pitch-histogram figure under ``output_dir/epoch_NNN/`` and, on W&B, log the figure as an
    image, the samples as a table, each sample's piano roll (``samples/piano_roll``) and audio
    (``samples/audio``: FLAC, ``musicgen.audio``, where a SoundFont is found; ``audio`` is an
    ``audio:`` config block, by default the SoundFont search) and the MIDI files, with those
    PNG and FLAC files beside them, as an artifact. Each sample is one piece, from the start
    token to its EOS (at most ``max_new_tokens``), within the trained window."""

    def __init__(
        self,
        output_dir: str,
        every_n_epochs: int = 5,
        num_samples: int = 4,
        max_new_tokens: int = 256,
        sampling: dict[str, Any] | None = None,
        seed: int = 0,
        audio: dict[str, Any] | None = None,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be >= 1")
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.max_new_tokens = max_new_tokens
        self.sampling = SamplingConfig(**(sampling or {}))
        self.seed = seed
        self.audio = {"formats": ["flac"], **(audio or {})}
        self._renderer: AudioRenderer | None | bool = False  # False: not looked for yet
        self._reference: Reference | None = None
        self._model: MusicModel | None = None  # the live network as the API sees it, built at the first sampling
        self._sampled_epoch = -1

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if self._sampled_epoch == trainer.current_epoch:  # validating several times an epoch: once
            return
        self._sampled_epoch = trainer.current_epoch
        if not trainer.is_global_zero:  # one process generates; loggers are rank-zero only anyway
            return
        dm = trainer.datamodule
        tok = dm.tokenizer
        if self._reference is None:  # built once: the tokeniser does not change during a run
            self._reference = training_reference(tok, dm.cache.splits["train"], max_pieces=1000)
        # the live network as the API decodes a checkpoint of it: a conditioned run asked nothing
        # (its null prefix), an infilling run's sentinels never sampled, within the trained window
        if self._model is None or self._model.net is not pl_module.net:
            self._model = MusicModel(pl_module.net, tok, pl_module.metadata)
        pieces = self._model.generate(
            self.num_samples, sampling=self.sampling, seed=self.seed, max_new_tokens=self.max_new_tokens,
            context_len=dm.seq_len, batch_size=32)
        ids, ended = [p.ids for p in pieces], [p.ended for p in pieces]
        metrics = sample_metrics(tok, ids, self._reference, ended)

        step = trainer.global_step
        scalars = {f"samples/{k}": v for k, v in metrics.items() if not math.isnan(v)}  # NaN: nothing to measure
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

        epoch_dir = self.output_dir / f"epoch_{trainer.current_epoch:03d}"
        epoch_dir.mkdir(parents=True, exist_ok=True)
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if wandb_loggers and self._renderer is False:
            self._renderer = renderer_from_config(self.audio)
        rows, pitches, media = [], torch.zeros(128), []  # media: (sample, piano roll PNG, audio file or None)
        for i, (seq, end) in enumerate(zip(ids, ended)):
            row = sample_metrics(tok, [seq], self._reference, [end])
            try:
                score = tok.decode(seq)
                write_score(score, epoch_dir / f"sample_{i:02d}.mid")
                if wandb_loggers:
                    plot_piano_roll(score, epoch_dir / f"sample_{i:02d}.png", title=f"epoch {trainer.current_epoch} "
                                    f"sample {i}")
                    sound = self._renderer.write(score, epoch_dir / f"sample_{i:02d}") if self._renderer else {}
                    media.append((i, f"sample_{i:02d}.png", next(iter(sound.values()), None)))
                pitches += torch.bincount(torch.tensor([n.pitch for t in score.tracks for n in t.notes],
                                                       dtype=torch.long), minlength=128)[:128]
            except Exception as e:  # an ill-formed sample is reported, the others still logged
                log.warning("epoch %d sample %d could not be decoded: %s", trainer.current_epoch, i, e)
            rows.append([i, row["notes_per_piece"], len(seq), bool(end), row["ngram_repetition_4"],
                         row["syntax_error_rate"]])
        fig = plot_pitch_histograms(pitches, torch.as_tensor(self._reference.histograms["pitch"]),
                                    title=f"epoch {trainer.current_epoch}: generated vs training pitches")
        save_figure(fig, epoch_dir / "pitch_histogram.png")
        atomic_write_text(epoch_dir / "samples.json", json.dumps(
            {"step": step, "metrics": scalars, "columns": TABLE_COLUMNS, "rows": rows, "ids": ids}, indent=1))

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                image = wandb.Image(str(epoch_dir / "pitch_histogram.png"))
                logger.log_image("samples/pitch_histogram", [image], step=step)
                logger.log_table("samples/table", columns=list(TABLE_COLUMNS), data=rows, step=step)
                rolls = [wandb.Image(str(epoch_dir / png), caption=f"sample {i}") for i, png, _ in media]
                sounds = [wandb.Audio(str(epoch_dir / a), caption=f"sample {i}") for i, _, a in media if a]
                per_sample = {"samples/piano_roll": rolls, "samples/audio": sounds}
                if any(per_sample.values()):
                    logger.log_metrics({k: v for k, v in per_sample.items() if v}, step=step)
                art = wandb.Artifact(f"samples-epoch{trainer.current_epoch:03d}", type="midi")
                art.add_dir(str(epoch_dir))
                logger.experiment.log_artifact(art)
