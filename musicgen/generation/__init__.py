"""Generation over token ids: logits filters, sampling, and one decoding loop for every model.

Knows nothing of tokenisers, MIDI or the CLI: ``generate(model, prompt_ids, ...)`` returns ids.
"""

from musicgen.generation.engine import NextTokenLogits, generate, supports_cache
from musicgen.generation.sampling import SamplingConfig, filter_logits, sample_next

__all__ = ["NextTokenLogits", "SamplingConfig", "filter_logits", "generate", "sample_next", "supports_cache"]
