"""The MIDI LightningDataModule: sources -> split -> augment -> tokeniser -> cache -> windows."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import lightning as L
from torch.utils.data import DataLoader

from musicgen.data import cache as token_cache
from musicgen.data.augment import AugmentConfig
from musicgen.data.split import check_fractions, split_files, subsample
from musicgen.data.windows import TokenWindows, check_window_args
from musicgen.tokenizers.base import MusicTokenizer

log = logging.getLogger(__name__)

EMBEDDED_CORPORA = ("folk", "chorales")
MAESTRO_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def _batched(batch):
    """``TokenWindows.__getitems__`` already returns a collated batch."""
    return batch


class MidiDataModule(L.LightningDataModule):
    """Serves token windows from the embedded corpora, a user folder and/or MAESTRO.

    Args:
        tokenizer: an untrained tokeniser; after ``setup`` ``self.tokenizer`` is the trained one.
        corpora: embedded corpora under ``data_dir`` (exported by ``musicgen.prepare`` if missing).
        root: a folder of the user's MIDI files; replaces ``corpora`` when set.
        maestro_root: a MAESTRO v3 folder, added to the above with its own csv split.
        max_files: cap on files taken from each source (null: all), chosen by a stable hash order.
        max_files_per_corpus: per-source caps that replace ``max_files`` (e.g. ``{chorales: null}``).
        mode / seq_len / stride / pack: see ``musicgen.data.windows``.
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
        val_frac: float = 0.1,
        test_frac: float = 0.0,
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
    ) -> None:
        super().__init__()
        check_fractions(val_frac, test_frac)
        unknown = set(corpora) - set(EMBEDDED_CORPORA)
        if unknown:
            raise ValueError(f"data.corpora has unknown {sorted(unknown)}; embedded corpora are {list(EMBEDDED_CORPORA)}")
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
        self.val_frac, self.test_frac, self.seed = val_frac, test_frac, seed
        self.augment = AugmentConfig(**(augment or {}))
        self.mode, self.seq_len, self.stride, self.pack = mode, seq_len, stride, pack
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.persistent_workers = persistent_workers and num_workers > 0
        self.pin_memory = pin_memory
        self.encode_workers = encode_workers
        self.progress = progress
        self.cache: token_cache.TokenCache | None = None
        self.datasets: dict[str, TokenWindows] = {}
        check_window_args(mode, seq_len, stride)

    # ------------------------------------------------------------------ sources
    def _cap(self, source: str) -> int | None:
        return self.max_files_per_corpus.get(source, self.max_files)

    def source_files(self) -> dict[str, list[tuple[str, Path]]]:
        """Files per split, named by ``<source>/<relative path>``."""
        from musicgen.data import corpus

        by_split: dict[str, list[tuple[str, Path]]] = {"train": [], "val": [], "test": []}
        hashed: list[tuple[str, Path]] = []
        if self.root is not None:
            root = Path(self.root)
            files = [(f"user/{p.relative_to(root).as_posix()}", p) for p in corpus.list_midi_files(root)]
            hashed += subsample(files, self._cap("user"), self.seed)
        else:
            for name in self.corpora:
                files = [(f"{name}/{rel}", p) for rel, p in self._embedded(name)]
                hashed += subsample(files, self._cap(name), self.seed)
        for s, fl in split_files(hashed, self.seed, self.val_frac, self.test_frac).items():
            by_split[s] += fl
        if self.maestro_root is not None:
            root = Path(self.maestro_root)
            for csv_split, paths in corpus.list_maestro(root).items():
                files = [(f"maestro/{p.relative_to(root).as_posix()}", p) for p in paths]
                by_split[MAESTRO_SPLITS[csv_split]] += subsample(files, self._cap("maestro"), self.seed)
        if not any(by_split.values()):
            where = self.root or self.maestro_root or self.data_dir
            raise ValueError(f"no MIDI files found in {where}")
        return by_split

    def _embedded(self, name: str) -> list[tuple[str, Path]]:
        from musicgen.data import corpus

        cdir = self.data_dir / name
        manifest = cdir / "manifest.json"
        if not manifest.exists():
            log.info("embedded corpus %r not prepared yet: exporting it to %s", name, cdir)
            corpus.export_corpus(name, cdir, progress=self.progress)
        files = json.loads(manifest.read_text())["files"]
        return [(rel, cdir / rel) for rel in files]

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        if self.cache is None:
            self._build_cache()

    def _build_cache(self) -> token_cache.TokenCache:
        return token_cache.build_or_load(
            self.cache_dir,
            self.source_files(),
            self._untrained_tokenizer,
            self.augment,
            self.seed,
            workers=self.encode_workers,
            progress=self.progress,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.cache is not None:
            return
        self.cache = self._build_cache()
        self.tokenizer = self.cache.tokenizer
        for s, st in self.cache.splits.items():
            self.datasets[s] = TokenWindows(st.tokens, st.offsets, self.seq_len, self.stride, self.mode, self.pack)
        if len(self.datasets["train"]) == 0:
            raise ValueError(
                f"the training split has {len(self.cache.splits['train'].tokens)} tokens, fewer than one window "
                f"of seq_len={self.seq_len}: add files or lower data.seq_len"
            )
        stats = self.datasets["train"].target_stats()
        log.info(
            "train windows: %d (%s, %s); targets: %.1f%% padding, %.1f%% separators",
            stats["windows"], self.mode, "packed" if self.pack else "padded",
            100 * stats["pad_share"], 100 * stats["separator_share"],
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.cache is None:
            self.setup()
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=_batched,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
