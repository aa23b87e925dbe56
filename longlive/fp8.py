"""FP8 linear layers for the transformer blocks (the `fp8_linears` switch).

The generator is at its bf16 kernel speed (BENCHMARKS.md); its linear layers are about a quarter of a
block's time. Here each linear of the blocks' self-attention, cross-attention queries and outputs, and
FFN multiplies in float8 (e4m3) through `torch._scaled_mm`: the weight quantized once with one scale
per output row, the activation quantized on the fly with one scale per token (row-wise scaling, which
keeps the outliers of one token from costing the others their precision). The cross-attention keys and
values project the text once per prompt and stay in bf16, as do the embeddings, modulation and head.

Not bit-exact: a test states the tolerance against the bf16 reference, and BENCHMARKS.md records the
generator's output cosine on the GPU. The conversion is the last step of building the generator (after
loading and merging LoRA): a converted layer holds float8 weights and their scales, so a bf16 state
dict does not load into it.
"""

from __future__ import annotations

import torch
from torch import nn

from longlive.config import ConfigError

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
MIN_SCALE = 1e-12  # an all-zero row keeps a finite scale
TARGETS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.o", "ffn.0", "ffn.2")


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (float8 [M, K], float32 scales [M, 1]) with x ~ float8 * scale, each row on its own scale."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=MIN_SCALE) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Float8Linear(nn.Module):
    """An `nn.Linear` whose product runs in float8 with row-wise scales (weights per output row,
    activations per token); bias added in the activation's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        with torch.no_grad():  # else the float8 copy would keep the bf16 weight and a float32 one for autograd
            weight, scale = quantize_rows(linear.weight)
        self.register_buffer("weight", weight)  # [out, in]; its transpose is the column-major operand
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, scale = quantize_rows(x.reshape(-1, self.in_features))
        if x.is_cuda:
            out = torch._scaled_mm(rows, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, out_dtype=x.dtype)
        else:  # the same product from the dequantized operands (CPU _scaled_mm takes one scale per tensor only);
            # it builds a float32 copy of the weight per call: fine for tests and tiny models, slow for large ones
            out = ((rows.float() * scale) @ (self.weight.float() * self.weight_scale.t()).t()).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, float8 row-wise"


def check_fp8_support(device: torch.device, dtype: torch.dtype) -> None:
    """Float8 products with row-wise scales need a CUDA GPU of compute capability 8.9 or newer (Ada,
    Hopper) and a bf16 model there (cuBLAS returns row-scaled products in bf16); the CPU takes any dtype."""
    if device.type != "cuda":
        return
    if torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise ConfigError(f"fp8_linears=true needs a GPU of compute capability 8.9 or newer (Ada, Hopper), not {name}")
    if dtype != torch.bfloat16:
        raise ConfigError(f"fp8_linears=true on a GPU needs dtype=bfloat16, not {dtype}")


def convert_block_linears(blocks: nn.ModuleList) -> int:
    """Replace the `TARGETS` linears of every transformer block by `Float8Linear`; return how many.

    A target that is not a plain `nn.Linear` (a LoRA layer left unmerged) is an error: its adapter
    would be dropped.
    """
    count = 0
    for index, block in enumerate(blocks):
        for target in TARGETS:
            layer = block.get_submodule(target)
            if type(layer) is not nn.Linear:
                raise ConfigError(
                    f"fp8_linears=true: blocks.{index}.{target} is a {type(layer).__name__}, not a plain "
                    "linear layer (set merge_lora=true to fold LoRA weights in first)"
                )
            block.set_submodule(target, Float8Linear(layer))
            count += 1
    return count
