"""Three ways to run one of the Wan decoder's causal 3x3x3 convolutions on a block, timed and checked.

Behind BENCHMARKS.md's decode profile of 2026-12-02 (fourteenth session). The shipped way (`fold_vae_convs`)
stacks each output frame's three input frames along the channels (one copy, three times the input) and runs
one 2D convolution; that copy is the decode's largest kernel after cuDNN's own. This measures, at the
decoder's four resolutions with a 2-frame cache, whether the copy can go:

- `folded`: as shipped (`FoldedCausalConv3d`), the stacking compiled as in the decoder;
- `per_tap`: three 2D convolutions over frame views (no copy), summed in bf16 (two more roundings);
- `conv3d`: cuDNN's 3D convolution on the cache and block, channels-last (the layer unfolded).

Each is compared against the float32 3D convolution (max abs error, relative to the output's max).
Needs a CUDA GPU: `python scripts/experiments/conv_variants.py [--repeats 50]`.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from longlive.vae_convs import fold_weight

# (channels, height, width, frames per block) of the decoder's stages at the published 480x832 (latent 60x104,
# 3 latent frames a block, time upsampled twice to 12 frames); a cache of 2 frames precedes each block.
STAGES = [(384, 60, 104, 3), (384, 120, 208, 6), (192, 240, 416, 12), (96, 480, 832, 12)]
CACHE_FRAMES = 2


def folded(frames: torch.Tensor, weight2d: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """[T+2, H, W, C] channels-last frames -> [T, C_out, H, W]: the stacking copy and one conv2d."""
    out_frames = frames.shape[0] - 2
    taps = torch.cat([frames[k : k + out_frames] for k in range(3)], dim=-1).permute(0, 3, 1, 2)
    return F.conv2d(taps, weight2d, bias, padding=1)


def per_tap(frames: torch.Tensor, tap_weights: list[torch.Tensor], bias: torch.Tensor) -> torch.Tensor:
    """The same sum as three conv2d's over views of the frames (no stacking), added in bf16."""
    out_frames = frames.shape[0] - 2
    out = F.conv2d(frames[0:out_frames].permute(0, 3, 1, 2), tap_weights[0], bias, padding=1)
    for k in (1, 2):
        out = out + F.conv2d(frames[k : k + out_frames].permute(0, 3, 1, 2), tap_weights[k], None, padding=1)
    return out


def conv3d(volume: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """cuDNN's 3D convolution, [1, C, T+2, H, W] channels-last-3d, spatial zeros padded by the layer."""
    return F.conv3d(volume, weight, bias, padding=(0, 1, 1))


def milliseconds(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def stage_row(stage: tuple[int, int, int, int], compiled_folded, repeats: int) -> str:
    """One table row: each way's milliseconds and relative error at one decoder stage."""
    channels, height, width, frames = stage
    gen = torch.Generator(device="cuda").manual_seed(0)
    volume = torch.randn((1, channels, frames + CACHE_FRAMES, height, width), device="cuda", generator=gen)
    weight = torch.randn(channels, channels, 3, 3, 3, device="cuda", generator=gen) / (27 * channels) ** 0.5
    bias = torch.randn(channels, device="cuda", generator=gen) * 0.1
    reference = F.conv3d(volume, weight, bias, padding=(0, 1, 1))[0].transpose(0, 1)  # [T, C, H, W]

    volume_bf = volume.bfloat16().contiguous(memory_format=torch.channels_last_3d)
    weight_bf, bias_bf = weight.bfloat16(), bias.bfloat16()
    frames_bf = volume_bf[0].permute(1, 2, 3, 0)  # [T+2, H, W, C], a view of the channels-last volume
    weight2d = fold_weight(weight_bf)
    taps_w = [weight_bf[:, :, k].contiguous(memory_format=torch.channels_last) for k in range(3)]
    weight3d = weight_bf.contiguous(memory_format=torch.channels_last_3d)
    runs = [
        lambda: compiled_folded(frames_bf, weight2d, bias_bf),
        lambda: per_tap(frames_bf, taps_w, bias_bf),
        lambda: conv3d(volume_bf, weight3d, bias_bf)[0].transpose(0, 1),
    ]
    scale = reference.abs().max().item()
    with torch.no_grad():
        times = [milliseconds(fn, repeats) for fn in runs]
        errors = [(fn().float() - reference).abs().max().item() / scale for fn in runs]
    row = " | ".join(f"{t:.3f}" for t in times)
    error = " / ".join(f"{e:.2e}" for e in errors)
    return f"| {stage} | {row} | {error} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    compiled_folded = torch.compile(folded)
    print("| stage (C, H, W, T) | folded ms | per_tap ms | conv3d ms | rel. error folded / per_tap / conv3d |")
    print("| --- | --- | --- | --- | --- |")
    for stage in STAGES:
        print(stage_row(stage, compiled_folded, args.repeats), flush=True)


if __name__ == "__main__":
    main()
