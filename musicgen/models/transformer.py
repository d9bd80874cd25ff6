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

``bar_position`` (off by default; the design's future work, a music-aware position beside RoPE's
token position): learned embeddings of each token's place in its bar (``bar_grid`` positions: the
tokeniser's Position grid, 0 for "not known yet") and of its bar number modulo ``bar_period``
(0 before the first bar line), added to the token embedding. Both are read off the ids causally,
from the tokens up to and including the token itself, through two per-id tables the caller sets
from the tokeniser (``set_bar_tables``: how many Bar tokens an id holds, and the position its last
Bar or Position token sets), so the model still knows nothing of tokenisers. Counting starts at
the document's BOS, or at the window's start for a window that begins inside a document; cached
decoding keeps the ids of its cache positions (``setup_cache``) and reads the same state, so it
gives the logits of the full forward.
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
    # music-aware position: embeddings of the place in the bar and the bar number (mod bar_period)
    bar_position: bool = False
    bar_grid: int | None = None  # positions per bar (the tokeniser's Position tokens); needed with bar_position
    bar_period: int = 4  # bar numbers are counted modulo this

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
        for name in ("qk_norm", "document_mask", "bar_position"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be true or false")
        if isinstance(self.bar_period, bool) or not isinstance(self.bar_period, int) or self.bar_period < 1:
            raise ValueError(f"bar_period={self.bar_period!r} must be a positive integer")
        if self.bar_grid is not None and (isinstance(self.bar_grid, bool) or not isinstance(self.bar_grid, int)
                                          or self.bar_grid < 1):
            raise ValueError(f"bar_grid={self.bar_grid!r} must be a positive integer or null")
        if self.bar_position and self.bar_grid is None:
            raise ValueError("bar_grid=None: bar_position=true needs the positions per bar (training sets it "
                             "from the tokeniser)")

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
        if cfg.bar_position:
            self.bar_pos_emb = nn.Embedding(cfg.bar_grid + 1, cfg.d_model)  # 0: no bar or position seen yet
            self.bar_num_emb = nn.Embedding(cfg.bar_period + 1, cfg.d_model)  # 0: before the first bar line
            # per id (set_bar_tables): Bar tokens it holds; 1 + the position its last Bar/Position sets (0: none)
            self.register_buffer("bar_count", torch.zeros(cfg.vocab_size, dtype=torch.long))
            self.register_buffer("bar_sets", torch.zeros(cfg.vocab_size, dtype=torch.long))
            self.bar_ids: torch.Tensor | None = None  # (B, max_len) ids at each cache position, by setup_cache
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
        if self.config.bar_position:
            self.bar_ids = torch.zeros(batch_size, max_len, dtype=torch.long, device=device)

    def reset_cache(self) -> None:
        """Zero the cached keys/values, keeping the buffers."""
        for block in self.layers:
            if block.attn.kv_cache is not None:
                block.attn.kv_cache.reset()
        if self.config.bar_position and self.bar_ids is not None:
            self.bar_ids.zero_()

    def clear_cache(self) -> None:
        """Drop the cache buffers (frees their memory)."""
        for block in self.layers:
            block.attn.kv_cache = None
        self.causal_mask = None
        if self.config.bar_position:
            self.bar_ids = None

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
        if self.config.bar_position:
            x = x + self._bar_embedding(idx, input_pos)
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

    # --- music-aware position (bar_position) ------------------------------------------------------
    def set_bar_tables(self, bar_count: torch.Tensor, bar_sets: torch.Tensor) -> None:
        """The per-id tables the bar position is read through, from the tokeniser
        (``musicgen.tokenizers.bars.bar_position_tables``): ``bar_count[v]`` Bar tokens in id v,
        ``bar_sets[v]`` 1 + the position (in the bar's grid) that v's last Bar or Position token
        sets (a Bar: position 0), 0 where v sets none. Stored with the weights (buffers)."""
        if not self.config.bar_position:
            raise RuntimeError("set_bar_tables: this model was built with bar_position=false")
        bar_count, bar_sets = torch.as_tensor(bar_count).long(), torch.as_tensor(bar_sets).long()
        V = self.config.vocab_size
        if bar_count.shape != (V,) or bar_sets.shape != (V,):
            raise ValueError(f"bar tables must have shape ({V},), got {tuple(bar_count.shape)} and "
                             f"{tuple(bar_sets.shape)}")
        if bar_count.min() < 0 or bar_sets.min() < 0 or bar_sets.max() > self.config.bar_grid:
            raise ValueError(f"bar tables out of range: positions must lie in 0..{self.config.bar_grid} (bar_grid)")
        self.bar_count.copy_(bar_count)
        self.bar_sets.copy_(bar_sets)

    def bar_state(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(position in the bar, bar number) of each token of ``idx`` (B, T), from the tokens up to
        and including it, counted from its document's BOS (or the window's start): position 0 =
        not known yet, else 1 + the grid position; bar 0 = before the first bar line, else
        1 + (bar lines seen - 1) mod ``bar_period``. -> two (B, T) long tensors."""
        T = idx.size(1)
        t = torch.arange(T, device=idx.device)
        start = torch.where(idx == BOS_ID, t, 0).cummax(dim=1).values  # (B, T): the document's first token
        n = self.bar_count[idx]  # (B, T)
        seen = n.cumsum(dim=1)
        bars = seen - (seen - n).gather(1, start)  # bar lines from the document's start up to t
        sets = self.bar_sets[idx]  # (B, T)
        last = torch.where(sets > 0, t, -1).cummax(dim=1).values  # (B, T): the last token that set a position
        pos = torch.where(last >= start, sets.gather(1, last.clamp(min=0)), 0)
        bar = torch.where(bars > 0, (bars - 1) % self.config.bar_period + 1, 0)
        return pos, bar

    def _bar_embedding(self, idx: torch.Tensor, input_pos: torch.Tensor | None) -> torch.Tensor:
        """(B, T, C): the bar-position embeddings of ``idx``; with ``input_pos``, from the ids of
        the cache positions up to these (written into ``bar_ids`` first), as the full forward
        over the cached context would compute them."""
        if input_pos is None:
            pos, bar = self.bar_state(idx)
        else:
            ids = self.bar_ids[: idx.size(0)]  # (B, max_len)
            ids.index_copy_(1, input_pos, idx)
            kv_len = None if torch.compiler.is_compiling() else int(input_pos.max()) + 1
            pos, bar = self.bar_state(ids[:, :kv_len])
            pos, bar = pos[:, input_pos], bar[:, input_pos]  # (B, T)
        return self.bar_pos_emb(pos) + self.bar_num_emb(bar)


MusicTransformer.__signature__ = signature_from_config(TransformerConfig)
