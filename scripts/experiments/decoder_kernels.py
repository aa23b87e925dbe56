"""Where the compiled streaming decode's time goes, with the graph split at each folded convolution or whole.

The measurement behind BENCHMARKS.md's decoder figures of 2026-11-24 (fourth session). Needs a CUDA GPU:

    python scripts/experiments/decoder_kernels.py [--whole-graph] [--rows 30]

The published VAE with random weights in bf16, all three VAE switches (`fold_vae_convs`, `fuse_vae_norms`,
`compile_vae`). Decodes 30 random latent frames 3 at a time twice (compilation, then timed per block),
prints the memory still allocated and the graph breaks dynamo counted (a function it skips, as it skips
`folded_weight`, splits the graph without being counted), then the top kernels of 2 steady blocks.
`--whole-graph` folds each convolution's weight inside the compiled graph instead of in
`FoldedCausalConv3d.folded_weight` (which the compiler skips), so the decoder compiles as one graph.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from torch._dynamo.utils import counters
from torch.profiler import ProfilerActivity, profile

from longlive.components import build_streaming_vae
from longlive.config import load_config
from longlive.presets import PRESETS
from longlive.vae_convs import FoldedCausalConv3d, fold_weight

CONFIG = "configs/longlive_video_conditional_inference.yaml"
OVERRIDES = ["wan_model_dir=null", "fold_vae_convs=true", "fuse_vae_norms=true", "compile_vae=true"]
LATENT_FRAMES, BLOCK = 30, 3


def traceable_folded_weight(self: FoldedCausalConv3d) -> torch.Tensor:
    """The folded weight computed where the compiler can see it (no cache, no graph break)."""
    return fold_weight(self.weight.detach())


def decode_video(stream, latents: torch.Tensor) -> list[float]:
    """Decode every block of `latents`; seconds per block (synchronised)."""
    stream.reset_decoder()
    seconds = []
    for start in range(0, latents.shape[1], BLOCK):
        torch.cuda.synchronize()
        tick = time.perf_counter()
        stream.decode(latents[:, start : start + BLOCK])
        torch.cuda.synchronize()
        seconds.append(time.perf_counter() - tick)
    return seconds


def kernel_table(prof, rows: int) -> str:
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name][0] += event.device_time
            totals[event.name][1] += 1
    total_ms = sum(us for us, _ in totals.values()) / 1000
    lines = [f"kernels: {total_ms:.1f} ms over 2 blocks"]
    for name, (us, count) in sorted(totals.items(), key=lambda item: -item[1][0])[:rows]:
        lines.append(f"{us / 1000:8.2f} ms {count:5d}x  {name[:140]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whole-graph", action="store_true", help="fold weights inside the compiled graph")
    parser.add_argument("--rows", type=int, default=30, help="kernels to list")
    args = parser.parse_args()
    if args.whole_graph:
        FoldedCausalConv3d.folded_weight = traceable_folded_weight

    cfg = load_config(CONFIG, OVERRIDES)
    stream = build_streaming_vae(cfg, torch.device("cuda"))
    vae = PRESETS[cfg.model_name].vae
    scale = stream.vae.config.scale_factor_spatial
    latent_shape = (1, LATENT_FRAMES, vae.z_dim, cfg.height // scale, cfg.width // scale)
    latents = torch.randn(latent_shape, device="cuda")
    decode_video(stream, latents)  # compilation
    counters.clear()
    seconds = decode_video(stream, latents)
    steady = sorted(seconds[1:])[len(seconds[1:]) // 2]
    print(f"ms per block: {[round(1000 * s, 1) for s in seconds]}; steady median {1000 * steady:.1f}")
    print(f"allocated after the video: {torch.cuda.memory_allocated() / 2**30:.2f} GiB")
    print(f"graph breaks: {sum(counters['graph_break'].values())}")

    stream.reset_decoder()
    for start in range(0, 3 * BLOCK, BLOCK):  # reach the steady cache shapes
        stream.decode(latents[:, start : start + BLOCK])
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for start in range(3 * BLOCK, 5 * BLOCK, BLOCK):
            stream.decode(latents[:, start : start + BLOCK])
        torch.cuda.synchronize()
    print(kernel_table(prof, args.rows))


if __name__ == "__main__":
    main()
