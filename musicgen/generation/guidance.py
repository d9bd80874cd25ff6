"""Classifier-free guidance around a network for the decoding loop (``GuidedModel``): the
attribute prefix inserted after BOS, conditioned and null rows in one batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from musicgen.constants import BOS_ID
from musicgen.control.conditioning import ConditioningVocab, requested_attributes
from musicgen.errors import ConfigError


class GuidedModel(nn.Module):
    """Classifier-free guidance around a network, for ``musicgen.generation.generate``.

    The decoding loop passes the body (BOS, prompt, sampled tokens); each context that starts at
    BOS gets ``cond_prefix`` inserted after it (a context that slid past BOS gets it in front).
    ``after``: leading tokens that come before all of that (infilling's ``PRE``, ``musicgen.generation.infilling``).
    With ``scale`` != 1 the conditioned and the ``uncond_prefix`` rows run as one batch (2B) and
    the logits are ``uncond + scale * (cond - uncond)``; only the first ``n_out`` ids (the
    tokeniser's) are returned. ``guided`` (below) adds the KV-cache methods where the network has them.
    """

    def __init__(self, model: nn.Module, cond_prefix: Sequence[int], uncond_prefix: Sequence[int],
                 scale: float = 1.0, n_out: int | None = None, bos_id: int = BOS_ID, after: int = 0) -> None:
        super().__init__()
        if len(cond_prefix) != len(uncond_prefix):
            raise ValueError("cond_prefix and uncond_prefix must have the same length")
        self.model = model
        self.scale = float(scale)
        self.n_out = n_out
        self.bos_id = bos_id
        self.after = after
        self.register_buffer("cond", torch.tensor(list(cond_prefix), dtype=torch.long), persistent=False)
        self.register_buffer("uncond", torch.tensor(list(uncond_prefix), dtype=torch.long), persistent=False)

    @property
    def n_prefix(self) -> int:
        return self.cond.numel()

    @property
    def guided(self) -> bool:
        return self.scale != 1.0

    @property
    def context_len(self) -> int:
        return self.model.context_len - self.n_prefix

    def _rows(self, batch: int) -> int:
        return 2 * batch if self.guided else batch

    def _with_prefix(self, idx: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        B, a = idx.size(0), self.after
        pre = prefix.to(idx.device).expand(B, -1)
        lead, body = idx[:, :a], idx[:, a:]
        after_bos = torch.cat([lead, body[:, :1], pre, body[:, 1:]], dim=1)
        in_front = torch.cat([lead, pre, body], dim=1)
        return torch.where(body[:, :1] == self.bos_id, after_bos, in_front)

    def forward(self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, last_only: bool = True) -> torch.Tensor:
        """idx (B, T) body tokens -> guided logits (B, n_out) for the next token."""
        if not last_only:
            raise ValueError("GuidedModel gives next-token logits only (last_only=True)")
        prefixes = [self.cond, self.uncond] if self.guided else [self.cond]
        if input_pos is None or int(input_pos[0]) == 0:  # a context from its start: insert the prefix
            x = torch.cat([self._with_prefix(idx, p) for p in prefixes], dim=0)  # (rows, T + P)
            pos = None if input_pos is None else torch.arange(x.size(1), device=idx.device)
        else:  # later tokens of a cached context: the same for both rows, positions moved by P
            x = idx.repeat(len(prefixes), 1)
            pos = input_pos + self.n_prefix
        logits = self.model(x, last_only=True) if pos is None else self.model(x, input_pos=pos, last_only=True)
        if self.guided:
            B = idx.size(0)
            cond, uncond = logits[:B].float(), logits[B:].float()
            logits = uncond + self.scale * (cond - uncond)
        return logits[:, : self.n_out] if self.n_out is not None else logits

class GuidedCachedModel(GuidedModel):
    """``GuidedModel`` over a network with a KV cache (the Transformer): one cache of 2B rows."""

    def setup_cache(self, batch_size: int, max_len: int | None = None, **kw: Any) -> None:
        self.model.setup_cache(self._rows(batch_size), (max_len or self.context_len) + self.n_prefix, **kw)

    def clear_cache(self) -> None:
        self.model.clear_cache()

    @property
    def cache_size(self) -> tuple[int, int] | None:
        size = getattr(self.model, "cache_size", None)
        if not size:
            return None
        rows, length = size
        return rows // (2 if self.guided else 1), length - self.n_prefix

def guided(model: nn.Module, cond_prefix: Sequence[int], uncond_prefix: Sequence[int], scale: float = 1.0,
           n_out: int | None = None, after: int = 0) -> GuidedModel:
    """A ``GuidedModel``, with the cache methods when ``model`` has a KV cache."""
    cls = GuidedCachedModel if callable(getattr(model, "setup_cache", None)) else GuidedModel
    return cls(model, cond_prefix, uncond_prefix, scale, n_out, after=after)

def conditioned_generation(vocab: ConditioningVocab | None, cond: Mapping[str, Any] | None, cfg_scale: float,
                           net: nn.Module, context: int) -> tuple[nn.Module, int, dict[str, Any] | None]:
    """For ``musicgen.api``: the network to decode with for the attributes ``cond`` asks of a run
    with the attribute vocabulary ``vocab``, the body context, and the report's ``conditioning``
    entry (None for a run without conditioning, which gets ``net`` back)."""
    attrs = requested_attributes(vocab, cond)
    if vocab is None:
        if cfg_scale != 1.0:
            raise ConfigError(f"sampling.cfg_scale={cfg_scale} needs a checkpoint trained with conditioning")
        return net, context, None
    prefix = vocab.prefix(attrs)
    model = guided(net, prefix, vocab.null_prefix(), cfg_scale, n_out=vocab.base)
    entry = {"attributes": attrs, "prefix_ids": prefix, "prefix_tokens": vocab.decode(prefix), "cfg_scale": cfg_scale}
    return model, context - len(prefix), entry
