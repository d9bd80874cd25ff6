"""Weight-only int8 decoding of the Transformer (``python -m musicgen.generate ... quantize=int8``).

``quantize_int8(model)`` replaces, in place, every ``nn.Linear`` of a ``MusicTransformer``'s
blocks (the fused ``qkv``, ``proj``, the fused ``w13``, ``w2``) and, by default, its output head
with an ``Int8Linear``: per-output-channel symmetric int8 weights (``round(w / s)`` in
``-127..127``, ``s = max|w_row| / 127``) and their scales. The head is tied to the embedding: it
gets its own int8 copy of the matrix, and the embedding lookup keeps the exact weights. The
scales are stored in the matmul's dtype (a later ``.to(torch.bfloat16)`` of the model casts them;
the int8 weights never change).

The matmul, in the linear's ``compute_dtype`` (None: the activations' dtype; its output is cast
back to that), is:

- torch's own kernel ``torch.ops.aten._weight_int8pack_mm(x (M, K), w int8 (N, K), scales (N,))``
  (x and scales of one dtype, x 2-D and contiguous in its last dimension) when the compute dtype
  is bf16, the input has at most ``KERNEL_MAX_ROWS`` rows (decoding: batch x new tokens) and the
  kernel runs on the device (probed once per device type when quantizing);
- else dequantize-in-matmul, ``F.linear(x, w.to(dtype)) * s`` (prefill, scoring, other dtypes).

Why (torch 2.13, single-thread microbenchmarks on one AVX-512/AMX CPU, a loaded shared machine:
orders of magnitude, to re-measure on a quiet one): the kernel is fast in bf16 only; in fp32 and
fp16 it ran 5-10x slower than the float ``F.linear`` even at one row. In bf16 it beat
``F.linear`` 2-3x at one row, but its cost grows with the rows, so from about 8-16 rows on
dequantize-in-matmul was faster. Hence ``compute_dtype="auto"`` (what ``generate`` asks
for): bf16 for an fp32 model on a CPU with AVX-512 BF16 or AMX (the hardware on which
``musicgen.config.default_precision`` trains in bf16), else the activations' dtype; the rest of
the model (norms, attention, residual stream, the exact embedding) keeps the model's dtype.
``quantize_int8`` logs one line saying which path decoding takes. Both paths work with the
KV-cache decoding path and under ``torch.compile`` (shapes are static there, so the row test is
resolved while tracing). The LSTM is refused (``ConfigError``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from musicgen.errors import ConfigError

log = logging.getLogger(__name__)

QUANTIZE_MODES = (None, "int8")
KERNEL = "torch.ops.aten._weight_int8pack_mm"
KERNEL_MAX_ROWS = 8  # more rows than this: dequantize-in-matmul is faster (module docstring)


def int8_weights(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) float weight -> (int8 (N, K), fp32 scales (N,)): symmetric, one scale per output row."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # an all-zero row gets a tiny scale, stays 0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scales


_probed: dict[str, bool] = {}


def kernel_runs_on(device_type: str) -> bool:
    """Whether ``_weight_int8pack_mm`` runs (and is right) in bf16 on this device type; probed once."""
    if device_type not in _probed:
        ok = False
        try:
            x = torch.randn(2, 32, device=device_type, dtype=torch.bfloat16)
            w = torch.randint(-127, 128, (16, 32), dtype=torch.int8, device=device_type)
            s = (torch.rand(16, device=device_type) + 0.5).to(torch.bfloat16)
            y = torch.ops.aten._weight_int8pack_mm(x, w, s).float()
            ref = F.linear(x.float(), w.float()) * s.float()
            ok = bool(torch.allclose(y, ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max())))
        except (AttributeError, NotImplementedError, RuntimeError) as e:
            log.debug("%s does not run on %s: %s", KERNEL, device_type, e)
        _probed[device_type] = ok
    return _probed[device_type]


class Int8Linear(nn.Module):
    """A bias-free ``nn.Linear`` with int8 weights (N, K) and per-output-channel scales (N,).

    ``kernel_devices``: the device types on which ``_weight_int8pack_mm`` may be used;
    ``compute_dtype``: the matmul's dtype (None: the input's). Plain attributes, which
    ``torch.compile`` treats as constants.
    """

    def __init__(self, weight_int8: torch.Tensor, scales: torch.Tensor, kernel_devices: tuple[str, ...] = (),
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        if weight_int8.dtype != torch.int8 or weight_int8.dim() != 2 or scales.shape != weight_int8.shape[:1]:
            raise ValueError(f"need int8 weights (N, K) and scales (N,), got {weight_int8.dtype} "
                             f"{tuple(weight_int8.shape)} and {tuple(scales.shape)}")
        self.out_features, self.in_features = weight_int8.shape
        self.register_buffer("weight", weight_int8.contiguous())
        self.register_buffer("scales", scales)
        self.kernel_devices = tuple(kernel_devices)
        self.compute_dtype = compute_dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel_devices: tuple[str, ...] = (),
                    compute_dtype: torch.dtype | None = None) -> Int8Linear:
        if linear.bias is not None:
            raise ValueError("Int8Linear has no bias; the Transformer's linears have none")
        q, scales = int8_weights(linear.weight)
        return cls(q, scales.to(compute_dtype or linear.weight.dtype), kernel_devices, compute_dtype)

    def dequantized(self) -> torch.Tensor:
        """The float weight it stands for (N, K), fp32."""
        return self.weight.float() * self.scales.float()[:, None]

    def uses_kernel(self, rows: int, dtype: torch.dtype, device_type: str) -> bool:
        """Whether an input of ``rows`` rows (all dimensions but the last) takes ``_weight_int8pack_mm``."""
        dtype = self.compute_dtype or dtype
        return dtype == torch.bfloat16 and rows <= KERNEL_MAX_ROWS and device_type in self.kernel_devices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        dtype = self.compute_dtype or x.dtype
        x2 = x.reshape(-1, self.in_features).to(dtype)
        scales = self.scales if self.scales.dtype == dtype else self.scales.to(dtype)
        # compiled, the kernel's lowering needs its scales as they are stored (not cast in the graph)
        if self.uses_kernel(x2.size(0), dtype, x.device.type) and (
                scales is self.scales or not torch.compiler.is_compiling()):
            y = torch.ops.aten._weight_int8pack_mm(x2.contiguous(), self.weight, scales)
        else:
            y = F.linear(x2, self.weight.to(dtype)) * scales
        return y.to(x.dtype).view(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"compute_dtype={self.compute_dtype}, kernel_devices={self.kernel_devices}")


def auto_compute_dtype(model_dtype: torch.dtype, device_type: str) -> torch.dtype | None:
    """``compute_dtype="auto"``: bf16 for an fp32 model on a CPU that does bf16 fast (AVX-512 BF16 or
    AMX) and runs the kernel, where the int8 kernel is only fast in bf16; else None (the model's)."""
    if model_dtype != torch.float32 or device_type != "cpu" or not kernel_runs_on("cpu"):
        return None
    from musicgen.runtime import cpu_does_bf16

    return torch.bfloat16 if cpu_does_bf16() else None


@torch.no_grad()
def quantize_int8(model: nn.Module, head: bool = True, compute_dtype: torch.dtype | str | None = None) -> nn.Module:
    """Weight-only int8 ``model`` (a ``MusicTransformer``), in place; returns it. ``head``: the
    output head too (its own int8 copy of the tied matrix; the embedding stays exact).
    ``compute_dtype``: the linears' matmul dtype; None: the activations'; "auto": see
    ``auto_compute_dtype``."""
    from musicgen.models import MusicTransformer

    if not isinstance(model, MusicTransformer):
        raise ConfigError(f"quantize=int8 needs a Transformer run (V7/V8), not a {type(model).__name__}")
    weight = model.tok_emb.weight
    device_type = weight.device.type
    if compute_dtype == "auto":
        compute_dtype = auto_compute_dtype(weight.dtype, device_type)
    if compute_dtype is not None and not isinstance(compute_dtype, torch.dtype):
        raise ValueError(f"compute_dtype={compute_dtype!r}: a torch dtype, 'auto' or None")
    kernel_devices = tuple(d for d in dict.fromkeys(("cpu", device_type)) if kernel_runs_on(d))
    targets = [(block.attn, name) for block in model.layers for name in ("qkv", "proj")]
    targets += [(block.ffn, name) for block in model.layers for name in ("w13", "w2")]
    if head:
        targets.append((model, "lm_head"))
    before = after = 0
    for parent, name in targets:
        linear = getattr(parent, name)
        if isinstance(linear, Int8Linear):
            raise ValueError("this model is already quantized")
        q = Int8Linear.from_linear(linear, kernel_devices, compute_dtype)
        before += linear.weight.numel() * linear.weight.element_size()
        after += q.weight.numel() + q.scales.numel() * q.scales.element_size()
        setattr(parent, name, q)
    matmul_dtype = compute_dtype or weight.dtype
    if q.uses_kernel(1, matmul_dtype, device_type):
        how = f"{KERNEL} for inputs of up to {KERNEL_MAX_ROWS} rows (decoding), dequantize-in-matmul beyond"
    elif matmul_dtype != torch.bfloat16:
        how = f"dequantize-in-matmul ({KERNEL} is only used in bf16)"
    else:
        how = f"dequantize-in-matmul ({KERNEL} does not run on {device_type})"
    short = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    dtypes = f"{short.get(matmul_dtype, matmul_dtype)} matmuls (the model: {short.get(weight.dtype, weight.dtype)})"
    log.info("int8 weight-only: %d linears%s, %.1f -> %.1f MB, %s, via %s", len(targets),
             " (the head included)" if head else "", before / 2**20, after / 2**20, dtypes, how)
    return model


def apply_quantize(model: nn.Module, mode) -> nn.Module:
    """``generate``'s ``quantize`` setting: ``null`` (the model as it is) or ``int8``."""
    if mode is None:
        return model
    if mode not in QUANTIZE_MODES:
        raise ConfigError(f"quantize={mode!r}: choose null (no quantization) or int8")
    return quantize_int8(model, compute_dtype="auto")


__all__ = ["KERNEL_MAX_ROWS", "Int8Linear", "QUANTIZE_MODES", "apply_quantize", "auto_compute_dtype", "int8_weights",
           "kernel_runs_on", "quantize_int8"]
