"""Next-token sampling over logits: repetition penalty, temperature, top-k, top-p (nucleus), min-p,
in that order.

- repetition penalty (CTRL, Keskar et al. 2019): the logit of every token that occurs among the
  last ``repetition_window`` tokens of the context is divided by ``repetition_penalty`` when
  positive and multiplied by it when negative, so it always becomes less likely. On the raw
  logits, before temperature. 1.0 disables it.
- temperature: logits / temperature.
- top-k: keep the k most probable tokens.
- top-p: keep the smallest set of the survivors whose probability reaches p.
- min-p: keep the survivors at least ``min_p`` times as probable as the most probable one
  (probabilities of the renormalised survivors; the ratio is the same before and after).

The most probable token always survives every filter, so the distribution sampled from is never
empty (the original fell back to uniform sampling over the first k ids when everything was masked;
that case cannot arise here). Ties at a cut-off are kept together: top-k keeps every token whose
logit equals the k-th largest, top-p every token as probable as the last one it needs, min-p every
token exactly at its threshold. Greedy decoding is the argmax after the repetition penalty (the
other filters never change the argmax).

``constrained`` is read by the callers that know the tokeniser (``musicgen.generation.grammar``):
the decoding loop masks the tokens the tokeniser's grammar rejects before any of the above.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TEMPERATURE_RANGE = (0.1, 2.0)
TOP_K_RANGE = (0, 500)
TOP_P_RANGE = (0.01, 1.0)
MIN_P_RANGE = (0.0, 1.0)
REPETITION_PENALTY_RANGE = (1.0, 2.0)
REPETITION_WINDOW_RANGE = (1, 4096)
CFG_SCALE_RANGE = (0.0, 5.0)


@dataclass
class SamplingConfig:
    temperature: float = 0.8  # logits / temperature; < 1 sharpens, > 1 flattens
    top_k: int = 50  # keep the k most probable tokens; 0 disables
    top_p: float = 0.95  # keep the smallest set whose probability reaches p; 1.0 disables
    greedy: bool = False  # argmax (after the repetition penalty), ignoring the filters (deterministic)
    min_p: float = 0.0  # keep tokens at least min_p times as probable as the most probable; 0 disables
    repetition_penalty: float = 1.0  # CTRL penalty on tokens of the recent context; 1.0 disables
    repetition_window: int = 64  # how many of the most recent tokens the penalty looks at
    constrained: bool = True  # mask the tokens the tokeniser's grammar rejects (where it has one)
    cfg_scale: float = 1.0  # classifier-free guidance of a conditioned run (generation.guidance); 1: conditional

    def __post_init__(self):
        _check_range("temperature", self.temperature, TEMPERATURE_RANGE)
        _check_int("top_k", self.top_k, TOP_K_RANGE)
        _check_range("top_p", self.top_p, TOP_P_RANGE)
        _check_range("min_p", self.min_p, MIN_P_RANGE)
        _check_range("repetition_penalty", self.repetition_penalty, REPETITION_PENALTY_RANGE)
        _check_int("repetition_window", self.repetition_window, REPETITION_WINDOW_RANGE)
        _check_range("cfg_scale", self.cfg_scale, CFG_SCALE_RANGE)
        for name in ("greedy", "constrained"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a bool")


def _check_range(name: str, value, bounds: tuple) -> None:
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"{name}={value!r} is out of range: allowed {lo}..{hi}")


def _check_int(name: str, value, bounds: tuple) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} must be an integer in [{bounds[0]}, {bounds[1]}]")
    _check_range(name, value, bounds)


def penalise_repetition(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V), context (B, n) long ids -> logits with every token present in its row of
    ``context`` made less likely: positive logits divided by ``penalty``, negative ones multiplied."""
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, context, True)  # (B, V)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def _penalised(logits: torch.Tensor, cfg: SamplingConfig, context: torch.Tensor | None) -> torch.Tensor:
    logits = logits.float()  # (B, V); float32 so softmax/cumsum stay accurate
    if cfg.repetition_penalty != 1.0 and context is not None and context.size(-1) > 0:
        logits = penalise_repetition(logits, context[:, -cfg.repetition_window :], cfg.repetition_penalty)
    return logits


def filter_logits(logits: torch.Tensor, cfg: SamplingConfig, context: torch.Tensor | None = None) -> torch.Tensor:
    """logits (B, V) -> float32 logits (B, V) with filtered-out tokens at -inf.

    Repetition penalty over the last ``repetition_window`` tokens of ``context`` (B, n) (none
    without a context), then temperature, top-k, top-p and min-p over the renormalised survivors.
    """
    logits = _penalised(logits, cfg, context) / cfg.temperature
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
    if cfg.min_p > 0.0:
        probs = logits.softmax(dim=-1)  # (B, V)
        floor = cfg.min_p * probs.amax(dim=-1, keepdim=True)  # (B, 1), <= the top token's probability
        logits = logits.masked_fill(probs < floor, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
    """logits (B, V) -> sampled ids (B,) long. ``generator`` (on the logits' device) makes it
    reproducible; ``context`` (B, n): the tokens so far, for the repetition penalty. Greedy
    decoding is the argmax (after the repetition penalty) and draws nothing."""
    if cfg.greedy:
        return _penalised(logits, cfg, context).argmax(dim=-1)
    probs = filter_logits(logits, cfg, context).softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)
