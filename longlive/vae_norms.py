"""The Wan VAE's RMS norms as single fused kernels (the `fuse_vae_norms` switch).

diffusers' `WanRMS_norm` upcasts a bf16 activation to float32, normalises it with `F.normalize`, casts
it back and then scales, multiplies by gamma and adds a bias: about seven passes over the tensor, three
of them in float32. At the decoder's full resolution (96 channels at 480x832) those passes, the SiLU
after them and the float32 round trip of `WanUpsample` cost more than the convolutions beside them.

Here each norm is one `F.rms_norm` over the channels (fused on CUDA, accumulating in float32) with the
SiLU that follows it applied in place, and the nearest-neighbour upsampling runs in the activation's
own dtype (a gather, so exactly the float32 result). The identity used: `x / max(|x|, 1e-12) *
sqrt(C)` is `x * rsqrt(mean(x^2) + eps)` with `eps = 1e-24 / C`.

`fuse_vae_norms(module)` swaps the classes in place; parameters and state dicts are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import (
    WanDecoder3d,
    WanEncoder3d,
    WanResidualBlock,
    WanRMS_norm,
    WanUpsample,
)
from torch import nn

NORM_EPS = 1e-12  # F.normalize's floor on the norm, which WanRMS_norm uses


class FusedRMSNorm(WanRMS_norm):
    """`WanRMS_norm` as one `F.rms_norm` over the channels, optionally followed by an in-place SiLU."""

    apply_silu: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = self.gamma.shape[0]
        channels_last = x.movedim(1, -1) if self.channel_first else x  # a free view for channels-last memory
        weight = self.gamma.reshape(channels).to(x.dtype)  # rms_norm's 1/sqrt(mean) already holds `scale`
        out = F.rms_norm(channels_last, (channels,), weight, eps=NORM_EPS**2 / channels)
        if self.channel_first:
            out = out.movedim(-1, 1)
        if isinstance(self.bias, torch.Tensor):
            out = out + self.bias
        return F.silu(out, inplace=not torch.is_grad_enabled()) if self.apply_silu else out


class NativeDtypeUpsample(WanUpsample):
    """`WanUpsample` without its float32 round trip: nearest-neighbour upsampling only copies values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode not in ("nearest", "nearest-exact"):
            return super().forward(x)
        return nn.Upsample.forward(self, x)


def _fuse_norm(norm: nn.Module, with_silu: bool) -> None:
    norm.__class__ = FusedRMSNorm
    norm.apply_silu = with_silu


def fuse_vae_norms(module: nn.Module) -> int:
    """Fuse every `WanRMS_norm` under `module` (with the SiLU that follows it where its owner applies one
    right after: residual blocks and the encoder's and decoder's heads) and make nearest upsampling run
    in the activation's dtype. Returns how many norms were fused."""
    count = 0
    for owner in module.modules():
        if isinstance(owner, WanResidualBlock) and isinstance(owner.nonlinearity, nn.SiLU):
            _fuse_norm(owner.norm1, with_silu=True)
            _fuse_norm(owner.norm2, with_silu=True)
            owner.nonlinearity = nn.Identity()  # applied by the fused norms
            count += 2
        elif isinstance(owner, (WanEncoder3d, WanDecoder3d)) and isinstance(owner.nonlinearity, nn.SiLU):
            _fuse_norm(owner.norm_out, with_silu=True)
            owner.nonlinearity = nn.Identity()  # only used after norm_out
            count += 1
    for norm in module.modules():
        if type(norm) is WanRMS_norm:  # the attention blocks' norms: no SiLU after them
            _fuse_norm(norm, with_silu=False)
            count += 1
        elif type(norm) is WanUpsample:
            norm.__class__ = NativeDtypeUpsample
    return count
