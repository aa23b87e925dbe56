"""The Wan VAE's causal 3D convolutions run as 2D ones (the `fold_vae_convs` switch).

A causal convolution with a kernel of `kt` frames computes each output frame from `kt` consecutive
input frames. Stacking those frames along the channels turns it into one 2D convolution with `kt`
times the input channels, over all output frames at once (they become the batch): the same sums, in
another order. cuDNN's 2D kernels in channels-last bf16 are far better tuned than its 3D ones, and the
Wan decoder spends most of its time in these convolutions. A folded convolution's output is
channels-last (`channels_last_3d`), so after the first one the frames-as-batch reshapes are free views;
the one copy per convolution is the stacking of its `kt` input frames.

`fold_causal_convs(module)` swaps every eligible `WanCausalConv3d` in place (their weights stay the
parameters of record, so state dicts are unchanged; the folded copy is a non-persistent buffer, folded
again when they change). Where the compiled decoder gets the folded weight:

- by default from `folded_weight`, which the compiler skips: the graph breaks at every convolution;
- with `ahead` (`fold_vae_ahead`) from the buffer itself, folded ahead of the call (at folding, on a
  load, when the decoder's caches are reset), so the compiled decoder traces as one graph. One graph
  needs `own_new_caches`: inductor drops the `clone` of each cached pair of frames, which would then
  keep its convolution's whole input alive between calls.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import (
    WanCausalConv3d,
    WanDecoder3d,
    WanResample,
    WanResidualBlock,
)


class FoldedCausalConv3d(WanCausalConv3d):
    """A `WanCausalConv3d` computed as one `conv2d` over its output frames (same result, same cache API)."""

    folded: torch.Tensor  # [C_out, kt * C_in, kh, kw], channels-last; registered by `fold_causal_convs`
    ahead: bool = False  # compiled: read `folded` as it is (no graph break) instead of `folded_weight()`

    @torch.compiler.disable
    def folded_weight(self) -> torch.Tensor:
        """The 2D weight, folded again if the 3D weight changed (a load, a move to another device or dtype:
        both change its storage or its version counter; writes through `weight.data` bypass the counter and
        are not seen).

        Kept out of the compiled decoder (whose graph then breaks at every convolution) unless `ahead`. Traced
        whole with the weight folded inside the graph, the decoder was slower on the H100 (137.8 against
        133.4 ms per block) and kept 1.14 GiB more alive: the compiler turned each cached pair of frames into
        a view of its convolution's whole input (BENCHMARKS.md, 2026-11-24;
        `scripts/experiments/decoder_kernels.py --whole-graph`); `ahead` folds outside the graph and keeps
        the caches their own (`own_new_caches`)."""
        key = _weight_key(self.weight)
        if self._fold_key != key:
            self.folded = fold_weight(self.weight.detach())  # assigning a registered buffer's name replaces it
            self._fold_key = key
        return self.folded

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        """A load changes the 3D weight: fold it now, before a compiled call reads `folded` (`ahead`)."""
        super()._load_from_state_dict(*args, **kwargs)
        self.folded_weight()

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
        # Eager calls always check the weight; a compiled call with `ahead` reads the folded buffer as is.
        # (Here, not earlier: without `ahead` the graph breaks at this call, after the frames are stacked.)
        weight = self.folded if self.ahead and torch.compiler.is_compiling() else self.folded_weight()
        out = F.conv2d(taps, weight, self.bias, stride=self.stride[1:], padding=spatial_pad)
        out = out.reshape(batch, out_frames, *out.shape[1:])  # [B, T, C_out, H', W']
        return out.transpose(1, 2)


def _weight_key(weight: torch.Tensor) -> tuple:
    """What changes when a weight does: its storage, version counter, dtype or device."""
    version = 0 if weight.is_inference() else weight._version  # inference tensors keep no counter
    return weight.data_ptr(), version, weight.dtype, weight.device


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


def fold_causal_convs(module: torch.nn.Module, ahead: bool = False) -> int:
    """Turn every foldable `WanCausalConv3d` under `module` into a `FoldedCausalConv3d` (folding its weight
    now, into a non-persistent buffer); return how many. `ahead`: see the module's docstring."""
    count = 0
    for conv in module.modules():
        if foldable(conv):
            conv.__class__ = FoldedCausalConv3d
            conv.register_buffer("folded", fold_weight(conv.weight.detach()), persistent=False)
            conv._fold_key = _weight_key(conv.weight)
            conv.ahead = ahead
            count += 1
    return count


def refold_causal_convs(module: torch.nn.Module) -> None:
    """Fold again the weights under `module` that changed since (outside any graph: a compiled call with
    `ahead` reads the folded buffers as they are). Cheap when nothing changed: one key per convolution."""
    for conv in module.modules():
        if isinstance(conv, FoldedCausalConv3d):
            conv.folded_weight()


def folds_ahead(module: torch.nn.Module) -> bool:
    """Whether any convolution under `module` was folded with `ahead`."""
    return any(isinstance(conv, FoldedCausalConv3d) and conv.ahead for conv in module.modules())


# ---------------------------------------------------------------------------------------------------
# Cached frames that own their memory, in one compiled graph.
# ---------------------------------------------------------------------------------------------------


def own_new_caches(module: torch.nn.Module) -> None:
    """Make the cached frames that compiled calls of the decoder (or of a stage of it) leave copies of their
    own. diffusers caches `x[:, :, -2:].clone()`; in one graph inductor removes that clone as a no-op (same
    strides as the slice), so each cache would stay a view of its convolution's whole input (or of the
    concatenation inductor writes that input into) until the next call. Each module that writes cache
    entries (residual blocks, temporal upsamplers; the decoder for its own head) copies them again at the
    end of its forward, inside the graph (a forward hook would be compiled as a graph of its own, after the
    whole call), into strides inductor cannot take for the slice's (`_own_copy`). Eager calls copy
    nothing: their clones are real. Classes are swapped in place, as `fold_causal_convs` does."""
    for owner in module.modules():
        if isinstance(owner, _OwnsNewCaches):
            continue  # already (a decoder compiled again)
        if isinstance(owner, (WanResidualBlock, WanResample)):
            owner.__class__ = _owning_class(type(owner), _OwnsNewCaches)
        elif isinstance(owner, WanDecoder3d):
            owner.__class__ = _owning_class(type(owner), _OwnsHeadCache)


class _OwnsNewCaches:
    """Mixin over a diffusers module whose forward takes `feat_cache` and `feat_idx`: owns what it wrote."""

    def forward(self, x: torch.Tensor, feat_cache: list | None = None, feat_idx: list | None = None, **kwargs):
        if feat_cache is None:
            return super().forward(x, **kwargs)
        start = feat_idx[0]
        out = super().forward(x, feat_cache=feat_cache, feat_idx=feat_idx, **kwargs)
        if torch.compiler.is_compiling():
            for i in self._own_entries(start, feat_idx[0]):
                feat_cache[i] = _own_copy(feat_cache[i])
        return out

    def _own_entries(self, start: int, stop: int) -> range | tuple[int, ...]:
        return range(start, stop)


class _OwnsHeadCache(_OwnsNewCaches):
    """The decoder's own entry: its head convolution's, the last it writes (its blocks own theirs; conv_in's,
    the first, is a slice of the graph's input, whose clone inductor keeps)."""

    def _own_entries(self, start: int, stop: int) -> tuple[int, ...]:
        return (stop - 1,)


@functools.cache
def _owning_class(cls: type, mixin: type) -> type:
    return type(f"OwnCaches{cls.__name__}", (mixin, cls), {"__doc__": cls.__doc__})


def _own_copy(entry):
    """A cache entry [B, C, T, H, W] copied to dense strides in its own memory order (`Rep`, diffusers' marker
    of a first temporal upsampling, as is). Where those strides are the entry's own (an entry that is its
    convolution's whole input), the batch stride doubles: unused for one video (several leave a gap of
    one entry each), and unequal, so inductor keeps the copy."""
    if not isinstance(entry, torch.Tensor):
        return entry
    batch, channels, frames, height, width = entry.shape
    if entry.is_contiguous(memory_format=torch.channels_last_3d) and not entry.is_contiguous():
        strides = (channels * frames * height * width, 1, height * width * channels, width * channels, channels)
    else:
        strides = (channels * frames * height * width, frames * height * width, height * width, width, 1)
    if strides == entry.stride():
        strides = (2 * strides[0], *strides[1:])
    copy = torch.empty_strided(entry.shape, strides, dtype=entry.dtype, device=entry.device)
    return copy.copy_(entry)
