"""Three ways to run one of the Wan decoder's causal 3x3x3 convolutions on a block, timed and checked.

Behind BENCHMARKS.md's decode profile of 2026-12-02 (fourteenth session). The shipped way (`fold_vae_convs`)
stacks each output frame's three input frames along the channels (one copy, three times the input) and runs
one 2D convolution; that copy is the decode's largest kernel after cuDNN's own. This measures, at the
decoder's four resolutions with a 2-frame cache, whether the copy can go:

- `folded`: the shipped layer (`FoldedCausalConv3d`), compiled as the decoder compiles it;
- `per_tap`: three 2D convolutions over views of the frames (no copy), summed in bf16 (two more roundings);
- `conv3d`: diffusers' `WanCausalConv3d` (the layer unfolded: cuDNN's 3D convolution, channels-last-3d).

Each is compared against the float32 layer (max abs error, relative to the output's max).
Needs a CUDA GPU: `python scripts/experiments/conv_variants.py [--repeats 50]`.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

from longlive.benchmark import cuda_milliseconds
from longlive.vae_convs import fold_causal_convs

# (channels, height, width, frames per block) of the decoder's stages at the published 480x832 (latent 60x104,
# 3 latent frames a block, time upsampled twice to 12 frames); a cache of 2 frames precedes each block.
STAGES = [(384, 60, 104, 3), (384, 120, 208, 6), (192, 240, 416, 12), (96, 480, 832, 12)]
CACHE_FRAMES = 2


def per_tap(layer: WanCausalConv3d, x: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
    """The layer's sum as one conv2d per tap over views of the frames (no stacking), added in bf16.
    [1, C, T, H, W] block and [1, C, 2, H, W] cache, channels-last-3d -> [1, C_out, T, H, W]."""
    frames = torch.cat([cache, x], dim=2)[0].permute(1, 0, 2, 3)  # [T+2, C, H, W], channels-last per frame
    out_frames = x.shape[2]
    out = None
    for k in range(layer.kernel_size[0]):
        tap = layer.weight[:, :, k].contiguous(memory_format=torch.channels_last)
        term = F.conv2d(frames[k : k + out_frames], tap, layer.bias if k == 0 else None, padding=1)
        out = term if out is None else out + term
    return out.transpose(0, 1).unsqueeze(0)


def stage_row(stage: tuple[int, int, int, int], repeats: int) -> str:
    """One table row: each way's milliseconds and relative error at one decoder stage."""
    channels, height, width, frames = stage
    torch.manual_seed(0)
    layer = WanCausalConv3d(channels, channels, 3, padding=1).cuda()
    volume = torch.randn((1, channels, CACHE_FRAMES + frames, height, width), device="cuda")
    with torch.no_grad():
        reference = layer(volume[:, :, CACHE_FRAMES:], volume[:, :, :CACHE_FRAMES])

    unfolded = copy.deepcopy(layer).to(torch.bfloat16, memory_format=torch.channels_last_3d)
    folded = copy.deepcopy(unfolded)
    fold_causal_convs(folded)
    folded.compile(dynamic=False)  # as `compile_vae` compiles the decoder: static shapes, one graph per stage
    volume_bf = volume.to(torch.bfloat16, memory_format=torch.channels_last_3d)
    x, cache = volume_bf[:, :, CACHE_FRAMES:], volume_bf[:, :, :CACHE_FRAMES]
    runs = [
        lambda: folded(x, cache),
        lambda: per_tap(unfolded, x, cache),
        lambda: unfolded(x, cache),
    ]
    scale = reference.abs().max().item()
    with torch.no_grad():
        times = [cuda_milliseconds(fn, repeats) for fn in runs]
        errors = [(fn().float() - reference).abs().max().item() / scale for fn in runs]
    row = " | ".join(f"{t:.3f}" for t in times)
    error = " / ".join(f"{e:.2e}" for e in errors)
    return f"| {stage} | {row} | {error} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    print("| stage (C, H, W, T) | folded ms | per_tap ms | conv3d ms | rel. error folded / per_tap / conv3d |")
    print("| --- | --- | --- | --- | --- |")
    for stage in STAGES:
        print(stage_row(stage, args.repeats), flush=True)


if __name__ == "__main__":
    main()
