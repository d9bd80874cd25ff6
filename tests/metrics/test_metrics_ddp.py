"""Metric states reduce exactly across processes: 2 CPU ranks on the gloo backend.

Each rank updates with its own share of the data (unevenly: rank 0 gets more updates);
``compute()`` on every rank must equal the value one process gets from all the data.
"""

from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from musicgen.metrics import (
    CompressionRatio,
    NgramRepetition,
    NLLPerNote,
    Perplexity,
    PitchHistogram,
    SyntaxErrorRate,
)

WORLD = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batches() -> dict[str, list[tuple]]:
    """Update arguments per metric: three batches each (rank 0 gets two, rank 1 one)."""
    g = torch.Generator().manual_seed(0)

    def seqs(k: int) -> list[torch.Tensor]:
        return [torch.randint(4, 8, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g) for _ in range(k)]

    def logits_targets(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.randn(b, 6, 9, generator=g)
        targets = torch.randint(0, 9, (b, 6), generator=g)
        targets[0, :3] = -100
        return logits, targets

    return {
        "ppl": [logits_targets(2), logits_targets(3), logits_targets(1)],
        "rep4": [(seqs(3),), (seqs(2),), (seqs(4),)],
        "cr2": [(seqs(3),), (seqs(1),), (seqs(5),)],
        "cr2_micro": [(seqs(2),), (seqs(2),), (seqs(2),)],
        "pitch": [(torch.randint(50, 80, (20,), generator=g),) for _ in range(3)],
        "nll_note": [(torch.rand(3, generator=g) * 10, 3 + i) for i in range(3)],
        "syntax": [(i, 10 + i) for i in range(3)],
    }


def _make(name: str, **kwargs) -> object:
    ref = torch.zeros(128)
    ref[55:75] = torch.arange(1.0, 21.0)
    return {
        "ppl": lambda: Perplexity(**kwargs),
        "rep4": lambda: NgramRepetition(4, **kwargs),
        "cr2": lambda: CompressionRatio(2, **kwargs),
        "cr2_micro": lambda: CompressionRatio(2, average="micro", **kwargs),
        "pitch": lambda: PitchHistogram(ref, pitch_range=(57, 72), **kwargs),
        "nll_note": lambda: NLLPerNote(**kwargs),
        "syntax": lambda: SyntaxErrorRate(**kwargs),
    }[name]()


def _as_dict(value) -> dict[str, torch.Tensor]:
    return value if isinstance(value, dict) else {"value": value}


def _worker(rank: int, port: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        for name, batches in _batches().items():
            metric = _make(name)
            mine = batches[:2] if rank == 0 else batches[2:]
            for args in mine:
                metric.update(*args)
            got = _as_dict(metric.compute())

            single = _make(name, sync_on_compute=False)  # one process, all the data
            for args in batches:
                single.update(*args)
            expected = _as_dict(single.compute())

            for key, value in expected.items():
                assert torch.allclose(got[key], value, rtol=1e-5, atol=1e-7), (rank, name, key, got[key], value)
            # and the sync really happened: this rank's data alone gives another value
            local = _make(name, sync_on_compute=False)
            for args in mine:
                local.update(*args)
            local_value = _as_dict(local.compute())
            assert any(not torch.allclose(local_value[k], expected[k]) for k in expected), (rank, name)
    finally:
        dist.destroy_process_group()


def test_metric_states_reduce_across_two_processes():
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)
