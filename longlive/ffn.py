"""The FFN's GELU inside its first product (the `fuse_ffn_gelu` switch).

Each block's FFN widens the tokens to `ffn_dim` channels, applies GELU (tanh form) and narrows them
again. Computed as written, the GELU is a separate pass over the widest activation of the block
(tokens x `ffn_dim`, read and written once more: at the published size about 58 us a layer on an H100,
more than a fifth of the elementwise work left after compilation; BENCHMARKS.md). cuBLASLt can apply the bias
and the same tanh GELU in the epilogue of the product, on the float32 accumulator before it is rounded
to bf16; PyTorch exposes that as `torch._addmm_activation(..., use_gelu=True)`, which on CUDA always
uses the tanh form (through the epilogue, or a GELU after the product where cuBLASLt cannot). On the
CPU that function would use the exact (erf) GELU, so there the layer computes as written.

Not bit-exact on the GPU (the GELU sees the unrounded product; the tests state the tolerance); the
state dict is unchanged (`ffn.0`, `ffn.2`).
"""

from __future__ import annotations

import torch
from torch import nn


class GeluEpilogueFFN(nn.Sequential):
    """`Linear -> GELU(tanh) -> Linear` with the GELU computed in the first product's epilogue on CUDA."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, _, down = self
        if not (x.is_cuda and fusable(self)):
            return super().forward(x)  # the CPU, or layers changed since (a float8 or LoRA layer, another GELU)
        hidden = torch._addmm_activation(up.bias, x.reshape(-1, up.in_features), up.weight.t(), use_gelu=True)
        return down(hidden.reshape(*x.shape[:-1], up.out_features))


def fusable(ffn: nn.Module) -> bool:
    """`Linear (with bias) -> GELU(tanh) -> Linear`, the only form the epilogue computes: a float8 layer
    (`fp8_linears`) or an unmerged LoRA layer in front has no such epilogue."""
    return (
        isinstance(ffn, nn.Sequential)
        and len(ffn) == 3
        and type(ffn[0]) is nn.Linear
        and ffn[0].bias is not None
        and isinstance(ffn[1], nn.GELU)
        and ffn[1].approximate == "tanh"
    )


def fuse_ffn_gelu(blocks: nn.ModuleList) -> int:
    """Give every fusable FFN of the blocks its GELU in the first product's epilogue (in place); return how
    many."""
    count = 0
    for block in blocks:
        if type(block.ffn) is nn.Sequential and fusable(block.ffn):
            block.ffn.__class__ = GeluEpilogueFFN
            count += 1
    return count
