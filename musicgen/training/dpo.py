"""Direct Preference Optimisation (Rafailov et al. 2023) of a trained run from preference pairs:
``objective=dpo objective.module.init_from=<run>``.

The network starts from the run's weights; a frozen copy of them is the reference. For a pair
(chosen piece, rejected piece) the loss is

    -log sigmoid(beta * ((log p(chosen) - log p_ref(chosen)) - (log p(rejected) - log p_ref(rejected))))

with ``log p`` a piece's summed token log-probability after BOS (its EOS included where it has
one): the network learns to prefer the chosen pieces more than the reference did, and ``beta``
sets how far it may move from the reference. Validation stays the causal objective's (``val/loss``
is the NLL per token of the real validation pieces), so a collapse shows there; it is watched, not
selected on: the run's ``best.ckpt`` is its latest checkpoint (the real pieces' NLL is expected to
rise a little as the network moves away from maximum likelihood).

Where the pairs come from (``preferences``), always a ``Preferences`` list of ``(chosen,
rejected)`` pieces, each its token ids from BOS (``[BOS, ..., EOS]``, without EOS where a piece
was cut or a sample did not end):

- ``critic``: a critic standing in for listeners (``musicgen.metrics.critic``): trained on the
  run's untransposed training pieces (as many, drawn at random) against ``critic_samples``
  samples of the starting model, it then draws ``candidates`` further samples (another seed)
  for each of ``pairs`` pairs, cuts them to the shortest one's length, and chooses the piece it
  finds the most real over the one it finds the least real (with 2 candidates: the more real of
  two). The pair trained on is what the critic judged: each piece's tokens up to the last note it
  read (``judged_prefix``), no EOS, so that the tails it never read and where the pieces end are
  no part of the preference (trained on whole pieces, DPO learnt to end later: the samples grew
  longer and ended at EOS less often, ``docs/guide/evaluation.md``). Critic preferences are not
  human ones: the fine-tuned model learns what this critic rewards.
- a path to a listening study's SQLite file (``musicgen.data.preferences``): its answered pairs
  (ties left out), the preferred piece chosen, each MIDI file (relative to the file's folder)
  encoded with the run's tokeniser.

The pairs trained on are written to ``<output_dir>/preferences.json`` with their source.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from musicgen.api import MusicModel
from musicgen.config import sampling_config
from musicgen.constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID
from musicgen.data.preferences import preference_pairs
from musicgen.errors import ConfigError
from musicgen.fs import atomic_write_text
from musicgen.metrics.critic import best_and_worst, fit_critic, read_alike
from musicgen.metrics.samples import body, note_count
from musicgen.training.modules import CausalLM

log = logging.getLogger(__name__)

#: ``(chosen, rejected)`` pieces, each its token ids from BOS: what the DPO objective trains on.
Preferences = list[tuple[list[int], list[int]]]


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean DPO loss of a batch of pairs, and each pair's margin
    ``(policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)`` (summed log-probabilities, (B,))."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean(), margin


def sequence_logp(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,): each row's summed log-probability of its targets ``y`` (B, T) given inputs ``x`` (B, T);
    targets equal to ``IGNORE_INDEX`` (padding) count nothing."""
    logp = net(x).float().log_softmax(-1)  # (B, T, V)
    mask = y != IGNORE_INDEX
    picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (picked * mask).sum(-1)


def pad_pieces(pieces: Sequence[Sequence[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (B, T) of pieces given from BOS: ``x`` a piece without its last token,
    ``y`` without its first, both cut to ``max_len`` (the network's window), padded with PAD and
    ``IGNORE_INDEX``."""
    t = min(max_len, max(len(p) - 1 for p in pieces))
    x = torch.full((len(pieces), t), PAD_ID, dtype=torch.long)
    y = torch.full((len(pieces), t), IGNORE_INDEX, dtype=torch.long)
    for i, p in enumerate(pieces):
        p = torch.as_tensor(list(p)[: t + 1], dtype=torch.long)
        x[i, : len(p) - 1], y[i, : len(p) - 1] = p[:-1], p[1:]
    return x, y


def pair_batches(pairs: Preferences, batch_size: int, max_len: int, seed: int) -> DataLoader:
    """Shuffled batches of pairs, each one ``(x, y)`` of 2B rows: the B chosen pieces, then their
    B rejected ones."""
    def collate(batch):
        return pad_pieces([c for c, _ in batch] + [r for _, r in batch], max_len)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(pairs, batch_size=batch_size, shuffle=True, collate_fn=collate, generator=gen)


# ----------------------------------------------------------------------------- preferences


def judged_prefix(tokenizer, ids: Sequence[int], want: int) -> list[int]:
    """The shortest prefix of ``ids`` whose decoded piece holds ``want`` notes: the tokens of what
    the critic read of it (``read_alike``), which keeps a piece's first notes."""
    ids = list(ids)
    lo, hi = 0, len(ids)  # notes decoded grow with the prefix: the first length that has them all
    while lo < hi:
        mid = (lo + hi) // 2
        if note_count(tokenizer.decode(ids[:mid])) >= want:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]


def critic_preferences(start: MusicModel, train, pairs: int, critic_samples: int, sampling: Any,
                       max_new_tokens: int, seed: int, candidates: int = 2) -> Preferences:
    """``pairs`` pairs of the starting model's samples, of each group of ``candidates`` the piece a
    critic finds the most real chosen over the one it finds the least real (see the module
    docstring); ``train``: the run's training split (``SplitTokens``)."""
    tok = start.tokenizer
    originals = train.originals()
    if len(originals) < 2:
        raise ConfigError(f"preferences=critic needs at least 2 training pieces, the split has {len(originals)}")
    real_idx = np.random.default_rng(seed).choice(originals, size=min(len(originals), critic_samples), replace=False)
    real = [tok.decode(body(train.doc(i))) for i in real_idx]
    fake = start.generate(critic_samples, sampling=sampling, seed=seed, max_new_tokens=max_new_tokens, batch_size=32)
    critic = fit_critic(real, [tok.decode(p.ids) for p in fake], seed=seed)
    drawn = start.generate(candidates * pairs, sampling=sampling, seed=seed + 1, max_new_tokens=max_new_tokens,
                           batch_size=32)
    out: Preferences = []
    for i in range(pairs):
        group = drawn[i::pairs]  # the i-th of each block of ``pairs`` samples
        scores = [tok.decode(p.ids) for p in group]
        chosen = best_and_worst(critic, scores)
        if chosen is not None:  # a group the critic finds all alike prefers nothing
            read = read_alike(scores)
            best, worst = ([BOS_ID, *judged_prefix(tok, group[j].ids, note_count(read[j]))] for j in chosen)
            out.append((best, worst))
    return out


def study_preferences(path: Path | str, tokenizer) -> Preferences:
    """The answered pairs of a listening study's SQLite file (``musicgen.data.preferences``), the
    preferred piece chosen, each MIDI file (relative to the file's folder) encoded by ``tokenizer``."""
    def doc(piece) -> list[int]:
        return [BOS_ID, *tokenizer.encode(symusic.Score(piece.midi)), EOS_ID]
    return [(doc(p.preferred), doc(p.rejected)) for p in preference_pairs(path, Path(path).parent)]


# ----------------------------------------------------------------------------- the module


class DPOLM(CausalLM):
    """The DPO objective (see the module docstring): trains on preference pairs, validates as
    ``CausalLM``. The reference network is a frozen copy of the starting weights, kept out of the
    module's parameters and checkpoints.

    Args:
        init_from: the starting run (a run directory or ``.ckpt``), trained with this run's tokeniser
            and network shape.
        beta: DPO's temperature (how far the network may move from the reference).
        pairs: preference pairs drawn (``preferences=critic``; a study gives what it has).
        preferences: ``critic`` or the path of a listening study's SQLite file.
        critic_samples: samples of the starting model the critic is trained on.
        candidates: samples drawn for each critic pair, the most real chosen over the least real.
        max_new_tokens: the samples' length cap (at most the window: longer pieces are cut to it).
        sampling: the samples' sampling settings (the ``sampling`` group).
        seed: the samples' and the pairs' order's seed.
        output_dir: where ``preferences.json`` is written (None: not written).
    """

    def __init__(self, net: torch.nn.Module, init_from: str | None = None, beta: float = 0.1, pairs: int = 256,
                 preferences: str = "critic", critic_samples: int = 128, candidates: int = 2,
                 max_new_tokens: int = 256,
                 sampling: Any = None, seed: int = 0, output_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        if not init_from:
            raise ConfigError("objective=dpo needs objective.module.init_from=<run dir or .ckpt>: "
                              "the run it starts from")
        if not beta > 0 or pairs < 1 or critic_samples < 2 or candidates < 2:
            raise ConfigError(f"objective=dpo: need beta > 0, pairs >= 1, critic_samples >= 2, candidates >= 2; got "
                              f"beta={beta}, pairs={pairs}, critic_samples={critic_samples}, candidates={candidates}")
        self._start = start = MusicModel.load(init_from)
        meta = start.metadata
        if meta.conditioning or meta.infill or meta.objective == "seq2one":
            raise ConfigError(f"init_from={init_from}: DPO fine-tunes an unconditioned causal run (no conditioning, "
                              "no infilling, not seq2one)")
        if self.metadata.get("tokenizer") not in (None, meta.tokenizer):
            raise ConfigError(f"init_from={init_from} was trained with another tokeniser than this run's: "
                              "pass the starting run's version, data and tokenizer settings")
        try:
            self.net.load_state_dict(start.net.state_dict())
        except RuntimeError as e:
            raise ConfigError(f"init_from={init_from}: its network does not fit this run's model settings "
                              f"(pass the starting run's model settings): {str(e).splitlines()[0]}") from e
        reference = copy.deepcopy(self.net).eval().requires_grad_(False)
        self._frozen = {"reference": reference}  # a plain dict: no parameters, no state_dict keys
        if isinstance(sampling, DictConfig):
            sampling = OmegaConf.to_container(sampling, resolve=True)
        self._sampling = sampling_config(sampling) if sampling is not None else None
        self.preference_pairs: Preferences = []

    @property
    def reference(self) -> torch.nn.Module:
        return self._frozen["reference"]

    def make_preferences(self, train) -> Preferences:
        h = self.hparams
        if h.preferences == "critic":
            return critic_preferences(self._start, train, h.pairs, h.critic_samples, self._sampling,
                                      h.max_new_tokens, h.seed, h.candidates)
        if Path(h.preferences).is_file():
            return study_preferences(h.preferences, self._start.tokenizer)
        raise ConfigError(f"objective.module.preferences={h.preferences!r} must be 'critic' or the path of a "
                          "listening study's SQLite file")

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit" or self.preference_pairs:
            return
        dm = self.trainer.datamodule
        device = self.trainer.strategy.root_device
        self._start.net.to(device)
        self.preference_pairs = self.make_preferences(dm.cache.splits["train"])
        self._start.net.to("cpu")
        if not self.preference_pairs:
            raise ConfigError(f"preferences={self.hparams.preferences}: no preference pair to train on")
        log.info("DPO on %d preference pairs (%s)", len(self.preference_pairs), self.hparams.preferences)
        if self.hparams.output_dir and self.trainer.is_global_zero:
            atomic_write_text(Path(self.hparams.output_dir) / "preferences.json", json.dumps(
                {"source": self.hparams.preferences, "init_from": str(self.hparams.init_from),
                 "beta": self.hparams.beta, "pairs": self.preference_pairs}))
        for cb in self.trainer.checkpoint_callbacks:  # val/loss is watched beside the target, not selected on
            if cb.monitor == "val/loss":
                log.info("DPO: %s keeps the latest checkpoint as best.ckpt, not the lowest val/loss", cb.dirpath)
                cb.monitor = None
        loader = pair_batches(self.preference_pairs, dm.batch_size, dm.seq_len, self.hparams.seed)
        # the DataModule keeps validation (the causal windows of the real validation pieces), the
        # callbacks' view of the data and the tokeniser; its training batches become the pairs
        dm.train_dataloader = lambda: loader

    def on_fit_start(self) -> None:
        self.reference.to(self.device)

    def pair_margins(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The DPO loss and margins of a batch of 2B rows (B chosen, then B rejected)."""
        policy = sequence_logp(self, x, y)
        with torch.no_grad():
            ref = sequence_logp(self.reference, x, y)
        b = len(x) // 2
        return dpo_loss(policy[:b], policy[b:], ref[:b], ref[b:], self.hparams.beta)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, margin = self.pair_margins(x, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"DPO loss is {loss.item()} at global step {self.global_step}: lower optim.lr "
                                     "or objective.module.beta")
        self.train_loss.update(loss.detach(), len(margin))
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/dpo_margin", margin.mean(), on_step=True, on_epoch=False)
        self.log("train/dpo_accuracy", (margin > 0).float().mean(), on_step=True, on_epoch=False)
        return loss


__all__ = ["DPOLM", "Preferences", "critic_preferences", "dpo_loss", "pad_pieces", "sequence_logp",
           "study_preferences"]
