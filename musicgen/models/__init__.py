"""Pure-torch next-token models. They know nothing of Lightning, Hydra, files or MIDI.

Every model is built from its config dataclass's fields as keyword arguments (what Hydra's
``_target_: musicgen.models.MusicTransformer`` with flat kwargs does) or from a ready config:
``MusicTransformer(n_layers=2, d_model=64)`` == ``MusicTransformer(TransformerConfig(n_layers=2, d_model=64))``.
The validated config is ``model.config``; ``inspect.signature(Model)`` lists the config fields.

Shared interface used by training and generation:
    forward(idx (B, T), ..., last_only=False) -> logits (B, T, V), or (B, V) when last_only
    context_len -> int: the longest context generation should feed the model
Models with a KV cache (the Transformer) add setup_cache / reset_cache / clear_cache and
forward(idx, input_pos=...).
"""

from musicgen.models.lstm import LSTMConfig, MelodyLSTM
from musicgen.models.transformer import MusicTransformer, TransformerConfig

__all__ = ["LSTMConfig", "MelodyLSTM", "MusicTransformer", "TransformerConfig"]
