"""Next-token sampling over logits: temperature, then top-k, then top-p (nucleus).

The most probable token always survives both filters, so the distribution sampled from is never
empty (the original fell back to uniform sampling over the first k ids when everything was masked;
that case cannot arise here). Ties at a cut-off are kept together: top-k keeps every token whose
logit equals the k-th largest, top-p every token as probable as the last one it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TEMPERATURE_RANGE = (0.1, 2.0)
TOP_K_RANGE = (0, 500)
TOP_P_RANGE = (0.01, 1.0)


@dataclass
class SamplingConfig:
    temperature: float = 0.8  # logits / temperature; < 1 sharpens, > 1 flattens
    top_k: int = 50  # keep the k most probable tokens; 0 disables
    top_p: float = 0.95  # keep the smallest set whose probability reaches p; 1.0 disables
    greedy: bool = False  # argmax, ignoring the three above (deterministic decoding)

    def __post_init__(self):
        _check_range("temperature", self.temperature, TEMPERATURE_RANGE)
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
            raise ValueError(f"top_k={self.top_k!r} must be an integer in [{TOP_K_RANGE[0]}, {TOP_K_RANGE[1]}]")
        _check_range("top_k", self.top_k, TOP_K_RANGE)
        _check_range("top_p", self.top_p, TOP_P_RANGE)
        if not isinstance(self.greedy, bool):
            raise ValueError(f"greedy={self.greedy!r} must be a bool")


def _check_range(name: str, value, bounds: tuple) -> None:
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{name}={value!r} is out of range: allowed {lo}..{hi}")


def filter_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """logits (B, V) -> float32 logits (B, V) with filtered-out tokens at -inf.

    Temperature first, then top-k, then top-p over the renormalised survivors.
    """
    logits = logits.float() / cfg.temperature  # (B, V); float32 so softmax/cumsum stay accurate
    V = logits.size(-1)
    if 0 < cfg.top_k < V:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1) k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # exactly 0 for the top token, so it is kept
        n_keep = (mass_before < cfg.top_p).sum(dim=-1, keepdim=True)  # (B, 1), >= 1
        threshold = sorted_logits.gather(-1, n_keep - 1)  # (B, 1) logit of the last token kept
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> sampled ids (B,) long. ``generator`` (on the logits' device) makes it
    reproducible; greedy decoding is the argmax and draws nothing."""
    if cfg.greedy:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, cfg).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
