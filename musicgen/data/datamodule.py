"""The MIDI LightningDataModule: sources -> split -> augment -> tokeniser -> cache -> windows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from musicgen.data import cache as token_cache
from musicgen.data.augment import AugmentConfig
from musicgen.data.corpus import export_corpus
from musicgen.data.sources import (
    CORPORA,
    MAESTRO_SPLITS,
    DataPathError,
    document_name,
    list_maestro,
    list_midi_files,
    load_manifest,
)
from musicgen.data.split import (
    assign_splits,
    check_fractions,
    merged_groups,
    near_duplicate_groups,
    read_pieces,
    subsample,
)
from musicgen.data.windows import ScoringWindows, TokenWindows, check_window_args
from musicgen.errors import ConfigError
from musicgen.metrics.similarity import SPLIT_THRESHOLD
from musicgen.tokenizers.base import ExtendedTokenizer, MusicTokenizer

log = logging.getLogger(__name__)

#: The memo of content keys and melody contours (``musicgen.data.split.read_pieces``) in the cache folder.
CONTENT_KEYS_FILE = "content_keys.json"


def _batched(batch):
    """``TokenWindows.__getitems__`` (and ``ScoringWindows.__getitems__``) already returns a collated batch."""
    return batch


class EpochSampler(Sampler[int]):
    """This rank's window indices for one epoch, in an order that depends only on (seed, epoch).

    ``shuffle``: a permutation drawn with seed ``(seed, epoch)``; else ``0..n-1``. The epoch is
    ``epoch_source()`` when given (the DataModule passes the trainer's ``current_epoch``: the
    value Lightning hands to ``set_epoch`` is one ahead after resuming from a checkpoint written
    at validation end), else the last ``set_epoch``. It is read when an epoch's iteration starts.
    With ``world_size`` > 1 each rank takes every ``world_size``-th index; a shuffled (training)
    order is first padded by repeating its start, so every rank runs the same number of batches,
    as ``DistributedSampler`` does; a sequential (validation) order is not, so every window
    counts once in the loss.

    ``resume(epoch, skip)``: in that epoch the first ``skip`` indices are left out, because a run
    interrupted in the middle of it had already trained on them.
    """

    def __init__(
        self,
        n: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch_source = epoch_source
        self.epoch = 0  # the epoch whose order is being served
        self._resume_epoch, self._skip = -1, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, skip: int) -> None:
        self._resume_epoch, self._skip = epoch, skip

    def _indices(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.rank, self.n, self.world_size)
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        per_rank = -(-self.n // self.world_size)  # ceil
        order = np.resize(order, per_rank * self.world_size)  # pads by repeating the start
        return order[self.rank :: self.world_size]

    def __iter__(self):
        if self.epoch_source is not None:
            self.epoch = self.epoch_source()
        idx = self._indices()
        if self.epoch == self._resume_epoch:
            idx = idx[self._skip :]
        return iter(idx.tolist())

    def __len__(self) -> int:
        """Of the whole epoch (Lightning counts the batches of a resumed epoch itself)."""
        if not self.shuffle:
            return len(range(self.rank, self.n, self.world_size))
        return -(-self.n // self.world_size)


def included(by_split: dict[str, list[tuple[str, Path]]], prefixes: Sequence[str]) -> dict[str, list[tuple[str, Path]]]:
    """The files of each split whose names start with one of ``prefixes`` (``data.include``); a
    prefix that matches no file is an error (a misspelt collection would otherwise train on less)."""
    prefixes = tuple(prefixes)
    unmatched = [p for p in prefixes if not any(rel.startswith(p) for fl in by_split.values() for rel, _ in fl)]
    if unmatched:
        some = sorted({"/".join(rel.split("/")[:2]) + "/" for fl in by_split.values() for rel, _ in fl})[:8]
        raise ConfigError(f"data.include: {unmatched} match no file; folders there include {some}")
    out = {s: [(rel, p) for rel, p in fl if rel.startswith(prefixes)] for s, fl in by_split.items()}
    log.info("data.include %s: %s files kept (%s)", list(prefixes), sum(map(len, out.values())),
             ", ".join(f"{s} {len(fl)}" for s, fl in out.items()))
    return out


class MidiDataModule(L.LightningDataModule):
    """Serves token windows from the embedded corpora, a user folder and/or MAESTRO.

    Args:
        tokenizer: an untrained tokeniser; after ``setup`` ``self.tokenizer`` is the trained one.
        corpora: embedded corpora under ``data_dir`` (exported by ``musicgen.prepare`` if missing).
        root: a folder of the user's MIDI files; replaces ``corpora`` when set.
        maestro_root: a MAESTRO v3 folder, added to the above with its own csv split.
        max_files: cap on files taken from each source (null: all), chosen by a stable hash order.
        max_files_per_corpus: per-source caps that replace ``max_files`` (e.g. ``{chorales: null}``).
        include: keep only the documents whose names start with one of these prefixes (e.g.
            ``folk/oneills1850/``: one collection), dropped after the cap and the split, so each kept
            file lands on the side it lands on without the filter: a collection alone and inside a
            pool of collections has the same test pieces. None: every file.
        val_frac / test_frac: shares of the split; copies of one piece (a chorale's versions, one
            tune in two collections) land on one side (``musicgen.data.split``). MAESTRO keeps its own.
        near_duplicates: similarity (``musicgen.metrics.similarity``) at which two pieces count as
            variants of one tune and are kept on one side too; None: exact copies only.
        mode / seq_len / stride / pack: see ``musicgen.data.windows``; they shape the training windows.
            Validation and test score every token once: in causal mode with evaluation's plan
            (``ScoringWindows``, each document on its own), in seq2one mode with stride 1.
        conditioning: the ``conditioning`` config of a conditioned run (``musicgen.data.prefixed``):
            attribute tokens after each document's BOS, dropped at random in training; after
            ``setup`` ``self.conditioner`` holds them and ``checkpoint_metadata`` their vocabulary.
            None or empty: no prefix, the streams of the cache as they are.
        infill: the ``infill`` config of an infilling run (``musicgen.data.fim``): ``rate`` of the
            training windows rearranged prefix, suffix, middle around whole bars, with four sentinel
            ids after the tokeniser's (``checkpoint_metadata["infill"]``). None or rate 0: none.
    """

    def __init__(
        self,
        tokenizer: MusicTokenizer,
        corpora: Sequence[str] = ("folk",),
        root: str | None = None,
        maestro_root: str | None = None,
        data_dir: str = "data",
        cache_dir: str | None = None,
        description: str = "",
        max_files: int | None = None,
        max_files_per_corpus: dict[str, int | None] | None = None,
        include: Sequence[str] | None = None,
        val_frac: float = 0.1,
        test_frac: float = 0.1,
        near_duplicates: float | None = SPLIT_THRESHOLD,
        seed: int = 0,
        augment: dict[str, Any] | None = None,
        mode: str = "causal",
        seq_len: int = 256,
        stride: int = 64,
        pack: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        persistent_workers: bool = False,
        pin_memory: bool = False,
        encode_workers: int = 1,
        progress: bool = True,
        conditioning: dict[str, Any] | None = None,
        infill: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_fractions(val_frac, test_frac)
        if near_duplicates is not None and not 0.0 < near_duplicates <= 1.0:
            raise ValueError(f"data.near_duplicates={near_duplicates} must be in (0, 1], or null for exact copies only")
        unknown = set(corpora) - set(CORPORA)
        if unknown:
            raise ValueError(f"data.corpora has unknown {sorted(unknown)}; embedded corpora are {list(CORPORA)}")
        self.tokenizer = tokenizer  # replaced by the trained one in setup()
        self._untrained_tokenizer = tokenizer  # what the cache key is computed from
        self.corpora = list(corpora)
        self.root = root
        self.maestro_root = maestro_root
        self.data_dir = Path(data_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else self.data_dir / "cache"
        self.description = description
        self.max_files = max_files
        self.max_files_per_corpus = dict(max_files_per_corpus or {})
        self.include = None if include is None else tuple(include)
        if self.include is not None and (not self.include or not all(isinstance(p, str) and p for p in self.include)):
            raise ConfigError(f"data.include={list(self.include)} must be a non-empty list of name prefixes "
                             "(e.g. [folk/oneills1850/]), or null for every file")
        self.val_frac, self.test_frac, self.seed = val_frac, test_frac, seed
        self.near_duplicates = near_duplicates
        self.augment = AugmentConfig(**(augment or {}))
        self.mode, self.seq_len, self.stride, self.pack = mode, seq_len, stride, pack
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers and num_workers > 0
        self.pin_memory = pin_memory
        self.encode_workers = encode_workers
        self.progress = progress
        self.conditioning = dict(conditioning or {})
        self.conditioner = None  # musicgen.data.prefixed.Conditioner of a conditioned run, after setup
        self.infill = dict(infill or {})
        self.infill_vocab = None  # musicgen.control.infilling.InfillVocab of an infilling run, after setup
        self.checkpoint_metadata: dict[str, Any] = {}  # stored in the checkpoint's metadata by the module
        self.file_paths: dict[str, Path] = {}  # document name -> source file, of the last source_files()
        self.cache: token_cache.TokenCache | None = None
        self.split_groups: dict[str, int] = {}  # merged_groups of the last source_files()
        self.datasets: dict[str, TokenWindows | ScoringWindows] = {}
        self.train_sampler: EpochSampler | None = None
        self._resume: dict[str, int] | None = None  # data position read from a checkpoint
        check_window_args(mode, seq_len, stride)

    # ------------------------------------------------------------------ sources
    def _cap(self, source: str) -> int | None:
        return self.max_files_per_corpus.get(source, self.max_files)

    def source_files(self) -> dict[str, list[tuple[str, Path]]]:
        """Files per split, named by ``<source>/<relative path>``, split by group key (the content
        keys are remembered in the cache folder, so only new or changed files are read)."""
        by_split: dict[str, list[tuple[str, Path]]] = {"train": [], "val": [], "test": []}
        hashed: list[tuple[str, Path]] = []
        if self.root is not None:
            root = Path(self.root)
            files = [(document_name("user", p.relative_to(root)), p) for p in list_midi_files(root)]
            hashed += subsample(files, self._cap("user"), self.seed)
        else:
            for name in self.corpora:
                files = [(document_name(name, rel), p) for rel, p in self._embedded(name)]
                hashed += subsample(files, self._cap(name), self.seed)
        exact, contours = read_pieces(hashed, self.cache_dir / CONTENT_KEYS_FILE)
        keys = exact
        if self.near_duplicates is not None:
            keys = near_duplicate_groups(exact, contours, self.near_duplicates)
        self.split_groups = {**merged_groups(keys, exact), "near_duplicates": self.near_duplicates}
        log.info(
            "split: %d groups of copies or variants hold %d of %d files (%d of them join near-duplicates at "
            "similarity >= %s); each group stays on one side",
            self.split_groups["groups_merged"], self.split_groups["files_in_merged_groups"], len(hashed),
            self.split_groups["near_duplicate_groups"], self.near_duplicates,
        )
        for s, fl in assign_splits(hashed, self.seed, self.val_frac, self.test_frac, keys).items():
            by_split[s] += fl
        if self.maestro_root is not None:
            root = Path(self.maestro_root)
            for csv_split, paths in list_maestro(root).items():
                files = [(document_name("maestro", p.relative_to(root)), p) for p in paths]
                by_split[MAESTRO_SPLITS[csv_split]] += subsample(files, self._cap("maestro"), self.seed)
        if not any(by_split.values()):
            where = self.root or self.maestro_root or self.data_dir
            raise ValueError(f"no MIDI files found in {where}")
        if self.include is not None:
            by_split = included(by_split, self.include)
        return by_split

    def _embedded(self, name: str) -> list[tuple[str, Path]]:
        """The files of an embedded corpus. One exported only in part (``prepare max_files=`` or
        ``limit=``, or an earlier capped run) is first completed with the pieces this run's cap
        chooses, so a run never trains on fewer files than it asked for."""
        cdir = self.data_dir / name
        try:
            manifest = load_manifest(cdir)
        except DataPathError:
            manifest = None
        if manifest is None or not manifest.complete:
            manifest = export_corpus(name, cdir, progress=self.progress, max_files=self._cap(name), seed=self.seed)
        return list(zip(manifest.files, manifest.paths))

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        if self.cache is None:
            self._build_cache()

    def _build_cache(self) -> token_cache.TokenCache:
        files = self.source_files()
        self.file_paths = {rel: p for fl in files.values() for rel, p in fl}
        return token_cache.build_or_load(
            self.cache_dir,
            files,
            self._untrained_tokenizer,
            self.augment,
            self.seed,
            workers=self.encode_workers,
            progress=self.progress,
            groups=self.split_groups,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.cache is not None:
            return
        self.cache = self._build_cache()
        self.tokenizer = self.cache.tokenizer
        if self.conditioning.get("attributes"):
            from musicgen.data.prefixed import Conditioner

            names = {s: st.names for s, st in self.cache.splits.items()}
            self.conditioner = Conditioner(self.conditioning, names, self.file_paths, self.tokenizer.vocab_size,
                                           self.seed)
            self.checkpoint_metadata["conditioning"] = self.conditioner.vocab.to_dict()
            self.tokenizer = ExtendedTokenizer(self.tokenizer, len(self.conditioner.vocab))
        if self.infill.get("rate"):
            from musicgen.control.infilling import SENTINELS, InfillVocab, check_config
            from musicgen.tokenizers.bars import bar_starts

            rate, max_bars = check_config(self.infill)
            self.infill_vocab = InfillVocab(self.tokenizer.vocab_size, rate, max_bars)
            self._is_bar = bar_starts(self.tokenizer, self.infill_vocab.base)
            self.checkpoint_metadata["infill"] = self.infill_vocab.to_dict()
            self.tokenizer = ExtendedTokenizer(self.tokenizer, len(SENTINELS))
        for s, st in self.cache.splits.items():
            self.datasets[s] = self._dataset(s, st)
        if len(self.datasets["train"]) == 0:
            raise ValueError(
                f"the training split has {len(self.cache.splits['train'].tokens)} tokens, fewer than one window "
                f"of seq_len={self.seq_len}: add files or lower data.seq_len"
            )
        stats = self.datasets["train"].target_stats()
        log.info(
            "%strain windows: %d (%s, %s); targets: %.1f%% padding, %.1f%% separators",
            f"{self.description}: " if self.description else "", stats["windows"], self.mode,
            "packed" if self.pack else "padded",
            100 * stats["pad_share"], 100 * stats["separator_share"],
        )

    def _dataset(self, split: str, st: token_cache.SplitTokens) -> Dataset:
        """Training windows as configured; validation and test windows that count each token once,
        as evaluation does, whatever the training stride (an empty split gives an empty dataset)."""
        if split == "train" and self.infill_vocab is not None:  # a share of the training windows rearranged
            from musicgen.data.fim import InfillWindows

            if self.conditioner is None:
                return InfillWindows(TokenWindows(st.tokens, st.offsets, self.seq_len, self.stride, "causal"),
                                     self.infill_vocab, self._is_bar, self.seed)
            cv = self.conditioner.vocab
            return InfillWindows(self.conditioner.dataset(split, st, self.seq_len, self.stride, "causal", True),
                                 self.infill_vocab, self._is_bar, self.seed, range(cv.base, cv.vocab_size))
        if self.conditioner is not None:
            return self.conditioner.dataset(split, st, self.seq_len, self.stride, self.mode, self.pack)
        if split == "train":
            return TokenWindows(st.tokens, st.offsets, self.seq_len, self.stride, self.mode, self.pack)
        if self.mode == "causal":
            return ScoringWindows(st.tokens, st.offsets, self.seq_len)
        return TokenWindows(st.tokens, st.offsets, self.seq_len, 1, self.mode, self.pack)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.cache is None:
            self.setup()
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        epoch_source = (lambda: trainer.current_epoch) if trainer is not None else None
        sampler = EpochSampler(len(self.datasets[split]), shuffle, self.seed, rank, world, epoch_source)
        if split == "train":
            self.train_sampler = sampler
            if self._resume is not None:
                sampler.resume(self._resume["epoch"], self._resume["batches_done"] * self.batch_size)
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=_batched,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory,
            # worker seeds come from here, not from the global RNG, which dropout uses
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    # ------------------------------------------------------------------ exact resume
    def state_dict(self) -> dict[str, int]:
        """The data position, stored in every checkpoint: the epoch whose order the training batches
        follow and how many of its batches this rank has trained on."""
        if self.trainer is None or self.train_sampler is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return {"epoch": self.train_sampler.epoch, "batches_done": done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if not state_dict:
            return
        self._resume = dict(state_dict)
        if self.train_sampler is not None:
            self.train_sampler.resume(state_dict["epoch"], state_dict["batches_done"] * self.batch_size)
