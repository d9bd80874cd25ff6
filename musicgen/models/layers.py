"""Building blocks shared by the models: RMSNorm, rotary position embeddings, SwiGLU.

Pure torch. Tensor shapes in comments: B batch, T time, nh heads, hs head size, C channels.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean centring, no bias): ``x / rms(x) * weight``."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the fused op; it computes in the input dtype, like the rest of the block
        return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)


class RotaryEmbedding(nn.Module):
    """Tables of cos/sin angles for RoPE, extended on demand.

    ``cos``/``sin`` are (L, hs/2) non-persistent buffers (rebuilt from ``head_dim`` and ``base``,
    so they never enter a checkpoint). ``extend(n)`` recomputes them (to at least ``n``, at least
    doubling) when a longer sequence arrives; values at positions already covered do not change.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim={head_dim} must be even for RoPE")
        self.head_dim = head_dim
        self.base = base
        cos, sin = self._angles(max_len, torch.device("cpu"))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _angles(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # always float32 (float64 would not help: positions stay small); cast at use
        dims = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32)
        inv_freq = 1.0 / (self.base ** (dims / self.head_dim))
        t = torch.arange(length, device=device, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # (L, hs/2)
        return freqs.cos(), freqs.sin()

    @property
    def max_len(self) -> int:
        return self.cos.size(0)

    def extend(self, length: int) -> None:
        """Make the tables cover at least ``length`` positions (doubling, to rebuild rarely)."""
        if length <= self.max_len:
            return
        new_len = max(length, 2 * self.max_len)
        # normal tensors even when first met under inference_mode (e.g. sampling between training
        # epochs): an inference tensor here would break a later backward through apply_rope
        with torch.inference_mode(False):
            cos, sin = self._angles(new_len, self.cos.device)
            self.cos = cos.to(self.cos.dtype)  # assigning to a registered buffer name keeps it a buffer
            self.sin = sin.to(self.sin.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, nh, T, hs) by position; ``cos``/``sin`` are (T, hs/2), or (B, 1, T, hs/2)
    for positions that differ by row (documents of packed windows).

    Rotate-half convention (pairs are (i, i + hs/2), as in HF Llama), in real arithmetic on two
    views of x, so the only copy is the output, written contiguous in (B, nh, T, hs) whatever
    x's strides (e.g. a transposed view of a fused qkv projection): the layout SDPA wants.
    (Complex multiplication is faster for this op in fp32 eager on CPU, but needs fp32 and
    compiles worse; the op is ~1% of a training step.)
    """
    cos = cos.to(x.dtype)  # (T, hs/2) broadcasts over B and heads
    sin = sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) views; chunk's backward is one cat, not zeros + copies
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Linear(nn.Linear):
    """``nn.Linear`` whose product, for a single row under ``torch.compile`` on CPU, is written as
    a broadcast multiply and a sum over the input dimension (fp32 accumulation).

    Batch-1 decoding multiplies one row by every weight: a matrix-vector product, bound by the
    speed weights stream from memory. oneDNN's bf16 GEMM at one row streams them at about half
    the machine's bandwidth; inductor turns the multiply-and-sum into one vectorised loop over the
    weight that runs faster (batch-1 compiled decoding of the 34M model: 63.1 -> 75.5 tokens/s in
    the bench; PERFORMANCE.md). At 8 rows the loop rereads the weight per row and the GEMM wins,
    so more rows, training, eager code, autocast and CUDA take ``F.linear``. Same parameters and
    state dict as ``nn.Linear``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype == self.weight.dtype
                and x.numel() == x.size(-1) and not torch.is_autocast_enabled("cpu")):
            y = (x.unsqueeze(-2) * self.weight).sum(-1, dtype=torch.float32)  # (..., out)
            if self.bias is not None:
                y = y + self.bias.float()
            return y.to(x.dtype)
        return F.linear(x, self.weight, self.bias)


class SwiGLU(nn.Module):
    """``W2(SiLU(x W1) * x W3)`` without biases; W1|W3 fused into one matmul (``w13``).

    ``w13.weight`` is ``cat([W1, W3])`` (gate rows first), i.e. HF's ``cat([gate_proj, up_proj])``.
    """

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w13 = Linear(dim, 2 * hidden_dim, bias=False)
        self.w2 = Linear(hidden_dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)  # (B, T, d_ff) each, views
        return self.w2(F.silu(gate) * up)


def signature_from_config(config_cls: type) -> inspect.Signature:
    """``(config=None, *, <field>=<default>, ...)``: the keyword signature of a model built from a
    config dataclass, so ``inspect.signature(Model)`` lists the real fields (config validation by
    signature, Hydra's flat kwargs) while the dataclass stays the one place defaults live."""
    params = [inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = inspect.Parameter.empty
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params)


def build_config(config_cls: type, config, kwargs: dict):
    """The config a model constructor was given: a ready ``config`` or the fields as kwargs."""
    if config is None:
        return config_cls(**kwargs)
    if kwargs:
        raise TypeError(f"pass either config or field kwargs, not both (got config and {sorted(kwargs)})")
    if not isinstance(config, config_cls):
        raise TypeError(f"config must be a {config_cls.__name__}, got {type(config).__name__}")
    return config
