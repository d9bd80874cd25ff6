"""The peer: Hugging Face's ``LlamaForCausalLM`` built to exactly our Transformer's shape, run eager
(HF's default) and under ``torch.compile`` (HF's documented recipe for generation)."""

from __future__ import annotations

from typing import Any

import torch

from musicgen.constants import EOS_ID, PAD_ID
from musicgen.generation import SamplingConfig
from musicgen.models import MusicTransformer

LLAMA_CONTENDERS = ("llama", "llama_compiled")  # HF eager and HF under torch.compile






def llama_generate(llama, prompt: torch.Tensor, new_tokens: int, sampling: SamplingConfig,
                   static_cache_len: int | None = None) -> torch.Tensor:
    """``generate`` with our sampling settings, exactly ``new_tokens`` tokens (never stops at EOS).

    ``static_cache_len``: HF's compilable static KV cache of this many positions instead of its
    dynamic one; one size for every call, so the graphs compiled in a short warmup serve the long
    timed runs. HF's own automatic compile (CUDA only) is then off: the caller compiled ``forward``
    (``compile_llama_forward``), with the same settings as ours."""
    static = {} if static_cache_len is None else dict(
        cache_implementation="static", max_cache_len=static_cache_len, disable_compile=True)
    with torch.inference_mode():
        return llama.generate(
            input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
            temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
            max_new_tokens=new_tokens, min_new_tokens=new_tokens,  # exactly n tokens, as ours
            pad_token_id=PAD_ID, eos_token_id=EOS_ID, **static,
        )


def compile_llama_forward(llama, mode: str | None):
    """HF's documented way to compile generation: ``model.forward = torch.compile(model.forward)``,
    then ``generate`` with a static cache (``llama_generate(static_cache_len=...)``). Static shapes
    (one graph per batch size, as ours); each batch size compiles two graphs: the first step,
    which allocates the cache, and the decode step. Returns ``llama``, changed in place."""
    llama.forward = torch.compile(llama.forward, mode=mode, dynamic=False)
    return llama


def fastest_llama(contenders: dict[str, Any], key: str) -> tuple[str, dict] | tuple[None, None]:
    """The faster Llama contender, eager (``llama``) or compiled (``llama_compiled``), by ``key``:
    the one our targets are judged against. (``llama_fp32`` is a reference row, not a contender.)"""
    llamas = {name: contenders[name] for name in LLAMA_CONTENDERS if name in contenders}
    if not llamas:
        return None, None
    name = max(llamas, key=lambda name: llamas[name][key])
    return name, llamas[name]


def param_count(net: torch.nn.Module) -> int:
    """Parameters, tied weights once: ours by its own count, Llama by Hugging Face's."""
    return net.num_params() if isinstance(net, MusicTransformer) else net.num_parameters()
