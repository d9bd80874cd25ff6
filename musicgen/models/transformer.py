"""Decoder-only Transformer (V7/V8): pre-norm RMSNorm, RoPE, SwiGLU, tied embeddings, KV cache.

Same shape and parameter count as ``transformers.LlamaForCausalLM`` with tied embeddings
(embedding V*d + per layer 4d^2 + 3*d*d_ff + 2d + final norm d; 34.09M at the defaults), with
the projections fused for speed: ``qkv`` is ``cat([q, k, v])`` and ``w13`` is
``cat([gate, up])`` along the output dimension. RoPE uses the rotate-half pairing, as HF does.

Construction: ``MusicTransformer(**fields)`` (what Hydra's ``_target_`` with flat kwargs does) or
``MusicTransformer(TransformerConfig(...))``; either way the validated config is ``model.config``.

Inference (gpt-fast style): ``setup_cache(B, max_len)`` preallocates per-layer K/V buffers, then
``forward(idx, input_pos)`` writes k/v at ``input_pos`` and attends over the cache with a causal
mask (eagerly over its filled part only; compiled, over the whole static buffer). ``forward(idx)``
without ``input_pos`` is the training path and never touches the cache. ``torch.compile`` is the
caller's business; to compile decoding, set the cache up once and keep it (compile guards on it).

Options, off by default: ``qk_norm`` (RMSNorm on each head's queries and keys) and
``document_mask`` (the training forward keeps attention inside each BOS-delimited document of a
packed window, RoPE positions restarting at each BOS, so a packed window computes what its
documents would alone). Cached decoding attends over its whole cache either way: a generation
context is one document (it starts at BOS; the engine stops a row at EOS), where the two agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from musicgen.constants import BOS_ID
from musicgen.models.layers import (
    Linear,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    apply_rope,
    build_config,
    signature_from_config,
)


@dataclass
class TransformerConfig:
    vocab_size: int = 1024
    n_layers: int = 8
    n_heads: int = 8
    d_model: int = 512
    d_ff: int = 2048
    max_seq_len: int = 512  # generation window; RoPE tables start this long and extend on demand
    dropout: float = 0.1  # attention (training only) and residual dropout
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    # RMSNorm on each head's queries and keys before RoPE (Dehghani et al. 2023; OLMo 2)
    qk_norm: bool = False
    # training forward (no input_pos): attention stays inside each document of a packed window,
    # documents starting at BOS, and RoPE positions restart at each BOS
    document_mask: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "n_layers", "n_heads", "d_model", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head size d_model/n_heads={self.head_dim} must be even for RoPE")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1)")
        if not self.rope_base > 0:
            raise ValueError(f"rope_base={self.rope_base!r} must be positive")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps={self.norm_eps!r} must be positive")
        for name in ("qk_norm", "document_mask"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


class KVCache(nn.Module):
    """Preallocated keys and values of one layer: (B, nh, max_len, hs) each."""

    def __init__(self, batch_size: int, n_heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch_size, n_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # k, v: (B, nh, T, hs) written at positions input_pos (T,); a smaller batch uses the first rows
        B = k.size(0)
        k_all, v_all = self.k[:B], self.v[:B]
        k_all.index_copy_(2, input_pos, k)
        v_all.index_copy_(2, input_pos, v)
        return k_all, v_all  # (B, nh, max_len, hs)

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.dropout = cfg.dropout
        self.qkv = Linear(cfg.d_model, 3 * cfg.d_model, bias=False)  # fused q|k|v: one matmul
        self.proj = Linear(cfg.d_model, cfg.d_model, bias=False)
        # qk_norm: one weight per head dimension, shared by the heads (as OLMo 2's per-head variant)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.kv_cache: KVCache | None = None

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        """``mask`` without ``input_pos``: None (causal) or a (B, 1, T, T) bool document mask."""
        B, T, C = x.shape
        nh = self.n_heads
        qkv = self.qkv(x).view(B, T, 3 * nh, C // nh)  # (B, T, 3nh, hs)
        qk, v = qkv.transpose(1, 2).split((2 * nh, nh), dim=1)  # (B, 2nh, T, hs), (B, nh, T, hs) views
        if self.q_norm is not None:
            q, k = qk.split(nh, dim=1)
            # in fp32 (under autocast q and k are bf16; the fused rms_norm wants the weight's dtype)
            qk = torch.cat((self.q_norm(q.float()), self.k_norm(k.float())), dim=1).to(q.dtype)  # (B, 2nh, T, hs)
        # q and k rotated in one pass; the result is laid out (B, 2nh, T, hs), no transpose copy
        q, k = apply_rope(qk, cos, sin).split(nh, dim=1)  # (B, nh, T, hs) each
        dropout_p = self.dropout if self.training else 0.0
        if input_pos is None and mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif input_pos is None:  # the document mask (causal inside each document)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        else:
            k, v = self.kv_cache.update(input_pos, k, v)  # (B, nh, max_len, hs)
            L = mask.size(-1)  # max_len, or fewer: the positions the mask covers
            y = F.scaled_dot_product_attention(q, k[:, :, :L], v[:, :, :L], attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): a copy (v stays a strided view: SDPA takes it)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_ff)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, input_pos, mask))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class MusicTransformer(nn.Module):
    def __init__(self, config: TransformerConfig | None = None, **kwargs):
        super().__init__()
        cfg = self.config = build_config(TransformerConfig, config, kwargs)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one (V, d) matrix
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_base)
        self.causal_mask: torch.Tensor | None = None  # (max_len, max_len) additive 0/-inf, made by setup_cache
        self.apply(self._init_weights)
        # GPT-2: scale the projections that write into the residual stream by 1/sqrt(2 * n_layers)
        resid_std = 0.02 / math.sqrt(2 * cfg.n_layers)
        for block in self.layers:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=resid_std)
            nn.init.normal_(block.ffn.w2.weight, mean=0.0, std=resid_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def context_len(self) -> int:
        """Longest context generation feeds the model (its ``max_seq_len``)."""
        return self.config.max_seq_len

    # --- cost accounting ---------------------------------------------------------------------
    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, the tied embedding / head matrix counted once. ``non_embedding``: without
        that (V, d) matrix (Kaplan et al.'s N; there are no position embeddings, RoPE has none)."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.tok_emb.weight.numel() if non_embedding else total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token at context ``seq_len``: 6N (forward + backward through every
        weight, the tied head included) + attention's 12 * layers * d_model * T (the PaLM /
        nanoGPT convention). Divide by 3 for a forward pass alone."""
        cfg = self.config
        return float(6 * self.num_params() + 12 * cfg.n_layers * cfg.d_model * seq_len)

    # --- KV cache ---------------------------------------------------------------------------
    def setup_cache(self, batch_size: int, max_len: int | None = None, dtype=None, device=None) -> None:
        """Preallocate K/V buffers for ``batch_size`` rows and positions ``0 .. max_len-1``
        (default ``max_seq_len``). device defaults to the model's; dtype to what the projections
        produce: the autocast dtype when called under autocast, else the weights'. Replaces any
        old cache."""
        max_len = self.config.max_seq_len if max_len is None else max_len
        device = torch.device(device or self.tok_emb.weight.device)
        if dtype is None:
            autocast = torch.is_autocast_enabled(device.type)
            dtype = torch.get_autocast_dtype(device.type) if autocast else self.tok_emb.weight.dtype
        self.rope.extend(max_len)
        hs = self.config.head_dim
        for block in self.layers:
            block.attn.kv_cache = KVCache(batch_size, self.config.n_heads, max_len, hs, dtype, device)
        # additive (0 / -inf) rather than bool: SDPA would turn a bool mask into this in every layer
        causal = torch.ones(max_len, max_len, dtype=torch.bool, device=device).tril()
        self.causal_mask = torch.zeros(max_len, max_len, dtype=dtype, device=device).masked_fill(~causal, float("-inf"))

    def reset_cache(self) -> None:
        """Zero the cached keys/values, keeping the buffers."""
        for block in self.layers:
            if block.attn.kv_cache is not None:
                block.attn.kv_cache.reset()

    def clear_cache(self) -> None:
        """Drop the cache buffers (frees their memory)."""
        for block in self.layers:
            block.attn.kv_cache = None
        self.causal_mask = None

    @property
    def has_cache(self) -> bool:
        return self.causal_mask is not None

    @property
    def cache_size(self) -> tuple[int, int] | None:
        """(batch_size, max_len) of the current cache, None without one."""
        if self.causal_mask is None:
            return None
        k = self.layers[0].attn.kv_cache.k  # (B, nh, max_len, hs)
        return k.size(0), k.size(2)

    # --- forward ----------------------------------------------------------------------------
    def forward(
        self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, V), or (B, V) for the last position if ``last_only``.

        ``input_pos`` (T,) long: positions of these tokens in the KV cache (needs ``setup_cache``);
        each attends to the cached positions <= its own. Without it: plain causal pass over idx.
        """
        B, T = idx.shape
        if input_pos is None:
            self.rope.extend(T)  # shape-based, so compile guards on it rather than breaking
            cos, sin = self.rope.cos[:T], self.rope.sin[:T]  # (T, hs/2)
            mask = None
            if self.config.document_mask:
                cos, sin, mask = self._documents(idx)
        else:
            if self.causal_mask is None:
                raise RuntimeError("forward with input_pos needs setup_cache() first")
            cos, sin = self.rope.cos[input_pos], self.rope.sin[input_pos]  # (T, hs/2)
            # eager decoding attends to the filled part of the cache only; compiled code keeps the
            # static shape (gpt-fast) and masks the rest
            kv_len = None if torch.compiler.is_compiling() else int(input_pos.max()) + 1
            mask = self.causal_mask[input_pos, :kv_len].view(1, 1, T, -1)  # (1, 1, T, kv_len): 0 = attend, -inf = not
        x = self.tok_emb(idx)  # (B, T, C)
        for block in self.layers:
            x = block(x, cos, sin, input_pos, mask)
        if last_only:
            x = x[:, -1]  # (B, C): skip the head for positions nobody reads
        return self.lm_head(self.norm(x))

    def _documents(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RoPE tables and attention mask for the documents of packed windows ``idx`` (B, T):
        a document starts at each BOS (the tokens before a window's first BOS are the tail of
        one), positions count from its start, and a token attends to the earlier tokens of its
        own document only. -> cos, sin (B, 1, T, hs/2), mask (B, 1, T, T) bool (True: attend).
        A boolean mask with SDPA rather than flex_attention: flex_attention has no backward on
        CPU (torch 2.13), so it could not train here."""
        T = idx.size(1)
        t = torch.arange(T, device=idx.device)
        is_bos = idx == BOS_ID
        start = torch.where(is_bos, t, 0).cummax(dim=1).values  # (B, T): where each token's document starts
        pos = t - start  # (B, T)
        doc = is_bos.cumsum(dim=1)  # (B, T): document number within the window
        causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
        mask = (doc[:, :, None] == doc[:, None, :]) & causal  # (B, T, T)
        return self.rope.cos[pos].unsqueeze(1), self.rope.sin[pos].unsqueeze(1), mask.unsqueeze(1)


MusicTransformer.__signature__ = signature_from_config(TransformerConfig)
