"""Generation over token ids: logits filters, sampling, and one decoding loop for every model.

Knows nothing of MIDI or the CLI: ``generate(model, prompt_ids, ...)`` returns ids. The one place
that reads a tokeniser is ``grammar.grammar_for``, which tabulates its grammar as id tables.
"""

from musicgen.generation.engine import NextTokenLogits, generate, supports_cache
from musicgen.generation.grammar import TokenGrammar, grammar_for, sampling_grammar
from musicgen.generation.sampling import SamplingConfig, filter_logits, sample_next

__all__ = ["NextTokenLogits", "SamplingConfig", "TokenGrammar", "filter_logits", "generate", "grammar_for",
           "sample_next", "sampling_grammar", "supports_cache"]
