"""The peer: Hugging Face's ``LlamaForCausalLM`` built to exactly our Transformer's shape."""

from __future__ import annotations

import inspect

import torch

from musicgen.constants import BOS_ID, EOS_ID, PAD_ID
from musicgen.generation import SamplingConfig
from musicgen.models import MusicTransformer


def llama_missing() -> str | None:
    """Why the Llama rows cannot run (None: they can)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return "transformers is not installed (pip install -e '.[bench]')"
    return None


def build_llama(ours: MusicTransformer):
    """``LlamaForCausalLM`` of exactly our shape: dims, vocabulary, tied embeddings, no biases,
    RMSNorm eps, RoPE base, dropout, SDPA attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = ours.config
    kwargs = dict(
        vocab_size=shape.vocab_size, hidden_size=shape.d_model, intermediate_size=shape.d_ff,
        num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads, num_key_value_heads=shape.n_heads,
        hidden_act="silu", max_position_embeddings=shape.max_seq_len, rms_norm_eps=shape.norm_eps,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, attention_dropout=shape.dropout,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, attn_implementation="sdpa",
    )
    if "rope_parameters" in inspect.signature(LlamaConfig.__init__).parameters:  # transformers >= 5
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": shape.rope_base}
    else:
        kwargs["rope_theta"] = shape.rope_base
    model = LlamaForCausalLM(LlamaConfig(**kwargs))
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"Llama attention is {model.config._attn_implementation!r}, not sdpa")
    return model


def llama_generate(llama, prompt: torch.Tensor, new_tokens: int, sampling: SamplingConfig) -> torch.Tensor:
    """``generate`` with our sampling settings, exactly ``new_tokens`` tokens (never stops at EOS)."""
    with torch.inference_mode():
        return llama.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
            temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens,  # exactly n tokens, as ours
            pad_token_id=PAD_ID, eos_token_id=EOS_ID,
        )


def param_count(net: torch.nn.Module) -> int:
    """Parameters, tied weights once: ours by its own count, Llama by Hugging Face's."""
    return net.num_params() if isinstance(net, MusicTransformer) else net.num_parameters()
