"""Stacked LSTM melody model (V1..V6).

Input is either the float-normalised token id (``id / vocab_size``, one scalar per step: V1..V5,
the Keras models) or a learned embedding (V6). Layers have their own hidden sizes
(``[256, 512, 256]``, ``[512, 512, 512]``), so each is a separate one-layer ``nn.LSTM``, with
dropout between them. Optional causal multi-head self-attention over the last LSTM outputs
(residual) before the output projection; off in every shipped version.

Construction: ``MelodyLSTM(**fields)`` (Hydra's flat kwargs) or ``MelodyLSTM(LSTMConfig(...))``;
the validated config is ``model.config``. No cache: generation slides a window of
``context_len`` tokens (the training window) and calls ``forward(window, last_only=True)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn as nn

from musicgen.models.layers import build_config, signature_from_config

INPUT_MODES = ("float", "embedding")


@dataclass
class LSTMConfig:
    vocab_size: int = 362  # defaults: V6 (REMI, embedding 128, [512, 512, 512])
    hidden_sizes: tuple[int, ...] = (512, 512, 512)
    input_mode: str = "embedding"  # "float" (V1..V5) | "embedding" (V6)
    embedding_dim: int = 128  # used in "embedding" mode only
    dropout: float = 0.2  # between LSTM layers (and on the attention residual)
    attention_heads: int = 0  # 0 = no self-attention over the LSTM outputs
    context_len: int = 100  # training window; generation slides a window this long

    def __post_init__(self):
        # Hydra hands lists over as ListConfig; keep a plain tuple of ints
        try:
            self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        except (TypeError, ValueError):
            raise ValueError(f"hidden_sizes={self.hidden_sizes!r} must be a list of positive integers") from None
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes={list(self.hidden_sizes)} must be a non-empty list of positive integers")
        for name in ("vocab_size", "embedding_dim", "context_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode={self.input_mode!r} must be one of {INPUT_MODES}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1)")
        heads = self.attention_heads
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 0:
            raise ValueError(f"attention_heads={self.attention_heads!r} must be a non-negative integer")
        if self.attention_heads and self.hidden_sizes[-1] % self.attention_heads:
            raise ValueError(
                f"hidden_sizes[-1]={self.hidden_sizes[-1]} is not divisible by attention_heads={self.attention_heads}"
            )

    @property
    def n_layers(self) -> int:
        return len(self.hidden_sizes)


def _fp32_recurrence(device: torch.device):
    """Under CPU autocast, run the LSTM layers in fp32: oneDNN's bf16 LSTM fails on CPUs without
    bf16 instructions ("could not create a primitive descriptor for the LSTM forward propagation
    primitive", torch 2.13 on an AVX2-only EPYC), the non-oneDNN fallback is about 30x slower than
    fp32, and the recurrence would round a float-normalised input (V1..V5) to bf16. The output
    head and attention still run under autocast. CUDA autocast is left as it is."""
    if device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


class MelodyLSTM(nn.Module):
    def __init__(self, config: LSTMConfig | None = None, **kwargs):
        super().__init__()
        cfg = self.config = build_config(LSTMConfig, config, kwargs)
        if cfg.input_mode == "embedding":
            self.embed = nn.Embedding(cfg.vocab_size, cfg.embedding_dim)
            in_size = cfg.embedding_dim
        else:
            self.embed = None
            in_size = 1  # one scalar per step: id / vocab_size
        self.lstms = nn.ModuleList()
        for h in cfg.hidden_sizes:
            self.lstms.append(nn.LSTM(in_size, h, batch_first=True))
            in_size = h
        self.drop = nn.Dropout(cfg.dropout)
        if cfg.attention_heads:
            self.attn = nn.MultiheadAttention(in_size, cfg.attention_heads, dropout=cfg.dropout, batch_first=True)
        else:
            self.attn = None
        self.head = nn.Linear(in_size, cfg.vocab_size)

    @property
    def context_len(self) -> int:
        """Longest context generation feeds the model (the training window)."""
        return self.config.context_len

    def forward(self, idx: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, V), or (B, V) for the last step if ``last_only``."""
        if self.embed is None:
            x = (idx.to(self.head.weight.dtype) / self.config.vocab_size).unsqueeze(-1)  # (B, T, 1)
        else:
            x = self.embed(idx)  # (B, T, E)
        with _fp32_recurrence(x.device):
            x = x.float()
            for i, lstm in enumerate(self.lstms):
                x, _ = lstm(x)  # (B, T, H_i), zero initial state: each window is independent
                if i < len(self.lstms) - 1:
                    x = self.drop(x)
        if self.attn is not None:
            if last_only:
                # only the last query is needed, and it may see every step: no mask
                q = x[:, -1:]  # (B, 1, H)
                a, _ = self.attn(q, x, x, need_weights=False)
                x = q + self.drop(a)
            else:
                T = x.size(1)
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)  # True = may not attend
                a, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False, is_causal=True)
                x = x + self.drop(a)  # (B, T, H)
        if last_only:
            x = x[:, -1]  # (B, H)
        return self.head(x)


MelodyLSTM.__signature__ = signature_from_config(LSTMConfig)
