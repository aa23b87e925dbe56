"""The streamed Wan VAE decode split by rows over the parts of a group (`parallel.split_decode`), exact.

Every op of the Wan2.1 decoder but one is local in space: its norms are RMS over the channels of one
pixel, its convolutions read a few rows on each side (3x3 spatially; the causal taps in time read the
same rows of earlier frames), its upsamplers repeat rows (nearest 2x) before a 3x3 convolution. The one
global op is the attention of the mid block, at latent resolution. So each part runs the cheap trunk
(conv_in and the mid block) on the whole latent frame, then only its share of the rows plus a halo:

    up block 0 input  [a0 - halo0, b0 + halo0)   (latent rows; crop)
    up block 1 input  [a1 - halo1, b1 + halo1)   (2x; crop)   ...
    head input        [a  - 1,     b  + 1)       (full rows; crop)  -> norm_out, SiLU, conv_out -> [a, b)

The halos come from `plan_rows`, read backwards from the part's output rows through the modules' own
kernel sizes and upsampling factors (`RowPlan`): at each boundary the slab is exactly the rows the rest
of the decoder reads to make the part's rows, clipped to the frame. A convolution pads the slab's edges
with zeros; inside the frame those rows are wrong, but the wrong rows are never among those the next
boundary keeps, which is what the halo guarantees. The causal caches stay consistent: each layer always
sees the same rows of every frame, so a cached frame's rows are the rows the next frame's taps read (a
wrong cached row is read only by outputs that are wrong anyway). Every kept row is computed by the same
arithmetic as in the whole-frame decode, so the part's rows equal it up to the convolution algorithms'
order of sums for another row count (bit-for-bit where that order does not depend on it).

`decode_rows` runs the decoder's own recipe (diffusers' `WanDecoder3d.forward`) with the crops in
between; the trunk and each up block are the decoder's modules, so the VAE switches (folded convs, fused
norms, compiled stages) apply as they do to the whole decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import (
    CACHE_T,
    WanCausalConv3d,
    WanDecoder3d,
    WanResample,
    WanResidualBlock,
    WanUpBlock,
    WanUpsample,
)
from torch import nn

Rows = tuple[int, int]  # [start, stop) of a frame's rows at one resolution


@dataclass(frozen=True)
class RowShare:
    """Part `part` of `parts`: the rows of the decoded frames this process computes."""

    part: int
    parts: int

    def __post_init__(self) -> None:
        if not 0 <= self.part < self.parts:
            raise ValueError(f"row share part={self.part} must lie in [0, parts={self.parts})")


def share_rows(height: int, parts: int) -> list[Rows]:
    """`height` rows cut into `parts` consecutive runs whose sizes differ by at most one (larger first)."""
    if parts > height:
        raise ValueError(f"cannot split {height} latent rows into {parts} parts")
    size, extra = divmod(height, parts)
    starts = [p * size + min(p, extra) for p in range(parts + 1)]
    return list(zip(starts[:-1], starts[1:], strict=True))


@dataclass(frozen=True)
class RowPlan:
    """One part's rows at each boundary of the split decoder, in rows of the whole frame at that boundary's
    resolution: the slab fed to each up block (`stage_inputs`, latent rows first), to the head
    (`head_input`, output resolution), and the part's own rows of the frames (`output`)."""

    stage_inputs: tuple[Rows, ...]
    head_input: Rows
    output: Rows
    heights: tuple[int, ...]  # the frame's height at each up block's input, then at the output

    def computed_rows(self) -> tuple[int, ...]:
        """Rows each stage computes (up blocks, then the head): the part's work against the whole frame's."""
        return tuple(b - a for a, b in (*self.stage_inputs, self.head_input))


def conv_radius(conv: nn.Module) -> int:
    """Rows a stride-1, same-padded convolution reads on each side of an output row."""
    if isinstance(conv, WanCausalConv3d):
        pad = conv._padding[2]  # (w, w, h, h, t, 0): the rows' padding
    elif isinstance(conv, nn.Conv2d):
        pad = conv.padding[0]
    else:
        raise TypeError(f"no row radius for {type(conv).__name__}")
    if conv.kernel_size[-2] != 2 * pad + 1 or conv.stride[-2] != 1 or conv.dilation[-2] != 1:
        raise ValueError(f"{type(conv).__name__} {conv.kernel_size} is not a same-padded stride-1 convolution")
    return pad


def _widen(rows: Rows, radius: int, height: int) -> Rows:
    """The input rows that output `rows` read through `radius` rows on each side, clipped to the frame
    (beyond its edges the convolution's zero padding is the whole-frame decode's too)."""
    return max(0, rows[0] - radius), min(height, rows[1] + radius)


def _resnet_radius(block: WanResidualBlock) -> int:
    shortcut = 0 if isinstance(block.conv_shortcut, nn.Identity) else conv_radius(block.conv_shortcut)
    return max(conv_radius(block.conv1) + conv_radius(block.conv2), shortcut)


def _upsampler_parts(block: nn.Module) -> tuple[WanResample | None, int]:
    """An up block's upsampler and its row scale (1 without one); only the Wan2.1 up block is planned."""
    if not isinstance(block, WanUpBlock):
        raise TypeError(f"split_decode plans the Wan2.1 decoder's up blocks, not {type(block).__name__}")
    if block.upsamplers is None:
        return None, 1
    resample = block.upsamplers[0]
    if resample.mode not in ("upsample2d", "upsample3d"):
        raise ValueError(f"split_decode cannot plan an up block resampling by {resample.mode}")
    upsample = resample.resample[0]
    if not isinstance(upsample, WanUpsample) or upsample.mode not in ("nearest", "nearest-exact"):
        raise ValueError("split_decode plans nearest upsampling only")
    scale = upsample.scale_factor[0]
    if scale != int(scale):
        raise ValueError(f"split_decode needs an integer upsampling factor, not {scale}")
    return resample, int(scale)


def _block_input(block: WanUpBlock, rows: Rows, height_out: int) -> Rows:
    """The rows of an up block's input that its output `rows` read (its output is `height_out` high)."""
    resample, scale = _upsampler_parts(block)
    height = height_out // scale
    if resample is not None:  # backwards: its 3x3 convolution, nearest upsampling (row i -> s*i .. s*i+s-1)
        rows = _widen(rows, conv_radius(resample.resample[1]), height_out)
        rows = (rows[0] // scale, -(-rows[1] // scale))
        if resample.mode == "upsample3d":  # the temporal convolution before them (one row high)
            rows = _widen(rows, conv_radius(resample.time_conv), height)
    for resnet in reversed(block.resnets):
        rows = _widen(rows, _resnet_radius(resnet), height)
    return rows


def plan_rows(decoder: WanDecoder3d, latent_height: int, share: RowShare) -> RowPlan:
    """Part `share`'s slabs through `decoder` for latent frames `latent_height` rows high: its share of the
    latent rows (`share_rows`) times the decoder's scale, read backwards through the head and up blocks."""
    heights = [latent_height]
    for block in decoder.up_blocks:
        heights.append(heights[-1] * _upsampler_parts(block)[1])
    scale = heights[-1] // latent_height
    start, stop = share_rows(latent_height, share.parts)[share.part]
    output = (start * scale, stop * scale)
    head_input = _widen(output, conv_radius(decoder.conv_out), heights[-1])  # norm_out, SiLU: per pixel
    rows, inputs = head_input, []
    for block, height_out in zip(reversed(decoder.up_blocks), reversed(heights[1:]), strict=True):
        rows = _block_input(block, rows, height_out)
        inputs.append(rows)
    return RowPlan(tuple(reversed(inputs)), head_input, output, tuple(heights))


def _crop(x: torch.Tensor, have: Rows, want: Rows) -> torch.Tensor:
    """Rows `want` of a slab [B, C, T, rows, W] that holds rows `have` (a view)."""
    if not have[0] <= want[0] <= want[1] <= have[1]:
        raise RuntimeError(f"row plan: rows {want} are not inside the slab's rows {have}")
    return x.narrow(-2, want[0] - have[0], want[1] - want[0])


def _cached_conv(conv: WanCausalConv3d, x: torch.Tensor, cache: list, index: list[int]) -> torch.Tensor:
    """A causal convolution at the decoder's ends as `WanDecoder3d.forward` streams it: it reads the cached
    last frames of the previous call, and the last CACHE_T frames of this input become the cache."""
    i = index[0]
    keep = x[:, :, -CACHE_T:].clone()
    if keep.shape[2] < CACHE_T and cache[i] is not None:
        keep = torch.cat([cache[i][:, :, -1:].to(keep.device), keep], dim=2)
    out = conv(x, cache[i])
    cache[i] = keep
    index[0] += 1
    return out


def decode_rows(decoder: WanDecoder3d, x: torch.Tensor, cache: list, plan: RowPlan, first_chunk: bool) -> torch.Tensor:
    """The decoder's streamed call on latents [B, C, f, h, w] (after post_quant_conv), this part's rows only:
    frames [B, 3, n, rows, W] with rows `plan.output`. `cache` is this part's own causal cache list."""
    index = [0]
    x = _cached_conv(decoder.conv_in, x, cache, index)
    x = decoder.mid_block(x, feat_cache=cache, feat_idx=index)  # the whole latent frame (its attention)
    have = (0, x.shape[-2])
    for block, rows, height, height_out in zip(
        decoder.up_blocks, plan.stage_inputs, plan.heights[:-1], plan.heights[1:], strict=True
    ):
        x = block(_crop(x, have, rows), feat_cache=cache, feat_idx=index, first_chunk=first_chunk)
        scale = height_out // height
        have = (rows[0] * scale, rows[1] * scale)
    x = decoder.nonlinearity(decoder.norm_out(_crop(x, have, plan.head_input)))
    x = _cached_conv(decoder.conv_out, x, cache, index)
    return _crop(x, plan.head_input, plan.output)


# A streamed decode calls the decoder with three shapes of causal caches (none, after the first latent
# frame, steady) and dynamo keeps one graph per shape for each frame it resumes after a graph break.
DECODER_COMPILE_CACHE_SIZE = 64


def allow_decoder_recompiles() -> None:
    """Raise dynamo's limit on compiled graphs per function (for the whole process) to what a streamed
    decode needs: past the limit dynamo runs the function eagerly from then on, without a word but a
    warning (the split decode's folded convolutions hit the default 8 in its first steady call)."""
    limit = torch._dynamo.config.cache_size_limit
    torch._dynamo.config.cache_size_limit = max(limit, DECODER_COMPILE_CACHE_SIZE)


def compile_stages(decoder: WanDecoder3d) -> None:
    """`compile_vae` for a split decode, which calls the decoder's stages, not the decoder: each stage
    compiled in place (static shapes: each part's slabs keep their sizes)."""
    allow_decoder_recompiles()
    for stage in (decoder.mid_block, *decoder.up_blocks, decoder.norm_out):
        stage.compile(dynamic=False)
