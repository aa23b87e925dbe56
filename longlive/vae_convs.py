"""The Wan VAE's causal 3D convolutions run as 2D ones (the `fold_vae_convs` switch).

A causal convolution with a kernel of `kt` frames computes each output frame from `kt` consecutive
input frames. Stacking those frames along the channels turns it into one 2D convolution with `kt`
times the input channels, over all output frames at once (they become the batch): the same sums, in
another order. cuDNN's 2D kernels in channels-last bf16 are far better tuned than its 3D ones, and the
Wan decoder spends most of its time in these convolutions. A folded convolution's output is
channels-last (`channels_last_3d`), so after the first one the frames-as-batch reshapes are free views;
the one copy per convolution is the stacking of its `kt` input frames.

`fold_causal_convs(module)` swaps every eligible `WanCausalConv3d` in place (their weights stay the
parameters of record, so state dicts are unchanged; the folded copy is rebuilt when they change).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d


class FoldedCausalConv3d(WanCausalConv3d):
    """A `WanCausalConv3d` computed as one `conv2d` over its output frames (same result, same cache API)."""

    @torch.compiler.disable
    def folded_weight(self) -> torch.Tensor:
        """The 2D weight [C_out, kt * C_in, kh, kw], rebuilt whenever the 3D weight changed (a load, a move
        to another device or dtype: both change its storage or its version counter; writes through
        `weight.data` bypass the counter and are not seen).

        Kept out of the compiled decoder on purpose, which splits its graph at every convolution. Traced
        whole (the weight folded inside the graph), the decoder was slower on the H100 (137.8 against 133.4
        ms per block) and kept 1.14 GiB more alive: the compiler turned each cached pair of frames into a
        view of its convolution's whole input (BENCHMARKS.md, 2026-11-24;
        `scripts/experiments/decoder_kernels.py --whole-graph`)."""
        weight = self.weight
        version = 0 if weight.is_inference() else weight._version  # inference tensors keep no counter
        key = (weight.data_ptr(), version, weight.dtype, weight.device)
        if getattr(self, "_fold_key", None) != key:
            self._folded = fold_weight(weight.detach())
            self._fold_key = key
        return self._folded

    def forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return super().forward(x, cache_x)  # training: the folded copy is detached, the 3D layer is not
        kt = self.kernel_size[0]
        time_pad = self._padding[4]
        if cache_x is not None and time_pad > 0:
            x = torch.cat([cache_x.to(x.device), x], dim=2)
            time_pad -= cache_x.shape[2]
        if time_pad > 0:
            x = F.pad(x, (0, 0, 0, 0, time_pad, 0))  # causal: zeros before the first frame only
        elif time_pad < 0:
            x = x[:, :, -time_pad:]  # a cache longer than the kernel needs: its oldest frames go, as in diffusers
        batch, channels, frames, height, width = x.shape
        out_frames = frames - kt + 1
        per_frame = x.permute(0, 2, 3, 4, 1)  # [B, T, H, W, C]: a view when x is channels_last_3d
        taps = torch.cat([per_frame[:, k : k + out_frames] for k in range(kt)], dim=-1) if kt > 1 else per_frame
        taps = taps.reshape(batch * out_frames, height, width, kt * channels).permute(0, 3, 1, 2)
        spatial_pad = (self._padding[2], self._padding[0])  # (h, w): zeros, as the 3D layer pads them
        out = F.conv2d(taps, self.folded_weight(), self.bias, stride=self.stride[1:], padding=spatial_pad)
        out = out.reshape(batch, out_frames, *out.shape[1:])  # [B, T, C_out, H', W']
        return out.transpose(1, 2)


def fold_weight(weight: torch.Tensor) -> torch.Tensor:
    """[C_out, C_in, kt, kh, kw] -> [C_out, kt * C_in, kh, kw], tap-major as the stacked input frames are."""
    out_channels, in_channels, kt, kh, kw = weight.shape
    folded = weight.permute(0, 2, 1, 3, 4).reshape(out_channels, kt * in_channels, kh, kw)
    return folded.contiguous(memory_format=torch.channels_last)


def foldable(conv: torch.nn.Module) -> bool:
    """Only plain causal convolutions: no stride, dilation or groups in time (the encoder's temporal
    downsampling strides by 2 and stays 3D)."""
    return (
        type(conv) is WanCausalConv3d
        and conv.stride[0] == 1
        and conv.dilation == (1, 1, 1)
        and conv.groups == 1
        and conv._padding[0] == conv._padding[1]
        and conv._padding[2] == conv._padding[3]
    )


def fold_causal_convs(module: torch.nn.Module) -> int:
    """Turn every foldable `WanCausalConv3d` under `module` into a `FoldedCausalConv3d`; return how many."""
    count = 0
    for conv in module.modules():
        if foldable(conv):
            conv.__class__ = FoldedCausalConv3d
            count += 1
    return count
