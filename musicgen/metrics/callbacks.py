"""Sample metrics during training: every N validation epochs, generate, measure, and log."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger

from musicgen.generation import SamplingConfig, generate
from musicgen.metrics.music import plot_pitch_histograms
from musicgen.midi_io import atomic_write_text, write_score
from musicgen.plots import save_figure
from musicgen.tokenizers.base import BOS_ID

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("sample", "notes", "ngram_repetition_4", "compression_ratio_4", "syntax_error_rate")


class SampleMetrics(Callback):
    """Generate ``num_samples`` pieces every ``every_n_epochs`` validation epochs and log their
    repetition, compression, pitch-histogram and syntax metrics as ``samples/*``; write the MIDI
    files and a pitch-histogram figure under ``output_dir/epoch_NNN/`` and, on W&B, log the
    figure as an image, the samples as a table and the MIDI files as an artifact."""

    def __init__(
        self,
        output_dir: str,
        every_n_epochs: int = 5,
        num_samples: int = 4,
        max_new_tokens: int = 256,
        sampling: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be >= 1")
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.max_new_tokens = max_new_tokens
        self.sampling = SamplingConfig(**(sampling or {}))
        self.seed = seed
        self._ref_hist: torch.Tensor | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if not trainer.is_global_zero:  # one process generates; loggers are rank-zero only anyway
            return
        from musicgen.evaluation import reference_histogram, sample_metrics

        dm = trainer.datamodule
        tok = dm.tokenizer
        if self._ref_hist is None:
            train = dm.cache.splits["train"]
            self._ref_hist = reference_histogram(tok, [train.doc(i) for i in range(train.n_docs)])
        device = pl_module.device
        gen = torch.Generator(device=device).manual_seed(self.seed)
        prompt = torch.full((self.num_samples, 1), BOS_ID, dtype=torch.long, device=device)
        ids = generate(pl_module.net, prompt, self.max_new_tokens, self.sampling, generator=gen)[:, 1:].tolist()
        metrics = sample_metrics(tok, ids, self._ref_hist)

        step = trainer.global_step
        scalars = {f"samples/{k}": v for k, v in metrics.items() if isinstance(v, float)}
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

        epoch_dir = self.output_dir / f"epoch_{trainer.current_epoch:03d}"
        epoch_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, seq in enumerate(ids):
            row = sample_metrics(tok, [seq], self._ref_hist)
            try:
                score = tok.decode(seq)
                write_score(score, epoch_dir / f"sample_{i:02d}.mid")
                notes = sum(len(t.notes) for t in score.tracks)
            except Exception as e:  # an ill-formed sample is reported, the others still logged
                log.warning("epoch %d sample %d could not be decoded: %s", trainer.current_epoch, i, e)
                notes = -1
            rows.append([i, notes, row["ngram_repetition_4"], row["compression_ratio_4"], row["syntax_error_rate"]])
        fig = plot_pitch_histograms(torch.tensor(metrics["pitch_counts"]), self._ref_hist,
                                    title=f"epoch {trainer.current_epoch}: generated vs training pitches")
        save_figure(fig, epoch_dir / "pitch_histogram.png")
        atomic_write_text(epoch_dir / "samples.json", json.dumps(
            {"step": step, "metrics": scalars, "columns": TABLE_COLUMNS, "rows": rows, "ids": ids}, indent=1))

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.log_image("samples/pitch_histogram", [wandb.Image(str(epoch_dir / "pitch_histogram.png"))], step=step)
                logger.log_table("samples/table", columns=list(TABLE_COLUMNS), data=rows, step=step)
                art = wandb.Artifact(f"samples-epoch{trainer.current_epoch:03d}", type="midi")
                art.add_dir(str(epoch_dir))
                logger.experiment.log_artifact(art)
